//! Liveness for `/healthz`, the systemd watchdog and `config.apply`'s automatic rollback.
//!
//! The daemon is healthy only when it is really working:
//! - the core loop ticked within `stall_after` (it calls [`Health::loop_tick`] every iteration);
//! - the journal is writable (the store reports every write's outcome through [`Health::journal_ok`]);
//! - every source is up or retrying ([`Health::source_state`]); a source that gave up is `down`.
//!
//! Before the first tick and before the journal reported, the daemon is not healthy yet. A broker that cannot be
//! reached does not make the gateway unhealthy: buffering and local control while the city is away is normal
//! operation (metrics show the MQTT state).
//!
//! A cheap shared handle (`Clone`): atomics for the hot path (`loop_tick`, `journal_ok`), a short mutex for the
//! source table. Times are milliseconds on a monotonic clock local to the handle; the `*_at` variants take them
//! explicitly for tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NEVER: u64 = u64::MAX;

/// What a source (radio, meter) reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceState {
    /// Open and receiving (or able to receive).
    Up,
    /// Temporarily failed, reopening with backoff (e.g. a USB serial head unplugged). Still healthy.
    Retrying,
    /// Given up or failed in a way retrying cannot fix. Unhealthy.
    Down,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Up => "up",
            SourceState::Retrying => "retrying",
            SourceState::Down => "down",
        }
    }
}

impl fmt::Display for SourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub healthy: bool,
    /// Why not healthy; empty when healthy.
    pub problems: Vec<String>,
    /// Milliseconds since the core loop last ticked; `None` before the first tick.
    pub loop_tick_age_ms: Option<u64>,
    pub journal_ok: bool,
}

impl HealthReport {
    /// `"ok"` or the problems joined by `"; "`: the `/healthz` body.
    pub fn reason(&self) -> String {
        if self.healthy {
            "ok".to_owned()
        } else {
            self.problems.join("; ")
        }
    }
}

struct Inner {
    origin: Instant,
    stall_after_ms: u64,
    last_tick_ms: AtomicU64,
    journal_reported: AtomicBool,
    journal_ok: AtomicBool,
    stalled_for_test: AtomicBool,
    sources: Mutex<BTreeMap<String, SourceState>>,
}

/// The shared health handle.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health").field("report", &self.check()).finish()
    }
}

