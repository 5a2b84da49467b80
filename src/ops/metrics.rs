//! Prometheus metrics: renders a [`MetricsSnapshot`] (a plain struct the shell fills on each scrape) in the
//! Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`), for `GET /metrics`.
//!
//! Written by hand rather than through a client library: the format is a few lines of escaping, the daemon already
//! keeps its own counters ([`crate::counters::Counters`]), and a scrape renders one consistent snapshot.
//!
//! Families (all counters end in `_total`):
//! - `district_gateway_frames_total{result}`: LoRaWAN frames by result: `ok`, `bad_mic`, `replay`,
//!   `unknown_dev_addr`, `malformed`, `not_data`, `duplicate`, `crc_error` (rxpk with a failed CRC), and
//!   `decode_error` (accepted frames — also counted as `ok` — whose payload the decoder could not decode);
//!   `district_gateway_source_frames_total{source,result}` when the shell counts per source;
//! - GWMP: `district_gateway_gwmp_datagrams_total`, `..._gwmp_datagrams_refused_total`,
//!   `..._gwmp_packets_total{type}`, `..._gwmp_stats_total`, `..._rxpk_refused_total`;
//! - `district_gateway_joins_total{result}`, `district_gateway_downlinks_total{result}`,
//!   `district_gateway_downlinks_duty_cycle_total`, `district_gateway_frames_mac_only_total`;
//! - `district_gateway_multicast_frames_total`, `district_gateway_multicast_airtime_microseconds_total`
//!   (frames to multicast groups and their air time; per group in `status`);
//! - `district_gateway_readings_journaled_total`, `district_gateway_journal_errors_total`,
//!   `district_gateway_records_published_total`, `district_gateway_readings_dropped_total`;
//! - `district_gateway_journal_bytes_written_total`, `district_gateway_journal_fsyncs_total`,
//!   `district_gateway_disk_write_bytes_total` (flash wear: what the daemon wrote, `/proc/self/io`);
//! - `district_gateway_backlog_records`, `district_gateway_backlog_bytes`,
//!   `district_gateway_backlog_oldest_age_seconds` (0 when empty);
//! - `district_gateway_mqtt_connected`, `district_gateway_mqtt_reconnects_total`;
//! - `district_gateway_power_fail` (1 while the power-fail input says mains power is lost),
//!   `district_gateway_power_fail_since_unix_ms` (0 while it is present),
//!   `district_gateway_readings_refused_power_fail_total`;
//! - `district_gateway_commands_total{code}` (`ok` or a refusal code),
//!   `district_gateway_commands_unanswered_total` (refused commands left without an answer: the answer
//!   rate limit, or no broker connection), `district_gateway_commands_received_total`,
//!   `district_gateway_commands_dropped_total` (executor queue full);
//! - `district_gateway_source_state{source,kind,state}` and `district_gateway_control_state{control,name,state}`
//!   (1 for the current state);
//! - `district_gateway_healthy`, `district_gateway_core_loop_tick_age_seconds`, `district_gateway_journal_writable`;
//! - `district_gateway_build_info{version,gateway}`, `district_gateway_uptime_seconds`;
//! - the standard process metrics every Prometheus client exports, under their standard names so existing
//!   dashboards work: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds`,
//!   `process_threads`;
//! - counters added to `Counters` later appear as `district_gateway_<name>_total` until they get a mapping here;
//! - [`MetricsSnapshot::gauges`]: further gauges from the shell (lamp levels, measured feeder power, ...).

use std::collections::HashSet;
use std::fmt::Write as _;

use super::health::{HealthReport, SourceState};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const PREFIX: &str = "district_gateway_";

