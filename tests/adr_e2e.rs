//! ADR end to end over real UDP: a packet forwarder (PULL_DATA / PUSH_DATA / TX_ACK) carries a
//! device's uplinks to the daemon; the test opens the downlinks with the device's session keys and
//! parses their MAC commands with the `lorawan` crate, as an independent reader. The device sends
//! confirmed uplinks, so every uplink has exactly one downlink (its ACK) and the test never has to
//! wait for a downlink that may not come.
//!
//! - A device heard at SF12 with an SNR of +10 dB gets a LinkADRReq to DR5; it accepts and moves
//!   (its SNR falls 2 dB per TX power step it takes); ADR converges and never asks the same twice.
//! - A device whose signal fades is slowed down (data rate lowered, power raised).
//! - `/metrics` shows the device's data rate and the engine's counts.

mod common;

use std::time::Duration;

use base64::Engine;
use district_gateway::config;
use district_gateway::io::gwmp::packet::{build_push_data, RxPkOut};
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::runtime::Daemon;
use district_gateway::sim::frames::{build_uplink, open_downlink, UplinkSpec};
use lorawan::maccommands::{parse_downlink_mac_commands, DownlinkMacCommand};
use serde_json::Value;

const GW: Eui64 = Eui64(0xaa55_5a00_0000_0043);
const ADDR: DevAddr = DevAddr(0x2601_4d01);
const NWK: [u8; 16] = [0x41; 16];
const APP: [u8; 16] = [0x42; 16];

/// The settings a LinkADRReq asks for, as the `lorawan` crate reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdrReq {
    dr: u8,
    tx_power: u8,
    ch_mask: u16,
    nb_trans: u8,
}

use common::pull_forwarder::Forwarder;

impl Forwarder {
    /// One confirmed uplink; returns its downlink (the ACK, with whatever MAC commands ride along).
    async fn confirmed(&mut self, f_cnt: u32, sf: u8, lsnr: f64, fopts: &[u8]) -> (Value, Vec<u8>) {
        let (nwk, app) = (Key128::new(NWK), Key128::new(APP));
        let phy = build_uplink(&UplinkSpec {
            dev_addr: ADDR,
            nwk_s_key: &nwk,
            app_s_key: &app,
            f_cnt,
            f_port: Some(1),
            payload: &[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c],
            confirmed: true,
            ack: false,
            adr: true,
            fopts,
        });
        self.token = self.token.wrapping_add(1);
        let tmst = 10_000_000u32.wrapping_add(f_cnt.wrapping_mul(30_000_000));
        let rx = RxPkOut { tmst, freq_hz: 868_100_000, sf, bw_khz: 125, rssi: -110, lsnr, data: phy };
        self.sock.send_to(&build_push_data(2, self.token.to_le_bytes(), GW, &[rx]), self.to).await.unwrap();
        let mut b = vec![0u8; 4096];
        loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), self.sock.recv_from(&mut b))
                .await
                .expect("every confirmed uplink gets its ACK downlink")
                .unwrap();
            if n > 4 && b[3] == 3 {
                let v: Value = serde_json::from_slice(&b[4..n]).unwrap();
                let txpk = v["txpk"].clone();
                let mut ack = vec![2, b[1], b[2], 5];
                ack.extend_from_slice(&GW.0.to_be_bytes());
                self.sock.send_to(&ack, self.to).await.unwrap();
                let data = base64::engine::general_purpose::STANDARD.decode(txpk["data"].as_str().unwrap()).unwrap();
                return (txpk, data);
            }
        }
    }
}

/// The LinkADRReq in a downlink (FOpts, or the FPort-0 payload), read with the `lorawan` crate.
fn link_adr_req(phy: &[u8]) -> Option<AdrReq> {
    let dl =
        open_downlink(phy, &Key128::new(NWK), &Key128::new(APP)).expect("MIC and decryption with the session keys");
    assert!(dl.ack, "the confirmed uplink is acknowledged");
    assert!(dl.fopts.len() <= 15);
    let mac = if dl.f_port == Some(0) { dl.payload } else { dl.fopts };
    parse_downlink_mac_commands(&mac).find_map(|c| match c {
        DownlinkMacCommand::LinkADRReq(p) => {
            let mask = p.channel_mask();
            Some(AdrReq {
                dr: p.data_rate(),
                tx_power: p.tx_power(),
                ch_mask: u16::from_le_bytes([mask.get_index(0), mask.get_index(1)]),
                nb_trans: p.redundancy().number_of_transmissions(),
            })
        }
        _ => None,
    })
}

