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
