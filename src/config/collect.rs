//! Deserializing one table of the spanned document with serde, collecting every problem.
//!
//! serde stops at the first error. To find them all, a table is deserialized again after each error
//! with the offending entry removed (an unknown key, a value of the wrong type or syntax, a nested
//! table that lacks a required key), until it deserializes or a required key of the table itself is
//! missing. serde visits entries in order and checks for missing fields only at the end, so every
//! unknown key and bad value in the table is found. Positions come from the error's span, which the
//! `toml` deserializer sets to the offending key or value.

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::problem::Sink;
use super::spans::{locate, remove_by_span, Doc, KeyPath};

/// Bound on retries per table (each retry removes one entry, so this is never reached in practice).
const MAX_ROUNDS: usize = 512;

/// Deserializes `node` (at `base` in `doc`) into `T`, reporting every problem to `sink`. Returns the
/// value if it could be built, possibly without the entries that had problems.
pub(crate) fn de_collect<T: DeserializeOwned>(
    doc: &Doc<'_>,
    node: &Spanned<DeValue<'_>>,
    base: &KeyPath,
    sink: &mut Sink,
) -> Option<T> {
    let mut work = node.clone();
    for _ in 0..MAX_ROUNDS {
        let err = match T::deserialize(ValueDeserializer::from(work.clone())) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let msg = err.message().to_string();
        let Some(span) = err.span() else {
            sink.push(doc.at(Some(node.span().start), true), base.clone(), clean_message(&msg));
            return None;
        };
        let rel = locate(node, &span).unwrap_or_default();
        let path = base.join(&rel);
        let at = doc.at(Some(span.start), true);
        if let Some(field) = missing_field(&msg) {
            sink.push(at, path.key(field), "required key is missing");
            if rel.is_root() {
                return None;
            }
        } else if msg.starts_with("unknown field") {
            sink.push(at, path, unknown_key_message(&msg));
        } else {
            sink.push(at, path, clean_message(&msg));
            if rel.is_root() {
                return None;
            }
        }
        if !remove_by_span(&mut work, &span) {
            return None;
        }
    }
    None
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")?.split('`').next()
}

fn unknown_key_message(msg: &str) -> String {
    // "unknown field `foo`, expected one of `a`, `b`" / "unknown field `foo`, there are no fields"
    match msg.split_once(", expected ") {
        Some((_, known)) => format!("unknown key (expected {known})"),
        None => "unknown key".to_string(),
    }
}

/// Rewrites serde's messages into the config's vocabulary and drops the offending value from them
/// (`invalid type: string "…", expected u32`), so that no message can echo a secret.
pub(crate) fn clean_message(msg: &str) -> String {
    let msg = msg.trim();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "?"));
            let found = found.split([' ', '`', '"']).next().unwrap_or(found).trim();
            let expected = expected_in_words(expected);
            return if prefix == "invalid type: " {
                format!("expected {expected}, found {}", found_in_words(found))
            } else {
                format!("out of range: expected {expected}")
            };
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        return format!("unknown value {rest}");
    }
    msg.to_string()
}

fn found_in_words(found: &str) -> &str {
    match found {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a float",
        "boolean" => "a boolean",
        "map" => "a table",
        "sequence" => "an array",
        "unit" => "nothing",
        other => other,
    }
}

fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" => "an integer 0..=255".into(),
        "u16" => "an integer 0..=65535".into(),
        "u32" => "an integer 0..=4294967295".into(),
        "u64" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e if e.starts_with("enum ") || e.starts_with("variant ") => "a string".into(),
        e if e.starts_with("a string") || e.starts_with("a ") || e.starts_with("an ") => e.into(),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_echo_values() {
        assert_eq!(
            clean_message("invalid type: string \"0f0e0d\", expected u32"),
            "expected an integer 0..=4294967295, found a string"
        );
        assert_eq!(
            clean_message("invalid type: integer `12345`, expected a string of 32 hex digits"),
            "expected a string of 32 hex digits, found an integer"
        );
        assert_eq!(
            clean_message("invalid type: integer `5`, expected struct GatewayConfig"),
            "expected a table, found an integer"
        );
        assert_eq!(
            clean_message("invalid value: integer `300`, expected u8"),
            "out of range: expected an integer 0..=255"
        );
        assert_eq!(
            unknown_key_message("unknown field `foo`, expected `a` or `b`"),
            "unknown key (expected `a` or `b`)"
        );
        assert_eq!(missing_field("missing field `id`"), Some("id"));
    }
}
