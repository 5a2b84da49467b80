//! End-to-end benchmark: the real daemon (release binary) between `simulate` and a local mosquitto.
//!
//! `cargo bench --bench e2e` (needs `mosquitto` on PATH). Reports, in one run:
//! - the daemon's RSS at idle with 1,000 devices configured;
//! - for increasing offered rates: frames acknowledged, readings that reached the broker, loss, and
//!   the sustained rate through decode + journal + publish (first frame sent → last reading received).
//!   Loss and duplicates are counted by identity: `lost` is the set of (device, FCnt) whose PUSH_DATA
//!   was acknowledged (`simulate --acked-log`) and whose reading (`device`, `lorawan.f_cnt`) never
//!   reached the subscriber; `dup` counts readings received more than once for the same (device, FCnt);
//!   `unacked` counts readings whose PUSH_ACK `simulate` did not see (journaled, ACK lost or late);
//! - PUSH_ACK latency (datagram in → frames on disk) p50/p99, as `simulate` measured it.
//!
//! - bytes written to disk per reading at steady state (the daemon's `write_bytes` in `/proc/PID/io`).
//!
//! Then, against the same mosquitto:
//! - the drain of a backlog of `BENCH_BACKLOG` readings (default 1,000,000) built while the broker was
//!   down, and the daemon's RSS with that backlog;
//! - the ceiling: a bare rumqttc QoS 1 publisher, counted the same way as the drain (by PUBACKs with
//!   nobody subscribed, and again at a QoS 1 subscriber);
//! - the peer: a mosquitto bridging to a second mosquitto with persistence on: its drain of the same
//!   backlog, and what it loses on kill -9 under load.
//!
//! `BENCH_RUNS=3` repeats the backlog part and prints the medians. Figures are printed as Markdown;
//! no pass/fail on timing.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/common/http.rs"]
mod http;

const BIN: &str = env!("CARGO_BIN_EXE_district-gateway");

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn mosquitto(dir: &std::path::Path, name: &str, port: u16, extra: &str) -> Kill {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\n{extra}"),
    )
    .unwrap();
    let k = Kill(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is required for this benchmark"),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    k
}

