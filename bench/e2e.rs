//! End-to-end benchmark: the real daemon (release binary) between `simulate` and a local mosquitto.
//!
//! `cargo bench --bench e2e` (needs `mosquitto` on PATH). Reports, in one run:
//! - the daemon's RSS at idle with 1,000 devices configured;
//! - for increasing offered rates: frames acknowledged, readings that reached the broker, loss, and
//!   the sustained rate through decode + journal + publish (first frame sent → last reading received);
//! - PUSH_ACK latency (datagram in → frames on disk) p50/p99, as `simulate` measured it.
//!
//! Figures are printed as a Markdown table; no pass/fail on timing.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    // Subscriber: counts distinct readings, notes when the last one arrived.
    let seen: Arc<Mutex<(HashSet<u64>, Option<Instant>)>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (seen, stop) = (seen.clone(), stop.clone());
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
                        let mut s = seen.lock().unwrap();
                        s.0.insert(v["seq"].as_u64().unwrap_or(0));
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
    let daemon = Kill(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(daemon.0.id());

    println!("\n## district-gateway end-to-end benchmark\n");
    println!("daemon RSS at idle with {n_devices} devices configured: {:.1} MiB\n", idle_rss as f64 / 1024.0);
    println!("| offered/s | sent | acked | received | lost | sustained/s | ack p50 ms | ack p99 ms | RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut fcnt = 0u32;
    let seconds = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    for rate in [1000.0, 2000.0, 5000.0, 10000.0, 20000.0] {
        {
            let mut s = seen.lock().unwrap();
            s.0.clear();
            s.1 = None;
        }
        let start = Instant::now();
        let out = Command::new(BIN)
            .args(["simulate", "--gwmp", &format!("127.0.0.1:{gw_port}"), "--devices"])
            .arg(&devices)
            .args(["--rate", &rate.to_string(), "--seconds", &seconds.to_string(), "--fcnt-start", &fcnt.to_string()])
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
        let acked = text
            .split("; ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        // Wait for the broker to receive everything that was acknowledged (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && (seen.lock().unwrap().0.len() as f64) < acked {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (received, last) = {
            let s = seen.lock().unwrap();
            (s.0.len() as f64, s.1)
        };
        let span = last.map(|l| l.duration_since(start).as_secs_f64()).unwrap_or(f64::NAN);
        println!(
            "| {rate:.0} | {sent:.0} | {acked:.0} | {received:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} |",
            (acked - received).max(0.0),
            received / span,
            num("p50 "),
            num("p99 "),
            rss_kib(daemon.0.id()) as f64 / 1024.0
        );
    }
    stop.store(true, Ordering::Relaxed);
}
