//! The SX127x driver proper: register traffic only, synchronous (a register access is a few µs of SPI),
//! no timers and no tasks. The async task in `mod.rs` decides when to call it.

use super::regs::*;
use super::spi::{HwError, SpiBus};

/// Driver failures. Everything except `Params` means "reset and re-initialise the chip".
#[derive(Debug, thiserror::Error)]
pub enum Sx127xError {
    #[error(transparent)]
    Hw(#[from] HwError),
    #[error("SX127x not answering: RegVersion reads 0x{0:02x}, expected 0x12 (absent, unpowered, or SPI miswired)")]
    BadVersion(u8),
    #[error("SX127x refused LoRa mode: RegOpMode reads 0x{0:02x}")]
    NoLoRaMode(u8),
    #[error("SX127x lost its configuration (reset behind our back?): register 0x{reg:02x} reads 0x{found:02x}, expected 0x{expected:02x}")]
    ConfigLost { reg: u8, found: u8, expected: u8 },
    #[error("DIO0 interrupts are not arriving: {0} received packets in a row were only found by polling")]
    IrqLost(u32),
    #[error("transmit not done after {0} ms")]
    TxTimeout(u64),
    #[error("the DIO0 interrupt bridge closed")]
    IrqBridgeClosed,
    #[error("invalid radio parameters: {0}")]
    Params(String),
}

/// Modem settings for one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct ModemParams {
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    /// Coding rate 4/`cr`, 5..=8.
    pub cr: u8,
    pub preamble: u16,
    /// Payload CRC: on for uplinks, off for LoRaWAN downlinks.
    pub crc: bool,
    /// IQ inversion: off to receive uplinks, on to send downlinks.
    pub invert_iq: bool,
}

/// Chip-wide settings written once per initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChipSetup {
    pub sync_word: u8,
    pub tx_power_dbm: i8,
    pub pa_boost: bool,
}

/// A packet read out of the FIFO.
#[derive(Debug, Clone, PartialEq)]
pub struct RxPacket {
    pub phy: Vec<u8>,
    pub rssi_dbm: i32,
    pub snr_db: f64,
}

/// What one look at the IRQ flags found.
#[derive(Debug, Clone, PartialEq)]
pub enum RxOutcome {
    Nothing,
    Packet(RxPacket),
    CrcError,
    HeaderError(&'static str),
}

/// [`RxOutcome::HeaderError`] reason when RxDone came without ValidHeader (the chip did not count
/// the packet in RegRxPacketCnt).
pub const NO_VALID_HEADER: &str = "RxDone without ValidHeader";

const IRQ_MASK_UNUSED: u8 = IRQ_RX_TIMEOUT | IRQ_CAD_DONE | IRQ_FHSS_CHANGE | IRQ_CAD_DETECTED;

pub struct Sx127x<B: SpiBus> {
    spi: B,
    low_freq: bool,
    rx_freq_hz: u64,
}

impl<B: SpiBus> Sx127x<B> {
    pub fn new(spi: B) -> Self {
        Sx127x { spi, low_freq: false, rx_freq_hz: 0 }
    }

    pub fn read(&mut self, reg: u8) -> Result<u8, HwError> {
        let mut rx = [0u8; 2];
        self.spi.transfer(&[reg & !SPI_WRITE, 0], &mut rx)?;
        Ok(rx[1])
    }

    pub fn write(&mut self, reg: u8, value: u8) -> Result<(), HwError> {
        let mut rx = [0u8; 2];
        self.spi.transfer(&[reg | SPI_WRITE, value], &mut rx)
    }

    fn read_burst(&mut self, reg: u8, len: usize) -> Result<Vec<u8>, HwError> {
        let mut tx = vec![0u8; len + 1];
        tx[0] = reg & !SPI_WRITE;
        let mut rx = vec![0u8; len + 1];
        self.spi.transfer(&tx, &mut rx)?;
        rx.remove(0);
        Ok(rx)
    }

    fn write_burst(&mut self, reg: u8, data: &[u8]) -> Result<(), HwError> {
        let mut tx = Vec::with_capacity(data.len() + 1);
        tx.push(reg | SPI_WRITE);
        tx.extend_from_slice(data);
        let mut rx = vec![0u8; tx.len()];
        self.spi.transfer(&tx, &mut rx)
    }

    fn op_mode_value(&self, mode: u8) -> u8 {
        OPMODE_LONG_RANGE | if self.low_freq { OPMODE_LOW_FREQ } else { 0 } | mode
    }

    fn set_mode(&mut self, mode: u8) -> Result<(), HwError> {
        let v = self.op_mode_value(mode);
        self.write(REG_OP_MODE, v)
    }

    pub fn version(&mut self) -> Result<u8, HwError> {
        self.read(REG_VERSION)
    }

