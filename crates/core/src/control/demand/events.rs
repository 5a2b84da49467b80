//! The book of city events (`dr.event` / `dr.cancel`), modelled on OpenADR 2.0b.
//!
//! - An event is identified by `id`; a higher `modification` replaces the booked version, a lower or equal
//!   one is ignored (acknowledged as stale). `dr.cancel` removes it (optionally only if its `modification`
//!   is not older than the booked one).
//! - It is active from `start + r` to `start + r + duration_s` (0 = until cancelled), where `r` is drawn
//!   uniformly from `0..=random_start_s` when the version is booked (OpenADR `startafter`: the whole event
//!   is shifted, so its length is kept).
//! - Its limit is `limit_kw` and/or the limit of its OpenADR SIMPLE `level` (`limit_kw * level_factors[n]`,
//!   level 0 = none, negative = surplus), the tighter of both. During `ramp_s` after it became active the
//!   limit moves linearly from the configured limit to the event's; for a surplus event the loads are
//!   encouraged one after the other over `ramp_s`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::report::Acc;
use super::Rng;

/// The ids of the events that come from the OpenADR VTN (`oadr:<event id>:<interval id>`), not from
/// the city's `dr.event`: the city cannot book or cancel them, and they are not suspended while the
/// city's heartbeat is lost (the VTN link is another link; its events run to their end).
pub const VTN_PREFIX: &str = "oadr:";
/// Most events booked at once.
pub const MAX_EVENTS: usize = 64;
/// Longest event (31 days).
pub const MAX_EVENT_DURATION_S: u64 = 31 * 86_400;
/// Longest random start delay and ramp.
pub const MAX_RANDOM_START_S: u32 = 3600;
pub const MAX_RAMP_S: u32 = 3600;

/// A `dr.event` (its `args`, as the city sends them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrEvent {
    /// 1..=128 printable ASCII characters.
    pub id: String,
    #[serde(default)]
    pub modification: u32,
    pub start: DateTime<Utc>,
    /// 0 = until cancelled (the heartbeat supervision still applies).
    #[serde(default)]
    pub duration_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_kw: Option<f64>,
    /// OpenADR SIMPLE level: 0 normal, 1.. moderate/high/special (see `level_factors`), negative = surplus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    /// Ask for consumption (negative price, surplus of wind and sun).
    #[serde(default)]
    pub surplus: bool,
    #[serde(default)]
    pub random_start_s: u32,
    #[serde(default)]
    pub ramp_s: u32,
}

impl DrEvent {
    /// A limit event without random start or ramp.
    pub fn limit(id: &str, modification: u32, start: DateTime<Utc>, duration_s: u64, limit_kw: f64) -> DrEvent {
        DrEvent {
            id: id.to_string(),
            modification,
            start,
            duration_s,
            limit_kw: Some(limit_kw),
            level: None,
            surplus: false,
            random_start_s: 0,
            ramp_s: 0,
        }
    }

    /// A surplus event without random start or ramp.
    pub fn surplus(id: &str, modification: u32, start: DateTime<Utc>, duration_s: u64) -> DrEvent {
        DrEvent { limit_kw: None, surplus: true, ..DrEvent::limit(id, modification, start, duration_s, 0.0) }
    }
}

/// Why an event or cancel was refused (the `cmd/res` error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("id must be 1..=128 printable ASCII characters")]
    InvalidId,
    #[error("an event needs limit_kw, level or surplus")]
    NoSignal,
    #[error("limit_kw must be 0..=1000000, got {0}")]
    InvalidLimit(f64),
    #[error("duration_s must be 0 (until cancelled) or at most {MAX_EVENT_DURATION_S}, got {0}")]
    InvalidDuration(u64),
    #[error("random_start_s must be at most {MAX_RANDOM_START_S}, got {0}")]
    InvalidRandomStart(u32),
    #[error("ramp_s must be at most {MAX_RAMP_S}, got {0}")]
    InvalidRamp(u32),
    #[error("start is out of range")]
    InvalidStart,
    #[error("too many events booked (at most {MAX_EVENTS})")]
    TooManyEvents,
    #[error("ids starting with {VTN_PREFIX} belong to the OpenADR VTN's events")]
    ReservedId,
}

/// What a valid event or cancel did (the `cmd/res` result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAck {
    /// A new id was booked.
    Accepted,
    /// A higher modification replaced the booked one.
    Replaced { previous: u32 },
    /// The modification was not newer than the booked one: nothing changed.
    Stale { current: u32 },
    /// The event is already over: nothing booked.
    Expired,
    /// The event was removed.
    Cancelled,
    /// No such event (already over or never booked).
    NotFound,
}

impl EventAck {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAck::Accepted => "accepted",
            EventAck::Replaced { .. } => "replaced",
            EventAck::Stale { .. } => "stale",
            EventAck::Expired => "expired",
            EventAck::Cancelled => "cancelled",
            EventAck::NotFound => "not_found",
        }
    }
}

/// A booked event version.
#[derive(Debug, Clone)]
pub(crate) struct Booked {
    pub ev: DrEvent,
    pub active_from: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    /// The resolved absolute limit (limit_kw and level), if any.
    pub limit_kw: Option<f64>,
    pub surplus: bool,
    /// The report accumulator, from the time the event became active.
    pub acc: Option<Acc>,
}

