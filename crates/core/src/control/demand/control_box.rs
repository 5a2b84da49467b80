//! The §14a EnWG control input: one or two relay contacts of the grid operator's control box (FNN
//! "Steuerbox") or ripple-control receiver, wired to GPIO inputs (`[demand_response.control_box]`).
//!
//! The shell debounces each pin (the GPIO input machinery every input uses) and hands the loop each
//! settled contact state ([`Input::ControlBox`](super::Input::ControlBox)); here the contacts become a
//! stage (bit 0 = the first pin's contact, bit 1 = the second's), the stage a share
//! (`stages[stage]`: 1 = normal, 0 = the §14a minimum, in between a part of the power above the
//! minimum), and the share a cap per load ([`caps`]). While a cap is in force it wins over every limit
//! (config, city events, OpenADR) — the loop may still shed further, never less — except the loads'
//! protection times (`min_on_s`, `max_blocked_s` with its `recovery_s`), which are safety.
//!
//! # The §14a minimum (BNetzA, BK6-22-300, Anlage 1)
//! A controllable device alone may be reduced to 4.2 kW (`P_min,14a`), never lower. Several devices
//! behind one grid connection controlled together (through an energy management system: here the
//! gateway) share `P_min,14a = 4.2 kW + (n - 1) × GZF(n) × 4.2 kW`, with the simultaneity factor GZF
//! 0.8 for 2 devices, 0.75 for 3, 0.7, 0.65, 0.6, 0.55, 0.5 and 0.45 for 9 or more
//! ([`aggregate_minimum_kw`]). The gateway spreads that budget over the connection's loads, highest
//! priority first.
//!
//! # Episodes
//! From the first reducing stage to the return to a normal stage is one episode: its start and end are
//! reported (an `event` message each) and its duration, on the monotonic clock, is added to the
//! cumulative reduced time (`reduced_s` in `dr/status`, a counter on `/metrics`): the operator must
//! document the time spent reduced.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::params::{ConnectionParams, ControlBoxParams, LoadParams, SECTION_14A_MIN_KW};
use super::{rfc3339, LoadKind, LoadState};

/// BK6-22-300 Anlage 1: the simultaneity factor (GZF) for `n` controllable devices behind one grid
/// connection.
pub fn simultaneity_factor(n: usize) -> f64 {
    match n {
        0 | 1 => 1.0,
        2 => 0.8,
        3 => 0.75,
        4 => 0.7,
        5 => 0.65,
        6 => 0.6,
        7 => 0.55,
        8 => 0.5,
        _ => 0.45,
    }
}

/// BK6-22-300 Anlage 1: `P_min,14a` for `n` devices behind one connection controlled together,
/// `4.2 kW + (n - 1) × GZF(n) × 4.2 kW` (4.2 kW for one).
pub fn aggregate_minimum_kw(n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    SECTION_14A_MIN_KW + (n - 1) as f64 * simultaneity_factor(n) * SECTION_14A_MIN_KW
}

fn round_down_01(x: f64) -> f64 {
    ((x * 10.0) + 1e-9).floor() / 10.0
}

/// The most each load may draw at `share` (one state per load, in `loads` order): every load behind a
/// configured connection shares that connection's budget, every other load is a connection of its
/// own. The budget is `minimum + share × (rated - minimum)`; it goes to the loads highest priority
/// first: a setpoint load gets what is left of it (up to rated), an on/off load (SG-Ready, switch)
/// keeps its normal state if its rated power fits in what is left, else it is blocked.
pub fn caps(loads: &[LoadParams], connections: &[ConnectionParams], share: f64) -> Vec<LoadState> {
    let share = share.clamp(0.0, 1.0);
    let mut groups: Vec<Vec<usize>> = connections
        .iter()
        .map(|c| c.loads.iter().filter_map(|n| loads.iter().position(|l| &l.name == n)).collect())
        .collect();
    for i in 0..loads.len() {
        if !groups.iter().any(|g| g.contains(&i)) {
            groups.push(vec![i]);
        }
    }
    let mut out: Vec<LoadState> = loads.iter().map(normal).collect();
    for g in groups.iter().filter(|g| !g.is_empty()) {
        let rated: f64 = g.iter().map(|&i| loads[i].rated_kw).sum();
        let minimum = match g.as_slice() {
            [i] if loads[*i].kind == LoadKind::Setpoint => loads[*i].min_kw(),
            _ => aggregate_minimum_kw(g.len()),
        };
        let mut left = if rated <= minimum { rated } else { minimum + share * (rated - minimum) };
        let mut order = g.clone();
        // highest priority first (the reverse of the shed order: priority, then config order)
        order.sort_by_key(|&i| (std::cmp::Reverse(loads[i].priority), std::cmp::Reverse(i)));
        for i in order {
            let l = &loads[i];
            out[i] = match l.kind {
                LoadKind::Setpoint => {
                    let kw = round_down_01(left.min(l.rated_kw)).max(0.0);
                    left -= kw;
                    if kw >= l.rated_kw - 1e-9 {
                        normal(l)
                    } else {
                        LoadState::Setpoint { kw }
                    }
                }
                _ if l.rated_kw <= left + 1e-9 => {
                    left -= l.rated_kw;
                    normal(l)
                }
                LoadKind::SgReady => LoadState::SgReady(1),
                LoadKind::Switch => LoadState::Switch(false),
            };
        }
    }
    out
}

fn normal(l: &LoadParams) -> LoadState {
    match l.kind {
        LoadKind::SgReady => LoadState::SgReady(2),
        LoadKind::Setpoint => LoadState::Setpoint { kw: l.rated_kw },
        LoadKind::Switch => LoadState::Switch(true),
    }
}

