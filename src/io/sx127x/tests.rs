//! The driver and its task against the register-level model.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::ingest::RadioFrame;

fn fast_cfg() -> Sx127xConfig {
    Sx127xConfig {
        name: "radio0".into(),
        health_interval_ms: 25,
        backoff_min_ms: 10,
        backoff_max_ms: 80,
        ..Sx127xConfig::default()
    }
}

struct Rig {
    model: Sx127xModel,
    frames: mpsc::Receiver<RadioFrame>,
    tx: mpsc::Sender<TxRequest>,
    status: Arc<SourceStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(model: Sx127xModel, cfg: Sx127xConfig) -> Rig {
    let (out, frames) = mpsc::channel(64);
    let (tx, tx_rx) = mpsc::channel(8);
    let status = SourceStatus::new("radio0", "sx127x");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_sx127x(cfg, model.factory(), out, tx_rx, status.clone(), shutdown));
    Rig { model, frames, tx, status, stop, task }
}

impl Rig {
    async fn next_frame(&mut self) -> RadioFrame {
        tokio::time::timeout(Duration::from_secs(2), self.frames.recv())
            .await
            .expect("a frame within 2 s")
            .expect("channel open")
    }

    async fn wait(&self, what: &str, f: impl Fn(&StatusSnapshot) -> bool) {
        for _ in 0..400 {
            if f(&self.status.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}: {:?}", self.status.snapshot());
    }

    /// Until the driver has read and cleared the IRQ flags (a real chip needs airtime between two
    /// packets anyway).
    async fn serviced(&self) {
        for _ in 0..400 {
            if self.model.register(regs::REG_IRQ_FLAGS) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("IRQ flags never cleared: {:#x}", self.model.register(regs::REG_IRQ_FLAGS));
    }

    async fn listening(&self) {
        assert!(self.model.wait_listening(Duration::from_secs(2)).await, "chip never listening");
        self.wait("up", |s| s.state == SourceState::Up).await;
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(2), self.task).await.expect("task stops").expect("no panic");
    }
}

#[tokio::test]
async fn receives_injected_frames_with_rssi_and_snr() {
    let mut rig = start(Sx127xModel::new(), fast_cfg());
    rig.listening().await;
    // Initialisation went through NRESET and left the chip as LoRaWAN needs it.
    assert_eq!(rig.model.hw_resets(), 1);
    assert_eq!(rig.model.register(regs::REG_SYNC_WORD), 0x34);
    assert_eq!(rig.model.register(regs::REG_OP_MODE), 0x85);
    assert_eq!(rig.model.register(regs::REG_MODEM_CONFIG1), 0x72);
    assert_eq!(rig.model.register(regs::REG_MODEM_CONFIG2), 0x74);
    assert_eq!(rig.model.register(regs::REG_DIO_MAPPING1) & regs::DIO0_MASK, regs::DIO0_RX_DONE);

    let cases: [(&[u8], f64, f64); 4] = [
        (&[0x40, 1, 2, 3, 4, 0x80, 0, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD], -80.0, 7.5),
        (&[0x40, 9, 9, 9, 9, 0x00, 1, 0], -118.0, -7.25),
        (&[0x80; 51], -35.0, 9.75),
        (&[0x40, 0x11, 0x22], -127.0, -15.0),
    ];
    for (phy, rssi, snr) in cases {
        assert!(rig.model.inject_rx(phy, rssi, snr));
        let f = rig.next_frame().await;
        assert_eq!(f.phy, phy);
        assert_eq!(f.rssi, Some(rssi as i32), "rssi for {rssi}/{snr}");
        assert_eq!(f.snr, Some(snr));
        assert_eq!(f.freq_hz, 868_100_000);
        assert_eq!(f.sf, Some(7));
    }
    let snap = rig.status.snapshot();
    assert_eq!(snap.frames, 4);
    assert_eq!(snap.errors, 0);
    rig.stop().await;
}

#[tokio::test]
async fn frames_off_channel_or_with_another_sync_word_are_not_heard() {
    let rig = start(Sx127xModel::new(), fast_cfg());
    rig.listening().await;
    let other_sf = Air { sf: 9, ..Air::default() };
    assert!(matches!(rig.model.inject(&other_sf, &[1, 2, 3], -90.0, 3.0), Err(Missed::WrongModulation { .. })));
    let private = Air { sync_word: 0x12, ..Air::default() };
    assert_eq!(rig.model.inject(&private, &[1, 2, 3], -90.0, 3.0), Err(Missed::WrongSyncWord(0x34)));
    let downlink = Air { iq_inverted: true, ..Air::default() };
    assert_eq!(rig.model.inject(&downlink, &[1, 2, 3], -90.0, 3.0), Err(Missed::WrongIq));
    rig.stop().await;
}

#[tokio::test]
async fn crc_and_header_errors_are_dropped_and_counted() {
    let mut rig = start(Sx127xModel::new(), fast_cfg());
    rig.listening().await;
    assert!(rig.model.inject_crc_error(&[0x40, 0xDE, 0xAD]));
    rig.serviced().await;
    assert!(rig.model.inject_header_error());
    rig.serviced().await;
    assert!(rig.model.inject_rx_without_crc(&[0x40, 0x01]));
    rig.serviced().await;
    assert!(rig.model.inject_rx(&[0x40, 0x42], -70.0, 8.0));
    let f = rig.next_frame().await;
    assert_eq!(f.phy, vec![0x40, 0x42], "only the good frame comes through");
    rig.wait("error counters", |s| s.crc_errors == 1 && s.header_errors == 2).await;
    let snap = rig.status.snapshot();
    assert_eq!(snap.frames, 1);
    assert_eq!(snap.restarts, 0, "bad frames do not reset the chip");
    assert!(rig.frames.try_recv().is_err());
    rig.stop().await;
}

#[tokio::test]
async fn chip_reset_mid_stream_is_detected_and_recovered() {
    let mut rig = start(Sx127xModel::new(), fast_cfg());
    rig.listening().await;
    assert!(rig.model.inject_rx(&[0x40, 1], -60.0, 9.0));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 1]);

    rig.model.simulate_reset(); // brown-out: back to FSK standby, LoRa settings gone
    assert!(!rig.model.inject_rx(&[0x40, 2], -60.0, 9.0), "a reset chip hears nothing");
    rig.wait("restart", |s| s.restarts >= 1).await;
    rig.listening().await;
    assert!(rig.model.hw_resets() >= 2, "recovery pulses NRESET again");
    assert_eq!(rig.model.register(regs::REG_SYNC_WORD), 0x34);

    assert!(rig.model.inject_rx(&[0x40, 3], -61.0, 8.0));
    let f = rig.next_frame().await;
    assert_eq!(f.phy, vec![0x40, 3]);
    let snap = rig.status.snapshot();
    assert!(snap.last_error.as_deref().unwrap_or("").contains("lost its configuration"), "{snap:?}");
    rig.stop().await;
}

