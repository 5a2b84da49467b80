//! Time passing for a zone: the clock's plausibility (safe mode), energy accounting, expiries, sensor
//! silence, and clock jumps in either direction.

use chrono::{DateTime, Datelike, Utc};

use super::super::energy::Ramp;
use super::super::{add_s, EventKind, Output, MAX_GAP_S};
use super::Zone;

impl Zone {
    pub(super) fn clock_plausible(&self, now: DateTime<Utc>) -> bool {
        now >= self.build_date && (1970..=2200).contains(&now.year())
    }

    /// Time passes: clock checks, energy, expiries, silence.
    pub(super) fn advance(&mut self, now: DateTime<Utc>, out: &mut Output) {
        if self.last_now.is_some_and(|prev| now < prev) {
            self.rebase(now);
            self.book.interrupt(&mut out.energy);
        }
        let trusted = self.clock_plausible(now);
        if self.clock_trusted != Some(trusted) {
            if !trusted {
                self.book.interrupt(&mut out.energy);
                let build_date = self.build_date;
                self.event(out, now, EventKind::ClockUntrusted { build_date });
            } else if self.clock_trusted.is_some() {
                self.event(out, now, EventKind::ClockTrusted);
                self.jumped_forward(now);
            }
            self.clock_trusted = Some(trusted);
        }
        if self.last_now.is_some_and(|prev| (now - prev).num_seconds() > MAX_GAP_S) {
            self.jumped_forward(now);
        }
        if trusted {
            if let Some(prev) = self.last_now.filter(|&p| p < now && self.book.running()) {
                if (now - prev).num_seconds() > MAX_GAP_S {
                    self.book.interrupt(&mut out.energy);
                } else {
                    let lamps = &self.lamps;
                    let integrate = |a, b| {
                        lamps.iter().fold((0.0, 0.0), |(e, f), l| {
                            let (area, on_s) = l.ramp.integrate(a, b);
                            (e + l.watts * area / 100.0 / 3600.0, f + l.watts * on_s / 3600.0)
                        })
                    };
                    self.book.advance(&self.schedule, prev, now, integrate, &mut out.energy);
                }
            }
            self.book.start(&self.schedule, now);
        }
        if self.overr.is_some_and(|o| now >= o.until) {
            self.overr = None;
            self.event(out, now, EventKind::OverrideEnded { cleared: false });
        }
        for i in 0..self.sensors.len() {
            let s = &mut self.sensors[i];
            let heard = *s.last_heard.get_or_insert(now);
            let Some(hb) = s.heartbeat else { continue };
            if !s.silent && now >= add_s(heard, hb) {
                s.silent = true;
                let (sensor, at_lamp) = (s.name.clone(), s.lamp);
                let lamps = self.covered(at_lamp).filter_map(|j| self.lamps.get(j).map(|l| l.name.clone())).collect();
                self.event(out, now, EventKind::SensorSilent { sensor, last_heard: heard, lamps });
            }
        }
        self.last_now = Some(now);
    }

    /// The clock jumped forward (became plausible, or more than [`MAX_GAP_S`] passed between two calls):
    /// that time was not observed, so sensors get a fresh heartbeat period and pending acknowledgements a
    /// fresh timeout instead of being declared silent or faulty at once.
    fn jumped_forward(&mut self, now: DateTime<Utc>) {
        for s in &mut self.sensors {
            s.last_heard = Some(now);
        }
        for l in &mut self.lamps {
            if let Some(p) = &mut l.pending {
                p.sent_at = now;
            }
        }
    }

    /// `now` went backwards: cut deadlines back to their durations and re-anchor the models.
    fn rebase(&mut self, now: DateTime<Utc>) {
        let max_boost = add_s(now, self.hold);
        for l in &mut self.lamps {
            l.boost_until = l.boost_until.map(|u| u.min(max_boost));
            if l.ramp.start > now {
                l.ramp = Ramp::steady(l.ramp.to, now);
            }
            l.sent_at = l.sent_at.map(|t| t.min(now));
            if let Some(p) = &mut l.pending {
                p.sent_at = p.sent_at.min(now);
            }
        }
        if let Some(o) = &mut self.overr {
            o.until = o.until.min(add_s(now, o.duration));
        }
        for s in &mut self.sensors {
            s.last_heard = s.last_heard.map(|t| t.min(now));
            s.triggers.clear();
        }
    }
}
