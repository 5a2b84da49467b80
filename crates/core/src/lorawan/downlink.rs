//! Downlinks: a per-device queue (class A and class C), confirmed downlinks with ACK tracking and bounded
//! retries, FCntDown, MAC answers (LinkCheckAns, DevStatusReq), and a per-gateway [`Scheduler`] that picks
//! the receive window under the EU868 rules and the duty cycle.
//!
//! Flow for one uplink (class A, and class C devices too, which open RX1/RX2 after every uplink):
//! 1. `queue.on_uplink(&uplink, &radio, now)` → events: a confirmed downlink ACKed or finally failed, a
//!    DevStatusAns; it also notes the MAC answers and the ACK the uplink needs.
//! 2. `scheduler.answer_uplink(&mut queue, &radio, now)` → `Ok(Some(ScheduledDownlink))` to send (RX1 if
//!    it is reachable and the duty cycle allows, else RX2), `Ok(None)` when there is nothing to send, or
//!    `Err` when neither window is possible (count it; the queued data stays queued, the MAC answers and
//!    the ACK for this uplink are dropped — the device will retry).
//! 3. Persist `queue.f_cnt_down()` (the next FCntDown), then send the frame as a `txpk`.
//! 4. If the gateway's TX_ACK reports an error: `queue.tx_failed(frame.f_cnt_down)` puts the data back.
//!
//! Class C: `queue.check_timeouts(now)` (ACK timeouts of confirmed downlinks), then
//! `scheduler.class_c(&mut queue, now)`: a frame to send now with `imme`, nothing (wake up again at
//! `queue.class_c_wake_at()` or on the next enqueue), or a duty-cycle refusal with `retry_after`.
//!
//! Decisions:
//! - Every frame built consumes an FCntDown, even if it never leaves the gateway: re-using a counter with
//!   other content would re-use the AES-CTR keystream. Gaps are harmless for devices.
//! - A confirmed downlink that is not ACKed is re-sent as a new frame (new FCntDown) on the following
//!   uplinks (class C: after `class_c_ack_timeout_ms`), at most `max_attempts` transmissions, then it is
//!   reported `Failed`. If only the device's ACK was lost, its application sees the payload twice: downlink
//!   payloads should be idempotent (a lamp level is).
//! - Strict FIFO per device: nothing else is sent from the queue while a confirmed downlink waits for its
//!   ACK.
//! - FRMPayload is limited to [`MAX_DOWNLINK_PAYLOAD`] (51 bytes) so that every window, down to DR0, can
//!   carry it; MAC commands are added in FOpts only while the frame stays within DR0's limit.

use std::collections::VecDeque;
use std::time::Duration;

use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::FCtrl;

use crate::keys::{DevAddr, Key128};
use crate::lorawan::airtime::downlink_airtime;
use crate::lorawan::dutycycle::{DutyCycle, DutyCycleError};
use crate::lorawan::mac::MacCommand;
use crate::lorawan::region::{
    demodulation_floor_db, Answering, DataRate, Eu868, RegionError, RxSettings, TxParams, UplinkRadio,
};
use crate::lorawan::uplink::Uplink;

/// Largest FRMPayload queued: DR0's MACPayload limit (59) minus FHDR (7) and FPort (1).
pub const MAX_DOWNLINK_PAYLOAD: usize = 51;
/// MACPayload limit at DR0: the bound every frame is built within.
const MAX_MAC_PAYLOAD_DR0: usize = 59;
const FHDR_LEN: usize = 7;
const MAX_FOPTS: usize = 15;
/// LinkCheckAns / DevStatusReq CIDs (downlink direction).
const CID_LINK_CHECK: u8 = 0x02;
const CID_DEV_STATUS: u8 = 0x06;

