//! The power-fail input (`[power_fail]`): a UPS HAT's or supercap board's "power fail" / "power good"
//! line on a GPIO pin. The line is watched like a presence input (edge interrupts, the [`Debouncer`],
//! the level read at start, re-opened with backoff if its interrupts stop; [`run_presence`]), and each
//! settled level goes to the pipeline as [`Control::PowerFail`]. The pipeline keeps [`MainsPower`]:
//! when power is lost it fsyncs at once and refuses new readings until power is back.
//!
//! [`Debouncer`]: crate::io::gpio::Debouncer

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::bus::Control;
use crate::config::PowerFailConfig;
use crate::io::gpio::{self, run_presence, PresenceEvent, PresenceInputConfig};
use crate::io::status::SourceStatus;

use super::Hardware;

/// The name of the input in logs, status and metrics (it is listed with the sources).
pub(super) const NAME: &str = "power_fail";

/// What the pipeline knows about mains power. Pure: the caller passes the times.
#[derive(Debug, Default)]
pub(super) struct MainsPower {
    /// When mains power was lost (monotonic, for the duration; wall clock, for the status).
    lost_since: Option<(Instant, DateTime<Utc>)>,
}

/// What a signal from the input changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Lost,
    /// Mains power is back after being lost for this long.
    Restored(Duration),
    /// The input said what was already known (e.g. its first level: power present).
    Unchanged,
}

impl MainsPower {
    pub(super) fn signal(&mut self, lost: bool, at: Instant, now: DateTime<Utc>) -> Change {
        match (lost, self.lost_since) {
            (true, None) => {
                self.lost_since = Some((at, now));
                Change::Lost
            }
            (false, Some((since, _))) => {
                self.lost_since = None;
                Change::Restored(at.saturating_duration_since(since))
            }
            _ => Change::Unchanged,
        }
    }

    pub(super) fn is_lost(&self) -> bool {
        self.lost_since.is_some()
    }

    /// When mains power was lost, while it is.
    pub(super) fn lost_since(&self) -> Option<DateTime<Utc>> {
        self.lost_since.map(|(_, at)| at)
    }
}

/// `1 h 2 min 5 s`, `350 ms`: how long mains power was lost, for the log.
pub(super) fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min {} s", s / 3600, s % 3600 / 60, s % 60),
    }
}

/// The input as a presence input: "present" is "mains power lost".
fn input_config(cfg: &PowerFailConfig) -> PresenceInputConfig {
    PresenceInputConfig {
        name: NAME.into(),
        pin: cfg.pin,
        pull: cfg.pull,
        active_low: cfg.active_low,
        debounce_ms: cfg.debounce_ms,
    }
}

/// Starts watching the input, if one is configured: the fake of `hardware`, or the Pi's pin (opened
/// once here, so that a host without GPIO or a pin that cannot be had fails the start, saying so).
/// Returns the input's status, to be listed with the sources.
pub(super) fn start(
    config: Option<&PowerFailConfig>,
    hardware: &Hardware,
    control: mpsc::Sender<Control>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Option<Arc<SourceStatus>>> {
    let Some(cfg) = config else {
        return Ok(None);
    };
    let input = input_config(cfg);
    let status = SourceStatus::new(NAME, "gpio");
    let (events_tx, events) = mpsc::channel::<PresenceEvent>(16);
    match &hardware.power_fail {
        Some(fake) => {
            tasks.spawn(run_presence(input, fake.factory(), events_tx, status.clone(), shutdown));
        }
        None => {
            drop(gpio::open_input(&input).map_err(|e| anyhow::anyhow!("power_fail: {e}"))?);
            let opener = input.clone();
            let factory = move || gpio::open_input(&opener);
            tasks.spawn(run_presence(input, factory, events_tx, status.clone(), shutdown));
        }
    }
    tasks.spawn(forward(events, control));
    tracing::info!(pin = cfg.pin, active_low = cfg.active_low, "watching the power-fail input");
    Ok(Some(status))
}

/// Each settled level of the input to the pipeline.
async fn forward(mut events: mpsc::Receiver<PresenceEvent>, control: mpsc::Sender<Control>) {
    while let Some(ev) = events.recv().await {
        if control.send(Control::PowerFail { lost: ev.present }).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InputPull;
    use crate::io::gpio::Pull;

    #[test]
    fn mains_power_changes_only_on_a_new_state() {
        let t0 = Instant::now();
        let now = Utc::now();
        let mut m = MainsPower::default();
        assert_eq!(m.signal(false, t0, now), Change::Unchanged, "the first level: power present");
        assert!(!m.is_lost());
        assert_eq!(m.signal(true, t0, now), Change::Lost);
        assert_eq!(m.lost_since(), Some(now));
        assert_eq!(m.signal(true, t0 + Duration::from_secs(1), now), Change::Unchanged, "still lost: since stays");
        assert_eq!(m.lost_since(), Some(now));
        assert_eq!(m.signal(false, t0 + Duration::from_secs(42), now), Change::Restored(Duration::from_secs(42)));
        assert!(!m.is_lost());
        assert_eq!(m.lost_since(), None);
        assert_eq!(m.signal(false, t0, now), Change::Unchanged);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_text(Duration::from_millis(350)), "350 ms");
        assert_eq!(duration_text(Duration::from_secs(42)), "42 s");
        assert_eq!(duration_text(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(duration_text(Duration::from_secs(3725)), "1 h 2 min 5 s");
    }

    #[test]
    fn polarity_and_pull_reach_the_input() {
        let cfg = PowerFailConfig { pin: 6, active_low: true, pull: InputPull::Up, debounce_ms: 20 };
        let i = input_config(&cfg);
        assert_eq!((i.name.as_str(), i.pin, i.active_low, i.pull, i.debounce_ms), (NAME, 6, true, Pull::Up, 20));
        let cfg = PowerFailConfig { pin: 26, active_low: false, pull: InputPull::Down, debounce_ms: 0 };
        let i = input_config(&cfg);
        assert_eq!((i.pin, i.active_low, i.pull, i.debounce_ms), (26, false, Pull::Down, 0));
    }
}
