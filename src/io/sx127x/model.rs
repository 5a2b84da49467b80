//! A register-level model of an SX1276/77/78/79 in LoRa mode, to run the real driver against.
//!
//! Not a stub: it decodes the SPI byte stream (address byte with the write bit, burst access with
//! auto-increment, the FIFO window at 0x00 that walks `RegFifoAddrPtr`), keeps the register file with
//! the datasheet's reset values, enforces that LongRangeMode only changes in Sleep, maintains the FIFO
//! pointers (`RegFifoRxCurrentAddr`, `RegFifoRxByteAddr`, `RegRxNbBytes`), the IRQ flags (masking,
//! write-one-to-clear), the packet/header counters, and drives DIO0 from `RegDioMapping1`. A frame
//! "on the air" is received only if the chip is listening on its channel, spreading factor, bandwidth,
//! sync word and IQ polarity. Entering TX mode transmits `RegPayloadLength` bytes from
//! `RegFifoTxBaseAddr` and records them with the modem settings a receiver would need.
//!
//! Always compiled (the end-to-end tests and the demo use it too).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::regs::*;
use super::spi::{HwError, Pins, SpiBus};

/// A frame on the air: where and how it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Air {
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    pub sync_word: u8,
    /// Uplinks are sent with normal IQ; a gateway listening inverted would not hear them.
    pub iq_inverted: bool,
    /// Whether the sender appended a payload CRC (and announced it in the header).
    pub crc: bool,
}

impl Default for Air {
    /// EU868 channel 0, SF7BW125, LoRaWAN public sync word, normal IQ, CRC on: a typical uplink.
    fn default() -> Self {
        Air {
            freq_hz: 868_100_000,
            sf: 7,
            bw_khz: 125,
            sync_word: SYNC_WORD_LORAWAN_PUBLIC,
            iq_inverted: false,
            crc: true,
        }
    }
}

/// Why an injected frame was not received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed {
    /// Held in reset, unpowered or absent.
    Dead,
    /// Not in LoRa RX mode (RegOpMode shown).
    NotListening(u8),
    WrongFrequency {
        listening_hz: u64,
    },
    WrongModulation {
        sf: u8,
        bw_khz: Option<u32>,
    },
    WrongSyncWord(u8),
    WrongIq,
}

/// A transmission, with the settings the chip had when it went out.
#[derive(Debug, Clone, PartialEq)]
pub struct TxRecord {
    pub payload: Vec<u8>,
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: Option<u32>,
    pub cr_denominator: u8,
    pub implicit_header: bool,
    pub crc: bool,
    pub low_data_rate_optimize: bool,
    /// RegInvertIQ TX bit inverted and RegInvertIQ2 = 0x19, as the chip needs both.
    pub iq_inverted: bool,
    pub invert_iq_reg: u8,
    pub invert_iq2_reg: u8,
    pub sync_word: u8,
    pub preamble: u16,
    pub pa_config: u8,
    pub pa_dac: u8,
    /// Output power in dBm implied by RegPaConfig/RegPaDac.
    pub power_dbm: f64,
}

struct Chip {
    regs: [u8; 0x80],
    fifo: [u8; 256],
    rx_write: u8,
    in_reset: bool,
    absent: bool,
    dio0_broken: bool,
    dio0_level: bool,
    dio0_tx: Option<mpsc::Sender<()>>,
    transmitted: Vec<TxRecord>,
    hw_resets: u32,
    power_resets: u32,
    spi_transactions: u64,
    factory_failures: u32,
}

const READ_ONLY: &[u8] = &[
    REG_FIFO_RX_CURRENT_ADDR,
    REG_RX_NB_BYTES,
    REG_RX_HEADER_CNT_MSB,
    REG_RX_HEADER_CNT_LSB,
    REG_RX_PACKET_CNT_MSB,
    REG_RX_PACKET_CNT_LSB,
    REG_MODEM_STAT,
    REG_PKT_SNR_VALUE,
    REG_PKT_RSSI_VALUE,
    REG_RSSI_VALUE,
    REG_HOP_CHANNEL,
    REG_FIFO_RX_BYTE_ADDR,
    REG_VERSION,
];

