//! The simulated district: its devices (sensors, lamp controllers, load controllers, the feeder meter)
//! and the physics behind them (people walking the lit path, containers filling, soil drying, the
//! district's load curve). Everything runs on simulated time (`clock::now()` of the demo): the
//! devices decide from it when to speak, and what they say is encoded in the vendors' real formats.

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Europe::Berlin;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sim::SimDevice;

/// Lamps along the path, their spacing and the walking speed of the people on it.
pub const LAMPS: usize = 8;
const LAMP_SPACING_M: f64 = 30.0;
const LAMP_WATTS: f64 = 60.0;
pub const BASE_LEVEL: u8 = 10;
pub const BOOST_LEVEL: u8 = 100;
/// Presence sensors and the lamp (index) each stands at.
pub const PIR_AT: [usize; 3] = [1, 4, 6];
/// Container geometry (ultrasonic sensor in the lid).
pub const BIN_EMPTY_MM: f64 = 1800.0;
pub const BIN_FULL_MM: f64 = 300.0;
pub const BIN_FULL_PCT: f64 = 80.0;
pub const TREE_DRY_PCT: f64 = 20.0;
/// The feeder's configured limit, kW.
pub const FEEDER_LIMIT_KW: f64 = 250.0;

/// What kind of thing a device is (for the live view, the report and the summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Container,
    Tree,
    Presence,
    Lamp,
    Load,
    Meter,
    /// The water meter heard over wireless M-Bus.
    WaterMeter,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Tree => "tree",
            Kind::Presence => "presence",
            Kind::Lamp => "lamp",
            Kind::Load => "load",
            Kind::Meter => "meter",
            Kind::WaterMeter => "water_meter",
        }
    }

    pub const ALL: [Kind; 7] =
        [Kind::Container, Kind::Tree, Kind::Presence, Kind::Lamp, Kind::Load, Kind::Meter, Kind::WaterMeter];
}

/// One LoRaWAN uplink a device wants to send now.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub device: usize,
    pub f_port: u8,
    pub payload: Vec<u8>,
}

/// A load controller's device model.
#[derive(Debug, Clone)]
pub struct Load {
    pub name: String,
    /// `sg-ready` or `setpoint`.
    pub kind: &'static str,
    pub rated_kw: f64,
    pub priority: u32,
    /// What it was last told: SG-Ready state 1..=4, or the set-point.
    pub sg_state: u8,
    pub setpoint_kw: f64,
}

impl Load {
    /// The power it draws in its commanded state.
    pub fn power_kw(&self) -> f64 {
        match self.kind {
            "sg-ready" if self.sg_state == 1 => 0.0,
            "sg-ready" => self.rated_kw,
            _ => self.setpoint_kw.min(self.rated_kw),
        }
    }

    /// `normal`, `blocked`, `reduced`, `encouraged`, `forced` (as `dr/status` calls them).
    pub fn label(&self) -> &'static str {
        match (self.kind, self.sg_state) {
            ("sg-ready", 1) => "blocked",
            ("sg-ready", 3) => "encouraged",
            ("sg-ready", 4) => "forced",
            ("sg-ready", _) => "normal",
            _ if self.setpoint_kw < self.rated_kw - 1e-6 => "reduced",
            _ => "normal",
        }
    }

    pub fn describe(&self) -> String {
        match self.kind {
            "sg-ready" => format!("SG-Ready {} ({}, {:.1} kW)", self.sg_state, self.label(), self.power_kw()),
            _ => format!("set-point {:.1} kW ({})", self.setpoint_kw, self.label()),
        }
    }
}

