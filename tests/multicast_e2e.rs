//! Multicast for lamps end to end: a lighting zone whose lamps share a `[[lorawan.multicast]]` group.
//! The zone's schedule step at start and a `lighting.override` of the zone each make the daemon send
//! ONE `txpk` (PULL_RESP over real UDP) to the group address, which the test opens with the group's
//! keys as a lamp would; the retained `lighting/{zone}` state on MQTT shows every lamp at the level;
//! `status` and the counters show the group (never its keys); after a restart on the same data dir the
//! group's frame counter continues upward.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use district_gateway::config;
use district_gateway::io::gwmp::packet::build_pull_data;
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::runtime::Daemon;
use district_gateway::sim::frames::open_downlink_after;
use district_gateway::sim::SimDevice;
use serde_json::{json, Value};

const GATEWAY: &str = "mc-01";
const GROUP_ADDR: DevAddr = DevAddr(0x0200_00a1);
const MC_NWK: &str = "3c4fcf098815f7aba6d2ae2816157e2b";
const MC_APP: &str = "0f0e0d0c0b0a09080706050403020100";
const LAMPS: u32 = 4;

fn config_text(dir: &std::path::Path, broker_port: u16) -> String {
    let lamps: Vec<SimDevice> = (1..=LAMPS).map(|i| SimDevice::numbered("lamp", i, "lamp-generic")).collect();
    let names: Vec<String> = lamps.iter().map(|l| format!("{:?}", l.name)).collect();
    let mut text = format!(
        "[gateway]\nid = \"{GATEWAY}\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n\
         [[ops.key]]\nid = \"ops-1\"\ned25519_public = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [buffer]\n{}\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n\
         [lorawan]\n[[lorawan.multicast]]\nname = \"path-lamps\"\ndev_addr = \"{GROUP_ADDR}\"\nnwk_s_key = \"{MC_NWK}\"\n\
         app_s_key = \"{MC_APP}\"\ndata_rate = 3\nzone = \"path\"\n\
         [[lighting.zone]]\nname = \"path\"\ntime_zone = \"Europe/Berlin\"\nlamps = [{}]\n\
         ramp_up_s = 0\nramp_down_s = 0\nmin_command_gap_s = 0\nack_timeout_s = 0\n\
         [lighting.zone.schedule]\nastronomical = false\n[[lighting.zone.schedule.period]]\nfrom = \"00:00\"\nto = \"24:00\"\nlevel_pct = 10\n",
        dir.join("data").display(),
        common::signed::public_key_b64(),
        common::TEST_BUFFER,
        names.join(", "),
    );
    for l in &lamps {
        text.push_str(&l.config_toml());
        text.push_str("class = \"C\"\n");
    }
    text
}

/// A packet forwarder that pulls (PULL_DATA) and collects what the daemon sends it.
struct Puller {
    fwd: common::Forwarder,
}

impl Puller {
    fn new(to: std::net::SocketAddr) -> Puller {
        let fwd = common::Forwarder::new();
        fwd.socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        fwd.send_raw(to, &build_pull_data(2, [7, 0], Eui64(0xaa55_5a00_0000_00a1)));
        Puller { fwd }
    }

    /// Every `txpk` received within `limit`, with its PHYPayload (a bounded wait: it ends by itself).
    fn txpks(&self, limit: Duration) -> Vec<(Value, Vec<u8>)> {
        let end = Instant::now() + limit;
        let mut out = Vec::new();
        let mut b = vec![0u8; 4096];
        while Instant::now() < end {
            let Ok((n, _)) = self.fwd.socket.recv_from(&mut b) else { continue };
            if n > 4 && b[3] == 3 {
                let v: Value = serde_json::from_slice(&b[4..n]).unwrap();
                let data = v["txpk"]["data"].as_str().unwrap_or_default();
                out.push((v["txpk"].clone(), base64::engine::general_purpose::STANDARD.decode(data).unwrap()));
            }
        }
        out
    }
}

fn keys() -> (Key128, Key128) {
    (Key128::from_hex(MC_NWK).unwrap(), Key128::from_hex(MC_APP).unwrap())
}

/// The one frame sent, opened with the group's keys: (32-bit FCnt, level). `last`: the counter a lamp
/// last accepted (for the 16-bit counter on air).
fn the_one_frame(got: &[(Value, Vec<u8>)], last: Option<u32>) -> (u32, u8) {
    assert_eq!(got.len(), 1, "exactly one txpk for the whole zone: {got:?}");
    let (txpk, phy) = &got[0];
    assert_eq!((txpk["imme"].as_bool(), txpk["datr"].as_str()), (Some(true), Some("SF9BW125")), "{txpk}");
    assert_eq!(txpk["freq"].as_f64(), Some(869.525));
    let (nwk, app) = keys();
    let d = open_downlink_after(phy, &nwk, &app, last).expect("the frame opens with the group's keys");
    assert_eq!((d.dev_addr, d.f_port, d.confirmed, d.ack, d.fopts.len()), (GROUP_ADDR, Some(10), false, false, 0));
    assert_eq!(d.payload.len(), 1, "lamp-generic's level command");
    (d.f_cnt_down, d.payload[0])
}

