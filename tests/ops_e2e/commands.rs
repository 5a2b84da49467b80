//! Signed commands: a correct one answered with the pinned shape; every refusal (replayed, tampered,
//! another key, an unknown key, expired, not yet valid, malformed, unknown command) changes nothing;
//! the city's own signer, `tools/sign-command.py`; and the status, config, buffer, log and device
//! commands, whose effects survive a restart and whose answers never carry key material.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use district_gateway::sim::SimDevice;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use crate::common::signed::*;
use crate::common::*;
use crate::harness::*;
use crate::traffic::*;

/// Every spelling of a device's session keys that must never show up in an answer or a log.
fn key_strings(d: &SimDevice) -> Vec<String> {
    let mut v = Vec::new();
    for k in [d.nwk_s_key.expose(), d.app_s_key.expose()] {
        let h = hex::encode(k);
        v.push(h[..16].to_string());
        v.push(h[16..].to_string());
        v.push(h.to_uppercase()[..16].to_string());
        v.push(b64(k));
    }
    v
}

#[test]
fn signed_commands_are_checked_and_every_refusal_changes_nothing() {
    // Checked first: under CI a missing signer fails at once, not after the rest of the test.
    let what = "python3 with the `cryptography` package (for the tools/sign-command.py part)";
    let city_signer = require(what, "apt-get install -y python3-cryptography", python_has("cryptography"));
    let mut devs = devices("dev", 2);
    let mut r = rig("ops-sig", &devs, false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-sig", &r.sub);
    ops.wait_ready(&logs);

    // A correctly signed ping: executed, answered with the pinned shape.
    let env = ops.signed("ping-1", "ping", json!({}));
    ops.send(&env);
    let a = ops.answer_within("ping-1", ANSWER, &logs);
    assert_eq!(a.as_object().unwrap().keys().collect::<Vec<_>>(), ["id", "ok", "result"], "{a}");
    assert_eq!(a["id"], "ping-1");
    assert_eq!(assert_ok(&a, "ping")["pong"], true, "{a}");

    // The same envelope again: replayed.
    ops.send(&env);
    let is_replay = |a: &Value| a["id"] == "ping-1" && a["error"]["code"] == "replayed";
    assert!(wait_until(ANSWER, || ops.answers().iter().any(is_replay)), "no replayed answer: {:?}", ops.answers());
    let replay = ops.answers().into_iter().find(is_replay).unwrap();
    assert_eq!(replay["id"], "ping-1");
    assert_refused(&replay, "replayed");

    // Refusals of a device.remove that would take dev-001 away, each with its own id.
    let now = Utc::now();
    let remove = |id: &str, issued: chrono::DateTime<Utc>, expires: chrono::DateTime<Utc>| {
        command_json(id, "device.remove", json!({"name": "dev-001"}), issued, expires)
    };
    let valid = (now - TimeDelta::seconds(30), now + TimeDelta::minutes(5));
    let key = signing_key();

    // Tampered: signed for dev-002, then the payload says dev-001.
    let signed_for_other = command_json("tamper-1", "device.remove", json!({"name": "dev-002"}), valid.0, valid.1);
    let sig = key.sign(&signed_for_other);
    let tampered_payload = String::from_utf8(signed_for_other).unwrap().replace("dev-002", "dev-001");
    let tampered = json!({"key_id": "ops-1", "payload": b64(tampered_payload.as_bytes()), "sig": b64(&sig.to_bytes())});
    ops.send(tampered.to_string().as_bytes());
    assert_refused(&ops.answer_within("tamper-1", ANSWER, &logs), "bad_signature");

    // Signed by another key under the configured key id.
    let other_key = SigningKey::from_bytes(&[7u8; 32]);
    ops.send(&envelope("ops-1", &other_key, &remove("wrongkey-1", valid.0, valid.1)));
    assert_refused(&ops.answer_within("wrongkey-1", ANSWER, &logs), "bad_signature");

    // An unknown key id.
    ops.send(&envelope("ops-9", &key, &remove("unknownkey-1", valid.0, valid.1)));
    assert_refused(&ops.answer_within("unknownkey-1", ANSWER, &logs), "unknown_key");

    // Expired (well beyond the allowed skew), and not valid yet.
    ops.send(&envelope(
        "ops-1",
        &key,
        &remove("expired-1", now - TimeDelta::minutes(20), now - TimeDelta::minutes(10)),
    ));
    assert_refused(&ops.answer_within("expired-1", ANSWER, &logs), "expired");
    ops.send(&envelope("ops-1", &key, &remove("future-1", now + TimeDelta::minutes(10), now + TimeDelta::minutes(15))));
    assert_refused(&ops.answer_within("future-1", ANSWER, &logs), "expired");

    // Garbage: malformed, and no id to correlate with.
    let before = ops.answers().len();
    ops.send(b"this is { not json");
    assert!(
        wait_until(ANSWER, || ops.answers().iter().skip(before).any(|a| a["error"]["code"] == "malformed")),
        "no malformed answer; answers: {:?}",
        ops.answers()
    );
    let malformed = ops.answers().into_iter().skip(before).find(|a| a["error"]["code"] == "malformed").unwrap();
    assert_eq!(malformed["id"], Value::Null);
    assert_refused(&malformed, "malformed");

    // An unknown command.
    ops.send(&ops.signed("unknowncmd-1", "reboot", json!({})));
    assert_refused(&ops.answer_within("unknowncmd-1", ANSWER, &logs), "unknown_command");

    // Nothing changed: dev-001 still works, its uplink becomes a reading.
    let k = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[0], b"still here").expect("PUSH_ACK");
    wait_all_arrive(&r.sub, &[k], Duration::from_secs(15), &logs);
    // ... and the refused ids were not used up: a valid command with such an id is accepted.
    ops.send(&ops.signed("expired-1", "ping", json!({})));
    let accepted = |a: &Value| a["id"] == "expired-1" && a["ok"] == true;
    assert!(wait_until(ANSWER, || ops.answers().iter().any(accepted)), "a refused id was used up: {:?}", ops.answers());
    // The answers were published for exactly our commands, and the daemon stays up.
    let k = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[1], b"and me").expect("PUSH_ACK");
    wait_all_arrive(&r.sub, &[k], Duration::from_secs(15), &logs);

    // The city's own signer (Python `cryptography`, independent of ed25519-dalek).
    if !city_signer {
        return;
    }
    let keyfile = r.gw.config_path.with_file_name("ops-1.key");
    write_file(&keyfile, &format!("{}\n", b64(&hex::decode(TEST1_SECRET).unwrap())));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sign-command.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--key")
        .arg(&keyfile)
        .args(["--key-id", "ops-1", "--id", "python-1", "--gateway", "ops-sig", "ping"])
        .output()
        .unwrap();
    assert!(out.status.success(), "sign-command.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let env: Value = serde_json::from_str(printed.trim()).expect("sign-command.py prints the envelope JSON");
    assert_eq!(env["key_id"], "ops-1");
    ops.send(printed.trim().as_bytes());
    let a = ops.answer_within("python-1", ANSWER, &logs);
    assert_eq!(assert_ok(&a, "python-1")["pong"], true, "{a}");
}

