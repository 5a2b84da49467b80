//! The network server against an independent device stack: `lorawan-device` 0.12 (lora-rs) on a
//! virtual radio, bridged by our own packet forwarder to the daemon over loopback UDP (see
//! `tests/peer/`). The daemon runs in-process (its downlink API and counters are the test's view
//! into it); readings are checked on the embedded MQTT broker. Every test ends by asserting that the
//! peer found nothing to disagree with: no downlink outside the windows and parameters the device
//! listens on.
//!
//! Time on air is virtual (the concentrator clock moves when the device waits), so a join and its
//! 5 s window cost no real time; real time is only spent waiting for the daemon, each wait bounded.

mod common;
mod peer;

use std::time::Duration;

use district_gateway::config;
use district_gateway::runtime::Daemon;
use lorawan_device::async_device::{SendResponse, DR};
use peer::frames::Mac;
use peer::{Link, Peer};
use serde_json::Value;

const DEV_EUI: &str = "70b3d57ed0000a01";
const JOIN_EUI: &str = "70b3d57ed0000a00";
const APP_KEY: &str = "8f6a3c0e5b2d4f7192a4c6e8f0b1d3e5";
const DEVICE: &str = "lamp-peer";
/// A good link: the tests that do not look at ADR do not depend on it.
const GOOD: Link = Link { rssi: -70, snr: 9.0 };

/// The daemon with the peer's device (a `lamp-generic` profile: one byte on FPort 10 is its level)
/// and `extra` config lines after `[lorawan]` and the device.
async fn start(dir: &std::path::Path, broker_port: u16, lorawan: &str, device: &str) -> Daemon {
    let text = format!(
        "[gateway]\nid = \"peer-01\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [buffer]\n{}\n[lorawan]\n{lorawan}\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n\
         [[device]]\nname = \"{DEVICE}\"\nprofile = \"lamp-generic\"\ndev_eui = \"{DEV_EUI}\"\njoin_eui = \"{JOIN_EUI}\"\napp_key = \"{APP_KEY}\"\n{device}",
        dir.join("data").display(),
        common::TEST_BUFFER,
    );
    let cfg = config::parse_str(&text, "peer.toml", dir).expect("the test config is valid");
    Daemon::start(&cfg).await.expect("the daemon starts")
}

async fn subscriber(port: u16) -> common::Subscriber {
    tokio::task::spawn_blocking(move || common::Subscriber::start(port, "city/peer-01/#")).await.expect("subscriber")
}