/// Identifies a queued downlink within its device's queue.
pub type DownlinkId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DeviceClass {
    A,
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Transmissions of a confirmed downlink before it is reported failed (>= 1).
    pub max_attempts: u8,
    /// Queued downlinks per device.
    pub max_queued: usize,
    /// How often to piggyback a DevStatusReq (None: never).
    pub dev_status_interval_ms: Option<u64>,
    /// Class C: how long to wait for the ACK of a confirmed downlink before re-sending it.
    pub class_c_ack_timeout_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_attempts: 3,
            max_queued: 16,
            dev_status_interval_ms: Some(24 * 3600 * 1000),
            class_c_ack_timeout_ms: 60_000,
        }
    }
}

/// A DevStatusAns as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DevStatus {
    /// 0: external power, 1..=254: battery level (1 = empty, 254 = full), 255: unknown.
    pub battery: u8,
    /// Demodulation SNR margin of the device's last received DevStatusReq, dB (-32..=31).
    pub margin_db: i8,
    pub received_at_ms: u64,
}

impl DevStatus {
    pub fn external_power(&self) -> bool {
        self.battery == 0
    }

    /// Battery level in percent when the device measured it (1..=254 scaled to 0..=100).
    pub fn battery_pct(&self) -> Option<u8> {
        match self.battery {
            1..=254 => u8::try_from((u32::from(self.battery) - 1) * 100 / 253).ok(),
            _ => None,
        }
    }
}

/// What happened to queued downlinks, or what the device reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum DownlinkEvent {
    /// A confirmed downlink was ACKed after `attempts` transmissions.
    Acked {
        id: DownlinkId,
        attempts: u8,
    },
    /// A confirmed downlink was not ACKed after `attempts` transmissions and was dropped.
    Failed {
        id: DownlinkId,
        attempts: u8,
    },
    DevStatus(DevStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("FPort {0} is not an application port (1..=223)")]
    BadPort(u8),
    #[error("payload of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("queue full ({max} downlinks)")]
    QueueFull { max: usize },
    #[error("the device has no session (unknown, or an OTAA device that has not joined yet)")]
    NoSession,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    id: DownlinkId,
    f_port: u8,
    payload: Vec<u8>,
    confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    item: Item,
    /// Transmissions so far.
    attempts: u8,
    sent_at_ms: u64,
    /// True while the last transmission's ACK can still come; false when a re-send is due.
    awaiting_ack: bool,
}

/// State to undo a commit when the gateway reports it did not transmit.
#[derive(Debug, Clone)]
struct Commit {
    f_cnt_down: u32,
    taken: Option<Item>,
    in_flight_before: Option<InFlight>,
    dev_status_requested_before: Option<u64>,
}

/// One built downlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownlinkFrame {
    pub device: String,
    pub dev_addr: DevAddr,
    /// The PHYPayload.
    pub phy: Vec<u8>,
    pub f_cnt_down: u32,
    /// The queued downlink it carries, if any (MAC-only / ACK-only frames carry none).
    pub item: Option<DownlinkId>,
    pub confirmed: bool,
    /// Transmission number of the item (1 for the first).
    pub attempt: u8,
    pub ack: bool,
    /// How many of the MAC engine's commands ([`DownlinkQueue::set_mac_commands`]) it carries.
    pub mac_sent: usize,
}

/// What the next frame would contain (computed without changing the queue).
#[derive(Debug, Clone)]
struct Composition {
    item: Option<Item>,
    retransmission: bool,
    fopts: Vec<u8>,
    request_dev_status: bool,
    ack: bool,
    f_pending: bool,
    /// The MAC commands go as the FPort-0 FRMPayload (encrypted with NwkSKey) instead of FOpts.
    mac_port0: bool,
    mac_sent: usize,
}

impl Composition {
    fn phy_len(&self) -> usize {
        let port = self.item.as_ref().map_or(0, |i| 1 + i.payload.len()) + usize::from(self.mac_port0);
        1 + FHDR_LEN + self.fopts.len() + port + 4
    }
}

