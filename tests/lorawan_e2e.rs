//! The gateway as join server and network server, end to end over real UDP sockets: a simulated
//! packet forwarder (PULL_DATA / PUSH_DATA / TX_ACK) talks to the daemon; device-side code opens the
//! join accepts and downlinks like a real device would. The daemon runs in-process here so that the
//! test can queue downlinks the way the control loops do.

mod common;

use std::time::Duration;

use base64::Engine;
use district_gateway::config;
use district_gateway::io::gwmp::packet::{build_push_data, RxPkOut};
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::runtime::Daemon;
use district_gateway::sim::frames::{build_join_request, build_uplink, open_downlink, open_join_accept, UplinkSpec};
use district_gateway::sim::SimDevice;
use serde_json::Value;

const GW: Eui64 = Eui64(0xaa55_5a00_0000_0042);
const APP_KEY: [u8; 16] =
    [0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c];
const DEV_EUI: Eui64 = Eui64(0x70b3_d57e_d000_0001);
const JOIN_EUI: Eui64 = Eui64(0x70b3_d57e_d000_0000);

use common::pull_forwarder::Forwarder;

impl Forwarder {
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

/// Extra config sections for the lifecycle test: the test command key and a second packet forwarder
/// source (with two sources that can transmit, a class C device is reachable only through the route
/// remembered for it).
fn lifecycle_sections() -> String {
    format!(
        "[[ops.key]]\nid = \"ops-1\"\ned25519_public = \"{}\"\n[[source]]\ntype = \"gwmp\"\nname = \"fwd-b\"\nbind = \"127.0.0.1:{}\"\n",
        common::signed::public_key_b64(),
        common::free_udp_port()
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
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;
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
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;
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
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;

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
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;
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

/// Issue 15's three black-box cases end to end: UDP in, MQTT out, signed commands on `cmd/req`, the
/// daemon stopped and started again on the same data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_rejoin_restart_and_class_c_routes_survive_the_life_of_an_installation() {
    use common::signed::{assert_ok, assert_refused, Ops};
    use serde_json::json;
    let broker = common::Broker::start();
    let port = broker.port;
    let sub = tokio::task::spawn_blocking(move || common::Subscriber::start(port, "city/ns-01/#")).await.unwrap();
    let ops = Ops::new(port, "ns-01", &sub);
    let logs = || String::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut lamp, lamp_toml) = lamp(true);
    let (never, mut never_toml) = (SimDevice::numbered("lamp", 8, "lamp-generic"), String::new());
    never_toml.push_str(&never.config_toml());
    never_toml.push_str("class = \"C\"\n");
    let extra = format!("{}{lamp_toml}{never_toml}", lifecycle_sections());
    let daemon = start(dir.path(), port, &extra).await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;
    tokio::task::block_in_place(|| ops.wait_ready(&logs));
    let (nwk, app) = (lamp.nwk_s_key, lamp.app_s_key);
    let is_ack = move |phy: &[u8]| open_downlink(phy, &nwk, &app).is_ok_and(|d| d.ack);
    let confirmed = |lamp: &mut SimDevice| {
        let phy = build_uplink(&UplinkSpec {
            dev_addr: lamp.dev_addr,
            nwk_s_key: &lamp.nwk_s_key,
            app_s_key: &lamp.app_s_key,
            f_cnt: lamp.f_cnt,
            f_port: Some(10),
            payload: &[1],
            confirmed: true,
            ack: false,
            adr: false,
            fopts: &[],
        });
        lamp.f_cnt += 1;
        phy
    };

    // 1. Confirmed uplinks answered with ACKs on FCntDown 0, 1, 2; then device.upsert with the same keys.
    let mut sent = Vec::new();
    for i in 0..3u32 {
        let phy = confirmed(&mut lamp);
        sent.push(phy.clone());
        fwd.push(phy, 10_000_000 * (i + 1)).await;
        let (txpk, _) = fwd.txpk_where(Duration::from_secs(3), is_ack).await.expect("an ACK");
        assert_eq!(open_downlink(&data_of(&txpk), &nwk, &app).unwrap().f_cnt_down, i);
    }
    let upsert = json!({"name": lamp.name, "profile": "raw", "class": "C", "dev_addr": lamp.dev_addr.to_string(),
        "nwk_s_key": hex::encode(nwk.expose()), "app_s_key": hex::encode(app.expose())});
    let up = tokio::task::block_in_place(|| assert_ok(&ops.call("device.upsert", upsert, &logs), "device.upsert"));
    assert_eq!((up["persisted"].as_bool(), up["downlinks_dropped"].as_u64()), (Some(true), Some(0)), "{up}");
    // The uplink sent before the upsert, sent again (after the de-duplication window): refused.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    fwd.push(sent[1].clone(), 45_000_000).await;
    assert!(fwd.txpk_where(Duration::from_millis(1500), is_ack).await.is_none(), "a replay is never answered");
    fwd.push(confirmed(&mut lamp), 50_000_000).await;
    let (txpk, _) = fwd.txpk_where(Duration::from_secs(3), is_ack).await.expect("an ACK after the upsert");
    assert_eq!(
        open_downlink(&data_of(&txpk), &nwk, &app).unwrap().f_cnt_down,
        3,
        "FCntDown continues: no keystream reuse"
    );
    assert!(common::wait_until(Duration::from_secs(10), || common::by_frame(&sub.readings())
        .contains_key(&(lamp.name.clone(), 3))));
    assert_eq!(
        common::by_frame(&sub.readings()).get(&(lamp.name.clone(), 1)).map(Vec::len),
        Some(1),
        "the replay became a reading"
    );
    // A js: codec that does not load is refused before anything changes.
    let bad = json!({"name": "bad-codec", "profile": "js:/nonexistent/codec.js", "dev_addr": "26011234",
        "nwk_s_key": "00112233445566778899aabbccddeeff", "app_s_key": "00112233445566778899aabbccddeeff"});
    tokio::task::block_in_place(|| assert_refused(&ops.call("device.upsert", bad, &logs), "invalid_args"));

    // 2. An OTAA device joins, sends, joins again; the gateway restarts before the first uplink of the
    //    new session, which must be accepted (FCnt 0).
    let app_key = Key128::new(APP_KEY);
    let join = |nonce: u16| build_join_request(JOIN_EUI, DEV_EUI, &app_key, nonce);
    let is_accept = |p: &[u8]| p.first().is_some_and(|m| m >> 5 == 1);
    fwd.push(join(0x0101), 60_000_000).await;
    let (txpk, _) = fwd.txpk_where(Duration::from_secs(3), is_accept).await.expect("join accept");
    let s1 = open_join_accept(&data_of(&txpk), &app_key, 0x0101).unwrap();
    for f_cnt in 0..2 {
        let up = build_uplink(&UplinkSpec {
            dev_addr: s1.dev_addr,
            nwk_s_key: &s1.nwk_s_key,
            app_s_key: &s1.app_s_key,
            f_cnt,
            f_port: Some(2),
            payload: &[f_cnt as u8],
            confirmed: false,
            ack: false,
            adr: false,
            fopts: &[],
        });
        fwd.push(up, 70_000_000 + f_cnt * 1_000_000).await;
    }
    fwd.push(join(0x0102), 80_000_000).await;
    let (txpk, _) = fwd.txpk_where(Duration::from_secs(3), is_accept).await.expect("second join accept");
    let s2 = open_join_accept(&data_of(&txpk), &app_key, 0x0102).unwrap();
    assert_ne!(s1.nwk_s_key, s2.nwk_s_key);
    daemon.stop().await;

    let daemon = start(dir.path(), port, &extra).await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;
    tokio::task::block_in_place(|| ops.wait_ready(&logs));
    let up = build_uplink(&UplinkSpec {
        dev_addr: s2.dev_addr,
        nwk_s_key: &s2.nwk_s_key,
        app_s_key: &s2.app_s_key,
        f_cnt: 0,
        f_port: Some(2),
        payload: b"new",
        confirmed: false,
        ack: false,
        adr: false,
        fopts: &[],
    });
    fwd.push(up, 90_000_000).await;
    let new_session = s2.dev_addr.to_string();
    assert!(
        common::wait_until(Duration::from_secs(10), || sub.readings().iter().any(|r| r["device"] == "sensor-otaa"
            && r["lorawan"]["f_cnt"] == 0
            && r["lorawan"]["dev_addr"].as_str() == Some(new_session.as_str()))),
        "FCnt 0 of the new session was refused after the restart"
    );

    // 3. The lamp, heard before the restart through the first forwarder, gets its command at once,
    //    without sending anything first; the lamp never heard is listed as waiting for a route.
    daemon.enqueue_downlink(&lamp.name, 10, &[40], false).await.unwrap();
    let on_10 = move |p: &[u8]| open_downlink(p, &nwk, &app).is_ok_and(|d| d.f_port == Some(10));
    let (txpk, _) = fwd.txpk_where(Duration::from_secs(3), on_10).await.expect("class C after a restart");
    assert_eq!(open_downlink(&data_of(&txpk), &nwk, &app).unwrap().payload, vec![40]);
    let st = tokio::task::block_in_place(|| assert_ok(&ops.call("status", json!({}), &logs), "status"));
    let waiting = st["control"]["lorawan"]["waiting_for_route"].as_array().cloned().unwrap_or_default();
    assert_eq!(waiting.len(), 1, "{st}");
    assert_eq!(waiting[0]["device"], never.name.as_str());
    assert!(waiting[0]["reason"].as_str().unwrap().contains("never heard"), "{st}");
    daemon.stop().await;

    // A remote device that cannot be loaded any more is quarantined at start, never a crash loop.
    {
        let store = district_gateway::store::Store::open(
            &dir.path().join("data").join("store"),
            1 << 20,
            district_gateway::clock::now(),
        )
        .unwrap();
        store.set_remote_device("broken", Some(br#"{"name": "broken", "profile": "js:/gone.js", "dev_addr": "26019999", "nwk_s_key": "00112233445566778899aabbccddeeff", "app_s_key": "00112233445566778899aabbccddeeff"}"#), district_gateway::clock::now()).unwrap();
        store.flush_blocking().unwrap();
    }
    let daemon = start(dir.path(), port, &extra).await;
    tokio::task::block_in_place(|| ops.wait_ready(&logs));
    let st = tokio::task::block_in_place(|| assert_ok(&ops.call("status", json!({}), &logs), "status"));
    let q = st["control"]["lorawan"]["quarantined"].as_array().cloned().unwrap_or_default();
    assert_eq!(q.len(), 1, "{st}");
    assert_eq!(q[0]["device"], "broken");
    let events = sub.on_topic("/event/broken");
    assert!(
        common::wait_until(Duration::from_secs(10), || sub
            .on_topic("/event/broken")
            .iter()
            .any(|m| m.json["event"] == "device_quarantined")),
        "no device_quarantined event: {}",
        events.len()
    );
    daemon.stop().await;
}
