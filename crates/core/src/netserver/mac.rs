//! The network server's side of the MAC command engine (`lorawan::mac_engine`): its options, the
//! API other parts use (a device's MAC state, queueing a MAC request, the report for `status`),
//! and what it persists.

use serde_json::{Map, Value};

use super::{NetworkServer, Output, Persist, Provisioning};
use crate::ingest::RadioFrame;
use crate::keys::DevAddr;
use crate::lorawan::mac_engine::{MacConfig, MacCounts, MacEngine, MacEnqueueError};
use crate::lorawan::{AdrConfig, MacRequest, MacState, MacStatus};

impl NetworkServer {
    /// `[lorawan.adr]` and `[lorawan.mac]` (before devices are restored). The receive windows and
    /// channels the MAC engine aims at are the network's own (join config).
    pub fn set_mac_options(&mut self, adr: AdrConfig, max_tries: u8, abp_channels: Vec<u32>) {
        let cfg = MacConfig { adr, max_tries, abp_channels, ..self.mac.config().clone() };
        self.mac = MacEngine::new(cfg);
    }

    /// The device's MAC state: accepted data rate, TX power, NbTrans, channels, receive windows and
    /// pending requests (None: never heard and nothing asked).
    pub fn mac_state(&self, device: &str) -> Option<&MacState> {
        self.mac.state(device)
    }

    /// The device's MAC view for status (adds the last uplink's data rate, SNR margin, ADR decision).
    pub fn mac_status(&self, device: &str) -> Option<MacStatus> {
        self.mac.status(device)
    }

    /// Devices with a MAC state, sorted.
    pub fn mac_devices(&self) -> Vec<&str> {
        self.mac.devices()
    }

    pub fn mac_counts(&self) -> MacCounts {
        self.mac.counts()
    }

    /// For `status`: each device's MAC view (data rate, TX power, NbTrans, SNR margin, pending
    /// requests, last ADR decision) and the engine's counts since start.
    pub fn mac_report(&self) -> Value {
        let devices: Map<String, Value> = self
            .mac
            .devices()
            .into_iter()
            .filter_map(|d| Some((d.to_string(), serde_json::to_value(self.mac.status(d)?).ok()?)))
            .collect();
        serde_json::json!({"devices": devices, "counts": self.mac.counts()})
    }

    /// Queues a MAC request for the device's next class A window (after its next uplink), e.g.
    /// `MacRequest::RxTimingSetup { delay_s: 2 }`. The output carries the state to persist.
    pub fn enqueue_mac(&mut self, device: &str, req: MacRequest) -> Result<Output, MacEnqueueError> {
        let mut out = Output::default();
        if self.mac.enqueue(device, self.is_abp(device), req)? {
            self.push_mac_state(device, &mut out);
        }
        Ok(out)
    }

    pub(super) fn is_abp(&self, device: &str) -> bool {
        matches!(self.provisioning.get(device), Some(Provisioning::Abp { .. }))
    }

    pub(super) fn push_mac_state(&self, device: &str, out: &mut Output) {
        let state = self.mac.state(device).cloned().map(Box::new);
        out.persist.push(Persist::MacState { device: device.to_string(), state });
    }

    /// A copy of an accepted frame through another gateway or source: ADR keeps its better SNR.
    pub(super) fn copy_heard(&mut self, frame: &RadioFrame) {
        let (Some(snr), Some(addr), Some(f_cnt16)) = (
            frame.snr,
            frame.phy.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()),
            frame.phy.get(6..8).and_then(|b| <[u8; 2]>::try_from(b).ok()),
        ) else {
            return;
        };
        let addr = DevAddr(u32::from_le_bytes(addr));
        let device = self.sessions.devices_at(addr).find(|d| self.last_frame.get(*d) == Some(&frame.phy));
        if let Some(device) = device.map(str::to_string) {
            self.mac.merge_copy(&device, u16::from_le_bytes(f_cnt16), snr);
        }
    }
}
