//! SML transport protocol v1 framing (BSI TR-03109-1 / SML 1.04 §8): a pure, streaming byte framer.
//!
//! ```text
//! 1b1b1b1b 01010101 | payload (with every 1b1b1b1b doubled) + 0..3 zero padding bytes | 1b1b1b1b 1a PP C1 C2
//! ```
//! `PP` is the number of padding bytes, `C1 C2` the CRC-16/X-25 over everything from the first byte of the
//! start sequence up to and including `PP`.
//!
//! **CRC byte order.** All 37 real dumps in `libsml-testing` (15 meter types: DZG, EMH, EasyMeter, Holley,
//! Iskra, Itron, eBZ, Dr. Neuhaus) carry the transport CRC **little-endian** (`C1` = low byte). No frame in
//! any dump verifies big-endian only. The frames that fail (EasyMeter 3, DZG DWSB20 3-byte 2) fail both byte
//! orders and are the same frames sml-rs rejects, so there is no byte-order fallback: a fallback would only
//! double the chance of accepting a corrupted frame. The Itron CRC issue the vectors' README mentions
//! (libsml issue 83) does not show in these dumps: all 8 Itron frames verify, transport and message CRCs.
//!
//! **Escape detection** is byte-wise, like sml-rs: the first four consecutive `1b` bytes after a data byte
//! form an escape. (Scanning in aligned 4-byte steps instead loses good frames on real dumps: 2 of 4 on
//! the EasyMeter Q3A, 9 of 14 on the DZG DWSB20 3-byte dump.) An unknown escape payload at a position that is not 4-byte aligned (relative to
//! the frame start) is taken as data, one byte at a time; this covers payloads that end in 1–3 `1b` bytes
//! right before the (aligned) end sequence. An unknown escape payload at an aligned position invalidates
//! the frame.
//!
//! **Alignment.** The standard requires the end sequence to be 4-byte aligned. A frame whose end sequence is
//! misaligned but whose CRC verifies is accepted (and counted in [`FramerStats::misaligned`]): the CRC
//! already proves the bytes are what the meter sent, and hand-made test frames from sml_parser are
//! misaligned. sml-rs rejects such frames; on the real dumps this makes no difference (every misaligned
//! real frame also fails its CRC).
//!
//! **Resynchronisation.** Bytes outside frames are skipped and reported once per gap as
//! [`FrameEvent::Garbage`] (when the next start sequence is found, or on [`SmlFramer::finish`]). A start
//! sequence inside a frame aborts the frame ([`FrameInvalid::Interrupted`]) and begins a new one.
//!
//! **Memory.** A frame whose raw size exceeds `max_frame` (default 64 KiB) is dropped
//! ([`FrameEvent::Oversize`]); input is consumed in pieces of at most `max_frame` bytes, so the framer
//! holds at most about `2 * max_frame` raw plus `max_frame` payload bytes (capacity below `4 * max_frame`),
//! whatever the caller pushes.

use super::crc::crc16_x25;

const START: [u8; 8] = [0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x01, 0x01, 0x01];
const ESC: [u8; 4] = [0x1b; 4];
const RESTART: [u8; 4] = [0x01; 4];

/// Default bound on one frame's raw size.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Why a frame was dropped without a CRC check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameInvalid {
    /// An escape sequence `1b1b1b1b` followed by an unknown 4-byte payload.
    UnknownEscape([u8; 4]),
    /// A new start sequence arrived before the frame's end sequence.
    Interrupted,
    /// The padding count was above 3, or the padding bytes were not zero.
    BadPadding(u8),
    /// The input ended (see [`SmlFramer::finish`]) in the middle of a frame.
    Truncated,
}

/// What [`SmlFramer::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete frame with a valid CRC: the unescaped SML payload, padding removed. Feed it to
    /// [`crate::meter::parse_frame`] / [`crate::meter::values`].
    Frame(Vec<u8>),
    /// A complete frame whose CRC did not verify. `sent` is the CRC in the frame (read little-endian),
    /// `computed` ours; `len` the frame's raw size.
    CrcError { sent: u16, computed: u16, len: usize },
    /// Bytes skipped outside of any frame while looking for a start sequence.
    Garbage { skipped: usize },
    /// A frame grew beyond the size bound; its `dropped` raw bytes were discarded.
    Oversize { dropped: usize },
    /// A frame was dropped for a reason other than its CRC; `skipped` raw bytes were discarded.
    Invalid { skipped: usize, reason: FrameInvalid },
}

