//! The configuration of one lighting zone (`[[lighting.zone]]`) and its validation.
//!
//! [`ZoneParams`] is the serde form (field names are the TOML keys); [`ZoneParams::validate`] lists every
//! problem with its key path relative to the zone table, so `check-config` can report all of them.
//! `ZoneParams::default()` is the example zone of PRODUCT.md (`reiherhagen`, three lamps, `pir-01` at
//! `lamp-02`); the per-field serde defaults are the values of that example.

use std::str::FromStr;

use chrono::{Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One problem in a zone's parameters: the key path (relative to the zone table, e.g.
/// `schedule.period[1].from`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in the lighting parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lighting configuration: {}", join_problems(.problems))]
pub struct ParamsError {
    pub problems: Vec<Problem>,
}

fn join_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
}

/// A lamp of a zone: just its device name (wattage from `lamp_watts`), or a table with its own wattage.
/// `lamps = ["lamp-01", { device = "lamp-02", watts = 60.0 }]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LampSpec {
    Name(String),
    Table(LampTable),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LampTable {
    pub device: String,
    /// Rated power at 100 %, in watts; defaults to the zone's `lamp_watts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watts: Option<f64>,
}

impl LampSpec {
    pub fn device(&self) -> &str {
        match self {
            LampSpec::Name(n) => n,
            LampSpec::Table(t) => &t.device,
        }
    }

    pub fn watts(&self, zone_default: f64) -> f64 {
        match self {
            LampSpec::Name(_) => zone_default,
            LampSpec::Table(t) => t.watts.unwrap_or(zone_default),
        }
    }
}

/// A presence source (LoRaWAN presence sensor or GPIO PIR input, by its device/source name) and the lamp it
/// stands at. The optional keys override the zone's defaults for this sensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    pub device: String,
    pub lamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_window_s: Option<u32>,
    /// 0 = this sensor is not supervised (e.g. a GPIO input that only reports edges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u32>,
}

/// `[lighting.zone.schedule]`: when the zone is lit and at which level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleParams {
    /// true: lit from sunset + `sunset_offset_min` to sunrise + `sunrise_offset_min` (the astronomical clock,
    /// for the gateway's latitude/longitude); periods only change the level inside that time. false: lit only
    /// inside the periods.
    #[serde(default = "yes")]
    pub astronomical: bool,
    /// Minutes after sunset the lamps switch on (negative: before sunset). -240..=240.
    #[serde(default)]
    pub sunset_offset_min: i32,
    /// Minutes after sunrise the lamps switch off (negative: before sunrise). -240..=240.
    #[serde(default)]
    pub sunrise_offset_min: i32,
    /// Level periods in the zone's local time (`[[lighting.zone.schedule.period]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub period: Vec<PeriodSpec>,
}

impl Default for ScheduleParams {
    fn default() -> Self {
        ScheduleParams { astronomical: true, sunset_offset_min: 0, sunrise_offset_min: 0, period: Vec::new() }
    }
}

/// A level period in local time, e.g. `{ from = "23:00", to = "05:00", level_pct = 10 }` (a `to` not after
/// `from` ends on the next day), restricted to `dates` and/or `weekdays` of its start, or a date rule
/// without times: `{ dates = ["12-31"], level_pct = 50 }` covers the whole night that begins on that date
/// (12:00 to 12:00 local). `level_pct = 0` switches the lamps off. Dated periods beat weekday periods, which
/// beat plain ones; among equals the first listed wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodSpec {
    /// `HH:MM` local time (00:00..23:59).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `HH:MM` local time (00:00..24:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub level_pct: u8,
    /// `YYYY-MM-DD`, `MM-DD` (every year), or ranges `A..B` of either form (inclusive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<String>,
    /// `mon`..`sun`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
}

