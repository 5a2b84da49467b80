//! `district-gateway demo`: a whole district in a box.
//!
//! Simulated devices speak their real protocols — encrypted LoRaWAN frames over the Semtech packet
//! forwarder protocol (containers, trees, presence sensors, class C lamp and load controllers), SML
//! telegrams on a pseudo-terminal (the feeder's smart meter) — to the real daemon, which runs
//! in-process on a clock that runs `--speed` times faster from 17:00 local time, so that a night
//! passes in a minute. The embedded broker runs as a child process and is cut off and brought back
//! during the run; a demand-response event and a lighting override arrive as signed commands. The
//! terminal shows what happens; `--report PATH` writes a night-and-day report (HTML with SVG charts);
//! the last line, `DEMO_SUMMARY {...}`, is a machine-checkable account of the run.
//!
//! [`run`] starts everything ([`setup`]), then one loop drives the run: every tick the district moves
//! on and the script plays; datagrams from the daemon and messages to the city are handled as they
//! come. Then the run is accounted for ([`summary`]) and, if asked, reported ([`report`]).
//!
//! Modules: [`setup`] (config, keys, broker, daemon start), [`district`] (the devices and their
//! physics), [`radio`] (the devices' side of the wire: packet forwarder, meter line), [`scenario`]
//! (the script: broker cut, signed commands), [`observer`] (what the city receives), [`net`] (broker
//! process, gate, viewer connection), [`view`] (the terminal lines), [`summary`] (the `DEMO_SUMMARY`
//! figures), [`report`] (the HTML report).

pub mod district;
pub mod net;
pub mod observer;
pub mod radio;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod summary;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey;
use rumqttc::AsyncClient;
use serde_json::{json, Value};
use tokio::net::UdpSocket;

use crate::clock;
use crate::runtime::Daemon;

use district::{District, Kind};
use net::{BrokerProcess, Gate, ViewerMsg};
use radio::MeterLine;
use scenario::{PendingCmd, Script};

const GATEWAY_ID: &str = "demo-district";
const PREFIX: &str = "city";
const ZONE: &str = "reiherhagen";
const METER: &str = "feeder-meter";
/// The school's water meter, heard over wireless M-Bus (a scripted iM871A stick on a pty); a
/// neighbour's meter is heard too, and only counted.
const WATER_METER: &str = "school-water";
const WATER_METER_ID: &str = "12345678";
const NEIGHBOUR_METER_ID: &str = "87654321";
const KEY_ID: &str = "demo-ops";
/// The main loop's period (real time).
const TICK: StdDuration = StdDuration::from_millis(50);

/// The `demo` subcommand's arguments.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Stop after this many real seconds (None: until Ctrl-C).
    pub seconds: Option<u64>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// An external broker (`mqtt://host:port`): then there is no outage.
    pub broker: Option<String>,
    /// Where to write the HTML report.
    pub report: Option<PathBuf>,
}

/// What the simulated devices and the viewer saw, in simulated time: the report's data.
#[derive(Debug, Default)]
pub struct Recording {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub speed: f64,
    pub lamp_names: Vec<String>,
    /// The levels the lamp controllers drove, whenever one changed.
    pub lamps: Vec<(DateTime<Utc>, Vec<u8>)>,
    /// Presence detections (time, sensor name, lamp index).
    pub detections: Vec<(DateTime<Utc>, String, usize)>,
    /// Feeder power at every meter telegram, kW.
    pub feeder: Vec<(DateTime<Utc>, f64)>,
    /// The limit in force, from `dr/status`.
    pub limits: Vec<(DateTime<Utc>, f64, String)>,
    pub load_names: Vec<String>,
    /// A load controller's commanded state changed: (time, load index, label, kW).
    pub loads: Vec<(DateTime<Utc>, usize, String, f64)>,
    /// `fill_pct` per container and `soil_moisture_pct` per tree, from the gateway's readings.
    pub fills: BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    pub moisture: BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    /// Events from `event/{device}`: (time, device, event).
    pub events: Vec<(DateTime<Utc>, String, String)>,
    /// The gateway's backlog (records in its outbox).
    pub backlog: Vec<(DateTime<Utc>, usize)>,
    pub outages: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// The DR event: (start, end, limit).
    pub dr_event: Option<(DateTime<Utc>, DateTime<Utc>, f64)>,
    pub override_: Option<(DateTime<Utc>, DateTime<Utc>, u8)>,
    /// The gateway's own lighting energy reports: (window end, energy Wh, full-power Wh, CO2 g).
    pub energy_reports: Vec<(DateTime<Utc>, f64, f64, f64)>,
    pub readings: BTreeMap<Kind, u64>,
}