/// The readings of the peer's device, waiting (bounded) until there are `n`.
async fn readings(sub: &common::Subscriber, n: usize) -> Vec<Value> {
    let mine = || sub.readings().into_iter().filter(|r| r["device"] == DEVICE).collect::<Vec<_>>();
    tokio::task::block_in_place(|| common::wait_until(Duration::from_secs(10), || mine().len() >= n));
    mine()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_joins_by_otaa_and_its_unconfirmed_and_confirmed_uplinks_become_readings() {
    let broker = common::Broker::start();
    let sub = subscriber(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), broker.port, "", "").await;
    let mut peer = Peer::start(daemon.gwmp_addrs[0], GOOD, 1).await;

    // The join at the device's default data rate (DR0): the accept must come in RX1, 5 s after the
    // request, on the request's channel and data rate (LoRaWAN 1.0.3 §6.2.5, RP002 §2.1.7).
    peer.join(DEV_EUI, JOIN_EUI, APP_KEY).await;
    assert!(peer.device.get_session().is_some(), "the device has a session");
    let accept = peer.air.heard().pop().expect("the join accept was heard");
    let request = peer.air.uplinks().pop().expect("the join request went out");
    assert_eq!(accept.tmst, Some(request.tmst.wrapping_add(5_000_000)), "JoinAcceptDelay1");
    assert_eq!((accept.freq_hz, accept.sf), (request.freq_hz, request.sf), "RX1 = the request's channel and DR");

    // Unconfirmed, then confirmed (answered by an ACK in RX1), at DR5. The first uplink of a session
    // is answered with a DevStatusReq (`dev_status_interval_s`), in FOpts without FPort.
    peer.device.set_datarate(DR::_5);
    let r = peer.send(&[42], 10, false).await;
    assert!(matches!(r, SendResponse::DownlinkReceived(0)), "{r:?}");
    match peer.send(&[43], 10, true).await {
        SendResponse::DownlinkReceived(1) => {}
        other => panic!("a confirmed uplink is answered: {other:?}; findings {:?}", peer.air.findings()),
    }
    let down = peer.downlinks();
    assert_eq!(down.len(), 2, "{down:?}");
    assert_eq!(
        (down[0].f_port, &down[0].macs[..]),
        (None, &[Mac::Other("DevStatusReq(DevStatusReqPayload)".into())][..])
    );
    assert!(down[1].ack && down[1].f_port.is_none() && down[1].macs.is_empty(), "an empty ACK: {down:?}");
    // The peer ignores DevStatusReq (lorawan-device 0.12 answers only LinkADRReq and RXTimingSetupReq;
    // LoRaWAN 1.0.3 §5.5 says a device answers with DevStatusAns): a peer limitation. Its uplinks
    // carry no MAC answer, and the daemon asks once, not on every uplink.
    assert!(peer.uplinks().iter().all(|u| u.macs.is_empty()));
    assert!(matches!(peer.send(&[44], 10, false).await, SendResponse::RxComplete), "asked once");

    let got = readings(&sub, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    for (r, (f_cnt, level)) in got.iter().zip([(0, 42), (1, 43), (2, 44)]) {
        assert_eq!(r["lorawan"]["f_cnt"], f_cnt, "{r}");
        assert_eq!(r["metrics"]["lamp_level_pct"], level, "decoded by the lamp-generic profile: {r}");
    }
    assert_eq!(daemon.counters.joins.load(std::sync::atomic::Ordering::Relaxed), 1);
    peer.assert_no_findings();
    daemon.stop().await;
}

/// Joins the peer, moves it to DR5 (short frames: the tests below are not about the data rate).
async fn joined_peer(daemon: &Daemon, seed: u64) -> Peer {
    let mut peer = Peer::start(daemon.gwmp_addrs[0], GOOD, seed).await;
    peer.join(DEV_EUI, JOIN_EUI, APP_KEY).await;
    peer.device.set_datarate(DR::_5);
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_downlink_reaches_the_peer_which_acks_it_in_its_next_uplink_and_the_daemon_records_the_ack() {
    peer::log::capture();
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), broker.port, "dev_status_interval_s = 0\nmax_attempts = 2", "").await;
    let mut peer = joined_peer(&daemon, 2).await;

    let id = daemon.enqueue_downlink(DEVICE, 10, &[75], true).await.expect("queued");
    let r = peer.send(&[10], 10, false).await;
    assert!(matches!(r, SendResponse::DownlinkReceived(_)), "{r:?}; findings {:?}", peer.air.findings());
    let dl = peer.device.take_downlink().expect("the application payload");
    assert_eq!((dl.fport, &dl.data[..]), (10, &[75u8][..]));
    let opened = peer.downlinks();
    assert!(opened.last().is_some_and(|d| d.confirmed), "sent as confirmed data down: {opened:?}");

    // The next uplink carries the ACK bit (LoRaWAN 1.0.3 §4.3.1.2); the daemon records it.
    assert!(matches!(peer.send(&[11], 10, false).await, SendResponse::RxComplete), "nothing more to send");
    assert!(peer.uplinks().last().is_some_and(|u| u.ack), "the peer acknowledges");
    let acked = |n: usize| {
        common::wait_until(Duration::from_secs(5), || {
            peer::log::lines_with(&["confirmed downlink acknowledged", DEVICE, &format!("id={id}")]).len() >= n
        })
    };
    assert!(tokio::task::block_in_place(|| acked(1)), "the daemon logs the ACK");
    // Acknowledged: never sent again (max_attempts = 2 would send it once more otherwise), not failed.
    for b in 12..14 {
        assert!(matches!(peer.send(&[b], 10, false).await, SendResponse::RxComplete));
    }
    assert_eq!(peer.downlinks().len(), 1);
    assert_eq!(daemon.counters.downlinks_failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    peer.assert_no_findings();
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_c_peer_receives_a_downlink_sent_at_once_on_rx2() {
    use lorawan_device::mac::Response;
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), broker.port, "dev_status_interval_s = 0", "class = \"C\"\n").await;
    let mut peer = Peer::start(daemon.gwmp_addrs[0], GOOD, 3).await;
    peer.device.enable_class_c();
    peer.join(DEV_EUI, JOIN_EUI, APP_KEY).await;
    peer.device.set_datarate(DR::_5);
    // lorawan-device: "class C downlinks are not possible until a confirmed uplink is sent" (the
    // daemon needs any uplink: it routes class C downlinks through the gateway that heard it last).
    assert!(matches!(peer.send(&[20], 10, true).await, SendResponse::DownlinkReceived(_)));

    daemon.enqueue_downlink(DEVICE, 10, &[30], false).await.expect("queued");
    let r = tokio::time::timeout(Duration::from_secs(15), peer.device.rxc_listen()).await.expect("bounded");
    assert!(matches!(r, Ok(Response::DownlinkReceived(_))), "{r:?}; findings {:?}", peer.air.findings());
    let dl = peer.device.take_downlink().expect("the application payload");
    assert_eq!((dl.fport, &dl.data[..]), (10, &[30u8][..]));
    let heard = peer.air.heard().pop().expect("heard");
    assert!(heard.imme, "class C goes out at once");
    assert_eq!((heard.freq_hz, heard.sf, heard.bw_hz), (869_525_000, 12, 125_000), "RX2 (EU868 default, DR0)");
    peer.assert_no_findings();
    daemon.stop().await;
}
