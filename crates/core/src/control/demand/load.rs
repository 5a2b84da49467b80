//! A controlled load's runtime state (what it was commanded, since when, how much it sheds), and the
//! feeder meter readings and own-action effects the estimate is built from.

use chrono::{DateTime, Utc};

use super::{LoadKind, LoadParams, LoadState};

#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    pub(super) at: DateTime<Utc>,
    pub(super) kw: f64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) at: DateTime<Utc>,
    pub(super) delta_kw: f64,
}

#[derive(Debug, Clone)]
pub(super) struct Load {
    pub(super) p: LoadParams,
    pub(super) min_kw: f64,
    pub(super) max_blocked_ms: Option<i64>,
    pub(super) min_off_ms: i64,
    pub(super) min_on_ms: i64,
    pub(super) recovery_ms: i64,
    pub(super) state: LoadState,
    pub(super) since: DateTime<Utc>,
    pub(super) sent: Option<LoadState>,
    /// Monotonic ms when it was shed (None: not shed).
    pub(super) blocked_at: Option<i64>,
    /// Monotonic deadline of the forced release.
    pub(super) release_at: Option<i64>,
    /// Estimated reduction while shed (sg-ready/switch), kW.
    pub(super) shed_kw: f64,
    /// Monotonic ms of the last restore.
    pub(super) on_at: i64,
    pub(super) recovery_until: i64,
    pub(super) feedback: Option<(DateTime<Utc>, f64)>,
}

impl Load {
    pub(super) fn normal(&self) -> LoadState {
        match self.p.kind {
            LoadKind::SgReady => LoadState::SgReady(2),
            LoadKind::Setpoint => LoadState::Setpoint { kw: self.p.rated_kw },
            LoadKind::Switch => LoadState::Switch(true),
        }
    }

    pub(super) fn boosted_state(&self) -> LoadState {
        match self.p.kind {
            LoadKind::SgReady => LoadState::SgReady(if self.p.allow_forced { 4 } else { 3 }),
            _ => self.normal(),
        }
    }

    pub(super) fn shed_state(&self) -> LoadState {
        match self.p.kind {
            LoadKind::SgReady => LoadState::SgReady(1),
            LoadKind::Setpoint => LoadState::Setpoint { kw: self.min_kw },
            LoadKind::Switch => LoadState::Switch(false),
        }
    }

    pub(super) fn is_shed(&self) -> bool {
        match self.state {
            LoadState::SgReady(n) => n <= 1,
            LoadState::Switch(on) => !on,
            LoadState::Setpoint { kw } => kw < self.p.rated_kw - 1e-9,
        }
    }

    pub(super) fn is_boosted(&self) -> bool {
        matches!(self.state, LoadState::SgReady(3 | 4))
    }

    /// The load's power when running: its fresh report, else `rated_kw`.
    pub(super) fn running_kw(&self, now: DateTime<Utc>, fresh_s: i64) -> f64 {
        match self.feedback {
            Some((at, kw)) if (now - at).num_seconds() <= fresh_s && at <= now => kw.clamp(0.0, self.p.rated_kw),
            _ => self.p.rated_kw,
        }
    }

    /// Its estimated current reduction, kW.
    pub(super) fn reduction_kw(&self) -> f64 {
        match self.state {
            LoadState::Setpoint { kw } => (self.p.rated_kw - kw).max(0.0),
            _ if self.is_shed() => self.shed_kw,
            _ => 0.0,
        }
    }
}
