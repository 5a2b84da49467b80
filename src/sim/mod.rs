//! Simulation: devices that send real encrypted LoRaWAN frames, the embedded broker, the demo.
//! The same code drives the demo, the tests and the benchmarks.

#[cfg(feature = "demo")]
pub mod broker;
#[cfg(feature = "demo")]
pub mod demo;
pub use district_core::device_frames as frames;
pub mod payloads;
pub mod simulate;

use crate::keys::{DevAddr, Key128};

/// A simulated ABP device: it keeps its own frame counter, like a real one.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub name: String,
    pub profile: String,
    pub dev_addr: DevAddr,
    pub nwk_s_key: Key128,
    pub app_s_key: Key128,
    pub f_cnt: u32,
    pub f_port: u8,
}

impl SimDevice {
    /// A device with keys derived from its index: deterministic, distinct, and obviously not real.
    pub fn numbered(prefix: &str, i: u32, profile: &str) -> SimDevice {
        // FNV-1a over the name: distinct devices get distinct addresses and keys.
        let name = format!("{prefix}-{i:03}");
        let h = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        let hb = h.to_be_bytes();
        let mut nwk = [0u8; 16];
        let mut app = [0u8; 16];
        for (j, b) in nwk.iter_mut().enumerate() {
            *b = hb[j % 4].wrapping_add((j as u8).wrapping_mul(29)).wrapping_add(0x10);
        }
        for (j, b) in app.iter_mut().enumerate() {
            *b = hb[(j + 1) % 4].wrapping_mul(3).wrapping_add((j as u8).wrapping_mul(17)).wrapping_add(0x80);
        }
        SimDevice {
            name,
            profile: profile.to_string(),
            // 0x26 is the NwkID prefix most public examples use; the rest from the hash and the index.
            dev_addr: DevAddr(0x2600_0000 | ((h & 0x00ff_0000) ^ (i & 0xffff))),
            nwk_s_key: Key128::new(nwk),
            app_s_key: Key128::new(app),
            f_cnt: 0,
            f_port: 85,
        }
    }

    /// The next uplink carrying `payload`; advances the counter.
    pub fn uplink(&mut self, payload: &[u8]) -> Vec<u8> {
        let phy = frames::build_data_uplink(
            self.dev_addr,
            &self.nwk_s_key,
            &self.app_s_key,
            self.f_cnt,
            self.f_port,
            payload,
            false,
        );
        self.f_cnt = self.f_cnt.wrapping_add(1);
        phy
    }

    /// The `[[device]]` table for this device (test and demo configs).
    pub fn config_toml(&self) -> String {
        format!(
            "[[device]]\nname = \"{}\"\nprofile = \"{}\"\ndev_addr = \"{}\"\nnwk_s_key = \"{}\"\napp_s_key = \"{}\"\n\n",
            self.name,
            self.profile,
            self.dev_addr,
            hex::encode(self.nwk_s_key.expose()),
            hex::encode(self.app_s_key.expose())
        )
    }
}