/// The downlink state of one device.
#[derive(Debug, Clone)]
pub struct DownlinkQueue {
    device: String,
    class: DeviceClass,
    dev_addr: DevAddr,
    nwk_s_key: Key128,
    app_s_key: Key128,
    config: QueueConfig,
    f_cnt_down: u32,
    next_id: DownlinkId,
    queue: VecDeque<Item>,
    in_flight: Option<InFlight>,
    /// MAC answers for the window of the last uplink.
    mac_answers: Vec<u8>,
    /// The last uplink was confirmed: its window must carry ACK.
    ack_due: bool,
    /// The MAC engine's commands for the window of the last uplink (each CID + payload), in order.
    mac_commands: Vec<Vec<u8>>,
    /// The window of the last uplink must carry a frame even if empty (ADRACKReq, sticky answers).
    force_window: bool,
    dev_status_requested_at: Option<u64>,
    last_dev_status: Option<DevStatus>,
    last_commit: Option<Commit>,
}

/// A payload byte string sent as one "MAC command" to the creator (which just concatenates CID+payload).
struct RawMac<'a>(&'a [u8]);

impl SerializableMacCommand for RawMac<'_> {
    fn payload_bytes(&self) -> &[u8] {
        self.0.get(1..).unwrap_or_default()
    }
    fn cid(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }
    fn payload_len(&self) -> usize {
        self.0.len().saturating_sub(1)
    }
}

/// LinkCheckAns margin: uplink SNR above the demodulation floor of its SF, in whole dB (0..=254).
pub fn link_margin_db(snr_db: f64, sf: u8) -> u8 {
    let floor = demodulation_floor_db(sf).unwrap_or(-20.0);
    let m = (snr_db - floor).floor();
    if m.is_finite() {
        m.clamp(0.0, 254.0) as u8
    } else {
        0
    }
}

