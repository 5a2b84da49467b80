//! Signals: SIGTERM under traffic loses nothing (every acknowledged frame arrives after a restart) and
//! leaves the retained state offline; SIGHUP reloads a changed config file.

use std::time::Duration;

use district_gateway::sim::SimDevice;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::common::*;
use crate::harness::*;
use crate::traffic::*;

#[test]
fn sigterm_under_traffic_loses_nothing_and_sighup_reloads() {
    let devs = devices("dev", 3);
    let mut newdev = SimDevice::numbered("new", 1, "raw");
    let mut r = rig("ops-signals", &devs, false);
    let logs = log_reader(&r.gw);
    assert!(wait_until(Duration::from_secs(15), || !r.sub.on_topic("/state").is_empty()), "no state");

    // SIGTERM while frames keep coming.
    let traffic = Traffic::start(r.gw.gwmp, devs.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let status = r.gw.terminate(Duration::from_secs(20));
    let (mut devs, acked, sent) = traffic.finish();
    assert!(status.is_some(), "the daemon did not exit within 20 s of SIGTERM; log:\n{}", logs());
    assert!(status.unwrap().success(), "exit status {status:?}; log:\n{}", logs());
    assert!(acked.len() > 10, "only {} of {sent} frames acknowledged", acked.len());

    // It said goodbye: the retained state, as a new subscriber sees it, is offline.
    let fresh = Subscriber::start(r.broker.port, "city/ops-signals/state");
    assert!(wait_until(Duration::from_secs(10), || !fresh.on_topic("/state").is_empty()), "no retained state");
    let st = fresh.on_topic("/state").last().unwrap().clone();
    assert!(st.retain, "state is retained");
    assert_eq!(st.json, json!({"online": false}));
    drop(fresh);

    // After a restart, every acknowledged frame arrives.
    r.gw.spawn();
    wait_all_arrive(&r.sub, &acked, Duration::from_secs(40), &logs);
    eprintln!("SIGTERM under traffic: {} of {sent} frames acknowledged, all arrived", acked.len());

    // SIGHUP with a changed file: the new device's uplinks become readings.
    let mut cfg = r.gw.cfg.clone();
    cfg.devices.push(newdev.clone());
    write_file(&r.gw.config_path, &cfg.render());
    r.gw.signal(Signal::SIGHUP);
    assert!(
        uplink_becomes_reading(&r.sub, &mut r.fwd, r.gw.gwmp, &mut newdev),
        "SIGHUP: the new device's uplink never became a reading; log:\n{}",
        logs()
    );
    let k = send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[0], b"old one").expect("PUSH_ACK");
    wait_all_arrive(&r.sub, &[k], Duration::from_secs(15), &logs);
    assert!(logs().contains("SIGHUP"), "the reload is logged");
}
