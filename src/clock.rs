//! The shell's wall clock. Normally the system clock; the demo (and only the demo) can make it run
//! faster from a chosen start, so that a night of street lighting passes in a minute. The pure core
//! never reads a clock: the shell reads this one and passes `now` in.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, Utc};

/// Speed × 1000 (1000 = real time).
static SPEED_MILLI: AtomicU64 = AtomicU64::new(1000);
/// The simulated time (ms since 1970) at `ORIGIN`.
static START_MS: AtomicI64 = AtomicI64::new(i64::MIN);
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Runs the clock from `start` at `speed` × real time from now on (the demo).
pub fn accelerate(start: DateTime<Utc>, speed: f64) {
    let origin = *ORIGIN.get_or_init(Instant::now);
    let elapsed = origin.elapsed().as_millis() as i64;
    let speed_milli = (speed.clamp(0.001, 100_000.0) * 1000.0) as u64;
    // Chosen so that now() == start at this instant.
    START_MS.store(start.timestamp_millis() - elapsed * speed_milli as i64 / 1000, Ordering::SeqCst);
    SPEED_MILLI.store(speed_milli, Ordering::SeqCst);
}

/// The current time.
pub fn now() -> DateTime<Utc> {
    let start = START_MS.load(Ordering::SeqCst);
    if start == i64::MIN {
        return Utc::now();
    }
    let origin = *ORIGIN.get_or_init(Instant::now);
    let speed = SPEED_MILLI.load(Ordering::SeqCst) as i64;
    let ms = start + origin.elapsed().as_millis() as i64 * speed / 1000;
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

/// The current speed factor (1.0 = real time).
pub fn speed() -> f64 {
    SPEED_MILLI.load(Ordering::SeqCst) as f64 / 1000.0
}

pub fn now_ms() -> u64 {
    u64::try_from(now().timestamp_millis()).unwrap_or(0)
}
