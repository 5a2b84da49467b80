//! SML 1.04 message layer: type-length-field (TL) encoding and the messages a meter pushes
//! (OpenResponse, GetListResponse, CloseResponse; anything else is kept as a generic tree).
//!
//! TL byte: `m ttt llll` — `m` = another TL byte follows (its `ttt` must be 000, its `llll` extends the
//! length), `ttt` = 000 octet string, 100 boolean, 101 signed integer, 110 unsigned integer, 111 list.
//! For scalars the length counts the TL bytes too; for lists it is the number of elements. `0x01` is an
//! absent optional value, `0x00` ends a message.
//!
//! The parser first reads a generic value tree and then interprets it leniently where real meters deviate
//! (e.g. Holley DTZ541-ZDBA sends `valTime` as a bare integer instead of an `SML_Time` choice): only the
//! fields we need are type-checked. Integers of any width from 1 to 8 bytes are accepted (3-, 5-, 6- and
//! 7-byte integers occur in the wild).
//!
//! Message CRC (`crc16` field, present in every message of every real dump): CRC-16/X-25 over the
//! message's bytes from its first TL byte up to, not including, the `crc16` field. The two CRC bytes are
//! sent low byte first, exactly like the transport CRC, so the field's value read as the big-endian SML
//! `Unsigned16` is the byte-swapped CRC (libsml does the same swap). All 681 messages in the 227 good
//! frames of the 37 real dumps verify this way (Itron included), none the other way.
//! The result is reported in [`SmlMessage::crc_ok`] but a mismatch does **not** reject the message: the
//! transport CRC already proves the frame arrived as sent, and generated frames that patch values and
//! recompute only the transport CRC exist (the sml_parser test vectors test_EMH, test_56bit,
//! test_negative, whose values smllib decodes too). Callers that want strictness can check `crc_ok`.

use super::crc::crc16_x25;
use super::SmlError;

/// Nesting bound: real SML trees are at most ~6 levels deep.
const MAX_DEPTH: usize = 16;

/// A decoded SML value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmlValue {
    /// `0x01`: an optional value that is not set.
    Absent,
    Octets(Vec<u8>),
    Bool(bool),
    /// A signed integer and its encoded width in bytes (1..=8).
    Int {
        value: i64,
        bytes: u8,
    },
    /// An unsigned integer and its encoded width in bytes (1..=8).
    UInt {
        value: u64,
        bytes: u8,
    },
    List(Vec<SmlValue>),
}

impl SmlValue {
    pub fn as_octets(&self) -> Option<&[u8]> {
        match self {
            SmlValue::Octets(o) => Some(o),
            SmlValue::Absent => Some(&[]),
            _ => None,
        }
    }

    /// An integer of either signedness, widened.
    pub fn as_i128(&self) -> Option<i128> {
        match *self {
            SmlValue::Int { value, .. } => Some(i128::from(value)),
            SmlValue::UInt { value, .. } => Some(i128::from(value)),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, SmlValue::Absent)
    }
}

/// One SML message (`SML_Message`).
#[derive(Debug, Clone, PartialEq)]
pub struct SmlMessage {
    pub transaction_id: Vec<u8>,
    pub group_no: u8,
    pub abort_on_error: u8,
    pub body: SmlBody,
    /// The `crc16` field as sent (the big-endian integer), if the meter sent one.
    pub crc: Option<u16>,
    /// Whether `crc` verifies; `None` when no CRC was sent. A mismatch does not reject the message.
    pub crc_ok: Option<bool>,
}

/// SML message body tags (`SML_MessageBody`).
pub mod tag {
    pub const OPEN_REQUEST: u32 = 0x0100;
    pub const OPEN_RESPONSE: u32 = 0x0101;
    pub const CLOSE_REQUEST: u32 = 0x0200;
    pub const CLOSE_RESPONSE: u32 = 0x0201;
    pub const GET_PROFILE_PACK_RESPONSE: u32 = 0x0301;
    pub const GET_PROFILE_LIST_RESPONSE: u32 = 0x0401;
    pub const GET_PROC_PARAMETER_RESPONSE: u32 = 0x0501;
    pub const GET_LIST_REQUEST: u32 = 0x0700;
    pub const GET_LIST_RESPONSE: u32 = 0x0701;
    pub const ATTENTION_RESPONSE: u32 = 0xFF01;
}