/// A simulated LoRaWAN device and what it models.
#[derive(Debug, Clone)]
pub struct Device {
    pub sim: SimDevice,
    pub kind: Kind,
    pub class_c: bool,
    pub what: &'static str,
    next_report: DateTime<Utc>,
    /// Containers: fill at the start and growth per hour; trees: moisture at the start and loss per hour.
    level0: f64,
    rate_per_h: f64,
    /// Containers: when the night crew empties it (after it reported full).
    emptied_at: Option<DateTime<Utc>>,
    empty_since: Option<DateTime<Utc>>,
    /// Presence sensors: the lamp index; lamps: the index along the path.
    pub index: usize,
    /// Lamps: the level the controller drives now.
    pub level: u8,
    pub load: Option<Load>,
    /// Presence sensors: last motion report (a WS202 reports a new detection after its re-trigger time).
    last_motion: Option<DateTime<Utc>>,
}

/// A person walking the path from one end to the other.
#[derive(Debug, Clone, Copy)]
struct Walker {
    t0: DateTime<Utc>,
    forward: bool,
    speed_m_s: f64,
}

impl Walker {
    /// When the walker passes lamp `i`.
    fn at_lamp(&self, i: usize) -> DateTime<Utc> {
        let pos = if self.forward { i } else { LAMPS - 1 - i };
        self.t0 + Duration::milliseconds((pos as f64 * LAMP_SPACING_M / self.speed_m_s * 1000.0) as i64)
    }
}

/// A detection the simulator made happen (for the report and the check that the lamps reacted).
#[derive(Debug, Clone, Copy)]
pub struct Detection {
    pub at: DateTime<Utc>,
    pub sensor: usize,
    pub lamp: usize,
}

pub struct District {
    pub devices: Vec<Device>,
    pub start: DateTime<Utc>,
    rng: StdRng,
    walkers: Vec<Walker>,
    next_walker: DateTime<Utc>,
    last_step: DateTime<Utc>,
    /// The feeder meter's register, Wh.
    pub energy_wh: f64,
    pub detections: Vec<Detection>,
}

/// A smooth bump.
fn bump(h: f64, mu: f64, sigma: f64) -> f64 {
    (-0.5 * ((h - mu) / sigma).powi(2)).exp()
}

/// Local hour of day (fractional) in Berlin.
pub fn local_hour(t: DateTime<Utc>) -> f64 {
    let l = t.with_timezone(&Berlin);
    f64::from(l.hour()) + f64::from(l.minute()) / 60.0 + f64::from(l.second()) / 3600.0
}

/// The district's own consumption on the feeder without the flexible loads, kW: an evening peak
/// around 18:30, a night low, a morning bump.
pub fn base_load_kw(t: DateTime<Utc>) -> f64 {
    let h = local_hour(t);
    // Hours before noon are also "the next morning" of the evening peak.
    let evening = bump(h, 18.5, 1.5).max(bump(h + 24.0, 18.5, 1.5));
    let morning = bump(h, 7.5, 1.2);
    let day = bump(h, 12.5, 3.0);
    let ripple = 0.4 * ((t.timestamp() as f64) / 613.0).sin() + 0.2 * ((t.timestamp() as f64) / 97.0).sin();
    112.0 + 125.0 * evening + 55.0 * morning + 40.0 * day + ripple
}

/// People per hour on the path at local hour `h`.
fn walkers_per_hour(h: f64) -> f64 {
    match h {
        h if (17.0..20.0).contains(&h) => 9.0,
        h if (20.0..23.0).contains(&h) => 5.0,
        h if (5.0..9.0).contains(&h) => 7.0,
        h if (9.0..17.0).contains(&h) => 4.0,
        // Late night, 23:00 to 05:00.
        _ => 1.5,
    }
}

