//! The checks of `[power_fail]`: the pin is a BCM pin no other part of the config drives or reads
//! (demand-response relays, an SX127x's reset and DIO0 lines), and the debounce time is short
//! enough to react to a power cut.

use super::problem::Sink;
use super::schema::{LoadConfig, PowerFailConfig, SourceConfig};
use super::spans::{Doc, KeyPath};
use crate::control::demand::params::OutputSpec;

/// Highest BCM GPIO number (the SoC's; the 40-pin header has 0..=27).
const MAX_BCM_PIN: u8 = 53;
/// Longest debounce time: a longer one only delays the fsync the input is there for.
const MAX_DEBOUNCE_MS: u64 = 5_000;

pub(super) fn check(
    doc: &Doc<'_>,
    pf: &PowerFailConfig,
    sources: &[(usize, SourceConfig)],
    loads: &[(usize, LoadConfig)],
    sink: &mut Sink,
) {
    let p = KeyPath::root().key("power_fail");
    if pf.pin > MAX_BCM_PIN {
        doc.problem(sink, p.key("pin"), format!("expected a BCM pin 0..={MAX_BCM_PIN}, got {}", pf.pin));
    } else if let Some(user) = pin_user(pf.pin, sources, loads) {
        doc.problem(sink, p.key("pin"), format!("pin {} is already used by {user}", pf.pin));
    }
    if pf.debounce_ms > MAX_DEBOUNCE_MS {
        doc.problem(
            sink,
            p.key("debounce_ms"),
            format!("must be 0..={MAX_DEBOUNCE_MS} ms (a longer debounce delays the reaction to a power cut)"),
        );
    }
}

/// What else in the config uses BCM pin `pin`, if anything (e.g. `source[1].dio0_pin`).
pub(super) fn pin_user(pin: u8, sources: &[(usize, SourceConfig)], loads: &[(usize, LoadConfig)]) -> Option<String> {
    for (i, s) in sources {
        if let SourceConfig::Sx127x(x) = s {
            if x.reset_pin == Some(pin) {
                return Some(format!("source[{i}].reset_pin"));
            }
            if x.dio0_pin == pin {
                return Some(format!("source[{i}].dio0_pin"));
            }
        }
    }
    for (i, l) in loads {
        if let Some(OutputSpec::Gpio { pins, .. }) = &l.output {
            if let Some(j) = pins.iter().position(|p| *p == u32::from(pin)) {
                return Some(format!("demand_response.load[{i}].output.pins[{j}] (a relay of {:?})", l.name));
            }
        }
    }
    None
}
