//! The loop itself: the limit in force, the estimated feeder power, shedding, restoring and surplus,
//! and the commands on change.

use chrono::{DateTime, Utc};

use super::control_box::{self, Change};
use super::events::VTN_PREFIX;
use super::report::Acc;
use super::{
    add_ms, ActionLog, Demand, LimitReason, LoadCommand, LoadKind, LoadState, Output, Pending, Reason, MAX_PENDING,
};

fn round_down_01(x: f64) -> f64 {
    (x * 10.0).floor() / 10.0
}

impl Demand {
    pub(super) fn meter_lost(&self, now: DateTime<Utc>) -> bool {
        let timeout = i64::from(self.p.meter_timeout_s) * 1000;
        match (self.reading, self.started) {
            (Some(r), _) => (now - r.at).num_milliseconds() > timeout,
            (None, Some(s)) => (now - s).num_milliseconds() > timeout,
            (None, None) => false,
        }
    }

    /// `None` = not supervised (no heartbeat yet or off); `Some(true)` = lost.
    pub(super) fn heartbeat_lost(&self, now: DateTime<Utc>) -> Option<bool> {
        let h = self.heartbeat?;
        if self.p.heartbeat_timeout_s == 0 {
            return None;
        }
        Some((now - h).num_milliseconds() > i64::from(self.p.heartbeat_timeout_s) * 1000)
    }

    /// A settled contact of the control box: an episode starts or ends (the caps take effect in
    /// [`Demand::control`]); when it ends, the first restore waits a random delay as after any relaxed
    /// limit, and the loads come back one at a time.
    pub(super) fn control_box_contact(&mut self, now: DateTime<Utc>, contact: usize, closed: bool, out: &mut Output) {
        let mono = self.mono;
        let Some(b) = self.cbox.as_mut() else { return };
        match b.contact(contact, closed, now, mono) {
            Change::Started(e) => {
                tracing::warn!(stage = e.stage, "§14a control box: reduce");
                out.control_box.push(e);
            }
            Change::Ended(e) => {
                tracing::warn!(duration_s = e.duration_s.unwrap_or(0.0), "§14a control box: reduction over");
                out.control_box.push(e);
                let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
                self.next_restore = self.next_restore.max(mono.saturating_add(d));
            }
            Change::Restaged | Change::None => {}
        }
    }

    /// The caps of the control box while it reduces.
    fn box_caps(&self) -> Option<Vec<LoadState>> {
        self.cbox.as_ref().and_then(|b| b.caps.clone())
    }

    pub(super) fn limit_in_force(&self, now: DateTime<Utc>) -> ((f64, LimitReason), bool, Vec<String>, u32) {
        let mut best = (self.p.limit_kw, LimitReason::Config);
        let mut surplus = false;
        let mut surplus_ramp = 0;
        let mut active = Vec::new();
        // While the city's heartbeat is lost its events are suspended (a missed cancel must not hold
        // loads back) and the fail-safe limit holds; the VTN's events run on (another link).
        let city_lost = self.heartbeat_lost(now) == Some(true);
        if city_lost {
            let since = self.heartbeat.map(|h| add_ms(h, i64::from(self.p.heartbeat_timeout_s) * 1000));
            let fs_end = since.map(|s| add_ms(s, i64::from(self.p.failsafe_duration_s) * 1000));
            if fs_end.is_some_and(|e| now < e) && self.p.failsafe_limit_kw() < best.0 {
                best = (self.p.failsafe_limit_kw(), LimitReason::HeartbeatLost);
            }
        }
        let running = self.events.booked.iter().filter(|b| !city_lost || b.ev.id.starts_with(VTN_PREFIX));
        for b in running.filter(|b| b.is_active(now)) {
            active.push(b.ev.id.clone());
            if let Some(l) = b.limit_at(now, self.p.limit_kw) {
                if l < best.0 {
                    best = (l, LimitReason::Event(b.ev.id.clone()));
                }
            }
            if b.surplus {
                surplus = true;
                surplus_ramp = surplus_ramp.max(b.ev.ramp_s);
            }
        }
        if self.meter_lost(now) && self.p.meter_lost_limit_kw() < best.0 {
            best = (self.p.meter_lost_limit_kw(), LimitReason::MeterLost);
        }
        (best, surplus, active, surplus_ramp)
    }

    /// (for shedding, for restoring) estimates of the feeder power, kW.
    fn estimate(&self, now: DateTime<Utc>) -> Option<(f64, f64)> {
        let lost = self.meter_lost(now);
        let base = match self.reading {
            Some(r) => r.kw,
            None if lost => self.p.limit_kw,
            None => return None,
        };
        let all: f64 = self.pending.iter().map(|p| p.delta_kw).sum();
        let ups: f64 = self.pending.iter().map(|p| p.delta_kw.max(0.0)).sum();
        if lost {
            let e = (base + all).max(0.0);
            Some((e, e))
        } else {
            Some(((base + all).max(0.0), base + ups))
        }
    }

