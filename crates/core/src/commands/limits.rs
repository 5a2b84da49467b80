//! Rate limits for refused commands: how many refusals get an answer on `cmd/res`, and how many a
//! log line of their own.
//!
//! A refusal by the [`Verifier`](super::Verifier) (malformed, bad signature, unknown key, expired,
//! wrong gateway, replayed, unknown command, invalid args) comes from someone who may not be the city:
//! anybody who can publish on `cmd/req` can send thousands of them. They are answered and logged only
//! within two token buckets, and every one is counted; so a flood costs a bounded number of MQTT
//! answers and log lines, and nothing on the journal (the shell answers them without journaling).
//!
//! - **Answers**: a burst of [`ANSWER_BURST`] (10), then [`ANSWERS_PER_SECOND`] (2) per second. A
//!   refusal beyond that gets no answer (the shell counts it as unanswered).
//! - **Log lines**: a burst of [`LOG_BURST`] (10), then one per [`LOG_EVERY`] (60 s); the refusals
//!   not logged one by one are summed by code and reported in one summary line at most every
//!   [`SUMMARY_EVERY`] (60 s), counted from the first of them. Under a lasting flood that is about two
//!   lines a minute, never one per message.
//!
//! Pure: the caller passes `now`; a clock that goes backwards refills nothing (the buckets never hold
//! more than their burst either way).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::RefusalCode;

/// Refusals answered at once, before the rate applies.
pub const ANSWER_BURST: u32 = 10;
/// Refusals answered per second after the burst.
pub const ANSWERS_PER_SECOND: f64 = 2.0;
/// Refusals logged one by one at once, before the rate applies.
pub const LOG_BURST: u32 = 10;
/// After the burst, one refusal is logged on its own line per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// The refusals not logged one by one are summed up in one line at most this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// A token bucket in the caller's time: starts full with `burst` tokens, refills `per_second`
/// tokens a second up to `burst`; each [`TokenBucket::try_take`] that finds a whole token uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Option<DateTime<Utc>>,
}

impl TokenBucket {
    /// A full bucket. A negative or non-finite rate is taken as 0 (the burst only).
    pub fn new(burst: u32, per_second: f64) -> TokenBucket {
        let per_second = if per_second.is_finite() && per_second > 0.0 { per_second } else { 0.0 };
        TokenBucket { burst: f64::from(burst), per_second, tokens: f64::from(burst), last: None }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, now: DateTime<Utc>) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The tokens available at `now` (whole and partial).
    pub fn available(&mut self, now: DateTime<Utc>) -> f64 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        if let Some(last) = self.last {
            let elapsed = now - last;
            if elapsed > TimeDelta::zero() {
                // Microseconds overflow only after ~292,000 years: then the bucket is simply full.
                let secs = elapsed.num_microseconds().map_or(f64::INFINITY, |us| us as f64 / 1e6);
                self.tokens = (self.tokens + secs * self.per_second).min(self.burst);
            }
        }
        // After a clock step backwards the refill starts again from the new `now`.
        self.last = Some(now);
    }
}

/// The limits of a [`RefusalLimiter`]; `Default` is the documented one (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefusalLimits {
    pub answer_burst: u32,
    pub answers_per_second: f64,
    pub log_burst: u32,
    pub log_every: Duration,
    pub summary_every: Duration,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        RefusalLimits {
            answer_burst: ANSWER_BURST,
            answers_per_second: ANSWERS_PER_SECOND,
            log_burst: LOG_BURST,
            log_every: LOG_EVERY,
            summary_every: SUMMARY_EVERY,
        }
    }
}

/// What to do with one refusal: answer it on `cmd/res`, log it on its own line (both, either or
/// neither; it is counted in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalDecision {
    pub answer: bool,
    pub log: bool,
}

/// The refusals not logged one by one since `since` (the first of them), by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloggedRefusals {
    pub count: u64,
    pub since: DateTime<Utc>,
    /// Only codes that occurred, in the order of [`RefusalCode::ALL`].
    pub by_code: Vec<(RefusalCode, u64)>,
}

impl UnloggedRefusals {
    /// `bad_signature: 75, malformed: 150`
    pub fn codes(&self) -> String {
        self.by_code.iter().map(|(c, n)| format!("{c}: {n}")).collect::<Vec<_>>().join(", ")
    }

