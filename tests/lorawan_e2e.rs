//! The gateway as join server and network server, end to end over real UDP sockets: a simulated
//! packet forwarder (PULL_DATA / PUSH_DATA / TX_ACK) talks to the daemon; device-side code opens the
//! join accepts and downlinks like a real device would. The daemon runs in-process here so that the
//! test can queue downlinks the way the control loops do.

mod common;

use std::time::Duration;

use base64::Engine;
use district_gateway::config;
use district_gateway::io::gwmp::packet::{build_pull_data, build_push_data, RxPkOut};
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::runtime::Daemon;
use district_gateway::sim::frames::{build_join_request, build_uplink, open_downlink, open_join_accept, UplinkSpec};
use district_gateway::sim::SimDevice;
use serde_json::Value;
use tokio::net::UdpSocket;

const GW: Eui64 = Eui64(0xaa55_5a00_0000_0042);
const APP_KEY: [u8; 16] =
    [0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c];
const DEV_EUI: Eui64 = Eui64(0x70b3_d57e_d000_0001);
const JOIN_EUI: Eui64 = Eui64(0x70b3_d57e_d000_0000);

/// A packet forwarder: one socket for up- and downstream, like the Semtech forwarder with one port.
struct Forwarder {
    sock: UdpSocket,
    to: std::net::SocketAddr,
    token: u16,
}

impl Forwarder {
    async fn new(to: std::net::SocketAddr) -> Forwarder {
        let f = Forwarder { sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(), to, token: 0 };
        f.sock.send_to(&build_pull_data(2, [1, 0], GW), to).await.unwrap();
        let mut b = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), f.sock.recv_from(&mut b)).await.unwrap().unwrap();
        assert_eq!((n, b[3]), (4, 4), "PULL_ACK");
        f
    }

    async fn push(&mut self, phy: Vec<u8>, tmst: u32) {
        self.token = self.token.wrapping_add(1);
        let rx = RxPkOut { tmst, freq_hz: 868_300_000, sf: 7, bw_khz: 125, rssi: -80, lsnr: 8.0, data: phy };
        self.sock.send_to(&build_push_data(2, self.token.to_le_bytes(), GW, &[rx]), self.to).await.unwrap();
    }

    /// The next PULL_RESP's txpk (PUSH_ACKs and others are skipped), or None after `limit`.
    async fn txpk(&self, limit: Duration) -> Option<(Value, [u8; 2])> {
        self.txpk_where(limit, |_| true).await
    }

    /// The next PULL_RESP whose PHYPayload satisfies `want` (others, e.g. MAC-only answers such as a
    /// DevStatusReq, are skipped).
    async fn txpk_where(&self, limit: Duration, want: impl Fn(&[u8]) -> bool) -> Option<(Value, [u8; 2])> {
        let end = tokio::time::Instant::now() + limit;
        let mut b = vec![0u8; 4096];
        loop {
            let left = end.checked_duration_since(tokio::time::Instant::now())?;
            let (n, _) = tokio::time::timeout(left, self.sock.recv_from(&mut b)).await.ok()?.ok()?;
            if n > 4 && b[3] == 3 {
                let v: Value = serde_json::from_slice(&b[4..n]).unwrap();
                if want(&data_of(&v["txpk"])) {
                    return Some((v["txpk"].clone(), [b[1], b[2]]));
                }
            }
        }
    }

    async fn tx_ack(&self, token: [u8; 2], error: Option<&str>) {
        let mut d = vec![2, token[0], token[1], 5];
        d.extend_from_slice(&GW.0.to_be_bytes());
        if let Some(e) = error {
            d.extend_from_slice(format!("{{\"txpk_ack\":{{\"error\":\"{e}\"}}}}").as_bytes());
        }
        self.sock.send_to(&d, self.to).await.unwrap();
    }
}

fn data_of(txpk: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(txpk["data"].as_str().unwrap()).unwrap()
}

fn config_text(dir: &std::path::Path, broker_port: u16, extra_devices: &str) -> String {
    format!(
        "[gateway]\nid = \"ns-01\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [lorawan]\nmax_attempts = 2\nmin_lead_ms = 50\n\
         [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n\
         [[device]]\nname = \"sensor-otaa\"\nprofile = \"raw\"\ndev_eui = \"{DEV_EUI}\"\njoin_eui = \"{JOIN_EUI}\"\napp_key = \"{}\"\n{extra_devices}",
        dir.join("data").display(),
        hex::encode(APP_KEY)
    )
}

