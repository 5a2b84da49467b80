//! The gateway's VEN against the real VTN: the daemon in-process with an SML meter on a pty (460 W), a
//! heat pump on fake SG-Ready relays and `[openadr]` polling every second; the business side creates,
//! modifies and deletes events through the VTN's API with openleadr-client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use common::{openpty, until, Subscriber};
use district_gateway::config;
use district_gateway::io::gpio::FakeOutput;
use district_gateway::io::status::{SourceState, SourceStatus};
use district_gateway::runtime::{Daemon, Hardware};
use openleadr_client::{BusinessLogic, Client, EventClient, ProgramClient};
use openleadr_wire::event::{EventInterval, EventType, EventValuesMap};
use openleadr_wire::interval::IntervalPeriod;
use openleadr_wire::values_map::Value as WireValue;
use serde_json::Value;

/// An interval `id` of `secs` seconds from `start` with one payload.
fn interval(id: i32, start: chrono::DateTime<chrono::Utc>, secs: u64, kind: EventType, v: f64) -> EventInterval {
    let mut iv = EventInterval::new(id, vec![EventValuesMap { value_type: kind, values: vec![WireValue::Number(v)] }]);
    iv.interval_period =
        Some(IntervalPeriod { start, duration: Some(format!("PT{secs}S").parse().unwrap()), randomize_start: None });
    iv
}