    pub fn check_version(&mut self) -> Result<(), Sx127xError> {
        match self.version()? {
            VERSION_SX127X => Ok(()),
            v => Err(Sx127xError::BadVersion(v)),
        }
    }

    /// From any state (typically just after reset: FSK standby) to LoRa standby with the chip-wide
    /// settings. Checks RegVersion first.
    pub fn init(&mut self, setup: &ChipSetup) -> Result<(), Sx127xError> {
        self.check_version()?;
        // LongRangeMode can only be changed in Sleep: go to (FSK) sleep first, then set it.
        self.write(REG_OP_MODE, MODE_SLEEP)?;
        let lora_sleep = self.op_mode_value(MODE_SLEEP);
        self.write(REG_OP_MODE, lora_sleep)?;
        let got = self.read(REG_OP_MODE)?;
        if got != lora_sleep {
            return Err(Sx127xError::NoLoRaMode(got));
        }
        let (pa, dac, ocp) = pa_regs(setup.tx_power_dbm, setup.pa_boost);
        self.write(REG_PA_CONFIG, pa)?;
        self.write(REG_PA_DAC, dac)?;
        self.write(REG_OCP, ocp)?;
        self.write(REG_LNA, LNA_MAX_GAIN_BOOST)?;
        self.write(REG_FIFO_TX_BASE_ADDR, 0x00)?;
        self.write(REG_FIFO_RX_BASE_ADDR, 0x00)?;
        self.write(REG_MAX_PAYLOAD_LENGTH, 0xFF)?;
        self.write(REG_IRQ_FLAGS_MASK, IRQ_MASK_UNUSED)?;
        self.write(REG_SYNC_WORD, setup.sync_word)?;
        self.write(REG_DETECT_OPTIMIZE, DETECT_OPTIMIZE_SF7_12)?;
        self.write(REG_DETECTION_THRESHOLD, DETECTION_THRESHOLD_SF7_12)?;
        self.set_mode(MODE_STDBY)?;
        let sync = self.read(REG_SYNC_WORD)?;
        if sync != setup.sync_word {
            return Err(Sx127xError::ConfigLost { reg: REG_SYNC_WORD, found: sync, expected: setup.sync_word });
        }
        Ok(())
    }

    /// Frequency, modulation, preamble and IQ polarity. Call in Standby (or Sleep).
    fn configure(&mut self, p: &ModemParams) -> Result<(), Sx127xError> {
        let m = modem_regs(p.freq_hz, p.sf, p.bw_khz, p.cr, p.crc).ok_or_else(|| {
            Sx127xError::Params(format!(
                "SF{} BW{} kHz CR 4/{} (need SF7-12, 125/250/500 kHz, 4/5-4/8)",
                p.sf, p.bw_khz, p.cr
            ))
        })?;
        let low_freq = p.freq_hz < LF_HF_THRESHOLD_HZ;
        if low_freq != self.low_freq {
            self.low_freq = low_freq;
            self.set_mode(MODE_STDBY)?;
        }
        let [_, msb, mid, lsb] = m.frf.to_be_bytes();
        self.write_burst(REG_FRF_MSB, &[msb, mid, lsb])?;
        self.write(REG_MODEM_CONFIG1, m.modem_config1)?;
        self.write(REG_MODEM_CONFIG2, m.modem_config2)?;
        self.write(REG_MODEM_CONFIG3, m.modem_config3)?;
        let [pm, pl] = p.preamble.to_be_bytes();
        self.write(REG_PREAMBLE_MSB, pm)?;
        self.write(REG_PREAMBLE_LSB, pl)?;
        if p.invert_iq {
            self.write(REG_INVERT_IQ, INVERT_IQ_TX_INVERTED)?;
            self.write(REG_INVERT_IQ2, INVERT_IQ2_INVERTED)?;
        } else {
            self.write(REG_INVERT_IQ, INVERT_IQ_NORMAL)?;
            self.write(REG_INVERT_IQ2, INVERT_IQ2_NORMAL)?;
        }
        Ok(())
    }

    /// Continuous receive with DIO0 = RxDone.
    pub fn start_rx(&mut self, p: &ModemParams) -> Result<(), Sx127xError> {
        self.set_mode(MODE_STDBY)?;
        self.configure(p)?;
        self.rx_freq_hz = p.freq_hz;
        self.write(REG_DIO_MAPPING1, DIO0_RX_DONE)?;
        self.write(REG_FIFO_ADDR_PTR, 0x00)?;
        self.write(REG_IRQ_FLAGS, 0xFF)?;
        self.set_mode(MODE_RX_CONTINUOUS)?;
        Ok(())
    }

    /// RegOpMode while receiving.
    pub fn rx_op_mode(&self) -> u8 {
        self.op_mode_value(MODE_RX_CONTINUOUS)
    }