async fn start(dir: &std::path::Path, broker_port: u16, extra: &str) -> Daemon {
    let cfg = config::parse_str(&config_text(dir, broker_port, extra), "ns.toml", dir).unwrap();
    Daemon::start(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otaa_device_joins_then_its_uplinks_are_readings_and_a_replayed_join_is_refused() {
    let broker = common::Broker::start();
    let sub = tokio::task::spawn_blocking({
        let port = broker.port;
        move || common::Subscriber::start(port, "city/ns-01/#")
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), broker.port, "").await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0]).await;
    let app_key = Key128::new(APP_KEY);

    let join = build_join_request(JOIN_EUI, DEV_EUI, &app_key, 0x1234);
    fwd.push(join.clone(), 10_000_000).await;
    let (txpk, token) = fwd.txpk(Duration::from_secs(5)).await.expect("a join accept");
    // RX1: JoinAcceptDelay1 = 5 s after the request, same frequency and data rate, inverted polarity.
    assert_eq!(txpk["tmst"], 15_000_000u64);
    assert_eq!(txpk["freq"].as_f64().unwrap(), 868.3);
    assert_eq!(txpk["datr"], "SF7BW125");
    assert_eq!(txpk["ipol"], true);
    assert_eq!(txpk["imme"], false);
    fwd.tx_ack(token, None).await;
    let session = open_join_accept(&data_of(&txpk), &app_key, 0x1234).expect("the device can open the accept");

    // Uplinks with the derived keys become readings.
    let mut dev = SimDevice {
        name: "sensor-otaa".into(),
        profile: "raw".into(),
        dev_addr: session.dev_addr,
        nwk_s_key: session.nwk_s_key,
        app_s_key: session.app_s_key,
        f_cnt: 0,
        f_port: 2,
    };
    fwd.push(dev.uplink(b"after join"), 20_000_000).await;
    let got = tokio::task::spawn_blocking(move || {
        common::wait_until(Duration::from_secs(10), || !sub.readings().is_empty());
        sub.readings()
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 1, "one reading");
    assert_eq!(got[0]["device"], "sensor-otaa");
    assert_eq!(got[0]["lorawan"]["payload_hex"], hex::encode("after join"));
    assert_eq!(got[0]["lorawan"]["dev_addr"], session.dev_addr.to_string());

    // The same join request again (a replayed DevNonce): no accept.
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the de-duplication window
    fwd.push(join, 30_000_000).await;
    let is_accept = |phy: &[u8]| phy.first() == Some(&0x20);
    assert!(
        fwd.txpk_where(Duration::from_millis(1500), is_accept).await.is_none(),
        "a replayed join request must not be answered"
    );
    assert!(daemon.counters.joins_refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // The session and the used nonce survive a restart.
    daemon.stop().await;
    let daemon = start(dir.path(), broker.port, "").await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0]).await;
    fwd.push(dev.uplink(b"after restart"), 40_000_000).await;
    fwd.push(build_join_request(JOIN_EUI, DEV_EUI, &app_key, 0x1234), 41_000_000).await;
    assert!(fwd.txpk_where(Duration::from_millis(1500), is_accept).await.is_none(), "nonce remembered across restarts");
    assert!(common::wait_until(Duration::from_secs(5), || {
        daemon.counters.frames_ok.load(std::sync::atomic::Ordering::Relaxed) == 1
    }));
    daemon.stop().await;
}

