//! The serial source against scripted modules on real pseudo-terminals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::script::ScriptedModule;
use super::*;
use crate::ingest::RadioFrame;

fn link(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("serial-lora-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ttyLORA")
}

fn fast_cfg(port: &Path, module: ModuleKind) -> SerialLoraConfig {
    SerialLoraConfig {
        name: "lora-usb".into(),
        reply_timeout_ms: 300,
        idle_probe_ms: 250,
        device_poll_ms: 20,
        backoff_min_ms: 20,
        backoff_max_ms: 200,
        ..SerialLoraConfig::new(port, module)
    }
}

struct Rig {
    frames: mpsc::Receiver<RadioFrame>,
    status: Arc<SourceStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(cfg: SerialLoraConfig) -> Rig {
    let (out, frames) = mpsc::channel(64);
    let status = SourceStatus::new("lora-usb", "serial_lora");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_serial_lora(cfg, out, status.clone(), shutdown));
    Rig { frames, status, stop, task }
}

impl Rig {
    async fn next_frame(&mut self) -> RadioFrame {
        tokio::time::timeout(Duration::from_secs(3), self.frames.recv())
            .await
            .expect("a frame within 3 s")
            .expect("channel open")
    }

    async fn wait(&self, what: &str, f: impl Fn(&StatusSnapshot) -> bool) {
        for _ in 0..600 {
            if f(&self.status.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}: {:?}", self.status.snapshot());
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(3), self.task).await.expect("task stops").expect("no panic");
    }
}

async fn listening(m: &ScriptedModule, rig: &Rig) {
    assert!(m.wait_listening(Duration::from_secs(3)).await, "module never listening: {:?}", m.commands());
    rig.wait("up", |s| s.state == SourceState::Up).await;
}

#[tokio::test]
async fn rak3172_delivers_frames() {
    let path = link("rak-frames");
    let m = ScriptedModule::spawn(ModuleKind::Rak3172, &path).expect("pty");
    let mut rig = start(fast_cfg(&path, ModuleKind::Rak3172));
    listening(&m, &rig).await;
    let cmds = m.commands();
    for expected in ["AT+NWM=0", "AT+P2P=868100000:7:125:0:8:14", "AT+SYNCWORD=3444", "AT+IQINVER=0", "AT+PRECV=65534"]
    {
        assert!(cmds.iter().any(|c| c == expected), "{expected} missing from {cmds:?}");
    }
    assert!(m.inject_frame(&[0x40, 1, 2, 3, 4], -36, 9));
    let f = rig.next_frame().await;
    assert_eq!(f.phy, vec![0x40, 1, 2, 3, 4]);
    assert_eq!((f.rssi, f.snr, f.freq_hz, f.sf), (Some(-36), Some(9.0), 868_100_000, Some(7)));
    assert!(m.inject_rx_error());
    assert!(m.inject_frame(&[0x80, 0xFF], -120, -14));
    let f = rig.next_frame().await;
    assert_eq!((f.phy.as_slice(), f.rssi, f.snr), (&[0x80u8, 0xFF][..], Some(-120), Some(-14.0)));
    rig.wait("rx error counted", |s| s.crc_errors == 1).await;
    assert_eq!(rig.status.snapshot().frames, 2);
    rig.stop().await;
    m.close();
}

#[tokio::test]
async fn rn2483_delivers_frames_with_snr_and_rssi() {
    let path = link("rn-frames");
    let m = ScriptedModule::spawn(ModuleKind::Rn2483, &path).expect("pty");
    let cfg = SerialLoraConfig { sf: 9, ..fast_cfg(&path, ModuleKind::Rn2483) };
    let mut rig = start(cfg);
    listening(&m, &rig).await;
    let cmds = m.commands();
    for expected in ["mac pause", "radio set sf sf9", "radio set sync 34", "radio set wdt 0", "radio rx 0"] {
        assert!(cmds.iter().any(|c| c == expected), "{expected} missing from {cmds:?}");
    }
    for (i, (rssi, snr)) in [(-52, 10), (-117, -11), (-90, 0)].into_iter().enumerate() {
        assert!(m.wait_listening(Duration::from_secs(2)).await, "re-armed after each frame");
        assert!(m.inject_frame(&[0x40, i as u8], rssi, snr));
        let f = rig.next_frame().await;
        assert_eq!(f.phy, vec![0x40, i as u8]);
        assert_eq!((f.rssi, f.snr, f.sf), (Some(rssi), Some(f64::from(snr)), Some(9)));
    }
    // radio_err (CRC): counted, receiver re-armed.
    assert!(m.wait_listening(Duration::from_secs(2)).await);
    assert!(m.inject_rx_error());
    assert!(m.wait_listening(Duration::from_secs(2)).await, "re-armed after radio_err");
    rig.wait("rx error counted", |s| s.crc_errors == 1).await;
    rig.stop().await;
    m.close();
}

