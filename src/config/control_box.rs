//! The checks of `[demand_response.control_box]` that need the rest of the config: its pins are BCM
//! pins no other part drives or reads (an SX127x's reset and DIO0 lines, the power-fail input; the
//! demand-response relays are checked by the loop's own validation). And the loop's own problems with
//! the section are reported at their exact key.

use super::problem::Sink;
use super::schema::{PowerFailConfig, SourceConfig};
use super::spans::{Doc, KeyPath};
use crate::control::demand::ControlBoxParams;

pub(super) fn check(
    doc: &Doc<'_>,
    cb: &ControlBoxParams,
    sources: &[(usize, SourceConfig)],
    power_fail: Option<&PowerFailConfig>,
    sink: &mut Sink,
) {
    let p = KeyPath::root().key("demand_response").key("control_box").key("pins");
    for (j, &pin) in cb.pins.iter().enumerate() {
        let Ok(pin) = u8::try_from(pin) else { continue }; // out of range: the loop's check says so
        let user = match power_fail {
            Some(pf) if pf.pin == pin => Some("power_fail.pin".to_string()),
            _ => super::power_fail::pin_user(pin, sources, &[]),
        };
        if let Some(user) = user {
            doc.problem(sink, p.index(j), format!("pin {pin} is already used by {user}"));
        }
    }
}

/// `demand_response.control_box.connection[1].loads[0]` as a key path (None: not of that shape).
pub(super) fn key_path(key: &str) -> Option<KeyPath> {
    let mut path = KeyPath::root();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if name.is_empty() {
            return None;
        }
        path = path.key(name);
        while !rest.is_empty() {
            let (n, after) = rest.split_once(']')?;
            path = path.index(n.parse().ok()?);
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_keys_become_key_paths() {
        let p = key_path("demand_response.control_box.connection[1].loads[0]").expect("parses");
        assert_eq!(p.to_string(), "demand_response.control_box.connection[1].loads[0]");
        assert_eq!(key_path("a.b[2][3]").map(|p| p.to_string()).as_deref(), Some("a.b[2][3]"));
        assert!(key_path("a..b").is_none());
        assert!(key_path("a.b[x]").is_none());
    }
}
