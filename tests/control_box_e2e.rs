//! The §14a control box end to end: the daemon runs in-process with a fake GPIO line as the control
//! box's contact, an SML meter on a pty feeds the feeder power (well under the limit), a heat pump hangs
//! on (fake) SG-Ready relays and a wallbox on a class-C LoRaWAN controller.
//!
//! - The contact closes: the heat pump is blocked, the wallbox set to 4.2 kW, although the feeder is far
//!   under its limit; `dr/status` says `limit_reason: "control_box"` with a `control_box` object, and an
//!   `event/control_box` marks the start.
//! - The contact opens: the end event carries the duration, the loads come back one at a time, and the
//!   reduced time is on `dr/status` and `/metrics`.
//! - A contact that is already closed when the daemon starts reduces from the start.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::http::http_get;
use common::pull_forwarder::Forwarder;
use common::{openpty, until, Subscriber};
use district_gateway::config;
use district_gateway::io::gpio::{FakeInput, FakeOutput};
use district_gateway::io::gwmp::packet::{build_push_data, RxPkOut};
use district_gateway::io::status::SourceState;
use district_gateway::keys::Eui64;
use district_gateway::runtime::{Daemon, Hardware};
use district_gateway::sim::frames::open_downlink;
use district_gateway::sim::SimDevice;
use serde_json::Value;

const GW: Eui64 = Eui64(0xaa55_5a00_0000_0014);
/// The control box's contact: closed pulls the pin low (active_low, the default).
const CONTACT: u8 = 22;

impl Forwarder {
    async fn up(&mut self, phy: Vec<u8>) {
        self.token = self.token.wrapping_add(1);
        let rx = RxPkOut { tmst: 1, freq_hz: 868_100_000, sf: 7, bw_khz: 125, rssi: -70, lsnr: 9.0, data: phy };
        self.sock.send_to(&build_push_data(2, self.token.to_le_bytes(), GW, &[rx]), self.to).await.unwrap();
    }

    /// The wallbox set-points (kW × 10) in the downlinks that arrive within `limit`.
    async fn setpoints(&self, limit: Duration, wb: &SimDevice) -> Vec<u16> {
        let mut out = Vec::new();
        let end = tokio::time::Instant::now() + limit;
        let mut b = vec![0u8; 4096];
        while let Some(left) = end.checked_duration_since(tokio::time::Instant::now()) {
            let Ok(Ok((n, _))) = tokio::time::timeout(left, self.sock.recv_from(&mut b)).await else { break };
            if n <= 4 || b[3] != 3 {
                continue;
            }
            let v: Value = serde_json::from_slice(&b[4..n]).unwrap();
            let data =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v["txpk"]["data"].as_str().unwrap())
                    .unwrap();
            if let Ok(d) = open_downlink(&data, &wb.nwk_s_key, &wb.app_s_key) {
                if d.f_port == Some(20) && d.payload.len() == 3 && d.payload[0] == 0x02 {
                    out.push(u16::from_be_bytes([d.payload[1], d.payload[2]]));
                }
            }
        }
        out
    }
}

struct Site {
    daemon: Daemon,
    contact: FakeInput,
    relays: (FakeOutput, FakeOutput),
    fwd: Forwarder,
    wb: SimDevice,
    sub: Subscriber,
    meter_on: Arc<AtomicBool>,
    _broker: common::Broker,
    _dir: tempfile::TempDir,
}

