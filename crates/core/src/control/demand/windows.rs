//! Time passing: the monotonic clock, the report windows and the integration of each span of time into
//! the open window and event reports.

use chrono::{DateTime, Utc};

use super::events::Booked;
use super::report::{Acc, Span};
use super::{add_ms, Demand, Load, Output, ReportScope, MAX_WINDOWS_PER_CALL};

impl Demand {
    pub(super) fn advance(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let Some(last) = self.last_now else {
            self.started = Some(now);
            self.last_now = Some(now);
            self.window = Some(Acc::new(self.window_start(now), self.loads.len(), true));
            return;
        };
        if now < last {
            // The clock jumped back. How much real time passed is unknown; the shell calls at least every
            // `interval_s`, so count that much (a maximum blocked time may end early, never late), and go on
            // from here (the monotonic clock does not stand still until the wall clock catches up).
            self.mono = self.mono.saturating_add(i64::from(self.p.interval_s) * 1000);
            self.last_now = Some(now);
            return;
        }
        let win = i64::from(self.p.report_window_s) * 1000;
        let mut t = last;
        let mut emitted = 0;
        while let Some(w) = &self.window {
            let end = add_ms(w.start, win);
            if end > now {
                break;
            }
            if emitted >= MAX_WINDOWS_PER_CALL {
                // A long jump: skip to the window containing `now`.
                self.window = Some(Acc::new(self.window_start(now), self.loads.len(), true));
                t = now;
                break;
            }
            self.integrate(t, end);
            if let Some(acc) = self.window.take() {
                out.reports.push(acc.finish(ReportScope::Window, end, &self.names));
            }
            self.window = Some(Acc::new(end, self.loads.len(), false));
            t = end;
            emitted += 1;
        }
        self.integrate(t, now);
        self.mono = self.mono.saturating_add((now - last).num_milliseconds());
        self.last_now = Some(now);
    }

    fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let win = i64::from(self.p.report_window_s) * 1000;
        let ms = now.timestamp_millis();
        let start = ms - ms.rem_euclid(win);
        DateTime::<Utc>::from_timestamp_millis(start).unwrap_or(now)
    }

    fn integrate(&mut self, t0: DateTime<Utc>, t1: DateTime<Utc>) {
        if t1 <= t0 {
            return;
        }
        let dt_s = (t1 - t0).num_milliseconds() as f64 / 1000.0;
        let meter_ok = self.reading.is_some_and(|r| (t0 - r.at).num_seconds() < i64::from(self.p.meter_timeout_s));
        let over = meter_ok && self.reading.is_some_and(|r| r.kw > self.limit.0);
        let blocked: Vec<bool> = self.loads.iter().map(Load::is_shed).collect();
        let boosted: Vec<bool> = self.loads.iter().map(Load::is_boosted).collect();
        let shed_kw: Vec<f64> = self.loads.iter().map(Load::reduction_kw).collect();
        let span = Span { dt_s, over, limit_kw: self.limit.0, blocked: &blocked, boosted: &boosted, shed_kw: &shed_kw };
        if let Some(w) = &mut self.window {
            w.add_span(&span);
        }
        for b in &mut self.events.booked {
            if let Some(acc) = &mut b.acc {
                acc.add_span(&span);
            }
        }
    }

    pub(super) fn finish_event(&mut self, b: Booked, now: DateTime<Utc>, cancelled: bool, out: &mut Output) {
        if let Some(acc) = b.acc {
            let scope = ReportScope::Event { id: b.ev.id, modification: b.ev.modification, cancelled };
            out.reports.push(acc.finish(scope, now, &self.names));
        }
    }
}