impl Chip {
    fn new() -> Self {
        let mut c = Chip {
            regs: [0; 0x80],
            fifo: [0; 256],
            rx_write: 0,
            in_reset: false,
            absent: false,
            dio0_broken: false,
            dio0_level: false,
            dio0_tx: None,
            transmitted: Vec::new(),
            hw_resets: 0,
            power_resets: 0,
            spi_transactions: 0,
            factory_failures: 0,
        };
        c.power_on_reset();
        c
    }

    /// Register values after power-on or NRESET (datasheet table 41/42, LoRa page where it differs).
    fn power_on_reset(&mut self) {
        self.regs = [0; 0x80];
        self.fifo = [0; 256];
        self.rx_write = 0;
        let r = &mut self.regs;
        r[REG_OP_MODE as usize] = 0x09; // FSK/OOK, LowFrequencyModeOn, Standby
        r[REG_FRF_MSB as usize] = 0x6C; // 434 MHz
        r[REG_FRF_MID as usize] = 0x80;
        r[REG_FRF_LSB as usize] = 0x00;
        r[REG_PA_CONFIG as usize] = 0x4F;
        r[0x0A] = 0x09;
        r[REG_OCP as usize] = 0x2B;
        r[REG_LNA as usize] = 0x20;
        r[REG_FIFO_TX_BASE_ADDR as usize] = 0x80;
        r[REG_FIFO_RX_BASE_ADDR as usize] = 0x00;
        r[REG_MODEM_CONFIG1 as usize] = 0x72;
        r[REG_MODEM_CONFIG2 as usize] = 0x70;
        r[REG_SYMB_TIMEOUT_LSB as usize] = 0x64;
        r[REG_PREAMBLE_LSB as usize] = 0x08;
        r[REG_PAYLOAD_LENGTH as usize] = 0x01;
        r[REG_MAX_PAYLOAD_LENGTH as usize] = 0xFF;
        r[REG_DETECT_OPTIMIZE as usize] = DETECT_OPTIMIZE_SF7_12;
        r[REG_INVERT_IQ as usize] = INVERT_IQ_NORMAL;
        r[REG_DETECTION_THRESHOLD as usize] = DETECTION_THRESHOLD_SF7_12;
        r[REG_SYNC_WORD as usize] = 0x12;
        r[REG_INVERT_IQ2 as usize] = INVERT_IQ2_NORMAL;
        r[REG_VERSION as usize] = VERSION_SX127X;
        r[REG_PA_DAC as usize] = PA_DAC_DEFAULT;
        r[REG_RSSI_VALUE as usize] = 37; // about -120 dBm of noise
        self.update_dio0();
    }

    fn reg(&self, addr: u8) -> u8 {
        self.regs[usize::from(addr & 0x7F)]
    }

    fn mode(&self) -> u8 {
        self.reg(REG_OP_MODE) & OPMODE_MODE_MASK
    }

    fn lora(&self) -> bool {
        self.reg(REG_OP_MODE) & OPMODE_LONG_RANGE != 0
    }

    fn alive(&self) -> bool {
        !self.in_reset && !self.absent
    }

    fn frf_hz(&self) -> u64 {
        let frf = (u32::from(self.reg(REG_FRF_MSB)) << 16)
            | (u32::from(self.reg(REG_FRF_MID)) << 8)
            | u32::from(self.reg(REG_FRF_LSB));
        hz_from_frf(frf)
    }

    fn set_irq(&mut self, bits: u8) {
        let unmasked = bits & !self.reg(REG_IRQ_FLAGS_MASK);
        self.regs[REG_IRQ_FLAGS as usize] |= unmasked;
        self.update_dio0();
    }

    fn update_dio0(&mut self) {
        let flags = self.reg(REG_IRQ_FLAGS);
        let level = self.lora()
            && match self.reg(REG_DIO_MAPPING1) & DIO0_MASK {
                DIO0_RX_DONE => flags & IRQ_RX_DONE != 0,
                DIO0_TX_DONE => flags & IRQ_TX_DONE != 0,
                DIO0_CAD_DONE => flags & IRQ_CAD_DONE != 0,
                _ => false,
            };
        if level && !self.dio0_level && !self.dio0_broken {
            if let Some(tx) = &self.dio0_tx {
                let _ = tx.try_send(());
            }
        }
        self.dio0_level = level;
    }

