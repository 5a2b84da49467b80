//! The schedule of a zone, as a TALQ calendar would express it: an astronomical clock (sunset/sunrise for
//! the gateway's coordinates, with offsets) decides when the zone is lit, local-time periods in the zone's
//! time zone set the level (and survive daylight-saving changes, because every local time is converted to
//! UTC on its own date), and date rules (holidays, events) beat both.
//!
//! Local times that do not exist (the spring-forward gap) mean the first instant after the gap; local times
//! that exist twice (fall back) mean the first of the two.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, Offset, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use sunrise::{Coordinates, SolarDay, SolarEvent};

use super::params::{parse_date_spec, parse_hhmm, parse_weekday, DateSpec, ScheduleParams};

/// What the schedule says at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleLevel {
    /// Outside the lit period, or a period with level 0.
    Off,
    /// Lit at this level (before the zone's floor is applied).
    On(u8),
}

#[derive(Debug, Clone)]
struct Period {
    from_min: u16,
    to_min: u16,
    level: u8,
    dates: Vec<DateSpec>,
    weekdays: Vec<Weekday>,
    /// 2 = has dates, 1 = has weekdays only, 0 = every day.
    specificity: u8,
}

impl Period {
    fn starts_on(&self, d: NaiveDate) -> bool {
        (self.dates.is_empty() || self.dates.iter().any(|s| s.matches(d)))
            && (self.weekdays.is_empty() || self.weekdays.contains(&d.weekday()))
    }
}

/// The compiled schedule of one zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: Tz,
    coords: Option<Coordinates>,
    astronomical: bool,
    sunset_offset: Duration,
    sunrise_offset: Duration,
    base: u8,
    periods: Vec<Period>,
}

/// Years the schedule is evaluated for (outside them: off); the zone's clock check is stricter anyway.
const ASTRO_YEARS: std::ops::RangeInclusive<i32> = 1900..=2200;