impl District {
    /// The district's devices, numbered so that every address is distinct.
    pub fn new(start: DateTime<Utc>) -> District {
        let mut devices = Vec::new();
        let mut n = 0u32;
        let mut add = |name: String, profile: &str, kind: Kind, class_c: bool, what: &'static str| {
            n += 1;
            let mut sim = SimDevice::numbered("dev", n, profile);
            sim.name = name;
            Device {
                sim,
                kind,
                class_c,
                what,
                next_report: start,
                level0: 0.0,
                rate_per_h: 0.0,
                emptied_at: None,
                empty_since: None,
                index: 0,
                level: 0,
                load: None,
                last_motion: None,
            }
        };
        // Containers: start fill and fill rate (% per hour).
        for (i, (f0, rate)) in [(62.0, 2.2), (71.0, 4.5), (25.0, 1.5), (48.0, 3.2)].into_iter().enumerate() {
            let mut d = add(format!("bin-{:02}", i + 1), "milesight-em310-udl", Kind::Container, false, "container");
            d.level0 = f0;
            d.rate_per_h = rate;
            d.next_report = start + Duration::seconds(20 + 45 * i as i64);
            devices.push(d);
        }
        for (i, (m0, rate)) in [(34.0, 0.35), (22.5, 0.45)].into_iter().enumerate() {
            let mut d = add(format!("tree-{:02}", i + 1), "dragino-lse01", Kind::Tree, false, "tree soil moisture");
            d.level0 = m0;
            d.rate_per_h = rate;
            d.next_report = start + Duration::seconds(60 + 70 * i as i64);
            devices.push(d);
        }
        for (i, lamp) in PIR_AT.iter().enumerate() {
            let mut d = add(format!("pir-{:02}", i + 1), "milesight-ws202", Kind::Presence, false, "presence sensor");
            d.index = *lamp;
            d.next_report = start + Duration::seconds(5 + 10 * i as i64);
            devices.push(d);
        }
        for i in 0..LAMPS {
            let mut d = add(format!("lamp-{:02}", i + 1), "lamp-generic", Kind::Lamp, true, "lamp controller");
            d.index = i;
            d.next_report = start + Duration::seconds(i as i64);
            devices.push(d);
        }
        for (name, kind, rated, prio, what) in [
            ("wb-01", "setpoint", 11.0, 1, "wallbox (set-point)"),
            ("hp-01", "sg-ready", 8.0, 2, "heat pump (SG-Ready)"),
            ("hp-02", "sg-ready", 8.0, 3, "heat pump (SG-Ready)"),
        ] {
            let mut d = add(format!("{name}-ctl"), "raw", Kind::Load, true, what);
            d.load = Some(Load {
                name: name.to_string(),
                kind,
                rated_kw: rated,
                priority: prio,
                sg_state: 2,
                setpoint_kw: rated,
            });
            d.next_report = start + Duration::seconds(10 + devices.len() as i64);
            devices.push(d);
        }
        let mut rng = StdRng::seed_from_u64(0x5eed_d157);
        // Somebody walks the path right at the start, so that even a short run shows presence.
        let walkers = vec![Walker { t0: start + Duration::seconds(150), forward: true, speed_m_s: 1.3 }];
        let next_walker = start + Duration::seconds(600 + rng.gen_range(0..600));
        District {
            devices,
            start,
            rng,
            walkers,
            next_walker,
            last_step: start,
            energy_wh: 41_230_000.0,
            detections: Vec::new(),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.sim.name == name)
    }

    pub fn lamp_levels(&self) -> Vec<u8> {
        self.devices.iter().filter(|d| d.kind == Kind::Lamp).map(|d| d.level).collect()
    }

    pub fn loads(&self) -> impl Iterator<Item = &Load> {
        self.devices.iter().filter_map(|d| d.load.as_ref())
    }

    pub fn lamps_kw(&self) -> f64 {
        self.lamp_levels().iter().map(|l| f64::from(*l) / 100.0 * LAMP_WATTS / 1000.0).sum()
    }

    /// The feeder's power now: the district's base load, the flexible loads in their commanded
    /// states, the street lights.
    pub fn feeder_kw(&self, t: DateTime<Utc>) -> f64 {
        base_load_kw(t) + self.loads().map(Load::power_kw).sum::<f64>() + self.lamps_kw()
    }

    /// The container's fill level at `t`, %.
    fn fill_pct(d: &Device, start: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
        let (from, f0) = match d.empty_since {
            Some(e) if e <= t => (e, 3.0),
            _ => (start, d.level0),
        };
        let h = (t - from).num_seconds().max(0) as f64 / 3600.0;
        (f0 + d.rate_per_h * h).clamp(0.0, 100.0)
    }

    /// Advances the simulation to `now`: people walk, containers fill, soil dries; returns the
    /// uplinks devices send now.
    pub fn step(&mut self, now: DateTime<Utc>) -> Vec<Uplink> {
        let prev = self.last_step;
        self.last_step = now;
        // New people arrive (a Poisson process whose rate follows the hour of day).
        while self.next_walker <= now {
            let t0 = self.next_walker;
            let forward = self.rng.gen_bool(0.5);
            let speed_m_s = self.rng.gen_range(1.0..1.6);
            self.walkers.push(Walker { t0, forward, speed_m_s });
            let rate = walkers_per_hour(local_hour(t0)).max(0.1);
            let u: f64 = self.rng.gen_range(0.0001..1.0);
            self.next_walker = t0 + Duration::seconds((-u.ln() / rate * 3600.0) as i64 + 30);
        }
        let path_s = (LAMPS as f64 * LAMP_SPACING_M / 1.0) as i64;
        self.walkers.retain(|w| w.t0 + Duration::seconds(path_s + 60) > prev);
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            match d.kind {
                Kind::Presence => {
                    let lamp = d.index;
                    let passed = self.walkers.iter().map(|w| w.at_lamp(lamp)).filter(|t| *t > prev && *t <= now).max();
                    if let Some(t) = passed {
                        // The WS202 re-triggers at most once a minute.
                        if d.last_motion.is_none_or(|m| t - m >= Duration::seconds(60)) {
                            let sensor = self.devices[..i].iter().filter(|x| x.kind == Kind::Presence).count();
                            self.detections.push(Detection { at: t, sensor, lamp });
                            let d = &mut self.devices[i];
                            d.last_motion = Some(t);
                            d.next_report = now + Duration::minutes(20);
                            out.push(Uplink { device: i, f_port: 85, payload: ws202(true) });
                            continue;
                        }
                    }
                    if d.next_report <= now {
                        self.devices[i].next_report = now + Duration::minutes(20);
                        out.push(Uplink { device: i, f_port: 85, payload: ws202(false) });
                    }
                }
                _ if d.next_report > now => {}
                Kind::Container => {
                    let start = self.start;
                    let fill = Self::fill_pct(d, self.start, now);
                    let d = &mut self.devices[i];
                    // The night crew empties a container some time after it reported full.
                    if fill >= BIN_FULL_PCT + 6.0 && d.emptied_at.is_none() && d.empty_since.is_none() {
                        d.emptied_at = Some(now + Duration::minutes(50));
                    }
                    if let Some(e) = d.emptied_at.filter(|e| *e <= now) {
                        d.empty_since = Some(e);
                        d.emptied_at = None;
                    }
                    let fill = Self::fill_pct(d, start, now);
                    let mm = BIN_EMPTY_MM - fill / 100.0 * (BIN_EMPTY_MM - BIN_FULL_MM);
                    d.next_report = now + Duration::minutes(30);
                    out.push(Uplink { device: i, f_port: 85, payload: em310(mm.round() as u16, 97) });
                }
                Kind::Tree => {
                    let h = (now - self.start).num_seconds().max(0) as f64 / 3600.0;
                    let moisture = (d.level0 - d.rate_per_h * h).max(2.0);
                    self.devices[i].next_report = now + Duration::minutes(20);
                    out.push(Uplink { device: i, f_port: 2, payload: lse01(moisture, 6.5 - h * 0.3) });
                }
                Kind::Lamp => {
                    // Controllers report their level every two hours (and after every command).
                    let payload = vec![d.level];
                    self.devices[i].next_report = now + Duration::hours(2);
                    out.push(Uplink { device: i, f_port: 10, payload });
                }
                Kind::Load => {
                    let payload = load_status(d.load.as_ref());
                    self.devices[i].next_report = now + Duration::minutes(30);
                    out.push(Uplink { device: i, f_port: 21, payload });
                }
                Kind::Meter | Kind::WaterMeter => {}
            }
        }
        out
    }

    /// A class C downlink arrived at device `i` (decrypted FRMPayload): apply it; the answer uplink.
    pub fn downlink(&mut self, i: usize, f_port: Option<u8>, payload: &[u8]) -> Option<Uplink> {
        let d = self.devices.get_mut(i)?;
        match (d.kind, f_port, payload) {
            (Kind::Lamp, Some(10), [level, ..]) if *level <= 100 => {
                d.level = *level;
                Some(Uplink { device: i, f_port: 10, payload: vec![*level] })
            }
            (Kind::Load, Some(20), [0x01, state, ..]) if (1..=4).contains(state) => {
                let l = d.load.as_mut()?;
                l.sg_state = *state;
                Some(Uplink { device: i, f_port: 21, payload: load_status(Some(l)) })
            }
            (Kind::Load, Some(20), [0x02, a, b, ..]) => {
                let l = d.load.as_mut()?;
                l.setpoint_kw = f64::from(u16::from_be_bytes([*a, *b])) / 10.0;
                Some(Uplink { device: i, f_port: 21, payload: load_status(Some(l)) })
            }
            (Kind::Load, Some(20), [0x03, on, ..]) => {
                let l = d.load.as_mut()?;
                l.sg_state = if *on == 0 { 1 } else { 2 };
                Some(Uplink { device: i, f_port: 21, payload: load_status(Some(l)) })
            }
            _ => None,
        }
    }

    /// The feeder meter integrates its power.
    pub fn meter_advance(&mut self, kw: f64, dt_s: f64) {
        self.energy_wh += kw * 1000.0 * dt_s / 3600.0;
    }
}