    fn read(&mut self, addr: u8) -> u8 {
        if !self.alive() {
            return 0x00;
        }
        if addr == REG_FIFO {
            if self.mode() == MODE_SLEEP {
                return 0;
            }
            let ptr = self.reg(REG_FIFO_ADDR_PTR);
            self.regs[REG_FIFO_ADDR_PTR as usize] = ptr.wrapping_add(1);
            return self.fifo[usize::from(ptr)];
        }
        self.reg(addr)
    }

    fn write(&mut self, addr: u8, value: u8) {
        if !self.alive() {
            return;
        }
        match addr {
            REG_FIFO => {
                if self.mode() != MODE_SLEEP {
                    let ptr = self.reg(REG_FIFO_ADDR_PTR);
                    self.fifo[usize::from(ptr)] = value;
                    self.regs[REG_FIFO_ADDR_PTR as usize] = ptr.wrapping_add(1);
                }
            }
            REG_OP_MODE => self.write_op_mode(value),
            REG_IRQ_FLAGS => {
                self.regs[REG_IRQ_FLAGS as usize] &= !value;
                self.update_dio0();
            }
            REG_DIO_MAPPING1 => {
                self.regs[REG_DIO_MAPPING1 as usize] = value;
                self.update_dio0();
            }
            a if READ_ONLY.contains(&a) => {}
            a => self.regs[usize::from(a & 0x7F)] = value,
        }
    }

    fn write_op_mode(&mut self, value: u8) {
        let old = self.reg(REG_OP_MODE);
        let old_mode = old & OPMODE_MODE_MASK;
        let mut new = value;
        // LongRangeMode can only be modified in Sleep mode.
        if old_mode != MODE_SLEEP && (old ^ value) & OPMODE_LONG_RANGE != 0 {
            new = (new & !OPMODE_LONG_RANGE) | (old & OPMODE_LONG_RANGE);
        }
        let mode = new & OPMODE_MODE_MASK;
        self.regs[REG_OP_MODE as usize] = new;
        if mode == MODE_SLEEP && old_mode != MODE_SLEEP {
            self.fifo = [0; 256];
        }
        let rx = |m: u8| m == MODE_RX_CONTINUOUS || m == MODE_RX_SINGLE;
        if new & OPMODE_LONG_RANGE != 0 && rx(mode) && !rx(old_mode) {
            // Counters count "since the last transition into Rx mode".
            for r in [REG_RX_HEADER_CNT_MSB, REG_RX_HEADER_CNT_LSB, REG_RX_PACKET_CNT_MSB, REG_RX_PACKET_CNT_LSB] {
                self.regs[r as usize] = 0;
            }
            self.rx_write = self.reg(REG_FIFO_RX_BASE_ADDR);
            self.regs[REG_FIFO_RX_BYTE_ADDR as usize] = self.rx_write;
        }
        if new & OPMODE_LONG_RANGE != 0 && mode == MODE_TX {
            self.transmit();
        }
        self.update_dio0();
    }

