//! The district step: the network server and the control loops as one pure state machine, the
//! decisions of the pipeline task. The pipeline (the shell) hands it what arrived (frames and meter
//! samples, ticks, downlink requests, failed transmissions, control-loop commands) together with the
//! time, and carries out what comes back as [`Effects`]: it allocates a seq for each message and
//! journals it with the state to persist in one batch, flushes, and only then sends the downlinks; it
//! switches the relays, adds the counts to its counters and logs the notes.
//!
//! Decided here: which frames become readings and what each outcome counts; what the loops derive
//! from the readings and the time (aggregates, events, lamp and load commands) and in which order it
//! is journaled (readings first, then what the loops derived from them); where an actuator command goes
//! (a LoRaWAN downlink into the network server's queues, or a relay of the gateway).
//!
//! Remote device changes are applied here too ([`District::upsert_device`],
//! [`District::remove_device`]); the all-or-nothing rule around them (undo when the journal write
//! fails) is the shell's, which knows whether it was written.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::commands::{CommandName, RefusalCode};
use crate::decode::Decoder;
use crate::ingest::{MeterSample, RadioFrame};
use crate::loops::{Actuate, LoopOutput, Loops, LoopsState, Publish};
use crate::lorawan::downlink::DownlinkId;
use crate::lorawan::UplinkError;
use crate::netserver::{DeviceInfo, NetworkServer, Note, OutDownlink, Outcome, Output, Persist, Provisioning};
use crate::reading::Reading;
use crate::topic::Topic;

/// Something a source received, in arrival order.
#[derive(Debug, Clone)]
pub enum Received {
    Frame(RadioFrame),
    Sample(MeterSample),
}

/// An input to the district step.
#[derive(Debug)]
pub enum Input {
    /// Frames and meter samples (one group commit's worth, in arrival order).
    Ingest(Vec<Received>),
    /// Time passes: class C queues and downlink timeouts, closed windows, silent sensors, schedules,
    /// demand-response timers.
    Tick,
    /// Queue a downlink for a device (commands, tests); answered with [`Answer::Enqueued`].
    Enqueue { device: String, f_port: u8, payload: Vec<u8>, confirmed: bool },
    /// A gateway could not send a downlink.
    TxFailed { device: String, f_cnt_down: u32 },
    /// A control-loop command (`lighting.*`, `dr.*`); answered with [`Answer::Command`].
    Command { cmd: CommandName, args: Value },
    /// The control loops' state saved before a restart; windows that closed meanwhile come out.
    RestoreLoops(LoopsState),
    /// A settled contact of the §14a control box (`contact` indexes `demand_response.control_box.pins`).
    ControlBox { contact: usize, closed: bool },
    /// The OpenADR VTN's complete set of events, mapped; answered with [`Answer::VtnEvents`].
    VtnEvents(Vec<crate::control::demand::DrEvent>),
}

/// A message for the broker, in journal order. It has no seq yet: the shell allocates one when it
/// journals the message and hands it to [`Message::to_json`].
#[derive(Debug, Clone)]
pub enum Message {
    Reading(Box<Reading>),
    /// What the control loops publish: aggregates, events, lighting and demand-response messages.
    Publish(Publish),
}

impl Message {
    /// Where it goes (and whether it is retained, replayable, which kind for the drop policy).
    pub fn topic(&self) -> Topic {
        match self {
            Message::Reading(r) => r.topic(),
            Message::Publish(Publish::Aggregate(w)) => w.topic(),
            Message::Publish(Publish::Event(e)) => e.topic(),
            Message::Publish(Publish::Json { topic, .. }) => topic.clone(),
        }
    }

    /// The payload the city receives, journaled under `seq` (a JSON message of the loops gets a
    /// `seq` field unless it has one).
    pub fn to_json(&self, seq: u64, gateway_id: &str) -> Vec<u8> {
        let value = match self {
            Message::Reading(r) => return r.to_json(seq),
            Message::Publish(Publish::Aggregate(w)) => w.to_json(seq, gateway_id),
            Message::Publish(Publish::Event(e)) => e.to_json(seq),
            Message::Publish(Publish::Json { payload, .. }) => {
                let mut payload = payload.clone();
                if let Some(o) = payload.as_object_mut() {
                    o.entry("seq").or_insert(Value::from(seq));
                }
                payload
            }
        };
        serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
    }