impl DownlinkQueue {
    pub fn new(
        device: &str,
        class: DeviceClass,
        dev_addr: DevAddr,
        nwk_s_key: Key128,
        app_s_key: Key128,
        config: QueueConfig,
    ) -> Self {
        DownlinkQueue {
            device: device.to_string(),
            class,
            dev_addr,
            nwk_s_key,
            app_s_key,
            config,
            f_cnt_down: 0,
            next_id: 1,
            queue: VecDeque::new(),
            in_flight: None,
            mac_answers: Vec::new(),
            ack_due: false,
            mac_commands: Vec::new(),
            force_window: false,
            dev_status_requested_at: None,
            last_dev_status: None,
            last_commit: None,
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn class(&self) -> DeviceClass {
        self.class
    }

    pub fn set_class(&mut self, class: DeviceClass) {
        self.class = class;
    }

    pub fn dev_addr(&self) -> DevAddr {
        self.dev_addr
    }

    /// A new session (OTAA join): FCntDown restarts at 0; a confirmed downlink in flight goes back to the
    /// head of the queue with its attempts reset; pending MAC answers and ACKs are dropped.
    pub fn new_session(&mut self, dev_addr: DevAddr, nwk_s_key: Key128, app_s_key: Key128) {
        self.dev_addr = dev_addr;
        self.nwk_s_key = nwk_s_key;
        self.app_s_key = app_s_key;
        self.f_cnt_down = 0;
        if let Some(f) = self.in_flight.take() {
            self.queue.push_front(f.item);
        }
        self.mac_answers.clear();
        self.mac_commands.clear();
        self.force_window = false;
        self.ack_due = false;
        self.last_commit = None;
    }

    /// True when the queue sends with this address and these keys.
    pub fn session_is(&self, dev_addr: DevAddr, nwk_s_key: &Key128, app_s_key: &Key128) -> bool {
        self.dev_addr == dev_addr && self.nwk_s_key == *nwk_s_key && self.app_s_key == *app_s_key
    }

    /// The next FCntDown (persist it after every frame built).
    pub fn f_cnt_down(&self) -> u32 {
        self.f_cnt_down
    }

    /// Restores the next FCntDown from the store.
    pub fn set_f_cnt_down(&mut self, next: u32) {
        self.f_cnt_down = next;
    }

    /// Queued downlinks, including one in flight.
    pub fn len(&self) -> usize {
        self.queue.len() + usize::from(self.in_flight.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The confirmed downlink waiting for its ACK, if any.
    pub fn in_flight(&self) -> Option<DownlinkId> {
        self.in_flight.as_ref().map(|f| f.item.id)
    }

    pub fn last_dev_status(&self) -> Option<DevStatus> {
        self.last_dev_status
    }

    pub fn enqueue(&mut self, f_port: u8, payload: &[u8], confirmed: bool) -> Result<DownlinkId, EnqueueError> {
        if !(1..=223).contains(&f_port) {
            return Err(EnqueueError::BadPort(f_port));
        }
        if payload.len() > MAX_DOWNLINK_PAYLOAD {
            return Err(EnqueueError::TooLarge { len: payload.len(), max: MAX_DOWNLINK_PAYLOAD });
        }
        if self.len() >= self.config.max_queued {
            return Err(EnqueueError::QueueFull { max: self.config.max_queued });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Item { id, f_port, payload: payload.to_vec(), confirmed });
        Ok(id)
    }

    /// Removes a queued downlink that is not in flight.
    pub fn cancel(&mut self, id: DownlinkId) -> bool {
        let before = self.queue.len();
        self.queue.retain(|i| i.id != id);
        before != self.queue.len()
    }

    /// Drops every queued downlink and the one in flight (their session's keys are gone): how many.
    pub fn drop_all(&mut self) -> usize {
        let n = self.len();
        self.queue.clear();
        self.in_flight = None;
        self.mac_answers.clear();
        self.mac_commands.clear();
        self.force_window = false;
        self.ack_due = false;
        self.last_commit = None;
        n
    }

    /// The MAC engine's commands for the window of the uplink `on_uplink` just processed (answers
    /// first, then requests; the frame carries a prefix of them, see [`DownlinkFrame::mac_sent`]), and
    /// whether that window must carry a frame even with nothing in it.
    pub fn set_mac_commands(&mut self, commands: Vec<Vec<u8>>, force_window: bool) {
        self.mac_commands = commands;
        self.force_window = force_window;
    }

    /// Processes a verified uplink of this device: ACK tracking, MAC commands, the ACK it needs.
    pub fn on_uplink(&mut self, up: &Uplink, radio: &UplinkRadio, now_ms: u64) -> Vec<DownlinkEvent> {
        let mut events = Vec::new();
        self.last_commit = None;
        self.no_ack_or_ack(up.ack, &mut events);
        self.ack_due = up.confirmed;
        self.mac_answers.clear();
        for cmd in &up.mac_commands {
            match cmd {
                MacCommand::LinkCheckReq => {
                    let margin = radio.snr_db.map_or(0, |snr| link_margin_db(snr, radio.sf));
                    self.mac_answers.extend_from_slice(&[CID_LINK_CHECK, margin, 1]);
                }
                MacCommand::DevStatusAns { battery, margin } => {
                    let s = DevStatus { battery: *battery, margin_db: *margin, received_at_ms: now_ms };
                    self.last_dev_status = Some(s);
                    events.push(DownlinkEvent::DevStatus(s));
                }
                _ => {}
            }
        }
        events
    }

    /// Class C: a confirmed downlink whose ACK did not come within the timeout is due for a re-send (or
    /// failed after the last attempt).
    pub fn check_timeouts(&mut self, now_ms: u64) -> Vec<DownlinkEvent> {
        let mut events = Vec::new();
        let timed_out = self.class == DeviceClass::C
            && self.in_flight.as_ref().is_some_and(|f| {
                f.awaiting_ack && now_ms >= f.sent_at_ms.saturating_add(self.config.class_c_ack_timeout_ms)
            });
        if timed_out {
            self.no_ack_or_ack(false, &mut events);
        }
        events
    }

    /// Class C: when to call `check_timeouts` and the scheduler again (an ACK timeout), if anything waits.
    pub fn class_c_wake_at(&self) -> Option<u64> {
        let f = self.in_flight.as_ref().filter(|f| f.awaiting_ack)?;
        (self.class == DeviceClass::C).then(|| f.sent_at_ms.saturating_add(self.config.class_c_ack_timeout_ms))
    }

    fn no_ack_or_ack(&mut self, ack: bool, events: &mut Vec<DownlinkEvent>) {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.awaiting_ack) else {
            return;
        };
        if ack {
            events.push(DownlinkEvent::Acked { id: f.item.id, attempts: f.attempts });
            self.in_flight = None;
        } else if f.attempts >= self.config.max_attempts.max(1) {
            events.push(DownlinkEvent::Failed { id: f.item.id, attempts: f.attempts });
            self.in_flight = None;
        } else {
            f.awaiting_ack = false;
        }
    }

    fn dev_status_due(&self, now_ms: u64) -> bool {
        match (self.config.dev_status_interval_ms, self.dev_status_requested_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(i), Some(t)) => now_ms >= t.saturating_add(i),
        }
    }

    /// What the next frame would carry. `answering_uplink`: the class A window of the last uplink (MAC
    /// answers, ACK, DevStatusReq may ride along); otherwise a class C frame (queue data only).
    fn compose(&self, answering_uplink: bool, now_ms: u64) -> Option<Composition> {
        let (item, retransmission) = match &self.in_flight {
            Some(f) if !f.awaiting_ack => (Some(f.item.clone()), true),
            Some(_) => (None, false),
            None => (self.queue.front().cloned(), false),
        };
        let more_queued = if retransmission || item.is_none() { !self.queue.is_empty() } else { self.queue.len() > 1 };
        let port_len = item.as_ref().map_or(0, |i| 1 + i.payload.len());
        let room = MAX_MAC_PAYLOAD_DR0.saturating_sub(FHDR_LEN + port_len).min(MAX_FOPTS);
        let mut fopts = Vec::new();
        let mut request_dev_status = false;
        if answering_uplink {
            if self.mac_answers.len() <= room {
                fopts.extend_from_slice(&self.mac_answers);
            }
            if self.dev_status_due(now_ms) && fopts.len() < room {
                fopts.push(CID_DEV_STATUS);
                request_dev_status = true;
            }
        }
        let (mut mac_port0, mut mac_sent) = (false, 0);
        if answering_uplink {
            let total: usize = fopts.len() + self.mac_commands.iter().map(Vec::len).sum::<usize>();
            // Alone in the frame and more than FOpts hold: the FPort-0 payload carries them all.
            mac_port0 = item.is_none() && total > MAX_FOPTS;
            let room = if mac_port0 { MAX_DOWNLINK_PAYLOAD } else { room };
            for c in &self.mac_commands {
                if fopts.len() + c.len() > room {
                    break;
                }
                fopts.extend_from_slice(c);
                mac_sent += 1;
            }
        }
        let ack = answering_uplink && self.ack_due;
        let force = answering_uplink && self.force_window;
        if item.is_none() && fopts.is_empty() && !ack && !force {
            return None;
        }
        Some(Composition {
            item,
            retransmission,
            fopts,
            request_dev_status,
            ack,
            f_pending: more_queued,
            mac_port0: mac_port0 && mac_sent > 0,
            mac_sent,
        })
    }

    /// Builds the frame and moves the queue on (consumes an FCntDown).
    fn commit(&mut self, c: Composition, now_ms: u64) -> Result<DownlinkFrame, String> {
        let f_cnt_down = self.f_cnt_down;
        let mut phy = DataPayloadCreator::new();
        let confirmed = c.item.as_ref().is_some_and(|i| i.confirmed);
        let fctrl = (u8::from(c.ack) << 5) | (u8::from(c.f_pending) << 4);
        phy.set_uplink(false)
            .set_confirmed(confirmed)
            .set_dev_addr(&self.dev_addr.0.to_le_bytes())
            .set_fctrl(&FCtrl::new(fctrl, false))
            .set_fcnt(f_cnt_down);
        let raw = RawMac(&c.fopts);
        let one: [&dyn SerializableMacCommand; 1] = [&raw];
        let cmds: &[&dyn SerializableMacCommand] = if c.fopts.is_empty() { &[] } else { &one };
        let payload: &[u8] = match &c.item {
            Some(i) => {
                phy.set_f_port(i.f_port);
                &i.payload
            }
            None => {
                if c.mac_port0 {
                    // FPort 0: the creator puts the commands in the FRMPayload, encrypted with NwkSKey.
                    phy.set_f_port(0);
                }
                &[]
            }
        };
        let nwk = NewSKey::from(*self.nwk_s_key.expose());
        let app = AppSKey::from(*self.app_s_key.expose());
        let bytes = phy.build(payload, cmds, &nwk, &app).map_err(|e| format!("{e:?}"))?.to_vec();

        // From here on the frame exists: the counter is spent.
        self.f_cnt_down = self.f_cnt_down.wrapping_add(1);
        let commit = Commit {
            f_cnt_down,
            taken: None,
            in_flight_before: self.in_flight.clone(),
            dev_status_requested_before: self.dev_status_requested_at,
        };
        let mut commit = commit;
        let mut attempt = 1;
        if let Some(item) = &c.item {
            if c.retransmission {
                if let Some(f) = self.in_flight.as_mut() {
                    f.attempts = f.attempts.saturating_add(1);
                    f.sent_at_ms = now_ms;
                    f.awaiting_ack = true;
                    attempt = f.attempts;
                }
            } else {
                commit.taken = self.queue.pop_front();
                if item.confirmed {
                    self.in_flight =
                        Some(InFlight { item: item.clone(), attempts: 1, sent_at_ms: now_ms, awaiting_ack: true });
                }
            }
        }
        if c.request_dev_status {
            self.dev_status_requested_at = Some(now_ms);
        }
        if c.ack || !c.fopts.is_empty() {
            self.ack_due = false;
            self.mac_answers.clear();
        }
        self.mac_commands.clear();
        self.force_window = false;
        self.last_commit = Some(commit);
        Ok(DownlinkFrame {
            device: self.device.clone(),
            dev_addr: self.dev_addr,
            phy: bytes,
            f_cnt_down,
            item: c.item.map(|i| i.id),
            confirmed,
            attempt,
            ack: c.ack,
            mac_sent: c.mac_sent,
        })
    }

    /// The window of the last uplink is gone without a frame: its MAC answers and ACK are dropped.
    fn window_missed(&mut self) {
        self.mac_answers.clear();
        self.mac_commands.clear();
        self.force_window = false;
        self.ack_due = false;
    }

    /// The gateway did not transmit the frame with this FCntDown (TX_ACK error): the data it carried goes
    /// back to the head of the queue (the attempt does not count). Returns false when the frame is not the
    /// last one built or an uplink came in between.
    pub fn tx_failed(&mut self, f_cnt_down: u32) -> bool {
        match self.last_commit.take() {
            Some(c) if c.f_cnt_down == f_cnt_down => {
                self.in_flight = c.in_flight_before;
                if let Some(item) = c.taken {
                    self.queue.push_front(item);
                }
                self.dev_status_requested_at = c.dev_status_requested_before;
                true
            }
            other => {
                self.last_commit = other;
                false
            }
        }
    }
}

/// Radio parameters and airtime chosen for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPlan {
    pub params: TxParams,
    pub airtime: Duration,
}

/// A built frame and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledDownlink {
    pub frame: DownlinkFrame,
    pub plan: TxPlan,
}

