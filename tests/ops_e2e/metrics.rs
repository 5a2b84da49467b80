//! `/metrics` and `/healthz`: the counters match what was sent (frames, commands by outcome), the
//! health follows a stalled core loop (the SIGUSR1 test hook) and recovers; `readings_journaled`
//! counts readings only.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use nix::sys::signal::Signal;
use serde_json::json;

use crate::common::signed::*;
use crate::common::*;
use crate::harness::*;
use crate::traffic::*;

#[test]
fn metrics_count_what_was_sent_and_healthz_follows_a_stalled_core_loop() {
    let mut devs = devices("dev", 3);
    let mut r = rig("ops-metrics", &devs, true);
    let logs = log_reader(&r.gw);
    assert!(
        wait_until(Duration::from_secs(15), || r.gw.http("/healthz").is_some_and(|(s, _)| s == 200)),
        "/healthz never 200: {:?}\nlog:\n{}",
        r.gw.http("/healthz"),
        logs()
    );
    let ops = Ops::new(r.broker.port, "ops-metrics", &r.sub);
    ops.wait_ready(&logs);

    // Traffic: 12 PUSH_DATA, the last 4 of them with two frames each; one more with a bad MIC.
    let mut acked = Vec::new();
    let mut push_data = 0;
    for i in 0..12 {
        let mut rxpk = Vec::new();
        let mut keys = Vec::new();
        for j in 0..if i >= 8 { 2 } else { 1 } {
            let d = &mut devs[(i + j) % 3];
            keys.push((d.name.clone(), u64::from(d.f_cnt)));
            rxpk.push(Forwarder::rxpk(d.uplink(format!("m{i}-{j}").as_bytes())));
        }
        assert!(r.fwd.push(r.gw.gwmp, &rxpk), "PUSH_ACK");
        push_data += 1;
        acked.extend(keys);
    }
    let mut bad = devs[0].uplink(b"bad mic");
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(r.fwd.push(r.gw.gwmp, &[Forwarder::rxpk(bad)]));
    push_data += 1;
    wait_all_arrive(&r.sub, &acked, Duration::from_secs(15), &logs);
    let frames_ok = acked.len();
    assert_eq!(frames_ok, 16);

    // Commands: 2 ok, 1 replayed, 1 unknown_key, 1 malformed, 1 unknown_command.
    let env = ops.signed("m-ping-1", "ping", json!({}));
    ops.send(&env);
    assert_ok(&ops.answer_within("m-ping-1", ANSWER, &logs), "ping");
    assert_ok(&ops.call("buffer.stats", json!({}), &logs), "buffer.stats");
    ops.send(&env);
    ops.send(&envelope(
        "ops-2",
        &signing_key(),
        &command_json("m-uk", "ping", json!({}), Utc::now(), Utc::now() + TimeDelta::minutes(1)),
    ));
    assert_refused(&ops.answer_within("m-uk", ANSWER, &logs), "unknown_key");
    ops.send(b"{\"garbage\": true}");
    ops.send(&ops.signed("m-unk", "self.destruct", json!({})));
    assert_refused(&ops.answer_within("m-unk", ANSWER, &logs), "unknown_command");
    // Commands run in order: every earlier one has been answered by now.
    let answered = |code: &str| ops.answers().iter().filter(|a| a["error"]["code"] == code).count();
    assert!(wait_until(ANSWER, || answered("replayed") >= 1 && answered("malformed") >= 1), "{:?}", ops.answers());
    let oks = 2 + ops.ready_answered();

    let m = r.gw.metrics();
    for name in ["district_gateway_frames_total", "district_gateway_commands_total", "district_gateway_mqtt_connected"]
    {
        assert!(m.types.contains_key(name) && m.help.contains_key(name), "{name}: # HELP and # TYPE");
    }
    assert_eq!(m.types["district_gateway_frames_total"], "counter");
    assert_eq!(m.types["district_gateway_mqtt_connected"], "gauge");
    assert_eq!(m.value("district_gateway_gwmp_packets_total", &[("type", "push_data")]), push_data as f64);
    assert_eq!(m.value("district_gateway_frames_total", &[("result", "ok")]), frames_ok as f64);
    assert_eq!(m.value("district_gateway_frames_total", &[("result", "bad_mic")]), 1.0);
    // Exactly `frames_ok` is the contract, which `readings_journaled_counts_readings_only` checks; here
    // only a bound is checked.
    assert!(m.value("district_gateway_readings_journaled_total", &[]) >= frames_ok as f64);
    assert_eq!(m.value("district_gateway_commands_total", &[("code", "ok")]), oks as f64);
    for (code, n) in [("replayed", 1.0), ("unknown_key", 1.0), ("malformed", 1.0), ("unknown_command", 1.0)] {
        assert_eq!(m.value("district_gateway_commands_total", &[("code", code)]), n, "commands {code}");
    }
    for code in ["bad_signature", "expired", "invalid_args", "wrong_gateway", "internal"] {
        assert_eq!(m.value("district_gateway_commands_total", &[("code", code)]), 0.0, "commands {code}");
    }
    assert_eq!(m.value("district_gateway_mqtt_connected", &[]), 1.0);
    assert_eq!(m.value("district_gateway_healthy", &[]), 1.0);
    assert_eq!(m.value("district_gateway_readings_dropped_total", &[]), 0.0);
    assert!(m.samples.iter().any(|s| s.name == "district_gateway_build_info"
        && s.labels.get("version").map(String::as_str) == Some(env!("CARGO_PKG_VERSION"))));

    // /healthz follows the (test-hook) stalled core loop, and recovers.
    r.gw.signal(Signal::SIGUSR1);
    let mut last = None;
    let unhealthy = wait_until(Duration::from_secs(25), || {
        last = r.gw.http("/healthz");
        last.as_ref().is_some_and(|(s, _)| *s == 503)
    });
    assert!(unhealthy, "/healthz did not turn 503 after SIGUSR1: {last:?}\nlog:\n{}", logs());
    assert!(last.as_ref().unwrap().1.contains("stalled"), "the 503 body names the reason");
    assert_eq!(r.gw.metrics().value("district_gateway_healthy", &[]), 0.0);
    r.gw.signal(Signal::SIGUSR1);
    let healthy = wait_until(Duration::from_secs(20), || {
        last = r.gw.http("/healthz");
        last.as_ref().is_some_and(|(s, _)| *s == 200)
    });
    assert!(healthy, "/healthz did not turn 200 after the second SIGUSR1: {last:?}\nlog:\n{}", logs());
    assert_eq!(r.gw.http("/nope").map(|(s, _)| s), Some(404));
}

#[test]
fn readings_journaled_counts_readings_only() {
    let mut devs = devices("dev", 2);
    let mut r = rig("ops-journaled", &devs, false);
    let logs = log_reader(&r.gw);
    let ops = Ops::new(r.broker.port, "ops-journaled", &r.sub);
    ops.wait_ready(&logs);
    let mut acked = Vec::new();
    for i in 0..4 {
        acked.push(send_uplink(&mut r.fwd, r.gw.gwmp, &mut devs[i % 2], b"r").expect("PUSH_ACK"));
    }
    wait_all_arrive(&r.sub, &acked, Duration::from_secs(15), &logs);
    let bs = assert_ok(&ops.call("buffer.stats", json!({}), &logs), "buffer.stats");
    assert_eq!(bs["journaled"], 4, "buffer.stats.journaled counts readings only: {bs}");
    assert_eq!(r.gw.metrics().value("district_gateway_readings_journaled_total", &[]), 4.0);
}