    fn transmit(&mut self) {
        let len = usize::from(self.reg(REG_PAYLOAD_LENGTH));
        let base = self.reg(REG_FIFO_TX_BASE_ADDR);
        let payload: Vec<u8> = (0..len).map(|i| self.fifo[usize::from(base.wrapping_add(i as u8))]).collect();
        let mc1 = self.reg(REG_MODEM_CONFIG1);
        let mc2 = self.reg(REG_MODEM_CONFIG2);
        let mc3 = self.reg(REG_MODEM_CONFIG3);
        let pa_config = self.reg(REG_PA_CONFIG);
        let pa_dac = self.reg(REG_PA_DAC);
        let out = f64::from(pa_config & 0x0F);
        let power_dbm = if pa_config & PA_SELECT_BOOST != 0 {
            if pa_dac & 0x07 == 0x07 {
                20.0 - (15.0 - out)
            } else {
                17.0 - (15.0 - out)
            }
        } else {
            let max = 10.8 + 0.6 * f64::from((pa_config >> 4) & 0x07);
            max - (15.0 - out)
        };
        let inv = self.reg(REG_INVERT_IQ);
        let inv2 = self.reg(REG_INVERT_IQ2);
        self.transmitted.push(TxRecord {
            payload,
            freq_hz: self.frf_hz(),
            sf: mc2 >> 4,
            bw_khz: bw_khz_from_code(mc1 >> 4),
            cr_denominator: ((mc1 >> 1) & 0x07) + 4,
            implicit_header: mc1 & 0x01 != 0,
            crc: mc2 & MC2_RX_PAYLOAD_CRC_ON != 0,
            low_data_rate_optimize: mc3 & MC3_LOW_DATA_RATE_OPTIMIZE != 0,
            iq_inverted: inv & 0x01 == 0 && inv2 == INVERT_IQ2_INVERTED,
            invert_iq_reg: inv,
            invert_iq2_reg: inv2,
            sync_word: self.reg(REG_SYNC_WORD),
            preamble: u16::from_be_bytes([self.reg(REG_PREAMBLE_MSB), self.reg(REG_PREAMBLE_LSB)]),
            pa_config,
            pa_dac,
            power_dbm,
        });
        // The chip returns to Standby when the packet is out, and raises TxDone.
        self.regs[REG_OP_MODE as usize] = (self.reg(REG_OP_MODE) & !OPMODE_MODE_MASK) | MODE_STDBY;
        self.set_irq(IRQ_TX_DONE);
    }

    fn spi(&mut self, write: &[u8], read: &mut [u8]) {
        self.spi_transactions += 1;
        if let Some(r) = read.first_mut() {
            *r = 0;
        }
        let Some(&first) = write.first() else { return };
        let is_write = first & SPI_WRITE != 0;
        let mut addr = first & 0x7F;
        for (i, &byte) in write.iter().enumerate().skip(1) {
            if is_write {
                self.write(addr, byte);
                if let Some(r) = read.get_mut(i) {
                    *r = 0;
                }
            } else if let Some(r) = read.get_mut(i) {
                *r = self.read(addr);
            }
            // Burst access: the address increments, except on the FIFO.
            if addr != REG_FIFO {
                addr = (addr + 1) & 0x7F;
            }
        }
    }