    fn set(&mut self, i: usize, to: LoadState, reason: Reason, now: DateTime<Utc>, est: Option<f64>, out: &mut Output) {
        let fresh = i64::from(self.p.meter_timeout_s);
        let mono = self.mono;
        let l = &mut self.loads[i];
        let from = l.state;
        if from == to {
            return;
        }
        let was_shed = l.is_shed();
        let before_kw = match from {
            LoadState::Setpoint { kw } => kw,
            _ if was_shed => 0.0,
            _ => l.running_kw(now, fresh),
        };
        l.state = to;
        l.since = now;
        let shed = l.is_shed();
        let after_kw = match to {
            LoadState::Setpoint { kw } => kw,
            _ if shed => 0.0,
            // a restore is assumed to draw rated power (conservative)
            _ if was_shed => l.p.rated_kw,
            _ => l.running_kw(now, fresh),
        };
        if shed && !was_shed {
            l.blocked_at = Some(mono);
            l.shed_kw = before_kw;
            if let Some(max) = l.max_blocked_ms {
                let spread_s = u64::from(self.p.restore_delay_max_s)
                    .min(u64::try_from((max - l.min_off_ms).max(0) / 1000).unwrap_or(0));
                let jitter = i64::try_from(self.rng.below(spread_s * 1000 + 1)).unwrap_or(0);
                l.release_at = Some(mono + max - jitter);
            }
        } else if !shed && was_shed {
            l.blocked_at = None;
            l.release_at = None;
            l.shed_kw = 0.0;
            l.on_at = mono;
            if reason == Reason::MaxBlocked {
                l.recovery_until = mono.saturating_add(l.recovery_ms);
            }
        }
        let delta = after_kw - before_kw;
        if delta != 0.0 && self.pending.len() < MAX_PENDING {
            self.pending.push(Pending { at: now, delta_kw: delta });
        }
        out.log.push(ActionLog {
            at: now,
            load: l.p.name.clone(),
            from,
            to,
            reason,
            limit_kw: self.limit.0,
            limit_reason: self.limit.1.clone(),
            estimated_kw: est,
        });
    }

    pub(super) fn control(&mut self, now: DateTime<Utc>, out: &mut Output) {
        // Events: over ones report, newly active ones start accumulating.
        for b in self.events.expire(now) {
            self.finish_event(b, now, false, out);
        }
        let n = self.loads.len();
        for b in &mut self.events.booked {
            if b.acc.is_none() && b.is_active(now) {
                b.acc = Some(Acc::new(now, n, false));
            }
        }
        let (limit, surplus, _active, ramp) = self.limit_in_force(now);
        let boxed = self.cbox.as_ref().is_some_and(|b| b.reducing());
        // no load is encouraged while the control box reduces
        let surplus = surplus && !boxed;
        if limit.0 > self.limit.0 + 1e-9 {
            // The limit relaxed (an event ended or was cancelled, a fail-safe ended): the first restore
            // waits a random delay too, so that gateways told at the same moment do not restore together.
            let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
            self.next_restore = self.next_restore.max(self.mono.saturating_add(d));
        }
        self.limit = limit;
        if boxed {
            self.limit.1 = LimitReason::ControlBox;
        }
        let limit_kw = self.limit.0;
        let est = self.estimate(now);
        let est_shed = est.map(|e| e.0);
        let mono = self.mono;

        // Forced releases: never blocked beyond the maximum.
        for i in 0..n {
            let l = &self.loads[i];
            if l.release_at.is_some_and(|r| mono >= r) {
                let to = if surplus { l.boosted_state() } else { l.normal() };
                self.set(i, to, Reason::MaxBlocked, now, est_shed, out);
            }
        }
        // The control box: every load down to its cap, before any limit; only the loads' protection
        // (min_on_s after a restore, recovery_s after a forced release) comes first.
        if let Some(caps) = self.box_caps() {
            for k in 0..self.order.len() {
                let i = self.order[k];
                let l = &self.loads[i];
                let Some(&cap) = caps.get(i) else { continue };
                let protected = mono < l.recovery_until || (!l.is_shed() && mono < l.on_at.saturating_add(l.min_on_ms));
                if control_box::exceeds(l.state, cap) && !protected {
                    let e = self.estimate(now).map(|e| e.0);
                    self.set(i, cap, Reason::ControlBox, now, e, out);
                }
            }
        }
        let est = self.estimate(now);
        if let Some((shed_est, restore_est)) = est {
            if shed_est > limit_kw {
                self.shed(now, shed_est - limit_kw, shed_est, out);
            } else if mono >= self.next_restore {
                self.restore_one(now, limit_kw - self.p.hysteresis_kw - restore_est, restore_est, surplus, out);
            }
        }

        // Surplus.
        let over = self.estimate(now).is_some_and(|e| e.0 > limit_kw);
        if surplus {
            let since = match self.surplus_since {
                Some((s, _)) => s,
                None => {
                    self.surplus_since = Some((now, ramp));
                    now
                }
            };
            if !over {
                let sg: Vec<usize> =
                    self.order.iter().rev().copied().filter(|&i| self.loads[i].p.kind == LoadKind::SgReady).collect();
                let count = sg.len().max(1) as i64;
                let ramp_ms = i64::from(self.surplus_since.map_or(0, |s| s.1)) * 1000;
                for (k, &i) in sg.iter().enumerate() {
                    let at = add_ms(since, ramp_ms * k as i64 / count);
                    if now >= at && self.loads[i].state == LoadState::SgReady(2) {
                        let to = self.loads[i].boosted_state();
                        let e = self.estimate(now).map(|e| e.0);
                        self.set(i, to, Reason::Surplus, now, e, out);
                    }
                }
            }
        } else if self.surplus_since.take().is_some() {
            for i in 0..n {
                if self.loads[i].is_boosted() {
                    let to = self.loads[i].normal();
                    let e = self.estimate(now).map(|e| e.0);
                    self.set(i, to, Reason::SurplusEnd, now, e, out);
                }
            }
        }

        // Commands only on change.
        for l in &mut self.loads {
            if l.sent != Some(l.state) {
                let reason = match l.sent {
                    None => Reason::Init,
                    Some(_) => out.log.iter().rev().find(|a| a.load == l.p.name).map_or(Reason::Restore, |a| a.reason),
                };
                l.sent = Some(l.state);
                out.commands.push(LoadCommand { load: l.p.name.clone(), state: l.state, reason });
            }
        }
    }