/// `[[lighting.zone]]`. The first eight keys are pinned by PRODUCT.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneParams {
    pub name: String,
    /// IANA time zone of the schedule's local times and of the daily energy report.
    pub time_zone: String,
    /// Lamps in order along the path ("ahead" = towards the end of the list).
    pub lamps: Vec<LampSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<SensorSpec>,
    /// The schedule's level while lit, where no period says otherwise.
    #[serde(default = "default_base_level_pct")]
    pub base_level_pct: u8,
    /// The level presence raises lamps to.
    #[serde(default = "default_boost_level_pct")]
    pub boost_level_pct: u8,
    /// How long lamps stay boosted after the last accepted detection.
    #[serde(default = "default_hold_s")]
    pub hold_s: u32,
    /// Lamps after the sensor's lamp (towards the end of `lamps`) that brighten with a detection.
    #[serde(default = "default_lamps_ahead")]
    pub lamps_ahead: u32,
    /// Lamps before the sensor's lamp that brighten; absent = `lamps_ahead` (both sides, as in PRODUCT.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lamps_behind: Option<u32>,
    /// Fade time of a rise, done by the lamp controller (sent with the command, used for energy accounting).
    #[serde(default = "default_ramp_up_s")]
    pub ramp_up_s: u32,
    /// Fade time of a fall.
    #[serde(default = "default_ramp_down_s")]
    pub ramp_down_s: u32,
    /// Lowest level of a lit lamp: schedule levels below it are raised to it (0 = off still means off).
    #[serde(default)]
    pub floor_level_pct: u8,
    /// Default rated power of a lamp at 100 %, watts.
    #[serde(default = "default_lamp_watts")]
    pub lamp_watts: f64,
    /// Triggers needed within `debounce_window_s` before a detection counts (1 = every trigger counts).
    #[serde(default = "default_debounce_count")]
    pub debounce_count: u32,
    #[serde(default = "default_debounce_window_s")]
    pub debounce_window_s: u32,
    /// A sensor not heard from (any uplink) for this long is silent: its lamps go to `failsafe_level_pct`.
    /// 0 = not supervised.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u32,
    /// Level of the lamps of a silent sensor while the schedule has the zone lit.
    #[serde(default = "default_failsafe_level_pct")]
    pub failsafe_level_pct: u8,
    /// Level of every lamp, day and night, while the system clock is untrusted (safe mode).
    #[serde(default = "default_clock_safe_level_pct")]
    pub clock_safe_level_pct: u8,
    /// Grid emission factor for `co2_saved_g`.
    #[serde(default = "default_co2_g_per_kwh")]
    pub co2_g_per_kwh: f64,
    /// Energy report window; 60..=86400 and a divisor of 86400 (aligned to midnight UTC).
    #[serde(default = "default_energy_window_s")]
    pub energy_window_s: u32,
    /// A lamp that has not reported the commanded level this long after a command is retried, then faulted.
    /// 0 = lamps are not expected to report.
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u32,
    /// Re-sends of an unacknowledged command before `lamp_fault`.
    #[serde(default = "default_ack_retries")]
    pub ack_retries: u32,
    /// Minimum time between two commands to the same lamp (duty cycle): changes in between are coalesced and
    /// the latest level is sent when the gap is over.
    #[serde(default = "default_min_command_gap_s")]
    pub min_command_gap_s: u32,
    #[serde(default)]
    pub schedule: ScheduleParams,
}

fn yes() -> bool {
    true
}
fn default_base_level_pct() -> u8 {
    10
}
fn default_boost_level_pct() -> u8 {
    100
}
fn default_hold_s() -> u32 {
    90
}
fn default_lamps_ahead() -> u32 {
    2
}
fn default_ramp_up_s() -> u32 {
    2
}
fn default_ramp_down_s() -> u32 {
    10
}
fn default_lamp_watts() -> f64 {
    40.0
}
fn default_debounce_count() -> u32 {
    1
}
fn default_debounce_window_s() -> u32 {
    10
}
fn default_heartbeat_s() -> u32 {
    3600
}
fn default_failsafe_level_pct() -> u8 {
    50
}
fn default_clock_safe_level_pct() -> u8 {
    50
}
fn default_co2_g_per_kwh() -> f64 {
    380.0
}
fn default_energy_window_s() -> u32 {
    3600
}
fn default_ack_timeout_s() -> u32 {
    120
}
fn default_ack_retries() -> u32 {
    1
}
fn default_min_command_gap_s() -> u32 {
    5
}