#[tokio::test]
async fn chip_that_stops_answering_goes_down_and_comes_back() {
    let mut rig = start(Sx127xModel::without_reset_pin(), fast_cfg());
    rig.listening().await;
    rig.model.set_absent(true);
    rig.wait("down", |s| s.state != SourceState::Up).await;
    rig.wait("version error", |s| s.last_error.as_deref().unwrap_or("").contains("RegVersion reads 0x00")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(rig.status.state(), SourceState::Up, "stays down while the chip is gone");
    rig.model.set_absent(false);
    rig.listening().await;
    assert!(rig.model.inject_rx(&[0x40, 7], -99.0, -1.0));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 7]);
    assert_eq!(rig.model.hw_resets(), 0, "no reset pin on this board: software re-init");
    rig.stop().await;
}

#[tokio::test]
async fn lost_interrupts_are_polled_then_the_chip_is_reinitialised() {
    let cfg = Sx127xConfig { missed_irq_limit: 2, ..fast_cfg() };
    let mut rig = start(Sx127xModel::new(), cfg);
    rig.listening().await;
    rig.model.set_dio0_broken(true);
    assert!(rig.model.inject_rx(&[0x40, 0x10], -80.0, 5.0));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x10], "found by the health check");
    assert_eq!(rig.status.snapshot().restarts, 0);
    rig.model.inject_rx(&[0x40, 0x11], -80.0, 5.0);
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x11]);
    rig.wait("re-init after 2 missed interrupts", |s| s.restarts >= 1).await;
    rig.model.set_dio0_broken(false);
    rig.listening().await;
    assert!(rig.model.inject_rx(&[0x40, 0x12], -80.0, 5.0));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x12]);
    rig.stop().await;
}