    fn shed(&mut self, now: DateTime<Utc>, excess: f64, est: f64, out: &mut Output) {
        let mono = self.mono;
        let fresh = i64::from(self.p.meter_timeout_s);
        let mut need = excess;
        let mut any = false;
        for k in 0..self.order.len() {
            if need <= 0.0 {
                break;
            }
            let i = self.order[k];
            let l = &self.loads[i];
            if mono < l.recovery_until {
                continue;
            }
            let (to, red) = match (l.p.kind, l.state) {
                (LoadKind::Setpoint, LoadState::Setpoint { kw }) => {
                    if kw <= l.min_kw + 1e-9 || (!l.is_shed() && mono < l.on_at.saturating_add(l.min_on_ms)) {
                        continue;
                    }
                    let target = round_down_01(kw - need).max(l.min_kw);
                    (LoadState::Setpoint { kw: target }, kw - target)
                }
                _ => {
                    if l.is_shed() || mono < l.on_at.saturating_add(l.min_on_ms) {
                        continue;
                    }
                    let red = l.running_kw(now, fresh);
                    if red <= 0.0 {
                        continue;
                    }
                    (l.shed_state(), red)
                }
            };
            if red <= 0.0 {
                continue;
            }
            self.set(i, to, Reason::OverLimit, now, Some(est), out);
            need -= red;
            any = true;
        }
        if any {
            let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
            self.next_restore = self.next_restore.max(mono.saturating_add(d));
        }
    }

    fn restore_one(&mut self, now: DateTime<Utc>, headroom: f64, est: f64, surplus: bool, out: &mut Output) {
        let mono = self.mono;
        let caps = self.box_caps();
        for k in (0..self.order.len()).rev() {
            let i = self.order[k];
            let l = &self.loads[i];
            if !l.is_shed() || l.blocked_at.is_some_and(|b| mono < b.saturating_add(l.min_off_ms)) {
                continue;
            }
            let cap = caps.as_ref().and_then(|c| c.get(i).copied());
            if cap.is_some_and(|c| control_box::exceeds(l.normal(), c) && l.p.kind != LoadKind::Setpoint) {
                continue; // the control box keeps it blocked
            }
            let to = match l.state {
                LoadState::Setpoint { kw } => {
                    let ceiling = match cap {
                        Some(LoadState::Setpoint { kw: c }) => c.min(l.p.rated_kw),
                        _ => l.p.rated_kw,
                    };
                    let missing = ceiling - kw;
                    let inc = missing.min(headroom);
                    // raise in steps of at least 1 kW (or what is missing) to avoid chatter
                    if inc <= 0.0 || inc < missing.min(1.0) {
                        continue;
                    }
                    if inc >= missing && ceiling >= l.p.rated_kw - 1e-9 {
                        l.normal()
                    } else if inc >= missing {
                        LoadState::Setpoint { kw: ceiling }
                    } else {
                        LoadState::Setpoint { kw: round_down_01(kw + inc).max(kw) }
                    }
                }
                _ => {
                    if l.p.rated_kw >= headroom {
                        continue;
                    }
                    if surplus {
                        l.boosted_state()
                    } else {
                        l.normal()
                    }
                }
            };
            if to == l.state {
                continue;
            }
            self.set(i, to, Reason::Restore, now, Some(est), out);
            let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
            self.next_restore = mono.saturating_add(d);
            return;
        }
    }
}