impl Default for ZoneParams {
    /// The example zone of PRODUCT.md.
    fn default() -> Self {
        ZoneParams {
            name: "reiherhagen".to_string(),
            time_zone: "Europe/Berlin".to_string(),
            lamps: ["lamp-01", "lamp-02", "lamp-03"].iter().map(|s| LampSpec::Name(s.to_string())).collect(),
            sensors: vec![SensorSpec {
                device: "pir-01".to_string(),
                lamp: "lamp-02".to_string(),
                debounce_count: None,
                debounce_window_s: None,
                heartbeat_s: None,
            }],
            base_level_pct: default_base_level_pct(),
            boost_level_pct: default_boost_level_pct(),
            hold_s: default_hold_s(),
            lamps_ahead: default_lamps_ahead(),
            lamps_behind: None,
            ramp_up_s: default_ramp_up_s(),
            ramp_down_s: default_ramp_down_s(),
            floor_level_pct: 0,
            lamp_watts: default_lamp_watts(),
            debounce_count: default_debounce_count(),
            debounce_window_s: default_debounce_window_s(),
            heartbeat_s: default_heartbeat_s(),
            failsafe_level_pct: default_failsafe_level_pct(),
            clock_safe_level_pct: default_clock_safe_level_pct(),
            co2_g_per_kwh: default_co2_g_per_kwh(),
            energy_window_s: default_energy_window_s(),
            ack_timeout_s: default_ack_timeout_s(),
            ack_retries: default_ack_retries(),
            min_command_gap_s: default_min_command_gap_s(),
            schedule: ScheduleParams::default(),
        }
    }
}

/// A name that appears in MQTT topics: `[A-Za-z0-9_.-]{1,64}`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// `HH:MM` as minutes after midnight; `24:00` only when `allow_24`.
pub(crate) fn parse_hhmm(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if allow_24 => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// A date or date range of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateSpec {
    Exact(NaiveDate, NaiveDate),
    /// (month, day) .. (month, day), inclusive, wrapping over the year end when the end is before the start.
    Annual((u32, u32), (u32, u32)),
}

impl DateSpec {
    pub(crate) fn matches(&self, d: NaiveDate) -> bool {
        match *self {
            DateSpec::Exact(a, b) => a <= d && d <= b,
            DateSpec::Annual(a, b) => {
                let x = (d.month(), d.day());
                if a <= b {
                    a <= x && x <= b
                } else {
                    x >= a || x <= b
                }
            }
        }
    }
}

enum OneDate {
    Exact(NaiveDate),
    Annual(u32, u32),
}

fn parse_one_date(s: &str) -> Option<OneDate> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    let num = |p: &str, len: usize| -> Option<u32> {
        if p.len() == len && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    match parts.as_slice() {
        [y, m, d] => {
            let y = num(y, 4)?;
            NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, num(m, 2)?, num(d, 2)?).map(OneDate::Exact)
        }
        [m, d] => {
            let (m, d) = (num(m, 2)?, num(d, 2)?);
            // 2000 is a leap year, so 02-29 is accepted (it matches in leap years only).
            NaiveDate::from_ymd_opt(2000, m, d).map(|_| OneDate::Annual(m, d))
        }
        _ => None,
    }
}

