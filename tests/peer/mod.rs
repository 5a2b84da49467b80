//! An independent device stack as the daemon's test peer: `lorawan-device` 0.12 (lora-rs, the async
//! device: OTAA, class A windows, class C) on a virtual radio bridged to the packet-forwarder protocol.
//!
//! - `air.rs`: our own packet forwarder (GWMP v2 over loopback UDP) and the virtual concentrator clock;
//!   it records every uplink, every downlink heard, and every *finding* (a downlink no radio could
//!   have heard: wrong window, frequency, data rate or polarity; a PULL_RESP a forwarder would refuse).
//! - `radio.rs`: the device's `PhyRxTx` and `Timer` over the air.
//! - `frames.rs`: frames opened with the session keys (the MAC commands each side sent), and the ADR
//!   bit the peer cannot set by itself.
//!
//! Nothing here comes from the daemon's crates: the device, its frames and the forwarder's datagrams
//! are built independently, so that where the two disagree the test shows it.
#![allow(dead_code)] // each test uses part of the peer

pub mod air;
pub mod frames;
pub mod log;
pub mod radio;

use std::net::SocketAddr;
use std::str::FromStr;

use lorawan::keys::{AppSKey, NewSKey};
use lorawan_device::async_device::{region, Device, JoinMode, JoinResponse, SendResponse};
use lorawan_device::default_crypto::DefaultFactory;
use lorawan_device::{AppEui, AppKey, DevEui, Region};
use rand::SeedableRng;

pub use air::{Air, Link};
use frames::Opened;
pub use radio::{VirtualRadio, VirtualTimer};

/// Up to 4 downlinks buffered: a class C device may receive class C frames around its class A windows.
pub type PeerDevice = Device<VirtualRadio, DefaultFactory, VirtualTimer, rand::rngs::StdRng, 256, 4>;

/// How many join requests a peer sends before the test gives up.
const JOIN_ATTEMPTS: usize = 3;

pub struct Peer {
    pub device: PeerDevice,
    pub air: Air,
}

impl Peer {
    /// An EU868 device, not joined, heard by the gateway with `link`. `seed` fixes its DevNonces and
    /// channel choices.
    pub async fn start(daemon: SocketAddr, link: Link, seed: u64) -> Peer {
        let air = Air::connect(daemon, link).await;
        let device = Device::new(
            region::Configuration::new(Region::EU868),
            VirtualRadio::new(air.clone()),
            VirtualTimer::new(air.clone()),
            rand::rngs::StdRng::seed_from_u64(seed),
        );
        Peer { device, air }
    }

    /// OTAA join with the keys as the daemon's config writes them (MSB-first hex).
    pub async fn join(&mut self, dev_eui: &str, join_eui: &str, app_key: &str) {
        let mode = JoinMode::OTAA {
            deveui: DevEui::from_str(dev_eui).expect("DevEUI hex"),
            appeui: AppEui::from_str(join_eui).expect("JoinEUI hex"),
            appkey: AppKey::from_str(app_key).expect("AppKey hex"),
        };
        for _ in 0..JOIN_ATTEMPTS {
            match self.device.join(&mode).await {
                Ok(JoinResponse::JoinSuccess) => return,
                Ok(JoinResponse::NoJoinAccept) => continue,
                Err(e) => panic!("join: {e:?}; findings {:?}", self.air.findings()),
            }
        }
        panic!("no join accept after {JOIN_ATTEMPTS} requests; findings {:?}", self.air.findings());
    }

    /// ABP activation with the keys as the daemon's config writes them (MSB-first hex). The device
    /// starts with the region's default receive windows (RX1 after 1 s, RX2 DR0 on 869.525 MHz).
    pub async fn activate_abp(&mut self, dev_addr: &str, nwk_s_key: &str, app_s_key: &str) {
        let addr = u32::from_str_radix(dev_addr, 16).expect("DevAddr hex");
        let mode = JoinMode::ABP {
            newskey: NewSKey::from_str(nwk_s_key).expect("NwkSKey hex"),
            appskey: AppSKey::from_str(app_s_key).expect("AppSKey hex"),
            // The `lorawan` crate keeps a DevAddr in air order (LSB first, LoRaWAN 1.0.3 §4.3.1 and §4:
            // every multi-octet field is little endian) but its `From<u32>` and `FromStr` copy the bytes
            // big-endian, so `DevAddr::from(0x26011f01)` goes on air as 0x011f0126 and the daemon (rightly)
            // knows no such device. The bytes in air order, then.
            devaddr: lorawan_device::DevAddr::from(addr.to_le_bytes()),
        };
        let r = self.device.join(&mode).await;
        assert!(matches!(r, Ok(JoinResponse::JoinSuccess)), "ABP activation: {r:?}");
    }

    /// One uplink and its receive windows.
    pub async fn send(&mut self, data: &[u8], f_port: u8, confirmed: bool) -> SendResponse {
        match self.device.send(data, f_port, confirmed).await {
            Ok(r) => r,
            Err(e) => panic!("send: {e:?}; findings {:?}", self.air.findings()),
        }
    }

    /// The session keys (after a join).
    pub fn keys(&mut self) -> (NewSKey, AppSKey) {
        let s = self.device.get_session().expect("joined");
        (s.newskey, s.appskey)
    }

    /// Every downlink the device's radio received, opened with the current session's keys (join
    /// accepts and other sessions' frames are left out).
    pub fn downlinks(&mut self) -> Vec<Opened> {
        let (nwk, app) = self.keys();
        self.air.heard().iter().filter_map(|t| frames::open(&t.data, &nwk, &app, false)).collect()
    }

    /// Every uplink of the current session, opened.
    pub fn uplinks(&mut self) -> Vec<Opened> {
        let (nwk, app) = self.keys();
        self.air.uplinks().iter().filter_map(|u| frames::open(&u.phy, &nwk, &app, true)).collect()
    }

    /// From now on every uplink carries the ADR bit (see [`frames::with_adr_bit`]).
    pub fn set_adr_bit(&mut self) {
        let keys = self.keys();
        self.device.get_mut_radio().adr_bit = Some(keys);
    }

    /// Fails the test with every finding, if there is one.
    pub fn assert_no_findings(&self) {
        let f = self.air.findings();
        assert!(f.is_empty(), "the peer found disagreements: {f:#?}");
    }
}
