//! End to end through real sockets: the daemon as a separate process, a real MQTT broker, a UDP
//! packet forwarder, and an MQTT subscriber. No timing assertions: only bounded waits.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use district_gateway::sim::SimDevice;

fn devices(n: u32) -> Vec<SimDevice> {
    (1..=n).map(|i| SimDevice::numbered("dev", i, "raw")).collect()
}

#[test]
fn a_reading_reaches_the_broker_field_by_field() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "city/e2e-01/#");
    let mut devs = devices(2);
    let daemon = Daemon::start("e2e-01", &broker.url(), &devs);
    let mut fwd = Forwarder::new();
    // Live, not a replay: wait until the daemon is connected before sending.
    assert!(wait_until(Duration::from_secs(10), || !sub.on_topic("/state").is_empty()));

    let payload = hex::decode("01755c03824408040001").unwrap();
    devs[0].f_cnt = 1201;
    let phy = devs[0].uplink(&payload);
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(phy)]), "no PUSH_ACK");
    assert!(
        wait_until(Duration::from_secs(15), || !sub.readings().is_empty()),
        "no reading; log:\n{}",
        daemon.all_logs()
    );

    let r = &sub.readings()[0];
    assert!(r["seq"].as_u64().unwrap() >= 1);
    assert_eq!(r["gateway"], "e2e-01");
    assert_eq!(r["device"], "dev-001");
    assert_eq!(r["profile"], "raw");
    let at = r["at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'), "at = {at}");
    assert_eq!(r["metrics"], serde_json::json!({}));
    let l = &r["lorawan"];
    assert_eq!(l["dev_addr"], devs[0].dev_addr.to_string());
    assert_eq!(l["f_cnt"], 1201);
    assert_eq!(l["f_port"], 85);
    assert_eq!(l["payload_hex"], "01755c03824408040001");
    assert_eq!(l["rssi"], -97);
    assert_eq!(l["snr"], 7.5);
    assert_eq!(l["freq_hz"], 868_100_000u64);
    assert_eq!(l["sf"], 7);
    assert!(r.get("replayed").is_none());

    // The retained state says we are online.
    assert!(wait_until(Duration::from_secs(5), || !sub.on_topic("/state").is_empty()));
    let st = &sub.on_topic("/state")[0];
    assert_eq!(st.json["online"], true);
    assert_eq!(st.json["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn bad_input_is_refused_and_counted_and_the_daemon_keeps_going() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "city/e2e-02/#");
    let mut devs = devices(2);
    let daemon = Daemon::start("e2e-02", &broker.url(), &devs);
    let mut fwd = Forwarder::new();

    // Garbage datagrams of every kind.
    for bad in
        [&b""[..], &b"\x02"[..], &b"\x02\x00\x00\x00{not json"[..], &[9u8, 0, 0, 0][..], &[2u8, 0, 0, 0x7f, 1, 2][..]]
    {
        fwd.send_raw(daemon.gwmp, bad);
    }
    fwd.send_raw(daemon.gwmp, b"\x02\x01\x02\x00\xaa\x55\x5a\x00\x00\x00\x00\x01{\"rxpk\":[{\"data\":\"!!!\"}]");
    // A frame with a bad MIC: flip the last byte.
    let mut tampered = devs[0].uplink(b"x");
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(tampered)]));
    // A good frame received through two antennas: one reading.
    let good = devs[1].uplink(b"hello");
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(good.clone()), Forwarder::rxpk(good.clone())]));
    // The same frame again later: a replay, refused.
    std::thread::sleep(Duration::from_millis(2100)); // past the de-duplication window
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(good)]));
    // FPort 0 (MAC commands only): not a reading.
    devs[1].f_port = 0;
    let mac = devs[1].uplink(&[0x02]);
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(mac)]));
    devs[1].f_port = 85;
    let after = devs[1].uplink(b"after");
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(after)]));

    assert!(wait_until(Duration::from_secs(15), || sub.readings().len() >= 2));
    std::thread::sleep(Duration::from_millis(500));
    let readings = sub.readings();
    let payloads: Vec<_> = readings.iter().map(|r| r["lorawan"]["payload_hex"].as_str().unwrap().to_string()).collect();
    assert_eq!(payloads, vec![hex::encode("hello"), hex::encode("after")], "log:\n{}", daemon.all_logs());
    let log = daemon.all_logs();
    assert!(log.contains("bad datagram"), "bad datagrams are logged");
    assert!(log.contains("frame refused"), "refused frames are logged");
}

