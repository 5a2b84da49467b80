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
#[derive(Debug, Clone)]
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
            ms.iter()
                .find(|m| m.manufacturer.as_deref().is_none_or(|want| want.eq_ignore_ascii_case(&header.manufacturer)))
        });
        let Some(meter) = meter else {
            let device_type = header.device_type_name();
            return Heard::Foreign { manufacturer: header.manufacturer, device_type };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Plaintext (config word 0) water meter telegrams: KAM 12345678 and DME 87654321, volume 1234 l.
    const OURS: &str = "14442D2C785634121B077A420000000413D2040000";
    const FOREIGN: &str = "1444A511214365871B077A420000000413D2040000";

    fn table(key: Option<Key128>, manufacturer: Option<&str>) -> MeterTable {
        MeterTable::new([WmbusMeter {
            device: "water-1".into(),
            id: "12345678".into(),
            manufacturer: manufacturer.map(str::to_string),
            key,
        }])
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_configured_meter_becomes_a_sample_with_its_identity() {
        let t = table(None, Some("KAM"));
        let Heard::Sample(s) = t.on_telegram(&hex::decode(OURS).unwrap(), Some(-70), at()) else {
            panic!("{:?}", t.on_telegram(&hex::decode(OURS).unwrap(), Some(-70), at()))
        };
        assert_eq!(s.device, "water-1");
        let meta = s.wmbus.clone().unwrap();
        assert_eq!((meta.id.as_str(), meta.manufacturer.as_str(), meta.version), ("12345678", "KAM", 0x1B));
        assert_eq!((meta.device_type.as_str(), meta.access_number, meta.rssi), ("water", Some(0x42), Some(-70)));
        assert_eq!(s.metrics.get("volume_m3").and_then(|v| v.as_f64()), Some(1.234));
    }

    #[test]
    fn other_meters_are_only_a_manufacturer_and_a_type() {
        let t = table(None, None);
        let heard = t.on_telegram(&hex::decode(FOREIGN).unwrap(), None, at());
        assert!(
            matches!(&heard, Heard::Foreign { manufacturer, device_type: "water" } if manufacturer == "DME"),
            "{heard:?}"
        );
        // Same id, another manufacturer than configured: not ours either.
        let t = table(None, Some("DME"));
        assert!(matches!(t.on_telegram(&hex::decode(OURS).unwrap(), None, at()), Heard::Foreign { .. }));
        assert!(matches!(t.on_telegram(&[0x02, 0x44], None, at()), Heard::Unreadable(_)));
    }

    #[test]
    fn a_wrong_key_is_a_failure_not_a_reading() {
        // kadenwater 19228217 (security mode 5) from wmbusmeters' driver tests, with a wrong key.
        let frame = hex::decode("4e448e2c1782221901077ab5004005339341ab7927f9337cd2175b2f0d12").unwrap();
        let cases: serde_json::Value = serde_json::from_slice(
            &std::fs::read(crate::test_support::vectors_dir().join("wmbus/wmbusmeters_driver_tests.json")).unwrap(),
        )
        .unwrap();
        let full = cases
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["telegrams"][0].as_str())
            .find(|t| hex::decode(t).is_ok_and(|b| b.starts_with(&frame)))
            .map(|t| hex::decode(t).unwrap())
            .unwrap();
        let wrong = Key128::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        let t = MeterTable::new([WmbusMeter {
            device: "w".into(),
            id: "19228217".into(),
            manufacturer: None,
            key: Some(wrong),
        }]);
        match t.on_telegram(&full, None, at()) {
            Heard::Failed { device, .. } => assert_eq!(device, "w"),
            other => panic!("{other:?}"),
        }
        let right = Key128::from_hex("82B0551191F51D66EFCDAB8967452301").unwrap();
        let t = MeterTable::new([WmbusMeter {
            device: "w".into(),
            id: "19228217".into(),
            manufacturer: None,
            key: Some(right),
        }]);
        assert!(matches!(t.on_telegram(&full, None, at()), Heard::Sample(_)));
    }
}
