//! Multicast groups for class C devices (LoRaWAN 1.0.x): one downlink frame that every member of a
//! group receives at once, e.g. a lighting zone's lamps at a new level after a schedule step.
//!
//! A group is provisioned on both sides by configuration (the network and every member hold the same
//! group DevAddr, McNwkSKey and McAppSKey, as the Remote Multicast Setup's McGroupSetupReq would put
//! there). Its frames are unconfirmed data downs to the group DevAddr with FCtrl 0 (no ACK, no ADR,
//! no FOpts: a multicast frame carries no MAC commands), FRMPayload encrypted with McAppSKey and the
//! MIC computed with McNwkSKey, exactly as a unicast downlink under those keys (the `lorawan` crate
//! builds it). They are sent at once (class C) on the group's frequency and data rate, which must be
//! where the members listen (a class C device's RX2 parameters).
//!
//! Decisions:
//! - The group's frame counter is its own, never reset (also not when its keys change): a counter
//!   used twice under the same keys would re-use the AES-CTR keystream. Every frame built consumes
//!   one; the caller persists [`McSent::next_f_cnt`] and flushes it before the frame leaves.
//! - One frame waits per group, the newest: a level command supersedes the one before it, so a frame
//!   the duty cycle holds back is replaced, never queued behind (the lighting loop's state already
//!   says the newest level).
//! - Air time is the same formula as unicast (`airtime.rs`), reserved in the same duty-cycle budget
//!   (the gateway's [`Scheduler`]).

use std::time::Duration;

use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::FCtrl;
use serde_json::{json, Value};

use crate::keys::{DevAddr, Key128};
use crate::lorawan::downlink::{ScheduleError, Scheduler};
use crate::lorawan::region::{DataRate, TxParams};

/// MHDR + FHDR without FOpts + FPort + MIC: a multicast frame is this plus its FRMPayload.
const OVERHEAD: usize = 1 + 7 + 1 + 4;

/// A multicast group as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct McGroup {
    pub name: String,
    /// The group address every member listens to (McAddr).
    pub dev_addr: DevAddr,
    /// McNwkSKey: the MIC.
    pub nwk_s_key: Key128,
    /// McAppSKey: the FRMPayload.
    pub app_s_key: Key128,
    /// EU868 data rate 0..=6.
    pub data_rate: u8,
    pub freq_hz: u64,
    /// The devices that hold the group's keys.
    pub members: Vec<String>,
}

impl McGroup {
    /// Largest FRMPayload a frame of this group can carry.
    pub fn max_payload(&self) -> usize {
        DataRate::from_dr(self.data_rate).map_or(0, |dr| dr.max_phy_payload().saturating_sub(OVERHEAD))
    }
}

/// Why a multicast frame was not built or not sent now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McError {
    #[error("unknown multicast group {0:?}")]
    UnknownGroup(String),
    #[error("FPort {0} is not an application port (1..=223)")]
    BadPort(u8),
    #[error("payload of {len} bytes exceeds {max} at the group's data rate")]
    TooLarge { len: usize, max: usize },
    #[error("the group's frame counter is exhausted")]
    CounterExhausted,
    #[error("{0}")]
    Schedule(ScheduleError),
    #[error("building the frame failed: {0}")]
    Build(String),
}

impl McError {
    pub fn is_duty_cycle(&self) -> bool {
        matches!(self, McError::Schedule(e) if e.is_duty_cycle())
    }
}

