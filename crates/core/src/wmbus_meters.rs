//! Which wireless M-Bus telegrams become readings: the configured meters only (privacy by default).
//!
//! A stick hears every meter in the neighbourhood. [`MeterTable::on_telegram`] reads only the link
//! header (manufacturer, id, type) of each telegram; a telegram from a meter that is not configured
//! goes no further than a count per manufacturer and device type — never decrypted, decoded, logged
//! or published, and its id leaves this function in no value. A configured meter's telegram is
//! decrypted with its key and decoded (`crate::wmbus`); a failure (wrong key, no key for an encrypted
//! telegram, a broken telegram) is an error for that device, never a reading with values.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::ingest::MeterSample;
use crate::keys::Key128;
use crate::reading::WmbusMeta;
use crate::wmbus::{self, WmbusError};

/// A meter configured as a `[[device]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WmbusMeter {
    /// The device name its readings are published under.
    pub device: String,
    /// The meter's 8-digit id.
    pub id: String,
    /// Three-letter manufacturer code; when set, a telegram must also carry it.
    pub manufacturer: Option<String>,
    /// AES-128 key for encrypted telegrams (security mode 5).
    pub key: Option<Key128>,
}

/// What became of one telegram.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// A configured meter's telegram, decoded: hand it to the pipeline.
    Sample(Box<MeterSample>),
    /// Somebody else's meter: count it by manufacturer and device type; nothing else is kept.
    Foreign { manufacturer: String, device_type: &'static str },
    /// A configured meter's telegram that could not be decoded (no key, wrong key, bad telegram).
    Failed { device: String, error: WmbusError },
    /// Not even a link header: count it as noise.
    Unreadable(WmbusError),
}

/// The configured meters by id.
#[derive(Debug, Clone, Default)]
pub struct MeterTable {
    by_id: HashMap<String, Vec<WmbusMeter>>,
}

impl MeterTable {
    pub fn new(meters: impl IntoIterator<Item = WmbusMeter>) -> MeterTable {
        let mut by_id: HashMap<String, Vec<WmbusMeter>> = HashMap::new();
        for m in meters {
            by_id.entry(m.id.clone()).or_default().push(m);
        }
        MeterTable { by_id }
    }

    pub fn len(&self) -> usize {
        self.by_id.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Judges one telegram (L-field first) heard at `at` with `rssi` (dBm).
    pub fn on_telegram(&self, frame: &[u8], rssi: Option<i32>, at: DateTime<Utc>) -> Heard {
        let header = match wmbus::parse_link_header(frame) {
            Ok(h) => h,
            Err(e) => return Heard::Unreadable(e),
        };
        let meter = self.by_id.get(&header.id).and_then(|ms| {
            ms.iter().find(|m| m.manufacturer.as_deref().is_none_or(|want| want.eq_ignore_ascii_case(&header.manufacturer)))
        });
        let Some(meter) = meter else {
            return Heard::Foreign { manufacturer: header.manufacturer, device_type: header.device_type_name() };
        };
        match wmbus::decode_telegram(frame, meter.key.as_ref().map(Key128::expose)) {
            Ok(t) => Heard::Sample(Box::new(MeterSample {
                device: meter.device.clone(),
                at,
                metrics: t.metrics,
                wmbus: Some(WmbusMeta {
                    id: t.header.id.clone(),
                    manufacturer: t.header.manufacturer.clone(),
                    version: t.header.version,
                    device_type: t.header.device_type_name().to_string(),
                    access_number: t.access_number,
                    rssi,
                }),
            })),
            Err(error) => Heard::Failed { device: meter.device.clone(), error },
        }
    }
}