/// The run's state: what is running, what was sent and received, what the view last showed.
struct Demo {
    args: DemoArgs,
    district: District,
    daemon: Daemon,
    socket: UdpSocket,
    gwmp: SocketAddr,
    meter: MeterLine,
    stick: crate::io::wmbus::script::ScriptedStick,
    /// The water meter's register (litres), its last telegram, and telegrams sent (ours, neighbour's).
    water_l: u32,
    last_water: DateTime<Utc>,
    water_sent: (u64, u64),
    broker: Option<BrokerProcess>,
    gate: Option<Gate>,
    client: AsyncClient,
    key: SigningKey,
    script: Script,
    rec: Recording,
    started: Instant,
    // LoRaWAN bookkeeping.
    token: u16,
    pending_push: HashMap<u16, (String, u32, DateTime<Utc>)>,
    acked: HashSet<(String, u32)>,
    acked_during_outage: u64,
    sent: u64,
    f_cnt_down: HashMap<usize, u32>,
    downlinks: u64,
    // What reached the viewer.
    received: HashSet<(String, u32)>,
    seqs: HashSet<u64>,
    replayed: u64,
    cmd_res: Vec<Value>,
    // The broker.
    viewer_up: bool,
    outage_started: Option<Instant>,
    outage_real_s: f64,
    backlog_max: usize,
    backlog_max_at_restore: usize,
    draining: bool,
    // Commands.
    cmd_seq: u32,
    pending_cmds: HashMap<String, PendingCmd>,
    dr_sent: bool,
    dr_ok: Option<bool>,
    override_sent: bool,
    override_ok: Option<bool>,
    // View state.
    last_meter: DateTime<Utc>,
    meter_seq: u32,
    last_lamps: Vec<u8>,
    printed_lamps: Vec<u8>,
    lamps_dirty: Option<Instant>,
    lighting_reasons: Vec<(String, String)>,
    lighting_levels: Vec<u8>,
    last_feeder_line: DateTime<Utc>,
    last_summary_line: DateTime<Utc>,
    last_backlog_line: Instant,
    last_printed: HashMap<String, DateTime<Utc>>,
    limit: (f64, String),
    last_pull: Instant,
    last_backlog_sample: Instant,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (mut demo, mut viewer_rx, data) = setup::start(args).await?;
    let result = demo.main_loop(&mut viewer_rx).await;
    let summary = demo.finish(&mut viewer_rx).await;
    result?;
    let report_path = demo.args.report.clone();
    let Demo { daemon, broker, rec, .. } = demo;
    daemon.stop().await;
    drop(broker);
    let mut summary = summary;
    if let Some(path) = report_path {
        let html = report::render(&rec, &summary);
        std::fs::write(&path, &html).with_context(|| format!("writing the report {}", path.display()))?;
        let charts = html.matches("<svg").count();
        summary["report"] = json!({"path": path.display().to_string(), "bytes": html.len(), "charts": charts});
        println!("\nreport     {} ({} charts)", path.display(), charts);
    } else {
        println!("\n(--report PATH writes this night as an HTML report with charts)");
    }
    println!("DEMO_SUMMARY {summary}");
    drop(data);
    Ok(())
}

impl Demo {
    fn now(&self) -> DateTime<Utc> {
        clock::now()
    }

    fn done(&self) -> bool {
        self.args.seconds.is_some_and(|s| self.started.elapsed() >= StdDuration::from_secs(s))
    }

    fn broker_down(&self) -> bool {
        self.broker.as_ref().is_some_and(|b| !b.is_up())
    }

    async fn main_loop(&mut self, viewer: &mut tokio::sync::mpsc::UnboundedReceiver<ViewerMsg>) -> anyhow::Result<()> {
        self.pull_data().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut buf = vec![0u8; 65_536];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.done() {
                        return Ok(());
                    }
                    self.on_tick().await?;
                }
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, _)) = r {
                        let datagram = buf.get(..n).unwrap_or_default().to_vec();
                        self.on_datagram(&datagram).await;
                    }
                }
                Some(m) = viewer.recv() => self.on_viewer(m),
                _ = &mut ctrl_c => {
                    println!();
                    return Ok(());
                }
            }
        }
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        let now = self.now();
        if self.last_pull.elapsed() > StdDuration::from_secs(5) {
            self.pull_data().await;
        }
        for u in self.district.step(now) {
            self.send_uplink(u).await;
        }
        // New detections, for the record.
        while self.rec.detections.len() < self.district.detections.len() {
            let d = self.district.detections[self.rec.detections.len()];
            self.rec.detections.push((d.at, format!("pir-{:02}", d.sensor + 1), d.lamp));
        }
        // The meter pushes a telegram every 30 s (simulated), but not more often than every 100 ms.
        let period = Duration::milliseconds(((self.rec.speed * 100.0) as i64).max(30_000));
        if now - self.last_meter >= period {
            let dt = (now - self.last_meter).num_milliseconds().min(period.num_milliseconds() * 3) as f64 / 1000.0;
            self.last_meter = now;
            let kw = self.district.feeder_kw(now);
            self.district.meter_advance(kw, dt);
            self.meter_seq = self.meter_seq.wrapping_add(1);
            let frame = district::sml_frame(self.meter_seq, self.district.energy_wh, kw * 1000.0);
            self.meter.send(&frame);
            self.rec.feeder.push((now, kw));
        }
        // The water meter sends every 4 minutes (simulated), the neighbour's too.
        if now - self.last_water >= Duration::minutes(4) {
            self.last_water = now;
            self.water_l += 3 + (now.timestamp() % 17) as u32;
            let acc = (self.water_sent.0 & 0xff) as u8;
            let ours = district::wmbus_water_telegram("KAM", WATER_METER_ID, acc, self.water_l);
            if self.stick.inject_telegram(&ours, 190) {
                self.water_sent.0 += 1;
            }
            let theirs = district::wmbus_water_telegram("DME", NEIGHBOUR_METER_ID, acc, 40_000 + self.water_l);
            if self.stick.inject_telegram(&theirs, 120) {
                self.water_sent.1 += 1;
            }
        }
        self.lamps_changed(now);
        self.backlog(now);
        self.script(now).await?;
        self.resend_commands();
        if now - self.last_feeder_line >= Duration::hours(1) {
            self.feeder_line(now, "");
        }
        if now - self.last_summary_line >= Duration::hours(2) {
            self.last_summary_line = now;
            let parts: Vec<String> = Kind::ALL
                .iter()
                .map(|k| format!("{} {}", k.key(), self.rec.readings.get(k).copied().unwrap_or(0)))
                .collect();
            view::line(now, "readings", &format!("so far: {}", parts.join(", ")));
        }
        Ok(())
    }
}