    pub fn is_reading(&self) -> bool {
        matches!(self, Message::Reading(_))
    }
}

/// Switch one relay output of the gateway (a demand-response load wired to its GPIO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySwitch {
    /// The load the relay drives (for the log).
    pub load: String,
    /// BCM pin.
    pub pin: u32,
    pub on: bool,
}

/// How much to add to each of the shell's counters (same names as the shell's `Counters`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub meter_samples: u64,
    pub frames_ok: u64,
    pub frames_mac_only: u64,
    pub frames_duplicate: u64,
    pub frames_bad_mic: u64,
    pub frames_replay: u64,
    pub frames_unknown_dev_addr: u64,
    pub frames_not_data: u64,
    pub frames_malformed: u64,
    pub joins: u64,
    pub joins_refused: u64,
    pub downlinks_failed: u64,
    pub downlinks_deferred: u64,
    pub downlinks_duty_cycle: u64,
    pub decode_errors: u64,
    /// Multicast frames built (they leave once their counter is on disk) and their air time.
    pub multicast_frames: u64,
    pub multicast_airtime_us: u64,
    /// The time (ms since 1970) of the last accepted uplink, when one was accepted (a gauge).
    pub last_uplink_ms: Option<u64>,
}

impl Counts {
    fn outcome(&mut self, outcome: &Outcome, now_ms: u64) {
        match outcome {
            Outcome::Reading(_) => {
                self.frames_ok += 1;
                self.last_uplink_ms = Some(now_ms);
            }
            Outcome::MacOnly { .. } => {
                self.frames_ok += 1;
                self.frames_mac_only += 1;
            }
            Outcome::Joined { .. } => self.joins += 1,
            Outcome::JoinRejected(e) => {
                self.joins_refused += 1;
                tracing::info!(error = %e, "join request refused");
            }
            Outcome::Duplicate => self.frames_duplicate += 1,
            Outcome::Rejected(e) => {
                match e {
                    UplinkError::BadMic { .. } => self.frames_bad_mic += 1,
                    UplinkError::Replay { .. } | UplinkError::FCntGap { .. } => self.frames_replay += 1,
                    UplinkError::UnknownDevAddr(_) => self.frames_unknown_dev_addr += 1,
                    UplinkError::NotUplinkData { .. } => self.frames_not_data += 1,
                    _ => self.frames_malformed += 1,
                }
                // UplinkError's messages carry addresses and counters, never keys or payload bytes.
                tracing::info!(error = %e, "frame refused");
            }
        }
    }

    fn note(&mut self, n: &Note) {
        match n {
            Note::DownlinkFailed { .. } => self.downlinks_failed += 1,
            Note::DownlinkDeferred { duty_cycle, .. } => {
                self.downlinks_deferred += 1;
                if *duty_cycle {
                    self.downlinks_duty_cycle += 1;
                }
            }
            Note::DecodeError { .. } => self.decode_errors += 1,
            Note::MulticastSent { airtime_us, .. } => {
                self.multicast_frames += 1;
                self.multicast_airtime_us += airtime_us;
            }
            Note::Joined { .. }
            | Note::JoinRefused { .. }
            | Note::DownlinkAcked { .. }
            | Note::DownlinksDropped { .. }
            | Note::Mac { .. } => {}
        }
    }
}

/// The answer to an input that asks something.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// To [`Input::Enqueue`]: the downlink's id, or why it was not queued.
    Enqueued(Result<DownlinkId, String>),
    /// To [`Input::Command`]: the command's result, or its refusal.
    Command(Result<Value, (RefusalCode, String)>),
    /// To [`Input::VtnEvents`]: each event's answer.
    VtnEvents(crate::control::demand::VtnAcks),
}

/// What one input produced, for the shell to carry out. Ordering rule: `records` and `persist` go to
/// the journal in one batch and are flushed *before* the `downlinks` leave (a crash can never reuse an
/// FCntDown or forget a DevNonce); `relays` are switched at once (local control never waits).
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to journal, in this order, each under a new seq.
    pub records: Vec<Message>,
    /// Network-server state to write in the same batch.
    pub persist: Vec<Persist>,
    /// Downlinks to send once the batch is on disk.
    pub downlinks: Vec<OutDownlink>,
    /// Relays to switch.
    pub relays: Vec<RelaySwitch>,
    /// Worth a log line (already counted in `counts`).
    pub notes: Vec<Note>,
    pub counts: Counts,
    /// The loops' state changed in a way that must survive a crash (an event fired): save it now.
    pub save_loops: bool,
    /// How many of `records` are readings.
    pub readings: u64,
    /// Every reading made (published or not), for the local status page.
    pub seen: Vec<Reading>,
    pub answer: Option<Answer>,
    /// Reports of the VTN's events for the OpenADR VEN (sent after the batch is on disk).
    pub vtn_reports: Vec<crate::openadr::IntervalReport>,
}