    /// Whole seconds from the first unlogged refusal to `now`, at least 1.
    pub fn seconds(&self, now: DateTime<Utc>) -> i64 {
        (now - self.since).num_seconds().max(1)
    }
}

/// Decides, refusal by refusal, whether it is answered and logged; sums up those not logged.
#[derive(Debug, Clone)]
pub struct RefusalLimiter {
    answers: TokenBucket,
    logs: TokenBucket,
    summary_every: TimeDelta,
    unlogged: [u64; RefusalCode::ALL.len()],
    unlogged_since: Option<DateTime<Utc>>,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        RefusalLimiter::new(RefusalLimits::default())
    }
}

impl RefusalLimiter {
    pub fn new(limits: RefusalLimits) -> RefusalLimiter {
        // `log_every` zero: the burst only (TokenBucket takes an infinite rate as 0).
        let log_rate = 1.0 / limits.log_every.as_secs_f64();
        RefusalLimiter {
            answers: TokenBucket::new(limits.answer_burst, limits.answers_per_second),
            logs: TokenBucket::new(limits.log_burst, log_rate),
            summary_every: TimeDelta::from_std(limits.summary_every).unwrap_or(TimeDelta::MAX),
            unlogged: [0; RefusalCode::ALL.len()],
            unlogged_since: None,
        }
    }

    /// One refusal with `code` at `now`.
    pub fn on_refusal(&mut self, now: DateTime<Utc>, code: RefusalCode) -> RefusalDecision {
        let answer = self.answers.try_take(now);
        let log = self.logs.try_take(now);
        if !log {
            let i = RefusalCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
            self.unlogged[i] += 1;
            self.unlogged_since.get_or_insert(now);
        }
        RefusalDecision { answer, log }
    }

