//! What every source reports about itself (state, since when, frames, errors), and the backoff its
//! supervisor waits between attempts. Shared by the SX127x, serial LoRa and GPIO presence sources.
//!
//! Self-contained on purpose (std and tokio only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Opening the device and initialising it for the first time.
    Starting,
    /// Initialised and receiving.
    Up,
    /// Failed; waiting (backoff, or for a device to come back) before the next attempt.
    Down,
    /// Re-opening / re-initialising after a failure.
    Retrying,
    /// Stopped on shutdown.
    Stopped,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Up => "up",
            SourceState::Down => "down",
            SourceState::Retrying => "retrying",
            SourceState::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: SourceState,
    since: SystemTime,
    last_error: Option<String>,
}

/// One per source, shared (`Arc`) between the source's task and whoever reports status/metrics.
/// Counters are atomics; the state sits behind a mutex that is never held across an await.
#[derive(Debug)]
pub struct SourceStatus {
    name: String,
    kind: &'static str,
    inner: Mutex<Inner>,
    frames: AtomicU64,
    errors: AtomicU64,
    crc_errors: AtomicU64,
    header_errors: AtomicU64,
    dropped: AtomicU64,
    restarts: AtomicU64,
}

/// A copy of a [`SourceStatus`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    pub name: String,
    pub kind: &'static str,
    pub state: SourceState,
    /// When `state` was entered.
    pub since: SystemTime,
    pub last_error: Option<String>,
    /// Frames (or presence events) handed on.
    pub frames: u64,
    /// Everything that went wrong, including the CRC and header errors counted separately below.
    pub errors: u64,
    pub crc_errors: u64,
    pub header_errors: u64,
    /// Frames that could not be handed on because the consumer's queue was full.
    pub dropped: u64,
    /// Re-initialisations after a failure (chip reset, module silent, device gone).
    pub restarts: u64,
}

impl SourceStatus {
    pub fn new(name: impl Into<String>, kind: &'static str) -> Arc<Self> {
        Arc::new(SourceStatus {
            name: name.into(),
            kind,
            inner: Mutex::new(Inner { state: SourceState::Starting, since: SystemTime::now(), last_error: None }),
            frames: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            crc_errors: AtomicU64::new(0),
            header_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding this lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, state: SourceState) {
        let mut inner = self.lock();
        if inner.state != state {
            inner.state = state;
            inner.since = SystemTime::now();
        }
    }

    pub fn set_up(&self) {
        self.set_state(SourceState::Up);
    }

    pub fn set_retrying(&self) {
        self.set_state(SourceState::Retrying);
    }

    pub fn set_stopped(&self) {
        self.set_state(SourceState::Stopped);
    }

    /// The source failed: counts an error, records why, and marks it down.
    pub fn set_down(&self, why: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.last_error = Some(why.into());
        if inner.state != SourceState::Down {
            inner.state = SourceState::Down;
            inner.since = SystemTime::now();
        }
    }

    /// An error that does not take the source down (a bad line, a lost interrupt).
    pub fn error(&self, what: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.lock().last_error = Some(what.into());
    }

    pub fn frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    pub fn crc_error(&self) {
        self.crc_errors.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn header_error(&self) {
        self.header_errors.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn state(&self) -> SourceState {
        self.lock().state
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let inner = self.lock();
        StatusSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            state: inner.state,
            since: inner.since,
            last_error: inner.last_error.clone(),
            frames: self.frames.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            crc_errors: self.crc_errors.load(Ordering::Relaxed),
            header_errors: self.header_errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}

/// Exponential backoff between attempts: `min`, 2·`min`, … capped at `max`. Pure apart from nothing:
/// the caller sleeps.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff { min, max, next: min }
    }

    /// The delay to wait now; the following one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a session that stayed up: start again from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Sleeps `d` unless shutdown is requested first; returns true on shutdown.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn status_tracks_state_and_counters() {
        let s = SourceStatus::new("radio", "sx127x");
        assert_eq!(s.state(), SourceState::Starting);
        s.set_up();
        s.frame();
        s.crc_error();
        s.set_down("chip gone");
        let snap = s.snapshot();
        assert_eq!(snap.state, SourceState::Down);
        assert_eq!(snap.frames, 1);
        assert_eq!(snap.crc_errors, 1);
        assert_eq!(snap.errors, 2);
        assert_eq!(snap.last_error.as_deref(), Some("chip gone"));
    }
}