    fn receive(
        &mut self,
        air: &Air,
        phy: &[u8],
        rssi_dbm: f64,
        snr_db: f64,
        corrupt: Corruption,
    ) -> Result<(), Missed> {
        if !self.alive() {
            return Err(Missed::Dead);
        }
        let mode = self.mode();
        if !self.lora() || !(mode == MODE_RX_CONTINUOUS || mode == MODE_RX_SINGLE) {
            return Err(Missed::NotListening(self.reg(REG_OP_MODE)));
        }
        let listening_hz = self.frf_hz();
        if listening_hz.abs_diff(air.freq_hz) > 100 {
            return Err(Missed::WrongFrequency { listening_hz });
        }
        let sf = self.reg(REG_MODEM_CONFIG2) >> 4;
        let bw = bw_khz_from_code(self.reg(REG_MODEM_CONFIG1) >> 4);
        if sf != air.sf || bw != Some(air.bw_khz) {
            return Err(Missed::WrongModulation { sf, bw_khz: bw });
        }
        let sync = self.reg(REG_SYNC_WORD);
        if sync != air.sync_word {
            return Err(Missed::WrongSyncWord(sync));
        }
        if (self.reg(REG_INVERT_IQ) & 0x40 != 0) != air.iq_inverted {
            return Err(Missed::WrongIq);
        }
        let len = phy.len().min(usize::from(self.reg(REG_MAX_PAYLOAD_LENGTH)));
        let start = self.rx_write;
        for (i, b) in phy.iter().take(len).enumerate() {
            self.fifo[usize::from(start.wrapping_add(i as u8))] = *b;
        }
        self.rx_write = start.wrapping_add(len as u8);
        self.regs[REG_FIFO_RX_CURRENT_ADDR as usize] = start;
        self.regs[REG_FIFO_RX_BYTE_ADDR as usize] = self.rx_write;
        self.regs[REG_RX_NB_BYTES as usize] = len as u8;
        // PacketSnr in quarter dB; PacketRssi per datasheet 5.5.5 (inverse of the driver's formula).
        let snr_q = (snr_db * 4.0).round().clamp(-128.0, 127.0) as i8;
        let offset = if listening_hz < LF_HF_THRESHOLD_HZ { RSSI_OFFSET_LF } else { RSSI_OFFSET_HF };
        let raw = if snr_q < 0 {
            rssi_dbm - f64::from(offset) - f64::from(snr_q) / 4.0
        } else {
            (rssi_dbm - f64::from(offset)) * 15.0 / 16.0
        };
        self.regs[REG_PKT_SNR_VALUE as usize] = snr_q as u8;
        self.regs[REG_PKT_RSSI_VALUE as usize] = raw.round().clamp(0.0, 255.0) as u8;
        let mut hop = self.reg(REG_HOP_CHANNEL) & !HOP_CHANNEL_CRC_ON_PAYLOAD;
        if air.crc {
            hop |= HOP_CHANNEL_CRC_ON_PAYLOAD;
        }
        self.regs[REG_HOP_CHANNEL as usize] = hop;
        let mut irq = IRQ_RX_DONE;
        match corrupt {
            Corruption::None => irq |= IRQ_VALID_HEADER,
            Corruption::PayloadCrc => irq |= IRQ_VALID_HEADER | IRQ_PAYLOAD_CRC_ERROR,
            Corruption::Header => {}
        }
        if irq & IRQ_VALID_HEADER != 0 {
            bump16(&mut self.regs, REG_RX_HEADER_CNT_MSB);
        }
        if corrupt == Corruption::None {
            bump16(&mut self.regs, REG_RX_PACKET_CNT_MSB);
        }
        if mode == MODE_RX_SINGLE {
            self.regs[REG_OP_MODE as usize] = (self.reg(REG_OP_MODE) & !OPMODE_MODE_MASK) | MODE_STDBY;
        }
        self.set_irq(irq);
        Ok(())
    }
}

fn bump16(regs: &mut [u8; 0x80], msb: u8) {
    let i = usize::from(msb);
    let v = u16::from_be_bytes([regs[i], regs[i + 1]]).wrapping_add(1);
    let [h, l] = v.to_be_bytes();
    regs[i] = h;
    regs[i + 1] = l;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corruption {
    None,
    PayloadCrc,
    Header,
}

/// Handle on one modelled chip; clones share it.
#[derive(Clone)]
pub struct Sx127xModel {
    chip: Arc<Mutex<Chip>>,
    has_reset: bool,
}

impl Default for Sx127xModel {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sx127xModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sx127xModel").field("opmode", &self.register(REG_OP_MODE)).finish()
    }
}

impl Sx127xModel {
    /// A powered chip with its NRESET line wired.
    pub fn new() -> Self {
        Sx127xModel { chip: Arc::new(Mutex::new(Chip::new())), has_reset: true }
    }

    /// A chip on a board without a reset line (recovery is by software only).
    pub fn without_reset_pin() -> Self {
        Sx127xModel { chip: Arc::new(Mutex::new(Chip::new())), has_reset: false }
    }

    fn lock(&self) -> MutexGuard<'_, Chip> {
        self.chip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh SPI device and pin set on this chip (what `open_rppal` returns on a Pi).
    pub fn hw(&self) -> (ModelSpi, ModelPins) {
        (ModelSpi { chip: self.chip.clone() }, ModelPins { chip: self.chip.clone(), has_reset: self.has_reset })
    }