#[derive(Default)]
struct Seen {
    ids: HashSet<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Seen {
    fn note(&mut self, id: u64) {
        let now = Instant::now();
        self.ids.insert(id);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }
}

/// A subscriber counting distinct ids (the JSON `seq`, or the payload's leading decimal number).
struct Counter {
    /// Distinct ids, first and last arrival.
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Counter {
    /// Counts distinct ids (parses every payload).
    fn start(port: u16, filter: &str) -> Counter {
        Counter::start_mode(port, filter, false)
    }

    /// Counts messages only (no parsing): for drain rates, so that the subscriber takes as little of
    /// the two cores as possible.
    fn start_fast(port: u16, filter: &str) -> Counter {
        Counter::start_mode(port, filter, true)
    }

    fn start_mode(port: u16, filter: &str, fast: bool) -> Counter {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2, filter) = (seen.clone(), stop.clone(), filter.to_string());
        let ready = Arc::new(AtomicBool::new(false));
        let r2 = ready.clone();
        std::thread::spawn(move || {
            let mut o = rumqttc::MqttOptions::new(format!("bench-count-{port}"), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut conn) = rumqttc::Client::new(o, 1000);
            while !st2.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)))) => r2.store(true, Ordering::SeqCst),
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(_)))) if fast => {
                        let mut s = s2.lock().unwrap();
                        let n = s.ids.len() as u64;
                        s.note(n);
                    }
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) => {
                        let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            .ok()
                            .and_then(|v| v["seq"].as_u64())
                            .or_else(|| std::str::from_utf8(&p.payload).ok()?.split(',').next()?.parse().ok())
                            .unwrap_or(0);
                        s2.lock().unwrap().note(id);
                    }
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                    _ => {}
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(10);
        while !ready.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        Counter { seen, stop }
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().ids.len()
    }
    /// Messages per second from the first arrival to the last.
    fn rate(&self) -> (usize, f64, f64) {
        let s = self.seen.lock().unwrap();
        let secs = match (s.first, s.last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => f64::NAN,
        };
        (s.ids.len(), secs, s.ids.len().saturating_sub(1) as f64 / secs)
    }
    /// Waits until `n` distinct ids arrived or nothing arrived for `idle`.
    fn wait_for(&self, n: usize, idle: Duration) {
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let c = self.count();
            if c >= n {
                return;
            }
            if c != last_count {
                last_count = c;
                last_change = Instant::now();
            } else if last_change.elapsed() > idle {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Publishes `n` QoS 1 messages of ~300 bytes ("ID,padding") as fast as the broker acknowledges them,
/// with 100 in flight. Returns (PUBACKs received, seconds). Stops early when `stop` is set or the
/// connection fails.
fn bare_publisher(port: u16, n: u64, stop: Option<Arc<AtomicBool>>, acked_out: Option<Arc<AtomicU64>>) -> (u64, f64) {
    let mut o = rumqttc::MqttOptions::new(format!("bench-pub-{port}-{n}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(o, 200);
    let pad = "x".repeat(290);
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        for i in 1..=n {
            if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                break;
            }
            if client.publish("bench/bare", rumqttc::QoS::AtLeastOnce, false, format!("{i},{pad}")).is_err() {
                break;
            }
        }
    });
    let mut acked = 0u64;
    for ev in conn.iter() {
        match ev {
            Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_))) => {
                acked += 1;
                if let Some(a) = &acked_out {
                    a.store(acked, Ordering::Relaxed);
                }
                if acked >= n {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(conn);
    let _ = sender.join();
    (acked, secs)
}

/// Frames acknowledged (PUSH_ACK) from `simulate`'s summary line ("sent N ...; M acknowledged ...").
fn acked_of(simulate_output: &str) -> f64 {
    simulate_output
        .split("; ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The (device, FCnt) pairs `simulate --acked-log` wrote: one `DEVICE FCNT` line per PUSH_ACK.
fn acked_frames(path: &std::path::Path) -> HashSet<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let (d, f) = l.split_once(' ')?;
            Some((d.to_string(), f.parse().ok()?))
        })
        .collect()
}

/// The daemon (release binary) on `config`, quiet, given 2 s to come up.
fn start_daemon(config: &std::path::Path) -> Kill {
    let daemon = Kill(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    daemon
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes harness=false benches with --list
    }
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {mport} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 0\n"
        ),
    )
    .unwrap();
    let _mosquitto = Kill(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is required for this benchmark"),
    );
    std::thread::sleep(Duration::from_millis(300));

    let devices = dir.path().join("devices.toml");
    let n_devices = 1000;
    let ok = Command::new(BIN)
        .args(["simulate", "--make-devices", &n_devices.to_string(), "--devices"])
        .arg(&devices)
        .status()
        .unwrap();
    assert!(ok.success());

    // Subscriber: counts readings by (device, FCnt), notes when the last one arrived.
    type Seen = (HashMap<(String, u64), u32>, Option<Instant>);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    {
        let (seen, stop, lat) = (seen.clone(), stop.clone(), latencies.clone());
        std::thread::spawn(move || {
            let mut o = rumqttc::MqttOptions::new("bench-sub", "127.0.0.1", mport);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut conn) = rumqttc::Client::new(o, 1000);
            client.subscribe("city/bench-01/reading/#", rumqttc::QoS::AtLeastOnce).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) =
                    conn.recv_timeout(Duration::from_millis(100))
                {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        // Datagram to MQTT: `at` is when the daemon received the frame (ms precision).
                        if let Some(at) = v["at"].as_str().and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok()) {
                            let ms =
                                (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0);
                            lat.lock().unwrap().push(ms as f64 / 1000.0);
                        }
                        let id = (
                            v["device"].as_str().unwrap_or("?").to_string(),
                            v["lorawan"]["f_cnt"].as_u64().unwrap_or(u64::MAX),
                        );
                        let mut s = seen.lock().unwrap();
                        *s.0.entry(id).or_default() += 1;
                        s.1 = Some(Instant::now());
                    }
                }
            }
        });
    }

    let gw_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "devices_file = \"devices.toml\"\n[gateway]\nid = \"bench-01\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\n\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{mport}\"\n\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:{gw_port}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let daemon = start_daemon(&config);
    let idle_rss = rss_kib(daemon.0.id());

    println!("\n## district-gateway end-to-end benchmark\n");
    println!("daemon RSS at idle with {n_devices} devices configured: {:.1} MiB\n", idle_rss as f64 / 1024.0);
    println!("| offered/s | sent | acked | received | lost | dup | unacked | sustained/s | ack p50 ms | ack p99 ms | to MQTT p50 ms | to MQTT p99 ms | RSS MiB | disk B/reading |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let acked_log = dir.path().join("acked.log");
    let mut fcnt = 0u32;
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    for rate in [1000.0, 2000.0, 5000.0, 10000.0, 20000.0] {
        {
            let mut s = seen.lock().unwrap();
            s.0.clear();
            s.1 = None;
            latencies.lock().unwrap().clear();
        }
        let start = Instant::now();
        let wb0 = write_bytes(daemon.0.id());
        let out = Command::new(BIN)
            .args(["simulate", "--gwmp", &format!("127.0.0.1:{gw_port}"), "--devices"])
            .arg(&devices)
            .args(["--rate", &rate.to_string(), "--seconds", &seconds.to_string(), "--fcnt-start", &fcnt.to_string()])
            .arg("--acked-log")
            .arg(&acked_log)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        fcnt += (rate * seconds / n_devices as f64) as u32 + 2;
        let num = |key: &str| -> f64 {
            text.split(key)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.trim_end_matches(',').parse().ok())
                .unwrap_or(0.0)
        };
        let sent = num("sent ");
        let acked_ids = acked_frames(&acked_log);
        let acked = acked_ids.len() as f64;
        if acked != acked_of(&text) {
            eprintln!("note: simulate acknowledged {} frames but logged {acked} distinct ones", acked_of(&text));
        }
        // Wait for the broker to receive everything that was acknowledged (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        let missing = || {
            let s = seen.lock().unwrap();
            acked_ids.iter().filter(|id| !s.0.contains_key(*id)).count()
        };
        while Instant::now() < deadline && missing() > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (received, dup, unacked, last) = {
            let s = seen.lock().unwrap();
            let dup: u32 = s.0.values().map(|n| n - 1).sum();
            let unacked = s.0.keys().filter(|id| !acked_ids.contains(*id)).count();
            (s.0.len() as f64, dup, unacked, s.1)
        };
        let lost = missing();
        let span = last.map(|l| l.duration_since(start).as_secs_f64()).unwrap_or(f64::NAN);
        // Bytes written by the daemon from the first frame until everything was published (the
        // acknowledgements that free the log are part of steady state).
        std::thread::sleep(Duration::from_millis(1500));
        let wb = write_bytes(daemon.0.id()).saturating_sub(wb0);
        let (l50, l99) = {
            let mut l = latencies.lock().unwrap().clone();
            l.sort_by(|a, b| a.total_cmp(b));
            let p = |q: f64| {
                l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
            };
            (p(0.5), p(0.99))
        };
        println!(
            "| {rate:.0} | {sent:.0} | {acked:.0} | {received:.0} | {lost} | {dup} | {unacked} | {:.0} | {:.2} | {:.2} | {l50:.1} | {l99:.1} | {:.1} | {:.0} |",
            received / span,
            num("p50 "),
            num("p99 "),
            rss_kib(daemon.0.id()) as f64 / 1024.0,
            wb as f64 / acked.max(1.0)
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(daemon);
    if std::env::var("BENCH_SKIP_BACKLOG").is_ok() {
        return;
    }
    backlog_and_baselines(dir.path(), &devices, n_devices, fcnt);
}

