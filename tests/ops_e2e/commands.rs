//! Signed commands: a correct one answered with the pinned shape; every refusal (replayed, tampered,
//! another key, an unknown key, expired, not yet valid, malformed, unknown command) changes nothing;
//! the city's own signer, `tools/sign-command.py`; and the status, config, buffer, log and device
//! commands, whose effects survive a restart and whose answers never carry key material.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use district_gateway::sim::SimDevice;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use crate::common::signed::*;
use crate::common::*;
use crate::harness::*;
use crate::prometheus::Metrics;
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

/// Bytes this process has caused to be written to storage (`/proc/PID/io` `write_bytes`): the
/// journal, sled, and the daemon's own log file (the test's stand-in for journald).
fn storage_write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io of the daemon");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes in /proc/PID/io")
}

/// The journal's activity as /metrics shows it: fsyncs, bytes appended, outbox records.
fn journal(m: &Metrics) -> (f64, f64, f64) {
    (
        m.value("district_gateway_journal_fsyncs_total", &[]),
        m.value("district_gateway_journal_bytes_written_total", &[]),
        m.value("district_gateway_records_journaled_total", &[]),
    )
}

/// Issue 17: unauthenticated traffic costs nothing on flash. 300 messages on `cmd/req` that the
/// verifier refuses (garbage, unsigned, signed by another key, an unknown key id) are counted by code;
/// at most the rate limit's worth is answered on `cmd/res`, the rest counted as unanswered; the
/// journal gets no entry and no fsync from them, the daemon writes < 64 KiB in all, and the log has
/// at most the log limit's worth of `command refused` lines. A valid command afterwards is accepted,
/// executed, answered and journaled as before.
#[test]
fn a_flood_of_refused_commands_is_counted_answered_within_the_limit_and_never_journaled() {
    use district_core::commands::limits::{ANSWERS_PER_SECOND, ANSWER_BURST, LOG_BURST};
    const FLOOD: usize = 300;
    let r = rig("ops-flood", &devices("dev", 1), false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-flood", &r.sub);
    ops.wait_ready(&logs);
    let pid = r.gw.pid().expect("daemon running");

    // The journal at rest (the readiness pings' answers, then their acknowledgements, are written).
    let mut last = journal(&r.gw.metrics());
    let quiet = wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(700));
        let now = journal(&r.gw.metrics());
        std::mem::replace(&mut last, now) == now
    });
    assert!(quiet, "the journal never came to rest: {last:?}\nlog:\n{}", logs());
    let m0 = r.gw.metrics();
    let j0 = journal(&m0);
    let written0 = storage_write_bytes(pid);
    let answers0 = ops.answers().len();
    let log_lines = |log: &str| log.lines().filter(|l| l.contains("command refused")).count();
    assert_eq!(log_lines(&logs()), 0, "no refusal before the flood");

    // The flood: four kinds, interleaved.
    let now = Utc::now();
    let (valid_from, valid_to) = (now - TimeDelta::seconds(30), now + TimeDelta::minutes(5));
    let other_key = SigningKey::from_bytes(&[7u8; 32]);
    let flood: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| match i % 4 {
            0 => format!("garbage {i} {{ not json").into_bytes(),
            1 => {
                let payload = command_json(&format!("flood-unsigned-{i}"), "ping", json!({}), valid_from, valid_to);
                json!({"key_id": "ops-1", "payload": b64(&payload), "sig": ""}).to_string().into_bytes()
            }
            2 => envelope(
                "ops-1",
                &other_key,
                &command_json(
                    &format!("flood-badsig-{i}"),
                    "device.remove",
                    json!({"name": "dev-001"}),
                    valid_from,
                    valid_to,
                ),
            ),
            _ => envelope(
                "ops-9",
                &signing_key(),
                &command_json(&format!("flood-unknownkey-{i}"), "ping", json!({}), valid_from, valid_to),
            ),
        })
        .collect();
    let start = Instant::now();
    publish_many(r.broker.port, "city/ops-flood/cmd/req", &flood);

    // Every message is received and refused (or dropped by a full executor queue), and every refusal
    // is answered or counted as unanswered.
    let delta = |m: &Metrics, name: &str, labels: &[(&str, &str)]| m.value(name, labels) - m0.value(name, labels);
    let refused = |m: &Metrics| -> f64 {
        ["malformed", "bad_signature", "unknown_key"]
            .iter()
            .map(|c| delta(m, "district_gateway_commands_total", &[("code", c)]))
            .sum()
    };
    let unanswered = |m: &Metrics| delta(m, "district_gateway_commands_unanswered_total", &[]);
    let dropped = |m: &Metrics| delta(m, "district_gateway_commands_dropped_total", &[]);
    let answered = || ops.answers().len() - answers0;
    let settled = wait_until(ANSWER, || {
        let m = r.gw.metrics();
        refused(&m) + dropped(&m) == FLOOD as f64 && answered() as f64 + unanswered(&m) == refused(&m)
    });
    let elapsed = start.elapsed();
    let m = r.gw.metrics();
    assert!(
        settled,
        "after the flood: refused {}, dropped {}, answered {}, unanswered {}\nlog:\n{}",
        refused(&m),
        dropped(&m),
        answered(),
        unanswered(&m),
        logs()
    );
    std::thread::sleep(Duration::from_secs(1)); // no answer comes late
    let m = r.gw.metrics();
    let answers: Vec<Value> = ops.answers().into_iter().skip(answers0).collect();
    let n = answers.len();
    assert_eq!(delta(&m, "district_gateway_commands_received_total", &[]), FLOOD as f64);
    assert_eq!(refused(&m) + dropped(&m), FLOOD as f64);
    assert_eq!(n as f64 + unanswered(&m), refused(&m), "every refusal is answered or counted as unanswered");
    for code in ["ok", "expired", "replayed", "wrong_gateway", "unknown_command", "invalid_args", "internal"] {
        assert_eq!(delta(&m, "district_gateway_commands_total", &[("code", code)]), 0.0, "{code}");
    }
    // Answers: the burst at least (nothing was refused before), never more than the bucket allows.
    let limit = ANSWER_BURST as usize + (ANSWERS_PER_SECOND * elapsed.as_secs_f64()) as usize;
    assert!((ANSWER_BURST as usize..=limit).contains(&n), "{n} answers in {elapsed:?}, limit {limit}: {answers:?}");
    for a in &answers {
        assert_eq!(a["ok"], false, "{a}");
        assert!(
            ["malformed", "bad_signature", "unknown_key"].contains(&a["error"]["code"].as_str().unwrap_or("")),
            "{a}"
        );
        assert!(a["id"].is_null() || a["id"].as_str().is_some_and(|id| id.starts_with("flood-")), "{a}");
    }
    let written = storage_write_bytes(pid) - written0;
    eprintln!(
        "flood of {FLOOD}: {n} answered, {} unanswered, {} dropped (queue full) in {elapsed:?}; the daemon wrote \
         {written} bytes",
        unanswered(&m),
        dropped(&m)
    );
    // Nothing of it reached the journal; the daemon wrote less than 64 KiB in all (it was 1.38 MB).
    assert_eq!(journal(&m), j0, "(fsyncs, bytes, records) of the journal changed during the flood");
    assert!(written < 64 << 10, "the daemon wrote {written} bytes to storage for {FLOOD} refused commands");
    // The log: the first refusals one by one, no more (the rest go into a summary a minute later).
    let log = logs();
    let lines = log_lines(&log);
    assert!((1..=LOG_BURST as usize + 1).contains(&lines), "{lines} `command refused` lines for {FLOOD} refusals");
    let queue_full = log.lines().filter(|l| l.contains("command queue full")).count();
    assert!(queue_full <= 1, "{queue_full} `command queue full` lines: one a minute at most");

    // A valid command afterwards: accepted, executed, answered and journaled (its id and its answer
    // fsynced).
    assert_eq!(assert_ok(&ops.call("ping", json!({}), &logs), "ping after the flood")["pong"], true);
    let (fsyncs, bytes, records) = journal(&r.gw.metrics());
    assert_eq!(records, j0.2 + 1.0, "the ping's answer is journaled");
    assert!(
        fsyncs >= j0.0 + 2.0 && bytes > j0.1,
        "the ping's id and answer are fsynced: {:?} -> {:?}",
        j0,
        (fsyncs, bytes)
    );
    assert_eq!(delta(&r.gw.metrics(), "district_gateway_commands_total", &[("code", "ok")]), 1.0);
}
