//! Test harness: real processes, real sockets. The daemon runs as a separate process; the broker is
//! the embedded rumqttd (our hidden `broker` subcommand) or, when `DG_TEST_BROKER=mosquitto`, a real
//! mosquitto (required then: a missing binary fails the test instead of skipping it).
#![allow(dead_code)]

pub mod http;
pub mod pull_forwarder;
pub mod signed;
pub mod vtn;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use district_gateway::io::gwmp::packet::{build_push_data, RxPkOut};
use district_gateway::keys::Eui64;
use district_gateway::sim::SimDevice;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_district-gateway");

/// The public test vectors: `../shared/vectors` next to the checkout, else the workplace's copy.
pub fn vectors_dir() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/vectors")
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A raw pseudo-terminal: (its master, the slave's path) — a serial port for a source to open. The
/// slave stays open in this process too, so the master does not see a hangup between the source's opens.
pub fn openpty() -> (std::fs::File, PathBuf) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut t = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
    let path = nix::unistd::ttyname(&pty.slave).unwrap();
    std::mem::forget(pty.slave);
    (std::fs::File::from(pty.master), path)
}

/// A feeder meter on the pty `master`: the Holley DTZ541 dump (460 W) every 0.7 s until the returned
/// flag is cleared (or the port closes).
pub fn feed_holley_meter(mut master: std::fs::File) -> Arc<AtomicBool> {
    let dump = std::fs::read(vectors_dir().join("sml/libsml-testing/HOLLEY_DTZ541-ZDBA.bin")).unwrap();
    let meter_on = Arc::new(AtomicBool::new(true));
    let on = meter_on.clone();
    std::thread::spawn(move || {
        while on.load(Ordering::Relaxed) {
            if master.write_all(&dump).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(700));
        }
    });
    meter_on
}

/// Polls `f` every 50 ms for up to `limit` without blocking the runtime (for in-process daemons).
pub async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it returns true or `limit` passes. Returns whether it became true.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

// ---------------------------------------------------------------------------------------------- requirements

/// `ci()`: whether tests must not skip (`CI` set, as `.ci/run` does). `require(what, hint, available)`:
/// the one way a test meets something it needs and does not find (a tool, a module, a permission):
/// under CI the test FAILS, saying what is missing and how to install it; elsewhere it prints a
/// `SKIPPED` line and the caller returns. Shared with the unit tests of both crates.
/// Usage: `if !require("chromium", "apt-get install -y chromium", find_chromium().is_some()) { return; }`
#[allow(unused_imports)] // each test crate uses some of the shared helpers
pub use district_core::test_support::{ci, require};

/// The executable `name` on PATH, if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Whether `python3 -c "import MODULE"` works.
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------- broker

pub struct Broker {
    pub port: u16,
    /// A second listener, MQTT over TLS requiring a client certificate (see [`Broker::start_tls`]).
    pub tls: Option<TlsListener>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// PEM files for a broker's TLS listener.
#[derive(Clone)]
pub struct TlsListener {
    pub port: u16,
    /// The CA client certificates must be signed by.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn broker_kind() -> String {
    std::env::var("DG_TEST_BROKER").unwrap_or_else(|_| "embedded".into())
}

impl Broker {
    pub fn start() -> Broker {
        let mut b = Broker { port: free_port(), tls: None, child: None, dir: tempfile::tempdir().unwrap() };
        b.restart();
        b
    }

    /// A broker with a plain listener (`port`) and a TLS listener that requires a client certificate
    /// signed by `ca` (`tls.port`).
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Broker {
        let tls = TlsListener { port: free_port(), ca: ca.into(), cert: cert.into(), key: key.into() };
        let mut b = Broker { port: free_port(), tls: Some(tls), child: None, dir: tempfile::tempdir().unwrap() };
        b.restart();
        b
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = if broker_kind() == "mosquitto" {
            let conf = self.dir.path().join("mosquitto.conf");
            let mut text = format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\nuser root\nlistener {} 127.0.0.1\n",
                self.port
            );
            if let Some(t) = &self.tls {
                text.push_str(&format!(
                    "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                    t.port,
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ));
            }
            std::fs::write(&conf, text).unwrap();
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "DG_TEST_BROKER=mosquitto but mosquitto cannot be started ({e}): apt-get install -y mosquitto"
                    )
                })
        } else {
            let mut cmd = Command::new(BIN);
            cmd.args(["broker", "--bind", &format!("127.0.0.1:{}", self.port)]);
            if let Some(t) = &self.tls {
                cmd.args(["--tls-bind", &format!("127.0.0.1:{}", t.port)])
                    .arg("--tls-ca")
                    .arg(&t.ca)
                    .arg("--tls-cert")
                    .arg(&t.cert)
                    .arg("--tls-key")
                    .arg(&t.key);
            }
            cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
        };
        self.child = Some(child);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls.as_ref().map(|t| t.port)).collect();
        for port in ports {
            assert!(
                wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
                "broker did not come up on {port}"
            );
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------- subscriber

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub json: Value,
    pub retain: bool,
}