/// Milesight EM310-UDL: battery, distance (mm), position normal.
fn em310(mm: u16, battery: u8) -> Vec<u8> {
    let [lo, hi] = mm.to_le_bytes();
    vec![0x01, 0x75, battery, 0x03, 0x82, lo, hi, 0x04, 0x00, 0x00]
}

/// Milesight WS202: battery, motion, daylight (dark at night).
fn ws202(motion: bool) -> Vec<u8> {
    vec![0x01, 0x75, 0x5f, 0x03, 0x00, u8::from(motion), 0x04, 0x00, 0x00]
}

/// Dragino LSE01 on FPort 2: battery mV, DS18B20, moisture ×100, soil temperature ×100, conductivity.
fn lse01(moisture_pct: f64, soil_temp_c: f64) -> Vec<u8> {
    let mut p = Vec::with_capacity(11);
    p.extend_from_slice(&3_412u16.to_be_bytes());
    p.extend_from_slice(&((soil_temp_c * 10.0).round() as i16).to_be_bytes());
    p.extend_from_slice(&((moisture_pct * 100.0).round().clamp(0.0, 10_000.0) as u16).to_be_bytes());
    p.extend_from_slice(&((soil_temp_c * 100.0).round() as i16).to_be_bytes());
    p.extend_from_slice(&((moisture_pct * 9.0).round() as u16).to_be_bytes());
    p.push(0);
    p
}