/// Why one receive window could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowRefusal {
    #[error("too late (window at {window_at_ms} ms, now {now_ms} ms + lead {lead_ms} ms)")]
    TooLate { window_at_ms: u64, now_ms: u64, lead_ms: u64 },
    #[error("{0}")]
    DutyCycle(DutyCycleError),
    #[error("frame of {len} bytes exceeds {max} at DR{dr}")]
    TooLarge { len: usize, max: usize, dr: u8 },
    #[error("{0}")]
    Region(RegionError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Class A: neither RX1 nor RX2 can be used.
    #[error("no receive window: RX1 {rx1}; RX2 {rx2}")]
    NoWindow { rx1: WindowRefusal, rx2: WindowRefusal },
    /// Class C: the duty cycle does not allow it now (see `retry_after`).
    #[error("{0}")]
    DutyCycle(DutyCycleError),
    #[error("{0}")]
    Region(RegionError),
    #[error("building the frame failed: {0}")]
    Build(String),
}

impl ScheduleError {
    /// Class C: how long to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ScheduleError::DutyCycle(e) => e.retry_after(),
            _ => None,
        }
    }

    /// True when the refusal was (at least partly) the duty cycle, for the caller's counters.
    pub fn is_duty_cycle(&self) -> bool {
        match self {
            ScheduleError::DutyCycle(_) => true,
            ScheduleError::NoWindow { rx1, rx2 } => {
                matches!(rx1, WindowRefusal::DutyCycle(_)) || matches!(rx2, WindowRefusal::DutyCycle(_))
            }
            _ => false,
        }
    }
}

