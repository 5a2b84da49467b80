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
//! Modules: [`district`] (the devices and their physics), [`net`] (broker process, gate, viewer),
//! [`view`] (the terminal lines), [`report`] (the HTML report).

pub mod district;
pub mod net;
pub mod report;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use ed25519_dalek::{Signer, SigningKey};
use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

use crate::clock;
use crate::config;
use crate::io::gwmp::packet::{self, build_pull_data, build_push_data, Packet, RxPkOut};
use crate::keys::{DevAddr, Eui64};
use crate::reading::rfc3339;
use crate::runtime::{Daemon, Options};
use crate::sim::frames;

use district::{District, Kind, Uplink, BASE_LEVEL, BOOST_LEVEL, FEEDER_LIMIT_KW, LAMPS, PIR_AT};
use net::{BrokerProcess, Gate, ViewerMsg};

const GATEWAY_ID: &str = "demo-district";
const PREFIX: &str = "city";
const ZONE: &str = "reiherhagen";
const METER: &str = "feeder-meter";
const KEY_ID: &str = "demo-ops";
const GW_EUI: Eui64 = Eui64(0xaa55_5a00_0000_0001);
/// The main loop's period (real time).
const TICK: StdDuration = StdDuration::from_millis(50);
/// A DR event's first minutes (simulated) are not judged: the meter has to show the sheds first.
const SETTLE_MIN: i64 = 10;

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

/// Parses `mqtt://host:port` (the demo only needs plain TCP).
fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.strip_prefix("mqtt://").context("--broker must look like mqtt://host:port")?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    Ok((host.to_string(), port.parse().context("--broker port")?))
}