struct Gateway {
    daemon: Daemon,
    relays: (FakeOutput, FakeOutput),
    sub: Subscriber,
    meter_on: Arc<AtomicBool>,
    _broker: common::Broker,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// The daemon with an SML meter on a pty (460 W every 0.7 s), a heat pump on (fake) SG-Ready relays,
    /// and `[openadr]` pointing at `vtn` with a 1 s poll.
    async fn start(gateway: &str, vtn: &common::vtn::Vtn) -> Gateway {
        let broker = common::Broker::start();
        let port = broker.port;
        let filter = format!("city/{gateway}/#");
        let sub = tokio::task::spawn_blocking(move || Subscriber::start(port, &filter)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("openadr.secret");
        std::fs::write(&secret, format!("{}\n", vtn.ven().client_secret)).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let (master, slave) = openpty();
        let text = format!(
            "[gateway]\nid = \"{gateway}\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
             [[source]]\ntype = \"sml\"\nport = \"{}\"\ndevice = \"feeder-meter\"\n\
             [demand_response]\nmeter = \"feeder-meter\"\nlimit_kw = 50\nhysteresis_kw = 0.05\ninterval_s = 1\nsettle_s = 0\nrestore_delay_min_s = 0\nrestore_delay_max_s = 1\n\
             [[demand_response.load]]\nname = \"hp-1\"\nkind = \"sg-ready\"\nrated_kw = 6.0\npriority = 1\nmin_off_s = 0\nmin_on_s = 0\noutput = {{ type = \"gpio\", pins = [17, 27] }}\n\
             [openadr]\nvtn_url = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\nven_name = \"{gateway}\"\nprogram = \"district-dr\"\npoll_interval_s = 1\nrequest_timeout_s = 3\n",
            dir.path().join("data").display(),
            slave.display(),
            vtn.url(),
            vtn.ven().client_id,
            secret.display(),
        );
        let cfg = config::parse_str(&text, "gateway.toml", dir.path()).unwrap();
        let relays = (FakeOutput::new(17), FakeOutput::new(27));
        let mut hw = Hardware::default();
        hw.relays.insert(17, relays.0.clone());
        hw.relays.insert(27, relays.1.clone());
        let daemon = Daemon::start_with(&cfg, hw).await.unwrap();
        let meter_on = common::feed_holley_meter(master);
        Gateway { daemon, relays, sub, meter_on, _broker: broker, _dir: dir }
    }

    fn ven(&self) -> Arc<SourceStatus> {
        self.daemon.sources.iter().find(|s| s.name() == "openadr").expect("the VEN is listed").clone()
    }

    /// The heat pump is blocked (SG-Ready 1: relay 1 on, relay 2 off).
    fn blocked(&self) -> bool {
        (self.relays.0.level(), self.relays.1.level()) == (Some(true), Some(false))
    }

    fn normal(&self) -> bool {
        (self.relays.0.level(), self.relays.1.level()) == (Some(false), Some(false))
    }

    fn statuses(&self) -> Vec<Value> {
        self.sub.on_topic("/dr/status").into_iter().map(|m| m.json).collect()
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = common::http::http_get(self.daemon.http_addr.port(), "/metrics")?;
        let line = body.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    async fn stop(self) {
        self.meter_on.store(false, Ordering::Relaxed);
        self.daemon.stop().await;
    }
}

/// A limit event of one interval from now, created as the business side would; (the event, the time
/// until the heat pump was blocked).
async fn limit_event(
    program: &ProgramClient<BusinessLogic>,
    gw: &Gateway,
    limit_kw: f64,
    secs: u64,
) -> (EventClient<BusinessLogic>, Option<Duration>) {
    let now = chrono::Utc::now();
    let req = program.new_event(vec![interval(0, now, secs, EventType::ImportCapacityLimit, limit_kw)]);
    let t0 = Instant::now();
    let event = program.create_event(req).await.expect("the VTN takes the event");
    let shed = until(Duration::from_secs(15), || gw.blocked()).await;
    (event, shed.then(|| t0.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_a_real_vtn() {
    let Some(mut vtn) = common::vtn::Vtn::start() else { return };
    let bl: Client<BusinessLogic> = vtn.business_logic();
    let program = bl.create_program(openleadr_wire::program::ProgramRequest::new("district-dr")).await.unwrap();
    let gw = Gateway::start("oadr-01", &vtn).await;

    // The VEN registers itself and polls.
    let ven = gw.ven();
    assert!(
        until(Duration::from_secs(20), || ven.state() == SourceState::Up).await,
        "VEN not up: {:?}",
        ven.snapshot()
    );
    assert!(bl.get_ven_by_name("oadr-01").await.is_ok(), "the VEN is registered at the VTN");
    assert!(until(Duration::from_secs(10), || gw.normal()).await, "SG-Ready 2 (normal) at start");

    // Latency: an event's creation at the VTN → the heat pump's relays (poll 1 s); five events, each
    // then withdrawn (deleted at the VTN = cancelled), after which the heat pump comes back.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (event, latency) = limit_event(&program, &gw, 0.3, 3600).await;
        latencies.push(latency.expect("the heat pump is blocked under the VTN's limit"));
        let id = format!("oadr:{}:0", event.id().as_str());
        assert!(
            until(Duration::from_secs(5), || gw
                .statuses()
                .last()
                .is_some_and(|s| s["limit_reason"] == format!("event:{id}")))
            .await,
            "dr/status names the VTN's event: {:?}",
            gw.statuses().last()
        );
        event.delete().await.unwrap();
        assert!(until(Duration::from_secs(15), || gw.normal()).await, "restored after the cancel");
    }
    latencies.sort();
    eprintln!(
        "VTN event -> first load command: median {} ms (min {} ms, max {} ms, n = {}, poll 1 s)",
        latencies[2].as_millis(),
        latencies[0].as_millis(),
        latencies[4].as_millis(),
        latencies.len()
    );

    // Modifications: the limit relaxed to 20 kW (the heat pump comes back), then above the configured
    // 50 kW (the config is the tightest again). dr/status re-publishes a limit that moved by 0.5 kW.
    let (mut event, latency) = limit_event(&program, &gw, 0.3, 3600).await;
    assert!(latency.is_some(), "blocked");
    let id = format!("oadr:{}:0", event.id().as_str());
    let start = chrono::Utc::now();
    event.content_mut().intervals = Some(vec![interval(0, start, 3600, EventType::ImportCapacityLimit, 20.0)]);
    event.update().await.unwrap();
    assert!(
        until(Duration::from_secs(10), || gw.statuses().last().is_some_and(|s| s["limit_kw"].as_f64() == Some(20.0)))
            .await,
        "the modified limit: {:?}",
        gw.statuses().last()
    );
    assert!(until(Duration::from_secs(15), || gw.normal()).await, "relaxed: restored");
    event.content_mut().intervals = Some(vec![interval(0, start, 3600, EventType::ImportCapacityLimit, 80.0)]);
    event.update().await.unwrap();
    assert!(
        until(Duration::from_secs(10), || gw.statuses().last().is_some_and(|s| s["limit_reason"] == "config")).await,
        "{:?}",
        gw.statuses().last()
    );

    // The VTN goes away: the booked event runs on; the VEN says down; back, it follows the cancel.
    event.content_mut().intervals = Some(vec![interval(0, start, 3600, EventType::ImportCapacityLimit, 0.3)]);
    event.update().await.unwrap();
    assert!(until(Duration::from_secs(15), || gw.blocked()).await, "tightened again");
    tokio::task::block_in_place(|| vtn.stop());
    assert!(
        until(Duration::from_secs(15), || ven.state() == SourceState::Down).await,
        "VEN down: {:?}",
        ven.snapshot()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(gw.blocked(), "the event runs on while the VTN is unreachable");
    assert!(
        until(Duration::from_secs(10), || gw
            .statuses()
            .last()
            .is_some_and(|s| s["limit_reason"] == format!("event:{id}")))
        .await,
        "dr/status while the VTN is away: {:?}",
        gw.statuses().last()
    );
    // It comes back with a rotated signing key: the VEN's token is refused, it gets a new one.
    vtn.rotate_signing_secret();
    tokio::task::block_in_place(|| vtn.start_again());
    assert!(
        until(Duration::from_secs(30), || ven.state() == SourceState::Up).await,
        "VEN up again: {:?}",
        ven.snapshot()
    );
    // The business side needs a new token as well.
    let bl = vtn.business_logic();
    let program = bl.get_program_by_id(program.id()).await.unwrap();
    let event = bl.get_event_by_id(event.id()).await.unwrap();
    event.delete().await.unwrap();
    assert!(until(Duration::from_secs(15), || gw.normal()).await, "the cancel after the restart");

    // An interval that ends on its own: the report goes back to the VTN (feeder power, the load shed).
    let (event, latency) = limit_event(&program, &gw, 0.3, 6).await;
    assert!(latency.is_some(), "blocked");
    let mut reports = Vec::new();
    for _ in 0..100 {
        reports = event.get_report_list(None).await.unwrap();
        if !reports.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(reports.len(), 1, "one report for the interval");
    let report = serde_json::to_value(reports[0].content()).unwrap();
    assert_eq!(report["clientName"], "oadr-01");
    let feeder = &report["resources"][0];
    assert_eq!(feeder["resourceName"], "AGGREGATED_REPORT");
    let payloads = feeder["intervals"][0]["payloads"].as_array().unwrap();
    let demand = payloads.iter().find(|p| p["type"] == "DEMAND").expect("DEMAND");
    assert!((demand["values"][0].as_f64().unwrap() - 0.46).abs() < 0.01, "mean feeder power: {demand}");
    let hp = report["resources"].as_array().unwrap().iter().find(|r| r["resourceName"] == "hp-1").expect("hp-1");
    let blocked_s = hp["intervals"][0]["payloads"][0]["values"][0].as_f64().unwrap();
    assert!(blocked_s > 3.0, "hp-1 blocked for most of the interval: {blocked_s}");
    assert!(until(Duration::from_secs(15), || gw.normal()).await, "restored at the interval's end");

    // A payload type the gateway does not follow: refused and reported on event/openadr.
    let now = chrono::Utc::now();
    let price = program.new_event(vec![interval(0, now, 600, EventType::Price, 0.31)]);
    let price = program.create_event(price).await.unwrap();
    let refused = || gw.sub.on_topic("/event/openadr").into_iter().map(|m| m.json).collect::<Vec<Value>>();
    assert!(until(Duration::from_secs(10), || !refused().is_empty()).await, "refusal published");
    let r = &refused()[0];
    assert_eq!((r["event_id"].as_str(), r["interval_id"].as_i64()), (Some(price.id().as_str()), Some(0)));
    assert!(r["reason"].as_str().unwrap().contains("PRICE"));
    assert!(gw.normal(), "a refused event changes nothing");
    assert!(gw.metric("district_gateway_openadr_reports_sent").is_some_and(|n| n >= 1.0));
    assert!(gw.metric("district_gateway_openadr_intervals_refused").is_some_and(|n| n == 1.0));
    gw.stop().await;
}