/// Running counters, e.g. for Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    pub frames: u64,
    pub crc_errors: u64,
    pub invalid: u64,
    pub oversize: u64,
    pub garbage_bytes: u64,
    /// Frames accepted although their end sequence was not 4-byte aligned.
    pub misaligned: u64,
}

/// Streaming SML transport v1 framer: push bytes as they arrive, get events. No I/O, no clock.
#[derive(Debug)]
pub struct SmlFramer {
    /// Unconsumed raw bytes. While in a frame, `buf[0..8]` is its start sequence.
    buf: Vec<u8>,
    in_frame: bool,
    /// Raw scan position inside the current frame (an offset into `buf`).
    pos: usize,
    /// Unescaped payload of the current frame so far.
    payload: Vec<u8>,
    pending_garbage: usize,
    max_frame: usize,
    stats: FramerStats,
}

impl Default for SmlFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl SmlFramer {
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A framer that drops frames whose raw size exceeds `max_frame` bytes (at least 64).
    pub fn with_max_frame(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            in_frame: false,
            pos: 0,
            payload: Vec::new(),
            pending_garbage: 0,
            max_frame: max_frame.max(64),
            stats: FramerStats::default(),
        }
    }

    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Bytes currently held (buffer capacities), for checking that memory stays bounded.
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.payload.capacity()
    }

    /// Feed bytes; returns every event they complete, in order. Works the same whether the input comes
    /// whole, byte by byte, or in arbitrary chunks.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<FrameEvent> {
        let mut events = Vec::new();
        for chunk in bytes.chunks(self.max_frame) {
            // reserve_exact: capacity never exceeds the largest length actually needed
            self.buf.reserve_exact(chunk.len());
            self.buf.extend_from_slice(chunk);
            self.process(&mut events);
        }
        events
    }

    /// End of input (e.g. the serial port closed): reports a partial frame and pending garbage, and
    /// resets the framer.
    pub fn finish(&mut self) -> Vec<FrameEvent> {
        let mut events = Vec::new();
        if self.in_frame {
            self.flush_garbage(&mut events);
            let skipped = self.buf.len();
            self.stats.invalid += 1;
            events.push(FrameEvent::Invalid { skipped, reason: FrameInvalid::Truncated });
        } else {
            self.pending_garbage = self.pending_garbage.saturating_add(self.buf.len());
            self.flush_garbage(&mut events);
        }
        self.buf.clear();
        self.payload.clear();
        self.in_frame = false;
        self.pos = 0;
        events
    }

    fn flush_garbage(&mut self, events: &mut Vec<FrameEvent>) {
        if self.pending_garbage > 0 {
            self.stats.garbage_bytes += self.pending_garbage as u64;
            events.push(FrameEvent::Garbage { skipped: self.pending_garbage });
            self.pending_garbage = 0;
        }
    }

    /// Drop `n` raw bytes from the front of the buffer and go back to hunting for a start sequence.
    fn leave_frame(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.payload.clear();
        self.in_frame = false;
        self.pos = 0;
    }

    fn begin_frame(&mut self) {
        self.in_frame = true;
        self.pos = START.len();
        self.payload.clear();
    }

    fn process(&mut self, events: &mut Vec<FrameEvent>) {
        loop {
            if !self.in_frame && !self.hunt(events) {
                return;
            }
            if !self.scan(events) {
                return;
            }
        }
    }

    /// Look for a start sequence. Returns true when one is at `buf[0]`.
    fn hunt(&mut self, events: &mut Vec<FrameEvent>) -> bool {
        if let Some(i) = find(&self.buf, &START) {
            self.pending_garbage = self.pending_garbage.saturating_add(i);
            self.buf.drain(..i);
            self.flush_garbage(events);
            self.begin_frame();
            true
        } else {
            // Keep only a suffix that may still become a start sequence.
            let keep = longest_suffix_prefix(&self.buf, &START);
            let drop = self.buf.len() - keep;
            self.pending_garbage = self.pending_garbage.saturating_add(drop);
            self.buf.drain(..drop);
            false
        }
    }

    /// Advance through the current frame. Returns true when the frame ended (state changed) and
    /// processing should continue, false when more input is needed.
    fn scan(&mut self, events: &mut Vec<FrameEvent>) -> bool {
        loop {
            if self.pos > self.max_frame {
                let dropped = self.pos;
                self.stats.oversize += 1;
                events.push(FrameEvent::Oversize { dropped });
                self.leave_frame(dropped);
                return true;
            }
            let Some(rest) = self.buf.get(self.pos..) else {
                return false;
            };
            // Fast path: copy data up to the next 0x1b.
            let n = rest.iter().position(|&b| b == 0x1b).unwrap_or(rest.len());
            if n > 0 {
                let room = self.max_frame.saturating_add(1).saturating_sub(self.pos);
                let n = n.min(room.max(1));
                if let Some(data) = rest.get(..n) {
                    self.payload.extend_from_slice(data);
                }
                self.pos += n;
                continue;
            }
            // rest[0] == 0x1b (or rest is empty).
            let avail = rest.len();
            if avail == 0 {
                return false;
            }
            let head = rest.get(..avail.min(4)).unwrap_or_default();
            if head.iter().any(|&b| b != 0x1b) {
                // Fewer than four 0x1b: plain data.
                self.payload.push(0x1b);
                self.pos += 1;
                continue;
            }
            let Some(seq) = rest.get(..8) else {
                return false; // need the whole escape sequence
            };
            let mut p = [0u8; 4];
            p.copy_from_slice(seq.get(4..8).unwrap_or(&[0; 4]));
            if p == ESC {
                self.payload.extend_from_slice(&ESC);
                self.pos += 8;
            } else if p == RESTART {
                let skipped = self.pos;
                self.stats.invalid += 1;
                events.push(FrameEvent::Invalid { skipped, reason: FrameInvalid::Interrupted });
                self.buf.drain(..skipped.min(self.buf.len()));
                self.begin_frame();
            } else if p[0] == 0x1a {
                self.end_frame(p, events);
                return true;
            } else if self.pos & 3 != 0 {
                // Misaligned unknown escape: the first 0x1b belongs to the payload.
                self.payload.push(0x1b);
                self.pos += 1;
            } else {
                let skipped = self.pos + 1;
                self.stats.invalid += 1;
                events.push(FrameEvent::Invalid { skipped, reason: FrameInvalid::UnknownEscape(p) });
                // Resume hunting right after the first escape byte: a start sequence may overlap.
                self.leave_frame(skipped);
                return true;
            }
        }
    }

    /// The end sequence `1b1b1b1b 1a PP C1 C2` is at `buf[pos..pos + 8]`.
    fn end_frame(&mut self, p: [u8; 4], events: &mut Vec<FrameEvent>) {
        let len = self.pos + 8;
        let covered = self.buf.get(..self.pos + 6).unwrap_or_default();
        let computed = crc16_x25(covered);
        let sent = u16::from_le_bytes([p[2], p[3]]);
        let pad = usize::from(p[1]);
        if sent != computed {
            self.stats.crc_errors += 1;
            events.push(FrameEvent::CrcError { sent, computed, len });
        } else if pad > 3
            || pad > self.payload.len()
            || !matches!(
                self.payload.get(self.payload.len() - pad..),
                Some(tail) if tail.iter().all(|&b| b == 0)
            )
        {
            self.stats.invalid += 1;
            events.push(FrameEvent::Invalid { skipped: len, reason: FrameInvalid::BadPadding(p[1]) });
        } else {
            if len & 3 != 0 {
                self.stats.misaligned += 1;
            }
            let keep = self.payload.len() - pad;
            self.payload.truncate(keep);
            self.stats.frames += 1;
            events.push(FrameEvent::Frame(std::mem::take(&mut self.payload)));
        }
        self.leave_frame(len);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest proper prefix of `needle` that `haystack` ends with.
fn longest_suffix_prefix(haystack: &[u8], needle: &[u8]) -> usize {
    let max = needle.len().saturating_sub(1).min(haystack.len());
    (1..=max).rev().find(|&k| haystack.ends_with(needle.get(..k).unwrap_or_default())).unwrap_or(0)
}

/// Wrap an SML payload into a transport v1 frame: escape, pad to 4 bytes, append the end sequence with
/// the CRC little-endian (as real meters do). For simulators and tests.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(&START);
    let mut i = 0;
    while i < payload.len() {
        if payload.get(i..i + 4) == Some(&ESC[..]) {
            out.extend_from_slice(&ESC);
            out.extend_from_slice(&ESC);
            i += 4;
        } else if let Some(&b) = payload.get(i) {
            out.push(b);
            i += 1;
        }
    }
    let pad = (4 - out.len() % 4) % 4;
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(&ESC);
    out.push(0x1a);
    out.push(pad as u8);
    let crc = crc16_x25(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
