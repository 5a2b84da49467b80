//! The checks of a wireless M-Bus meter's `[[device]]` (`profile = "wmbus"`): an 8-digit
//! `wmbus_id`, an optional three-letter `manufacturer`, an optional `aes_key`, and no LoRaWAN keys.

use super::problem::Sink;
use super::schema::DeviceConfig;
use super::spans::{Doc, KeyPath};

/// The profile of wireless M-Bus meters.
pub const WMBUS_PROFILE: &str = "wmbus";
/// The keys only a wireless M-Bus meter has.
pub(super) const WMBUS_KEYS: [&str; 3] = ["wmbus_id", "manufacturer", "aes_key"];
/// The keys only a LoRaWAN device has.
const LORAWAN_KEYS: [&str; 8] =
    ["dev_addr", "nwk_s_key", "app_s_key", "dev_eui", "join_eui", "app_key", "class", "relax_fcnt"];

/// `written`: the wM-Bus keys present in the file for this device.
pub(super) fn check_meter(doc: &Doc<'_>, p: &KeyPath, d: &DeviceConfig, written: &[&str], sink: &mut Sink) {
    if d.profile != WMBUS_PROFILE {
        for k in written {
            doc.problem(
                sink,
                p.key(k),
                format!(
                    "is a wireless M-Bus meter key: set profile = \"{WMBUS_PROFILE}\" (profile is {:?})",
                    d.profile
                ),
            );
        }
        return;
    }
    match &d.wmbus_id {
        None => {
            doc.problem(sink, p.key("wmbus_id"), "required key is missing (the meter's 8-digit id, e.g. \"12345678\")")
        }
        Some(id) if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_digit()) => doc.problem(
            sink,
            p.key("wmbus_id"),
            format!("expected the meter's 8-digit id, e.g. \"12345678\", got {id:?}"),
        ),
        Some(_) => {}
    }
    if let Some(m) = &d.manufacturer {
        if m.len() != 3 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            doc.problem(sink, p.key("manufacturer"), format!("expected a three-letter code like \"KAM\", got {m:?}"));
        }
    }
    for k in LORAWAN_KEYS {
        if doc.has(p, k) {
            doc.problem(sink, p.key(k), "is a LoRaWAN key; a wireless M-Bus meter (profile = \"wmbus\") has none");
        }
    }
}
