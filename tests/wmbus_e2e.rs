//! Wireless M-Bus end to end: a scripted iM871A and a scripted AMB8465 on real pseudo-terminals, the
//! real daemon (a child process) initialising them, telegrams becoming readings on a real MQTT broker.
//! Privacy by default: a meter that is not configured is counted on /metrics by manufacturer and
//! type, never published, and its id is nowhere in the daemon's log (at trace level). A configured
//! meter with the wrong key gives no reading, only a count. Unplugging the stick (closing the pty)
//! and plugging it in again makes the daemon initialise it again.

mod common;

use std::path::Path;
use std::time::Duration;

use district_gateway::io::wmbus::script::ScriptedStick;
use district_gateway::wmbus_stick::StickKind;

/// A plaintext water meter telegram (no encryption, config word 0): KAM, id 12345678, version 0x1B,
/// type water, access number 0x42; one record 04 13 = volume 1234 l.
const OUR_METER: &str = "14442D2C785634121B077A420000000413D2040000";
/// The same shape from someone else's meter: DME, id 87654321, water.
const FOREIGN_METER: &str = "1444A511214365871B077A420000000413D2040000";
const FOREIGN_ID: &str = "87654321";
/// An encrypted (security mode 5) telegram of wmbusmeters' driver tests (kadenwater), with its key.
const ENCRYPTED: &str = "4e448e2c1782221901077ab5004005339341ab7927f9337cd2175b2f0d12";
const ENCRYPTED_KEY: &str = "82B0551191F51D66EFCDAB8967452301";

fn encrypted_telegram() -> Vec<u8> {
    let cases: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::vectors_dir().join("wmbus/wmbusmeters_driver_tests.json")).unwrap(),
    )
    .unwrap();
    let hex = cases
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["telegrams"][0].as_str())
        .find(|t| t.to_ascii_lowercase().starts_with(ENCRYPTED))
        .expect("the kadenwater case is in the vectors");
    hex::decode(hex).unwrap()
}

fn config(dir: &Path, gw: &str, broker: u16, http: u16, source: &str, devices: &str) -> String {
    format!(
        "[gateway]\nid = \"{gw}\"\ndata_dir = \"{}\"\nlog_level = \"trace\"\n[ops]\nhttp_bind = \"127.0.0.1:{http}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n\
         [buffer]\n{}\n{source}\n{devices}",
        dir.join("data").display(),
        common::TEST_BUFFER
    )
}

fn wmbus_source(link: &Path, stick: &str) -> String {
    format!(
        "[[source]]\ntype = \"wmbus\"\nname = \"wmbus\"\nstick = \"{stick}\"\nmode = \"t1\"\nport = \"{}\"\n\
         device_poll_ms = 50\nbackoff_min_ms = 100\nbackoff_max_ms = 500\nreply_timeout_ms = 2000\n\
         idle_probe_ms = 300\n",
        link.display()
    )
}

const METER_DEVICES: &str = "[[device]]\nname = \"water-1\"\nprofile = \"wmbus\"\nwmbus_id = \"12345678\"\nmanufacturer = \"KAM\"\nmax_silence_s = 3600\n";