impl Booked {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.active_from <= now && self.end.is_none_or(|e| now < e)
    }

    /// The limit at `now`, ramped from `base` over `ramp_s`.
    pub fn limit_at(&self, now: DateTime<Utc>, base: f64) -> Option<f64> {
        let l = self.limit_kw?;
        if self.ev.ramp_s == 0 {
            return Some(l);
        }
        let el = (now - self.active_from).num_milliseconds() as f64 / 1000.0;
        let frac = (el / f64::from(self.ev.ramp_s)).clamp(0.0, 1.0);
        Some(if l < base { base + (l - base) * frac } else { l })
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct EventBook {
    pub booked: Vec<Booked>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

impl EventBook {
    /// Books `ev` (see the module docs). `base_limit` and `level_factors` resolve a `level`.
    pub fn upsert(
        &mut self,
        ev: DrEvent,
        now: DateTime<Utc>,
        rng: &mut Rng,
        base_limit: f64,
        level_factors: &[f64],
    ) -> Result<EventAck, EventError> {
        if !valid_id(&ev.id) {
            return Err(EventError::InvalidId);
        }
        if let Some(l) = ev.limit_kw {
            if !(l.is_finite() && (0.0..=1_000_000.0).contains(&l)) {
                return Err(EventError::InvalidLimit(l));
            }
        }
        if ev.limit_kw.is_none() && ev.level.is_none() && !ev.surplus {
            return Err(EventError::NoSignal);
        }
        if ev.duration_s > MAX_EVENT_DURATION_S {
            return Err(EventError::InvalidDuration(ev.duration_s));
        }
        if ev.random_start_s > MAX_RANDOM_START_S {
            return Err(EventError::InvalidRandomStart(ev.random_start_s));
        }
        if ev.ramp_s > MAX_RAMP_S {
            return Err(EventError::InvalidRamp(ev.ramp_s));
        }
        let (lo, hi) = super::time_range();
        if ev.start < lo || ev.start > hi {
            return Err(EventError::InvalidStart);
        }
        let existing = self.booked.iter().position(|b| b.ev.id == ev.id);
        if let Some(i) = existing {
            let current = self.booked[i].ev.modification;
            if ev.modification <= current {
                return Ok(EventAck::Stale { current });
            }
        } else if self.booked.len() >= MAX_EVENTS {
            return Err(EventError::TooManyEvents);
        }
        let r = rng.below(u64::from(ev.random_start_s) + 1);
        let active_from = ev
            .start
            .checked_add_signed(Duration::seconds(i64::try_from(r).unwrap_or(0)))
            .ok_or(EventError::InvalidStart)?;
        let end = if ev.duration_s == 0 {
            None
        } else {
            // Past the end of time: open-ended.
            active_from.checked_add_signed(Duration::seconds(i64::try_from(ev.duration_s).unwrap_or(i64::MAX / 4000)))
        };
        let level_limit = match ev.level {
            Some(n) if n > 0 => {
                let idx = usize::try_from(n).unwrap_or(usize::MAX).min(level_factors.len().saturating_sub(1));
                level_factors.get(idx).map(|f| base_limit * f)
            }
            _ => None,
        };
        let limit_kw = match (ev.limit_kw, level_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let surplus = ev.surplus || ev.level.is_some_and(|n| n < 0);
        let over = end.is_some_and(|e| e <= now);
        match existing {
            Some(i) => {
                let previous = self.booked[i].ev.modification;
                if over {
                    // The new version is already over: it ends the event now.
                    self.booked[i].end = Some(now);
                    self.booked[i].ev.modification = ev.modification;
                    return Ok(EventAck::Replaced { previous });
                }
                let b = &mut self.booked[i];
                b.ev = ev;
                b.active_from = active_from;
                b.end = end;
                b.limit_kw = limit_kw;
                b.surplus = surplus;
                Ok(EventAck::Replaced { previous })
            }
            None => {
                if over {
                    return Ok(EventAck::Expired);
                }
                self.booked.push(Booked { ev, active_from, end, limit_kw, surplus, acc: None });
                Ok(EventAck::Accepted)
            }
        }
    }

    /// Removes the event `id` (unless `modification` is older than the booked one).
    pub fn cancel(&mut self, id: &str, modification: Option<u32>) -> Result<(EventAck, Option<Booked>), EventError> {
        if !valid_id(id) {
            return Err(EventError::InvalidId);
        }
        let Some(i) = self.booked.iter().position(|b| b.ev.id == id) else {
            return Ok((EventAck::NotFound, None));
        };
        let current = self.booked[i].ev.modification;
        if modification.is_some_and(|m| m < current) {
            return Ok((EventAck::Stale { current }, None));
        }
        Ok((EventAck::Cancelled, Some(self.booked.remove(i))))
    }

    /// Removes and returns the events that are over at `now`.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<Booked> {
        let mut over = Vec::new();
        let mut i = 0;
        while i < self.booked.len() {
            if self.booked[i].end.is_some_and(|e| e <= now) {
                over.push(self.booked.remove(i));
            } else {
                i += 1;
            }
        }
        over
    }
}