/// Today 17:00 in Berlin: dusk comes soon.
fn start_time() -> DateTime<Utc> {
    let today = Utc::now().with_timezone(&Berlin).date_naive();
    today
        .and_hms_opt(17, 0, 0)
        .and_then(|t| Berlin.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// The feeder meter's serial line: a pseudo-terminal whose slave the daemon opens.
struct MeterLine {
    master: OwnedFd,
    _slave: OwnedFd,
    path: PathBuf,
    written: u64,
    dropped: u64,
}

impl MeterLine {
    fn open() -> anyhow::Result<MeterLine> {
        use nix::sys::termios;
        let pty = nix::pty::openpty(None, None).context("opening a pseudo-terminal for the meter")?;
        let mut t = termios::tcgetattr(&pty.slave)?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        let flags = nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(MeterLine { master: pty.master, _slave: pty.slave, path, written: 0, dropped: 0 })
    }

    /// Writes a telegram; a full line (nobody reading) drops it, as a real meter's push would be lost.
    fn send(&mut self, bytes: &[u8]) {
        match nix::unistd::write(&self.master, bytes) {
            Ok(n) if n == bytes.len() => self.written += 1,
            _ => self.dropped += 1,
        }
    }
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

/// A signed command waiting for its answer.
struct PendingCmd {
    what: &'static str,
    sent: Instant,
    attempts: u32,
    cmd: &'static str,
    args: Value,
}

/// The scripted moments of the run (simulated time).
struct Script {
    outage: Option<(DateTime<Utc>, DateTime<Utc>)>,
    dr_at: DateTime<Utc>,
    dr_duration_s: i64,
    override_at: DateTime<Utc>,
    override_s: u64,
}

struct Demo {
    args: DemoArgs,
    district: District,
    daemon: Daemon,
    socket: UdpSocket,
    gwmp: SocketAddr,
    meter: MeterLine,
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
    let speed = args.speed.clamp(0.1, 10_000.0);
    let start_at = start_time();
    // Before the daemon starts: its loops must see the fast clock from the beginning.
    clock::accelerate(start_at, speed);

    // The broker: external, or ours in a child process behind the gate.
    let (viewer_host, viewer_port, daemon_url, broker, gate) = match &args.broker {
        Some(url) => {
            let (h, p) = host_port(url)?;
            (h.clone(), p, format!("mqtt://{h}:{p}"), None, None)
        }
        None => {
            let addr = SocketAddr::from(([127, 0, 0, 1], net::free_port()?));
            let broker = BrokerProcess::start(addr).await?;
            let gate = Gate::start(addr).await?;
            let url = format!("mqtt://{}", gate.addr);
            ("127.0.0.1".to_string(), addr.port(), url, Some(broker), Some(gate))
        }
    };
    let (client, mut viewer_rx) = net::viewer(&viewer_host, viewer_port, format!("{PREFIX}/{GATEWAY_ID}/#"));
    // The viewer subscribes before the gateway may connect: it sees everything.
    let subscribed = tokio::time::timeout(StdDuration::from_secs(10), async {
        while let Some(m) = viewer_rx.recv().await {
            if matches!(m, ViewerMsg::Subscribed) {
                return true;
            }
        }
        false
    })
    .await;
    if subscribed != Ok(true) {
        anyhow::bail!("could not subscribe at the broker mqtt://{viewer_host}:{viewer_port}");
    }
    if let Some(g) = &gate {
        g.open();
    }

    // The city's signing key for this run.
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());

    let meter = MeterLine::open()?;
    let district = District::new(start_at);
    let data = tempfile::tempdir().context("creating a temporary data dir")?;
    let cfg_text = demo_config(&district, &data.path().join("data"), &daemon_url, &meter.path, &public);
    let config =
        config::parse_str(&cfg_text, "demo.toml", data.path()).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let daemon = Daemon::start_opts(&config, Options::default()).await?;
    let gwmp = *daemon.gwmp_addrs.first().context("demo daemon has no gwmp source")?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;

    let span_s = match args.seconds {
        Some(s) => (s as f64 * speed) as i64,
        None => 15 * 3600,
    };
    let at = |f: f64| start_at + Duration::seconds((span_s as f64 * f) as i64);
    let script = Script {
        outage: broker.as_ref().map(|_| (at(0.30), at(0.40))),
        dr_at: at(0.50),
        dr_duration_s: ((span_s as f64 * 0.2) as i64).clamp(600, 3 * 3600),
        override_at: at(0.75),
        override_s: ((span_s as f64 * 0.08) as u64).clamp(300, 3600),
    };

    print_intro(&args, speed, start_at, &district, &viewer_host, viewer_port, gwmp, &meter.path, &script);

    let rec = Recording {
        start: Some(start_at),
        speed,
        lamp_names: (1..=LAMPS).map(|i| format!("lamp-{i:02}")).collect(),
        load_names: district.loads().map(|l| l.name.clone()).collect(),
        ..Recording::default()
    };
    let mut demo = Demo {
        args: args.clone(),
        district,
        daemon,
        socket,
        gwmp,
        meter,
        broker,
        gate,
        client,
        key,
        script,
        rec,
        started: Instant::now(),
        token: 0,
        pending_push: HashMap::new(),
        acked: HashSet::new(),
        acked_during_outage: 0,
        sent: 0,
        f_cnt_down: HashMap::new(),
        downlinks: 0,
        received: HashSet::new(),
        seqs: HashSet::new(),
        replayed: 0,
        cmd_res: Vec::new(),
        viewer_up: true,
        outage_started: None,
        outage_real_s: 0.0,
        backlog_max: 0,
        backlog_max_at_restore: 0,
        draining: false,
        cmd_seq: 0,
        pending_cmds: HashMap::new(),
        dr_sent: false,
        dr_ok: None,
        override_sent: false,
        override_ok: None,
        last_meter: start_at - Duration::hours(1),
        meter_seq: 0,
        last_lamps: vec![0; LAMPS],
        printed_lamps: vec![0; LAMPS],
        lamps_dirty: None,
        lighting_reasons: Vec::new(),
        lighting_levels: Vec::new(),
        last_feeder_line: start_at - Duration::hours(1),
        last_summary_line: start_at,
        last_backlog_line: Instant::now(),
        last_printed: HashMap::new(),
        limit: (FEEDER_LIMIT_KW, "config".into()),
        last_pull: Instant::now(),
        last_backlog_sample: Instant::now(),
    };
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

#[allow(clippy::too_many_arguments)]
fn print_intro(
    args: &DemoArgs,
    speed: f64,
    start: DateTime<Utc>,
    district: &District,
    host: &str,
    port: u16,
    gwmp: SocketAddr,
    meter: &std::path::Path,
    script: &Script,
) {
    println!("district-gateway demo: a district in a box");
    println!(
        "  broker     mqtt://{host}:{port}{}",
        if args.broker.is_none() { " (embedded, in a child process)" } else { "" }
    );
    println!("  gateway    '{GATEWAY_ID}', packet forwarder on udp://{gwmp}, meter on {}", meter.display());
    let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in &district.devices {
        by_kind.entry(d.what).or_default().push(&d.sim.name);
    }
    for (what, names) in by_kind {
        println!("  device     {:<22} {}", what, names.join(" "));
    }
    println!("  device     {:<22} {METER} (SML over a pseudo-terminal)", "smart meter, feeder");
    println!(
        "  time       starts {}; {speed:.0}x real time (1 s = {:.1} min){}",
        view::long_time(start),
        speed / 60.0,
        match args.seconds {
            Some(s) => format!(", runs {s} s = {:.1} h simulated", s as f64 * speed / 3600.0),
            None => ", until Ctrl-C".into(),
        }
    );
    let mut plan = Vec::new();
    if let Some((a, b)) = script.outage {
        plan.push(format!("broker cut off {}-{}", view::hhmm(a), view::hhmm(b)));
    }
    plan.push(format!("demand-response event at {}", view::hhmm(script.dr_at)));
    plan.push(format!("lighting override at {}", view::hhmm(script.override_at)));
    println!("  script     {}", plan.join(", "));
    println!(
        "  path       {LAMPS} lamps along Reiherhagen, presence sensors at {}",
        PIR_AT.iter().map(|i| format!("lamp-{:02}", i + 1)).collect::<Vec<_>>().join(", ")
    );
    println!();
}

/// The daemon's configuration for the demo district.
fn demo_config(
    district: &District,
    data: &std::path::Path,
    url: &str,
    meter: &std::path::Path,
    public: &str,
) -> String {
    let mut c = format!(
        r#"[gateway]
id = "{GATEWAY_ID}"
data_dir = "{data}"
latitude = 53.5511
longitude = 9.9937
log_level = "warn"

[mqtt]
url = "{url}"
topic_prefix = "{PREFIX}"
keep_alive_s = 5
reconnect_min_ms = 100
reconnect_max_ms = 400

[aggregate]
window_s = 3600

[lorawan]
rx2_dr = 3

[ops]
http_bind = "127.0.0.1:0"

[[ops.key]]
id = "{KEY_ID}"
ed25519_public = "{public}"

[[source]]
type = "gwmp"
name = "concentrator"
bind = "127.0.0.1:0"

[[source]]
type = "sml"
name = "feeder-meter-head"
port = "{meter}"
device = "{METER}"

"#,
        data = data.display(),
        meter = meter.display()
    );
    for d in &district.devices {
        let mut t = d.sim.config_toml().trim_end().to_string();
        if d.class_c {
            t.push_str("\nclass = \"C\"");
        }
        match d.kind {
            Kind::Container => t.push_str(&format!(
                "\ncontainer = {{ empty_distance_mm = {:.1}, full_distance_mm = {:.1}, full_pct = {:.1} }}",
                district::BIN_EMPTY_MM,
                district::BIN_FULL_MM,
                district::BIN_FULL_PCT
            )),
            Kind::Tree => t.push_str(&format!(
                "\ntree = {{ needs_water_below_pct = {:.1}, watered_above_pct = 30.0 }}",
                district::TREE_DRY_PCT
            )),
            _ => {}
        }
        c.push_str(&t);
        c.push_str("\n\n");
    }
    let lamps: Vec<String> = (1..=LAMPS).map(|i| format!("\"lamp-{i:02}\"")).collect();
    let sensors: Vec<String> = PIR_AT
        .iter()
        .enumerate()
        .map(|(k, l)| format!("{{ device = \"pir-{:02}\", lamp = \"lamp-{:02}\" }}", k + 1, l + 1))
        .collect();
    c.push_str(&format!(
        r#"[[lighting.zone]]
name = "{ZONE}"
time_zone = "Europe/Berlin"
lamps = [{}]
sensors = [{}]
base_level_pct = {BASE_LEVEL}
boost_level_pct = {BOOST_LEVEL}
hold_s = 120
lamps_ahead = 2
lamp_watts = 60.0
ack_timeout_s = 1800

[demand_response]
meter = "{METER}"
limit_kw = {FEEDER_LIMIT_KW:.1}
meter_timeout_s = 900
status_interval_s = 900

"#,
        lamps.join(", "),
        sensors.join(", ")
    ));
    for d in &district.devices {
        let Some(l) = &d.load else { continue };
        c.push_str(&format!(
            "[[demand_response.load]]\nname = \"{}\"\nkind = \"{}\"\nrated_kw = {:.1}\npriority = {}\n{}output = {{ type = \"lorawan\", device = \"{}\", f_port = 20 }}\n\n",
            l.name,
            l.kind,
            l.rated_kw,
            l.priority,
            if l.kind == "sg-ready" { "min_on_s = 300\nmin_off_s = 300\n" } else { "" },
            d.sim.name
        ));
    }
    c
}

fn parse_at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
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

    async fn pull_data(&mut self) {
        self.token = self.token.wrapping_add(1);
        let _ = self.socket.send_to(&build_pull_data(2, self.token.to_le_bytes(), GW_EUI), self.gwmp).await;
        self.last_pull = Instant::now();
    }

    async fn send_uplink(&mut self, u: Uplink) {
        let now = self.now();
        let Some(d) = self.district.devices.get_mut(u.device) else { return };
        d.sim.f_port = u.f_port;
        let f_cnt = d.sim.f_cnt;
        let phy = d.sim.uplink(&u.payload);
        let name = d.sim.name.clone();
        self.token = self.token.wrapping_add(1);
        let n = self.sent;
        let rx = RxPkOut {
            tmst: (self.started.elapsed().as_micros() & 0xffff_ffff) as u32,
            freq_hz: 868_100_000 + 200_000 * (n % 3),
            sf: 7 + (u.device % 3) as u8,
            bw_khz: 125,
            rssi: -70 - (u.device as i32 * 7) % 45,
            lsnr: 9.5 - (u.device % 7) as f64,
            data: phy,
        };
        let datagram = build_push_data(2, self.token.to_le_bytes(), GW_EUI, &[rx]);
        if self.socket.send_to(&datagram, self.gwmp).await.is_ok() {
            self.sent += 1;
            self.pending_push.insert(self.token, (name, f_cnt, now));
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

    /// Prints the lamp bar when the controllers' levels changed (at most every 300 ms real).
    fn lamps_changed(&mut self, now: DateTime<Utc>) {
        let levels = self.district.lamp_levels();
        if levels != self.last_lamps {
            self.last_lamps = levels.clone();
            self.rec.lamps.push((now, levels));
            if self.lamps_dirty.is_none() {
                self.lamps_dirty = Some(Instant::now());
            }
        }
        if self.lamps_dirty.is_some_and(|t| t.elapsed() >= StdDuration::from_millis(300)) {
            self.lamps_dirty = None;
            let levels = self.last_lamps.clone();
            if levels == self.printed_lamps {
                return;
            }
            self.printed_lamps = levels.clone();
            let why = if self.lighting_levels == levels && !self.lighting_reasons.is_empty() {
                view::reasons(&self.lighting_reasons)
            } else if self.override_active(now) {
                "override (city command)".to_string()
            } else if levels.iter().all(|l| *l <= BASE_LEVEL) {
                "schedule (nobody on the path)".to_string()
            } else if let Some((t, s, l)) =
                self.rec.detections.last().filter(|(t, ..)| now - *t < Duration::minutes(10))
            {
                let ago = (now - *t).num_minutes();
                format!("presence: {s} saw someone at lamp-{:02} {ago} min ago", l + 1)
            } else {
                "schedule".to_string()
            };
            let local = if self.broker_down() { "  [broker down: decided locally]" } else { "" };
            view::line(now, "lamps", &format!("{}   {why}{local}", view::lamp_bar(&levels)));
        }
    }

    fn override_active(&self, now: DateTime<Utc>) -> bool {
        self.rec.override_.is_some_and(|(a, b, _)| a <= now && now < b)
    }

    fn backlog(&mut self, now: DateTime<Utc>) {
        let depth = self.daemon.store.depth();
        self.backlog_max = self.backlog_max.max(depth);
        if self.last_backlog_sample.elapsed() >= StdDuration::from_millis(100)
            || self.rec.backlog.last().is_none_or(|(_, d)| (*d == 0) != (depth == 0))
        {
            self.last_backlog_sample = Instant::now();
            self.rec.backlog.push((now, depth));
        }
        if self.draining && depth == 0 && !self.broker_down() {
            self.draining = false;
            view::line(
                now,
                "backlog",
                &format!("drained: {} readings arrived late (\"replayed\": true), in order per device", self.replayed),
            );
        }
        let interesting = self.broker_down() || (self.draining && depth > 0);
        if interesting && self.last_backlog_line.elapsed() >= StdDuration::from_millis(1000) {
            self.last_backlog_line = Instant::now();
            let state = if self.broker_down() { "broker DOWN, kept in the on-disk journal" } else { "draining" };
            view::line(now, "backlog", &format!("{depth:>5} records waiting  ({state})"));
        }
    }

    async fn script(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        if let Some((from, to)) = self.script.outage {
            if now >= from && self.outage_started.is_none() && !self.rec.outages.iter().any(|(_, e)| e.is_some()) {
                if let Some(g) = &self.gate {
                    g.close();
                }
                if let Some(b) = self.broker.as_mut() {
                    b.kill();
                }
                self.outage_started = Some(Instant::now());
                self.rec.outages.push((now, None));
                view::line(
                    now,
                    "BROKER",
                    "cut off (the broker process is killed). The gateway keeps running on its own:",
                );
                view::line(
                    now,
                    "",
                    "readings go to its on-disk journal, lamps and loads are still controlled locally.",
                );
            }
            if now >= to && self.broker_down() {
                if let Some(b) = self.broker.as_mut() {
                    b.restart().await?;
                }
                self.outage_real_s = self.outage_started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                self.backlog_max_at_restore = self.daemon.store.depth();
                self.draining = true;
                let now = self.now();
                if let Some(o) = self.rec.outages.last_mut() {
                    o.1 = Some(now);
                }
                view::line(
                    now,
                    "BROKER",
                    &format!(
                        "back (outage of {:.1} s real). {} records waiting to drain.",
                        self.outage_real_s, self.backlog_max_at_restore
                    ),
                );
            }
        }
        let ready = self.gate.as_ref().is_none_or(Gate::is_open) && !self.broker_down();
        if !self.dr_sent && now >= self.script.dr_at && ready {
            self.dr_sent = true;
            let end = now + Duration::seconds(self.script.dr_duration_s);
            let mut max_base: f64 = 0.0;
            let mut t = now;
            while t <= end {
                max_base = max_base.max(district::base_load_kw(t));
                t += Duration::minutes(5);
            }
            let base_now = district::base_load_kw(now);
            // Tight enough that loads must be shed, loose enough that shedding can hold it (the wallbox
            // keeps its 4.2 kW under §14a), and never above the configured limit.
            let limit = (base_now + 15.0).max(max_base + 6.0).min(FEEDER_LIMIT_KW - 2.0).round();
            self.rec.dr_event = Some((now, end, limit));
            let args = json!({
                "id": "evening-peak-1",
                "start": rfc3339(now),
                "duration_s": self.script.dr_duration_s,
                "limit_kw": limit,
            });
            view::line(
                now,
                "CITY",
                &format!(
                    "sends dr.event (signed): hold the feeder under {limit:.0} kW until {} (feeder now {:.1} kW)",
                    view::hhmm(end),
                    self.district.feeder_kw(now)
                ),
            );
            self.command("dr.event", "demand-response event", args);
        }
        if !self.override_sent && now >= self.script.override_at && ready {
            self.override_sent = true;
            let level = 60u8;
            let until = now + Duration::seconds(self.script.override_s as i64);
            self.rec.override_ = Some((now, until, level));
            view::line(
                now,
                "CITY",
                &format!(
                    "sends lighting.override (signed): street festival, all lamps {level} % until {}",
                    view::hhmm(until)
                ),
            );
            self.command(
                "lighting.override",
                "lighting override",
                json!({"zone": ZONE, "level_pct": level, "duration_s": self.script.override_s}),
            );
        }
        Ok(())
    }

    /// Signs a command with the city's key and publishes it on `cmd/req`.
    fn command(&mut self, cmd: &'static str, what: &'static str, args: Value) {
        self.cmd_seq += 1;
        let now = self.now();
        let id = format!("demo-{}-{}", cmd.replace('.', "-"), self.cmd_seq);
        let body = json!({
            "id": id,
            "cmd": cmd,
            "args": args.clone(),
            "gateway": GATEWAY_ID,
            "issued_at": rfc3339(now - Duration::seconds(5)),
            "expires_at": rfc3339(now + Duration::hours(6)),
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let sig = self.key.sign(&bytes);
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope = json!({"key_id": KEY_ID, "payload": b64.encode(&bytes), "sig": b64.encode(sig.to_bytes())});
        let topic = format!("{PREFIX}/{GATEWAY_ID}/cmd/req");
        let _ = self.client.try_publish(topic, QoS::AtLeastOnce, false, envelope.to_string());
        let attempts = self.pending_cmds.values().find(|p| p.cmd == cmd).map_or(1, |p| p.attempts + 1);
        self.pending_cmds.retain(|_, p| p.cmd != cmd);
        self.pending_cmds.insert(id, PendingCmd { what, sent: Instant::now(), attempts, cmd, args });
    }

    /// A command without an answer after 4 s (the gateway was reconnecting) is sent again, once.
    fn resend_commands(&mut self) {
        let due: Vec<(&'static str, &'static str, Value)> = self
            .pending_cmds
            .values()
            .filter(|p| p.sent.elapsed() > StdDuration::from_secs(4) && p.attempts < 3)
            .map(|p| (p.cmd, p.what, p.args.clone()))
            .collect();
        for (cmd, what, args) in due {
            if self.broker_down() {
                continue;
            }
            view::line(self.now(), "CITY", &format!("no answer to the {what} yet: sending it again"));
            self.command(cmd, what, args);
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8]) {
        match packet::parse(datagram) {
            Ok(Packet::PushAck { token, .. }) => {
                if let Some((name, f_cnt, at)) = self.pending_push.remove(&u16::from_le_bytes(token)) {
                    if self.rec.outages.last().is_some_and(|(s, e)| *s <= at && e.is_none_or(|e| at < e)) {
                        self.acked_during_outage += 1;
                    }
                    self.acked.insert((name, f_cnt));
                }
            }
            Ok(Packet::PullResp { token, json, .. }) => {
                let data = json["txpk"]["data"].as_str().unwrap_or("");
                let phy = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
                // TX_ACK: the (simulated) concentrator sends it.
                let mut ack = vec![2, token[0], token[1], 0x05];
                ack.extend_from_slice(&GW_EUI.0.to_be_bytes());
                let _ = self.socket.send_to(&ack, self.gwmp).await;
                self.downlink(&phy).await;
            }
            _ => {}
        }
    }

    /// A downlink on air: the addressed class C device opens it (MIC, decryption) and acts on it.
    async fn downlink(&mut self, phy: &[u8]) {
        let Some(addr) = phy.get(1..5).map(|b| DevAddr(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))) else {
            return;
        };
        let Some(i) = self.district.devices.iter().position(|d| d.sim.dev_addr == addr) else { return };
        let d = &self.district.devices[i];
        let last = self.f_cnt_down.get(&i).copied();
        let Ok(dl) = frames::open_downlink_after(phy, &d.sim.nwk_s_key, &d.sim.app_s_key, last) else { return };
        self.f_cnt_down.insert(i, dl.f_cnt_down);
        self.downlinks += 1;
        let before = d.load.as_ref().map(|l| (l.label(), l.power_kw()));
        let answer = self.district.downlink(i, dl.f_port, &dl.payload);
        let now = self.now();
        let d = &self.district.devices[i];
        if let Some(l) = &d.load {
            let idx = self.district.loads().position(|x| x.name == l.name).unwrap_or(0);
            let (label, kw, text) = (l.label().to_string(), l.power_kw(), l.describe());
            let changed = before.is_none_or(|(b, p)| b != label || (p - kw).abs() > 0.05);
            if changed || self.rec.loads.iter().all(|x| x.1 != idx) {
                let label_changed = before.is_none_or(|(b, _)| b != label);
                // Set-point trims are frequent: one line per load every 30 minutes, or when its state changes.
                let name = l.name.clone();
                let quiet = self.last_printed.get(&name).is_some_and(|t| now - *t < Duration::minutes(30));
                self.rec.loads.push((now, idx, label, kw));
                if label_changed || (changed && !quiet) {
                    self.last_printed.insert(name.clone(), now);
                    self.feeder_line(now, &format!("{name} told: {text}"));
                }
            }
        }
        if let Some(u) = answer {
            self.send_uplink(u).await;
        }
        self.lamps_changed(now);
    }

    fn feeder_line(&mut self, now: DateTime<Utc>, why: &str) {
        self.last_feeder_line = now;
        let kw = self.district.feeder_kw(now);
        let (limit, reason) = &self.limit;
        let loads: Vec<String> = self.district.loads().map(|l| format!("{} {}", l.name, l.label())).collect();
        let over = if kw > *limit + 0.05 { " OVER" } else { "" };
        view::line(
            now,
            "feeder",
            &format!(
                "{kw:>6.1} kW / limit {limit:.0} kW ({reason}) {}{over}  [{}]{}",
                view::gauge(kw, *limit, 300.0, 30),
                loads.join(", "),
                if why.is_empty() { String::new() } else { format!("  <- {why}") }
            ),
        );
    }

    fn on_viewer(&mut self, m: ViewerMsg) {
        match m {
            ViewerMsg::Subscribed => {
                self.viewer_up = true;
                if let Some(g) = &self.gate {
                    if !g.is_open() && !self.broker_down() {
                        g.open();
                        view::line(
                            self.now(),
                            "BROKER",
                            "the viewer (the city) is subscribed again; the gateway reconnects",
                        );
                    }
                }
            }
            ViewerMsg::Down => self.viewer_up = false,
            ViewerMsg::Publish(topic, payload) => self.on_message(&topic, &payload),
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let Some(suffix) = topic.strip_prefix(&format!("{PREFIX}/{GATEWAY_ID}/")) else { return };
        let v: Value = serde_json::from_slice(payload).unwrap_or_default();
        if let Some(seq) = v["seq"].as_u64() {
            self.seqs.insert(seq);
        }
        let now = self.now();
        let at = parse_at(&v["at"]).unwrap_or(now);
        if let Some(device) = suffix.strip_prefix("reading/") {
            let kind = if device == METER {
                Kind::Meter
            } else {
                match self.district.by_name(device) {
                    Some(i) => self.district.devices[i].kind,
                    None => return,
                }
            };
            *self.rec.readings.entry(kind).or_default() += 1;
            if let Some(f) = v["lorawan"]["f_cnt"].as_u64() {
                self.received.insert((device.to_string(), f as u32));
            }
            let replayed = v["replayed"] == true;
            if replayed {
                self.replayed += 1;
            }
            let m = &v["metrics"];
            let text = match kind {
                Kind::Container => m["fill_pct"].as_f64().map(|f| {
                    self.rec.fills.entry(device.to_string()).or_default().push((at, f));
                    format!("fill {f:.1} % (distance {} mm)", m["distance_mm"])
                }),
                Kind::Tree => m["soil_moisture_pct"].as_f64().map(|f| {
                    self.rec.moisture.entry(device.to_string()).or_default().push((at, f));
                    format!("soil moisture {f:.1} %")
                }),
                Kind::Presence => Some(format!("motion {}", m["motion"])),
                Kind::Lamp => Some(format!("reports level {} %", m["lamp_level_pct"])),
                Kind::Load => Some(format!("status {}", v["lorawan"]["payload_hex"].as_str().unwrap_or(""))),
                Kind::Meter => m["power_w"].as_f64().map(|p| format!("{:.1} kW", p / 1000.0)),
            };
            // Readings are many: one line per kind of device every 45 (simulated) minutes.
            let due = self.last_printed.get(kind.key()).is_none_or(|t| now - *t >= Duration::minutes(45));
            if due && !replayed {
                self.last_printed.insert(kind.key().to_string(), now);
                let l = &v["lorawan"];
                let radio = if l.is_object() {
                    format!("  [f_cnt {} sf{} rssi {}]", l["f_cnt"], l["sf"], l["rssi"])
                } else {
                    "  [SML]".into()
                };
                view::line(at, "reading", &format!("{device:<10} {}{radio}", text.unwrap_or_default()));
            }
        } else if let Some(device) = suffix.strip_prefix("event/") {
            let ev = v["event"].as_str().unwrap_or("?").to_string();
            self.rec.events.push((at, device.to_string(), ev.clone()));
            let detail = match ev.as_str() {
                "container_full" | "container_emptied" => format!("fill {} %", v["fill_pct"]),
                "needs_water" | "watered" => format!("soil moisture {} %", v["soil_moisture_pct"]),
                _ => String::new(),
            };
            view::line(at, "EVENT", &format!("{ev} from {device} {detail}"));
        } else if suffix == format!("lighting/{ZONE}") {
            if let Some(lamps) = v["lamps"].as_object() {
                let names = &self.rec.lamp_names;
                self.lighting_reasons = names
                    .iter()
                    .map(|n| (n.clone(), lamps.get(n).and_then(|l| l["reason"].as_str()).unwrap_or("?").to_string()))
                    .collect();
                self.lighting_levels = names
                    .iter()
                    .map(|n| lamps.get(n).and_then(|l| l["level_pct"].as_u64()).unwrap_or(0) as u8)
                    .collect();
            }
        } else if suffix == "dr/status" {
            if let Some(limit) = v["limit_kw"].as_f64() {
                let reason = v["limit_reason"].as_str().unwrap_or("?").to_string();
                if self.rec.limits.last().is_none_or(|(_, l, r)| (*l - limit).abs() > 0.01 || *r != reason) {
                    self.rec.limits.push((at, limit, reason.clone()));
                    if self.limit.0 != limit || self.limit.1 != reason {
                        self.limit = (limit, reason.clone());
                        self.feeder_line(now, &format!("limit in force: {limit:.0} kW ({reason})"));
                    }
                }
            }
        } else if suffix == format!("agg/lighting-{ZONE}") {
            let window = v["period"] == "window";
            if let (true, Some(e), Some(f)) = (window, v["energy_wh"].as_f64(), v["full_power_wh"].as_f64()) {
                let end = parse_at(&v["window_end"]).unwrap_or(now);
                self.rec.energy_reports.push((end, e, f, v["co2_saved_g"].as_f64().unwrap_or(0.0)));
            }
        } else if suffix == "cmd/res" {
            let id = v["id"].as_str().unwrap_or("").to_string();
            if let Some(p) = self.pending_cmds.remove(&id) {
                let ok = v["ok"] == true;
                match p.cmd {
                    "dr.event" => self.dr_ok = Some(ok),
                    _ => self.override_ok = Some(ok),
                }
                let text = if ok {
                    let r = &v["result"];
                    let detail = match r["lamps"].as_object() {
                        Some(lamps) => format!(
                            "{} lamps {}, until {}",
                            lamps.len(),
                            lamps
                                .values()
                                .next()
                                .map(|l| format!("{} % ({})", l["level_pct"], l["reason"].as_str().unwrap_or("")))
                                .unwrap_or_default(),
                            parse_at(&r["override_until"]).map(view::hhmm).unwrap_or_default()
                        ),
                        None => r.to_string(),
                    };
                    format!("{} accepted by the gateway: {detail}", p.what)
                } else {
                    format!("{} REFUSED: {}", p.what, v["error"])
                };
                view::line(now, "cmd/res", &text);
            }
            self.cmd_res.push(v);
        } else if suffix == "state" {
            view::line(now, "state", &format!("gateway says {}", String::from_utf8_lossy(payload)));
        }
    }

    /// After the run: let the backlog drain, then account for everything.
    async fn finish(&mut self, viewer: &mut tokio::sync::mpsc::UnboundedReceiver<ViewerMsg>) -> Value {
        let end = self.now();
        self.rec.end = Some(end);
        let journaled_at_end = self.daemon.counters.records_journaled.load(std::sync::atomic::Ordering::Relaxed);
        if self.broker.as_mut().is_some_and(|b| !b.alive()) {
            if let Some(b) = self.broker.as_mut() {
                let _ = b.restart().await;
            }
            if let Some(g) = &self.gate {
                g.open();
            }
            if let Some(o) = self.rec.outages.last_mut() {
                o.1.get_or_insert(end);
            }
        }
        // Wait (up to 20 s) until every acknowledged uplink has reached the viewer and the outbox is empty.
        let deadline = Instant::now() + StdDuration::from_secs(20);
        while Instant::now() < deadline {
            let missing = self.acked.difference(&self.received).count();
            if missing == 0 && self.daemon.store.depth() == 0 && self.records_received() >= journaled_at_end {
                break;
            }
            tokio::select! {
                Some(m) = viewer.recv() => self.on_viewer(m),
                _ = tokio::time::sleep(StdDuration::from_millis(50)) => {}
            }
        }
        // And what is still in flight to the viewer.
        let quiet = Instant::now() + StdDuration::from_millis(300);
        while let Ok(Some(m)) =
            tokio::time::timeout(quiet.saturating_duration_since(Instant::now()), viewer.recv()).await
        {
            self.on_viewer(m);
        }
        self.summary(end, journaled_at_end)
    }

    /// Records that reached the viewer: everything with a `seq`, and the command answers (which have none).
    fn records_received(&self) -> u64 {
        (self.seqs.len() + self.cmd_res.iter().filter(|v| v.get("seq").is_none()).count()) as u64
    }

    fn summary(&self, end: DateTime<Utc>, journaled: u64) -> Value {
        let rec = &self.rec;
        let start = rec.start.unwrap_or(end);
        let lost: Vec<String> =
            self.acked.difference(&self.received).map(|(d, f)| format!("{d}#{f}")).take(20).collect();
        let lost_n = self.acked.difference(&self.received).count();
        // Lamps reacting to presence: the sensor's lamp reaches the boost level within 10 minutes.
        let level_at = |lamp: usize, from: DateTime<Utc>, to: DateTime<Utc>| -> u8 {
            let mut best = 0u8;
            let mut current = 0u8;
            for (t, levels) in &rec.lamps {
                if *t <= from {
                    current = levels.get(lamp).copied().unwrap_or(0);
                } else if *t <= to {
                    best = best.max(levels.get(lamp).copied().unwrap_or(0));
                }
            }
            best.max(current)
        };
        // Detections during the override are not judged: the city's override wins over presence.
        let overridden = |t: DateTime<Utc>| rec.override_.is_some_and(|(a, b, _)| a <= t && t < b);
        let judged: Vec<&(DateTime<Utc>, String, usize)> =
            rec.detections.iter().filter(|(t, ..)| *t + Duration::minutes(10) <= end && !overridden(*t)).collect();
        let reacted =
            judged.iter().filter(|(t, _, l)| level_at(*l, *t, *t + Duration::minutes(10)) >= BOOST_LEVEL).count();
        let presence_states = rec.lamps.iter().filter(|(_, l)| l.iter().any(|x| *x >= BOOST_LEVEL)).count();
        let (used_wh, full_wh) = report::lamp_energy(rec, end);
        let co2_g = (full_wh - used_wh).max(0.0) / 1000.0 * 380.0;
        let dr = rec.dr_event.map(|(s, e, limit)| {
            let settled = s + Duration::minutes(SETTLE_MIN);
            let e = e.min(end);
            let during: Vec<f64> =
                rec.feeder.iter().filter(|(t, _)| *t >= settled && *t <= e).map(|(_, k)| *k).collect();
            let before = rec.feeder.iter().rev().find(|(t, _)| *t <= s).map(|(_, k)| *k);
            let max = during.iter().copied().fold(f64::NAN, f64::max);
            let sheds = rec.loads.iter().filter(|(t, _, l, _)| *t >= s && *t <= e && l != "normal").count();
            json!({
                "sent": true,
                "accepted": self.dr_ok,
                "limit_kw": limit,
                "start": rfc3339(s),
                "end": rfc3339(e),
                "feeder_before_kw": before,
                "samples_judged": during.len(),
                "max_kw_after_settling": if max.is_nan() { Value::Null } else { json!((max * 10.0).round() / 10.0) },
                "held": !during.is_empty() && max <= limit + 0.5,
                "load_sheds": sheds,
            })
        });
        let peak = rec.feeder.iter().map(|(_, k)| *k).fold(0.0, f64::max);
        let full_events = rec.events.iter().filter(|(_, _, e)| e == "container_full").count();
        let outage = rec.outages.first().map(|(s, e)| {
            json!({
                "from": rfc3339(*s),
                "to": e.map(rfc3339),
                "seconds_real": (self.outage_real_s * 10.0).round() / 10.0,
                "uplinks_acked_during": self.acked_during_outage,
                "backlog_max": self.backlog_max,
                "backlog_at_restore": self.backlog_max_at_restore,
                "replayed_readings": self.replayed,
            })
        });
        let readings: serde_json::Map<String, Value> =
            Kind::ALL.iter().map(|k| (k.key().to_string(), json!(rec.readings.get(k).copied().unwrap_or(0)))).collect();
        let summary = json!({
            "gateway": GATEWAY_ID,
            "speed": rec.speed,
            "sim_start": rfc3339(start),
            "sim_end": rfc3339(end),
            "sim_hours": ((end - start).num_seconds() as f64 / 360.0).round() / 10.0,
            "readings": readings,
            "uplinks": {"sent": self.sent, "acked": self.acked.len(), "downlinks_received": self.downlinks},
            "delivery": {
                "acked_uplinks_lost": lost_n,
                "lost_examples": lost,
                "records_journaled": journaled,
                "records_received": self.records_received(),
                "records_lost": journaled.saturating_sub(self.records_received()),
                "backlog_left": self.daemon.store.depth(),
            },
            "outage": outage,
            "lamps": {
                "detections": rec.detections.len(),
                "detections_judged": judged.len(),
                "reacted": reacted,
                "boost_states": presence_states,
                "override_accepted": self.override_ok,
            },
            "energy": {
                "lamps_used_kwh": (used_wh / 10.0).round() / 100.0,
                "always_on_kwh": (full_wh / 10.0).round() / 100.0,
                "saved_pct": if full_wh > 0.0 { ((1.0 - used_wh / full_wh) * 1000.0).round() / 10.0 } else { 0.0 },
                "co2_saved_kg": (co2_g / 10.0).round() / 100.0,
            },
            "feeder": {"limit_kw": FEEDER_LIMIT_KW, "peak_kw": (peak * 10.0).round() / 10.0, "telegrams": self.meter.written},
            "dr_event": dr,
            "containers": {"full_events": full_events},
            "events": rec.events.len(),
        });
        print_summary(&summary);
        summary
    }
}

fn print_summary(s: &Value) {
    println!("\n== the night in numbers ==");
    println!(
        "  simulated  {} h ({} -> {})",
        s["sim_hours"],
        s["sim_start"].as_str().unwrap_or(""),
        s["sim_end"].as_str().unwrap_or("")
    );
    println!("  readings   {}", s["readings"]);
    println!(
        "  delivery   {} uplinks sent, {} acknowledged by the gateway, {} of those lost; {} records journaled, {} received",
        s["uplinks"]["sent"],
        s["uplinks"]["acked"],
        s["delivery"]["acked_uplinks_lost"],
        s["delivery"]["records_journaled"],
        s["delivery"]["records_received"]
    );
    if s["outage"].is_object() {
        println!(
            "  outage     {:.1} s real; backlog peaked at {} records; {} readings arrived late (replayed), none lost: {}",
            s["outage"]["seconds_real"].as_f64().unwrap_or(0.0),
            s["outage"]["backlog_max"],
            s["outage"]["replayed_readings"],
            s["delivery"]["acked_uplinks_lost"] == 0
        );
    }
    println!(
        "  lamps      {} detections, lamps reacted to {} of {} judged; energy {} kWh vs {} kWh always-on ({} % saved, {} kg CO2)",
        s["lamps"]["detections"],
        s["lamps"]["reacted"],
        s["lamps"]["detections_judged"],
        s["energy"]["lamps_used_kwh"],
        s["energy"]["always_on_kwh"],
        s["energy"]["saved_pct"],
        s["energy"]["co2_saved_kg"]
    );
    if s["dr_event"].is_object() {
        let d = &s["dr_event"];
        println!(
            "  dr event   limit {} kW; feeder max {} kW after settling; held: {}; {} load actions",
            d["limit_kw"], d["max_kw_after_settling"], d["held"], d["load_sheds"]
        );
    }
    println!("  containers {} container_full events", s["containers"]["full_events"]);
}