impl Effects {
    /// Nothing to journal, send, switch or log.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.persist.is_empty()
            && self.downlinks.is_empty()
            && self.relays.is_empty()
            && self.notes.is_empty()
            && self.vtn_reports.is_empty()
    }

    /// Downlinks dropped because the keys they were queued under are gone (a device change).
    pub fn downlinks_dropped(&self) -> usize {
        self.notes.iter().map(|n| if let Note::DownlinksDropped { count, .. } = n { *count } else { 0 }).sum()
    }

    /// Takes in a network-server output (its notes counted).
    fn absorb(&mut self, out: Output) {
        self.persist.extend(out.persist);
        self.downlinks.extend(out.downlinks);
        for n in out.notes {
            self.counts.note(&n);
            self.notes.push(n);
        }
    }

    fn from_output(out: Output) -> Effects {
        let mut fx = Effects::default();
        fx.absorb(out);
        fx
    }
}

/// The network server and the control loops of one district gateway.
pub struct District {
    ns: NetworkServer,
    loops: Loops,
    /// Whether readings are journaled for the broker (`publish.readings`); the loops see them anyway.
    publish_readings: bool,
}

fn millis(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp_millis()).unwrap_or(0)
}

impl District {
    /// The gateway's id is the loops' ([`Loops::gateway_id`]).
    pub fn new(ns: NetworkServer, loops: Loops, publish_readings: bool) -> District {
        District { ns, loops, publish_readings }
    }

    pub fn gateway_id(&self) -> &str {
        self.loops.gateway_id()
    }

    pub fn network_server(&self) -> &NetworkServer {
        &self.ns
    }

    /// One step: everything `input` causes at `now`.
    pub fn on_input(&mut self, now: DateTime<Utc>, input: Input) -> Effects {
        let mut fx = Effects::default();
        match input {
            Input::Ingest(received) => self.ingest(now, received, &mut fx),
            Input::Tick => {
                fx.absorb(self.ns.tick(millis(now)));
                let lo = self.loops.tick(now);
                self.loop_output(now, lo, &mut fx);
            }
            Input::Enqueue { device, f_port, payload, confirmed } => {
                match self.ns.enqueue(millis(now), &device, f_port, &payload, confirmed) {
                    Ok((id, out)) => {
                        fx.absorb(out);
                        fx.answer = Some(Answer::Enqueued(Ok(id)));
                    }
                    Err(e) => fx.answer = Some(Answer::Enqueued(Err(e.to_string()))),
                }
            }
            Input::TxFailed { device, f_cnt_down } => self.ns.tx_failed(&device, f_cnt_down),
            Input::Command { cmd, args } => {
                let (result, lo) = self.loops.command(now, cmd, &args);
                fx.answer = Some(Answer::Command(result));
                self.loop_output(now, lo, &mut fx);
            }
            Input::RestoreLoops(state) => {
                let lo = self.loops.restore(state, now);
                self.loop_output(now, lo, &mut fx);
            }
            Input::ControlBox { contact, closed } => {
                let lo = self.loops.control_box(now, contact, closed);
                self.loop_output(now, lo, &mut fx);
            }
            Input::VtnEvents(events) => {
                let (acks, lo) = self.loops.vtn_events(now, events);
                fx.answer = Some(Answer::VtnEvents(acks));
                self.loop_output(now, lo, &mut fx);
            }
        }
        fx
    }

    /// Frames through the network server, meter samples as readings; every reading through the
    /// loops; the readings first, then what the loops derived from them.
    fn ingest(&mut self, now: DateTime<Utc>, received: Vec<Received>, fx: &mut Effects) {
        let now_ms = millis(now);
        let mut lo = LoopOutput::default();
        for r in received {
            let reading = match r {
                Received::Sample(s) => {
                    fx.counts.meter_samples += 1;
                    Reading::from_sample(self.loops.gateway_id(), s)
                }
                Received::Frame(frame) => {
                    let (outcome, out) = self.ns.handle_frame(now, now_ms, &frame);
                    fx.counts.outcome(&outcome, now_ms);
                    fx.absorb(out);
                    match outcome {
                        Outcome::Reading(reading) => *reading,
                        _ => continue,
                    }
                }
            };
            self.reading(now, reading, &mut lo, fx);
        }
        self.loop_output(now, lo, fx);
    }