/// A load controller's status uplink (raw profile): the load-command byte format it was told.
fn load_status(l: Option<&Load>) -> Vec<u8> {
    match l {
        Some(l) if l.kind == "sg-ready" => vec![0x01, l.sg_state],
        Some(l) => {
            let [a, b] = ((l.setpoint_kw * 10.0).round() as u16).to_be_bytes();
            vec![0x02, a, b]
        }
        None => vec![0x00],
    }
}

// ---------------------------------------------------------------------------------- wireless M-Bus

/// A plaintext wM-Bus water meter telegram (L-field first, as a stick delivers it): manufacturer
/// `flag` (three letters), 8-digit `id`, version 0x1B, type water, a short transport header with
/// access number `acc` and no encryption, and one record: the volume in litres (DIF 04, VIF 13).
pub fn wmbus_water_telegram(flag: &str, id: &str, acc: u8, litres: u32) -> Vec<u8> {
    let m = flag.bytes().fold(0u16, |m, c| (m << 5) | u16::from(c.saturating_sub(64) & 0x1f));
    let id_bcd = u32::from_str_radix(id, 16).unwrap_or(0).to_le_bytes();
    let mut t = vec![0x00, 0x44];
    t.extend_from_slice(&m.to_le_bytes());
    t.extend_from_slice(&id_bcd);
    t.extend_from_slice(&[0x1B, 0x07, 0x7A, acc, 0x00, 0x00, 0x00, 0x04, 0x13]);
    t.extend_from_slice(&litres.to_le_bytes());
    t[0] = (t.len() - 1) as u8;
    t
}

