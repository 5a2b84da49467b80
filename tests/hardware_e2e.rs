//! The gateway's own radios and meters, end to end: an SX127x register model on the daemon's SPI
//! path, a scripted RAK3172 on a real pseudo-terminal, and SML meter bytes on a real pseudo-terminal,
//! each ending as a reading on a real MQTT broker.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use district_gateway::config;
use district_gateway::io::serial_lora::script::ScriptedModule;
use district_gateway::io::serial_lora::ModuleKind;
use district_gateway::io::sx127x::Sx127xModel;
use district_gateway::runtime::{Daemon, Hardware};
use district_gateway::sim::SimDevice;

fn vectors() -> PathBuf {
    common::vectors_dir()
}

fn base_config(dir: &std::path::Path, gw: &str, broker: u16) -> String {
    format!(
        "[gateway]\nid = \"{gw}\"\ndata_dir = \"{}\"\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\n",
        dir.join("data").display()
    )
}

/// The brocaar "hello" frame from the public vectors: DevAddr 01020304, FCnt 1, FPort 1.
const HELLO_PHY: &str = "400403020180010001a694642615d6c3b582";
const HELLO_DEVICE: &str = "[[device]]\nname = \"vec-dev\"\ndev_addr = \"01020304\"\nnwk_s_key = \"02020202020202020202020202020202\"\napp_s_key = \"01010101010101010101010101010101\"\nclass = \"C\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_received_by_the_sx127x_model_becomes_a_reading_and_class_c_downlinks_go_out_on_the_chip() {
    let broker = common::Broker::start();
    let port = broker.port;
    let sub = tokio::task::spawn_blocking(move || common::Subscriber::start(port, "city/hw-01/#")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[source]]\ntype = \"sx127x\"\nname = \"radio0\"\n{HELLO_DEVICE}",
        base_config(dir.path(), "hw-01", port)
    );
    let cfg = config::parse_str(&text, "hw.toml", dir.path()).unwrap();
    let model = Sx127xModel::new();
    let mut hw = Hardware::default();
    hw.sx127x.insert("radio0".into(), model.clone());
    let daemon = Daemon::start_with(&cfg, hw).await.unwrap();

    let m = model.clone();
    let listening =
        tokio::task::spawn_blocking(move || common::wait_until(Duration::from_secs(10), || m.is_listening()))
            .await
            .unwrap();
    assert!(listening, "the driver put the chip into continuous receive");
    assert!(model.inject_rx(&hex::decode(HELLO_PHY).unwrap(), -97.0, 7.5));
    let readings = tokio::task::spawn_blocking(move || {
        common::wait_until(Duration::from_secs(10), || !sub.readings().is_empty());
        sub.readings()
    })
    .await
    .unwrap();
    assert_eq!(readings.len(), 1);
    let r = &readings[0];
    assert_eq!(r["device"], "vec-dev");
    assert_eq!(r["lorawan"]["payload_hex"], "68656c6c6f");
    assert_eq!(r["lorawan"]["f_cnt"], 1);
    assert_eq!(r["lorawan"]["freq_hz"], 868_100_000u64);
    let rssi = r["lorawan"]["rssi"].as_i64().unwrap();
    assert!((-99..=-95).contains(&rssi), "RSSI from the chip's registers: {rssi}");

    // A class C downlink for the device leaves through the same chip, on RX2 parameters.
    daemon.enqueue_downlink("vec-dev", 10, &[42], false).await.unwrap();
    let m = model.clone();
    let sent =
        tokio::task::spawn_blocking(move || common::wait_until(Duration::from_secs(5), || !m.transmitted().is_empty()))
            .await
            .unwrap();
    assert!(sent, "the chip transmitted");
    let tx = &model.transmitted()[0];
    // Frf has a 61.035 Hz step: the register value is the nearest one to 869.525 MHz.
    assert!(tx.freq_hz.abs_diff(869_525_000) < 62, "RX2 frequency, got {}", tx.freq_hz);
    assert_eq!(tx.sf, 12);
    daemon.stop().await;
}

#[test]
fn sml_bytes_on_a_pty_become_meter_readings_with_the_meters_own_values() {
    let broker = common::Broker::start();
    let sub = common::Subscriber::start(broker.port, "city/meter-01/#");
    let dir = tempfile::tempdir().unwrap();
    let (mut master, slave) = common::openpty();
    let text = format!(
        "{}[[source]]\ntype = \"sml\"\nport = \"{}\"\ndevice = \"feeder-meter\"\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:{}\"\n",
        base_config(dir.path(), "meter-01", broker.port),
        slave.display(),
        common::free_udp_port()
    );
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // The DZG meter with the firmware bug: decode what it sends (-299.12 W), garbage in between.
    let dump = std::fs::read(vectors().join("sml/libsml-testing/DZG_DVS-7412.2_jmberg.bin")).unwrap();
    // Garbage first, then the dump in small chunks: the framer must resynchronise.
    master.write_all(&[0x00, 0x1b, 0x42, 0x1b, 0x1b, 0xff, 0x10]).unwrap();
    for chunk in dump.chunks(7) {
        master.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let ok = common::wait_until(Duration::from_secs(10), || !sub.readings().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no meter reading arrived");
    let r = &sub.readings()[0];
    assert_eq!(r["device"], "feeder-meter");
    assert_eq!(r["profile"], "sml");
    assert!(r.get("lorawan").is_none(), "no lorawan block for a meter");
    assert_eq!(r["metrics"]["power_w"].as_f64().unwrap(), -299.12);
    assert_eq!(r["metrics"]["energy_import_wh"].as_f64().unwrap(), 5430157.7);
    assert_eq!(r["metrics"]["energy_export_wh"].as_f64().unwrap(), 26244572.6);
}

#[test]
fn a_scripted_rak3172_on_a_pty_delivers_frames_that_become_readings() {
    let broker = common::Broker::start();
    let sub = common::Subscriber::start(broker.port, "city/rak-01/#");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyRAK");
    let module = ScriptedModule::spawn(ModuleKind::Rak3172, &link).unwrap();
    let mut dev = SimDevice::numbered("soil", 4, "raw");
    let text = format!(
        "{}[[source]]\ntype = \"serial_lora\"\nmodule = \"rak3172\"\nport = \"{}\"\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:{}\"\n{}",
        base_config(dir.path(), "rak-01", broker.port),
        link.display(),
        common::free_udp_port(),
        dev.config_toml()
    );
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(15), || module.is_listening()),
        "the daemon initialised the module into P2P receive"
    );
    let phy = dev.uplink(b"moist");
    assert!(module.inject_frame(&phy, -88, 6));
    let ok = common::wait_until(Duration::from_secs(10), || !sub.readings().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no reading from the serial module");
    let r = &sub.readings()[0];
    assert_eq!(r["device"], dev.name);
    assert_eq!(r["lorawan"]["payload_hex"], hex::encode("moist"));
    assert_eq!(r["lorawan"]["rssi"], -88);
    module.close();
}
