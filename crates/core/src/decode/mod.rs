//! Native device decoders: pure functions from `(f_port, payload)` to metrics.
//!
//! No I/O, no clock, no global state. Every decoder is total: any input yields either
//! `Ok(Decoded)` or `Err(DecodeError)`, never a panic (all byte access goes through [`Reader`]).
//!
//! Metric names follow PRODUCT.md ("A reading"): snake_case with the unit as suffix
//! (`distance_mm`, `battery_pct`, ...). A vendor field with no such metric keeps its vendor
//! name in snake_case; when the vendor states a unit, the unit is appended as a suffix
//! (`distance_minimum_mm`). The per-profile mapping is documented in `docs/DECODERS.md`.

use serde_json::Value;

mod browan;
mod decentlab;
mod dragino;
pub mod js;
mod lamp;
mod milesight;
mod nas;

#[cfg(test)]
mod tests;

/// Decoded metrics of one uplink: metric name → JSON value (number, bool, string, or for a few
/// vendor structures an array/object).
pub type Metrics = serde_json::Map<String, Value>;

/// Result of decoding one uplink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub metrics: Metrics,
    /// Conditions the device reports that do not invalidate the reading (alerts, odd values).
    pub warnings: Vec<String>,
    /// Parts of the payload that could not be decoded while the rest could.
    pub errors: Vec<String>,
}

impl Decoded {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Why a payload could not be decoded at all. The caller turns it into a reading with an
/// `error` field instead of metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended before a field the format requires: `need` bytes needed, `got` present.
    #[error("payload too short: need {need} bytes, got {got}")]
    TooShort { need: usize, got: usize },
    /// A Milesight channel/type pair this device type does not define.
    #[error("unknown channel 0x{channel:02x} type 0x{kind:02x}")]
    UnknownChannel { channel: u8, kind: u8 },
    /// The device type sends nothing decodable on this FPort.
    #[error("unsupported FPort {0}")]
    UnsupportedPort(u8),
    /// The payload violates the documented format or the device reports an error state.
    #[error("invalid payload: {0}")]
    Invalid(String),
    /// Error raised by a scripted codec (used by the JavaScript codec runtime).
    #[error("codec error: {0}")]
    Codec(String),
}