    /// A hardware factory for `run_sx127x`. Fails while [`Sx127xModel::fail_opens`] is pending.
    pub fn factory(&self) -> impl Fn() -> Result<(ModelSpi, ModelPins), HwError> + Send + Sync + 'static {
        let model = self.clone();
        move || {
            let mut chip = model.lock();
            if chip.factory_failures > 0 {
                chip.factory_failures -= 1;
                return Err(HwError::Other("model: SPI device cannot be opened".into()));
            }
            drop(chip);
            Ok(model.hw())
        }
    }

    /// The next `n` factory calls fail (as a missing /dev/spidev would).
    pub fn fail_opens(&self, n: u32) {
        self.lock().factory_failures = n;
    }

    /// A frame on the default uplink channel (868.1 MHz SF7BW125, sync 0x34). Returns whether the
    /// chip received it.
    pub fn inject_rx(&self, phy: &[u8], rssi_dbm: f64, snr_db: f64) -> bool {
        self.inject(&Air::default(), phy, rssi_dbm, snr_db).is_ok()
    }

    /// A frame with explicit air parameters; says why it was missed.
    pub fn inject(&self, air: &Air, phy: &[u8], rssi_dbm: f64, snr_db: f64) -> Result<(), Missed> {
        self.lock().receive(air, phy, rssi_dbm, snr_db, Corruption::None)
    }

    /// A frame whose payload CRC fails (RxDone + ValidHeader + PayloadCrcError).
    pub fn inject_crc_error(&self, phy: &[u8]) -> bool {
        self.lock().receive(&Air::default(), phy, -100.0, -2.0, Corruption::PayloadCrc).is_ok()
    }

    /// RxDone without ValidHeader: what the driver must treat as a header error.
    pub fn inject_header_error(&self) -> bool {
        self.lock().receive(&Air::default(), &[0xAA; 7], -110.0, -8.0, Corruption::Header).is_ok()
    }

    /// A frame sent without a payload CRC (the header says so).
    pub fn inject_rx_without_crc(&self, phy: &[u8]) -> bool {
        let air = Air { crc: false, ..Air::default() };
        self.lock().receive(&air, phy, -90.0, 5.0, Corruption::None).is_ok()
    }

    /// A brown-out / spontaneous reset: every register back to its reset value, FIFO cleared.
    pub fn simulate_reset(&self) {
        let mut chip = self.lock();
        chip.power_resets += 1;
        chip.power_on_reset();
    }

    /// The chip stops answering (MISO reads 0x00), as when it is unplugged or unpowered.
    pub fn set_absent(&self, absent: bool) {
        let mut chip = self.lock();
        if chip.absent && !absent {
            // Powered again: it comes back with reset values.
            chip.power_on_reset();
        }
        chip.absent = absent;
    }

    /// DIO0 edges no longer reach the host (broken wire, interrupt thread gone).
    pub fn set_dio0_broken(&self, broken: bool) {
        self.lock().dio0_broken = broken;
    }

    pub fn register(&self, addr: u8) -> u8 {
        self.lock().reg(addr)
    }

    /// RegOpMode.
    pub fn op_mode(&self) -> u8 {
        self.register(REG_OP_MODE)
    }

    /// In LoRa continuous receive.
    pub fn is_listening(&self) -> bool {
        let chip = self.lock();
        chip.alive() && chip.lora() && chip.mode() == MODE_RX_CONTINUOUS
    }

    pub fn transmitted(&self) -> Vec<TxRecord> {
        self.lock().transmitted.clone()
    }

    /// Pulses seen on NRESET.
    pub fn hw_resets(&self) -> u32 {
        self.lock().hw_resets
    }

    /// Calls to [`Sx127xModel::simulate_reset`].
    pub fn power_resets(&self) -> u32 {
        self.lock().power_resets
    }

    pub fn spi_transactions(&self) -> u64 {
        self.lock().spi_transactions
    }

    /// Waits (bounded) until the chip is in continuous receive.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_listening() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.is_listening()
    }
}

/// The model's SPI side.
pub struct ModelSpi {
    chip: Arc<Mutex<Chip>>,
}

impl SpiBus for ModelSpi {
    fn transfer(&mut self, write: &[u8], read: &mut [u8]) -> Result<(), HwError> {
        if write.len() != read.len() {
            return Err(HwError::Transfer(format!("buffer lengths differ: {} vs {}", write.len(), read.len())));
        }
        self.chip.lock().unwrap_or_else(|e| e.into_inner()).spi(write, read);
        Ok(())
    }
}

