//! The reading: one decoded uplink or meter value, as the city receives it on `reading/{device}`.
//!
//! Pure data: built by the core from values it is given (including the time), serialised with serde_json.
//! The JSON field names are pinned by PRODUCT.md ("A reading").

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// Radio metadata of a LoRaWAN reading. Absent for meters and other non-LoRa sources.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoraMeta {
    pub dev_addr: String,
    pub f_cnt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f_port: Option<u8>,
    /// The decrypted FRMPayload.
    pub payload_hex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snr: Option<f64>,
    pub freq_hz: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sf: Option<u8>,
}

pub use crate::ingest::WmbusMeta;

/// One reading, built once by the core. Its `seq` is not part of it: the shell allocates the seq when
/// it journals the reading and hands it to [`Reading::to_json`], which writes the pinned JSON (`seq`
/// first, `at` as RFC 3339 with milliseconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reading {
    pub gateway: String,
    pub device: String,
    pub profile: String,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: DateTime<Utc>,
    pub metrics: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lorawan: Option<LoraMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wmbus: Option<WmbusMeta>,
    /// Set when the payload could not be decoded; the raw payload is still in `lorawan.payload_hex`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `warnings` and `errors` a decoder (e.g. a TTN JavaScript codec) reported alongside its metrics.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Reading {
    pub fn topic(&self) -> crate::topic::Topic {
        crate::topic::Topic::Reading(self.device.clone())
    }

    /// A smart-meter sample as a reading (profile `sml`, no radio metadata).
    pub fn from_meter(gateway: &str, device: &str, at: DateTime<Utc>, metrics: Map<String, Value>) -> Reading {
        Reading::from_sample(gateway, crate::ingest::MeterSample { device: device.into(), at, metrics, wmbus: None })
    }

    /// A meter sample as a reading: profile `sml` for an SML meter, `wmbus` (with its `wmbus` object)
    /// for a wireless M-Bus meter.
    pub fn from_sample(gateway: &str, s: crate::ingest::MeterSample) -> Reading {
        Reading {
            gateway: gateway.to_string(),
            device: s.device,
            profile: if s.wmbus.is_some() { "wmbus".into() } else { "sml".into() },
            at: s.at,
            metrics: s.metrics,
            lorawan: None,
            wmbus: s.wmbus,
            error: None,
            warnings: vec![],
            errors: vec![],
        }
    }

    /// The message the city receives, journaled under `seq`.
    pub fn to_json(&self, seq: u64) -> Vec<u8> {
        #[derive(Serialize)]
        struct WithSeq<'a> {
            seq: u64,
            #[serde(flatten)]
            reading: &'a Reading,
        }
        // Serialising a struct of strings, numbers and maps cannot fail; fall back to an empty object
        // rather than panic if it ever did.
        serde_json::to_vec(&WithSeq { seq, reading: self }).unwrap_or_else(|_| b"{}".to_vec())
    }
}

fn serialize_rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// RFC 3339 UTC with milliseconds, the time format of every payload.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Marks a journaled JSON object as replayed from the backlog by appending `"replayed":true`.
///
/// The journal stores the payload exactly as it would go out live; splicing the flag in at publish time
/// avoids a parse/serialise round trip for every replayed message.
pub fn mark_replayed(payload: &[u8]) -> Vec<u8> {
    let trimmed_len = payload.iter().rposition(|b| *b == b'}');
    match trimmed_len {
        Some(end) => {
            let head = &payload[..end];
            let empty_object = head.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let mut out = Vec::with_capacity(payload.len() + 17);
            out.extend_from_slice(head);
            out.extend_from_slice(if empty_object { b"\"replayed\":true}" } else { b",\"replayed\":true}" });
            out
        }
        None => payload.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_flag_is_spliced_into_valid_json() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T03:10:00.123Z").unwrap().with_timezone(&Utc);
        let r = Reading::from_meter("g", "d", at, Map::new());
        let json = r.to_json(7);
        // The pinned shape: seq first, the time as RFC 3339 with milliseconds.
        assert!(
            json.starts_with(br#"{"seq":7,"gateway":"g","device":"d","profile":"sml","at":"2026-11-26T03:10:00.123Z""#)
        );
        let v: Value = serde_json::from_slice(&mark_replayed(&json)).unwrap();
        assert_eq!(v["replayed"], Value::Bool(true));
        assert_eq!(v["seq"], 7);
        let v: Value = serde_json::from_slice(&mark_replayed(b"{}")).unwrap();
        assert_eq!(v["replayed"], Value::Bool(true));
    }

    #[test]
    fn time_format_is_rfc3339_millis_utc() {
        let t = DateTime::from_timestamp_millis(1_795_000_000_123).unwrap();
        assert!(rfc3339(t).ends_with(".123Z"));
    }
}
