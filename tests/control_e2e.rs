//! The district's control loops end to end: a presence frame over UDP brightens the lamps ahead
//! (class-C downlinks as `txpk`) and updates the retained zone state, with the broker up and down;
//! SML frames on a pty above the feeder limit make demand response shed loads through (fake) GPIO
//! relays and LoRaWAN downlinks, and `dr/status` shows it.

mod common;

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use district_gateway::config;
use district_gateway::io::gpio::FakeOutput;
use district_gateway::io::gwmp::packet::{build_pull_data, build_push_data, RxPkOut};
use district_gateway::keys::Eui64;
use district_gateway::runtime::{Daemon, Hardware};
use district_gateway::sim::frames::open_downlink;
use district_gateway::sim::SimDevice;
use serde_json::Value;
use tokio::net::UdpSocket;

const GW: Eui64 = Eui64(0xaa55_5a00_0000_0077);

struct Fwd {
    sock: UdpSocket,
    to: std::net::SocketAddr,
    token: u16,
}

impl Fwd {
    async fn new(to: std::net::SocketAddr) -> Fwd {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&build_pull_data(2, [0, 0], GW), to).await.unwrap();
        Fwd { sock, to, token: 0 }
    }
    async fn up(&mut self, phy: Vec<u8>) {
        self.token = self.token.wrapping_add(1);
        let rx = RxPkOut { tmst: 1, freq_hz: 868_100_000, sf: 7, bw_khz: 125, rssi: -70, lsnr: 9.0, data: phy };
        self.sock.send_to(&build_push_data(2, self.token.to_le_bytes(), GW, &[rx]), self.to).await.unwrap();
    }
    /// Every class-C downlink (imme) received within `limit`, as PHYPayloads.
    async fn downlinks(&self, limit: Duration) -> Vec<(Value, Vec<u8>)> {
        let mut out = Vec::new();
        let end = tokio::time::Instant::now() + limit;
        let mut b = vec![0u8; 4096];
        while let Some(left) = end.checked_duration_since(tokio::time::Instant::now()) {
            let Ok(Ok((n, _))) = tokio::time::timeout(left, self.sock.recv_from(&mut b)).await else { break };
            if n > 4 && b[3] == 3 {
                let v: Value = serde_json::from_slice(&b[4..n]).unwrap();
                let data =
                    base64::engine::general_purpose::STANDARD.decode(v["txpk"]["data"].as_str().unwrap()).unwrap();
                out.push((v["txpk"].clone(), data));
            }
        }
        out
    }
}

