//! `config.apply`: under traffic it loses nothing and takes effect; a config that cannot work is rolled
//! back by the daemon itself; invalid configs are refused with their problems and change nothing; a
//! rollback answer keeps the pinned `cmd/res` shape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use district_gateway::sim::SimDevice;
use serde_json::json;

use crate::common::signed::*;
use crate::common::*;
use crate::harness::*;
use crate::traffic::*;

#[test]
fn config_apply_under_traffic_loses_nothing_and_takes_effect() {
    let devs = devices("dev", 3);
    let mut newdev = SimDevice::numbered("new", 1, "raw");
    let mut r = rig("ops-apply", &devs, false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-apply", &r.sub);
    ops.wait_ready(&logs);

    // The new config: one more device, and dev-003 with another profile.
    let mut new_cfg = r.gw.cfg.clone();
    new_cfg.devices[2].profile = "lamp-generic".into();
    new_cfg.devices.push(newdev.clone());
    let new_text = new_cfg.render();

    let traffic = Traffic::start(r.gw.gwmp, devs.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let id = ops.fresh_id("apply");
    let acks_before = traffic.acks.load(Ordering::SeqCst);
    ops.send(&ops.signed(&id, "config.apply", json!({"toml": new_text})));
    let a = ops.answer_within(&id, Duration::from_secs(60), &logs);
    let acks_at_answer = traffic.acks.load(Ordering::SeqCst);
    // Traffic after the switch as well.
    assert!(
        wait_until(Duration::from_secs(15), || traffic.acks.load(Ordering::SeqCst) >= acks_at_answer + 20),
        "no frames acknowledged after config.apply; log:\n{}",
        logs()
    );
    let (mut devs, acked, sent) = traffic.finish();
    assert!(acks_before >= 20, "traffic before config.apply: {acks_before}");
    assert_eq!(assert_ok(&a, "config.apply")["applied"], true, "{a}");
    assert!(acked.len() > 20, "only {} of {sent} frames acknowledged", acked.len());
    wait_all_arrive(&r.sub, &acked, Duration::from_secs(40), &logs);
    eprintln!("config.apply under traffic: {} of {sent} frames acknowledged, all arrived", acked.len());

    // The change took effect: the new device works, dev-003 decodes with its new profile, and the file on disk
    // is the new one.
    assert_eq!(r.gw.config_on_disk(), new_text);
    assert!(uplink_becomes_reading(&r.sub, &mut r.fwd, r.gw.gwmp, &mut newdev), "new device: no reading");
    let k = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[2], &[55]).expect("PUSH_ACK");
    wait_all_arrive(&r.sub, std::slice::from_ref(&k), Duration::from_secs(15), &logs);
    let m = by_frame(&r.sub.readings());
    assert_eq!(m[&k][0]["profile"], "lamp-generic", "{}", m[&k][0]);
    let st = assert_ok(&ops.call("status", json!({}), &logs), "status");
    assert_eq!(st["devices"], 4, "{st}");
}

#[test]
fn config_apply_rolls_back_by_itself_and_invalid_configs_change_nothing() {
    let mut devs = devices("dev", 2);
    let mut r = rig("ops-rollback", &devs, false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-rollback", &r.sub);
    ops.wait_ready(&logs);
    let original = r.gw.config_on_disk();

    // Valid, but cannot work: a broker nobody listens on.
    let closed_port = free_port();
    let mut bad = r.gw.cfg.clone();
    bad.broker_url = format!("mqtt://127.0.0.1:{closed_port}");
    bad.rollback_after_s = 5;
    bad.devices.push(SimDevice::numbered("new", 1, "raw"));
    let id = ops.fresh_id("apply-unreachable");
    ops.send(&ops.signed(&id, "config.apply", json!({"toml": bad.render()})));
    // 5 s for the verdict, then the previous daemon starts and reconnects.
    let a = ops.answer_within(&id, Duration::from_secs(90), &logs);
    assert_eq!(a["ok"], false, "{a}");
    let msg = a["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("rolled back"), "the answer says it rolled back: {a}");
    eprintln!("config.apply with an unreachable broker: {a}");
    assert_eq!(r.gw.config_on_disk(), original, "the previous config file is back");
    // The previous configuration runs: commands and uplinks work, the new device does not exist.
    ops.wait_ready(&logs);
    let st = assert_ok(&ops.call("status", json!({}), &logs), "status");
    assert_eq!(st["devices"], 2, "{st}");
    assert_eq!(st["mqtt_connected"], true, "{st}");
    assert!(uplink_becomes_reading(&r.sub, &mut r.fwd, r.gw.gwmp, &mut devs[0]), "after rollback: no reading");

    // Invalid configs: refused with the problems listed; nothing changes.
    let mut invalid = r.gw.cfg.clone();
    invalid.gateway = "Not A Valid Id!".into();
    invalid.rollback_after_s = 1;
    let text = invalid.render().replace("[[source]]", "bogus_key = 3\n\n[[source]]");
    let a = ops.call("config.apply", json!({"toml": text}), &logs);
    assert_refused(&a, "invalid_args");
    let msg = a["error"]["message"].as_str().unwrap();
    for problem in ["gateway.id", "rollback_after_s", "bogus_key"] {
        assert!(msg.contains(problem), "the answer lists the problem with {problem}: {msg}");
    }
    let a = ops.call("config.apply", json!({"toml": "[gateway\nid = \"x\"\n"}), &logs);
    assert_refused(&a, "invalid_args");
    assert_refused(&ops.call("config.apply", json!({"tom": "x"}), &logs), "invalid_args");
    assert_eq!(r.gw.config_on_disk(), original, "an invalid config changed the file");
    let st = assert_ok(&ops.call("status", json!({}), &logs), "status");
    assert_eq!(st["devices"], 2, "{st}");
    assert_eq!(st["gateway"], "ops-rollback", "{st}");
    let k = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[1], b"still").expect("PUSH_ACK");
    wait_all_arrive(&r.sub, &[k], Duration::from_secs(15), &logs);
}

#[test]
fn a_rollback_answer_keeps_the_pinned_cmd_res_shape() {
    let devs = devices("dev", 1);
    let r = rig("ops-shape", &devs, false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-shape", &r.sub);
    ops.wait_ready(&logs);
    let mut bad = r.gw.cfg.clone();
    bad.broker_url = format!("mqtt://127.0.0.1:{}", free_port());
    let id = ops.fresh_id("apply-unreachable");
    ops.send(&ops.signed(&id, "config.apply", json!({"toml": bad.render()})));
    let a = ops.answer_within(&id, Duration::from_secs(90), &logs);
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error", "id", "ok"], "cmd/res: {a}");
}
