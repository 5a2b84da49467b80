//! The local status page in a real headless browser: the real daemon (a config with devices and a lighting zone,
//! a fixed `[ops] http_bind` port), a couple of real uplinks through the packet-forwarder port, then Debian's
//! `chromium` loads `http://127.0.0.1:PORT/`: the DOM must show the configured devices and the zone, the page must
//! make no request to anything but its own origin, and a screenshot goes to `target/status-page.png`.
//!
//! Without `chromium` on PATH the test prints a skip message and passes, unless `CI` is set: then it fails
//! (CI installs it: `apt-get install -y chromium`). See `common::require`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, free_udp_port, on_path, require, wait_until, Broker, Forwarder, BIN};
use district_gateway::sim::{payloads, SimDevice};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_chromium() -> Option<PathBuf> {
    on_path("chromium").or_else(|| on_path("chromium-browser"))
}

/// A plain HTTP/1.1 GET on loopback; the body, or None.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Runs chromium headless with `extra` arguments on `url`, bounded in time; (stdout, stderr).
fn chromium(bin: &Path, profile: &Path, extra: &[String], url: &str) -> (String, String) {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--no-default-browser-check",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null());
    let out_path = profile.with_extension("out");
    let err_path = profile.with_extension("err");
    cmd.stdout(std::fs::File::create(&out_path).unwrap()).stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = Kill(cmd.spawn().expect("starting chromium"));
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("chromium did not finish within 90 s"),
        }
    }
    drop(child);
    (std::fs::read_to_string(out_path).unwrap_or_default(), std::fs::read_to_string(err_path).unwrap_or_default())
}

/// Every `src`, `href`, `action`, `poster`, `data` … attribute value and `url(...)` in the HTML that points
/// somewhere else than this origin (absolute or protocol-relative URLs).
fn external_references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for attr in ["src=", "href=", "action=", "poster=", "data=", "srcset=", "formaction=", "url("] {
        let mut rest = lower.as_str();
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let v = rest.trim_start_matches(['"', '\'', ' ']);
            let v: String = v.chars().take_while(|c| !matches!(c, '"' | '\'' | ' ' | '>' | ')')).collect();
            if v.starts_with("//") || v.contains("://") || v.starts_with("javascript:") {
                found.push(format!("{attr}{v}"));
            }
        }
    }
    if lower.contains("http://") || lower.contains("https://") {
        found.push("an absolute http(s) URL somewhere in the page".into());
    }
    found
}

/// (url, initiator) of every URL request in a chromium net log (`--log-net-log`).
fn net_log_requests(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("no net log at {}: {e}", path.display()));
    // A log cut short lacks its closing brackets; close it.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .unwrap_or_else(|e| panic!("unreadable net log {}: {e}", path.display()));
    let mut out = Vec::new();
    for e in log["events"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if let Some(url) = e["params"]["url"].as_str() {
            let initiator = e["params"]["initiator"].as_str().unwrap_or("").to_owned();
            if !out.iter().any(|(u, i): &(String, String)| u == url && *i == initiator) {
                out.push((url.to_owned(), initiator));
            }
        }
    }
    out
}