/// A daemon with the box's contact at `level` (true = high = open).
async fn start(gateway: &str, level: bool) -> Site {
    let broker = common::Broker::start();
    let port = broker.port;
    let filter = format!("city/{gateway}/#");
    let sub = tokio::task::spawn_blocking(move || Subscriber::start(port, &filter)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (master, slave) = openpty();
    let wb = SimDevice::numbered("wb-ctl", 1, "raw");
    let text = format!(
        "[gateway]\nid = \"{gateway}\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n[[source]]\ntype = \"sml\"\nport = \"{}\"\ndevice = \"feeder-meter\"\n\
         [demand_response]\nmeter = \"feeder-meter\"\nlimit_kw = 50\nhysteresis_kw = 1\ninterval_s = 1\nsettle_s = 0\nrestore_delay_min_s = 1\nrestore_delay_max_s = 2\n\
         [demand_response.control_box]\npins = [{CONTACT}]\ndebounce_ms = 20\n\
         [[demand_response.load]]\nname = \"hp-1\"\nkind = \"sg-ready\"\nrated_kw = 6.0\npriority = 1\nmin_off_s = 0\nmin_on_s = 0\noutput = {{ type = \"gpio\", pins = [17, 27] }}\n\
         [[demand_response.load]]\nname = \"wb-1\"\nkind = \"setpoint\"\nrated_kw = 11.0\npriority = 2\noutput = {{ type = \"lorawan\", device = \"{}\", f_port = 20 }}\n{}class = \"C\"\n",
        dir.path().join("data").display(),
        slave.display(),
        wb.name,
        wb.config_toml()
    );
    let cfg = config::parse_str(&text, "gateway.toml", dir.path()).unwrap();
    let relays = (FakeOutput::new(17), FakeOutput::new(27));
    let contact = FakeInput::new(CONTACT, level);
    let mut hw = Hardware::default();
    hw.relays.insert(17, relays.0.clone());
    hw.relays.insert(27, relays.1.clone());
    hw.control_box.insert(CONTACT, contact.clone());
    let daemon = Daemon::start_with(&cfg, hw).await.unwrap();
    let input = daemon.sources.iter().find(|s| s.name() == "control_box[0]").expect("the contact is listed").clone();
    assert!(until(Duration::from_secs(10), || input.state() == SourceState::Up).await, "control_box[0] not up");
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;
    let mut wb2 = wb.clone();
    fwd.up(wb2.uplink(b"hello")).await; // the route to the wallbox controller
                                        // The Holley meter dump says 460 W, every 0.7 s: far under the 50 kW limit.
    let meter_on = common::feed_holley_meter(master);
    Site { daemon, contact, relays, fwd, wb: wb2, sub, meter_on, _broker: broker, _dir: dir }
}

impl Site {
    fn statuses(&self) -> Vec<Value> {
        self.sub.on_topic("/dr/status").into_iter().map(|m| m.json).collect()
    }

    fn episodes(&self) -> Vec<Value> {
        self.sub.on_topic("/event/control_box").into_iter().map(|m| m.json).collect()
    }

    /// The SG-Ready relays' last levels (relay 1 "EVU block", relay 2).
    fn relays(&self) -> (Option<bool>, Option<bool>) {
        (self.relays.0.level(), self.relays.1.level())
    }

    fn reduced_metric(&self) -> Option<f64> {
        let (_, body) = http_get(self.daemon.http_addr.port(), "/metrics")?;
        let line = body.lines().find(|l| l.starts_with("district_gateway_control_box_reduced_seconds_total"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    async fn stop(self) {
        self.meter_on.store(false, Ordering::Relaxed);
        self.daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_reduces_every_load_to_its_minimum_and_the_time_is_reported() {
    let site = start("cb-01", true).await;
    // Normal operation first: the meter is read, nothing is reduced.
    assert!(
        until(Duration::from_secs(10), || site.statuses().iter().any(|s| s["measured_kw"].as_f64().is_some())).await,
        "no dr/status with a reading: {:?}",
        site.statuses()
    );
    assert_eq!(site.relays(), (Some(false), Some(false)), "SG-Ready state 2 (normal)");
    let last = site.statuses().last().cloned().unwrap();
    assert_eq!(
        (last["limit_reason"].as_str(), last["control_box"]["state"].as_str()),
        (Some("config"), Some("normal"))
    );

    // The grid operator's box closes its contact.
    site.contact.set_level(false);
    let set = site.fwd.setpoints(Duration::from_secs(4), &site.wb).await;
    assert!(set.contains(&42), "the wallbox goes to 4.2 kW: {set:?}");
    assert!(until(Duration::from_secs(5), || site.relays() == (Some(true), Some(false))).await, "SG-Ready 1");
    assert!(
        until(Duration::from_secs(10), || site.statuses().iter().any(|s| s["limit_reason"] == "control_box")).await,
        "dr/status: {:?}",
        site.statuses()
    );
    let st = site.statuses().into_iter().rev().find(|s| s["limit_reason"] == "control_box").unwrap();
    assert_eq!(st["control_box"]["state"], "reduce");
    assert_eq!(st["control_box"]["stage"], 1);
    assert_eq!(st["loads"]["hp-1"]["state"], "blocked");
    assert_eq!(st["loads"]["wb-1"]["setpoint_kw"], 4.2);
    assert!(until(Duration::from_secs(10), || !site.episodes().is_empty()).await, "no start event");
    let started = site.episodes()[0].clone();
    assert_eq!((started["type"].as_str(), started["state"].as_str()), (Some("control_box"), Some("reduce")));
    assert!(started["start"].is_string() && started["end"].is_null());

    // Reduced for a while: the loads stay at their minimum although the feeder is far under its limit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(site.relays(), (Some(true), Some(false)), "still blocked");
    assert!(site.reduced_metric().is_some_and(|s| s >= 2.0), "metric while reduced: {:?}", site.reduced_metric());

    // The contact opens: the episode ends with its duration, the loads come back one at a time.
    site.contact.set_level(true);
    assert!(until(Duration::from_secs(10), || site.episodes().len() >= 2).await, "no end event");
    let ended = site.episodes()[1].clone();
    assert_eq!(ended["state"], "normal");
    assert_eq!(ended["start"], started["start"]);
    let duration = ended["duration_s"].as_f64().expect("duration_s");
    assert!(duration >= 3.0, "{ended}");
    let set = site.fwd.setpoints(Duration::from_secs(6), &site.wb).await;
    assert!(set.contains(&110), "the wallbox back at 11 kW: {set:?}");
    assert!(until(Duration::from_secs(10), || site.relays() == (Some(false), Some(false))).await, "SG-Ready 2");
    assert!(
        until(Duration::from_secs(10), || site.statuses().last().is_some_and(|s| {
            s["control_box"]["state"] == "normal"
                && s["loads"]["hp-1"]["state"] == "normal"
                && s["loads"]["wb-1"]["state"] == "normal"
        }))
        .await,
        "dr/status after: {:?}",
        site.statuses().last()
    );
    let last = site.statuses().last().cloned().unwrap();
    assert_eq!(last["limit_reason"], "config");
    let reduced = last["control_box"]["reduced_s"].as_f64().unwrap();
    assert!((reduced - duration).abs() < 0.01, "reduced_s {reduced} = the episode's {duration}");
    assert!(site.reduced_metric().is_some_and(|s| (s - duration).abs() < 0.01), "{:?}", site.reduced_metric());
    // Staggered: the two restores are not in the same status.
    let restored_together = site.statuses().iter().any(|s| {
        s["loads"]["hp-1"]["state"] == "normal"
            && s["loads"]["wb-1"]["state"] == "normal"
            && s["limit_reason"] == "control_box"
    });
    assert!(!restored_together);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_closed_at_power_on_reduces_from_the_start() {
    let site = start("cb-02", false).await;
    assert!(until(Duration::from_secs(10), || !site.episodes().is_empty()).await, "no start event");
    assert_eq!(site.episodes()[0]["state"], "reduce");
    assert!(until(Duration::from_secs(5), || site.relays() == (Some(true), Some(false))).await, "SG-Ready 1");
    assert!(
        until(Duration::from_secs(10), || site
            .statuses()
            .last()
            .is_some_and(|s| s["limit_reason"] == "control_box" && s["loads"]["wb-1"]["setpoint_kw"] == 4.2))
        .await,
        "{:?}",
        site.statuses().last()
    );
    site.stop().await;
}