#[tokio::test]
async fn transmit_writes_fifo_and_registers_then_returns_to_receive() {
    let mut rig = start(Sx127xModel::new(), fast_cfg());
    rig.listening().await;
    let phy: Vec<u8> = (0u8..23).collect();
    let (req, report) = TxRequest::downlink(phy.clone(), 869_525_000, 9, 125).with_report();
    rig.tx.send(req).await.expect("task alive");
    let r = tokio::time::timeout(Duration::from_secs(2), report).await.expect("reported").expect("sender kept");
    let r = r.expect("transmitted");
    assert_eq!(r.airtime_us, regs::time_on_air_us(23, 9, 125, 5, 8, false));

    let sent = rig.model.transmitted();
    assert_eq!(sent.len(), 1);
    let t = &sent[0];
    assert_eq!(t.payload, phy);
    assert!(t.freq_hz.abs_diff(869_525_000) <= 31, "{}", t.freq_hz);
    assert_eq!((t.sf, t.bw_khz, t.cr_denominator), (9, Some(125), 5));
    assert!(!t.implicit_header);
    assert!(!t.crc, "LoRaWAN downlinks carry no payload CRC");
    assert!(t.iq_inverted, "downlinks are sent with inverted IQ: {:#x}/{:#x}", t.invert_iq_reg, t.invert_iq2_reg);
    assert_eq!(t.sync_word, 0x34);
    assert_eq!(t.preamble, 8);
    assert_eq!(t.power_dbm, 14.0);
    assert!(t.pa_config & regs::PA_SELECT_BOOST != 0);

    // Back on the uplink channel, normal IQ, DIO0 = RxDone: the next uplink is heard.
    rig.listening().await;
    assert_eq!(rig.model.register(regs::REG_INVERT_IQ), regs::INVERT_IQ_NORMAL);
    assert_eq!(rig.model.register(regs::REG_DIO_MAPPING1) & regs::DIO0_MASK, regs::DIO0_RX_DONE);
    assert!(rig.model.inject_rx(&[0x40, 0x55], -75.0, 6.0));
    assert_eq!(rig.next_frame().await.phy, vec![0x40, 0x55]);

    // 20 dBm on PA_BOOST needs the high-power DAC; an invalid request is refused without touching the chip.
    let mut req = TxRequest::downlink(vec![0x60, 1, 2], 868_100_000, 12, 125);
    req.power_dbm = Some(20);
    let (req, report) = req.with_report();
    rig.tx.send(req).await.expect("task alive");
    assert!(report.await.expect("reported").is_ok());
    let t = rig.model.transmitted().pop().expect("second tx");
    assert_eq!((t.pa_dac, t.power_dbm, t.sf, t.low_data_rate_optimize), (regs::PA_DAC_20DBM, 20.0, 12, true));
    let (bad, report) = TxRequest::downlink(vec![1], 868_100_000, 6, 125).with_report();
    rig.tx.send(bad).await.expect("task alive");
    assert!(matches!(report.await.expect("reported"), Err(TxError::Invalid(_))));
    assert_eq!(rig.model.transmitted().len(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn hardware_that_cannot_be_opened_is_retried_with_backoff() {
    let model = Sx127xModel::new();
    model.fail_opens(3);
    let mut rig = start(model, fast_cfg());
    rig.listening().await;
    let snap = rig.status.snapshot();
    assert_eq!(snap.restarts, 3);
    assert_eq!(snap.errors, 3);
    assert!(rig.model.inject_rx(&[0x40], -50.0, 10.0));
    rig.next_frame().await;
    rig.stop().await;
}

#[tokio::test]
async fn shutdown_puts_the_chip_to_sleep() {
    let rig = start(Sx127xModel::new(), fast_cfg());
    rig.listening().await;
    let (model, status) = (rig.model.clone(), rig.status.clone());
    rig.stop().await;
    assert_eq!(model.op_mode() & regs::OPMODE_MODE_MASK, regs::MODE_SLEEP);
    assert_eq!(status.state(), SourceState::Stopped);
}

#[test]
fn not_a_pi_says_so() {
    // On the CI host (x86, no /dev/gpiochip of a Pi) rppal cannot identify a Raspberry Pi.
    let is_pi = std::fs::read_to_string("/proc/device-tree/model").map(|m| m.contains("Raspberry")).unwrap_or(false);
    if is_pi {
        return;
    }
    match open_rppal(&Sx127xConfig::default().wiring()) {
        Err(e) => assert_eq!(e.to_string(), "GPIO is not available on this host (not a Raspberry Pi: UnknownModel)"),
        Ok(_) => panic!("rppal opened GPIO on a host that is not a Pi"),
    }
}

#[test]
fn config_keys_and_validation() {
    let cfg: Sx127xConfig = toml::from_str(
        r#"
        name = "roof"
        spi_bus = 0
        spi_cs = 1
        reset_pin = 22
        dio0_pin = 25
        freq_hz = 868300000
        sf = 9
        bw_khz = 125
        cr = 5
        sync_word = 0x34
        "#,
    )
    .expect("parses");
    assert_eq!((cfg.spi_cs, cfg.reset_pin, cfg.dio0_pin, cfg.sf), (1, Some(22), 25, 9));
    assert!(cfg.validate().is_empty());
    assert!(toml::from_str::<Sx127xConfig>("spreading_factor = 7").is_err(), "unknown keys refused");
    let bad = Sx127xConfig { sf: 6, bw_khz: 200, cr: 9, dio0_pin: 17, ..Sx127xConfig::default() };
    let errs = bad.validate();
    assert_eq!(errs.len(), 4, "{errs:?}");
}

#[test]
fn driver_register_traffic_without_the_task() {
    // init + start_rx + one packet, synchronously, against the model.
    let model = Sx127xModel::new();
    let (spi, _pins) = model.hw();
    let mut chip = Sx127x::new(spi);
    chip.init(&ChipSetup { sync_word: 0x34, tx_power_dbm: 14, pa_boost: true }).expect("init");
    let p = ModemParams { freq_hz: 868_500_000, sf: 8, bw_khz: 125, cr: 5, preamble: 8, crc: true, invert_iq: false };
    chip.start_rx(&p).expect("rx");
    assert_eq!(chip.service_rx(true).expect("service"), RxOutcome::Nothing);
    let air = Air { freq_hz: 868_500_000, sf: 8, ..Air::default() };
    model.inject(&air, &[1, 2, 3], -100.0, 2.0).expect("heard");
    model.inject(&air, &[4, 5, 6, 7], -101.0, 1.0).expect("heard");
    // Second packet sits after the first in the FIFO: the driver must follow RegFifoRxCurrentAddr.
    match chip.service_rx(true).expect("service") {
        RxOutcome::Packet(p) => assert_eq!(p.phy, vec![4, 5, 6, 7]),
        other => panic!("{other:?}"),
    }
    assert_eq!(chip.packet_count().expect("count"), 2);
    chip.check_alive(0x34).expect("alive");
    model.simulate_reset();
    assert!(matches!(chip.check_alive(0x34), Err(Sx127xError::ConfigLost { reg: 0x01, .. })));
}
