//! The two USB sticks that receive wireless M-Bus (EN 13757-4) for the gateway, as pure byte codecs:
//! the IMST iM871A (its HCI framing, `imst.rs`) and the Amber/Würth AMB8465 (`amber.rs`).
//!
//! Each stick has an init sequence ([`InitStep`]s: the request bytes and the reply that confirms it)
//! and an incremental decoder ([`StickDecoder`]): bytes in as they arrive from the serial port, events
//! out — a received telegram (L-field first, as `crate::wmbus::decode_telegram` takes it) with its RSSI,
//! a reply to a command (with its status byte when it has one), or bytes skipped to resynchronise.
//! No I/O and no clock: the shell (`src/io/wmbus.rs`) owns the port and the timeouts. Any input gives
//! events, never a panic (fuzzed by `tests::arbitrary_bytes_never_panic`).

pub mod amber;
pub mod imst;

#[cfg(test)]
mod tests;

/// Which stick is on the port (`stick = "im871a" | "amb8465"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StickKind {
    Im871a,
    Amb8465,
}

impl StickKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StickKind::Im871a => "iM871A",
            StickKind::Amb8465 => "AMB8465",
        }
    }

    /// The stick's factory UART speed.
    pub fn default_baud(self) -> u32 {
        match self {
            StickKind::Im871a => imst::DEFAULT_BAUD,
            StickKind::Amb8465 => amber::DEFAULT_BAUD,
        }
    }

    /// The commands that put the stick into `mode` with RSSI attached to every telegram.
    pub fn init_steps(self, mode: LinkMode) -> Vec<InitStep> {
        match self {
            StickKind::Im871a => imst::init_steps(mode),
            StickKind::Amb8465 => amber::init_steps(mode),
        }
    }

    /// A command that only asks "are you there" (sent when the stick has been quiet for long).
    pub fn probe_step(self) -> InitStep {
        match self {
            StickKind::Im871a => imst::ping(),
            StickKind::Amb8465 => amber::serial_number(),
        }
    }

    pub fn decoder(self) -> StickDecoder {
        match self {
            StickKind::Im871a => StickDecoder::Imst(imst::Decoder::default()),
            StickKind::Amb8465 => StickDecoder::Amber(amber::Decoder::default()),
        }
    }
}

/// The wM-Bus link modes the gateway listens in (EN 13757-4): T1 and C1 are what OMS meters send in
/// Germany; S1 is the older stationary mode (`mode = "t1" | "c1" | "s1"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    #[default]
    T1,
    C1,
    S1,
}

impl LinkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::T1 => "t1",
            LinkMode::C1 => "c1",
            LinkMode::S1 => "s1",
        }
    }
}

/// One command of an init sequence: the bytes to send and the reply that confirms it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitStep {
    /// For logs and errors: "ping", "set link mode t1", ...
    pub what: String,
    pub request: Vec<u8>,
    /// The [`StickEvent::Reply`] id that answers it.
    pub reply: u16,
}

/// What the decoder found in the bytes pushed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickEvent {
    /// A telegram heard on the air: L-field first, block CRCs removed as the stick delivers it.
    Telegram { frame: Vec<u8>, rssi_dbm: Option<i32> },
    /// A reply to a command; `status` is the stick's result byte where the reply carries one (0 = OK).
    Reply { id: u16, status: Option<u8> },
    /// Bytes skipped because they were not a frame (noise, a torn frame after replug, a bad checksum).
    Skipped { bytes: usize, why: &'static str },
}

/// Either stick's decoder, so the shell holds one type.
#[derive(Debug)]
pub enum StickDecoder {
    Imst(imst::Decoder),
    Amber(amber::Decoder),
}

impl StickDecoder {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StickEvent> {
        match self {
            StickDecoder::Imst(d) => d.push(bytes),
            StickDecoder::Amber(d) => d.push(bytes),
        }
    }
}

/// A reply's status byte, judged: `None` (no status) and 0 are success.
pub fn reply_ok(status: Option<u8>) -> bool {
    matches!(status, None | Some(0))
}

/// What a stick's frame parser makes of the bytes at the start of its buffer.
enum Parse {
    /// More bytes are needed.
    Partial,
    /// Not a frame here: skip one byte and look again.
    Bad(&'static str),
    /// A whole frame of `len` bytes.
    Frame { len: usize, event: StickEvent },
}

/// The resynchronising loop both decoders share: frames become events, bytes that are no frame are
/// counted and reported as one `Skipped` before the next frame (and at the end of the input).
#[derive(Default)]
struct Resync {
    events: Vec<StickEvent>,
    skipped: usize,
    why: &'static str,
}

impl Resync {
    fn skip(&mut self, n: usize, why: &'static str) {
        if n > 0 {
            self.skipped += n;
            self.why = why;
        }
    }

    /// Applies one parse of the front of `buf`; false when more bytes are needed.
    fn step(&mut self, buf: &mut Vec<u8>, parse: Parse) -> bool {
        match parse {
            Parse::Partial => false,
            Parse::Bad(reason) => {
                self.skip(1, reason);
                buf.drain(..1.min(buf.len()));
                true
            }
            Parse::Frame { len, event } => {
                self.report_skipped();
                self.events.push(event);
                buf.drain(..len.min(buf.len()));
                true
            }
        }
    }

    fn report_skipped(&mut self) {
        if self.skipped > 0 {
            self.events.push(StickEvent::Skipped { bytes: self.skipped, why: self.why });
            self.skipped = 0;
        }
    }

    fn finish(mut self) -> Vec<StickEvent> {
        self.report_skipped();
        self.events
    }
}