// ------------------------------------------------------------------------------------------- SML

fn tl_octets(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len() + 1;
    if len < 16 {
        out.push(len as u8);
    } else {
        let len = bytes.len() + 2;
        out.push(0x80 | ((len >> 4) as u8 & 0x0f));
        out.push((len & 0x0f) as u8);
    }
    out.extend_from_slice(bytes);
}

fn tl_u8(out: &mut Vec<u8>, v: u8) {
    out.extend_from_slice(&[0x62, v]);
}

fn tl_u16(out: &mut Vec<u8>, v: u16) {
    out.push(0x63);
    out.extend_from_slice(&v.to_be_bytes());
}

fn tl_i8(out: &mut Vec<u8>, v: i8) {
    out.extend_from_slice(&[0x52, v as u8]);
}

fn tl_i64(out: &mut Vec<u8>, v: i64) {
    out.push(0x59);
    out.extend_from_slice(&v.to_be_bytes());
}

fn tl_list(out: &mut Vec<u8>, n: u8) {
    out.push(0x70 | (n & 0x0f));
}

const ABSENT: u8 = 0x01;

/// One SML message with its CRC (CRC-16/X-25, low byte first) and the end-of-message byte.
fn sml_message(out: &mut Vec<u8>, tx: &[u8], tag: u16, body: &[u8]) {
    let start = out.len();
    tl_list(out, 6);
    tl_octets(out, tx);
    tl_u8(out, 0);
    tl_u8(out, 0);
    tl_list(out, 2);
    tl_u16(out, tag);
    out.extend_from_slice(body);
    let crc = crate::meter::crc16_x25(&out[start..]);
    out.push(0x63);
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(0x00);
}