    fn reading(&mut self, now: DateTime<Utc>, mut reading: Reading, lo: &mut LoopOutput, fx: &mut Effects) {
        lo.merge(self.loops.on_reading(now, &mut reading));
        if self.publish_readings {
            fx.seen.push(reading.clone());
            fx.records.push(Message::Reading(Box::new(reading)));
            fx.readings += 1;
        } else {
            fx.seen.push(reading);
        }
    }

    /// What the loops want published is journaled; their actuator commands become downlinks in the
    /// network server's queues (class C ones may leave at once) or relay switches.
    fn loop_output(&mut self, now: DateTime<Utc>, lo: LoopOutput, fx: &mut Effects) {
        for p in lo.publish {
            if let Publish::Event(e) = &p {
                tracing::info!(device = %e.device, event = e.kind, "event");
            }
            fx.records.push(Message::Publish(p));
        }
        for a in lo.actuate {
            match a {
                Actuate::Downlink { device, f_port, payload } => {
                    match self.ns.enqueue(millis(now), &device, f_port, &payload, false) {
                        Ok((_, out)) => fx.absorb(out),
                        Err(e) => tracing::warn!(%device, error = %e, "control-loop downlink not queued"),
                    }
                }
                Actuate::Multicast { group, f_port, payload } => {
                    match self.ns.multicast(millis(now), &group, f_port, &payload) {
                        Ok(out) => fx.absorb(out),
                        Err(e) => tracing::warn!(%group, error = %e, "multicast frame not queued"),
                    }
                }
                Actuate::Relays { load, pins, on, .. } => {
                    for (pin, on) in pins.into_iter().zip(on) {
                        fx.relays.push(RelaySwitch { load: load.clone(), pin, on });
                    }
                }
            }
        }
        fx.save_loops |= lo.save_now;
        fx.vtn_reports.extend(lo.vtn_reports);
    }

    /// The control loops' state and the network server's part (`lorawan`: counts, class C devices that
    /// wait for a route and why), for `status` and the status page.
    pub fn status(&self, now: DateTime<Utc>) -> Value {
        let waiting: Vec<Value> = self
            .ns
            .waiting_for_route()
            .into_iter()
            .map(|(device, why)| json!({"device": device, "reason": why.reason()}))
            .collect();
        let lorawan = json!({"devices": self.ns.device_count(), "sessions": self.ns.session_count(),
            "queued_downlinks": self.ns.queued_downlinks(), "waiting_for_route": waiting,
            "mac": self.ns.mac_report(),
            "multicast": self.ns.multicast_groups().status()});
        let mut status = self.loops.status(now);
        if let Some(o) = status.as_object_mut() {
            o.insert("lorawan".into(), lorawan);
        }
        status
    }

    /// What the loops must remember across a restart.
    pub fn loops_snapshot(&self, now: DateTime<Utc>) -> LoopsState {
        self.loops.snapshot(now)
    }

    /// The device as the network server has it now (to put it back if a change cannot be written).
    pub fn device_config(&self, name: &str) -> Option<(DeviceInfo, Provisioning)> {
        self.ns.device_config(name)
    }

    /// Adds or changes a device (`decoder`: its profile's codec, when it brings one). The state the
    /// change causes comes out in `persist`; queued downlinks it drops in `notes`.
    pub fn upsert_device(
        &mut self,
        name: &str,
        info: DeviceInfo,
        prov: Provisioning,
        decoder: Option<Box<dyn Decoder>>,
    ) -> Effects {
        if let Some(d) = decoder {
            self.ns.set_decoder(&info.profile, d);
        }
        Effects::from_output(self.ns.upsert_device(name, info, prov))
    }

    /// Removes a device (its session records are kept: the same keys resume their counters).
    pub fn remove_device(&mut self, name: &str) -> Effects {
        Effects::from_output(self.ns.remove_device(name))
    }
}

#[cfg(test)]
#[path = "district_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "district_multicast_tests.rs"]
mod multicast_tests;