/// Downlink scheduling for one gateway: EU868 windows, its duty-cycle budget, and the lead time a
/// `PULL_RESP` needs to reach the packet forwarder before the transmit time.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub region: Eu868,
    /// The network's receive-window settings (the same the join server sends).
    pub rx: RxSettings,
    /// Minimum time between now and a class A transmit time (network + forwarder JIT margin).
    pub min_lead_ms: u64,
    duty: DutyCycle,
}

impl Scheduler {
    pub fn new(region: Eu868, rx: RxSettings, min_lead_ms: u64) -> Self {
        Scheduler { region, rx, min_lead_ms, duty: DutyCycle::new() }
    }

    pub fn duty_cycle(&self) -> &DutyCycle {
        &self.duty
    }

    /// RX1 if reachable and within the duty cycle, else RX2; reserves the airtime of the chosen window.
    pub fn choose_window(
        &mut self,
        phy_len: usize,
        radio: &UplinkRadio,
        answering: Answering,
        now_ms: u64,
    ) -> Result<TxPlan, ScheduleError> {
        let rx = self.rx;
        self.choose_window_rx(phy_len, radio, &rx, answering, now_ms)
    }

    fn choose_window_rx(
        &mut self,
        phy_len: usize,
        radio: &UplinkRadio,
        rx: &RxSettings,
        answering: Answering,
        now_ms: u64,
    ) -> Result<TxPlan, ScheduleError> {
        let rx1 = self.try_window(phy_len, self.region.rx1(radio, rx, answering), radio, now_ms);
        let rx1 = match rx1 {
            Ok(plan) => return Ok(plan),
            Err(r) => r,
        };
        match self.try_window(phy_len, self.region.rx2(radio, rx, answering), radio, now_ms) {
            Ok(plan) => Ok(plan),
            Err(rx2) => Err(ScheduleError::NoWindow { rx1, rx2 }),
        }
    }

