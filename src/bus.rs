//! The messages the daemon's tasks exchange: the sources hand frames and meter samples to the
//! pipeline ([`IngestRequest`]) and report failed transmissions ([`TxFailed`]); the pipeline hands
//! downlinks to the sources ([`SourceDownlink`]); the executor (and the supervisor) ask the pipeline
//! for what only it may do ([`Control`]); the uplink and the executor exchange commands and the
//! answers to refused ones ([`CommandLink`], [`RefusalAnswer`]). Plain data and channels' ends: this
//! module imports nothing from `io`, `ops` or `runtime`, so each of them can use it without depending
//! on the others.

use tokio::sync::{mpsc, oneshot};

use district_core::commands::{CommandName, RefusalCode};

use crate::ingest::{MeterSample, RadioFrame};
use crate::keys::Eui64;
use crate::lorawan::region::TxParams;

/// Frames from one source datagram (or meter samples); `done` says whether they are on disk.
pub struct IngestRequest {
    pub frames: Vec<RadioFrame>,
    pub meter: Vec<MeterSample>,
    pub done: oneshot::Sender<bool>,
}

/// A gateway could not send a downlink (a TX_ACK error, or no gateway to send it through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFailed {
    pub device: String,
    pub f_cnt_down: u32,
}

/// A downlink for a source to send through one of its gateways.
#[derive(Debug, Clone)]
pub struct SourceDownlink {
    pub gateway: Eui64,
    pub device: String,
    pub f_cnt_down: Option<u32>,
    /// How to transmit it; each source converts it at its own edge (gwmp: `TxPk`, SX127x: `TxRequest`).
    pub params: TxParams,
    pub phy: Vec<u8>,
}

/// The `cmd/res` answer to a command the verifier refused (malformed, bad signature, unknown key,
/// expired, wrong gateway, replayed, ...: refused before it was accepted). The executor hands it to
/// the uplink, which publishes it at once with QoS 1 and keeps it nowhere: never journaled, dropped
/// (and counted as unanswered) when the broker is not connected or the queue is full. Such refusals
/// can come from anyone who can publish on `cmd/req`, so they must cost nothing on flash. Answers of
/// accepted commands (results, execution failures) go through the journal ([`Control::Journal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalAnswer {
    pub payload: Vec<u8>,
}

/// Room for refusal answers between the executor and the uplink: more than the executor's burst.
pub const REFUSAL_ANSWERS_QUEUE: usize = 32;

/// The uplink's ends of the command channels: envelopes from `cmd/req` to the executor, and the
/// answers to refused ones back.
pub struct CommandLink {
    pub requests: mpsc::Sender<Vec<u8>>,
    pub answers: mpsc::Receiver<RefusalAnswer>,
}

/// Requests to the pipeline (the network server and the control loops) from the rest of the daemon.
pub enum Control {
    /// Queue a downlink for a device (control loops, commands).
    Enqueue {
        device: String,
        f_port: u8,
        payload: Vec<u8>,
        confirmed: bool,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Journal one message for the broker (e.g. a `cmd/res`); `reply` says whether it is on disk.
    Journal {
        topic: crate::topic::Topic,
        payload: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    /// `device.upsert`: applied live and persisted together with the session state it changes;
    /// `Err` when it could not be persisted (then nothing changed). `decoder`: its `js:` codec, already
    /// loaded and test-run by the executor.
    UpsertDevice {
        device: Box<crate::config::DeviceConfig>,
        decoder: Option<Box<dyn crate::decode::Decoder>>,
        reply: oneshot::Sender<Result<DeviceChange, String>>,
    },
    RemoveDevice {
        device: String,
        reply: oneshot::Sender<Result<DeviceChange, String>>,
    },
    /// The OpenADR VTN's complete set of events (the VEN's poll), mapped; `reply`: each event's answer.
    VtnEvents {
        events: Vec<crate::control::demand::DrEvent>,
        reply: oneshot::Sender<crate::control::demand::VtnAcks>,
    },
    /// The control loops' state, for `status`.
    LoopStatus {
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// The power-fail input settled on a new level: `lost` = mains power is gone (the pipeline
    /// fsyncs at once and refuses new readings until it is back) or back (`false`).
    PowerFail {
        lost: bool,
    },
    /// A contact of the §14a control box settled (`contact` indexes `demand_response.control_box.pins`).
    ControlBox {
        contact: usize,
        closed: bool,
    },
    /// A control-loop command (`lighting.*`, `dr.*`).
    Command {
        cmd: CommandName,
        args: serde_json::Value,
        reply: oneshot::Sender<Result<serde_json::Value, (RefusalCode, String)>>,
    },
}

/// What a remote device change did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceChange {
    /// Downlinks queued under keys the change retired (dropped, never sent).
    pub downlinks_dropped: usize,
}

/// A device kept out of service: a remote change that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub device: String,
    pub reason: String,
}
