//! Energy accounting: the effective level of each lamp is modelled as a linear fade from the level it had
//! when a command was sent to the commanded level (over the ramp time the command carries), and power as
//! rated watts × level / 100 (LED drivers dim roughly linearly in power). The reference is the same lamp at
//! full power for the time it was lit (effective level above 0). Integration is exact between calls, so the
//! figures do not depend on how often the zone is ticked.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::schedule::Schedule;

/// Seconds from `a` to `b` (negative when `b` is earlier), with millisecond resolution.
pub(crate) fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// A lamp's modelled level: `from` at `start`, linearly to `to` over `dur_s`, then `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ramp {
    pub from: f64,
    pub to: f64,
    pub start: DateTime<Utc>,
    pub dur_s: f64,
}

impl Ramp {
    pub fn steady(level: f64, at: DateTime<Utc>) -> Ramp {
        Ramp { from: level, to: level, start: at, dur_s: 0.0 }
    }

    pub fn level_at(&self, t: DateTime<Utc>) -> f64 {
        let x = secs(self.start, t);
        if x < 0.0 {
            self.from
        } else if self.dur_s <= 0.0 || x >= self.dur_s {
            self.to
        } else {
            self.from + (self.to - self.from) * x / self.dur_s
        }
    }

    /// (∫ level dt in %·s, seconds with level > 0) over `[a, b]`.
    pub fn integrate(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> (f64, f64) {
        let (xa, xb) = (secs(self.start, a), secs(self.start, b));
        if xb <= xa {
            return (0.0, 0.0);
        }
        let mut area = 0.0;
        let mut on = 0.0;
        // Before the ramp: `from`.
        let (p0, p1) = (xa, xb.min(0.0));
        if p1 > p0 {
            area += self.from * (p1 - p0);
            on += if self.from > 0.0 { p1 - p0 } else { 0.0 };
        }
        // The ramp.
        let (r0, r1) = (xa.max(0.0), xb.min(self.dur_s));
        if r1 > r0 && self.dur_s > 0.0 {
            let l = |x: f64| self.from + (self.to - self.from) * x / self.dur_s;
            area += (l(r0) + l(r1)) / 2.0 * (r1 - r0);
            on += if self.from > 0.0 || self.to > 0.0 { r1 - r0 } else { 0.0 };
        }
        // After the ramp: `to`.
        let (q0, q1) = (xa.max(self.dur_s.max(0.0)), xb);
        if q1 > q0 {
            area += self.to * (q1 - q0);
            on += if self.to > 0.0 { q1 - q0 } else { 0.0 };
        }
        (area, on)
    }
}

/// Which aggregate an [`EnergyReport`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergyPeriod {
    /// `energy_window_s`, aligned to midnight UTC.
    Window,
    /// A local calendar day of the zone's time zone (23 or 25 hours on DST days).
    Day,
}

/// Energy of a zone's lamps over a window or a day. Published when the window or day closes.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyReport {
    pub zone: String,
    pub period: EnergyPeriod,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// What the lamps used (modelled).
    pub energy_wh: f64,
    /// The same lamps at 100 % for the time they were lit.
    pub full_power_wh: f64,
    pub co2_g_per_kwh: f64,
    /// Part of the window was not observed (start-up, a gap of more than [`MAX_GAP_S`], a clock jump).
    pub partial: bool,
}

impl EnergyReport {
    pub fn saved_wh(&self) -> f64 {
        (self.full_power_wh - self.energy_wh).max(0.0)
    }

    pub fn saved_kwh(&self) -> f64 {
        self.saved_wh() / 1000.0
    }

    pub fn co2_saved_g(&self) -> f64 {
        self.saved_kwh() * self.co2_g_per_kwh
    }

    pub fn to_value(&self) -> Value {
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        let mut v = json!({
            "zone": self.zone,
            "period": match self.period { EnergyPeriod::Window => "window", EnergyPeriod::Day => "day" },
            "window_start": self.window_start.to_rfc3339_opts(SecondsFormat::Millis, true),
            "window_end": self.window_end.to_rfc3339_opts(SecondsFormat::Millis, true),
            "energy_wh": r3(self.energy_wh),
            "full_power_wh": r3(self.full_power_wh),
            "saved_wh": r3(self.saved_wh()),
            "saved_kwh": (self.saved_kwh() * 1e6).round() / 1e6,
            "co2_saved_g": r3(self.co2_saved_g()),
        });
        if self.partial {
            v["partial"] = Value::Bool(true);
        }
        v
    }