    fn try_window(
        &mut self,
        len: usize,
        params: Result<TxParams, RegionError>,
        radio: &UplinkRadio,
        now_ms: u64,
    ) -> Result<TxPlan, WindowRefusal> {
        let params = params.map_err(WindowRefusal::Region)?;
        let dr = params.data_rate();
        if len > dr.max_phy_payload() {
            return Err(WindowRefusal::TooLarge { len, max: dr.max_phy_payload(), dr: dr.dr });
        }
        let delay_ms = u64::try_from(params.delay.as_millis()).unwrap_or(u64::MAX);
        let window_at_ms = radio.received_at_ms.saturating_add(delay_ms);
        if now_ms.saturating_add(self.min_lead_ms) > window_at_ms {
            return Err(WindowRefusal::TooLate { window_at_ms, now_ms, lead_ms: self.min_lead_ms });
        }
        let airtime = downlink_airtime(params.sf, params.bw_khz, len);
        self.duty.try_reserve(window_at_ms, params.freq_hz, airtime).map_err(WindowRefusal::DutyCycle)?;
        Ok(TxPlan { params, airtime })
    }

    /// Schedules a JoinAccept (JOIN_ACCEPT_DELAY1/2, region-default RX2).
    pub fn join_accept(
        &mut self,
        accept_len: usize,
        radio: &UplinkRadio,
        now_ms: u64,
    ) -> Result<TxPlan, ScheduleError> {
        self.choose_window(accept_len, radio, Answering::JoinRequest, now_ms)
    }