/// Everything one scrape shows. The shell fills it from its counters, store and loops; `Default` is all zeros.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub version: String,
    pub gateway_id: String,
    pub uptime_s: f64,
    /// `Counters::snapshot()`.
    pub counters: Vec<(&'static str, u64)>,
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    /// Age of the oldest unpublished record; `None` when the backlog is empty.
    pub backlog_oldest_age_s: Option<f64>,
    /// Readings dropped by the buffer-full policy.
    pub readings_dropped: u64,
    /// Bytes appended to the journal's log since start (`StoreStats::log_bytes`).
    pub journal_bytes_written: u64,
    /// Journal fsyncs since start (`StoreStats::fsyncs`).
    pub journal_fsyncs: u64,
    pub sources: Vec<SourceMetrics>,
    /// Frames per source and result, if the shell counts them per source.
    pub source_frames: Vec<SourceFrames>,
    /// `CommandCounts::snapshot()`: `("ok", n)` and `(refusal code, n)`.
    pub commands: Vec<(&'static str, u64)>,
    pub control: Vec<ControlState>,
    pub health: Option<HealthReport>,
    pub process: Option<ProcessStats>,
    pub gauges: Vec<ExtraGauge>,
    /// Further counters, in the same form as `gauges`.
    pub extra_counters: Vec<ExtraGauge>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMetrics {
    /// e.g. `gwmp:127.0.0.1:1700`.
    pub name: String,
    /// e.g. `gwmp`, `sml`.
    pub kind: String,
    pub state: SourceState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrames {
    pub source: String,
    /// One of the `frames_total` results.
    pub result: String,
    pub count: u64,
}

/// The current state of one control loop: a lighting zone (`control="lighting"`, state e.g. `presence`,
/// `schedule`, `override`, `failsafe`) or a demand-response load (`control="dr"`, state e.g. `normal`, `shed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlState {
    pub control: String,
    pub name: String,
    pub state: String,
}

/// A further gauge: `district_gateway_<name>{labels} value`. Samples with the same name form one family (the first
/// one's help is used). Invalid names or label names are skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraGauge {
    pub name: String,
    pub help: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Process figures from `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    /// Unix time the process started.
    pub start_time_s: Option<f64>,
    pub threads: u64,
    /// Bytes this process caused to be written to storage (`/proc/self/io` `write_bytes`).
    pub disk_write_bytes: Option<u64>,
}

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux architecture we ship for.
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Read this process's figures; `None` where `/proc` is not available.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mut p = parse_proc(&stat, &status)?;
        p.open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
        p.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| parse_max_fds(&l));
        p.disk_write_bytes = disk_write_bytes();
        if let (Some(start_ticks), Ok(proc_stat)) = (p.start_time_s.take(), std::fs::read_to_string("/proc/stat")) {
            p.start_time_s = parse_btime(&proc_stat).map(|btime| btime as f64 + start_ticks);
        }
        Some(p)
    }
}

/// Bytes this process has caused to be written to storage since it started: `write_bytes` of
/// `/proc/self/io` (every page it dirtied, counted when it goes from clean to dirty: the figure
/// `bench/wear.sh` measures). None where `/proc` does not have it.
pub fn disk_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
}

/// From `/proc/self/stat` and `/proc/self/status`; `start_time_s` holds seconds since boot (made absolute by
/// `read`).
fn parse_proc(stat: &str, status: &str) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let utime = num(14)?;
    let stime = num(15)?;
    let threads = num(20)?;
    let start = num(22)?;
    let vsize = num(23)?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: rss_kb * 1024,
        virtual_bytes: vsize,
        open_fds: 0,
        max_fds: None,
        start_time_s: Some(start as f64 / USER_HZ),
        threads,
        disk_write_bytes: None,
    })
}

fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Val {
    Int(u64),
    Float(f64),
}

impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Val::Int(v)
    }
}

impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::Float(v)
    }
}

impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Int(u64::from(v))
    }
}

type Labels = Vec<(String, String)>;

struct Family {
    name: String,
    kind: Kind,
    help: String,
    samples: Vec<(Labels, Val)>,
}

/// Families in order of first use; samples of a family stay together.
#[derive(Default)]
struct Families {
    list: Vec<Family>,
}

impl Families {
    fn add(&mut self, name: &str, kind: Kind, help: &str, labels: &[(&str, &str)], v: impl Into<Val>) {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.add_owned(name, kind, help, labels, v.into());
    }

    fn add_owned(&mut self, name: &str, kind: Kind, help: &str, labels: Labels, v: Val) {
        if !valid_name(name) || !labels.iter().all(|(k, _)| valid_label_name(k)) {
            return;
        }
        match self.list.iter_mut().find(|f| f.name == name) {
            Some(f) if f.kind == kind => {
                // Same name and labels twice: first wins (a family may hold each label set once).
                if !f.samples.iter().any(|(l, _)| *l == labels) {
                    f.samples.push((labels, v));
                }
            }
            Some(_) => {}
            None => self.list.push(Family {
                name: name.to_owned(),
                kind,
                help: help.to_owned(),
                samples: vec![(labels, v)],
            }),
        }
    }

    /// A family with no samples yet (so HELP/TYPE appear even when there is nothing to count).
    fn declare(&mut self, name: &str, kind: Kind, help: &str) {
        if valid_name(name) && !self.list.iter().any(|f| f.name == name) {
            self.list.push(Family { name: name.to_owned(), kind, help: help.to_owned(), samples: Vec::new() });
        }
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let mut seen = HashSet::new();
        for f in &self.list {
            if !seen.insert(f.name.as_str()) {
                continue;
            }
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (labels, v) in &f.samples {
                out.push_str(&f.name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                    }
                    out.push('}');
                }
                out.push(' ');
                write_val(&mut out, *v);
                out.push('\n');
            }
        }
        out
    }
}

/// How a `Counters` field is exported: family, help, and an optional (label, value).
type CounterMapping = (&'static str, Kind, &'static str, Option<(&'static str, &'static str)>);

fn map_counter(name: &str) -> Option<CounterMapping> {
    const FRAMES: &str = "district_gateway_frames_total";
    const FRAMES_HELP: &str = "LoRaWAN frames by result; decode_error counts accepted frames (also in ok) whose \
                               payload could not be decoded";
    const PACKETS: &str = "district_gateway_gwmp_packets_total";
    const PACKETS_HELP: &str = "Semtech UDP packets from packet forwarders, by type";
    const JOINS: &str = "district_gateway_joins_total";
    const JOINS_HELP: &str = "OTAA join requests by result";
    const DOWN: &str = "district_gateway_downlinks_total";
    const DOWN_HELP: &str = "downlinks by result: sent, failed (refused or no route), deferred (no receive window)";
    use Kind::*;
    Some(match name {
        "datagrams" => ("district_gateway_gwmp_datagrams_total", Counter, "UDP datagrams from packet forwarders", None),
        "datagrams_bad" => (
            "district_gateway_gwmp_datagrams_refused_total",
            Counter,
            "datagrams refused: too short, unknown version or type, bad JSON",
            None,
        ),
        "push_data" => (PACKETS, Counter, PACKETS_HELP, Some(("type", "push_data"))),
        "pull_data" => (PACKETS, Counter, PACKETS_HELP, Some(("type", "pull_data"))),
        "tx_ack" => (PACKETS, Counter, PACKETS_HELP, Some(("type", "tx_ack"))),
        "stat" => ("district_gateway_gwmp_stats_total", Counter, "gateway status objects received", None),
        "rxpk_bad" => (
            "district_gateway_rxpk_refused_total",
            Counter,
            "rxpk entries refused: CRC failed, invalid base64, missing fields",
            None,
        ),
        "rxpk_crc" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "crc_error"))),
        "frames_ok" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "ok"))),
        "frames_bad_mic" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "bad_mic"))),
        "frames_replay" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "replay"))),
        "frames_unknown_dev_addr" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "unknown_dev_addr"))),
        "frames_malformed" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "malformed"))),
        "frames_not_data" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "not_data"))),
        "frames_duplicate" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "duplicate"))),
        "decode_errors" => (FRAMES, Counter, FRAMES_HELP, Some(("result", "decode_error"))),
        "frames_mac_only" => (
            "district_gateway_frames_mac_only_total",
            Counter,
            "FPort 0 / empty frames: MAC commands only, no reading",
            None,
        ),
        "joins" => (JOINS, Counter, JOINS_HELP, Some(("result", "accepted"))),
        "joins_refused" => (JOINS, Counter, JOINS_HELP, Some(("result", "refused"))),
        "downlinks_sent" => (DOWN, Counter, DOWN_HELP, Some(("result", "sent"))),
        "downlinks_failed" => (DOWN, Counter, DOWN_HELP, Some(("result", "failed"))),
        "downlinks_deferred" => (DOWN, Counter, DOWN_HELP, Some(("result", "deferred"))),
        "downlinks_duty_cycle" => (
            "district_gateway_downlinks_duty_cycle_total",
            Counter,
            "downlinks held back by the EU868 duty cycle",
            None,
        ),
        "multicast_frames" => (
            "district_gateway_multicast_frames_total",
            Counter,
            "multicast frames to groups of class C devices (one frame reaches every lamp of a zone)",
            None,
        ),
        "multicast_airtime_us" => (
            "district_gateway_multicast_airtime_microseconds_total",
            Counter,
            "air time of the multicast frames, microseconds",
            None,
        ),
        "readings_journaled" => {
            ("district_gateway_readings_journaled_total", Counter, "readings written to the journal", None)
        }
        "journal_errors" => ("district_gateway_journal_errors_total", Counter, "journal writes that failed", None),
        "published" => (
            "district_gateway_records_published_total",
            Counter,
            "outbox records (readings, aggregates, events) acknowledged by the broker",
            None,
        ),
        "meter_samples" => (
            "district_gateway_meter_samples_total",
            Counter,
            "smart-meter readings received (SML frames with values)",
            None,
        ),
        "commands_unanswered" => (
            "district_gateway_commands_unanswered_total",
            Counter,
            "refused commands left without an answer on cmd/res: beyond the answer rate limit, or not sendable \
             (uplink queue full, no broker connection)",
            None,
        ),
        "mqtt_connected" => ("district_gateway_mqtt_connected", Gauge, "1 while connected to the broker", None),
        "mqtt_reconnects" => {
            ("district_gateway_mqtt_reconnects_total", Counter, "broker connections lost (then re-established)", None)
        }
        "power_fail" => (
            "district_gateway_power_fail",
            Gauge,
            "1 while the power-fail input says mains power is lost (then no new readings are accepted)",
            None,
        ),
        "power_fail_since_unix_ms" => (
            "district_gateway_power_fail_since_unix_ms",
            Gauge,
            "when mains power was lost, ms since 1970; 0 while it is present",
            None,
        ),
        "readings_refused_power_fail" => (
            "district_gateway_readings_refused_power_fail_total",
            Counter,
            "frames and meter samples refused (not acknowledged) while mains power was lost",
            None,
        ),
        _ => return None,
    })
}

/// Render a snapshot as Prometheus text format 0.0.4.
pub fn render(s: &MetricsSnapshot) -> String {
    use Kind::*;
    let mut m = Families::default();

    m.add(
        "district_gateway_build_info",
        Gauge,
        "version of the running daemon, and its gateway id",
        &[("version", &s.version), ("gateway", &s.gateway_id)],
        1u64,
    );
    m.add("district_gateway_uptime_seconds", Gauge, "seconds since the daemon started", &[], s.uptime_s);

    // Reserve the frames family first so it leads the output even if the counters come in another order.
    m.declare(
        "district_gateway_frames_total",
        Counter,
        "LoRaWAN frames by result; decode_error counts accepted frames (also in ok) whose payload could not be \
         decoded",
    );
    let mut unmapped = Vec::new();
    for &(name, value) in &s.counters {
        match map_counter(name) {
            Some((family, kind, help, label)) => {
                let labels: Vec<(&str, &str)> = label.into_iter().collect();
                m.add(family, kind, help, &labels, value);
            }
            None => unmapped.push((name, value)),
        }
    }
    for f in &s.source_frames {
        m.add(
            "district_gateway_source_frames_total",
            Counter,
            "LoRaWAN frames by source and result",
            &[("source", &f.source), ("result", &f.result)],
            f.count,
        );
    }

    m.add(
        "district_gateway_backlog_records",
        Gauge,
        "records journaled but not yet acknowledged by the broker",
        &[],
        s.backlog_records,
    );
    m.add("district_gateway_backlog_bytes", Gauge, "bytes of the on-disk backlog", &[], s.backlog_bytes);
    m.add(
        "district_gateway_backlog_oldest_age_seconds",
        Gauge,
        "age of the oldest unpublished record; 0 when the backlog is empty",
        &[],
        s.backlog_oldest_age_s.unwrap_or(0.0),
    );
    m.add(
        "district_gateway_readings_dropped_total",
        Counter,
        "readings dropped because the backlog reached its bound",
        &[],
        s.readings_dropped,
    );
    m.add(
        "district_gateway_journal_bytes_written_total",
        Counter,
        "bytes appended to the journal since start (flash writes, before the file system's own)",
        &[],
        s.journal_bytes_written,
    );
    m.add(
        "district_gateway_journal_fsyncs_total",
        Counter,
        "journal fsyncs since start (each one rewrites at least one flash page)",
        &[],
        s.journal_fsyncs,
    );
    if let Some(b) = s.process.as_ref().and_then(|p| p.disk_write_bytes) {
        m.add(
            "district_gateway_disk_write_bytes_total",
            Counter,
            "bytes the daemon caused to be written to storage since start (/proc/self/io write_bytes)",
            &[],
            b,
        );
    }

    for &(code, n) in &s.commands {
        m.add(
            "district_gateway_commands_total",
            Counter,
            "remote commands by result: ok, or the refusal code",
            &[("code", code)],
            n,
        );
    }
    for src in &s.sources {
        for state in [SourceState::Up, SourceState::Retrying, SourceState::Down] {
            m.add(
                "district_gateway_source_state",
                Gauge,
                "1 for the current state of each source (up, retrying, down)",
                &[("source", &src.name), ("kind", &src.kind), ("state", state.as_str())],
                src.state == state,
            );
        }
    }
    for c in &s.control {
        m.add(
            "district_gateway_control_state",
            Gauge,
            "1 for the current state of each control loop (lighting zone, demand-response load)",
            &[("control", &c.control), ("name", &c.name), ("state", &c.state)],
            1u64,
        );
    }
    if let Some(h) = &s.health {
        m.add("district_gateway_healthy", Gauge, "1 when /healthz answers 200", &[], h.healthy);
        m.add(
            "district_gateway_core_loop_tick_age_seconds",
            Gauge,
            "seconds since the core loop last ticked (+Inf before the first tick)",
            &[],
            h.loop_tick_age_ms.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0),
        );
        m.add("district_gateway_journal_writable", Gauge, "1 while the journal accepts writes", &[], h.journal_ok);
    }
    for g in &s.gauges {
        let name = format!("{PREFIX}{}", g.name);
        m.add_owned(&name, Gauge, &g.help, g.labels.clone(), Val::Float(g.value));
    }
    for g in &s.extra_counters {
        let name = format!("{PREFIX}{}", g.name);
        m.add_owned(&name, Counter, &g.help, g.labels.clone(), Val::Float(g.value));
    }
    if let Some(p) = &s.process {
        m.add("process_cpu_seconds_total", Counter, "user and system CPU time spent in seconds", &[], p.cpu_seconds);
        m.add("process_resident_memory_bytes", Gauge, "resident memory size in bytes", &[], p.resident_bytes);
        m.add("process_virtual_memory_bytes", Gauge, "virtual memory size in bytes", &[], p.virtual_bytes);
        m.add("process_open_fds", Gauge, "number of open file descriptors", &[], p.open_fds);
        if let Some(max) = p.max_fds {
            m.add("process_max_fds", Gauge, "maximum number of open file descriptors", &[], max);
        }
        if let Some(start) = p.start_time_s {
            m.add("process_start_time_seconds", Gauge, "start time of the process since the Unix epoch", &[], start);
        }
        m.add("process_threads", Gauge, "number of OS threads", &[], p.threads);
    }
    // Counters without a mapping yet: exported generically, unless the name is already taken.
    for (name, value) in unmapped {
        let family = format!("{PREFIX}{name}_total");
        if !m.list.iter().any(|f| f.name == family) {
            m.add(&family, Counter, &format!("daemon counter {name}"), &[], value);
        }
    }
    m.render()
}

fn write_val(out: &mut String, v: Val) {
    let _ = match v {
        Val::Int(i) => write!(out, "{i}"),
        Val::Float(f) if f.is_nan() => write!(out, "NaN"),
        Val::Float(f) if f == f64::INFINITY => write!(out, "+Inf"),
        Val::Float(f) if f == f64::NEG_INFINITY => write!(out, "-Inf"),
        Val::Float(f) => write!(out, "{f}"),
    };
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::counters::Counters;
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;

    /// One sample: family-independent name, labels, value.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    /// A strict parser for the Prometheus text format 0.0.4, independent of the renderer: checks the grammar,
    /// escapes, that every sample follows its family's `# TYPE`, that a family's samples are contiguous and declared
    /// once, that counters end in `_total`, and that no series appears twice.
    pub fn parse_exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut closed = HashSet::new();
        let mut series = HashSet::new();
        if !text.ends_with('\n') {
            return Err("output must end with a newline".into());
        }
        for (no, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", no + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kw, name, tail) = (parts.next(), parts.next(), parts.next());
                match (kw, name) {
                    (Some("HELP"), Some(name)) => {
                        if !valid_name(name) {
                            return Err(err("bad name in HELP"));
                        }
                        let tail = tail.unwrap_or("");
                        let mut chars = tail.chars();
                        while let Some(c) = chars.next() {
                            if c == '\\' && !matches!(chars.next(), Some('\\') | Some('n')) {
                                return Err(err("bad escape in HELP"));
                            }
                        }
                        if let Some(cur) = current.replace(name.to_owned()) {
                            if cur != name {
                                closed.insert(cur);
                            }
                        }
                        if closed.contains(name) {
                            return Err(err("family declared again"));
                        }
                    }
                    (Some("TYPE"), Some(name)) => {
                        let t = tail.ok_or_else(|| err("TYPE without type"))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                            return Err(err("unknown type"));
                        }
                        if types.insert(name.to_owned(), t.to_owned()).is_some() {
                            return Err(err("TYPE twice"));
                        }
                        if t == "counter" && !name.ends_with("_total") {
                            return Err(err("counter without _total"));
                        }
                        if current.as_deref() != Some(name) {
                            return Err(err("TYPE not after its HELP"));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
            let name = &line[..name_end];
            if !valid_name(name) {
                return Err(err("bad metric name"));
            }
            if current.as_deref() != Some(name) || !types.contains_key(name) {
                return Err(err("sample outside its family"));
            }
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(r) = rest.strip_prefix('{') {
                let mut r = r;
                loop {
                    if let Some(after) = r.strip_prefix('}') {
                        r = after;
                        break;
                    }
                    let eq = r.find('=').ok_or_else(|| err("label without ="))?;
                    let lname = &r[..eq];
                    if !valid_label_name(lname) {
                        return Err(err("bad label name"));
                    }
                    r = r[eq + 1..].strip_prefix('"').ok_or_else(|| err("label value not quoted"))?;
                    let mut value = String::new();
                    let mut chars = r.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((i, '"')) => break i,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                _ => return Err(err("bad escape in label value")),
                            },
                            Some((_, '\n')) | None => return Err(err("unterminated label value")),
                            Some((_, c)) => value.push(c),
                        }
                    };
                    if labels.insert(lname.to_owned(), value).is_some() {
                        return Err(err("label twice"));
                    }
                    r = &r[end + 1..];
                    if let Some(after) = r.strip_prefix(',') {
                        r = after;
                    } else if !r.starts_with('}') {
                        return Err(err("expected , or }"));
                    }
                }
                rest = r;
            }
            let rest = rest.strip_prefix(' ').ok_or_else(|| err("no space before value"))?;
            let mut parts = rest.split(' ');
            let v = parts.next().ok_or_else(|| err("no value"))?;
            let value = match v {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse::<f64>().map_err(|_| err("bad value"))?,
            };
            if let Some(ts) = parts.next() {
                ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
            }
            if parts.next().is_some() {
                return Err(err("trailing fields"));
            }
            if !series.insert(format!("{name}{labels:?}")) {
                return Err(err("series twice"));
            }
            samples.push(Sample { name: name.to_owned(), labels, value });
        }
        Ok((samples, types))
    }

    pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    pub fn sample_snapshot(counters: &Counters) -> MetricsSnapshot {
        let health = crate::ops::health::Health::new(std::time::Duration::from_secs(5));
        health.journal_ok(true);
        health.loop_tick_at(1_000);
        MetricsSnapshot {
            version: "0.1.0".into(),
            gateway_id: "garstedt-01".into(),
            uptime_s: 12.5,
            counters: counters.snapshot(),
            backlog_records: 42,
            backlog_bytes: 4096,
            backlog_oldest_age_s: Some(3.25),
            readings_dropped: 2,
            journal_bytes_written: 123_456,
            journal_fsyncs: 78,
            sources: vec![
                SourceMetrics { name: "gwmp:127.0.0.1:1700".into(), kind: "gwmp".into(), state: SourceState::Up },
                SourceMetrics { name: "sml:/dev/ttyUSB0".into(), kind: "sml".into(), state: SourceState::Retrying },
            ],
            source_frames: vec![SourceFrames { source: "gwmp:127.0.0.1:1700".into(), result: "ok".into(), count: 7 }],
            commands: vec![("ok", 3), ("replayed", 1), ("bad_signature", 0)],
            control: vec![ControlState {
                control: "lighting".into(),
                name: "reiherhagen".into(),
                state: "presence".into(),
            }],
            health: Some(health.check_at(1_500)),
            process: ProcessStats::read(),
            gauges: vec![
                ExtraGauge {
                    name: "lamp_level_pct".into(),
                    help: "current lamp level".into(),
                    labels: vec![("lamp".into(), "lamp-\"01\"\\\n".into())],
                    value: 80.0,
                },
                ExtraGauge { name: "bad name".into(), help: String::new(), labels: vec![], value: 1.0 },
            ],
            extra_counters: vec![ExtraGauge {
                name: "lorawan_mac_total".into(),
                help: "MAC engine".into(),
                labels: vec![("kind".into(), "accepted".into())],
                value: 2.0,
            }],
        }
    }

    #[test]
    fn output_parses_and_counters_match() {
        let counters = Counters::default();
        let set = |c: &std::sync::atomic::AtomicU64, v| c.store(v, Ordering::Relaxed);
        set(&counters.frames_ok, 11);
        set(&counters.frames_bad_mic, 2);
        set(&counters.frames_replay, 3);
        set(&counters.rxpk_crc, 4);
        set(&counters.decode_errors, 5);
        set(&counters.readings_journaled, 10);
        set(&counters.published, 9);
        set(&counters.mqtt_connected, 1);
        set(&counters.mqtt_reconnects, 6);
        set(&counters.push_data, 20);
        set(&counters.commands_unanswered, 290);
        set(&counters.power_fail, 1);
        set(&counters.readings_refused_power_fail, 7);
        let text = render(&sample_snapshot(&counters));
        let (samples, types) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

        let f = "district_gateway_frames_total";
        assert_eq!(types[f], "counter");
        for (result, want) in [
            ("ok", 11.0),
            ("bad_mic", 2.0),
            ("replay", 3.0),
            ("crc_error", 4.0),
            ("decode_error", 5.0),
            ("duplicate", 0.0),
        ] {
            assert_eq!(value(&samples, f, &[("result", result)]), Some(want), "{result}");
        }
        assert!(text.starts_with("# HELP district_gateway_build_info"));
        assert_eq!(value(&samples, "district_gateway_readings_journaled_total", &[]), Some(10.0));
        // This process's own /proc/self/io: present on Linux, a counter that has counted something
        // or nothing, never absent.
        assert_eq!(types["district_gateway_disk_write_bytes_total"], "counter");
        assert!(value(&samples, "district_gateway_disk_write_bytes_total", &[]).is_some());
        assert_eq!(value(&samples, "district_gateway_records_published_total", &[]), Some(9.0));
        assert_eq!(value(&samples, "district_gateway_mqtt_connected", &[]), Some(1.0));
        assert_eq!(types["district_gateway_mqtt_connected"], "gauge");
        assert_eq!(value(&samples, "district_gateway_mqtt_reconnects_total", &[]), Some(6.0));
        assert_eq!(value(&samples, "district_gateway_power_fail", &[]), Some(1.0));
        assert_eq!(types["district_gateway_power_fail"], "gauge");
        assert_eq!(types["district_gateway_power_fail_since_unix_ms"], "gauge");
        assert_eq!(value(&samples, "district_gateway_readings_refused_power_fail_total", &[]), Some(7.0));
        assert_eq!(value(&samples, "district_gateway_gwmp_packets_total", &[("type", "push_data")]), Some(20.0));
        assert_eq!(value(&samples, "district_gateway_backlog_records", &[]), Some(42.0));
        assert_eq!(value(&samples, "district_gateway_backlog_oldest_age_seconds", &[]), Some(3.25));
        assert_eq!(value(&samples, "district_gateway_readings_dropped_total", &[]), Some(2.0));
        assert_eq!(value(&samples, "district_gateway_journal_bytes_written_total", &[]), Some(123_456.0));
        assert_eq!(value(&samples, "district_gateway_journal_fsyncs_total", &[]), Some(78.0));
        assert_eq!(types["district_gateway_journal_fsyncs_total"], "counter");
        assert_eq!(value(&samples, "district_gateway_commands_total", &[("code", "ok")]), Some(3.0));
        assert_eq!(value(&samples, "district_gateway_commands_total", &[("code", "replayed")]), Some(1.0));
        assert_eq!(value(&samples, "district_gateway_commands_unanswered_total", &[]), Some(290.0));
        let src = |state| [("source", "sml:/dev/ttyUSB0"), ("kind", "sml"), ("state", state)];
        assert_eq!(value(&samples, "district_gateway_source_state", &src("retrying")), Some(1.0));
        assert_eq!(value(&samples, "district_gateway_source_state", &src("up")), Some(0.0));
        assert_eq!(
            value(
                &samples,
                "district_gateway_source_frames_total",
                &[("source", "gwmp:127.0.0.1:1700"), ("result", "ok")]
            ),
            Some(7.0)
        );
        assert_eq!(
            value(
                &samples,
                "district_gateway_control_state",
                &[("control", "lighting"), ("name", "reiherhagen"), ("state", "presence")]
            ),
            Some(1.0)
        );
        assert_eq!(value(&samples, "district_gateway_healthy", &[]), Some(1.0));
        assert_eq!(value(&samples, "district_gateway_core_loop_tick_age_seconds", &[]), Some(0.5));
        // Escaped label values round-trip; invalid extra names are skipped.
        assert_eq!(value(&samples, "district_gateway_lamp_level_pct", &[("lamp", "lamp-\"01\"\\\n")]), Some(80.0));
        assert!(!text.contains("bad name"));
        // Every Counters field is exported, mapped or under its generic name.
        for (name, _) in counters.snapshot() {
            let mapped = map_counter(name).map(|(family, ..)| family.to_owned());
            let family = mapped.unwrap_or_else(|| format!("{PREFIX}{name}_total"));
            assert!(samples.iter().any(|s| s.name == family), "{name} not exported");
        }
        assert!(
            samples.iter().filter(|s| s.name.starts_with("district_gateway_")).count() >= counters.snapshot().len()
        );
        // Process figures, on Linux.
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(value(&samples, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
            assert!(value(&samples, "process_open_fds", &[]).unwrap() > 0.0);
            assert!(value(&samples, "process_start_time_seconds", &[]).unwrap() > 1.0e9);
            assert!(value(&samples, "process_cpu_seconds_total", &[]).is_some());
        }
    }

    #[test]
    fn unknown_counters_and_special_values() {
        let s = MetricsSnapshot {
            counters: vec![("frames_ok", 1), ("brand_new", 5), ("readings_dropped", 9)],
            readings_dropped: 1,
            health: Some(crate::ops::health::Health::new(std::time::Duration::from_secs(1)).check_at(0)),
            ..Default::default()
        };
        let text = render(&s);
        let (samples, _) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(value(&samples, "district_gateway_brand_new_total", &[]), Some(5.0));
        // A new counter whose generic name collides with a family already exported does not duplicate it.
        assert_eq!(value(&samples, "district_gateway_readings_dropped_total", &[]), Some(1.0));
        assert_eq!(value(&samples, "district_gateway_core_loop_tick_age_seconds", &[]), Some(f64::INFINITY));
        assert_eq!(value(&samples, "district_gateway_healthy", &[]), Some(0.0));
    }

    #[test]
    fn parser_rejects_bad_text() {
        for bad in [
            "foo 1\n",
            "# HELP foo x\n# TYPE foo counter\nfoo 1\n",
            "# HELP foo_total x\n# TYPE foo_total counter\nfoo_total{a=\"b} 1\n",
            "# HELP foo_total x\n# TYPE foo_total counter\nfoo_total 1\nfoo_total 2\n",
            "# HELP g x\n# TYPE g gauge\ng one\n",
        ] {
            assert!(parse_exposition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_parsing() {
        let stat = "1234 (tokio (worker) 1) S 1 1234 1234 0 -1 4194304 500 0 0 0 250 50 0 0 20 0 7 0 \
                    123456 104857600 2500 18446744073709551615";
        let status = "Name:\tdistrict-gateway\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let p = parse_proc(stat, status).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.virtual_bytes, 104_857_600);
        assert_eq!(p.resident_bytes, 10_485_760);
        assert_eq!(p.start_time_s, Some(1234.56));
        assert_eq!(
            parse_max_fds("Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n"),
            Some(1024)
        );
        assert_eq!(parse_btime("cpu 1 2 3\nbtime 1700000000\n"), Some(1_700_000_000));
        assert!(parse_proc("garbage", status).is_none());
    }
}