async fn start(dir: &std::path::Path, broker_port: u16) -> Daemon {
    let text = format!(
        "[gateway]\nid = \"adr-01\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\n\
         [lorawan]\nmin_lead_ms = 50\ndev_status_interval_s = 0\n[lorawan.adr]\nmargin_db = 10.0\n\
         [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n\
         [[device]]\nname = \"meter-adr\"\nprofile = \"raw\"\ndev_addr = \"{ADDR}\"\nnwk_s_key = \"{}\"\napp_s_key = \"{}\"\n",
        dir.join("data").display(),
        hex::encode(NWK),
        hex::encode(APP),
    );
    let cfg = config::parse_str(&text, "adr.toml", dir).unwrap();
    Daemon::start(&cfg).await.unwrap()
}

/// SF of an EU868 data rate 0..=5.
fn sf(dr: u8) -> u8 {
    12 - dr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_device_at_sf12_is_moved_to_dr5_and_not_asked_again() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), broker.port).await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;

    // SF12, +10 dB: margin 10 + 20 − 10 = 20 dB → 6 steps: DR0 → DR5, then one TX power step.
    let (txpk, phy) = fwd.confirmed(0, 12, 10.0, &[]).await;
    assert_eq!(txpk["datr"], "SF12BW125", "RX1 at the uplink's data rate");
    let first = link_adr_req(&phy).expect("a LinkADRReq in the answer");
    // ABP without NewChannelReq: the three default channels only.
    assert_eq!(first, AdrReq { dr: 5, tx_power: 1, ch_mask: 0x0007, nb_trans: 1 });

    // The device accepts every request and moves; its SNR falls 2 dB per TX power step.
    let (mut dr, mut power, mut answer) = (first.dr, first.tx_power, true);
    let mut asked = vec![first];
    let mut since_last = 0;
    for f_cnt in 1..=30 {
        let fopts: &[u8] = if answer { &[0x03, 0x07] } else { &[] };
        let (_, phy) = fwd.confirmed(f_cnt, sf(dr), 10.0 - 2.0 * f64::from(power), fopts).await;
        answer = false;
        since_last += 1;
        if let Some(req) = link_adr_req(&phy) {
            assert!(!asked.contains(&req), "uplink {f_cnt}: {req:?} asked again");
            assert_eq!(req.dr, 5, "the device stays at DR5");
            (dr, power, answer, since_last) = (req.dr, req.tx_power, true, 0);
            asked.push(req);
        }
    }
    assert!(since_last >= 20, "ADR converged: no LinkADRReq in the last {since_last} uplinks ({asked:?})");
    assert!(asked.len() <= 4, "{asked:?}");
    assert_eq!(dr, 5);

    // /metrics: the device's data rate and the engine's counts.
    let port = daemon.http_addr.port();
    let mut body = String::new();
    let shown = common::wait_until(Duration::from_secs(20), || {
        body = common::http::http_get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
        body.contains("district_gateway_lorawan_device_data_rate{device=\"meter-adr\"} 5")
    });
    assert!(shown, "{body}");
    let line = format!("district_gateway_lorawan_mac_total{{kind=\"adr_requests\"}} {}", asked.len());
    assert!(body.contains(&line), "{line} in {body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_signal_fades_is_slowed_down() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), broker.port).await;
    let mut fwd = Forwarder::new(daemon.gwmp_addrs[0], GW).await;

    // SF7 at 0 dB: margin 0 + 7.5 − 10 = −2.5 dB, inside the ±3 dB dead band: nothing to ask.
    let (_, phy) = fwd.confirmed(0, 7, 0.0, &[]).await;
    assert_eq!(link_adr_req(&phy), None);
    // The link fades to −12 dB. Negative steps wait for a full history of 20 uplinks, and the best SNR
    // of the window counts: the device is slowed once the 0 dB uplink has left the window.
    let mut slowed = None;
    for f_cnt in 1..=25 {
        let (_, phy) = fwd.confirmed(f_cnt, 7, -12.0, &[]).await;
        if let Some(req) = link_adr_req(&phy) {
            slowed = Some((f_cnt, req));
            break;
        }
    }
    let (at, req) = slowed.expect("a LinkADRReq once the history is full of the faded link");
    assert!(at >= 19, "not before 20 uplinks (uplink {at})");
    // −12 + 7.5 − 10 = −14.5 dB → −4 steps: power already at max (index 0), so DR5 → DR1.
    assert_eq!(req, AdrReq { dr: 1, tx_power: 0, ch_mask: 0x0007, nb_trans: 1 });
    // The device accepts and uplinks at DR1 (SF11): −12 + 17.5 − 10 = −4.5 dB → −1 step, but the
    // history started again with the new settings: nothing more before it is full.
    let (_, phy) = fwd.confirmed(at + 1, 11, -12.0, &[0x03, 0x07]).await;
    assert_eq!(link_adr_req(&phy), None);
    daemon.stop().await;
}
