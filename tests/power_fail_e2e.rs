//! The power-fail input end to end: the daemon runs in-process with a fake GPIO line as its
//! `[power_fail]` input, a packet forwarder sends real PUSH_DATA datagrams over UDP, and the
//! embedded broker receives what is published.
//!
//! - When the line says mains power is lost, the journal is fsynced at once: a record the test
//!   commits without a flush becomes durable (`max_committed` reaches it, `fsyncs` moves) within
//!   moments of the edge, with no other traffic that could flush it.
//! - While it is lost, a PUSH_DATA gets no PUSH_ACK, nothing is journaled (no seq is handed out, no
//!   reading reaches the broker), and `readings_refused_power_fail` counts the frame; `/metrics`, the
//!   status page and the counters show the state.
//! - When it is back, frames are acknowledged, journaled and published again.
//! - Both polarities, and a line that is already asserted when the daemon starts.
//! - Without a fake, a host that is not a Pi refuses to start with the GPIO message.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::http::http_get;
use common::{config_text, free_udp_port, wait_until, Broker, Forwarder, Subscriber};
use district_gateway::io::gpio::{gpio_available, FakeInput, NOT_A_PI};
use district_gateway::io::status::SourceState;
use district_gateway::runtime::{Daemon, Hardware};
use district_gateway::sim::SimDevice;
use district_gateway::store::{Batch, Record};
use district_gateway::topic::Topic;

const PIN: u8 = 6;

struct Running {
    rt: tokio::runtime::Runtime,
    daemon: Daemon,
    input: FakeInput,
    fwd: Forwarder,
    dev: SimDevice,
    sub: Subscriber,
    _broker: Broker,
    _dir: tempfile::TempDir,
}

fn config(gateway: &str, dir: &std::path::Path, broker: &str, dev: &SimDevice, active_low: bool) -> String {
    // No aggregates: nothing but the test's frames makes the pipeline write. Interval durability with
    // the longest window: no periodic fsync can stand in for the one the power-fail edge must cause.
    let mut text = config_text(gateway, &dir.join("data"), broker, free_udp_port(), std::slice::from_ref(dev))
        .replace(&format!("[buffer]\n{}\n", common::TEST_BUFFER), "[buffer]\nflush_interval_ms = 60000\n");
    text.push_str(&format!(
        "[publish]\naggregates = false\n\
         [power_fail]\npin = {PIN}\nactive_low = {active_low}\ndebounce_ms = 20\n"
    ));
    text
}

/// A daemon whose power-fail input is a fake line at `level` (true = high).
fn start(gateway: &str, active_low: bool, level: bool) -> Running {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, &format!("city/{gateway}/#"));
    let dir = tempfile::tempdir().unwrap();
    let dev = SimDevice::numbered("pf", 1, "raw");
    let text = config(gateway, dir.path(), &broker.url(), &dev, active_low);
    let cfg = district_gateway::config::parse_str(&text, "gateway.toml", dir.path()).unwrap();
    let input = FakeInput::new(PIN, level);
    let hardware = Hardware { power_fail: Some(input.clone()), ..Hardware::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let daemon = rt.block_on(Daemon::start_with(&cfg, hardware)).unwrap();
    let status = daemon.sources.iter().find(|s| s.name() == "power_fail").expect("the input is listed").clone();
    assert!(wait_until(Duration::from_secs(10), || status.state() == SourceState::Up), "power_fail input not up");
    Running { rt, daemon, input, fwd: Forwarder::new(), dev, sub, _broker: broker, _dir: dir }
}

impl Running {
    /// One uplink with `payload`; whether the PUSH_ACK came (the forwarder waits 2 s for it).
    fn push(&mut self, payload: &[u8]) -> bool {
        let phy = self.dev.uplink(payload);
        self.fwd.push(self.daemon.gwmp_addrs[0], &[Forwarder::rxpk(phy)])
    }

    fn power_fail(&self) -> u64 {
        self.daemon.counters.power_fail.load(SeqCst)
    }

    fn refused(&self) -> u64 {
        self.daemon.counters.readings_refused_power_fail.load(SeqCst)
    }

    fn journaled(&self) -> u64 {
        self.daemon.counters.readings_journaled.load(SeqCst)
    }

    fn get(&self, path: &str) -> String {
        let (status, body) = http_get(self.daemon.http_addr.port(), path).expect("ops HTTP answers");
        assert_eq!(status, 200, "{path}");
        body
    }

    /// The payloads (hex) of the readings the broker delivered.
    fn published(&self) -> Vec<String> {
        self.sub.readings().iter().filter_map(|r| r["lorawan"]["payload_hex"].as_str().map(String::from)).collect()
    }

    fn wait_published(&self, hex: &str) -> bool {
        wait_until(Duration::from_secs(15), || self.published().iter().any(|p| p == hex))
    }

    fn stop(self) {
        self.rt.block_on(self.daemon.stop());
    }
}