/// A frame to send (after `next_f_cnt` is on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McSent {
    pub group: String,
    pub phy: Vec<u8>,
    pub f_cnt: u32,
    /// The group's next frame counter: persist it before the frame leaves.
    pub next_f_cnt: u32,
    pub params: TxParams,
    pub airtime: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct McPayload {
    f_port: u8,
    payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct GroupState {
    group: McGroup,
    next_f_cnt: u32,
    /// The newest frame waiting to be sent.
    pending: Option<McPayload>,
    /// The last frame built, to put back if the gateway reports it did not send it.
    last_built: Option<(u32, McPayload)>,
    frames_sent: u64,
    airtime: Duration,
}

/// The gateway's multicast groups: their counters, the frame waiting in each, what each has sent.
#[derive(Debug, Clone, Default)]
pub struct Multicast {
    groups: Vec<GroupState>,
}

impl Multicast {
    /// Replaces the groups (config load or reload): a group that keeps its name keeps its counter and
    /// its statistics; a frame waiting in it is dropped only if it no longer fits.
    pub fn set_groups(&mut self, groups: Vec<McGroup>) {
        let mut old = std::mem::take(&mut self.groups);
        for group in groups {
            let state = match old.iter().position(|s| s.group.name == group.name) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    s.pending = s.pending.filter(|p| p.payload.len() <= group.max_payload());
                    s.group = group;
                    s
                }
                None => GroupState {
                    group,
                    next_f_cnt: 0,
                    pending: None,
                    last_built: None,
                    frames_sent: 0,
                    airtime: Duration::ZERO,
                },
            };
            self.groups.push(state);
        }
    }

    /// The next frame counter the store had for a group (never moves a counter back).
    pub fn restore_f_cnt(&mut self, name: &str, next: u32) {
        if let Some(s) = self.state_mut(name) {
            s.next_f_cnt = s.next_f_cnt.max(next);
        }
    }

    pub fn groups(&self) -> impl Iterator<Item = &McGroup> {
        self.groups.iter().map(|s| &s.group)
    }

    pub fn group(&self, name: &str) -> Option<&McGroup> {
        self.groups().find(|g| g.name == name)
    }

    /// The group a device belongs to, if any.
    pub fn group_of(&self, device: &str) -> Option<&McGroup> {
        self.groups().find(|g| g.members.iter().any(|m| m == device))
    }

    /// The next frame counter of a group.
    pub fn next_f_cnt(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|s| s.group.name == name).map(|s| s.next_f_cnt)
    }

    /// Groups with a frame waiting.
    pub fn pending(&self) -> Vec<String> {
        self.groups.iter().filter(|s| s.pending.is_some()).map(|s| s.group.name.clone()).collect()
    }

    /// Sets the frame a group sends next (replacing one still waiting).
    pub fn set_pending(&mut self, name: &str, f_port: u8, payload: &[u8]) -> Result<(), McError> {
        if !(1..=223).contains(&f_port) {
            return Err(McError::BadPort(f_port));
        }
        let s = self.state_mut(name).ok_or_else(|| McError::UnknownGroup(name.to_string()))?;
        let max = s.group.max_payload();
        if payload.len() > max {
            return Err(McError::TooLarge { len: payload.len(), max });
        }
        s.pending = Some(McPayload { f_port, payload: payload.to_vec() });
        Ok(())
    }

    /// Builds the group's waiting frame if the duty cycle allows it now (the air time is reserved in
    /// `scheduler`); `Ok(None)` when nothing waits. On a refusal the frame keeps waiting.
    pub fn send_pending(
        &mut self,
        name: &str,
        now_ms: u64,
        scheduler: &mut Scheduler,
    ) -> Result<Option<McSent>, McError> {
        let s = self.state_mut(name).ok_or_else(|| McError::UnknownGroup(name.to_string()))?;
        let Some(p) = s.pending.clone() else { return Ok(None) };
        let dr = DataRate::from_dr(s.group.data_rate)
            .ok_or(McError::Build(format!("DR{} is not an EU868 LoRa data rate", s.group.data_rate)))?;
        let next = s.next_f_cnt.checked_add(1).ok_or(McError::CounterExhausted)?;
        let params = scheduler.region.class_c_on(s.group.freq_hz, dr);
        let len = OVERHEAD + p.payload.len();
        let plan = scheduler.transmit_now(params, len, now_ms).map_err(McError::Schedule)?;
        let f_cnt = s.next_f_cnt;
        let phy = build_frame(&s.group, f_cnt, p.f_port, &p.payload).map_err(McError::Build)?;
        // From here on the frame exists: its counter is spent.
        s.next_f_cnt = next;
        s.pending = None;
        s.last_built = Some((f_cnt, p));
        s.frames_sent += 1;
        s.airtime += plan.airtime;
        Ok(Some(McSent { group: name.to_string(), phy, f_cnt, next_f_cnt: next, params, airtime: plan.airtime }))
    }

    /// The gateway did not send the group's frame with this counter: it waits again (unless a newer
    /// one already does). Returns false when `name` is no group or the frame is not the last built.
    pub fn tx_failed(&mut self, name: &str, f_cnt: u32) -> bool {
        let Some(s) = self.state_mut(name) else { return false };
        match s.last_built.take() {
            Some((c, p)) if c == f_cnt => {
                s.pending.get_or_insert(p);
                s.frames_sent = s.frames_sent.saturating_sub(1);
                true
            }
            other => {
                s.last_built = other;
                false
            }
        }
    }

    /// For `status`: each group's address, radio settings, members, counter and what it sent. No keys.
    pub fn status(&self) -> Value {
        Value::Array(
            self.groups
                .iter()
                .map(|s| {
                    json!({
                        "name": s.group.name,
                        "dev_addr": s.group.dev_addr.to_string(),
                        "data_rate": s.group.data_rate,
                        "frequency_hz": s.group.freq_hz,
                        "members": s.group.members,
                        "next_f_cnt": s.next_f_cnt,
                        "frames_sent": s.frames_sent,
                        "airtime_ms": s.airtime.as_secs_f64() * 1000.0,
                        "waiting": s.pending.is_some(),
                    })
                })
                .collect(),
        )
    }

    fn state_mut(&mut self, name: &str) -> Option<&mut GroupState> {
        self.groups.iter_mut().find(|s| s.group.name == name)
    }
}

/// A bare FOpts list for the creator (a multicast frame has none).
const NO_MAC: &[&dyn SerializableMacCommand] = &[];

/// The PHYPayload of a group's frame: unconfirmed data down to the group address, FCtrl 0, FCnt
/// `f_cnt` (its 16 low bits on air), `payload` on `f_port` encrypted with McAppSKey, MIC with McNwkSKey.
pub fn build_frame(group: &McGroup, f_cnt: u32, f_port: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut phy = DataPayloadCreator::new();
    phy.set_uplink(false)
        .set_confirmed(false)
        .set_dev_addr(&group.dev_addr.0.to_le_bytes())
        .set_fctrl(&FCtrl::new(0, false))
        .set_fcnt(f_cnt)
        .set_f_port(f_port);
    let nwk = NewSKey::from(*group.nwk_s_key.expose());
    let app = AppSKey::from(*group.app_s_key.expose());
    phy.build(payload, NO_MAC, &nwk, &app).map(|b| b.to_vec()).map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
#[path = "multicast_tests.rs"]
mod tests;
