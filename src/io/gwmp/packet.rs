//! Semtech UDP packet-forwarder protocol (GWMP), versions 1 and 2: a pure codec, no sockets.
//!
//! Datagram layout: `version | token (2 bytes) | identifier | [gateway EUI (8 bytes)] | [JSON]`.
//!
//! Decisions:
//! - Versions 1 and 2 are accepted; anything else is refused (`UnsupportedVersion`). No packet forwarder
//!   sends another version, so a different first byte means "not GWMP" and guessing would only
//!   misinterpret stray datagrams.
//! - The token is two opaque bytes, echoed back as received (the spec does not define a byte order).
//! - Bodies are parsed with serde_json into `Value` and read field by field, so one bad `rxpk` entry only
//!   spoils itself (`PushBody::rxpk` holds a `Result` per entry).
//! - Trailing NUL bytes and whitespace after the JSON are ignored (some forwarders NUL-terminate; a TX_ACK
//!   body of a single 0x00 means "no error").
//! - `stat` must carry `time` and the counters `rxnb/rxok/rxfw/dwnb/txnb` (as every packet forwarder sends
//!   them); one without is refused on its own (`stat_error`), without dropping the datagram's `rxpk`.
//! - An `rxpk` without `stat` is accepted (the LoRaWAN MIC still protects it); `stat` other than 1 is a CRC
//!   failure. LR-FHSS entries are refused as `UnsupportedModulation` (no LR-FHSS devices in scope).
//! - `freq` (MHz, float) is rounded to whole Hz. Base64 is accepted with or without padding.
//! - With JSON v2 (`rsig`), when the top-level `rssi`/`lsnr` are absent the best antenna values are used
//!   (highest `rssic`, highest `lsnr`, taken independently).

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::keys::Eui64;
use crate::lorawan::region::TxParams;

pub const PUSH_DATA: u8 = 0x00;
pub const PUSH_ACK: u8 = 0x01;
pub const PULL_DATA: u8 = 0x02;
pub const PULL_RESP: u8 = 0x03;
pub const PULL_ACK: u8 = 0x04;
pub const TX_ACK: u8 = 0x05;

/// Header of a datagram that carries a gateway EUI.
const HEADER_WITH_EUI: usize = 12;

/// Lenient base64: gateways differ in padding and in the unused low bits of the last character.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    PushData {
        version: u8,
        token: [u8; 2],
        gateway_eui: Eui64,
        body: PushBody,
    },
    PushAck {
        version: u8,
        token: [u8; 2],
    },
    PullData {
        version: u8,
        token: [u8; 2],
        gateway_eui: Eui64,
    },
    PullAck {
        version: u8,
        token: [u8; 2],
    },
    PullResp {
        version: u8,
        token: [u8; 2],
        json: Value,
    },
    /// `error` is `None` for success ("NONE", no JSON, or a lone 0x00 body).
    TxAck {
        version: u8,
        token: [u8; 2],
        gateway_eui: Eui64,
        error: Option<String>,
    },
}