    /// Valid packets the chip received since it entered RX mode (RegRxPacketCntValue).
    pub fn packet_count(&mut self) -> Result<u16, HwError> {
        let b = self.read_burst(REG_RX_PACKET_CNT_MSB, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn irq_flags(&mut self) -> Result<u8, HwError> {
        self.read(REG_IRQ_FLAGS)
    }

    /// Reads and clears the IRQ flags; if a packet is there, returns it (or why it was refused).
    /// `require_crc`: refuse packets whose header announces no payload CRC.
    pub fn service_rx(&mut self, require_crc: bool) -> Result<RxOutcome, Sx127xError> {
        let flags = self.irq_flags()?;
        if flags == 0 {
            return Ok(RxOutcome::Nothing);
        }
        // Clear what we saw first (Semtech's order): a packet arriving meanwhile raises RxDone again.
        self.write(REG_IRQ_FLAGS, flags)?;
        if flags & IRQ_RX_DONE == 0 {
            return Ok(RxOutcome::Nothing);
        }
        if flags & IRQ_VALID_HEADER == 0 {
            return Ok(RxOutcome::HeaderError(NO_VALID_HEADER));
        }
        if flags & IRQ_PAYLOAD_CRC_ERROR != 0 {
            return Ok(RxOutcome::CrcError);
        }
        if require_crc && self.read(REG_HOP_CHANNEL)? & HOP_CHANNEL_CRC_ON_PAYLOAD == 0 {
            return Ok(RxOutcome::HeaderError("header announces no payload CRC"));
        }
        let len = usize::from(self.read(REG_RX_NB_BYTES)?);
        let start = self.read(REG_FIFO_RX_CURRENT_ADDR)?;
        self.write(REG_FIFO_ADDR_PTR, start)?;
        let phy = self.read_burst(REG_FIFO, len)?;
        let snr_raw = self.read(REG_PKT_SNR_VALUE)?;
        let rssi_raw = self.read(REG_PKT_RSSI_VALUE)?;
        Ok(RxOutcome::Packet(RxPacket {
            phy,
            rssi_dbm: packet_rssi_dbm(rssi_raw, snr_raw, self.rx_freq_hz),
            snr_db: packet_snr_db(snr_raw),
        }))
    }

    /// Is the chip still the one we configured? RegVersion, RegOpMode (a reset returns it to FSK
    /// standby) and the sync word (LoRa page) are read back.
    pub fn check_alive(&mut self, sync_word: u8) -> Result<(), Sx127xError> {
        self.check_version()?;
        let expected = self.rx_op_mode();
        let mode = self.read(REG_OP_MODE)?;
        if mode != expected {
            return Err(Sx127xError::ConfigLost { reg: REG_OP_MODE, found: mode, expected });
        }
        let sync = self.read(REG_SYNC_WORD)?;
        if sync != sync_word {
            return Err(Sx127xError::ConfigLost { reg: REG_SYNC_WORD, found: sync, expected: sync_word });
        }
        Ok(())
    }

    /// Loads `payload` into the FIFO and starts the transmission, DIO0 = TxDone.
    pub fn start_tx(&mut self, p: &ModemParams, payload: &[u8], power: Option<(i8, bool)>) -> Result<(), Sx127xError> {
        if payload.is_empty() || payload.len() > 255 {
            return Err(Sx127xError::Params(format!("payload of {} bytes (1..=255)", payload.len())));
        }
        self.set_mode(MODE_STDBY)?;
        self.configure(p)?;
        if let Some((dbm, boost)) = power {
            let (pa, dac, ocp) = pa_regs(dbm, boost);
            self.write(REG_PA_CONFIG, pa)?;
            self.write(REG_PA_DAC, dac)?;
            self.write(REG_OCP, ocp)?;
        }
        self.write(REG_FIFO_TX_BASE_ADDR, 0x00)?;
        self.write(REG_FIFO_ADDR_PTR, 0x00)?;
        self.write_burst(REG_FIFO, payload)?;
        self.write(REG_PAYLOAD_LENGTH, payload.len() as u8)?;
        self.write(REG_DIO_MAPPING1, DIO0_TX_DONE)?;
        self.write(REG_IRQ_FLAGS, 0xFF)?;
        self.set_mode(MODE_TX)?;
        Ok(())
    }

    /// True (and TxDone cleared) once the packet is out.
    pub fn tx_done(&mut self) -> Result<bool, HwError> {
        let flags = self.irq_flags()?;
        if flags & IRQ_TX_DONE != 0 {
            self.write(REG_IRQ_FLAGS, IRQ_TX_DONE)?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn sleep(&mut self) -> Result<(), HwError> {
        self.set_mode(MODE_SLEEP)
    }
}