#[test]
fn a_broker_outage_under_traffic_loses_nothing_and_keeps_order() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "city/e2e-03/#");
    let mut devs = devices(3);
    let mut daemon = Daemon::start("e2e-03", &broker.url(), &devs);
    // A restarted test broker keeps no subscriptions: give the test's subscriber time to subscribe
    // again before the daemon reconnects and drains its backlog (otherwise the *subscriber* misses
    // messages the broker delivered to nobody).
    daemon.kill9();
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    let text = text
        .replace("reconnect_min_ms = 200", "reconnect_min_ms = 2500")
        .replace("reconnect_max_ms = 1000", "reconnect_max_ms = 4000");
    std::fs::write(&daemon.config, text).unwrap();
    daemon.spawn();
    assert!(wait_until(Duration::from_secs(10), || !sub.on_topic("/state").is_empty()));
    let mut fwd = Forwarder::new();
    let mut acked = Vec::new();
    let send = |devs: &mut Vec<SimDevice>, fwd: &mut Forwarder, n: usize, acked: &mut Vec<(String, u64)>| {
        for i in 0..n {
            let d = &mut devs[i % 3];
            let fcnt = d.f_cnt as u64;
            let phy = d.uplink(format!("m{i}").as_bytes());
            if fwd.push(daemon.gwmp, &[Forwarder::rxpk(phy)]) {
                acked.push((d.name.clone(), fcnt));
            }
        }
    };
    send(&mut devs, &mut fwd, 30, &mut acked);
    assert!(wait_until(Duration::from_secs(15), || sub.readings().len() >= 30));
    broker.stop();
    send(&mut devs, &mut fwd, 60, &mut acked); // journaled while the broker is down
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    assert!(sub.wait_subscribed(Duration::from_secs(10)));
    send(&mut devs, &mut fwd, 30, &mut acked);
    assert_eq!(acked.len(), 120, "every datagram was acknowledged although the broker was down");

    let got = wait_until(Duration::from_secs(30), || {
        let m = by_frame(&sub.readings());
        acked.iter().all(|k| m.contains_key(k))
    });
    let readings = sub.readings();
    let m = by_frame(&readings);
    let missing: Vec<_> = acked.iter().filter(|k| !m.contains_key(*k)).collect();
    assert!(
        got,
        "{} of {} acknowledged readings missing: {:?}\nlog:\n{}",
        missing.len(),
        acked.len(),
        missing,
        daemon.all_logs()
    );
    // Per device, seq order holds (first arrival of each seq).
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut seen = HashSet::new();
    for r in &readings {
        let seq = r["seq"].as_u64().unwrap();
        if !seen.insert(seq) {
            continue; // an at-least-once duplicate
        }
        let dev = r["device"].as_str().unwrap().to_string();
        let prev = last.insert(dev.clone(), seq).unwrap_or(0);
        assert!(seq > prev, "{dev}: seq {seq} after {prev}");
    }
    assert!(readings.iter().any(|r| r["replayed"] == true), "backlog readings are marked replayed");
}

#[test]
fn sigkill_under_traffic_loses_no_acknowledged_frame_and_reuses_no_seq() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "city/e2e-04/#");
    let mut devs = devices(4);
    let mut daemon = Daemon::start("e2e-04", &broker.url(), &devs);
    let mut fwd = Forwarder::new();
    fwd.socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut old_frames = Vec::new();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for round in 0..5 {
        // A killer thread sends SIGKILL at a pseudo-random moment while this thread floods the daemon.
        let kill_after = Duration::from_millis(100 + (rng % 400));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let pid = daemon.pid().unwrap() as i32;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        });
        let mut i = 0usize;
        let mut failures = 0;
        while failures < 3 {
            let d = &mut devs[i % 4];
            let fcnt = d.f_cnt as u64;
            let phy = d.uplink(format!("r{round}-{i}").as_bytes());
            if i % 50 == 0 {
                old_frames.push(phy.clone());
            }
            if fwd.push(daemon.gwmp, &[Forwarder::rxpk(phy)]) {
                acked.push((d.name.clone(), fcnt));
            } else {
                failures += 1;
            }
            i += 1;
        }
        killer.join().unwrap();
        daemon.kill9(); // reap
        daemon.spawn();
    }
    // Replayed old frames must not be accepted after all these restarts.
    for f in &old_frames {
        fwd.push(daemon.gwmp, &[Forwarder::rxpk(f.clone())]);
    }
    let complete = wait_until(Duration::from_secs(40), || {
        let m = by_frame(&sub.readings());
        acked.iter().all(|k| m.contains_key(k))
    });
    let readings = sub.readings();
    let m = by_frame(&readings);
    let missing: Vec<_> = acked.iter().filter(|k| !m.contains_key(*k)).collect();
    assert!(complete, "{} acknowledged frames missing: {:?}", missing.len(), missing);
    // No seq reused: one seq maps to exactly one (device, f_cnt), and vice versa.
    let mut seq_to_frame: HashMap<u64, (String, u64)> = HashMap::new();
    for r in &readings {
        let key = (r["device"].as_str().unwrap().to_string(), r["lorawan"]["f_cnt"].as_u64().unwrap());
        let seq = r["seq"].as_u64().unwrap();
        if let Some(prev) = seq_to_frame.insert(seq, key.clone()) {
            assert_eq!(prev, key, "seq {seq} reused");
        }
    }
    for (k, v) in &m {
        let seqs: HashSet<u64> = v.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs.len(), 1, "{k:?} journaled twice (a replayed frame counter was accepted): {seqs:?}");
    }
    assert!(!acked.is_empty());
    eprintln!("sigkill test: {} frames acknowledged over 5 kills, {} readings received", acked.len(), readings.len());
}

#[test]
fn keys_never_appear_in_the_daemons_output() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "city/e2e-05/#");
    let mut devs = devices(2);
    let daemon = Daemon::start("e2e-05", &broker.url(), &devs);
    let mut fwd = Forwarder::new();
    for i in 0..5 {
        let phy = devs[i % 2].uplink(b"secret?");
        fwd.push(daemon.gwmp, &[Forwarder::rxpk(phy)]);
    }
    let mut bad = devs[0].uplink(b"bad mic");
    bad[5] ^= 1;
    fwd.push(daemon.gwmp, &[Forwarder::rxpk(bad)]);
    assert!(wait_until(Duration::from_secs(15), || sub.readings().len() >= 5));
    let log = daemon.all_logs().to_lowercase();
    assert!(log.contains("frame refused"), "the debug log was captured");
    for d in &devs {
        for k in [d.nwk_s_key.expose(), d.app_s_key.expose()] {
            let h = hex::encode(k);
            assert!(!log.contains(&h), "a key appears in the log");
            assert!(!log.contains(&h[..16]), "part of a key appears in the log");
        }
    }
}