async fn start(text: &str, dir: &std::path::Path) -> Daemon {
    let cfg = config::parse_str(text, "mc.toml", dir).unwrap();
    Daemon::start(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_step_is_one_multicast_frame_the_lamps_follow_and_its_counter_survives_a_restart() {
    let broker = common::Broker::start();
    let port = broker.port;
    let sub = tokio::task::spawn_blocking(move || common::Subscriber::start(port, &format!("city/{GATEWAY}/#")))
        .await
        .unwrap();
    let ops = common::signed::Ops::new(port, GATEWAY, &sub);
    let logs = || String::new();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), port);

    // Start: the schedule's first step (off → 10 %) for the whole zone, as one frame. (A frame built
    // before the forwarder pulled is reported back and built again under the next counter.)
    let daemon = start(&text, dir.path()).await;
    let puller = Puller::new(daemon.gwmp_addrs[0]);
    let got = tokio::task::block_in_place(|| puller.txpks(Duration::from_secs(3)));
    let (first, level) = the_one_frame(&got, None);
    assert_eq!(level, 10);

    // An override of the zone: again one frame, the next counter, the override's level.
    tokio::task::block_in_place(|| ops.wait_ready(&logs));
    let answer = tokio::task::block_in_place(|| {
        ops.call("lighting.override", json!({"zone": "path", "level_pct": 70, "duration_s": 600}), &logs)
    });
    assert_eq!(answer["ok"], true, "{answer}");
    let got = tokio::task::block_in_place(|| puller.txpks(Duration::from_secs(2)));
    let (second, level) = the_one_frame(&got, Some(first));
    assert_eq!(level, 70);
    assert!(second > first);

    // The lamps follow: the retained zone state shows every lamp at 70 %.
    let shows_70 = |m: &common::Msg| (1..=LAMPS).all(|i| m.json["lamps"][format!("lamp-{i:03}")]["level_pct"] == 70);
    let seen = tokio::task::block_in_place(|| {
        common::wait_until(Duration::from_secs(10), || sub.on_topic("/lighting/path").iter().any(shows_70))
    });
    assert!(seen, "lighting/path: {:?}", sub.on_topic("/lighting/path").last().map(|m| &m.json));

    // Visible: status lists the group with its counter, never its keys; the counters count the frames.
    let status = tokio::task::block_in_place(|| ops.call("status", json!({}), &logs));
    let text_of_status = status.to_string();
    assert!(text_of_status.contains("path-lamps") && text_of_status.contains(&GROUP_ADDR.to_string()), "{status}");
    assert!(!text_of_status.contains(MC_NWK) && !text_of_status.contains(MC_APP), "keys in status: {status}");
    let frames = daemon.counters.multicast_frames.load(std::sync::atomic::Ordering::Relaxed);
    assert!(frames >= 2, "multicast_frames = {frames}");
    let port = daemon.http_addr.port();
    let (code, metrics) = tokio::task::block_in_place(|| common::http::http_get(port, "/metrics")).expect("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains(&format!("district_gateway_multicast_frames_total {frames}")), "{metrics}");
    assert!(metrics.contains("district_gateway_multicast_airtime_microseconds_total "), "{metrics}");
    // The status page lists the group with its members, never its keys.
    let (code, page) = tokio::task::block_in_place(|| common::http::http_get(port, "/")).expect("status page");
    assert_eq!(code, 200);
    let table = page.split("<table id=\"multicast\">").nth(1).expect("a multicast table on the status page");
    assert!(table.contains("path-lamps") && table.contains(&GROUP_ADDR.to_string()), "{table}");
    assert!(!page.contains(MC_NWK) && !page.contains(MC_APP), "keys on the status page");
    daemon.stop().await;

    // A restart on the same data dir: the start's step goes out again, under a higher counter.
    let daemon = start(&text, dir.path()).await;
    let puller = Puller::new(daemon.gwmp_addrs[0]);
    let got = tokio::task::block_in_place(|| puller.txpks(Duration::from_secs(3)));
    let (third, _) = the_one_frame(&got, Some(second));
    assert!(third > second, "the group's counter went back: {third} after {second}");
    daemon.stop().await;
    drop(sub);
}
