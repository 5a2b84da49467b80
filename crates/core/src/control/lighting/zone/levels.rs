//! Deciding each lamp's level (override, safe mode, schedule, fail-safe, presence) and sending it:
//! coalesced commands, the minimum gap between commands, and acknowledgement retries and faults.

use chrono::{DateTime, Utc};

use super::super::energy::Ramp;
use super::super::{add_s, Event, EventKind, LampCommand, Output, Reason, ScheduleLevel};
use super::{Pending, Zone};

impl Zone {
    /// The level and reason lamp `i` should have at `now`.
    fn desired(&self, i: usize, now: DateTime<Utc>) -> (u8, Reason) {
        if let Some(o) = self.overr {
            return (o.level, Reason::Override);
        }
        let trusted = self.clock_trusted == Some(true);
        let (mut level, mut reason) = if trusted {
            match self.schedule.level_at(now) {
                ScheduleLevel::Off => return (0, Reason::Off),
                ScheduleLevel::On(l) => (l.max(self.floor), Reason::Schedule),
            }
        } else {
            (self.clock_safe_level, Reason::Failsafe)
        };
        if trusted
            && self.failsafe_level > level
            && self.sensors.iter().any(|s| s.silent && self.covered(s.lamp).contains(&i))
        {
            (level, reason) = (self.failsafe_level, Reason::Failsafe);
        }
        if self.boost > level && self.lamps[i].boost_until.is_some_and(|u| u > now) {
            (level, reason) = (self.boost, Reason::Presence);
        }
        (level, reason)
    }

    /// Decides every lamp's level and sends what has to be sent.
    pub(super) fn reconcile(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let mut changed = false;
        for i in 0..self.lamps.len() {
            let (level, reason) = self.desired(i, now);
            let (ack_timeout, retries, gap) = (self.ack_timeout, self.ack_retries, self.min_gap);
            let (up, down) = (self.ramp_up_s, self.ramp_down_s);
            let zone = self.name.clone();
            let l = &mut self.lamps[i];
            if !l.published || l.target != level || l.reason != reason {
                changed = true;
                (l.target, l.reason, l.published) = (level, reason, true);
            }
            let mut resend = std::mem::take(&mut l.resync);
            if let (Some(p), Some(timeout)) = (l.pending, ack_timeout) {
                if now >= add_s(p.sent_at, timeout) {
                    if p.attempts <= retries {
                        resend = true;
                    } else {
                        l.pending = None;
                        if !l.faulted {
                            l.faulted = true;
                            let kind =
                                EventKind::LampFault { lamp: l.name.clone(), level_pct: p.level, attempts: p.attempts };
                            out.events.push(Event { zone: zone.clone(), at: now, kind });
                        }
                    }
                }
            }
            let differs = l.sent != Some(level);
            if !(differs || resend) {
                continue;
            }
            if l.sent_at.is_some_and(|t| now < add_s(t, gap)) {
                l.resync |= resend && !differs;
                continue;
            }
            let current = l.ramp.level_at(now);
            let ramp_s = if f64::from(level) > current { up } else { down };
            l.ramp = Ramp { from: current, to: f64::from(level), start: now, dur_s: f64::from(ramp_s) };
            let attempts = match l.pending {
                Some(p) if !differs => p.attempts + 1,
                _ => 1,
            };
            l.pending = ack_timeout.map(|_| Pending { level, sent_at: now, attempts });
            l.sent = Some(level);
            l.sent_at = Some(now);
            out.commands.push(LampCommand {
                zone,
                lamp: l.name.clone(),
                level_pct: level,
                reason,
                ramp_s,
                retry: !differs,
            });
        }
        if changed {
            out.states.push(self.state(now));
        }
    }
}