    /// When the next summary is due (None: nothing to sum up).
    pub fn summary_due_at(&self) -> Option<DateTime<Utc>> {
        self.unlogged_since.map(|t| t.checked_add_signed(self.summary_every).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    /// The refusals not logged one by one, once the summary is due at `now` (then counting starts
    /// again).
    pub fn take_summary(&mut self, now: DateTime<Utc>) -> Option<UnloggedRefusals> {
        if self.summary_due_at()? > now {
            return None;
        }
        self.finish()
    }

    /// The refusals not logged one by one so far, due or not (at shutdown).
    pub fn finish(&mut self) -> Option<UnloggedRefusals> {
        let since = self.unlogged_since.take()?;
        let by_code: Vec<(RefusalCode, u64)> =
            RefusalCode::ALL.iter().zip(self.unlogged).filter(|(_, n)| *n > 0).map(|(c, n)| (*c, n)).collect();
        self.unlogged = [0; RefusalCode::ALL.len()];
        Some(UnloggedRefusals { count: by_code.iter().map(|(_, n)| n).sum(), since, by_code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).unwrap()
    }

    fn at_ms(ms: i64) -> DateTime<Utc> {
        t0() + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(10, 2.0);
        // The burst, all at the same instant.
        assert_eq!((0..25).filter(|_| b.try_take(t0())).count(), 10);
        // 0.49 s later: not yet a whole token; at 0.5 s exactly one.
        assert!(!b.try_take(at_ms(490)));
        assert!(b.try_take(at_ms(500)));
        assert!(!b.try_take(at_ms(500)));
        // A flood of one message per millisecond for 10 s gets 2 per second: 20.
        let taken = (501..=10_500).filter(|ms| b.try_take(at_ms(*ms))).count();
        assert_eq!(taken, 20);
    }

    #[test]
    fn a_bucket_refills_to_its_burst_and_no_further() {
        let mut b = TokenBucket::new(10, 2.0);
        assert_eq!((0..10).filter(|_| b.try_take(t0())).count(), 10);
        assert_eq!(b.available(at_ms(1_000)), 2.0);
        // An hour of quiet: full again, never more than the burst.
        assert_eq!(b.available(at_ms(3_600_000)), 10.0);
        assert_eq!((0..25).filter(|_| b.try_take(at_ms(3_600_000))).count(), 10);
    }

    #[test]
    fn a_clock_step_backwards_refills_nothing_and_the_refill_resumes_from_there() {
        let mut b = TokenBucket::new(2, 1.0);
        assert!(b.try_take(at_ms(10_000)) && b.try_take(at_ms(10_000)));
        // An hour back: nothing refilled.
        assert!(!b.try_take(at_ms(10_000 - 3_600_000)));
        // One second after the new time: one token.
        assert!(b.try_take(at_ms(10_000 - 3_600_000 + 1_000)));
        assert!(!b.try_take(at_ms(10_000 - 3_600_000 + 1_000)));
        // Far in the future (overflowing microseconds): full, never more than the burst.
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(b.available(far), 2.0);
    }

    #[test]
    fn odd_rates_are_the_burst_only() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut b = TokenBucket::new(3, rate);
            assert_eq!((0..10).filter(|_| b.try_take(t0())).count(), 3, "{rate}");
            assert!(!b.try_take(at_ms(3_600_000)), "{rate}");
        }
    }

    #[test]
    fn a_flood_of_refusals_gets_bounded_answers_and_log_lines_and_one_summary_a_minute() {
        let mut l = RefusalLimiter::default();
        // 300 refusals within 150 ms (one every 0.5 ms).
        let mut answered = 0;
        let mut logged = 0;
        for i in 0..300 {
            let code = if i % 2 == 0 { RefusalCode::BadSignature } else { RefusalCode::Malformed };
            let d = l.on_refusal(t0() + TimeDelta::microseconds(500 * i), code);
            answered += u64::from(d.answer);
            logged += u64::from(d.log);
        }
        assert_eq!(answered, 10, "the burst only: 150 ms refill 0.3 tokens");
        assert_eq!(logged, 10);
        // The summary is due a minute after the first unlogged refusal (the 11th, at 5 ms).
        let due = l.summary_due_at().unwrap();
        assert_eq!(due, at_ms(5) + TimeDelta::seconds(60));
        assert_eq!(l.take_summary(due - TimeDelta::milliseconds(1)), None);
        let s = l.take_summary(due).unwrap();
        assert_eq!(s.count, 290);
        assert_eq!(s.by_code, vec![(RefusalCode::BadSignature, 145), (RefusalCode::Malformed, 145)]);
        assert_eq!(s.codes(), "bad_signature: 145, malformed: 145");
        assert_eq!(s.seconds(due), 60);
        assert_eq!(l.summary_due_at(), None, "counting starts again");
        assert_eq!(l.take_summary(due + TimeDelta::hours(1)), None);

        // A lasting flood: 100 refusals a second for 10 minutes after that.
        let start = due;
        let (mut answered, mut logged, mut summaries, mut summed) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..60_000i64 {
            let now = start + TimeDelta::milliseconds(10 * i);
            let d = l.on_refusal(now, RefusalCode::UnknownKey);
            answered += u64::from(d.answer);
            logged += u64::from(d.log);
            if let Some(s) = l.take_summary(now) {
                summaries += 1;
                summed += s.count;
            }
        }
        let last = l.finish().expect("the refusals since the last summary");
        summed += last.count;
        // The answer bucket was full again (a minute of quiet): 10 + 2/s for 600 s.
        assert!((1_200..=1_211).contains(&answered), "{answered}");
        // The log bucket had refilled 1 token in that minute: 1 + one a minute.
        assert!((10..=12).contains(&logged), "{logged}");
        assert_eq!(summaries, 9, "one summary a minute (and the rest at shutdown)");
        assert_eq!(logged + summed, 60_000, "every refusal is logged or summed up");
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn the_limits_are_configurable() {
        let mut l = RefusalLimiter::new(RefusalLimits {
            answer_burst: 1,
            answers_per_second: 0.0,
            log_burst: 2,
            log_every: Duration::from_secs(3600),
            summary_every: Duration::from_secs(1),
        });
        let d: Vec<_> = (0..3).map(|i| l.on_refusal(at_ms(10 * i), RefusalCode::Expired)).collect();
        let (yes, no) = (true, false);
        assert_eq!(
            d,
            [
                RefusalDecision { answer: yes, log: yes },
                RefusalDecision { answer: no, log: yes },
                RefusalDecision { answer: no, log: no }
            ]
        );
        assert_eq!(l.summary_due_at(), Some(at_ms(20 + 1_000)));
        let s = l.take_summary(at_ms(1_020)).unwrap();
        assert_eq!((s.count, s.seconds(at_ms(1_020))), (1, 1));
    }
}