    /// `{"zone","period","window_start","window_end","energy_wh","full_power_wh","saved_wh","saved_kwh",
    /// "co2_saved_g"}` (+ `"partial": true` when part of the window was not observed).
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// Calls further apart than this are not integrated (daemon stopped, clock jump): the open window and day
/// are reported as partial and accounting restarts.
pub const MAX_GAP_S: i64 = 6 * 3600;

#[derive(Debug, Clone)]
struct Acc {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    energy_wh: f64,
    full_wh: f64,
    covered_s: f64,
}

impl Acc {
    fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Acc {
        Acc { start, end, energy_wh: 0.0, full_wh: 0.0, covered_s: 0.0 }
    }
}

/// The open window and day of a zone.
#[derive(Debug, Clone)]
pub(crate) struct EnergyBook {
    zone: String,
    window_s: i64,
    co2_g_per_kwh: f64,
    window: Option<Acc>,
    day: Option<Acc>,
}

impl EnergyBook {
    pub fn new(zone: &str, window_s: u32, co2_g_per_kwh: f64) -> EnergyBook {
        EnergyBook {
            zone: zone.to_string(),
            window_s: i64::from(window_s.max(1)),
            co2_g_per_kwh,
            window: None,
            day: None,
        }
    }

    pub fn running(&self) -> bool {
        self.window.is_some()
    }

    fn window_at(&self, t: DateTime<Utc>) -> Option<Acc> {
        let ts = t.timestamp();
        let start = DateTime::from_timestamp(ts.div_euclid(self.window_s) * self.window_s, 0)?;
        Some(Acc::new(start, start.checked_add_signed(Duration::seconds(self.window_s))?))
    }

    fn day_at(sched: &Schedule, t: DateTime<Utc>) -> Option<Acc> {
        let d = sched.local_date(t)?;
        let start = sched.local_instant(d, 0)?;
        let end = sched.local_instant(d, 1440)?;
        (start <= t && t < end).then(|| Acc::new(start, end))
    }

    /// Opens the window and day containing `t` (a no-op when running).
    pub fn start(&mut self, sched: &Schedule, t: DateTime<Utc>) {
        if self.running() {
            return;
        }
        self.window = self.window_at(t);
        self.day = if self.window.is_some() { Self::day_at(sched, t) } else { None };
        if self.day.is_none() {
            self.window = None;
        }
    }

    fn report(&self, acc: &Acc, period: EnergyPeriod) -> EnergyReport {
        let length = secs(acc.start, acc.end);
        EnergyReport {
            zone: self.zone.clone(),
            period,
            window_start: acc.start,
            window_end: acc.end,
            energy_wh: acc.energy_wh,
            full_power_wh: acc.full_wh,
            co2_g_per_kwh: self.co2_g_per_kwh,
            partial: acc.covered_s + 0.001 < length,
        }
    }

    /// Reports the open window and day as they are (partial) and stops accounting.
    pub fn interrupt(&mut self, out: &mut Vec<EnergyReport>) {
        if let Some(w) = self.window.take() {
            out.push(self.report(&w, EnergyPeriod::Window));
        }
        if let Some(d) = self.day.take() {
            out.push(self.report(&d, EnergyPeriod::Day));
        }
    }

    /// The end of the open window or day, whichever is first.
    pub fn next_boundary(&self) -> Option<DateTime<Utc>> {
        match (&self.window, &self.day) {
            (Some(w), Some(d)) => Some(w.end.min(d.end)),
            _ => None,
        }
    }

    /// The open day so far: (energy_wh, full_power_wh).
    pub fn today(&self) -> Option<(DateTime<Utc>, f64, f64)> {
        self.day.as_ref().map(|d| (d.start, d.energy_wh, d.full_wh))
    }

    /// Integrates `[a, b]` with `integrate(x, y) -> (energy_wh, full_power_wh)`, closing windows and days
    /// on the way.
    pub fn advance(
        &mut self,
        sched: &Schedule,
        a: DateTime<Utc>,
        b: DateTime<Utc>,
        integrate: impl Fn(DateTime<Utc>, DateTime<Utc>) -> (f64, f64),
        out: &mut Vec<EnergyReport>,
    ) {
        let mut x = a;
        // Bounded: at most MAX_GAP_S / 60 window ends plus a few day ends per call.
        for _ in 0..10_000 {
            if x >= b {
                return;
            }
            let (Some(w), Some(d)) = (&self.window, &self.day) else { return };
            let y = b.min(w.end).min(d.end);
            let (e, f) = integrate(x, y);
            let covered = secs(x, y);
            for acc in [&mut self.window, &mut self.day].into_iter().flatten() {
                acc.energy_wh += e;
                acc.full_wh += f;
                acc.covered_s += covered;
            }
            if let Some(w) = self.window.take() {
                if y >= w.end {
                    out.push(self.report(&w, EnergyPeriod::Window));
                    self.window = self.window_at(w.end);
                } else {
                    self.window = Some(w);
                }
            }
            if let Some(d) = self.day.take() {
                if y >= d.end {
                    out.push(self.report(&d, EnergyPeriod::Day));
                    self.day = Self::day_at(sched, d.end);
                } else {
                    self.day = Some(d);
                }
            }
            if self.window.is_none() || self.day.is_none() {
                self.interrupt(out);
                return;
            }
            x = y;
        }
    }
}