#[test]
fn status_page_in_headless_chromium() {
    let chromium_bin = find_chromium();
    if !require("chromium (or chromium-browser) on PATH", "apt-get install -y chromium", chromium_bin.is_some()) {
        return;
    }
    let chromium_bin = chromium_bin.unwrap();

    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let gwmp_port = free_udp_port();
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let gwmp = SocketAddr::from(([127, 0, 0, 1], gwmp_port));

    let mut bin = SimDevice::numbered("bin", 1, "milesight-em310-udl");
    let mut pir = SimDevice::numbered("pir", 1, "milesight-ws202");
    let lamps: Vec<SimDevice> = (1..=3).map(|i| SimDevice::numbered("lamp", i, "lamp-generic")).collect();
    let quiet = SimDevice::numbered("tree", 42, "dragino-lse01");
    let mut config = format!(
        "[gateway]\nid = \"status-01\"\ndata_dir = \"{}\"\nlatitude = 53.7065\nlongitude = 9.9936\nlog_level = \"info\"\n\n\
         [ops]\nhttp_bind = \"127.0.0.1:{http_port}\"\n\n\
         [mqtt]\nurl = \"{}\"\ntopic_prefix = \"city\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\n\
         [[source]]\ntype = \"gwmp\"\nname = \"concentrator\"\nbind = \"127.0.0.1:{gwmp_port}\"\n\n",
        dir.path().join("data").display(),
        broker.url()
    );
    for d in [&bin, &pir, &quiet].into_iter().chain(lamps.iter()) {
        config.push_str(&d.config_toml());
    }
    config.push_str(
        "[[lighting.zone]]\nname = \"reiherhagen\"\ntime_zone = \"Europe/Berlin\"\n\
         lamps = [\"lamp-001\", \"lamp-002\", \"lamp-003\"]\n\
         sensors = [{ device = \"pir-001\", lamp = \"lamp-002\" }]\n\
         base_level_pct = 10\nboost_level_pct = 100\nhold_s = 90\nlamps_ahead = 1\n",
    );
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, &config).unwrap();
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _daemon = Kill(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Up when the packet-forwarder port answers a PULL_DATA and the HTTP port serves the page.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let up = wait_until(Duration::from_secs(30), || {
        let _ = probe.send_to(&[2, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1], gwmp);
        let mut b = [0u8; 16];
        matches!(probe.recv_from(&mut b), Ok((4, _)) if b[3] == 4)
    }) && wait_until(Duration::from_secs(10), || http_get(http, "/").is_some());
    assert!(up, "daemon did not come up; log:\n{}", daemon_log());

    // A few real uplinks: the fill-level sensor twice, the presence sensor once (motion).
    let mut fwd = Forwarder::new();
    for (which, n) in [(0, 0u32), (0, 1), (1, 1)] {
        let dev = if which == 0 { &mut bin } else { &mut pir };
        let (port, payload) = payloads::for_profile(&dev.profile, n);
        dev.f_port = port;
        let phy = dev.uplink(&payload);
        assert!(fwd.push(gwmp, &[Forwarder::rxpk(phy)]), "no PUSH_ACK; log:\n{}", daemon_log());
    }

    // The page shows the readings and the zone once the pipeline and the control loop have run.
    let mut page = String::new();
    let ready = wait_until(Duration::from_secs(20), || {
        page = http_get(http, "/").unwrap_or_default();
        page.contains("distance_mm") && page.contains("Zone reiherhagen") && page.contains("lamp-002")
    });
    assert!(ready, "status page never showed the readings and the zone:\n{page}\nlog:\n{}", daemon_log());
    let external = external_references(&page);
    assert!(external.is_empty(), "the page references other origins: {external:?}\n{page}");
    assert!(page.contains("<meta http-equiv=\"refresh\""), "{page}");

    // The browser: the rendered DOM, with a net log of every request it made.
    let url = format!("http://127.0.0.1:{http_port}/");
    let net_log = dir.path().join("netlog.json");
    let (dom, err) = chromium(
        &chromium_bin,
        &dir.path().join("chromium-dom"),
        &["--dump-dom".into(), format!("--log-net-log={}", net_log.display())],
        &url,
    );
    assert!(dom.contains("<h1>status-01</h1>"), "chromium's DOM lacks the header:\n{dom}\nstderr:\n{err}");
    for name in ["bin-001", "pir-001", "tree-042", "lamp-001", "lamp-002", "lamp-003", "concentrator"] {
        assert!(dom.contains(&format!("<td>{name}</td>")), "the DOM does not list {name}:\n{dom}");
    }
    assert!(dom.contains("Zone reiherhagen"), "the DOM does not show the zone:\n{dom}");
    assert!(dom.contains("distance_mm"), "the DOM does not show bin-001's values:\n{dom}");
    assert!(dom.contains("s ago"), "no last-seen time in the DOM:\n{dom}");
    assert!(dom.contains("id=\"devices\""), "{dom}");
    // The page is not re-rendered by scripts: what the browser shows is what the server sent.
    assert!(!dom.contains("<script"), "{dom}");

    // Requests the page caused: only its own origin. The net log records every URL request with its initiator;
    // requests the page makes (stylesheets, images, fonts, scripts, favicon) carry the page's origin as initiator,
    // chromium's own background requests (update checks, network time) carry none and are not the page's doing.
    let origin = format!("http://127.0.0.1:{http_port}");
    let requests = net_log_requests(&net_log);
    assert!(
        requests.iter().any(|(u, _)| u.starts_with(&url)),
        "the net log does not show the page's own request: {requests:?}"
    );
    let foreign: Vec<&(String, String)> = requests
        .iter()
        .filter(|(u, initiator)| *initiator == origin && !u.starts_with(&format!("{origin}/")))
        .collect();
    assert!(foreign.is_empty(), "the page made requests to other origins: {foreign:?}");
    let own: Vec<&String> = requests.iter().filter(|(_, i)| *i == origin).map(|(u, _)| u).collect();
    eprintln!("requests initiated by the page: {own:?}");

    // The screenshot.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let target = if target.is_absolute() { target } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(target) };
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let (_, err) = chromium(
        &chromium_bin,
        &dir.path().join("chromium-shot"),
        &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".into()],
        &url,
    );
    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}\nstderr:\n{err}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "not a plausible PNG ({} bytes)", png.len());
    println!("status page screenshot: {}", shot.display());
    eprintln!("status page screenshot: {}", shot.display());
}