#[test]
fn status_config_buffer_log_and_device_commands() {
    let mut devs = devices("dev", 3);
    let mut newdev = SimDevice::numbered("new", 1, "raw");
    let mut r = rig("ops-cmds", &devs, false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-cmds", &r.sub);
    ops.wait_ready(&logs);
    let mut secrets: Vec<String> = devs.iter().chain([&newdev]).flat_map(key_strings).collect();
    secrets.sort();
    secrets.dedup();

    let mut acked = Vec::new();
    for i in 0..6 {
        acked.push(send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[i % 3], b"x").expect("PUSH_ACK"));
    }
    wait_all_arrive(&r.sub, &acked, Duration::from_secs(15), &logs);

    // status
    let st = assert_ok(&ops.call("status", json!({}), &logs), "status");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"), "{st}");
    assert!(st["uptime_s"].as_u64().is_some(), "{st}");
    assert_eq!(st["devices"], 3, "{st}");
    let sources = st["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1, "{st}");
    assert_eq!(sources[0]["state"], "up", "{st}");
    assert!(st["backlog"]["depth"].as_u64().is_some(), "{st}");
    assert!(st["last_uplink"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{st}");
    assert!(st.get("control").is_some(), "{st}");
    assert_eq!(st["power"], Value::Null, "no power-fail input configured: {st}");

    // config.get: the running config, without key material.
    let cfg = assert_ok(&ops.call("config.get", json!({}), &logs), "config.get");
    let toml_text = cfg["toml"].as_str().expect("config.get returns the TOML");
    assert!(toml_text.contains("ops-cmds") && toml_text.contains("dev-001"), "{toml_text}");
    let parsed: toml::Table = toml::from_str(toml_text).expect("config.get returns valid TOML");
    assert!(parsed.contains_key("gateway"));
    for s in &secrets {
        assert!(!toml_text.to_lowercase().contains(&s.to_lowercase()), "config.get shows key material");
    }

    // buffer.stats
    let bs = assert_ok(&ops.call("buffer.stats", json!({}), &logs), "buffer.stats");
    for f in ["depth", "bytes_on_disk", "journaled", "published", "dropped"] {
        assert!(bs[f].as_u64().is_some(), "buffer.stats.{f}: {bs}");
    }
    assert!(bs["journaled"].as_u64().unwrap() >= 6, "{bs}");
    assert_eq!(bs["dropped"], 0, "{bs}");

    // log.level, and a filter that is not one.
    let ll = assert_ok(&ops.call("log.level", json!({"level": "info"}), &logs), "log.level");
    assert_eq!(ll["level"], "info");
    assert_refused(&ops.call("log.level", json!({}), &logs), "invalid_args");
    assert_ok(&ops.call("log.level", json!({"level": "debug"}), &logs), "log.level debug");

    // device.upsert: a new ABP device is usable at once; keys are accepted, never echoed.
    let args = json!({
        "name": newdev.name,
        "profile": "raw",
        "dev_addr": newdev.dev_addr.to_string(),
        "nwk_s_key": hex::encode(newdev.nwk_s_key.expose()),
        "app_s_key": hex::encode(newdev.app_s_key.expose()),
    });
    let up = assert_ok(&ops.call("device.upsert", args, &logs), "device.upsert");
    assert_eq!(up["device"], "new-001", "{up}");
    assert!(uplink_becomes_reading(&r.sub, &mut r.fwd, r.gw.gwmp, &mut newdev), "upserted device: no reading");
    let st = assert_ok(&ops.call("status", json!({}), &logs), "status");
    assert_eq!(st["devices"], 4, "{st}");
    // An invalid device is refused.
    assert_refused(&ops.call("device.upsert", json!({"name": "bad one", "dev_addr": "xyz"}), &logs), "invalid_args");

    // device.remove: its uplinks are refused afterwards.
    let rm = assert_ok(&ops.call("device.remove", json!({"name": "dev-002"}), &logs), "device.remove");
    assert_eq!(rm["device"], "dev-002", "{rm}");
    assert_refused(&ops.call("device.remove", json!({"name": "no-such-device"}), &logs), "invalid_args");
    let unknown_before = r.gw.metrics().value("district_gateway_frames_total", &[("result", "unknown_dev_addr")]);
    let removed_frame = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[1], b"gone").expect("PUSH_ACK (refused later)");
    let marker = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[0], b"marker").expect("PUSH_ACK");
    wait_all_arrive(&r.sub, std::slice::from_ref(&marker), Duration::from_secs(15), &logs);
    assert!(
        wait_until(Duration::from_secs(10), || {
            r.gw.metrics().value("district_gateway_frames_total", &[("result", "unknown_dev_addr")]) > unknown_before
        }),
        "the removed device's frame was not refused as unknown_dev_addr"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!by_frame(&r.sub.readings()).contains_key(&removed_frame), "a removed device's uplink became a reading");

    // After a restart the remote changes are still there.
    assert!(r.gw.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()), "SIGTERM exit");
    r.gw.spawn();
    ops.wait_ready(&logs);
    assert!(uplink_becomes_reading(&r.sub, &mut r.fwd, r.gw.gwmp, &mut newdev), "after restart: no reading");
    let st = assert_ok(&ops.call("status", json!({}), &logs), "status after restart");
    assert_eq!(st["devices"], 3, "3 + new-001 - dev-002: {st}");
    let removed_again = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[1], b"gone").expect("PUSH_ACK");
    let marker = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[2], b"marker").expect("PUSH_ACK");
    wait_all_arrive(&r.sub, std::slice::from_ref(&marker), Duration::from_secs(15), &logs);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!by_frame(&r.sub.readings()).contains_key(&removed_again), "removed device is back after restart");
    let cfg = assert_ok(&ops.call("config.get", json!({}), &logs), "config.get after restart");
    assert!(cfg["toml"].as_str().unwrap().contains("new-001"), "{cfg}");

    // No answer and no log line ever carried key material.
    let all_answers = serde_json::to_string(&ops.answers()).unwrap().to_lowercase();
    let log = r.gw.logs().to_lowercase();
    for s in &secrets {
        let s = s.to_lowercase();
        assert!(!all_answers.contains(&s), "an answer on cmd/res contains key material");
        assert!(!log.contains(&s), "the log contains key material");
    }
}
