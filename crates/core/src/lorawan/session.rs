//! ABP sessions indexed by DevAddr, 32-bit frame-counter reconstruction and replay protection.
//!
//! Counter rules (LoRaWAN 1.0.x, network side):
//! - Only the low 16 bits of FCntUp are on air. The full counter is the smallest value above the last
//!   accepted one with those low bits: the same 16-bit epoch first, else the next one, and never more than
//!   [`MAX_FCNT_GAP`] ahead (the spec's MAX_FCNT_GAP; a larger jump is refused).
//! - The MIC is checked with the reconstructed counter, so a wrong guess simply fails the MIC.
//! - A frame whose MIC verifies with a counter <= last is a replay. It is reported as `Replay`, not
//!   `BadMic`, so the operator can tell an attack or a duplicate from a key problem.
//! - A session without a last counter (new, nothing in the store) accepts any counter in epoch 0.
//! - `relax_fcnt` devices (ABP devices without non-volatile counters) may restart from 0: a counter lower
//!   than the last one with a valid MIC is accepted as a restart. An equal counter is still a replay.

use std::collections::HashMap;

use crate::keys::{DevAddr, Key128};
use crate::lorawan::mac::parse_mac_uplink;
pub use crate::lorawan::uplink::MAX_FCNT_GAP;
use crate::lorawan::uplink::{DataFrame, Uplink, UplinkError};

#[derive(Debug, Clone)]
struct Session {
    device: String,
    nwk_s_key: Key128,
    app_s_key: Key128,
    relax_fcnt: bool,
    last_fcnt: Option<u32>,
}

/// All ABP sessions. Several devices may share one DevAddr (it is not unique in LoRaWAN); the MIC tells
/// them apart.
#[derive(Debug, Default)]
pub struct Sessions {
    by_addr: HashMap<DevAddr, Vec<Session>>,
    addr_of: HashMap<String, DevAddr>,
}

/// The counter in the same 16-bit epoch as `last` with the given low bits.
fn same_epoch(last: u32, fcnt16: u16) -> u32 {
    (last & 0xFFFF_0000) | u32::from(fcnt16)
}

/// The counter a fresh frame must have: above `last`, at most MAX_FCNT_GAP ahead.
fn forward_candidate(last: Option<u32>, fcnt16: u16) -> Option<u32> {
    let Some(last) = last else {
        return Some(u32::from(fcnt16));
    };
    let c = same_epoch(last, fcnt16);
    let c = if c > last { c } else { c.checked_add(0x1_0000)? };
    (c - last <= MAX_FCNT_GAP).then_some(c)
}

enum Verdict {
    Accept { idx: usize, f_cnt: u32, reset: bool },
    Refuse(UplinkError),
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a device's session. The last counter survives only when the DevAddr and NwkSKey
    /// are unchanged (same session); otherwise it is a new session and starts without one.
    pub fn upsert(&mut self, device: &str, dev_addr: DevAddr, nwk_s_key: Key128, app_s_key: Key128, relax_fcnt: bool) {
        let old = self.take(device);
        let last_fcnt =
            old.and_then(|(addr, s)| (addr == dev_addr && s.nwk_s_key == nwk_s_key).then_some(s.last_fcnt).flatten());
        self.by_addr.entry(dev_addr).or_default().push(Session {
            device: device.to_string(),
            nwk_s_key,
            app_s_key,
            relax_fcnt,
            last_fcnt,
        });
        self.addr_of.insert(device.to_string(), dev_addr);
    }

    pub fn remove(&mut self, device: &str) {
        self.take(device);
    }

    fn take(&mut self, device: &str) -> Option<(DevAddr, Session)> {
        let addr = self.addr_of.remove(device)?;
        let list = self.by_addr.get_mut(&addr)?;
        let pos = list.iter().position(|s| s.device == device)?;
        let s = list.remove(pos);
        if list.is_empty() {
            self.by_addr.remove(&addr);
        }
        Some((addr, s))
    }

    fn get_mut(&mut self, device: &str) -> Option<&mut Session> {
        let addr = self.addr_of.get(device)?;
        self.by_addr.get_mut(addr)?.iter_mut().find(|s| s.device == device)
    }

    /// Restores the last accepted counter (from the store at start). Returns false for an unknown device.
    pub fn set_last_fcnt(&mut self, device: &str, fcnt_up: u32) -> bool {
        match self.get_mut(device) {
            Some(s) => {
                s.last_fcnt = Some(fcnt_up);
                true
            }
            None => false,
        }
    }

    /// Sets (or clears: a new session) the last accepted counter. Returns false for an unknown device.
    pub fn set_last_fcnt_opt(&mut self, device: &str, fcnt_up: Option<u32>) -> bool {
        match self.get_mut(device) {
            Some(s) => {
                s.last_fcnt = fcnt_up;
                true
            }
            None => false,
        }
    }

    /// The last accepted counter of a device, if any.
    pub fn last_fcnt(&self, device: &str) -> Option<u32> {
        let addr = self.addr_of.get(device)?;
        self.by_addr.get(addr)?.iter().find(|s| s.device == device)?.last_fcnt
    }

    pub fn len(&self) -> usize {
        self.addr_of.len()
    }