/// Whether `state` draws more than `cap` allows (SG-Ready: encouraged/forced exceed normal).
pub(super) fn exceeds(state: LoadState, cap: LoadState) -> bool {
    match (state, cap) {
        (LoadState::Setpoint { kw }, LoadState::Setpoint { kw: c }) => kw > c + 1e-9,
        (LoadState::SgReady(s), LoadState::SgReady(c)) => {
            let rank = |n: u8| n.saturating_sub(1);
            rank(s) > rank(c)
        }
        (LoadState::Switch(on), LoadState::Switch(c)) => on && !c,
        _ => false,
    }
}

/// A reduction episode: started (`end` None) or over.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlBoxEpisode {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    /// The highest stage in force during the episode (so far).
    pub stage: u8,
    /// Time reduced, s (monotonic); set when the episode is over.
    pub duration_s: Option<f64>,
}

impl ControlBoxEpisode {
    /// `{"type":"control_box","state":"reduce"|"normal","stage","start","end","duration_s"}`.
    pub fn to_value(&self) -> Value {
        json!({
            "type": "control_box",
            "state": if self.end.is_some() { "normal" } else { "reduce" },
            "stage": self.stage,
            "start": rfc3339(self.start),
            "end": self.end.map(rfc3339),
            "duration_s": self.duration_s.map(|d| (d * 1000.0).round() / 1000.0),
        })
    }
}

/// The `control_box` object of `dr/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlBoxStatus {
    /// `normal` or `reduce`.
    pub state: &'static str,
    pub stage: u8,
    /// Since when this stage is in force (None: no contact reported yet).
    pub since: Option<DateTime<Utc>>,
    /// Cumulative time reduced since the start, s (the open episode included).
    pub reduced_s: f64,
}

impl ControlBoxStatus {
    pub fn to_value(&self) -> Value {
        json!({
            "state": self.state,
            "stage": self.stage,
            "since": self.since.map(rfc3339),
            "reduced_s": (self.reduced_s * 1000.0).round() / 1000.0,
        })
    }
}

/// The loop's view of the box.
#[derive(Debug, Clone)]
pub(super) struct BoxState {
    shares: Vec<f64>,
    /// Settled contact states, `false` (open) until a pin reports.
    contacts: Vec<bool>,
    pub(super) stage: u8,
    since: Option<DateTime<Utc>>,
    /// The open episode: its start (wall clock, monotonic ms) and highest stage.
    episode: Option<(DateTime<Utc>, i64, u8)>,
    /// Time of the finished episodes, ms.
    reduced_ms: i64,
    /// The caps of the current stage (None: normal).
    pub(super) caps: Option<Vec<LoadState>>,
    all_caps: Vec<Option<Vec<LoadState>>>,
}

/// What a contact change did.
pub(super) enum Change {
    None,
    /// An episode started (the caps are in force).
    Started(ControlBoxEpisode),
    /// The stage changed within an episode.
    Restaged,
    /// The episode ended (the caps are lifted).
    Ended(ControlBoxEpisode),
}

impl BoxState {
    pub(super) fn new(p: &ControlBoxParams, loads: &[LoadParams]) -> BoxState {
        let shares = p.shares();
        let all_caps =
            shares.iter().map(|&s| if s >= 1.0 { None } else { Some(caps(loads, &p.connection, s)) }).collect();
        BoxState {
            shares,
            contacts: vec![false; p.pins.len()],
            stage: 0,
            since: None,
            episode: None,
            reduced_ms: 0,
            caps: None,
            all_caps,
        }
    }

    pub(super) fn reducing(&self) -> bool {
        self.episode.is_some()
    }

    /// A settled contact state (`contact` = the index into `pins`). Unknown contacts are ignored.
    pub(super) fn contact(&mut self, contact: usize, closed: bool, now: DateTime<Utc>, mono: i64) -> Change {
        let Some(c) = self.contacts.get_mut(contact) else { return Change::None };
        *c = closed;
        if self.since.is_none() {
            self.since = Some(now);
        }
        let stage = self.contacts.iter().enumerate().fold(0u8, |s, (i, &on)| s | (u8::from(on) << i));
        if stage == self.stage {
            return Change::None;
        }
        self.stage = stage;
        self.since = Some(now);
        self.caps = self.all_caps.get(usize::from(stage)).cloned().flatten();
        let reduce = self.shares.get(usize::from(stage)).is_some_and(|s| *s < 1.0);
        match (reduce, self.episode) {
            (true, None) => {
                self.episode = Some((now, mono, stage));
                Change::Started(ControlBoxEpisode { start: now, end: None, stage, duration_s: None })
            }
            (true, Some((start, m, max))) => {
                self.episode = Some((start, m, max.max(stage)));
                Change::Restaged
            }
            (false, Some((start, m, max))) => {
                self.episode = None;
                let ms = mono.saturating_sub(m).max(0);
                self.reduced_ms = self.reduced_ms.saturating_add(ms);
                Change::Ended(ControlBoxEpisode {
                    start,
                    end: Some(now),
                    stage: max,
                    duration_s: Some(ms as f64 / 1000.0),
                })
            }
            (false, None) => Change::Restaged,
        }
    }

    pub(super) fn status(&self, mono: i64) -> ControlBoxStatus {
        let open = self.episode.map_or(0, |(_, m, _)| mono.saturating_sub(m).max(0));
        ControlBoxStatus {
            state: if self.reducing() { "reduce" } else { "normal" },
            stage: self.stage,
            since: self.since,
            reduced_s: self.reduced_ms.saturating_add(open) as f64 / 1000.0,
        }
    }
}