impl Schedule {
    /// `params` must have passed [`super::ZoneParams::validate`]; unparsable entries are skipped here.
    pub(crate) fn new(params: &ScheduleParams, tz: Tz, coords: Option<Coordinates>, base: u8) -> Schedule {
        let periods = params
            .period
            .iter()
            .filter_map(|p| {
                let (from_min, to_min) = match (&p.from, &p.to) {
                    (Some(f), Some(t)) => (parse_hhmm(f, false)?, parse_hhmm(t, true)?),
                    // A date rule without times: the whole night that begins on the date.
                    _ => (720, 720),
                };
                let dates: Vec<DateSpec> = p.dates.iter().filter_map(|d| parse_date_spec(d)).collect();
                let weekdays: Vec<Weekday> = p.weekdays.iter().filter_map(|w| parse_weekday(w)).collect();
                let specificity = if !dates.is_empty() {
                    2
                } else if !weekdays.is_empty() {
                    1
                } else {
                    0
                };
                Some(Period { from_min, to_min, level: p.level_pct, dates, weekdays, specificity })
            })
            .collect();
        Schedule {
            tz,
            coords,
            astronomical: params.astronomical,
            sunset_offset: Duration::minutes(i64::from(params.sunset_offset_min)),
            sunrise_offset: Duration::minutes(i64::from(params.sunrise_offset_min)),
            base,
            periods,
        }
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The local calendar date of `t` (None only at the very ends of chrono's range).
    pub(crate) fn local_date(&self, t: DateTime<Utc>) -> Option<NaiveDate> {
        let offset = self.tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        t.naive_utc().checked_add_offset(offset).map(|n| n.date())
    }

    /// The UTC instant of a local date and minute of day (1440 = midnight ending the day).
    pub(crate) fn local_instant(&self, date: NaiveDate, minute: u16) -> Option<DateTime<Utc>> {
        let (date, minute) = if minute >= 1440 { (date.succ_opt()?, 0) } else { (date, minute) };
        let time = NaiveTime::from_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0)?;
        let naive = date.and_time(time);
        // A gap is at most a few hours (usually 1 h); walk minute by minute to its end.
        for skip in 0..=240 {
            let n = naive.checked_add_signed(Duration::minutes(skip))?;
            match self.tz.from_local_datetime(&n) {
                LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
                LocalResult::None => continue,
            }
        }
        None
    }

    /// Sunset (`evening`) or sunrise on a local date, from the `sunrise` crate, without offsets.
    pub fn sun_event(&self, date: NaiveDate, evening: bool) -> Option<DateTime<Utc>> {
        if !ASTRO_YEARS.contains(&date.year()) {
            return None;
        }
        let ev = if evening { SolarEvent::Sunset } else { SolarEvent::Sunrise };
        SolarDay::new(self.coords?, date).event_time(ev)
    }

    /// True when the sun stays below the horizon all day (polar night), by the noon elevation
    /// 90° - |latitude - declination| with an approximate declination. Only used where the `sunrise` crate
    /// finds no sunrise or sunset.
    fn polar_night(&self, date: NaiveDate) -> bool {
        let Some(c) = self.coords else { return false };
        let doy = f64::from(date.ordinal());
        let decl = -23.44 * (std::f64::consts::TAU / 365.0 * (doy + 10.0)).cos();
        90.0 - (c.lat() - decl).abs() < -0.833
    }

    /// The lit (dark) interval of the night that begins on local date `date`.
    pub fn dark_interval(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !ASTRO_YEARS.contains(&date.year()) {
            return None;
        }
        let next = date.succ_opt()?;
        match (self.sun_event(date, true), self.sun_event(next, false)) {
            (Some(set), Some(rise)) => {
                let on = set.checked_add_signed(self.sunset_offset)?;
                let off = rise.checked_add_signed(self.sunrise_offset)?;
                (on < off).then_some((on, off))
            }
            _ if self.polar_night(date) => Some((self.local_instant(date, 720)?, self.local_instant(next, 720)?)),
            _ => None,
        }
    }

    fn dark_at(&self, t: DateTime<Utc>) -> bool {
        let Some(d) = self.local_date(t) else { return false };
        [d.pred_opt(), Some(d)]
            .into_iter()
            .flatten()
            .any(|d| self.dark_interval(d).is_some_and(|(a, b)| a <= t && t < b))
    }

    fn period_interval(&self, p: &Period, d: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !p.starts_on(d) {
            return None;
        }
        let start = self.local_instant(d, p.from_min)?;
        let end = if p.to_min > p.from_min {
            self.local_instant(d, p.to_min)?
        } else {
            self.local_instant(d.succ_opt()?, p.to_min)?
        };
        (start < end).then_some((start, end))
    }

    fn period_at(&self, t: DateTime<Utc>) -> Option<&Period> {
        let d = self.local_date(t)?;
        let mut best: Option<&Period> = None;
        for p in &self.periods {
            let hit = [d.pred_opt(), Some(d)]
                .into_iter()
                .flatten()
                .any(|d| self.period_interval(p, d).is_some_and(|(a, b)| a <= t && t < b));
            if hit && best.is_none_or(|b| p.specificity > b.specificity) {
                best = Some(p);
            }
        }
        best
    }

    /// The schedule's level at `t`.
    pub fn level_at(&self, t: DateTime<Utc>) -> ScheduleLevel {
        if !ASTRO_YEARS.contains(&t.year()) {
            return ScheduleLevel::Off;
        }
        let period = self.period_at(t);
        match period {
            Some(p) if p.level == 0 => ScheduleLevel::Off,
            Some(p) if !self.astronomical || self.dark_at(t) => ScheduleLevel::On(p.level),
            None if self.astronomical && self.dark_at(t) => ScheduleLevel::On(self.base),
            _ => ScheduleLevel::Off,
        }
    }

    /// The first instant after `t` at which the schedule's level may change.
    pub fn next_change_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !ASTRO_YEARS.contains(&t.year()) {
            return None;
        }
        let d = self.local_date(t)?;
        let mut days = vec![d];
        let mut x = d;
        for _ in 0..2 {
            if let Some(n) = x.succ_opt() {
                days.push(n);
                x = n;
            }
        }
        if let Some(p) = d.pred_opt() {
            days.push(p);
        }
        let mut best: Option<DateTime<Utc>> = None;
        let mut consider = |c: DateTime<Utc>| {
            if c > t && best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        };
        for &day in &days {
            if self.astronomical {
                if let Some((a, b)) = self.dark_interval(day) {
                    consider(a);
                    consider(b);
                }
            }
            for p in &self.periods {
                if let Some((a, b)) = self.period_interval(p, day) {
                    consider(a);
                    consider(b);
                }
            }
        }
        best
    }
}