/// The model's NRESET and DIO0 lines.
pub struct ModelPins {
    chip: Arc<Mutex<Chip>>,
    has_reset: bool,
}

impl Pins for ModelPins {
    fn set_reset(&mut self, asserted: bool) -> Result<(), HwError> {
        if !self.has_reset {
            return Ok(());
        }
        let mut chip = self.chip.lock().unwrap_or_else(|e| e.into_inner());
        if asserted {
            chip.in_reset = true;
        } else if chip.in_reset {
            chip.in_reset = false;
            chip.hw_resets += 1;
            chip.power_on_reset();
        }
        Ok(())
    }

    fn has_reset(&self) -> bool {
        self.has_reset
    }

    fn watch_dio0(&mut self, tx: mpsc::Sender<()>) -> Result<(), HwError> {
        self.chip.lock().unwrap_or_else(|e| e.into_inner()).dio0_tx = Some(tx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(spi: &mut ModelSpi, addr: u8) -> u8 {
        let mut r = [0u8; 2];
        spi.transfer(&[addr, 0], &mut r).expect("spi");
        r[1]
    }

    fn wr(spi: &mut ModelSpi, addr: u8, v: u8) {
        let mut r = [0u8; 2];
        spi.transfer(&[addr | SPI_WRITE, v], &mut r).expect("spi");
    }

    #[test]
    fn long_range_mode_changes_only_in_sleep() {
        let m = Sx127xModel::new();
        let (mut spi, _pins) = m.hw();
        assert_eq!(rd(&mut spi, REG_VERSION), 0x12);
        wr(&mut spi, REG_OP_MODE, OPMODE_LONG_RANGE | MODE_STDBY);
        assert_eq!(rd(&mut spi, REG_OP_MODE) & OPMODE_LONG_RANGE, 0, "ignored outside sleep");
        wr(&mut spi, REG_OP_MODE, MODE_SLEEP);
        wr(&mut spi, REG_OP_MODE, OPMODE_LONG_RANGE | MODE_SLEEP);
        assert_eq!(rd(&mut spi, REG_OP_MODE), OPMODE_LONG_RANGE);
    }

    #[test]
    fn burst_increments_except_on_fifo() {
        let m = Sx127xModel::new();
        let (mut spi, _pins) = m.hw();
        let mut r = [0u8; 4];
        spi.transfer(&[REG_FRF_MSB, 0, 0, 0], &mut r).expect("spi");
        assert_eq!(&r[1..], &[0x6C, 0x80, 0x00]);
        wr(&mut spi, REG_OP_MODE, MODE_SLEEP);
        wr(&mut spi, REG_OP_MODE, OPMODE_LONG_RANGE | MODE_STDBY);
        wr(&mut spi, REG_FIFO_ADDR_PTR, 0x10);
        let mut r = [0u8; 4];
        spi.transfer(&[REG_FIFO | SPI_WRITE, 1, 2, 3], &mut r).expect("spi");
        assert_eq!(rd(&mut spi, REG_FIFO_ADDR_PTR), 0x13);
        wr(&mut spi, REG_FIFO_ADDR_PTR, 0x10);
        spi.transfer(&[REG_FIFO, 0, 0, 0], &mut r).expect("spi");
        assert_eq!(&r[1..], &[1, 2, 3]);
    }

    #[test]
    fn dead_chip_reads_zero_and_reset_restores_defaults() {
        let m = Sx127xModel::new();
        let (mut spi, mut pins) = m.hw();
        wr(&mut spi, REG_SYNC_WORD, 0x34);
        pins.set_reset(true).expect("pin");
        assert_eq!(rd(&mut spi, REG_VERSION), 0);
        pins.set_reset(false).expect("pin");
        assert_eq!(rd(&mut spi, REG_VERSION), 0x12);
        assert_eq!(rd(&mut spi, REG_SYNC_WORD), 0x12);
        assert_eq!(m.hw_resets(), 1);
    }
}
