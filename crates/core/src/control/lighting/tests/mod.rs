//! Lighting tests, all in simulated time (no sleeping): the zone is driven from one wake-up to the next.

mod calendar;
mod downlinks;
mod overrides_and_failsafes;
mod params_and_robustness;
mod presence_and_energy;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};

use super::*;

const LAT: f64 = 53.7065;
const LON: f64 = 9.9936;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid test time")
}

fn site() -> Site {
    Site { latitude: Some(LAT), longitude: Some(LON), build_date: utc(2025, 6, 1, 0, 0, 0) }
}

fn zone(p: &ZoneParams) -> Zone {
    Zone::from_params(p, &site()).expect("valid params")
}

/// Drives a zone through simulated time, recording everything with its time.
struct Sim {
    zone: Zone,
    now: DateTime<Utc>,
    commands: Vec<(DateTime<Utc>, LampCommand)>,
    events: Vec<Event>,
    states: Vec<ZoneState>,
    energy: Vec<EnergyReport>,
    /// Lamps acknowledge every command at once.
    auto_ack: bool,
    ticks: usize,
}

impl Sim {
    fn new(zone: Zone, start: DateTime<Utc>) -> Sim {
        let mut s = Sim {
            zone,
            now: start,
            commands: vec![],
            events: vec![],
            states: vec![],
            energy: vec![],
            auto_ack: true,
            ticks: 0,
        };
        let out = s.zone.tick(start);
        s.record(out);
        s
    }

    fn record(&mut self, out: Output) {
        let acks: Vec<(String, u8)> = out.commands.iter().map(|c| (c.lamp.clone(), c.level_pct)).collect();
        self.commands.extend(out.commands.into_iter().map(|c| (self.now, c)));
        self.events.extend(out.events);
        self.states.extend(out.states);
        self.energy.extend(out.energy);
        if self.auto_ack {
            for (lamp, level) in acks {
                let out = self.zone.lamp_ack(self.now, &lamp, level).expect("known lamp");
                self.record(out);
            }
        }
    }

    /// Ticks at every wake-up up to and including `t`.
    fn run_to(&mut self, t: DateTime<Utc>) {
        while self.now < t {
            let next = self.zone.next_wakeup(self.now).min(t);
            assert!(next > self.now, "next_wakeup must advance");
            self.now = next;
            self.ticks += 1;
            let out = self.zone.tick(next);
            self.record(out);
        }
    }

    fn presence(&mut self, t: DateTime<Utc>, sensor: &str) {
        self.run_to(t);
        let out = self.zone.presence(t, sensor, t).expect("known sensor");
        self.record(out);
    }

    fn heard(&mut self, t: DateTime<Utc>, sensor: &str) {
        self.run_to(t);
        let out = self.zone.sensor_heard(t, sensor, t).expect("known sensor");
        self.record(out);
    }

    fn commands_for(&self, lamp: &str) -> Vec<(DateTime<Utc>, u8, Reason)> {
        self.commands.iter().filter(|(_, c)| c.lamp == lamp).map(|(t, c)| (*t, c.level_pct, c.reason)).collect()
    }

    fn last_state(&self) -> &ZoneState {
        self.states.last().expect("a state was published")
    }

    fn event_names(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.name()).collect()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Independent references: the NOAA sunrise/sunset formula and the EU daylight-saving rule for Berlin.

/// Sunrise (`rising`) or sunset in UTC for a UTC date, by the NOAA solar calculator's formulas (apparent
/// sunrise at -0.833°), iterated twice at the event time itself.
fn noaa_sun(date: NaiveDate, lat: f64, lon: f64, rising: bool) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let jd0 = midnight.timestamp() as f64 / 86400.0 + 2440587.5;
    let mut minutes = 720.0; // first guess: noon UTC
    for _ in 0..3 {
        let jc = (jd0 + minutes / 1440.0 - 2451545.0) / 36525.0;
        let l0 = (280.46646 + jc * (36000.76983 + jc * 0.0003032)).rem_euclid(360.0);
        let m = 357.52911 + jc * (35999.05029 - 0.0001537 * jc);
        let e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc);
        let mr = m.to_radians();
        let c = mr.sin() * (1.914602 - jc * (0.004817 + 0.000014 * jc))
            + (2.0 * mr).sin() * (0.019993 - 0.000101 * jc)
            + (3.0 * mr).sin() * 0.000289;
        let true_long = l0 + c;
        let omega = (125.04 - 1934.136 * jc).to_radians();
        let app_long = true_long - 0.00569 - 0.00478 * omega.sin();
        let eps0 = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0;
        let eps = (eps0 + 0.00256 * omega.cos()).to_radians();
        let decl = (eps.sin() * app_long.to_radians().sin()).asin();
        let y = (eps / 2.0).tan().powi(2);
        let l0r = l0.to_radians();
        let eot = 4.0
            * (y * (2.0 * l0r).sin() - 2.0 * e * mr.sin() + 4.0 * e * y * mr.sin() * (2.0 * l0r).cos()
                - 0.5 * y * y * (4.0 * l0r).sin()
                - 1.25 * e * e * (2.0 * mr).sin())
            .to_degrees();
        let latr = lat.to_radians();
        let ha =
            ((90.833f64.to_radians().cos() / (latr.cos() * decl.cos())) - latr.tan() * decl.tan()).acos().to_degrees();
        let noon = 720.0 - 4.0 * lon - eot;
        minutes = if rising { noon - 4.0 * ha } else { noon + 4.0 * ha };
    }
    midnight + Duration::milliseconds((minutes * 60_000.0) as i64)
}

/// Last Sunday of a month, 01:00 UTC (the EU switch instant).
fn eu_switch(year: i32, month: u32) -> DateTime<Utc> {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap().pred_opt().unwrap();
    while d.weekday() != Weekday::Sun {
        d = d.pred_opt().unwrap();
    }
    d.and_hms_opt(1, 0, 0).unwrap().and_utc()
}

/// Berlin's UTC offset in hours at `t`: CEST (+2) between the EU switches, CET (+1) otherwise.
fn berlin_offset_h(t: DateTime<Utc>) -> i64 {
    if t >= eu_switch(t.year(), 3) && t < eu_switch(t.year(), 10) {
        2
    } else {
        1
    }
}

fn berlin_local(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.naive_utc() + Duration::hours(berlin_offset_h(t))
}

// ---------------------------------------------------------------------------------------------------------

fn ten_lamp_zone() -> ZoneParams {
    let mut p = ZoneParams {
        name: "promenade".into(),
        lamps: (1..=10).map(|i| LampSpec::Name(format!("lamp-{i:02}"))).collect(),
        sensors: (1..=10)
            .map(|i| SensorSpec {
                device: format!("pir-{i:02}"),
                lamp: format!("lamp-{i:02}"),
                debounce_count: Some(2),
                debounce_window_s: Some(10),
                heartbeat_s: None,
            })
            .collect(),
        ..ZoneParams::default()
    };
    p.ramp_up_s = 2;
    p.ramp_down_s = 10;
    p
}