    /// The class A answer to the uplink `queue.on_uplink` just processed.
    pub fn answer_uplink(
        &mut self,
        queue: &mut DownlinkQueue,
        radio: &UplinkRadio,
        now_ms: u64,
    ) -> Result<Option<ScheduledDownlink>, ScheduleError> {
        let rx = self.rx;
        self.answer_uplink_rx(queue, radio, &rx, now_ms)
    }

    /// [`Scheduler::answer_uplink`] in the receive windows the device accepted (RXParamSetupReq,
    /// RXTimingSetupReq), which may differ from the network's.
    pub fn answer_uplink_rx(
        &mut self,
        queue: &mut DownlinkQueue,
        radio: &UplinkRadio,
        rx: &RxSettings,
        now_ms: u64,
    ) -> Result<Option<ScheduledDownlink>, ScheduleError> {
        let Some(c) = queue.compose(true, now_ms) else {
            queue.window_missed();
            return Ok(None);
        };
        let plan = match self.choose_window_rx(c.phy_len(), radio, rx, Answering::Data, now_ms) {
            Ok(p) => p,
            Err(e) => {
                queue.window_missed();
                return Err(e);
            }
        };
        let frame = queue.commit(c, now_ms).map_err(ScheduleError::Build)?;
        Ok(Some(ScheduledDownlink { frame, plan }))
    }

    /// Class C: the next frame of a class C device, sent immediately on the RX2 parameters.
    pub fn class_c(
        &mut self,
        queue: &mut DownlinkQueue,
        now_ms: u64,
    ) -> Result<Option<ScheduledDownlink>, ScheduleError> {
        let rx = self.rx;
        self.class_c_rx(queue, &rx, now_ms)
    }

    /// [`Scheduler::class_c`] on the RX2 settings the device accepted.
    pub fn class_c_rx(
        &mut self,
        queue: &mut DownlinkQueue,
        rx: &RxSettings,
        now_ms: u64,
    ) -> Result<Option<ScheduledDownlink>, ScheduleError> {
        if queue.class != DeviceClass::C {
            return Ok(None);
        }
        let Some(c) = queue.compose(false, now_ms) else {
            return Ok(None);
        };
        let params = self.region.class_c(rx).map_err(ScheduleError::Region)?;
        let plan = self.transmit_now(params, c.phy_len(), now_ms)?;
        let frame = queue.commit(c, now_ms).map_err(ScheduleError::Build)?;
        Ok(Some(ScheduledDownlink { frame, plan }))
    }

    /// A frame of `len` bytes sent at once with `params` (class C, multicast): its size checked
    /// against the data rate, its air time reserved in the duty cycle.
    pub fn transmit_now(&mut self, params: TxParams, len: usize, now_ms: u64) -> Result<TxPlan, ScheduleError> {
        let dr: DataRate = params.data_rate();
        if len > dr.max_phy_payload() {
            return Err(ScheduleError::Build(format!("frame of {len} bytes exceeds DR{}", dr.dr)));
        }
        let airtime = downlink_airtime(params.sf, params.bw_khz, len);
        self.duty.try_reserve(now_ms, params.freq_hz, airtime).map_err(ScheduleError::DutyCycle)?;
        Ok(TxPlan { params, airtime })
    }
}