    /// True when a session uses this DevAddr (for the OTAA address allocator).
    /// The devices with a session at this address (usually one).
    pub fn devices_at(&self, addr: DevAddr) -> impl Iterator<Item = &str> {
        self.by_addr.get(&addr).into_iter().flatten().map(|s| s.device.as_str())
    }

    pub fn dev_addr_in_use(&self, addr: DevAddr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// The DevAddr of a device's session.
    pub fn dev_addr_of(&self, device: &str) -> Option<DevAddr> {
        self.addr_of.get(device).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.addr_of.is_empty()
    }

    /// Verify and decrypt one PHYPayload. On success the device's last FCnt is advanced (in memory only;
    /// the caller persists `Uplink::f_cnt`).
    pub fn accept_uplink(&mut self, phy: &[u8]) -> Result<Uplink, UplinkError> {
        let frame = DataFrame::parse(phy)?;
        if !frame.mtype.is_data_up() {
            return Err(UplinkError::NotUplinkData { mtype: frame.mtype });
        }
        if frame.f_port == Some(0) && !frame.fopts.is_empty() {
            // LoRaWAN 1.0.x: MAC commands go either in FOpts or in an FPort-0 payload, never both.
            return Err(UplinkError::Malformed("MAC commands in both FOpts and FPort 0".into()));
        }
        let dev_addr = frame.dev_addr;
        let candidates = self.by_addr.get_mut(&dev_addr).ok_or(UplinkError::UnknownDevAddr(dev_addr))?;

        let (idx, f_cnt, reset) = match Self::judge(candidates, &frame) {
            Verdict::Accept { idx, f_cnt, reset } => (idx, f_cnt, reset),
            Verdict::Refuse(e) => return Err(e),
        };
        let session = candidates.get_mut(idx).ok_or(UplinkError::UnknownDevAddr(dev_addr))?;

        let fctrl = frame.fctrl;
        let confirmed = frame.confirmed();
        let f_port = frame.f_port;
        let fopts = frame.fopts.clone();
        let payload = frame.decrypt(&session.nwk_s_key, &session.app_s_key, f_cnt)?;
        // Only a frame that decrypted advances the counter.
        session.last_fcnt = Some(f_cnt);

        let (mac_commands, mac_error) =
            if f_port == Some(0) { parse_mac_uplink(&payload) } else { parse_mac_uplink(&fopts) };
        Ok(Uplink {
            device: session.device.clone(),
            dev_addr,
            f_cnt,
            f_port,
            payload,
            fopts,
            mac_commands,
            mac_error,
            confirmed,
            adr: fctrl & 0x80 != 0,
            adr_ack_req: fctrl & 0x40 != 0,
            ack: fctrl & 0x20 != 0,
            fcnt_reset: reset,
        })
    }

    /// Picks the session and counter. A fresh counter on any candidate wins over everything; then a relaxed
    /// restart; then the first replay / gap error found; else the MIC matched nobody.
    fn judge(candidates: &[Session], frame: &DataFrame) -> Verdict {
        let f16 = frame.fcnt16;
        for (idx, s) in candidates.iter().enumerate() {
            if let Some(c) = forward_candidate(s.last_fcnt, f16) {
                if frame.mic_ok(&s.nwk_s_key, c) {
                    return Verdict::Accept { idx, f_cnt: c, reset: false };
                }
            }
        }
        let mut refusal = None;
        for (idx, s) in candidates.iter().enumerate() {
            let Some(last) = s.last_fcnt else { continue };
            let restart = u32::from(f16);
            if s.relax_fcnt && restart < last && frame.mic_ok(&s.nwk_s_key, restart) {
                return Verdict::Accept { idx, f_cnt: restart, reset: true };
            }
            if refusal.is_some() {
                continue;
            }
            // Attribute the frame to this device if the MIC verifies with a nearby counter that is not
            // acceptable: the same epoch, the next one (too far ahead) or the previous one (an old frame).
            let c = same_epoch(last, f16);
            let tries = [Some(c), c.checked_add(0x1_0000), c.checked_sub(0x1_0000)];
            for t in tries.into_iter().flatten() {
                if frame.mic_ok(&s.nwk_s_key, t) {
                    let device = s.device.clone();
                    refusal = Some(if t <= last {
                        UplinkError::Replay { device, f_cnt: t, last }
                    } else {
                        UplinkError::FCntGap { device, f_cnt: t, last }
                    });
                    break;
                }
            }
        }
        Verdict::Refuse(refusal.unwrap_or(UplinkError::BadMic { dev_addr: frame.dev_addr }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconstruction() {
        assert_eq!(forward_candidate(None, 7), Some(7));
        assert_eq!(forward_candidate(Some(5), 6), Some(6));
        assert_eq!(forward_candidate(Some(5), 5), None);
        assert_eq!(forward_candidate(Some(0xFFFF), 0), Some(0x1_0000));
        assert_eq!(forward_candidate(Some(0x1_FFF0), 0x0005), Some(0x2_0005));
        assert_eq!(forward_candidate(Some(76542), 0x2AFF), Some(76543));
        assert_eq!(forward_candidate(Some(5), 5 + MAX_FCNT_GAP as u16), Some(5 + MAX_FCNT_GAP));
        assert_eq!(forward_candidate(Some(5), 6 + MAX_FCNT_GAP as u16), None);
        assert_eq!(forward_candidate(Some(u32::MAX), 0), None);
    }
}