/// A daemon whose outbox was filled while its broker was down.
struct BackedUp {
    daemon: Kill,
    /// The daemon's `ops.http_bind` port (for `/metrics`).
    http_port: u16,
    /// The broker port it connects to (nothing listens there yet).
    broker_port: u16,
    acked: f64,
}

/// Starts a daemon (gateway `id`) with its broker down and feeds it `n` frames with `simulate` at
/// 8,000 frames/s. Prints how the backlog was built when `report` is set.
fn build_backlog(
    dir: &std::path::Path,
    id: &str,
    devices: (&std::path::Path, u32),
    fcnt: &mut u32,
    n: u64,
    report: bool,
) -> BackedUp {
    let (devices, n_devices) = devices;
    let (broker_port, http_port) = (free_port(), free_port());
    let gw_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join(format!("gateway-{id}.toml"));
    let data = dir.join(format!("data-{id}"));
    std::fs::write(
        &config,
        format!(
            "devices_file = \"devices.toml\"\n[gateway]\nid = \"{id}\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\n\n[ops]\nhttp_bind = \"127.0.0.1:{http_port}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 500\n[buffer]\nmax_bytes = 1073741824\nreplay_rate = 1000000\n\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:{gw_port}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let daemon = start_daemon(&config);
    // In runs of simulate of at most 20 s at 8,000 frames/s.
    let wb0 = write_bytes(daemon.0.id());
    let mut acked_total = 0f64;
    let t0 = Instant::now();
    while (acked_total as u64) < n {
        let left = n as f64 - acked_total;
        let secs = (left / 8000.0).clamp(1.0, 20.0);
        let out = Command::new(BIN)
            .args(["simulate", "--gwmp", &format!("127.0.0.1:{gw_port}"), "--devices"])
            .arg(devices)
            .args(["--rate", "8000", "--seconds", &format!("{secs:.1}"), "--fcnt-start", &fcnt.to_string()])
            .output()
            .unwrap();
        *fcnt += (8000.0 * secs / f64::from(n_devices)) as u32 + 2;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let acked = acked_of(&text);
        acked_total += acked;
    }
    let build_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    if report {
        let wb = write_bytes(daemon.0.id()).saturating_sub(wb0);
        let rss = rss_kib(daemon.0.id()) as f64 / 1024.0;
        let disk: u64 = dir_size(&data);
        println!("\n### Backlog of {acked_total:.0} readings (broker down)\n");
        println!(
            "- built in {build_s:.0} s ({:.0} readings/s acknowledged); disk written {:.0} B/reading; on disk {:.1} MiB ({:.0} B/reading)",
            acked_total / build_s,
            wb as f64 / acked_total,
            disk as f64 / 1048576.0,
            disk as f64 / acked_total
        );
        println!("- daemon RSS with the backlog: {rss:.1} MiB");
    }
    BackedUp { daemon, http_port, broker_port, acked: acked_total }
}

/// The daemon's `district_gateway_records_published_total` (PUBACKs received for outbox records).
fn published(http_port: u16) -> Option<f64> {
    let (_, body) = http::http_get(http_port, "/metrics")?;
    body.lines().find_map(|l| l.strip_prefix("district_gateway_records_published_total ")?.trim().parse().ok())
}

/// Follows the daemon's PUBACK count until it stops moving for 3 s. Returns (records acknowledged by
/// the broker, seconds from the first to the last, peak RSS MiB).
fn follow_drain(b: &BackedUp) -> (f64, f64, f64) {
    let (mut first, mut last) = (None::<(Instant, f64)>, (Instant::now(), 0.0));
    let mut peak_rss = 0f64;
    loop {
        let now = Instant::now();
        let p = published(b.http_port).unwrap_or(last.1);
        peak_rss = peak_rss.max(rss_kib(b.daemon.0.id()) as f64 / 1024.0);
        if p > 0.0 && first.is_none() {
            first = Some((now, p));
        }
        if p != last.1 {
            last = (now, p);
        } else if now.duration_since(last.0) > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (t_first, p_first) = first.unwrap_or(last);
    let secs = last.0.duration_since(t_first).as_secs_f64();
    ((last.1 - p_first), secs, peak_rss)
}

/// The backlog drain against the ceiling (bare rumqttc) and the peer (a mosquitto bridge).
///
/// Like is compared with like: the drain counted by the PUBACKs the daemon receives against the bare
/// publisher counted by its PUBACKs (nobody subscribed: what the broker accepts), then both again
/// counted at a subscriber (what the broker delivers, which costs the broker, and the 2 cores, more).
fn backlog_and_baselines(dir: &std::path::Path, devices: &std::path::Path, n_devices: u32, fcnt: u32) {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let mut fcnt = fcnt;
    let mut all = Vec::new();
    for run in 1..=runs {
        if runs > 1 {
            println!("\n## Backlog run {run} of {runs}");
        }
        all.push(backlog_run(dir, devices, n_devices, &mut fcnt, run));
    }
    if runs > 1 {
        let med = |f: Figure| {
            let mut v: Vec<f64> = all.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!("\n## Medians of {runs} runs\n");
        println!("| figure | median | runs |\n|---|---:|---|");
        let rows: [(&str, Figure); 8] = [
            ("drain, PUBACKs, msg/s", |f| f.drain_ack),
            ("ceiling (bare rumqttc), PUBACKs, msg/s", |f| f.bare_ack),
            ("drain / ceiling, PUBACKs, %", |f| 100.0 * f.drain_ack / f.bare_ack),
            ("drain at a subscriber, msg/s", |f| f.drain_sub),
            ("ceiling at a subscriber, msg/s", |f| f.bare_sub),
            ("drain / ceiling at a subscriber, %", |f| 100.0 * f.drain_sub / f.bare_sub),
            ("mosquitto bridge drain at a subscriber, msg/s", |f| f.bridge_sub),
            ("mosquitto bridge loss on kill -9, %", |f| f.bridge_loss_pct),
        ];
        for (name, f) in rows {
            let each: Vec<String> = all.iter().map(|x| format!("{:.0}", f(x))).collect();
            println!("| {name} | {:.0} | {} |", med(f), each.join(", "));
        }
    }
}

/// Picks one figure of a run.
type Figure = fn(&DrainFigures) -> f64;

/// One run's drain figures (msg/s unless named otherwise).
struct DrainFigures {
    drain_ack: f64,
    bare_ack: f64,
    drain_sub: f64,
    bare_sub: f64,
    bridge_sub: f64,
    bridge_loss_pct: f64,
}

fn backlog_run(
    dir: &std::path::Path,
    devices: &std::path::Path,
    n_devices: u32,
    fcnt: &mut u32,
    run: usize,
) -> DrainFigures {
    let backlog: u64 = std::env::var("BENCH_BACKLOG").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let b = build_backlog(dir, &format!("bench-02-{run}"), (devices, n_devices), fcnt, backlog, true);
    // Drain 1: start the broker, count the PUBACKs.
    let bport = b.broker_port;
    let m = mosquitto(dir, "drain", bport, "persistence false\n");
    let (drained, secs, peak_rss) = follow_drain(&b);
    let drain = drained / secs;
    println!(
        "- drain, counted by the daemon's PUBACKs (nobody subscribed): {drained:.0} records in {secs:.1} s = **{drain:.0} msg/s**; peak RSS while draining {peak_rss:.1} MiB"
    );
    drop(b);
    // Ceiling, the same way: a bare rumqttc QoS 1 publisher against the same mosquitto.
    let n = backlog.min(300_000);
    let (acked, secs) = bare_publisher(bport, n, None, None);
    let bare = acked as f64 / secs;
    println!("- ceiling: bare rumqttc QoS 1 publisher (inflight 100, ~300-byte payloads), counted by its PUBACKs: {acked} in {secs:.1} s = **{bare:.0} msg/s**");
    println!("- **drain / ceiling = {:.0} %**", 100.0 * drain / bare);

    // Drain 2 and the ceiling again, both counted at a subscriber (QoS 1) of the same broker.
    let nsub = backlog.min(300_000);
    let id = format!("bench-03-{run}");
    let b = build_backlog(dir, &id, (devices, n_devices), fcnt, nsub, false);
    let bport2 = b.broker_port;
    let m2 = mosquitto(dir, "drain-sub", bport2, "persistence false\n");
    let counter = Counter::start_fast(b.broker_port, &format!("city/{id}/#"));
    counter.wait_for(b.acked as usize, Duration::from_secs(5));
    let (got, secs, sub_drain) = counter.rate();
    println!(
        "- drain of {:.0} readings counted at a QoS 1 subscriber: {got} messages in {secs:.1} s = **{sub_drain:.0} msg/s**",
        b.acked
    );
    drop(counter);
    drop(b);
    let counter = Counter::start_fast(bport2, "bench/#");
    let (acked, _) = bare_publisher(bport2, nsub, None, None);
    counter.wait_for(acked as usize, Duration::from_secs(5));
    let (got, secs, sub_bare) = counter.rate();
    println!("- ceiling counted at the same subscriber: {got} in {secs:.1} s = **{sub_bare:.0} msg/s**");
    println!("- **drain / ceiling, at a subscriber = {:.0} %**", 100.0 * sub_drain / sub_bare);
    drop(counter);
    drop(m2);
    drop(m);

    // Peer: mosquitto bridging to a second mosquitto with persistence on.
    let (pa, pb) = (free_port(), free_port());
    let adir = dir.join(format!("bridge-a-{run}"));
    std::fs::create_dir_all(&adir).unwrap();
    let bridge_conf = format!(
        "persistence true\npersistence_location {}/\nautosave_interval 60\nconnection to-b\naddress 127.0.0.1:{pb}\ntopic bench/# out 1\ncleansession false\nrestart_timeout 1\nqueue_qos0_messages false\n",
        adir.display()
    );
    // Drain: B down, the backlog published to A (QoS 1, A acknowledges), then B comes up.
    let a = mosquitto(dir, "bridge-a", pa, &bridge_conf);
    std::thread::sleep(Duration::from_millis(500));
    let nb = backlog.min(300_000);
    let (a_acked, _) = bare_publisher(pa, nb, None, None);
    let b = mosquitto(dir, "bridge-b", pb, "persistence false\n");
    let counter = Counter::start_fast(pb, "bench/#");
    counter.wait_for(a_acked as usize, Duration::from_secs(20));
    // Counted like our drain at a subscriber: first message to last (not the bridge's reconnect).
    let (received, secs, bridge_sub) = counter.rate();
    println!(
        "\n### Peer: mosquitto bridge (persistence on, autosave_interval 60) → mosquitto\n\n- drain of {a_acked} queued messages: {received} received in {secs:.1} s = **{bridge_sub:.0} msg/s**"
    );
    drop(counter);
    drop(a);
    // kill -9 under load: a publisher to A while A forwards to B; A is killed after 5 s.
    let _ = std::fs::remove_dir_all(&adir);
    std::fs::create_dir_all(&adir).unwrap();
    let mut a = mosquitto(dir, "bridge-a", pa, &bridge_conf);
    let counter = Counter::start(pb, "bench/#");
    std::thread::sleep(Duration::from_secs(2)); // the bridge connects
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let (s2, a2) = (stop.clone(), acked.clone());
    let publ = std::thread::spawn(move || bare_publisher(pa, 10_000_000, Some(s2), Some(a2)));
    std::thread::sleep(Duration::from_secs(5));
    let _ = a.0.kill(); // SIGKILL
    let _ = a.0.wait();
    stop.store(true, Ordering::Relaxed);
    let _ = publ.join();
    let acked_by_a = acked.load(Ordering::Relaxed);
    // A restarts from its persistence file and forwards whatever it still has.
    let _a2 = mosquitto(dir, "bridge-a", pa, &bridge_conf);
    counter.wait_for(acked_by_a as usize, Duration::from_secs(15));
    let got = counter.count();
    let lost = acked_by_a.saturating_sub(got as u64);
    let bridge_loss_pct = 100.0 * lost as f64 / acked_by_a.max(1) as f64;
    println!(
        "- kill -9 of the bridging mosquitto under load: it acknowledged {acked_by_a}, {got} reached the second broker after its restart: **{lost} lost** ({bridge_loss_pct:.1} %)"
    );
    drop(b);
    DrainFigures {
        drain_ack: drain,
        bare_ack: bare,
        drain_sub: sub_drain,
        bare_sub: sub_bare,
        bridge_sub,
        bridge_loss_pct,
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            n += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
        }
    }
    n
}