pub(crate) fn parse_date_spec(s: &str) -> Option<DateSpec> {
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (parse_one_date(a)?, parse_one_date(b)?),
        None => {
            let a = parse_one_date(s)?;
            let b = parse_one_date(s)?;
            (a, b)
        }
    };
    match (a, b) {
        (OneDate::Exact(a), OneDate::Exact(b)) if a <= b => Some(DateSpec::Exact(a, b)),
        (OneDate::Annual(am, ad), OneDate::Annual(bm, bd)) => Some(DateSpec::Annual((am, ad), (bm, bd))),
        _ => None,
    }
}

pub(crate) fn parse_weekday(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

impl ZoneParams {
    /// Lamps before the sensor's lamp that brighten with a detection.
    pub fn lamps_behind(&self) -> u32 {
        self.lamps_behind.unwrap_or(self.lamps_ahead)
    }

    /// Every problem in these parameters (empty = valid). Keys are relative to the zone table.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(Problem { key, message });
        if !valid_name(&self.name) {
            bad("name".into(), format!("expected [A-Za-z0-9_.-]{{1,64}}, got {:?}", self.name));
        }
        if Tz::from_str(&self.time_zone).is_err() {
            bad("time_zone".into(), format!("unknown IANA time zone {:?}", self.time_zone));
        }
        if self.lamps.is_empty() {
            bad("lamps".into(), "a zone needs at least one lamp".into());
        }
        for (i, lamp) in self.lamps.iter().enumerate() {
            if !valid_name(lamp.device()) {
                bad(format!("lamps[{i}]"), format!("expected a device name, got {:?}", lamp.device()));
            }
            if self.lamps[..i].iter().any(|l| l.device() == lamp.device()) {
                bad(format!("lamps[{i}]"), format!("lamp {:?} is listed twice", lamp.device()));
            }
            let w = lamp.watts(self.lamp_watts);
            if !(w.is_finite() && (0.0..=100_000.0).contains(&w)) {
                bad(format!("lamps[{i}].watts"), format!("expected 0..=100000 W, got {w}"));
            }
        }
        for (i, s) in self.sensors.iter().enumerate() {
            if !valid_name(&s.device) {
                bad(format!("sensors[{i}].device"), format!("expected a device name, got {:?}", s.device));
            }
            if self.sensors[..i].iter().any(|o| o.device == s.device) {
                bad(format!("sensors[{i}].device"), format!("sensor {:?} is listed twice", s.device));
            }
            if !self.lamps.iter().any(|l| l.device() == s.lamp) {
                bad(format!("sensors[{i}].lamp"), format!("{:?} is not one of this zone's lamps", s.lamp));
            }
            check_debounce(&mut bad, &format!("sensors[{i}]."), s.debounce_count, s.debounce_window_s);
            if s.heartbeat_s.is_some_and(|h| h > 30 * 86_400) {
                bad(format!("sensors[{i}].heartbeat_s"), "expected at most 2592000 (30 days)".into());
            }
        }
        check_debounce(&mut bad, "", Some(self.debounce_count), Some(self.debounce_window_s));
        for (key, v) in [
            ("base_level_pct", self.base_level_pct),
            ("boost_level_pct", self.boost_level_pct),
            ("floor_level_pct", self.floor_level_pct),
            ("failsafe_level_pct", self.failsafe_level_pct),
            ("clock_safe_level_pct", self.clock_safe_level_pct),
        ] {
            if v > 100 {
                bad(key.into(), format!("expected 0..=100, got {v}"));
            }
        }
        if self.boost_level_pct < self.base_level_pct {
            bad("boost_level_pct".into(), "must not be below base_level_pct".into());
        }
        if !(1..=86_400).contains(&self.hold_s) {
            bad("hold_s".into(), format!("expected 1..=86400, got {}", self.hold_s));
        }
        if self.lamps_ahead > 10_000 {
            bad("lamps_ahead".into(), "expected at most 10000".into());
        }
        if self.lamps_behind.is_some_and(|b| b > 10_000) {
            bad("lamps_behind".into(), "expected at most 10000".into());
        }
        for (key, v) in [("ramp_up_s", self.ramp_up_s), ("ramp_down_s", self.ramp_down_s)] {
            if v > 3600 {
                bad(key.into(), format!("expected 0..=3600, got {v}"));
            }
        }
        if !(self.lamp_watts.is_finite() && (0.0..=100_000.0).contains(&self.lamp_watts)) {
            bad("lamp_watts".into(), format!("expected 0..=100000 W, got {}", self.lamp_watts));
        }
        if self.heartbeat_s > 30 * 86_400 {
            bad("heartbeat_s".into(), "expected at most 2592000 (30 days)".into());
        }
        if !(self.co2_g_per_kwh.is_finite() && (0.0..=10_000.0).contains(&self.co2_g_per_kwh)) {
            bad("co2_g_per_kwh".into(), format!("expected 0..=10000, got {}", self.co2_g_per_kwh));
        }
        if !(60..=86_400).contains(&self.energy_window_s) || 86_400 % self.energy_window_s != 0 {
            bad("energy_window_s".into(), format!("expected a divisor of 86400 >= 60, got {}", self.energy_window_s));
        }
        if self.ack_timeout_s > 86_400 {
            bad("ack_timeout_s".into(), "expected at most 86400".into());
        }
        if self.ack_retries > 10 {
            bad("ack_retries".into(), "expected at most 10".into());
        }
        if self.min_command_gap_s > 3600 {
            bad("min_command_gap_s".into(), "expected at most 3600".into());
        }
        let s = &self.schedule;
        for (key, v) in [("sunset_offset_min", s.sunset_offset_min), ("sunrise_offset_min", s.sunrise_offset_min)] {
            if !(-240..=240).contains(&v) {
                bad(format!("schedule.{key}"), format!("expected -240..=240, got {v}"));
            }
        }
        for (i, per) in s.period.iter().enumerate() {
            let k = format!("schedule.period[{i}]");
            match (&per.from, &per.to) {
                (Some(f), Some(t)) => {
                    if parse_hhmm(f, false).is_none() {
                        bad(format!("{k}.from"), format!("expected HH:MM (00:00..23:59), got {f:?}"));
                    }
                    if parse_hhmm(t, true).is_none() {
                        bad(format!("{k}.to"), format!("expected HH:MM (00:00..24:00), got {t:?}"));
                    }
                }
                (None, None) => {}
                (Some(_), None) => bad(format!("{k}.to"), "`from` needs a `to`".into()),
                (None, Some(_)) => bad(format!("{k}.from"), "`to` needs a `from`".into()),
            }
            if per.level_pct > 100 {
                bad(format!("{k}.level_pct"), format!("expected 0..=100, got {}", per.level_pct));
            }
            for (j, d) in per.dates.iter().enumerate() {
                if parse_date_spec(d).is_none() {
                    bad(
                        format!("{k}.dates[{j}]"),
                        format!("expected YYYY-MM-DD, MM-DD or a range A..B of one form, got {d:?}"),
                    );
                }
            }
            for (j, w) in per.weekdays.iter().enumerate() {
                if parse_weekday(w).is_none() {
                    bad(format!("{k}.weekdays[{j}]"), format!("expected mon..sun, got {w:?}"));
                }
            }
        }
        p
    }
}

fn check_debounce(bad: &mut impl FnMut(String, String), prefix: &str, count: Option<u32>, window: Option<u32>) {
    if let Some(c) = count {
        if !(1..=100).contains(&c) {
            bad(format!("{prefix}debounce_count"), format!("expected 1..=100, got {c}"));
        }
    }
    if let Some(w) = window {
        if !(1..=3600).contains(&w) {
            bad(format!("{prefix}debounce_window_s"), format!("expected 1..=3600, got {w}"));
        }
    }
}