/// A meter's push telegram as an SML transport frame: OpenResponse, GetListResponse with the energy
/// register (1.8.0, Wh) and the power (16.7.0, W), CloseResponse.
pub fn sml_frame(seq: u32, energy_wh: f64, power_w: f64) -> Vec<u8> {
    let server_id = [0x0a, 0x01, 0x44, 0x5a, 0x47, 0x00, 0x02, 0x8a, 0x4c, 0x1d];
    let tx = |k: u8| [(seq >> 16) as u8, (seq >> 8) as u8, seq as u8, k];
    let mut payload = Vec::new();
    // OpenResponse: codepage, clientId, reqFileId, serverId, refTime, smlVersion.
    let mut body = Vec::new();
    tl_list(&mut body, 6);
    body.push(ABSENT);
    body.push(ABSENT);
    tl_octets(&mut body, &seq.to_be_bytes());
    tl_octets(&mut body, &server_id);
    body.push(ABSENT);
    body.push(ABSENT);
    sml_message(&mut payload, &tx(1), 0x0101, &body);
    // GetListResponse: clientId, serverId, listName, actSensorTime, valList, listSignature, actGatewayTime.
    let mut body = Vec::new();
    tl_list(&mut body, 7);
    body.push(ABSENT);
    tl_octets(&mut body, &server_id);
    tl_octets(&mut body, &[0x01, 0x00, 0x62, 0x0a, 0xff, 0xff]);
    body.push(ABSENT);
    let entries: [([u8; 6], u8, i8, i64); 2] = [
        ([1, 0, 1, 8, 0, 255], 30, -1, (energy_wh * 10.0).round() as i64),
        ([1, 0, 16, 7, 0, 255], 27, -1, (power_w * 10.0).round() as i64),
    ];
    tl_list(&mut body, entries.len() as u8);
    for (obis, unit, scaler, value) in entries {
        tl_list(&mut body, 7);
        tl_octets(&mut body, &obis);
        body.push(ABSENT);
        body.push(ABSENT);
        tl_u8(&mut body, unit);
        tl_i8(&mut body, scaler);
        tl_i64(&mut body, value);
        body.push(ABSENT);
    }
    body.push(ABSENT);
    body.push(ABSENT);
    sml_message(&mut payload, &tx(2), 0x0701, &body);
    let mut body = Vec::new();
    tl_list(&mut body, 1);
    body.push(ABSENT);
    sml_message(&mut payload, &tx(3), 0x0201, &body);
    crate::meter::encode_frame(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::{FrameEvent, SmlFramer};

    #[test]
    fn wmbus_water_telegram_is_the_meters_own() {
        let t = super::wmbus_water_telegram("KAM", "12345678", 0x42, 1234);
        assert_eq!(hex::encode_upper(&t), "14442D2C785634121B077A420000000413D2040000");
    }

    #[test]
    fn sml_frames_decode_to_power_and_energy() {
        let frame = sml_frame(7, 41_230_000.5, 243_512.3);
        let events = SmlFramer::new().push(&frame);
        let payload = events
            .into_iter()
            .find_map(|e| match e {
                FrameEvent::Frame(p) => Some(p),
                _ => None,
            })
            .expect("a frame");
        let msgs = crate::meter::parse_frame(&payload).unwrap();
        assert_eq!(msgs.len(), 3);
        assert!(msgs.iter().all(|m| m.crc_ok == Some(true)));
        let m = crate::meter::metrics(&crate::meter::values(&payload).unwrap());
        assert_eq!(m["power_w"].as_f64(), Some(243_512.3));
        assert_eq!(m["energy_import_wh"].as_f64(), Some(41_230_000.5));
    }

    #[test]
    fn payloads_decode_with_the_native_decoders() {
        let dec = |p: &str, port: u8, b: &[u8]| crate::decode::native(p).unwrap().decode(port, b).unwrap();
        let d = dec("milesight-em310-udl", 85, &em310(1234, 97));
        assert_eq!(d.metrics["distance_mm"], 1234);
        let d = dec("dragino-lse01", 2, &lse01(21.5, 6.0));
        assert_eq!(d.metrics["soil_moisture_pct"].as_f64(), Some(21.5));
        let d = dec("milesight-ws202", 85, &ws202(true));
        assert_eq!(d.metrics["motion"], true);
    }

    #[test]
    fn the_evening_peak_needs_demand_response() {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap().and_hms_opt(17, 30, 0).unwrap().and_utc();
        let d = District::new(t);
        let loads: f64 = d.loads().map(Load::power_kw).sum();
        assert!(base_load_kw(t) + loads > FEEDER_LIMIT_KW, "the peak is over the limit with every load on");
        assert!(base_load_kw(t) + 4.2 < FEEDER_LIMIT_KW - 2.0, "and under it with the loads shed");
    }
}
