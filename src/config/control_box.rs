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

    use crate::config::{parse_str, ConfigErrors, ConfigProblem};
    use std::path::Path;

    const HEAD: &str = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n\
        [[source]]\ntype = \"sml\"\nport = \"/dev/ttyUSB0\"\ndevice = \"feeder\"\n\
        [power_fail]\npin = 6\n\
        [demand_response]\nmeter = \"feeder\"\nlimit_kw = 100.0\n\
        [[demand_response.load]]\nname = \"hp-1\"\nkind = \"sg-ready\"\nrated_kw = 6.0\npriority = 1\n\
        output = { type = \"gpio\", pins = [17, 27] }\n\
        [[demand_response.load]]\nname = \"wb-1\"\nkind = \"setpoint\"\nrated_kw = 11.0\npriority = 2\n";

    fn parse(body: &str) -> Result<crate::config::Config, Vec<ConfigProblem>> {
        parse_str(&format!("{HEAD}{body}"), "t.toml", Path::new("")).map_err(|e| e.0)
    }

    /// The problem at `key`, and the 1-based line of the text that starts with `starts`.
    fn at<'p>(ps: &'p [ConfigProblem], key: &str, body: &str, starts: &str) -> (&'p ConfigProblem, usize) {
        let p = ps
            .iter()
            .find(|p| p.key_path == key)
            .unwrap_or_else(|| panic!("no problem at {key}:\n{}", ConfigErrors(ps.to_vec())));
        let text = format!("{HEAD}{body}");
        let line = text.lines().position(|l| l.starts_with(starts)).map(|n| n + 1).unwrap_or(0);
        (p, line)
    }

    #[test]
    fn the_box_is_read_and_checked_at_its_keys() {
        let ok = "[demand_response.control_box]\npins = [22, 23]\nstages = [1.0, 0.5, 0.0, 0.0]\n\
                  [[demand_response.control_box.connection]]\nname = \"house-7\"\nloads = [\"hp-1\", \"wb-1\"]\n";
        let c = parse(ok).unwrap_or_else(|ps| panic!("{}", ConfigErrors(ps)));
        let cb = c.demand_response.as_ref().and_then(|d| d.control_box.clone()).expect("read");
        assert_eq!((cb.pins.clone(), cb.active_low, cb.debounce_ms), (vec![22, 23], true, 200));
        assert_eq!(cb.connection[0].loads, ["hp-1", "wb-1"]);
        let shown: crate::config::Config = toml::from_str(&c.redacted_toml()).expect("shown config reads back");
        assert_eq!(shown.demand_response.and_then(|d| d.control_box), Some(cb));

        // Pins another part uses: a relay, the power-fail input.
        let body = "[demand_response.control_box]\npins = [27, 6]\n";
        let ps = parse(body).unwrap_err();
        let (relay, line) = at(&ps, "demand_response.control_box.pins[0]", body, "pins = [27");
        assert_eq!((relay.line, relay.col), (line, 9), "{relay:?}");
        assert!(relay.message.contains("pin 27 is already used by load[0]"), "{}", relay.message);
        let (pf, _) = at(&ps, "demand_response.control_box.pins[1]", body, "pins = [27");
        assert_eq!((pf.line, pf.col, pf.message.as_str()), (line, 13, "pin 6 is already used by power_fail.pin"));
        assert_eq!(ps.len(), 2, "{}", ConfigErrors(ps.clone()));

        // The loop's own checks, each at its key.
        let body = "[demand_response.control_box]\npins = [22]\nstages = [1.0, 2.0]\n\
                    [[demand_response.control_box.connection]]\nname = \"h\"\nloads = [\"wb-1\", \"nope\"]\n";
        let ps = parse(body).unwrap_err();
        let (stage, line) = at(&ps, "demand_response.control_box.stages[1]", body, "stages = ");
        assert_eq!((stage.line, stage.col), (line, 16));
        assert!(stage.message.contains("expected a share 0..=1"), "{}", stage.message);
        let (load, line) = at(&ps, "demand_response.control_box.connection[0].loads[1]", body, "loads = ");
        assert_eq!((load.line, load.col), (line, 18));
        assert!(load.message.contains("no demand_response.load is named \"nope\""), "{}", load.message);

        // Unknown keys are errors.
        let body = "[demand_response.control_box]\npins = [22]\npin = 3\n";
        let ps = parse(body).unwrap_err();
        let (unknown, line) = at(&ps, "demand_response.control_box.pin", body, "pin = 3");
        assert_eq!(unknown.line, line, "{}", ConfigErrors(ps.clone()));
    }

    #[test]
    fn problem_keys_become_key_paths() {
        let p = key_path("demand_response.control_box.connection[1].loads[0]").expect("parses");
        assert_eq!(p.to_string(), "demand_response.control_box.connection[1].loads[0]");
        assert_eq!(key_path("a.b[2][3]").map(|p| p.to_string()).as_deref(), Some("a.b[2][3]"));
        assert!(key_path("a..b").is_none());
        assert!(key_path("a.b[x]").is_none());
    }
}