impl Packet {
    /// The packet type's name from the protocol document, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::PushData { .. } => "PUSH_DATA",
            Packet::PushAck { .. } => "PUSH_ACK",
            Packet::PullData { .. } => "PULL_DATA",
            Packet::PullAck { .. } => "PULL_ACK",
            Packet::PullResp { .. } => "PULL_RESP",
            Packet::TxAck { .. } => "TX_ACK",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushBody {
    /// One entry per received packet, in order; a bad one does not spoil the others.
    pub rxpk: Vec<Result<RxPk, RxPkError>>,
    /// The gateway status object as sent, when it is valid.
    pub stat: Option<Value>,
    /// Why the `stat` object present in the datagram was refused.
    pub stat_error: Option<StatError>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Modulation {
    Lora { sf: u8, bw_khz: u32 },
    Fsk { datarate: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RxPk {
    /// Concentrator counter (µs) at reception; needed to schedule a class A downlink.
    pub tmst: Option<u32>,
    pub time: Option<String>,
    pub freq_hz: u64,
    pub chan: Option<u32>,
    pub rfch: Option<u32>,
    pub modulation: Modulation,
    pub codr: Option<String>,
    pub rssi: Option<i32>,
    pub lsnr: Option<f64>,
    /// The PHYPayload.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GwmpError {
    #[error("datagram of {len} bytes is shorter than the {min} bytes its type needs")]
    TooShort { len: usize, min: usize },
    #[error("unsupported protocol version {0} (1 and 2 are accepted)")]
    UnsupportedVersion(u8),
    #[error("unknown packet identifier 0x{0:02x}")]
    UnknownIdentifier(u8),
    #[error("missing JSON body")]
    EmptyBody,
    #[error("invalid JSON body: {0}")]
    BadJson(String),
    #[error("JSON body is not an object")]
    NotAnObject,
    #[error("invalid JSON body: {0}")]
    BadBody(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxPkError {
    #[error("CRC check failed (stat {stat})")]
    CrcFailed { stat: i64 },
    #[error("data is not valid base64")]
    InvalidBase64,
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("bad field {field}: {reason}")]
    BadField { field: &'static str, reason: &'static str },
    #[error("unsupported modulation {0:?}")]
    UnsupportedModulation(String),
    #[error("size {declared} does not match the {actual} data bytes")]
    SizeMismatch { declared: u64, actual: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    #[error("stat is not an object")]
    NotAnObject,
    #[error("stat lacks {0}")]
    MissingField(&'static str),
    #[error("stat field {0} has the wrong type")]
    BadField(&'static str),
}

/// What the simulator and the tests put in a PUSH_DATA (always LoRa, CRC OK).
#[derive(Debug, Clone, PartialEq)]
pub struct RxPkOut {
    pub tmst: u32,
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    pub rssi: i32,
    pub lsnr: f64,
    pub data: Vec<u8>,
}

pub fn parse(datagram: &[u8]) -> Result<Packet, GwmpError> {
    let len = datagram.len();
    let [version, t0, t1, ident, rest @ ..] = datagram else {
        return Err(GwmpError::TooShort { len, min: 4 });
    };
    let (version, token) = (*version, [*t0, *t1]);
    if !(1..=2).contains(&version) {
        return Err(GwmpError::UnsupportedVersion(version));
    }
    let with_eui = |rest: &[u8]| -> Result<(Eui64, Vec<u8>), GwmpError> {
        let (eui, body) = rest.split_first_chunk::<8>().ok_or(GwmpError::TooShort { len, min: HEADER_WITH_EUI })?;
        Ok((Eui64(u64::from_be_bytes(*eui)), trim_body(body).to_vec()))
    };
    match *ident {
        PUSH_DATA => {
            let (gateway_eui, body) = with_eui(rest)?;
            let body = parse_push_body(&body)?;
            Ok(Packet::PushData { version, token, gateway_eui, body })
        }
        // ACKs are fixed-size; trailing bytes are ignored rather than refused (nothing depends on them).
        PUSH_ACK => Ok(Packet::PushAck { version, token }),
        PULL_DATA => {
            let (gateway_eui, _) = with_eui(rest)?;
            Ok(Packet::PullData { version, token, gateway_eui })
        }
        PULL_ACK => Ok(Packet::PullAck { version, token }),
        PULL_RESP => {
            let json = json_object(trim_body(rest))?;
            Ok(Packet::PullResp { version, token, json })
        }
        TX_ACK => {
            let (gateway_eui, body) = with_eui(rest)?;
            let error = if body.is_empty() { None } else { tx_ack_error(&json_object(&body)?) };
            Ok(Packet::TxAck { version, token, gateway_eui, error })
        }
        other => Err(GwmpError::UnknownIdentifier(other)),
    }
}

fn trim_body(body: &[u8]) -> &[u8] {
    let end = body.iter().rposition(|b| *b != 0 && !b.is_ascii_whitespace()).map_or(0, |p| p + 1);
    body.get(..end).unwrap_or_default()
}

fn json_object(body: &[u8]) -> Result<Value, GwmpError> {
    if body.is_empty() {
        return Err(GwmpError::EmptyBody);
    }
    // serde_json's messages name the position and the kind of error, not the content.
    let v: Value = serde_json::from_slice(body).map_err(|e| GwmpError::BadJson(e.to_string()))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(GwmpError::NotAnObject)
    }
}

fn tx_ack_error(v: &Value) -> Option<String> {
    match v.get("txpk_ack")?.get("error")?.as_str()? {
        "NONE" | "" => None,
        e => Some(e.chars().take(64).collect()),
    }
}

fn parse_push_body(body: &[u8]) -> Result<PushBody, GwmpError> {
    let v = json_object(body)?;
    let rxpk = match v.get("rxpk") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(parse_rxpk).collect(),
        Some(_) => return Err(GwmpError::BadBody("rxpk is not an array")),
    };
    let (stat, stat_error) = match v.get("stat") {
        None | Some(Value::Null) => (None, None),
        Some(s) => match check_stat(s) {
            Ok(()) => (Some(s.clone()), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(PushBody { rxpk, stat, stat_error })
}

fn check_stat(s: &Value) -> Result<(), StatError> {
    let o = s.as_object().ok_or(StatError::NotAnObject)?;
    match o.get("time") {
        None => return Err(StatError::MissingField("time")),
        Some(t) if !t.is_string() => return Err(StatError::BadField("time")),
        _ => {}
    }
    for f in ["rxnb", "rxok", "rxfw", "dwnb", "txnb"] {
        match o.get(f) {
            None => return Err(StatError::MissingField(f)),
            Some(n) if !n.is_u64() => return Err(StatError::BadField(f)),
            _ => {}
        }
    }
    Ok(())
}

fn opt_u32(o: &Map<String, Value>, field: &'static str) -> Result<Option<u32>, RxPkError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(RxPkError::BadField { field, reason: "not an unsigned 32-bit integer" }),
    }
}

fn opt_string(o: &Map<String, Value>, field: &'static str) -> Result<Option<String>, RxPkError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RxPkError::BadField { field, reason: "not a string" }),
    }
}

/// RSSI as i32; some gateways send it as a float.
fn as_i32(v: &Value) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return i32::try_from(n).ok();
    }
    let f = v.as_f64()?;
    (f.is_finite() && f.abs() < 1e6).then(|| f.round() as i32)
}

fn as_finite_f64(v: &Value) -> Option<f64> {
    v.as_f64().filter(|f| f.is_finite())
}

fn parse_lora_datr(datr: &str) -> Option<(u8, u32)> {
    let rest = datr.strip_prefix("SF")?;
    let (sf, bw) = rest.split_once("BW")?;
    let sf: u8 = sf.parse().ok()?;
    let bw: u32 = bw.parse().ok()?;
    ((5..=12).contains(&sf) && bw > 0 && bw <= 1600).then_some((sf, bw))
}

fn parse_rxpk(v: &Value) -> Result<RxPk, RxPkError> {
    let o = v.as_object().ok_or(RxPkError::BadField { field: "rxpk", reason: "entry is not an object" })?;

    // CRC first: the other fields of a corrupted packet do not matter.
    if let Some(stat) = o.get("stat") {
        let stat = stat.as_i64().ok_or(RxPkError::BadField { field: "stat", reason: "not an integer" })?;
        if stat != 1 {
            return Err(RxPkError::CrcFailed { stat });
        }
    }

    let freq = o.get("freq").ok_or(RxPkError::MissingField("freq"))?;
    let mhz = as_finite_f64(freq).ok_or(RxPkError::BadField { field: "freq", reason: "not a number" })?;
    if !(1.0..10_000.0).contains(&mhz) {
        return Err(RxPkError::BadField { field: "freq", reason: "out of range" });
    }
    let freq_hz = (mhz * 1e6).round() as u64;

    let modu = o.get("modu").ok_or(RxPkError::MissingField("modu"))?;
    let modu = modu.as_str().ok_or(RxPkError::BadField { field: "modu", reason: "not a string" })?;
    let datr = o.get("datr").ok_or(RxPkError::MissingField("datr"))?;
    let modulation = if modu.eq_ignore_ascii_case("LORA") {
        let datr = datr.as_str().ok_or(RxPkError::BadField { field: "datr", reason: "not a string" })?;
        let (sf, bw_khz) =
            parse_lora_datr(datr).ok_or(RxPkError::BadField { field: "datr", reason: "not SF<n>BW<khz>" })?;
        Modulation::Lora { sf, bw_khz }
    } else if modu.eq_ignore_ascii_case("FSK") {
        let rate = match datr {
            Value::String(s) => s.parse::<u32>().ok(),
            other => other.as_u64().and_then(|n| u32::try_from(n).ok()),
        };
        Modulation::Fsk { datarate: rate.ok_or(RxPkError::BadField { field: "datr", reason: "not a bit rate" })? }
    } else {
        return Err(RxPkError::UnsupportedModulation(modu.chars().take(16).collect()));
    };

    let data = o.get("data").ok_or(RxPkError::MissingField("data"))?;
    let data = data.as_str().ok_or(RxPkError::BadField { field: "data", reason: "not a string" })?;
    let data = B64.decode(data).map_err(|_| RxPkError::InvalidBase64)?;
    if let Some(size) = o.get("size") {
        let declared = size.as_u64().ok_or(RxPkError::BadField { field: "size", reason: "not an integer" })?;
        if usize::try_from(declared).ok() != Some(data.len()) {
            return Err(RxPkError::SizeMismatch { declared, actual: data.len() });
        }
    }

    let rsig: &[Value] = o.get("rsig").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let rssi = match o.get("rssi") {
        Some(v) if !v.is_null() => {
            Some(as_i32(v).ok_or(RxPkError::BadField { field: "rssi", reason: "not a number" })?)
        }
        _ => rsig.iter().filter_map(|a| a.get("rssic").and_then(as_i32)).max(),
    };
    let lsnr = match o.get("lsnr") {
        Some(v) if !v.is_null() => {
            Some(as_finite_f64(v).ok_or(RxPkError::BadField { field: "lsnr", reason: "not a number" })?)
        }
        _ => rsig.iter().filter_map(|a| a.get("lsnr").and_then(as_finite_f64)).reduce(f64::max),
    };

    Ok(RxPk {
        tmst: opt_u32(o, "tmst")?,
        time: opt_string(o, "time")?,
        freq_hz,
        chan: opt_u32(o, "chan")?,
        rfch: opt_u32(o, "rfch")?,
        modulation,
        codr: opt_string(o, "codr")?,
        rssi,
        lsnr,
        data,
    })
}

pub fn push_ack(version: u8, token: [u8; 2]) -> [u8; 4] {
    [version, token[0], token[1], PUSH_ACK]
}

pub fn pull_ack(version: u8, token: [u8; 2]) -> [u8; 4] {
    [version, token[0], token[1], PULL_ACK]
}

fn header(version: u8, token: [u8; 2], ident: u8, gateway_eui: Eui64) -> Vec<u8> {
    let mut out = vec![version, token[0], token[1], ident];
    out.extend_from_slice(&gateway_eui.0.to_be_bytes());
    out
}

pub fn build_pull_data(version: u8, token: [u8; 2], gateway_eui: Eui64) -> Vec<u8> {
    header(version, token, PULL_DATA, gateway_eui)
}

/// A PUSH_DATA as a packet forwarder would send it (for the simulator and tests).
pub fn build_push_data(version: u8, token: [u8; 2], gateway_eui: Eui64, rxpk: &[RxPkOut]) -> Vec<u8> {
    let items: Vec<Value> = rxpk
        .iter()
        .map(|p| {
            json!({
                "tmst": p.tmst,
                "chan": 0,
                "rfch": 0,
                "freq": p.freq_hz as f64 / 1e6,
                "stat": 1,
                "modu": "LORA",
                "datr": format!("SF{}BW{}", p.sf, p.bw_khz),
                "codr": "4/5",
                "rssi": p.rssi,
                "lsnr": p.lsnr,
                "size": p.data.len(),
                "data": B64.encode(&p.data),
            })
        })
        .collect();
    let mut out = header(version, token, PUSH_DATA, gateway_eui);
    // Serialising a Value cannot fail (all keys are strings); "{}" keeps the datagram well-formed anyway.
    out.extend(serde_json::to_vec(&json!({ "rxpk": items })).unwrap_or_else(|_| b"{}".to_vec()));
    out
}

/// A PULL_RESP carrying `json` (normally `{"txpk":{...}}`).
pub fn build_pull_resp(version: u8, token: [u8; 2], json: &Value) -> Vec<u8> {
    let mut out = vec![version, token[0], token[1], PULL_RESP];
    out.extend(serde_json::to_vec(json).unwrap_or_else(|_| b"{}".to_vec()));
    out
}

/// One downlink for the packet forwarder (`txpk` of a PULL_RESP), LoRa only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxPk {
    /// Send immediately (class C); `tmst` is then left out.
    pub imme: bool,
    /// Concentrator time to send at (µs), for class A windows.
    pub tmst: Option<u32>,
    pub freq_hz: u64,
    /// RF chain (0 on nearly every gateway).
    pub rfch: u32,
    /// TX power in dBm.
    pub powe: i32,
    pub sf: u8,
    pub bw_khz: u32,
    /// Coding rate, "4/5" for LoRaWAN.
    pub codr: String,
    /// Inverted polarity: true for LoRaWAN downlinks.
    pub ipol: bool,
    /// The PHYPayload.
    pub data: Vec<u8>,
}

impl TxPk {
    /// A LoRaWAN downlink: RF chain 0, CR 4/5, inverted polarity.
    pub fn lorawan(imme: bool, tmst: Option<u32>, freq_hz: u64, powe: i32, sf: u8, bw_khz: u32, data: Vec<u8>) -> Self {
        TxPk { imme, tmst, freq_hz, rfch: 0, powe, sf, bw_khz, codr: "4/5".into(), ipol: true, data }
    }

    /// The core's downlink at this protocol's edge: how to send it (`params`) and the PHYPayload.
    pub fn from_params(p: &TxParams, phy: Vec<u8>) -> Self {
        TxPk::lorawan(p.imme, p.tmst, p.freq_hz, p.power_dbm, p.sf, p.bw_khz, phy)
    }

    /// The `{"txpk": {...}}` object of the Semtech protocol. `freq` is in MHz with Hz precision (the
    /// shortest decimal that reads back to the same Hz), `ncrc` is set (LoRaWAN downlinks carry no payload
    /// CRC).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("imme".into(), Value::Bool(self.imme));
        if let (false, Some(t)) = (self.imme, self.tmst) {
            o.insert("tmst".into(), json!(t));
        }
        o.insert("freq".into(), json!(mhz_6(self.freq_hz)));
        o.insert("rfch".into(), json!(self.rfch));
        o.insert("powe".into(), json!(self.powe));
        o.insert("modu".into(), json!("LORA"));
        o.insert("datr".into(), json!(format!("SF{}BW{}", self.sf, self.bw_khz)));
        o.insert("codr".into(), json!(self.codr));
        o.insert("ipol".into(), json!(self.ipol));
        o.insert("size".into(), json!(self.data.len()));
        o.insert("ncrc".into(), json!(true));
        o.insert("data".into(), json!(B64.encode(&self.data)));
        json!({ "txpk": Value::Object(o) })
    }
}

/// Hz → MHz rounded to 6 decimals (whole Hz).
fn mhz_6(hz: u64) -> f64 {
    let whole = hz / 1_000_000;
    let frac = hz % 1_000_000;
    whole as f64 + frac as f64 / 1e6
}

/// A PULL_RESP carrying one `txpk`.
pub fn build_txpk_pull_resp(version: u8, token: [u8; 2], txpk: &TxPk) -> Vec<u8> {
    build_pull_resp(version, token, &txpk.to_json())
}

/// The outcome a TX_ACK reports (`txpk_ack.error`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum TxAckStatus {
    /// Accepted for transmission ("NONE", no JSON, or an empty body).
    Ok,
    /// The packet arrived after its transmit time.
    TooLate,
    /// The transmit time is too far ahead for the JIT queue.
    TooEarly,
    /// Another packet is scheduled at the same time.
    CollisionPacket,
    /// Collides with a class B beacon.
    CollisionBeacon,
    /// Frequency not supported by the TX chain.
    TxFreq,
    /// Power not supported.
    TxPower,
    /// Time reference requested but no GPS lock.
    GpsUnlocked,
    /// Anything else (kept, cut to 64 characters).
    Unknown(String),
}

impl TxAckStatus {
    /// True when the packet will be transmitted.
    pub fn is_ok(&self) -> bool {
        matches!(self, TxAckStatus::Ok)
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TxAckStatus::Ok => "none",
            TxAckStatus::TooLate => "too_late",
            TxAckStatus::TooEarly => "too_early",
            TxAckStatus::CollisionPacket => "collision_packet",
            TxAckStatus::CollisionBeacon => "collision_beacon",
            TxAckStatus::TxFreq => "tx_freq",
            TxAckStatus::TxPower => "tx_power",
            TxAckStatus::GpsUnlocked => "gps_unlocked",
            TxAckStatus::Unknown(_) => "unknown",
        }
    }
}

/// Classifies the `error` of a [`Packet::TxAck`]. Case-insensitive; never panics.
pub fn classify_tx_ack(error: Option<&str>) -> TxAckStatus {
    let Some(e) = error.map(str::trim) else {
        return TxAckStatus::Ok;
    };
    match e.to_ascii_uppercase().as_str() {
        "" | "NONE" => TxAckStatus::Ok,
        "TOO_LATE" => TxAckStatus::TooLate,
        "TOO_EARLY" => TxAckStatus::TooEarly,
        "COLLISION_PACKET" => TxAckStatus::CollisionPacket,
        "COLLISION_BEACON" => TxAckStatus::CollisionBeacon,
        "TX_FREQ" => TxAckStatus::TxFreq,
        "TX_POWER" => TxAckStatus::TxPower,
        "GPS_UNLOCKED" => TxAckStatus::GpsUnlocked,
        _ => TxAckStatus::Unknown(e.chars().take(64).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn samples() -> Vec<Value> {
        let near = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
        let dir = if near.is_dir() { near } else { PathBuf::from("/work/shared/vectors") };
        let text = std::fs::read_to_string(dir.join("gwmp/samples.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
    }

    /// The raw datagram of a sample, or one assembled around its JSON (header values chosen here).
    fn datagram(s: &Value) -> Vec<u8> {
        for f in ["datagram_hex", "assembled_datagram_hex"] {
            if let Some(h) = s[f].as_str() {
                return hex::decode(h).unwrap();
            }
        }
        let text = s["json_text"].as_str().unwrap().as_bytes();
        let eui = Eui64(0x0102_0304_0506_0708);
        let mut d = if s["json"].get("txpk").is_some() {
            vec![2, 0x12, 0x34, PULL_RESP]
        } else if s["json"].get("txpk_ack").is_some() {
            header(2, [0x12, 0x34], TX_ACK, eui)
        } else {
            header(2, [0x12, 0x34], PUSH_DATA, eui)
        };
        d.extend_from_slice(text);
        d
    }

    fn push_body(p: &Packet) -> &PushBody {
        match p {
            Packet::PushData { body, .. } => body,
            other => panic!("not PUSH_DATA: {other:?}"),
        }
    }

    fn ok_rxpk(p: &Packet, i: usize) -> &RxPk {
        push_body(p).rxpk[i].as_ref().unwrap()
    }

    #[test]
    fn every_sample_parses_as_expected() {
        let all = samples();
        assert_eq!(all.len(), 19);
        for s in &all {
            let id = s["id"].as_str().unwrap();
            let p = parse(&datagram(s)).unwrap_or_else(|e| panic!("{id}: {e}"));

            // Header cross-check against the decoding shipped with the raw samples.
            if let Some(tok) = s["token_hex"].as_str() {
                let (version, token) = match &p {
                    Packet::PushData { version, token, .. }
                    | Packet::PullData { version, token, .. }
                    | Packet::TxAck { version, token, .. } => (*version, *token),
                    other => panic!("{id}: {other:?}"),
                };
                assert_eq!(u64::from(version), s["protocol_version"].as_u64().unwrap(), "{id}");
                assert_eq!(hex::encode(token), tok, "{id}");
            }
            if let Some(eui) = s["gateway_eui"].as_str() {
                let got = match &p {
                    Packet::PushData { gateway_eui, .. }
                    | Packet::PullData { gateway_eui, .. }
                    | Packet::TxAck { gateway_eui, .. } => *gateway_eui,
                    other => panic!("{id}: {other:?}"),
                };
                assert_eq!(got, Eui64::from_hex(eui).unwrap(), "{id}");
            }
            // Every rxpk that decoded carries exactly the bytes of the cross-check decoding.
            if let (Packet::PushData { body, .. }, Some(dec)) = (&p, s["rxpk_decoded"].as_array()) {
                assert_eq!(body.rxpk.len(), s["json"]["rxpk"].as_array().unwrap().len(), "{id}");
                for (r, d) in body.rxpk.iter().zip(dec) {
                    if let Ok(r) = r {
                        assert_eq!(hex::encode(&r.data), d["data_hex"].as_str().unwrap(), "{id}");
                    }
                }
            }

            match id {
                "helium-test_pull_data" => {
                    assert!(matches!(p, Packet::PullData { version: 2, .. }))
                }
                "helium-test_push_data_rxpk" => {
                    let r = ok_rxpk(&p, 0);
                    assert_eq!(r.tmst, Some(1_472_242_252));
                    assert_eq!((r.chan, r.rfch, r.freq_hz), (Some(8), Some(0), 912_600_000));
                    assert_eq!(r.modulation, Modulation::Lora { sf: 8, bw_khz: 500 });
                    assert_eq!((r.codr.as_deref(), r.rssi, r.lsnr), (Some("4/5"), Some(-58), Some(10.8)));
                    assert_eq!(r.data.len(), 23);
                    assert_eq!(r.data[0], 0x00, "a JoinRequest");
                }
                "helium-test_push_data_rxpk_jsonv2" => {
                    let r = ok_rxpk(&p, 0);
                    assert_eq!((r.rssi, r.lsnr), (Some(-46), Some(10.0)), "taken from rsig");
                    assert_eq!(r.freq_hz, 903_900_000);
                    assert_eq!(r.modulation, Modulation::Lora { sf: 10, bw_khz: 125 });
                    assert_eq!(r.time.as_deref(), Some("2020-10-29T15:57:40.170301Z"));
                    assert_eq!(r.tmst, Some(313_998_876));
                }
                "helium-new_packet" => {
                    assert_eq!(push_body(&p).rxpk, vec![Err(RxPkError::CrcFailed { stat: -1 })]);
                }
                "helium-test_push_data_stat"
                | "helium-push_data_stat_null_ackr"
                | "semtech-protocol-stat-4"
                | "ttn-stat-with-temp" => {
                    let b = push_body(&p);
                    assert_eq!((b.rxpk.len(), &b.stat_error), (0, &None), "{id}");
                    let stat = b.stat.as_ref().unwrap();
                    if let Some(exp) = s["expected_by_source"].as_object() {
                        for (k, v) in exp {
                            assert_eq!(stat[k].as_f64(), v.as_f64(), "{id} {k}");
                        }
                    }
                }
                "helium-new_parsing_error" => {
                    // Negative: the stat object lacks the required fields. It is refused on its own.
                    let b = push_body(&p);
                    assert_eq!(b.stat, None);
                    assert_eq!(b.stat_error, Some(StatError::MissingField("time")));
                    assert!(b.rxpk.is_empty());
                }
                "helium-tx_ack_no_json" => assert!(matches!(p, Packet::TxAck { error: None, .. })),
                "semtech-protocol-rxpk-1" => {
                    let b = push_body(&p);
                    assert_eq!(b.rxpk.len(), 3);
                    assert_eq!(b.rxpk[0], Err(RxPkError::InvalidBase64));
                    let fsk = ok_rxpk(&p, 1);
                    assert_eq!(fsk.modulation, Modulation::Fsk { datarate: 50_000 });
                    assert_eq!(
                        (fsk.freq_hz, fsk.rssi, fsk.lsnr, fsk.codr.as_deref()),
                        (869_100_000, Some(-75), None, None)
                    );
                    assert_eq!(fsk.data, b"TEST_PACKET_1234");
                    let lora = ok_rxpk(&p, 2);
                    assert_eq!(lora.modulation, Modulation::Lora { sf: 10, bw_khz: 125 });
                    assert_eq!((lora.freq_hz, lora.tmst, lora.data.len()), (863_009_810, Some(3_316_387_610), 32));
                }
                "semtech-protocol-txpk-6" | "semtech-protocol-txpk-7" | "ttn-txpk-lora" => match &p {
                    Packet::PullResp { json, token, .. } => {
                        assert_eq!(*token, [0x12, 0x34]);
                        assert_eq!(json, &s["json"]);
                    }
                    other => panic!("{id}: {other:?}"),
                },
                "semtech-protocol-txpk_ack-9" => {
                    assert!(matches!(p, Packet::TxAck { error: Some(ref e), .. } if e == "COLLISION_PACKET"))
                }
                "ttn-rxpk-sf7" => {
                    let r = ok_rxpk(&p, 0);
                    let exp = &s["expected_by_source"];
                    assert_eq!(r.freq_hz, 868_099_975);
                    assert_eq!(r.tmst.map(u64::from), exp["tmst"].as_u64());
                    assert_eq!((r.chan, r.rfch), (Some(0), Some(0)));
                    assert_eq!(r.modulation, Modulation::Lora { sf: 7, bw_khz: 125 });
                    assert_eq!(r.codr.as_deref(), exp["codr"].as_str());
                    assert_eq!((r.lsnr, r.rssi), (Some(-12.0), Some(-112)));
                    assert_eq!(r.data.len(), 61);
                }
                "ttn-rxpk-lrfhss" => {
                    assert_eq!(push_body(&p).rxpk, vec![Err(RxPkError::UnsupportedModulation("LRFHSS".into()))]);
                }
                "chirpstack-push-data-header-0" | "chirpstack-push-data-header-1" => {
                    let b = push_body(&p);
                    assert_eq!((b.rxpk.len(), &b.stat, &b.stat_error), (0, &None, &None));
                }
                other => panic!("sample {other} has no expectation"),
            }
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse(&[]), Err(GwmpError::TooShort { len: 0, min: 4 }));
        assert_eq!(parse(&[2, 0, 0]), Err(GwmpError::TooShort { len: 3, min: 4 }));
        assert_eq!(parse(&[3, 0, 0, 0]), Err(GwmpError::UnsupportedVersion(3)));
        assert_eq!(parse(&[0, 0, 0, 0]), Err(GwmpError::UnsupportedVersion(0)));
        assert_eq!(parse(&[2, 0, 0, 9]), Err(GwmpError::UnknownIdentifier(9)));
        assert_eq!(parse(&[2, 0, 0, PULL_DATA, 1, 2]), Err(GwmpError::TooShort { len: 6, min: 12 }));
        assert_eq!(parse(&header(2, [0, 0], PUSH_DATA, Eui64(1))), Err(GwmpError::EmptyBody));
        let mut bad = header(1, [0, 0], PUSH_DATA, Eui64(1));
        bad.extend_from_slice(b"{\"rxpk\":[");
        assert!(matches!(parse(&bad), Err(GwmpError::BadJson(_))));
        let mut arr = header(1, [0, 0], PUSH_DATA, Eui64(1));
        arr.extend_from_slice(b"[1]");
        assert_eq!(parse(&arr), Err(GwmpError::NotAnObject));
        let mut notarr = header(1, [0, 0], PUSH_DATA, Eui64(1));
        notarr.extend_from_slice(b"{\"rxpk\":{}}");
        assert_eq!(parse(&notarr), Err(GwmpError::BadBody("rxpk is not an array")));
        assert_eq!(parse(&push_ack(1, [7, 8])), Ok(Packet::PushAck { version: 1, token: [7, 8] }));
        assert_eq!(parse(&pull_ack(2, [7, 8])), Ok(Packet::PullAck { version: 2, token: [7, 8] }));
    }

    #[test]
    fn rxpk_field_errors_stay_local() {
        let body = br#"{"rxpk":[
            {"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","data":"AAE=","size":3},
            {"freq":868.1,"modu":"LORA","datr":"SF13BW125","data":"AAE="},
            {"modu":"LORA","datr":"SF7BW125","data":"AAE="},
            {"freq":"868.1","modu":"LORA","datr":"SF7BW125","data":"AAE="},
            {"freq":868.1,"stat":0,"modu":"LORA","datr":"SF7BW125","data":"AAE="},
            17,
            {"freq":868.1,"modu":"LORA","datr":"SF7BW125","data":"AAE","tmst":-1},
            {"freq":868.3,"modu":"LORA","datr":"SF12BW125","data":"AAE","rssi":-100.4,"rsig":[{"rssic":-20}]}
        ]}"#;
        let mut d = header(2, [1, 2], PUSH_DATA, Eui64(5));
        d.extend_from_slice(body);
        d.push(0); // NUL terminator, as some forwarders send
        let b = match parse(&d).unwrap() {
            Packet::PushData { body, .. } => body,
            other => panic!("{other:?}"),
        };
        assert_eq!(b.rxpk[0], Err(RxPkError::SizeMismatch { declared: 3, actual: 2 }));
        assert!(matches!(b.rxpk[1], Err(RxPkError::BadField { field: "datr", .. })));
        assert_eq!(b.rxpk[2], Err(RxPkError::MissingField("freq")));
        assert!(matches!(b.rxpk[3], Err(RxPkError::BadField { field: "freq", .. })));
        assert_eq!(b.rxpk[4], Err(RxPkError::CrcFailed { stat: 0 }));
        assert!(matches!(b.rxpk[5], Err(RxPkError::BadField { field: "rxpk", .. })));
        assert!(matches!(b.rxpk[6], Err(RxPkError::BadField { field: "tmst", .. })));
        let r = b.rxpk[7].as_ref().unwrap();
        assert_eq!((r.rssi, r.data.clone(), r.freq_hz), (Some(-100), vec![0, 1], 868_300_000), "top-level rssi wins");
    }

    #[test]
    fn builders_round_trip() {
        let eui = Eui64(0xaa55_5a00_0000_0001);
        let out = RxPkOut {
            tmst: 4_000_000_000,
            freq_hz: 868_100_000,
            sf: 9,
            bw_khz: 125,
            rssi: -87,
            lsnr: -3.25,
            data: vec![0x40, 1, 2, 3, 4, 0, 1, 0, 1, 2, 3, 4, 5],
        };
        let d = build_push_data(2, [0xab, 0xcd], eui, &[out.clone(), out.clone()]);
        let p = parse(&d).unwrap();
        let Packet::PushData { version: 2, token: [0xab, 0xcd], gateway_eui, body } = p else { panic!() };
        assert_eq!(gateway_eui, eui);
        assert_eq!(body.rxpk.len(), 2);
        let r = body.rxpk[1].as_ref().unwrap();
        assert_eq!(r.tmst, Some(out.tmst));
        assert_eq!(r.freq_hz, out.freq_hz);
        assert_eq!(r.modulation, Modulation::Lora { sf: 9, bw_khz: 125 });
        assert_eq!((r.rssi, r.lsnr), (Some(-87), Some(-3.25)));
        assert_eq!(r.data, out.data);
        assert_eq!(
            parse(&build_pull_data(1, [0, 9], eui)),
            Ok(Packet::PullData { version: 1, token: [0, 9], gateway_eui: eui })
        );
        let txpk = json!({"txpk": {"imme": true, "data": "AA=="}});
        assert_eq!(
            parse(&build_pull_resp(2, [1, 1], &txpk)),
            Ok(Packet::PullResp { version: 2, token: [1, 1], json: txpk })
        );
        assert_eq!(push_ack(2, [0xab, 0xcd]), [2, 0xab, 0xcd, 1]);
        assert_eq!(pull_ack(2, [0xab, 0xcd]), [2, 0xab, 0xcd, 4]);
    }

    #[test]
    fn truncations_and_random_bytes_never_panic() {
        let mut all: Vec<Vec<u8>> = samples().iter().map(datagram).collect();
        all.push(build_push_data(2, [0, 0], Eui64(0), &[]));
        for d in &all {
            for cut in 0..=d.len() {
                let _ = parse(&d[..cut]);
            }
        }
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            // Mutate real datagrams (valid header, damaged JSON) and throw in pure noise.
            let mut d = all[i % all.len()].clone();
            if i % 3 == 0 {
                let len = (next() % 64) as usize;
                d = (0..len).map(|_| next() as u8).collect();
            } else if !d.is_empty() {
                for _ in 0..(next() % 4) {
                    let pos = (next() as usize) % d.len();
                    d[pos] = next() as u8;
                }
            }
            let _ = parse(&d);
        }
    }

    #[test]
    fn a_core_downlink_becomes_a_txpk_at_this_edge() {
        use crate::lorawan::region::Window;
        let p = TxParams {
            window: Window::ClassC,
            imme: true,
            tmst: None,
            freq_hz: 869_525_000,
            power_dbm: 27,
            dr: 0,
            sf: 12,
            bw_khz: 125,
            delay: std::time::Duration::ZERO,
        };
        let t = TxPk::from_params(&p, vec![1, 2]);
        assert_eq!(
            (t.imme, t.tmst, t.freq_hz, t.powe, t.sf, t.bw_khz, &t.data[..]),
            (true, None, 869_525_000, 27, 12, 125, &[1u8, 2][..])
        );
        assert_eq!(t.to_json()["txpk"]["datr"], "SF12BW125");
    }

    #[test]
    fn txpk_json() {
        let t = TxPk::lorawan(false, Some(4_000_000_000), 869_525_000, 27, 12, 125, vec![0x60, 1, 2, 3]);
        let d = build_txpk_pull_resp(2, [7, 9], &t);
        let Ok(Packet::PullResp { version: 2, token: [7, 9], json }) = parse(&d) else { panic!("{d:?}") };
        let o = &json["txpk"];
        assert_eq!(o["imme"], false);
        assert_eq!(o["tmst"], 4_000_000_000u32);
        assert_eq!(o["freq"].as_f64(), Some(869.525));
        assert_eq!((o["rfch"].as_u64(), o["powe"].as_i64()), (Some(0), Some(27)));
        assert_eq!(
            (o["modu"].as_str(), o["datr"].as_str(), o["codr"].as_str()),
            (Some("LORA"), Some("SF12BW125"), Some("4/5"))
        );
        assert_eq!((o["ipol"].as_bool(), o["ncrc"].as_bool(), o["size"].as_u64()), (Some(true), Some(true), Some(4)));
        assert_eq!(B64.decode(o["data"].as_str().unwrap()).unwrap(), t.data);
        // Class C: imme, no tmst.
        let c = TxPk { imme: true, ..t.clone() }.to_json();
        assert_eq!(c["txpk"]["imme"], true);
        assert!(c["txpk"].get("tmst").is_none());
        // Every frequency reads back to the same Hz.
        for hz in
            [863_000_000u64, 867_100_000, 868_100_000, 868_300_000, 868_500_000, 869_525_000, 869_999_999, 868_099_975]
        {
            let f = TxPk { freq_hz: hz, ..t.clone() }.to_json()["txpk"]["freq"].as_f64().unwrap();
            assert_eq!((f * 1e6).round() as u64, hz);
        }
    }

    #[test]
    fn tx_ack_classification() {
        assert_eq!(classify_tx_ack(None), TxAckStatus::Ok);
        assert_eq!(classify_tx_ack(Some("NONE")), TxAckStatus::Ok);
        assert_eq!(classify_tx_ack(Some("TOO_LATE")), TxAckStatus::TooLate);
        assert_eq!(classify_tx_ack(Some("too_early")), TxAckStatus::TooEarly);
        assert_eq!(classify_tx_ack(Some("COLLISION_PACKET")), TxAckStatus::CollisionPacket);
        assert_eq!(classify_tx_ack(Some("COLLISION_BEACON")), TxAckStatus::CollisionBeacon);
        assert_eq!(classify_tx_ack(Some("TX_FREQ")), TxAckStatus::TxFreq);
        assert_eq!(classify_tx_ack(Some("TX_POWER")), TxAckStatus::TxPower);
        assert_eq!(classify_tx_ack(Some("GPS_UNLOCKED")), TxAckStatus::GpsUnlocked);
        assert_eq!(classify_tx_ack(Some("HALF_DUPLEX")), TxAckStatus::Unknown("HALF_DUPLEX".into()));
        assert_eq!(TxAckStatus::TooLate.label(), "too_late");
        // Through the parser: the sample's COLLISION_PACKET and a datagram with no JSON.
        let mut d = header(2, [1, 2], TX_ACK, Eui64(3));
        d.extend_from_slice(br#"{"txpk_ack":{"error":"TOO_LATE"}}"#);
        let Ok(Packet::TxAck { error, .. }) = parse(&d) else { panic!() };
        assert_eq!(classify_tx_ack(error.as_deref()), TxAckStatus::TooLate);
        // Random strings and random datagrams never panic.
        let mut x: u64 = 0x5555_aaaa_1234_4321;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 80) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 57)) as u8).collect();
            let s = String::from_utf8_lossy(&bytes);
            let st = classify_tx_ack(Some(&s));
            if let TxAckStatus::Unknown(u) = st {
                assert!(u.chars().count() <= 64);
            }
            let mut d = header(2, [0, 0], TX_ACK, Eui64(0));
            d.extend_from_slice(&bytes);
            if let Ok(Packet::TxAck { error, .. }) = parse(&d) {
                let _ = classify_tx_ack(error.as_deref());
            }
        }
    }
}