#[tokio::test]
async fn error_replies_fail_the_init_and_it_is_retried() {
    let path = link("errors");
    let m = ScriptedModule::spawn(ModuleKind::Rak3172, &path).expect("pty");
    m.fail_next("AT+P2P=", "AT_PARAM_ERROR");
    let mut rig = start(fast_cfg(&path, ModuleKind::Rak3172));
    rig.wait("refusal reported", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("refused `AT+P2P=868100000:7:125:0:8:14`: AT_PARAM_ERROR"))
    })
    .await;
    listening(&m, &rig).await;
    assert!(rig.status.snapshot().restarts >= 1);
    assert!(m.inject_frame(&[0x40, 0x99], -70, 5));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x99]);
    rig.stop().await;
    m.close();

    let path = link("errors-rn");
    let m = ScriptedModule::spawn(ModuleKind::Rn2483, &path).expect("pty");
    m.fail_next("radio set bw", "invalid_param");
    let mut rig = start(fast_cfg(&path, ModuleKind::Rn2483));
    rig.wait("refusal reported", |s| s.last_error.as_deref().is_some_and(|e| e.contains("invalid_param"))).await;
    listening(&m, &rig).await;
    assert!(m.inject_frame(&[0x40, 0x98], -70, 5));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x98]);
    rig.stop().await;
    m.close();
}

#[tokio::test]
async fn a_module_that_goes_silent_is_reinitialised() {
    for kind in [ModuleKind::Rak3172, ModuleKind::Rn2483] {
        let path = link(&format!("silent-{}", kind.as_str()));
        let m = ScriptedModule::spawn(kind, &path).expect("pty");
        let mut rig = start(fast_cfg(&path, kind));
        listening(&m, &rig).await;
        assert_eq!(m.configs(), 1);
        m.set_silent(true);
        rig.wait("silence detected", |s| s.state != SourceState::Up).await;
        let snap = rig.status.snapshot();
        assert!(snap.last_error.as_deref().unwrap_or("").contains("did not answer"), "{snap:?}");
        m.set_silent(false);
        listening(&m, &rig).await;
        assert!(m.configs() >= 2, "{kind:?} configured again");
        assert!(rig.status.snapshot().restarts >= 1);
        assert!(m.inject_frame(&[0x40, 0x77], -80, 3));
        assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x77]);
        rig.stop().await;
        m.close();
    }
}

#[tokio::test]
async fn a_pty_that_closes_and_reopens_is_picked_up_again() {
    let path = link("replug");
    let m = ScriptedModule::spawn(ModuleKind::Rn2483, &path).expect("pty");
    let mut rig = start(fast_cfg(&path, ModuleKind::Rn2483));
    listening(&m, &rig).await;
    assert!(m.inject_frame(&[0x40, 1], -60, 7));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 1]);

    m.close(); // unplugged
    rig.wait("waiting for the device", |s| {
        s.state == SourceState::Down && s.last_error.as_deref().is_some_and(|e| e.contains("waiting for"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rig.status.state(), SourceState::Down, "stays down while unplugged");

    let m = ScriptedModule::spawn(ModuleKind::Rn2483, &path).expect("pty"); // plugged in again
    listening(&m, &rig).await;
    assert!(m.inject_frame(&[0x40, 2], -61, 6));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 2]);
    assert!(rig.status.snapshot().restarts >= 1);
    rig.stop().await;
    m.close();
}

#[tokio::test]
async fn a_missing_device_at_start_is_waited_for() {
    let path = link("late");
    let _ = std::fs::remove_file(&path);
    let mut rig = start(fast_cfg(&path, ModuleKind::Rak3172));
    rig.wait("waiting", |s| s.state == SourceState::Down).await;
    let m = ScriptedModule::spawn(ModuleKind::Rak3172, &path).expect("pty");
    listening(&m, &rig).await;
    assert!(m.inject_frame(&[0x40, 5], -66, 4));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 5]);
    rig.stop().await;
    m.close();
}

#[test]
fn config_keys_and_validation() {
    let cfg: SerialLoraConfig = toml::from_str(
        r#"
        name = "rak"
        port = "/dev/serial/by-id/usb-RAK3172"
        module = "rak3172"
        freq_hz = 868300000
        sf = 8
        "#,
    )
    .expect("parses");
    assert_eq!(cfg.module, ModuleKind::Rak3172);
    assert_eq!(cfg.baud(), 115_200);
    assert_eq!((cfg.sf, cfg.bw_khz, cfg.cr, cfg.sync_word), (8, 125, 5, 0x34));
    assert!(cfg.validate().is_empty());
    let rn: SerialLoraConfig = toml::from_str("port = \"/dev/ttyACM0\"\nmodule = \"rn2483\"").expect("parses");
    assert_eq!(rn.baud(), 57_600);
    let bad = SerialLoraConfig { freq_hz: 915_000_000, ..rn };
    assert_eq!(bad.validate().len(), 1, "the RN2483 is an EU868/433 part");
    assert!(toml::from_str::<SerialLoraConfig>("port = \"/dev/x\"\nmodule = \"sx1262\"").is_err());
    assert!(toml::from_str::<SerialLoraConfig>("port = \"/dev/x\"\nmodule = \"rak3172\"\nbaudrate = 9600").is_err());
}