fn lamp(i: u32) -> SimDevice {
    let mut d = SimDevice::numbered("lamp", i, "lamp-generic");
    d.f_port = 10;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_brightens_the_lamps_ahead_with_the_broker_up_and_down() {
    let mut broker = common::Broker::start();
    let port = broker.port;
    let sub = tokio::task::spawn_blocking(move || common::Subscriber::start(port, "city/light-01/#")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lamps: Vec<SimDevice> = (1..=5).map(lamp).collect();
    let mut pir = SimDevice::numbered("pir", 1, "milesight-ws202");
    let mut text = format!(
        "[gateway]\nid = \"light-01\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n\
         [[lighting.zone]]\nname = \"path\"\ntime_zone = \"Europe/Berlin\"\nlamps = [\"lamp-001\", \"lamp-002\", \"lamp-003\", \"lamp-004\", \"lamp-005\"]\n\
         sensors = [{{ device = \"pir-001\", lamp = \"lamp-002\" }}]\nlamps_ahead = 2\nlamps_behind = 1\nramp_up_s = 0\nramp_down_s = 0\nmin_command_gap_s = 0\nack_timeout_s = 0\n\
         [lighting.zone.schedule]\nastronomical = false\n[[lighting.zone.schedule.period]]\nfrom = \"00:00\"\nto = \"24:00\"\nlevel_pct = 10\n",
        dir.path().join("data").display()
    );
    for l in &lamps {
        text.push_str(&l.config_toml());
        text.push_str("class = \"C\"\n");
    }
    text.push_str(&pir.config_toml());
    let cfg = config::parse_str(&text, "light.toml", dir.path()).unwrap();
    let daemon = Daemon::start(&cfg).await.unwrap();
    let mut fwd = Fwd::new(daemon.gwmp_addrs[0]).await;
    // Every lamp reports once (its level): the gateway learns the route to each controller.
    for l in lamps.iter_mut() {
        let phy = l.uplink(&[10]);
        fwd.up(phy).await;
    }
    let _ = fwd.downlinks(Duration::from_millis(1500)).await; // schedule commands, if any

    let level_of = |phy: &[u8], l: &SimDevice| {
        open_downlink(phy, &l.nwk_s_key, &l.app_s_key).ok().filter(|d| d.f_port == Some(10)).map(|d| d.payload)
    };
    // A person at lamp 2: lamps 1 (behind) to 4 (two ahead) go to boost; lamp 5 stays.
    let phy = pir.uplink(&hex::decode("030001").unwrap());
    fwd.up(phy).await;
    let got = fwd.downlinks(Duration::from_secs(3)).await;
    let boosted: Vec<String> = lamps
        .iter()
        .filter(|l| got.iter().any(|(txpk, phy)| txpk["imme"] == true && level_of(phy, l) == Some(vec![100])))
        .map(|l| l.name.clone())
        .collect();
    assert_eq!(boosted, vec!["lamp-001", "lamp-002", "lamp-003", "lamp-004"], "downlinks: {}", got.len());
    for (txpk, _) in got.iter().filter(|(t, _)| t["imme"] == true) {
        assert_eq!(txpk["freq"].as_f64().unwrap(), 869.525, "class C on RX2 parameters");
    }

    // The retained zone state says presence.
    let state = tokio::task::spawn_blocking(move || {
        common::wait_until(Duration::from_secs(10), || {
            sub.on_topic("/lighting/path").iter().any(|m| m.json["lamps"]["lamp-003"]["reason"] == "presence")
        });
        (sub.on_topic("/lighting/path"), sub)
    })
    .await
    .unwrap();
    let (msgs, sub) = state;
    let last = msgs.iter().rev().find(|m| m.json["lamps"]["lamp-003"]["reason"] == "presence").expect("zone state");
    assert_eq!(last.json["lamps"]["lamp-003"]["level_pct"], 100);
    // Retained: a subscriber that comes later gets the zone state at once, flagged as retained
    // (MQTT clears the flag for subscriptions that already existed when it was published).
    let late = tokio::task::spawn_blocking(move || {
        let late = common::Subscriber::start(port, "city/light-01/lighting/#");
        common::wait_until(Duration::from_secs(5), || !late.on_topic("/lighting/path").is_empty());
        late.on_topic("/lighting/path")
    })
    .await
    .unwrap();
    assert!(late.first().is_some_and(|m| m.retain), "lighting/{{zone}} is retained");

    // With the broker down, local control goes on: another detection, lamps react.
    broker.stop();
    for l in lamps.iter_mut() {
        let phy = l.uplink(&[100]);
        fwd.up(phy).await;
    }
    let _ = fwd.downlinks(Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut pir2 = pir.clone();
    let phy = pir2.uplink(&hex::decode("030001").unwrap());
    fwd.up(phy).await;
    // Nothing to change (still boosted) or a refresh: either way the daemon answers without the broker.
    let _ = fwd.downlinks(Duration::from_secs(2)).await;
    assert!(daemon.counters.frames_ok.load(std::sync::atomic::Ordering::Relaxed) >= 12);
    broker.restart();
    drop(sub);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeder_over_its_limit_sheds_loads_through_relays_and_downlinks() {
    let broker = common::Broker::start();
    let port = broker.port;
    let sub = tokio::task::spawn_blocking(move || common::Subscriber::start(port, "city/dr-01/#")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut master, slave) = common::openpty();
    let mut wb = SimDevice::numbered("wb-ctl", 1, "raw");
    let text = format!(
        "[gateway]\nid = \"dr-01\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n[[source]]\ntype = \"sml\"\nport = \"{}\"\ndevice = \"feeder-meter\"\n\
         [demand_response]\nmeter = \"feeder-meter\"\nlimit_kw = 0.1\nhysteresis_kw = 0.02\ninterval_s = 1\nrestore_delay_min_s = 1\nrestore_delay_max_s = 2\n\
         [[demand_response.load]]\nname = \"hp-1\"\nkind = \"sg-ready\"\nrated_kw = 0.2\npriority = 1\nmin_off_s = 0\nmin_on_s = 0\noutput = {{ type = \"gpio\", pins = [17, 27] }}\n\
         [[demand_response.load]]\nname = \"wb-1\"\nkind = \"setpoint\"\nrated_kw = 11.0\npriority = 2\noutput = {{ type = \"lorawan\", device = \"{}\", f_port = 20 }}\n{}class = \"C\"\n",
        dir.path().join("data").display(),
        slave.display(),
        wb.name,
        wb.config_toml()
    );
    let cfg = config::parse_str(&text, "dr.toml", dir.path()).unwrap();
    let (r17, r27) = (FakeOutput::new(17), FakeOutput::new(27));
    let mut hw = Hardware::default();
    hw.relays.insert(17, r17.clone());
    hw.relays.insert(27, r27.clone());
    let daemon = Daemon::start_with(&cfg, hw).await.unwrap();
    let mut fwd = Fwd::new(daemon.gwmp_addrs[0]).await;
    let phy = wb.uplink(b"hello");
    fwd.up(phy).await; // the route to the wallbox controller
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The Holley meter dump says 460 W: over the 0.1 kW limit.
    let dump = std::fs::read(common::vectors_dir().join("sml/libsml-testing/HOLLEY_DTZ541-ZDBA.bin")).unwrap();
    for _ in 0..3 {
        master.write_all(&dump).unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let got = fwd.downlinks(Duration::from_secs(4)).await;
    let wallbox: Vec<Vec<u8>> = got
        .iter()
        .filter_map(|(_, phy)| open_downlink(phy, &wb.nwk_s_key, &wb.app_s_key).ok())
        .filter(|d| d.f_port == Some(20))
        .map(|d| d.payload)
        .collect();
    // The wallbox's set-point is reduced (as far as needed), never below the §14a floor of 4.2 kW.
    let setpoints: Vec<u16> =
        wallbox.iter().filter(|p| p.len() == 3 && p[0] == 0x02).map(|p| u16::from_be_bytes([p[1], p[2]])).collect();
    assert!(setpoints.iter().any(|&kw10| kw10 < 110), "reduced below 11 kW: {wallbox:?}");
    assert!(setpoints.iter().all(|&kw10| kw10 >= 42), "never below 4.2 kW: {wallbox:?}");
    // The heat pump's SG-Ready relays were switched (to "blocked").
    assert!(!r17.levels().is_empty() && !r27.levels().is_empty(), "relays written");
    let status = tokio::task::spawn_blocking(move || {
        common::wait_until(Duration::from_secs(10), || {
            sub.on_topic("/dr/status").iter().any(|m| m.json["loads"]["hp-1"]["state"] == "blocked")
        });
        sub.on_topic("/dr/status")
    })
    .await
    .unwrap();
    let last = status
        .iter()
        .rev()
        .find(|m| m.json["loads"]["hp-1"]["state"] == "blocked")
        .expect("dr/status with hp-1 blocked");
    assert_eq!(last.json["limit_kw"].as_f64().unwrap(), 0.1);
    assert!((last.json["measured_kw"].as_f64().unwrap() - 0.46).abs() < 0.01, "{}", last.json);
    let late = tokio::task::spawn_blocking(move || {
        let late = common::Subscriber::start(port, "city/dr-01/dr/#");
        common::wait_until(Duration::from_secs(5), || !late.on_topic("/dr/status").is_empty());
        late.on_topic("/dr/status")
    })
    .await
    .unwrap();
    assert!(late.first().is_some_and(|m| m.retain), "dr/status is retained");
    daemon.stop().await;
}