/// A device decoder. `decode` takes `&mut self` so that a codec runtime may keep state; the
/// native decoders are stateless.
pub trait Decoder: Send {
    fn profile(&self) -> &str;
    fn decode(&mut self, f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError>;
}

/// Every profile [`native`] knows, in documentation order.
pub const NATIVE_PROFILES: &[&str] = &[
    "raw",
    "lamp-generic",
    "milesight-em310-udl",
    "milesight-em400-udl",
    "milesight-em500-smtc",
    "milesight-ws202",
    "milesight-ws203",
    "milesight-vs121",
    "dragino-ldds75",
    "dragino-ldds75-v1.1.4",
    "dragino-lse01",
    "decentlab-dl-mbx",
    "decentlab-dl-lid",
    "decentlab-dl-smtp",
    "decentlab-dl-5tm",
    "browan-tbms100",
    "nas-ul20xx-lcu-fw1.1",
];

type DecodeFn = fn(u8, &[u8]) -> Result<Decoded, DecodeError>;

/// A stateless native decoder: a profile name and a pure decode function.
struct FnDecoder {
    profile: &'static str,
    f: DecodeFn,
}

impl Decoder for FnDecoder {
    fn profile(&self) -> &str {
        self.profile
    }
    fn decode(&mut self, f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
        (self.f)(f_port, payload)
    }
}

fn decode_fn(profile: &str) -> Option<(&'static str, DecodeFn)> {
    let f: DecodeFn = match profile {
        "raw" => decode_raw,
        "lamp-generic" => lamp::decode,
        "milesight-em310-udl" => milesight::decode_em310_udl,
        "milesight-em400-udl" => milesight::decode_em400_udl,
        "milesight-em500-smtc" => milesight::decode_em500_smtc,
        "milesight-ws202" => milesight::decode_ws202,
        "milesight-ws203" => milesight::decode_ws203,
        "milesight-vs121" => milesight::decode_vs121,
        "dragino-ldds75" | "dragino-ldds75-v1.1.4" => dragino::decode_ldds75,
        "dragino-lse01" => dragino::decode_lse01,
        "decentlab-dl-mbx" => decentlab::decode_dl_mbx,
        "decentlab-dl-lid" => decentlab::decode_dl_lid,
        "decentlab-dl-smtp" => decentlab::decode_dl_smtp,
        "decentlab-dl-5tm" => decentlab::decode_dl_5tm,
        "browan-tbms100" => browan::decode_tbms100,
        "nas-ul20xx-lcu-fw1.1" => nas::decode,
        _ => return None,
    };
    let name = NATIVE_PROFILES.iter().copied().find(|p| *p == profile)?;
    Some((name, f))
}

/// The native decoder for `profile`, or `None` if the profile is not native (e.g. `js:PATH`).
pub fn native(profile: &str) -> Option<Box<dyn Decoder>> {
    let (profile, f) = decode_fn(profile)?;
    Some(Box::new(FnDecoder { profile, f }))
}

/// Encodes a lamp level command for a lamp profile: `(f_port, bytes)`.
///
/// - `lamp-generic` → `(10, [level])`.
/// - `nas-ul20xx-lcu-fw1.1` → the documented manual dimming command on FPort 60:
///   `[0x01, 0xFE (DALI broadcast), level]`.
///
/// `None` for other profiles and for `level_pct > 100` (0xFF would mean "resume" to the NAS LCU).
pub fn encode_lamp_level(profile: &str, level_pct: u8) -> Option<(u8, Vec<u8>)> {
    if level_pct > 100 {
        return None;
    }
    match profile {
        "lamp-generic" => Some((lamp::FPORT, vec![level_pct])),
        "nas-ul20xx-lcu-fw1.1" => Some(nas::encode_manual_dimming(level_pct)),
        _ => None,
    }
}

/// `raw`: no metrics, for any FPort and payload (the reading carries `payload_hex`).
fn decode_raw(_f_port: u8, _payload: &[u8]) -> Result<Decoded, DecodeError> {
    Ok(Decoded::new())
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the vendor modules.

/// Bounds-checked cursor over a payload. Every read that would run past the end returns
/// `DecodeError::TooShort { need, got }` with `need` = bytes the read requires in total.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::TooShort { need: usize::MAX, got: self.buf.len() })?;
        match self.buf.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::TooShort { need: end, got: self.buf.len() }),
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_le_bytes(self.array()?))
    }
    pub(crate) fn u16_le(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn i16_le(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u16_be(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn i16_be(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u24_le(&mut self) -> Result<u32, DecodeError> {
        let [a, b, c] = self.array::<3>()?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }
    pub(crate) fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn f32_le(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.array()?))
    }
}

/// Rounds `v` to `decimals` decimal places (removes binary noise such as 25.700000000000003).
pub(crate) fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

/// A float metric value; non-finite values become `null`.
pub(crate) fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

/// Inserts an integer metric.
pub(crate) fn put_int(m: &mut Metrics, key: &str, v: i64) {
    m.insert(key.to_string(), Value::from(v));
}

/// Inserts a float metric rounded to `decimals`.
pub(crate) fn put_f(m: &mut Metrics, key: &str, v: f64, decimals: i32) {
    m.insert(key.to_string(), num(round_to(v, decimals)));
}

pub(crate) fn put_bool(m: &mut Metrics, key: &str, v: bool) {
    m.insert(key.to_string(), Value::Bool(v));
}

pub(crate) fn put_str(m: &mut Metrics, key: &str, v: impl Into<String>) {
    m.insert(key.to_string(), Value::String(v.into()));
}

/// Bit `n` (0 = least significant) of `b`.
pub(crate) fn bit(b: u8, n: u8) -> bool {
    (b >> n) & 1 == 1
}

/// Formats Unix seconds as RFC 3339 UTC with milliseconds (`2020-01-16T15:23:31.000Z`).
pub(crate) fn rfc3339_from_unix(secs: u32) -> String {
    let secs = i64::from(secs);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", tod / 3600, (tod % 3600) / 60, tod % 60)
}