struct Run {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Run {
    fn start(dir: &Path, text: &str) -> Run {
        let cfg = dir.join("gateway.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(district_gateway_bin())
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "config refused: {}", String::from_utf8_lossy(&out.stderr));
        let log = dir.join("daemon.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(district_gateway_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "trace,rumqttc=info,sled=info,rumqttd=info")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Run { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn district_gateway_bin() -> &'static str {
    common::BIN
}

fn metrics(http: u16) -> String {
    common::http::http_get(http, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

#[test]
fn im871a_telegrams_become_readings_foreign_meters_are_only_counted_and_replug_reinits() {
    let broker = common::Broker::start();
    let sub = common::Subscriber::start(broker.port, "city/wmbus-gw/#");
    assert!(sub.wait_subscribed(Duration::from_secs(10)));
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyIM871A");
    let stick = ScriptedStick::spawn(StickKind::Im871a, &link).unwrap();
    let http = common::free_port();
    let devices = format!(
        "{METER_DEVICES}[[device]]\nname = \"water-enc\"\nprofile = \"wmbus\"\nwmbus_id = \"19228217\"\naes_key = \"{ENCRYPTED_KEY}\"\n\
         [[device]]\nname = \"water-wrong-key\"\nprofile = \"wmbus\"\nwmbus_id = \"56544919\"\naes_key = \"000102030405060708090A0B0C0D0E0F\"\n"
    );
    let run = Run::start(
        dir.path(),
        &config(dir.path(), "wmbus-gw", broker.port, http, &wmbus_source(&link, "im871a"), &devices),
    );
    assert!(
        common::wait_until(Duration::from_secs(20), || stick.inits() >= 1),
        "the daemon initialised the stick; log:\n{}",
        run.log()
    );
    // The init sequence: a ping, then SET_CONFIG with link mode T1 (code 3) and RSSI attached.
    let cmds = stick.commands();
    assert_eq!(cmds[0], vec![0xA5, 0x01, 0x01, 0x00], "ping first");
    assert_eq!(&cmds[1][..4], &[0xA5, 0x01, 0x03, 0x05]);
    assert_eq!(stick.mode(), Some(3));

    stick.inject_bytes(&[0x00, 0x42, 0x17]); // noise on the line
    assert!(stick.inject_telegram(&hex::decode(FOREIGN_METER).unwrap(), 180));
    assert!(stick.inject_telegram(&hex::decode(OUR_METER).unwrap(), 205));
    assert!(stick.inject_telegram(&encrypted_telegram(), 150));
    // picoflux 56544919 (encrypted) with a wrong key: no reading, a count.
    let wrong = "6e446d141949545605077adf0060055ad21c5cafec3a71c0720754f2ca77";
    let picoflux = {
        let cases: serde_json::Value = serde_json::from_slice(
            &std::fs::read(common::vectors_dir().join("wmbus/wmbusmeters_driver_tests.json")).unwrap(),
        )
        .unwrap();
        let t = cases
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["telegrams"][0].as_str())
            .find(|t| t.to_ascii_lowercase().starts_with(wrong))
            .unwrap()
            .to_string();
        hex::decode(t).unwrap()
    };
    assert!(stick.inject_telegram(&picoflux, 150));

    let got = common::wait_until(Duration::from_secs(15), || {
        let r = sub.readings();
        r.iter().any(|r| r["device"] == "water-1") && r.iter().any(|r| r["device"] == "water-enc")
    });
    assert!(got, "readings {:?}\nlog:\n{}", sub.readings(), run.log());
    let readings = sub.readings();
    let ours = readings.iter().find(|r| r["device"] == "water-1").unwrap();
    assert_eq!(ours["profile"], "wmbus");
    assert_eq!(ours["wmbus"]["id"], "12345678");
    assert_eq!(ours["wmbus"]["manufacturer"], "KAM");
    assert_eq!(ours["wmbus"]["version"], 0x1B);
    assert_eq!(ours["wmbus"]["type"], "water");
    assert_eq!(ours["wmbus"]["access_number"], 0x42);
    assert_eq!(ours["wmbus"]["rssi"], -20, "RSSI byte 205 is −20 dBm on the iM871A");
    assert!(ours.get("lorawan").is_none());
    assert!((ours["metrics"]["volume_m3"].as_f64().unwrap() - 1.234).abs() < 1e-9, "{ours}");
    let enc = readings.iter().find(|r| r["device"] == "water-enc").unwrap();
    assert_eq!(enc["wmbus"]["id"], "19228217");
    assert!((enc["metrics"]["volume_m3"].as_f64().unwrap() - 81.0976).abs() < 1e-6, "{enc}");
    assert!(readings.iter().all(|r| r["device"] != "water-wrong-key"), "a wrong key gives no reading");

    // The foreign meter and the wrong key: counted, by manufacturer/type and by device.
    let counted = common::wait_until(Duration::from_secs(10), || {
        let m = metrics(http);
        m.contains("wmbus_foreign_total{manufacturer=\"DME\",type=\"water\"} 1")
            && m.contains("wmbus_decode_failures_total{device=\"water-wrong-key\"} 1")
    });
    assert!(counted, "metrics:\n{}", metrics(http));
    // Never published, never logged with its id (the log is at trace level).
    let all: String = sub.readings().iter().map(|r| r.to_string()).collect();
    assert!(!all.contains(FOREIGN_ID));
    assert!(!run.log().contains(FOREIGN_ID), "the foreign meter's id is in the log");
    assert!(!run.log().to_ascii_lowercase().contains("000102030405060708090a0b0c0d0e0f"), "a key is in the log");
    assert!(!run.log().to_ascii_lowercase().contains(&ENCRYPTED_KEY.to_ascii_lowercase()), "a key is in the log");
    let status = common::http::http_get(http, "/").map(|(_, b)| b).unwrap_or_default();
    assert!(status.contains("Other wM-Bus meters") && !status.contains(FOREIGN_ID), "{status}");

    // Unplug: the pty closes and the link goes away (a pty's hang-up is seen when the quiet stick's
    // probe goes unanswered, `idle_probe_ms`); plug in again: the daemon re-initialises.
    stick.close();
    std::thread::sleep(Duration::from_millis(300));
    let stick = ScriptedStick::spawn(StickKind::Im871a, &link).unwrap();
    assert!(
        common::wait_until(Duration::from_secs(20), || stick.inits() >= 1),
        "re-initialised after replug; log:\n{}",
        run.log()
    );
    let before = sub.readings().iter().filter(|r| r["device"] == "water-1").count();
    assert!(stick.inject_telegram(&hex::decode(OUR_METER).unwrap(), 205));
    assert!(
        common::wait_until(Duration::from_secs(15), || sub
            .readings()
            .iter()
            .filter(|r| r["device"] == "water-1")
            .count()
            > before),
        "a reading after the replug"
    );
    stick.close();
}

#[test]
fn amb8465_telegrams_become_readings_and_foreign_meters_are_not_published() {
    let broker = common::Broker::start();
    let sub = common::Subscriber::start(broker.port, "city/amber-gw/#");
    assert!(sub.wait_subscribed(Duration::from_secs(10)));
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyAMB");
    let stick = ScriptedStick::spawn(StickKind::Amb8465, &link).unwrap();
    let http = common::free_port();
    let source = wmbus_source(&link, "amb8465").replace("mode = \"t1\"", "mode = \"c1\"");
    let run = Run::start(dir.path(), &config(dir.path(), "amber-gw", broker.port, http, &source, METER_DEVICES));
    assert!(common::wait_until(Duration::from_secs(20), || stick.inits() >= 1), "init; log:\n{}", run.log());
    // Serial number (are you there), RSSI on (CMD_SET_REQ), then the mode: C1 = 0x0E.
    let cmds = stick.commands();
    assert_eq!(cmds[0], vec![0xFF, 0x0B, 0x00, 0xF4]);
    assert_eq!(&cmds[1][..3], &[0xFF, 0x09, 0x03]);
    assert_eq!(stick.mode(), Some(0x0E));
    assert!(stick.inject_telegram(&hex::decode(FOREIGN_METER).unwrap(), 0x20));
    assert!(stick.inject_telegram(&hex::decode(OUR_METER).unwrap(), 0xC4));
    assert!(
        common::wait_until(Duration::from_secs(15), || !sub.readings().is_empty()),
        "no reading; log:\n{}",
        run.log()
    );
    let counted = common::wait_until(Duration::from_secs(10), || {
        metrics(http).contains("wmbus_foreign_total{manufacturer=\"DME\",type=\"water\"} 1")
    });
    assert!(counted, "{}", metrics(http));
    let readings = sub.readings();
    assert_eq!(readings.len(), 1, "only the configured meter: {readings:?}");
    let r = &readings[0];
    assert_eq!(r["device"], "water-1");
    assert_eq!(r["wmbus"]["rssi"], -30 - 74, "RSSI byte 0xC4 on the AMB8465");
    assert!((r["metrics"]["volume_m3"].as_f64().unwrap() - 1.234).abs() < 1e-9, "{r}");
    assert!(!run.log().contains(FOREIGN_ID));
    stick.close();
}