/// An MQTT subscriber on `{prefix}/{gateway}/#` that re-subscribes after every reconnect.
pub struct Subscriber {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let (m, s, c, filter) = (msgs.clone(), stop.clone(), connected.clone(), filter.to_string());
        let thread = std::thread::spawn(move || {
            let mut o = rumqttc::MqttOptions::new(format!("test-sub-{port}-{}", rand_suffix()), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(5));
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut conn) = rumqttc::Client::new(o, 100);
            while !s.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)))) => c.store(true, Ordering::SeqCst),
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        m.lock().unwrap().push(Msg { topic: p.topic.clone(), json, retain: p.retain });
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => {
                        c.store(false, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => {}
                }
            }
        });
        let sub = Subscriber { msgs, stop, connected, thread: Some(thread) };
        assert!(sub.wait_subscribed(Duration::from_secs(10)), "subscriber did not subscribe");
        sub
    }

    pub fn wait_subscribed(&self, limit: Duration) -> bool {
        wait_until(limit, || self.connected.load(Ordering::SeqCst))
    }

    pub fn readings(&self) -> Vec<Value> {
        self.msgs.lock().unwrap().iter().filter(|m| m.topic.contains("/reading/")).map(|m| m.json.clone()).collect()
    }

    pub fn on_topic(&self, suffix: &str) -> Vec<Msg> {
        self.msgs.lock().unwrap().iter().filter(|m| m.topic.ends_with(suffix)).cloned().collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        ^ (std::process::id() as u64)
}

// ---------------------------------------------------------------------------------------------- daemon

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub gwmp: SocketAddr,
    child: Option<Child>,
    runs: u32,
}

pub fn config_text(gateway: &str, data_dir: &Path, broker_url: &str, gwmp_port: u16, devices: &[SimDevice]) -> String {
    config_text_with(gateway, data_dir, broker_url, "", gwmp_port, devices)
}

/// The tests' `[buffer]`: the default durability (interval) with a short window, so that readings
/// reach the broker within a quarter of a second of their commit, as the tests' timeouts expect.
pub const TEST_BUFFER: &str = "flush_interval_ms = 250";

/// [`config_text`] with more lines in `[mqtt]`.
pub fn config_text_with(
    gateway: &str,
    data_dir: &Path,
    broker_url: &str,
    mqtt_extra: &str,
    gwmp_port: u16,
    devices: &[SimDevice],
) -> String {
    let mut s = format!(
        "[gateway]\nid = \"{gateway}\"\ndata_dir = \"{}\"\nlog_level = \"debug\"\n\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"{broker_url}\"\n\
         topic_prefix = \"city\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n{mqtt_extra}\n\
         [buffer]\n{TEST_BUFFER}\n\
         [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:{gwmp_port}\"\n\n",
        data_dir.display()
    );
    for d in devices {
        s.push_str(&d.config_toml());
    }
    s
}

impl Daemon {
    pub fn start(gateway: &str, broker_url: &str, devices: &[SimDevice]) -> Daemon {
        Daemon::start_with(gateway, broker_url, "", devices)
    }

    /// [`Daemon::start`] with more lines in the config's `[mqtt]` section.
    pub fn start_with(gateway: &str, broker_url: &str, mqtt_extra: &str, devices: &[SimDevice]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let config = dir.path().join("gateway.toml");
        let text = config_text_with(gateway, &dir.path().join("data"), broker_url, mqtt_extra, port, devices);
        std::fs::write(&config, text).unwrap();
        let mut d = Daemon { dir, config, gwmp: SocketAddr::from(([127, 0, 0, 1], port)), child: None, runs: 0 };
        d.spawn();
        d
    }

    /// Log of run `n` (stdout and stderr together).
    pub fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("daemon-{n}.log"))
    }

    pub fn all_logs(&self) -> String {
        (0..self.runs).map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default()).collect()
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::File::create(self.log_path(self.runs)).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "debug,rumqttc=info,sled=info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.runs += 1;
        // Ready when the UDP source answers a PULL_DATA.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let ok = wait_until(Duration::from_secs(20), || {
            let _ = probe.send_to(&[2, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1], self.gwmp);
            let mut b = [0u8; 16];
            matches!(probe.recv_from(&mut b), Ok((4, _)) if b[3] == 4)
        });
        assert!(ok, "daemon did not come up; log:\n{}", self.all_logs());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------------------- packet forwarder

/// A packet forwarder: sends PUSH_DATA, waits for PUSH_ACK.
pub struct Forwarder {
    pub socket: UdpSocket,
    token: u16,
}

impl Forwarder {
    pub fn new() -> Forwarder {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(2000))).unwrap();
        Forwarder { socket, token: 0 }
    }

    pub fn rxpk(phy: Vec<u8>) -> RxPkOut {
        RxPkOut { tmst: 1_000_000, freq_hz: 868_100_000, sf: 7, bw_khz: 125, rssi: -97, lsnr: 7.5, data: phy }
    }

    /// Sends one PUSH_DATA; true when the matching PUSH_ACK came back.
    pub fn push(&mut self, to: SocketAddr, rxpk: &[RxPkOut]) -> bool {
        self.token = self.token.wrapping_add(1);
        let token = self.token.to_le_bytes();
        let d = build_push_data(2, token, Eui64(0xaa555a0000000001), rxpk);
        if self.socket.send_to(&d, to).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((4, _)) if buf[3] == 1 && buf[1..3] == token => return true,
                Ok(_) => continue, // a late ACK for an earlier datagram
                Err(_) => return false,
            }
        }
    }

    pub fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).unwrap();
    }
}

/// (device, f_cnt) → the reading JSONs received for it.
pub fn by_frame(readings: &[Value]) -> HashMap<(String, u64), Vec<Value>> {
    let mut m: HashMap<(String, u64), Vec<Value>> = HashMap::new();
    for r in readings {
        let key = (r["device"].as_str().unwrap_or("").to_string(), r["lorawan"]["f_cnt"].as_u64().unwrap_or(u64::MAX));
        m.entry(key).or_default().push(r.clone());
    }
    m
}

pub fn write_file(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