#[test]
fn active_high_line_syncs_at_once_refuses_frames_while_lost_and_accepts_them_after() {
    let mut r = start("pf-high", false, false); // low: mains present
    assert_eq!(r.power_fail(), 0);
    assert!(r.push(&[0xa1]), "mains present: the frame is acknowledged");
    assert!(wait_until(Duration::from_secs(5), || r.journaled() == 1));

    // Something committed and not yet fsynced (no seq is being handed out meanwhile: no traffic).
    let store = r.daemon.store.clone();
    let seq = store.allocate_seq();
    let mut batch = Batch::default();
    let marker = format!(r#"{{"seq":{seq},"device":"pf-001","event":"test_marker"}}"#);
    batch.push_record(Record::new(seq, Topic::Event("pf-001".into()), marker.into_bytes()));
    store.commit(batch, district_gateway::clock::now()).unwrap();
    let fsyncs_before = store.stats().fsyncs.load(SeqCst);
    assert!(store.max_committed() < seq, "committed, not yet durable");

    // Mains lost: the line goes high. The journal is fsynced at once.
    let edge = Instant::now();
    r.input.set_level(true);
    let synced = wait_until(Duration::from_secs(3), || {
        store.max_committed() >= seq && store.stats().fsyncs.load(SeqCst) > fsyncs_before
    });
    assert!(
        synced,
        "no fsync after the power-fail edge: durable up to {} (record {seq}), fsyncs {} -> {}",
        store.max_committed(),
        fsyncs_before,
        store.stats().fsyncs.load(SeqCst)
    );
    assert!(edge.elapsed() < Duration::from_secs(3));
    assert!(wait_until(Duration::from_secs(2), || r.power_fail() == 1), "power_fail gauge");

    // A frame now: no PUSH_ACK, nothing journaled, no seq handed out, counted.
    let next_seq = store.next_seq();
    assert!(!r.push(&[0xb2]), "PUSH_ACK while mains power is lost");
    assert!(wait_until(Duration::from_secs(2), || r.refused() == 1), "refused: {}", r.refused());
    assert_eq!(r.journaled(), 1, "nothing journaled while mains power is lost");
    assert_eq!(store.next_seq(), next_seq, "no seq handed out while mains power is lost");
    let metrics = r.get("/metrics");
    assert!(metrics.contains("\ndistrict_gateway_power_fail 1\n"), "{metrics}");
    assert!(metrics.contains("\ndistrict_gateway_readings_refused_power_fail_total 1\n"), "{metrics}");
    let page = r.get("/");
    assert!(page.contains("<span class=\"bad\" id=\"power\">lost</span>"), "status page shows mains lost");

    // Mains back: the line goes low; frames are acknowledged and journaled again.
    r.input.set_level(false);
    assert!(wait_until(Duration::from_secs(2), || r.power_fail() == 0), "power_fail gauge back to 0");
    assert!(r.push(&[0xc3]), "mains back: the frame is acknowledged");
    assert!(wait_until(Duration::from_secs(5), || r.journaled() == 2));
    assert_eq!(r.refused(), 1);
    assert!(r.get("/metrics").contains("\ndistrict_gateway_power_fail 0\n"));
    assert!(r.get("/").contains("<span class=\"ok\" id=\"power\">on</span>"));

    // The broker got the readings from before and after, never the refused one.
    assert!(r.wait_published("a1") && r.wait_published("c3"), "published: {:?}", r.published());
    assert!(!r.published().iter().any(|p| p == "b2"), "the refused frame was published: {:?}", r.published());
    r.stop();
}

#[test]
fn active_low_line_already_low_at_start_refuses_until_it_goes_high() {
    let mut r = start("pf-low", true, false); // low at start: mains already lost
    assert!(wait_until(Duration::from_secs(3), || r.power_fail() == 1), "the level at start counts");
    assert!(r.daemon.counters.power_lost_since().is_some());
    assert!(!r.push(&[0xa1]), "PUSH_ACK while mains power is lost");
    assert!(wait_until(Duration::from_secs(2), || r.refused() == 1));
    assert_eq!(r.journaled(), 0);

    r.input.set_level(true); // high: mains present
    assert!(wait_until(Duration::from_secs(2), || r.power_fail() == 0));
    assert!(r.daemon.counters.power_lost_since().is_none());
    assert!(r.push(&[0xb2]), "mains present: the frame is acknowledged");
    assert!(wait_until(Duration::from_secs(5), || r.journaled() == 1));

    r.input.set_level(false); // lost again
    assert!(wait_until(Duration::from_secs(2), || r.power_fail() == 1));
    assert!(!r.push(&[0xc3]), "PUSH_ACK while mains power is lost");
    assert!(wait_until(Duration::from_secs(2), || r.refused() == 2));
    assert_eq!(r.journaled(), 1);

    assert!(r.wait_published("b2"), "published: {:?}", r.published());
    let published = r.published();
    assert!(!published.iter().any(|p| p == "a1" || p == "c3"), "a refused frame was published: {published:?}");
    r.stop();
}

#[test]
fn without_gpio_a_power_fail_input_fails_the_start_with_the_gpio_message() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SimDevice::numbered("pf", 1, "raw");
    let text = config("pf-nogpio", dir.path(), "mqtt://127.0.0.1:1", &dev, false);
    let cfg = district_gateway::config::parse_str(&text, "gateway.toml", dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = rt.block_on(Daemon::start(&cfg));
    match gpio_available() {
        Err(_) => {
            let err = format!("{:#}", started.err().expect("no GPIO here: the start must fail"));
            assert!(err.contains(NOT_A_PI) && err.contains("power_fail"), "{err}");
        }
        // A Raspberry Pi: the real pin is opened (or the error names it).
        Ok(()) => match started {
            Ok(daemon) => rt.block_on(daemon.stop()),
            Err(e) => assert!(format!("{e:#}").contains(&format!("GPIO pin {PIN}")), "{e:#}"),
        },
    }
}