impl Health {
    /// `stall_after`: how long the core loop may go without a tick before the daemon counts as stuck. Choose it
    /// well above the loop's longest normal iteration (and below the systemd watchdog interval).
    pub fn new(stall_after: Duration) -> Self {
        Health {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                stall_after_ms: u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX / 2),
                last_tick_ms: AtomicU64::new(NEVER),
                journal_reported: AtomicBool::new(false),
                journal_ok: AtomicBool::new(false),
                stalled_for_test: AtomicBool::new(false),
                sources: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Milliseconds since this handle was created (monotonic).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// Called by the core loop on every iteration.
    pub fn loop_tick(&self) {
        self.loop_tick_at(self.now_ms());
    }

    pub fn loop_tick_at(&self, now_ms: u64) {
        if !self.inner.stalled_for_test.load(Ordering::Relaxed) {
            self.inner.last_tick_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Test hook: while set, ticks are ignored, exactly as if the core loop were stuck. Lets an end-to-end test see
    /// `/healthz` turn unhealthy (and `config.apply` roll back) without wedging a real task.
    pub fn stall_for_test(&self, stalled: bool) {
        self.inner.stalled_for_test.store(stalled, Ordering::Relaxed);
    }

    /// The journal's last write (or open) succeeded (`true`) or failed (`false`).
    pub fn journal_ok(&self, ok: bool) {
        self.inner.journal_ok.store(ok, Ordering::Relaxed);
        self.inner.journal_reported.store(true, Ordering::Relaxed);
    }

    /// Report a source's state, by its name (e.g. `gwmp:127.0.0.1:1700`, `sml:/dev/ttyUSB0`).
    pub fn source_state(&self, name: &str, state: SourceState) {
        let mut sources = self.inner.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get_mut(name) {
            Some(s) => *s = state,
            None => {
                sources.insert(name.to_owned(), state);
            }
        }
    }

    /// Forget a source (removed by a config reload).
    pub fn remove_source(&self, name: &str) {
        self.inner.sources.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Every reported source and its state, by name.
    pub fn sources(&self) -> Vec<(String, SourceState)> {
        let sources = self.inner.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.iter().map(|(n, s)| (n.clone(), *s)).collect()
    }

    pub fn check(&self) -> HealthReport {
        self.check_at(self.now_ms())
    }

    pub fn check_at(&self, now_ms: u64) -> HealthReport {
        let mut problems = Vec::new();
        let last = self.inner.last_tick_ms.load(Ordering::Relaxed);
        let loop_tick_age_ms = (last != NEVER).then(|| now_ms.saturating_sub(last));
        match loop_tick_age_ms {
            None => problems.push("core loop has not started".to_owned()),
            Some(age) if age > self.inner.stall_after_ms => {
                problems.push(format!("core loop stalled: no tick for {:.1} s", age as f64 / 1000.0))
            }
            Some(_) => {}
        }
        let journal_ok = self.inner.journal_ok.load(Ordering::Relaxed);
        if !self.inner.journal_reported.load(Ordering::Relaxed) {
            problems.push("journal not open yet".to_owned());
        } else if !journal_ok {
            problems.push("journal not writable".to_owned());
        }
        for (name, state) in self.sources() {
            if state == SourceState::Down {
                problems.push(format!("source {name} down"));
            }
        }
        HealthReport { healthy: problems.is_empty(), problems, loop_tick_age_ms, journal_ok }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy_at(h: &Health, ms: u64) -> bool {
        h.check_at(ms).healthy
    }

    #[test]
    fn healthy_only_when_everything_works() {
        let h = Health::new(Duration::from_secs(5));
        let r = h.check_at(0);
        assert!(!r.healthy);
        assert_eq!(r.reason(), "core loop has not started; journal not open yet");
        h.loop_tick_at(1_000);
        assert!(!healthy_at(&h, 1_000));
        h.journal_ok(true);
        assert!(healthy_at(&h, 1_000));
        assert_eq!(h.check_at(1_000).reason(), "ok");
        assert_eq!(h.check_at(1_500).loop_tick_age_ms, Some(500));

        h.source_state("gwmp:127.0.0.1:1700", SourceState::Up);
        h.source_state("sml:/dev/ttyUSB0", SourceState::Retrying);
        assert!(healthy_at(&h, 2_000));
        h.source_state("sml:/dev/ttyUSB0", SourceState::Down);
        assert_eq!(h.check_at(2_000).reason(), "source sml:/dev/ttyUSB0 down");
        h.remove_source("sml:/dev/ttyUSB0");
        assert!(healthy_at(&h, 2_000));

        h.journal_ok(false);
        assert_eq!(h.check_at(2_000).reason(), "journal not writable");
        h.journal_ok(true);
        assert!(healthy_at(&h, 2_000));
    }

    #[test]
    fn stalled_loop_is_unhealthy() {
        let h = Health::new(Duration::from_secs(5));
        h.journal_ok(true);
        h.loop_tick_at(10_000);
        assert!(healthy_at(&h, 15_000));
        let r = h.check_at(15_001);
        assert!(!r.healthy);
        assert_eq!(r.reason(), "core loop stalled: no tick for 5.0 s");
        h.loop_tick_at(15_002);
        assert!(healthy_at(&h, 15_002));

        // The test hook: ticks are ignored while stalled.
        h.stall_for_test(true);
        h.loop_tick_at(30_000);
        assert!(!healthy_at(&h, 30_000));
        h.stall_for_test(false);
        h.loop_tick_at(30_001);
        assert!(healthy_at(&h, 30_001));
    }

    #[test]
    fn real_clock() {
        let h = Health::new(Duration::from_millis(50));
        h.journal_ok(true);
        h.loop_tick();
        assert!(h.check().healthy);
        std::thread::sleep(Duration::from_millis(120));
        assert!(!h.check().healthy);
        let clone = h.clone();
        clone.loop_tick();
        assert!(h.check().healthy);
    }
}
