//! The §14a EnWG control input (`[demand_response.control_box]`): the relay contacts of the grid
//! operator's control box on one or two GPIO pins. Each pin is watched like every other GPIO input
//! (edge interrupts, the pure [`Debouncer`], the level read at start and every 30 s, re-opened with
//! backoff if it fails; [`run_presence`]); each settled contact state goes to the pipeline as
//! [`Control::ControlBox`], and the demand-response loop maps the contacts to a stage.
//!
//! Debouncing here, not in the loop: it is the same machinery as the presence and power-fail inputs
//! (one debouncer for every GPIO line), and the loop sees contact states, not bounces.
//! Power-on: until a pin reports its first settled level (within `debounce_ms` of the start, the
//! level is read when the pin opens), its contact counts as open — the box has said nothing yet.
//! A pin that cannot be read: its last settled state holds (a reduction in force stays in force) while
//! the input retries; the input shows as down with the sources (status page, `/metrics`).
//!
//! [`Debouncer`]: crate::io::gpio::Debouncer

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::bus::Control;
use crate::control::demand::ControlBoxParams;
use crate::io::gpio::{self, run_presence, PresenceEvent, PresenceInputConfig, Pull};
use crate::io::status::SourceStatus;

use super::Hardware;

/// The name of contact `j`'s input in logs, status and metrics (listed with the sources).
pub(super) fn name(j: usize) -> String {
    format!("control_box[{j}]")
}

/// Contact `j` as a presence input: "present" is "contact closed". A closed contact pulls an
/// active-low pin to ground against the pull-up; otherwise it pulls the pin high against a pull-down.
fn input_config(cfg: &ControlBoxParams, j: usize, pin: u8) -> PresenceInputConfig {
    PresenceInputConfig {
        name: name(j),
        pin,
        pull: if cfg.active_low { Pull::Up } else { Pull::Down },
        active_low: cfg.active_low,
        debounce_ms: cfg.debounce_ms,
    }
}

/// Starts watching the contacts, if a box is configured: the fakes of `hardware` (by BCM pin), or the
/// Pi's pins (each opened once here, so that a host without GPIO fails the start, saying so).
/// Returns the inputs' status, to be listed with the sources.
pub(super) fn start(
    config: Option<&ControlBoxParams>,
    hardware: &Hardware,
    control: mpsc::Sender<Control>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Vec<Arc<SourceStatus>>> {
    let Some(cfg) = config else {
        return Ok(Vec::new());
    };
    let mut statuses = Vec::new();
    for (j, &pin) in cfg.pins.iter().enumerate() {
        let pin = u8::try_from(pin).map_err(|_| anyhow::anyhow!("demand_response.control_box.pins[{j}]: {pin}"))?;
        let input = input_config(cfg, j, pin);
        let status = SourceStatus::new(&input.name, "gpio");
        let (events_tx, events) = mpsc::channel::<PresenceEvent>(16);
        match hardware.control_box.get(&pin) {
            Some(fake) => {
                tasks.spawn(run_presence(input, fake.factory(), events_tx, status.clone(), shutdown.clone()));
            }
            None => {
                drop(gpio::open_input(&input).map_err(|e| anyhow::anyhow!("demand_response.control_box: {e}"))?);
                let opener = input.clone();
                let factory = move || gpio::open_input(&opener);
                tasks.spawn(run_presence(input, factory, events_tx, status.clone(), shutdown.clone()));
            }
        }
        tasks.spawn(forward(j, events, control.clone()));
        statuses.push(status);
    }
    tracing::info!(pins = ?cfg.pins, active_low = cfg.active_low, "watching the §14a control box");
    Ok(statuses)
}

/// Each settled contact state to the pipeline.
async fn forward(contact: usize, mut events: mpsc::Receiver<PresenceEvent>, control: mpsc::Sender<Control>) {
    while let Some(ev) = events.recv().await {
        tracing::info!(contact, closed = ev.present, "§14a control box contact");
        if control.send(Control::ControlBox { contact, closed: ev.present }).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polarity_sets_the_pull_and_reaches_the_input() {
        let mut cfg = ControlBoxParams::new(vec![22, 23]);
        cfg.debounce_ms = 150;
        let i = input_config(&cfg, 1, 23);
        assert_eq!(
            (i.name.as_str(), i.pin, i.active_low, i.pull, i.debounce_ms),
            ("control_box[1]", 23, true, Pull::Up, 150)
        );
        cfg.active_low = false;
        let i = input_config(&cfg, 0, 22);
        assert_eq!((i.pin, i.active_low, i.pull), (22, false, Pull::Down));
    }
}