fn lamp(class_c: bool) -> (SimDevice, String) {
    let d = SimDevice::numbered("lamp", 7, "lamp-generic");
    let mut t = d.config_toml();
    if class_c {
        t.push_str("class = \"C\"\n");
    }
    (d, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_c_goes_out_at_once_on_rx2_and_class_a_waits_for_the_next_uplink() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut c_lamp, c_toml) = lamp(true);
    let mut a_dev = SimDevice::numbered("valve", 3, "raw");
    let daemon = start(dir.path(), broker.port, &format!("{c_toml}{}", a_dev.config_toml())).await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0]).await;

    // Class C: the gateway must have heard the lamp once to know the route.
    fwd.push(c_lamp.uplink(&[10]), 1_000_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.enqueue_downlink(&c_lamp.name, 10, &[80], false).await.unwrap();
    let (nwk, app) = (c_lamp.nwk_s_key, c_lamp.app_s_key);
    let on_port = |port: u8, nwk: Key128, app: Key128| {
        move |phy: &[u8]| open_downlink(phy, &nwk, &app).is_ok_and(|d| d.f_port == Some(port))
    };
    let (txpk, _) = fwd.txpk_where(Duration::from_secs(3), on_port(10, nwk, app)).await.expect("a class C downlink");
    assert_eq!(txpk["imme"], true);
    assert_eq!(txpk["freq"].as_f64().unwrap(), 869.525);
    assert_eq!(txpk["datr"], "SF12BW125");
    let dl = open_downlink(&data_of(&txpk), &c_lamp.nwk_s_key, &c_lamp.app_s_key).unwrap();
    assert_eq!((dl.f_port, dl.payload.clone()), (Some(10), vec![80]));

    // Class A: queued, nothing goes out until the device's next uplink; then RX1 (+1 s).
    daemon.enqueue_downlink(&a_dev.name, 5, &[1, 2, 3], false).await.unwrap();
    let (nwk, app) = (a_dev.nwk_s_key, a_dev.app_s_key);
    assert!(
        fwd.txpk_where(Duration::from_millis(800), on_port(5, nwk, app)).await.is_none(),
        "class A waits for an uplink"
    );
    fwd.push(a_dev.uplink(b"up"), 5_000_000).await;
    let (txpk, _) =
        fwd.txpk_where(Duration::from_secs(3), on_port(5, nwk, app)).await.expect("the class A downlink in RX1");
    assert_eq!(txpk["tmst"], 6_000_000u64);
    assert_eq!(txpk["imme"], false);
    let dl = open_downlink(&data_of(&txpk), &a_dev.nwk_s_key, &a_dev.app_s_key).unwrap();
    assert_eq!((dl.f_port, dl.payload), (Some(5), vec![1, 2, 3]));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_downlink_is_retried_then_reported_failed_and_an_ack_clears_it() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::numbered("valve", 9, "raw");
    let daemon = start(dir.path(), broker.port, &dev.config_toml()).await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0]).await;
    let failed = || daemon.counters.downlinks_failed.load(std::sync::atomic::Ordering::Relaxed);

    daemon.enqueue_downlink(&dev.name, 7, &[0xaa], true).await.unwrap();
    let mut fcnts = Vec::new();
    // max_attempts = 2: two transmissions without an ACK, then failed.
    for i in 0..3u32 {
        fwd.push(dev.uplink(b"no ack"), 1_000_000 * (i + 1) * 10).await;
        if let Some((txpk, _)) = fwd.txpk(Duration::from_millis(1500)).await {
            let dl = open_downlink(&data_of(&txpk), &dev.nwk_s_key, &dev.app_s_key).unwrap();
            if dl.f_port == Some(7) {
                assert!(dl.confirmed);
                fcnts.push(dl.f_cnt_down);
            }
        }
    }
    assert_eq!(fcnts.len(), 2, "sent twice: {fcnts:?}");
    assert!(fcnts[1] > fcnts[0], "each retry uses a new FCntDown");
    assert!(common::wait_until(Duration::from_secs(3), || failed() == 1), "reported failed");

    // A second confirmed downlink, acknowledged by the next uplink: not failed.
    daemon.enqueue_downlink(&dev.name, 7, &[0xbb], true).await.unwrap();
    fwd.push(dev.uplink(b"x"), 50_000_000).await;
    let (nwk, app) = (dev.nwk_s_key, dev.app_s_key);
    let (txpk, _) = fwd
        .txpk_where(Duration::from_secs(2), |p| open_downlink(p, &nwk, &app).is_ok_and(|d| d.f_port == Some(7)))
        .await
        .expect("sent");
    let dl = open_downlink(&data_of(&txpk), &dev.nwk_s_key, &dev.app_s_key).unwrap();
    assert_eq!(dl.payload, vec![0xbb]);
    let ack = build_uplink(&UplinkSpec {
        dev_addr: dev.dev_addr,
        nwk_s_key: &dev.nwk_s_key,
        app_s_key: &dev.app_s_key,
        f_cnt: dev.f_cnt,
        f_port: None,
        payload: &[],
        confirmed: false,
        ack: true,
        adr: false,
        fopts: &[],
    });
    dev.f_cnt += 1;
    fwd.push(ack, 60_000_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failed(), 1, "the acknowledged downlink is not reported failed");
    let _ = DevAddr(0);
    daemon.stop().await;
}