#[derive(Debug, Clone, PartialEq)]
pub enum SmlBody {
    OpenResponse(OpenResponse),
    GetListResponse(GetListResponse),
    CloseResponse(CloseResponse),
    /// Any other body, undecoded.
    Other {
        tag: u32,
        value: SmlValue,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenResponse {
    pub codepage: Option<Vec<u8>>,
    pub client_id: Option<Vec<u8>>,
    pub req_file_id: Vec<u8>,
    pub server_id: Vec<u8>,
    pub ref_time: Option<SmlValue>,
    pub sml_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CloseResponse {
    pub global_signature: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GetListResponse {
    pub client_id: Option<Vec<u8>>,
    pub server_id: Vec<u8>,
    pub list_name: Option<Vec<u8>>,
    /// `SML_Time` as sent (usually a choice list `[tag, secIndex|timestamp]`), uninterpreted.
    pub act_sensor_time: Option<SmlValue>,
    pub entries: Vec<ListEntry>,
    pub list_signature: Option<Vec<u8>>,
    pub act_gateway_time: Option<SmlValue>,
}

/// `SML_ListEntry`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub obj_name: Vec<u8>,
    pub status: Option<u64>,
    pub val_time: Option<SmlValue>,
    /// DLMS unit code (27 W, 30 Wh, 33 A, 35 V, 44 Hz, ...).
    pub unit: Option<u8>,
    pub scaler: Option<i8>,
    pub value: SmlValue,
    pub value_signature: Option<Vec<u8>>,
}

/// Parse the payload of one transport frame (as [`crate::meter::FrameEvent::Frame`] yields it) into its
/// messages. Zero bytes between or after messages are skipped.
pub fn parse_frame(frame: &[u8]) -> Result<Vec<SmlMessage>, SmlError> {
    let mut r = Reader { data: frame, pos: 0 };
    let mut messages = Vec::new();
    loop {
        while r.peek() == Some(0) {
            r.pos += 1;
        }
        if r.peek().is_none() {
            return Ok(messages);
        }
        messages.push(parse_message(&mut r)?);
    }
}

fn parse_message(r: &mut Reader<'_>) -> Result<SmlMessage, SmlError> {
    let start = r.pos;
    let (ty, len, _) = r.tl()?;
    if ty != TY_LIST || len != 6 {
        return Err(r.malformed(start, "message is not a list of 6"));
    }
    let tx_at = r.pos;
    let transaction_id = octets_req(r.value(1)?, r, tx_at, "transactionId")?;
    let at = r.pos;
    let group_no = small_uint(&r.value(1)?).ok_or_else(|| r.malformed(at, "groupNo"))?;
    let at = r.pos;
    let abort_on_error = small_uint(&r.value(1)?).ok_or_else(|| r.malformed(at, "abortOnError"))?;
    let at = r.pos;
    let body = parse_body(r.value(1)?).ok_or_else(|| r.malformed(at, "messageBody"))?;
    let crc_at = r.pos;
    let crc = match r.value(1)? {
        SmlValue::Absent => None,
        SmlValue::UInt { value, .. } => Some(u16::try_from(value).map_err(|_| r.malformed(crc_at, "crc16"))?),
        _ => return Err(r.malformed(crc_at, "crc16")),
    };
    let end_at = r.pos;
    if r.byte()? != 0 {
        return Err(r.malformed(end_at, "missing endOfSmlMsg"));
    }
    // The crc16 field carries the CRC bytes low byte first, like the transport CRC; read as the
    // (big-endian) SML integer it is the byte-swapped CRC.
    let crc_ok = crc.map(|sent| sent == crc16_x25(r.data.get(start..crc_at).unwrap_or_default()).swap_bytes());
    Ok(SmlMessage { transaction_id, group_no, abort_on_error, body, crc, crc_ok })
}

fn octets_req(v: SmlValue, r: &Reader<'_>, at: usize, what: &'static str) -> Result<Vec<u8>, SmlError> {
    match v {
        SmlValue::Octets(o) => Ok(o),
        SmlValue::Absent => Ok(Vec::new()),
        _ => Err(r.malformed(at, what)),
    }
}

fn octets_opt(v: &SmlValue) -> Option<Vec<u8>> {
    match v {
        SmlValue::Octets(o) => Some(o.clone()),
        _ => None,
    }
}

fn present(v: &SmlValue) -> Option<SmlValue> {
    (!v.is_absent()).then(|| v.clone())
}

fn small_uint(v: &SmlValue) -> Option<u8> {
    match *v {
        SmlValue::UInt { value, .. } => u8::try_from(value).ok(),
        SmlValue::Int { value, .. } => u8::try_from(value).ok(),
        _ => None,
    }
}

fn parse_body(v: SmlValue) -> Option<SmlBody> {
    let SmlValue::List(items) = v else {
        return None;
    };
    let [tag_v, body] = <[SmlValue; 2]>::try_from(items).ok()?;
    let tag = match tag_v {
        SmlValue::UInt { value, .. } => u32::try_from(value).ok()?,
        _ => return None,
    };
    let decoded = match (tag, &body) {
        (tag::OPEN_RESPONSE, SmlValue::List(f)) if f.len() >= 4 => SmlBody::OpenResponse(OpenResponse {
            codepage: f.first().and_then(octets_opt),
            client_id: f.get(1).and_then(octets_opt),
            req_file_id: f.get(2).and_then(octets_opt).unwrap_or_default(),
            server_id: f.get(3).and_then(octets_opt).unwrap_or_default(),
            ref_time: f.get(4).and_then(present),
            sml_version: f.get(5).and_then(|v| match *v {
                SmlValue::UInt { value, .. } => Some(value),
                _ => None,
            }),
        }),
        (tag::CLOSE_RESPONSE, SmlValue::List(f)) => {
            SmlBody::CloseResponse(CloseResponse { global_signature: f.first().and_then(octets_opt) })
        }
        (tag::GET_LIST_RESPONSE, SmlValue::List(f)) if f.len() >= 5 => {
            let SmlValue::List(raw_entries) = f.get(4)? else {
                return None;
            };
            let entries = raw_entries.iter().map(parse_entry).collect::<Option<Vec<_>>>()?;
            SmlBody::GetListResponse(GetListResponse {
                client_id: f.first().and_then(octets_opt),
                server_id: f.get(1).and_then(octets_opt).unwrap_or_default(),
                list_name: f.get(2).and_then(octets_opt),
                act_sensor_time: f.get(3).and_then(present),
                entries,
                list_signature: f.get(5).and_then(octets_opt),
                act_gateway_time: f.get(6).and_then(present),
            })
        }
        _ => SmlBody::Other { tag, value: body },
    };
    Some(decoded)
}

fn parse_entry(v: &SmlValue) -> Option<ListEntry> {
    let SmlValue::List(f) = v else {
        return None;
    };
    if f.len() < 6 {
        return None;
    }
    let obj_name = f.first()?.as_octets()?.to_vec();
    let status = match f.get(1)? {
        SmlValue::UInt { value, .. } => Some(*value),
        _ => None,
    };
    let unit = match f.get(3)? {
        SmlValue::Absent => None,
        other => Some(small_uint(other)?),
    };
    let scaler = match *f.get(4)? {
        SmlValue::Absent => None,
        SmlValue::Int { value, .. } => Some(i8::try_from(value).ok()?),
        SmlValue::UInt { value, .. } => Some(i8::try_from(value).ok()?),
        _ => return None,
    };
    Some(ListEntry {
        obj_name,
        status,
        val_time: f.get(2).and_then(present),
        unit,
        scaler,
        value: f.get(5)?.clone(),
        value_signature: f.get(6).and_then(octets_opt),
    })
}

const TY_OCTETS: u8 = 0;
const TY_BOOL: u8 = 4;
const TY_INT: u8 = 5;
const TY_UINT: u8 = 6;
const TY_LIST: u8 = 7;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8, SmlError> {
        let b = self.peek().ok_or(SmlError::Truncated { offset: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SmlError> {
        let end = self.pos.checked_add(n).ok_or(SmlError::Truncated { offset: self.pos })?;
        let s = self.data.get(self.pos..end).ok_or(SmlError::Truncated { offset: self.pos })?;
        self.pos = end;
        Ok(s)
    }

    fn malformed(&self, offset: usize, what: &'static str) -> SmlError {
        SmlError::Malformed { offset, what }
    }

    /// Reads a TL field: (type, length, number of TL bytes).
    fn tl(&mut self) -> Result<(u8, usize, usize), SmlError> {
        let offset = self.pos;
        let first = self.byte()?;
        let ty = (first >> 4) & 0x07;
        let mut len = usize::from(first & 0x0f);
        let mut more = first & 0x80 != 0;
        let mut n = 1;
        while more {
            let b = self.byte()?;
            n += 1;
            if b & 0x70 != 0 || n > 6 {
                return Err(SmlError::InvalidTl { offset, tl: first });
            }
            len = (len << 4) | usize::from(b & 0x0f);
            more = b & 0x80 != 0;
        }
        Ok((ty, len, n))
    }

    fn value(&mut self, depth: usize) -> Result<SmlValue, SmlError> {
        if depth > MAX_DEPTH {
            return Err(SmlError::TooDeep { offset: self.pos });
        }
        let offset = self.pos;
        let (ty, len, n) = self.tl()?;
        let bad_tl = || SmlError::InvalidTl { offset, tl: self.data.get(offset).copied().unwrap_or(0) };
        match ty {
            TY_LIST => {
                // Every element takes at least one byte: refuse impossible counts before allocating.
                if len > self.data.len().saturating_sub(self.pos) {
                    return Err(SmlError::Truncated { offset });
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(depth + 1)?);
                }
                Ok(SmlValue::List(items))
            }
            TY_OCTETS => {
                if len == 0 {
                    return Err(SmlError::Malformed { offset, what: "unexpected endOfSmlMsg" });
                }
                let data_len = len.checked_sub(n).ok_or_else(bad_tl)?;
                if len == 1 && n == 1 {
                    return Ok(SmlValue::Absent);
                }
                Ok(SmlValue::Octets(self.take(data_len)?.to_vec()))
            }
            TY_BOOL => {
                let data = self.take(len.checked_sub(n).ok_or_else(bad_tl)?)?;
                match data {
                    [b] => Ok(SmlValue::Bool(*b != 0)),
                    _ => Err(bad_tl()),
                }
            }
            TY_INT | TY_UINT => {
                let data_len = len.checked_sub(n).ok_or_else(bad_tl)?;
                if !(1..=8).contains(&data_len) {
                    return Err(SmlError::BadInteger { offset, bytes: data_len });
                }
                let data = self.take(data_len)?;
                let bytes = data_len as u8;
                if ty == TY_UINT {
                    let value = data.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
                    Ok(SmlValue::UInt { value, bytes })
                } else {
                    let negative = data.first().is_some_and(|&b| b & 0x80 != 0);
                    let init: i64 = if negative { -1 } else { 0 };
                    let value = data.iter().fold(init, |a, &b| (a << 8) | i64::from(b));
                    Ok(SmlValue::Int { value, bytes })
                }
            }
            _ => Err(bad_tl()),
        }
    }
}
