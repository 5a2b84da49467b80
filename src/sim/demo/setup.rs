//! Everything the run needs before it starts: the start time and the accelerated clock, the broker and
//! the viewer, the city's signing key, the meter's line, the daemon's configuration for the district
//! and the daemon itself; and the introduction printed before the first line of the view.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use ed25519_dalek::SigningKey;
use tempfile::TempDir;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

use super::district::{self, District, Kind, BASE_LEVEL, BOOST_LEVEL, FEEDER_LIMIT_KW, LAMPS, PIR_AT};
use super::net::{self, BrokerProcess, Gate, ViewerMsg};
use super::radio::MeterLine;
use super::scenario::Script;
use super::{view, Demo, DemoArgs, Recording, GATEWAY_ID, KEY_ID, METER, PREFIX, WATER_METER, WATER_METER_ID, ZONE};
use crate::clock;
use crate::config;
use crate::io::wmbus::script::ScriptedStick;
use crate::runtime::{Daemon, Options};
use crate::wmbus_stick::StickKind;

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

/// Starts everything, in this order: the accelerated clock, the broker (ours behind the gate, or the
/// one given), the viewer (subscribed before the gateway may connect), the city's signing key for this
/// run, the meter's line, the daemon with the district's config in a temporary data dir (returned: it
/// must outlive the run), and the simulated concentrator's socket.
pub(super) async fn start(args: DemoArgs) -> anyhow::Result<(Demo, UnboundedReceiver<ViewerMsg>, TempDir)> {
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
    let stick_link = data.path().join("ttyWMBUS");
    let stick = ScriptedStick::spawn(StickKind::Im871a, &stick_link).context("a pty for the wM-Bus stick")?;
    let cfg_text = demo_config(&district, &data.path().join("data"), &daemon_url, &meter.path, &stick_link, &public);
    let config =
        config::parse_str(&cfg_text, "demo.toml", data.path()).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let daemon = Daemon::start_opts(&config, Options::default()).await?;
    let gwmp = *daemon.gwmp_addrs.first().context("demo daemon has no gwmp source")?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;

    let script = Script::plan(&args, speed, start_at, broker.as_ref());

    print_intro(&args, speed, start_at, &district, &viewer_host, viewer_port, gwmp, &meter.path, &script);

    let rec = Recording {
        start: Some(start_at),
        speed,
        lamp_names: (1..=LAMPS).map(|i| format!("lamp-{i:02}")).collect(),
        load_names: district.loads().map(|l| l.name.clone()).collect(),
        ..Recording::default()
    };
    let demo = Demo {
        args: args.clone(),
        district,
        daemon,
        socket,
        gwmp,
        meter,
        stick,
        water_l: 182_000,
        last_water: start_at - Duration::hours(1),
        water_sent: (0, 0),
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
    Ok((demo, viewer_rx, data))
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
        "  device     {:<22} {WATER_METER} (wireless M-Bus, a scripted iM871A stick on a pty)",
        "water meter, school"
    );
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
    stick: &std::path::Path,
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

[buffer]
# The demo runs a night in minutes: a second of real time is many minutes of its clock, so it fsyncs
# every commit (as the default interval mode would with a window of a few simulated seconds).
durability = "commit"

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

# A wireless M-Bus stick: the school's water meter is configured; the neighbours' meters it hears
# are only counted (manufacturer, type), never decoded or published.
[[source]]
type = "wmbus"
name = "wmbus-stick"
port = "{stick}"
stick = "im871a"
mode = "t1"

[[device]]
name = "{WATER_METER}"
profile = "wmbus"
wmbus_id = "{WATER_METER_ID}"
manufacturer = "KAM"
max_silence_s = 3600

"#,
        data = data.display(),
        meter = meter.display(),
        stick = stick.display()
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
