//! The daemon under test: a separate process with a config file written here ([`Cfg`]: `[ops]` with a
//! fixed HTTP port and the test key), its logs across restarts, signals; and [`Rig`], the broker, a
//! subscriber on the gateway's topics and the daemon together.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use district_gateway::sim::SimDevice;
use nix::sys::signal::Signal;

use crate::common::http::http_get;
use crate::common::signed::*;
use crate::common::*;
use crate::prometheus::{parse_prometheus, Metrics};

pub fn devices(prefix: &str, n: u32) -> Vec<SimDevice> {
    (1..=n).map(|i| SimDevice::numbered(prefix, i, "raw")).collect()
}

// ---------------------------------------------------------------------------------------------- config

/// A complete config file with `[ops]` (fixed HTTP port, the test key) — written by hand because the
/// harness's `config_text` has no `[[ops.key]]`.
#[derive(Clone)]
pub struct Cfg {
    pub gateway: String,
    data_dir: PathBuf,
    pub broker_url: String,
    gwmp_port: u16,
    http_port: u16,
    pub rollback_after_s: u32,
    pub devices: Vec<SimDevice>,
}

impl Cfg {
    pub fn render(&self) -> String {
        let mut s = format!(
            "[gateway]\nid = \"{gw}\"\ndata_dir = \"{data}\"\nlog_level = \"debug\"\n\n\
             [ops]\nhttp_bind = \"127.0.0.1:{http}\"\nrollback_after_s = {rb}\n\n\
             [[ops.key]]\nid = \"ops-1\"\ned25519_public = \"{pk}\"\n\n\
             [mqtt]\nurl = \"{url}\"\ntopic_prefix = \"city\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\n\
             [[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:{gwmp}\"\n\n",
            gw = self.gateway,
            data = self.data_dir.display(),
            http = self.http_port,
            rb = self.rollback_after_s,
            pk = public_key_b64(),
            url = self.broker_url,
            gwmp = self.gwmp_port,
        );
        for d in &self.devices {
            s.push_str(&d.config_toml());
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------- daemon

/// The daemon as a subprocess with our own config (and, optionally, the test hooks in its environment).
pub struct Gw {
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub cfg: Cfg,
    pub gwmp: SocketAddr,
    hooks: bool,
    child: Option<Child>,
    logs: Vec<PathBuf>,
}

impl Gw {
    pub fn start(gateway: &str, broker_url: &str, devices: &[SimDevice], hooks: bool) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Cfg {
            gateway: gateway.to_string(),
            data_dir: dir.path().join("data"),
            broker_url: broker_url.to_string(),
            gwmp_port: free_udp_port(),
            http_port: free_port(),
            rollback_after_s: 5,
            devices: devices.to_vec(),
        };
        let config_path = dir.path().join("gateway.toml");
        write_file(&config_path, &cfg.render());
        let gwmp = SocketAddr::from(([127, 0, 0, 1], cfg.gwmp_port));
        let mut g = Gw { _dir: dir, config_path, cfg, gwmp, hooks, child: None, logs: Vec::new() };
        g.spawn();
        g
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let path = self.config_path.with_file_name(format!("daemon-{}.log", self.logs.len()));
        let log = std::fs::File::create(&path).unwrap();
        self.logs.push(path);
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "debug,rumqttc=info,sled=info")
            .env_remove("DISTRICT_GATEWAY_TEST_HOOKS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.hooks {
            cmd.env("DISTRICT_GATEWAY_TEST_HOOKS", "1");
        }
        self.child = Some(cmd.spawn().unwrap());
        // Ready when the UDP source answers a PULL_DATA with a PULL_ACK.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let ok = wait_until(Duration::from_secs(30), || {
            let _ = probe.send_to(&[2, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1], self.gwmp);
            let mut b = [0u8; 16];
            matches!(probe.recv_from(&mut b), Ok((4, _)) if b[3] == 4)
        });
        assert!(ok, "daemon did not come up; log:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        self.logs.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }

    fn log_dir(&self) -> PathBuf {
        self.config_path.parent().unwrap().to_path_buf()
    }

    pub fn signal(&self, sig: Signal) {
        let pid = self.child.as_ref().expect("daemon running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    }

    /// SIGTERM; the exit status if the process ended within `limit` (else it is killed and `None`).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn config_on_disk(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }

    pub fn http(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.cfg.http_port, path)
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.http("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        parse_prometheus(&body).unwrap_or_else(|e| panic!("/metrics is not Prometheus text format: {e}\n{body}"))
    }
}

/// The daemon's logs (every run), readable while the daemon is restarted.
pub fn log_reader(gw: &Gw) -> impl Fn() -> String {
    let dir = gw.log_dir();
    move || {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "log"));
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------- rig

/// A started gateway with a broker and a subscriber on its topics.
pub struct Rig {
    pub broker: Broker,
    pub sub: Subscriber,
    pub gw: Gw,
    pub fwd: Forwarder,
}

pub fn rig(gateway: &str, devs: &[SimDevice], hooks: bool) -> Rig {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, &format!("city/{gateway}/#"));
    let gw = Gw::start(gateway, &broker.url(), devs, hooks);
    Rig { broker, sub, gw, fwd: Forwarder::new() }
}
