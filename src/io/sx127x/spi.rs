//! The two small traits the driver talks through (an SPI bus, and the reset/DIO0 pins), and their
//! `rppal` implementations for a Raspberry Pi.

use std::time::Duration;

use tokio::sync::mpsc;

/// Failures of the hardware underneath the driver.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("GPIO is not available on this host (not a Raspberry Pi: UnknownModel)")]
    NotAPi,
    #[error("SPI bus {bus} chip select {cs} is not available ({detail}); enable SPI (dtparam=spi=on) and check /dev/spidev{bus}.{cs}")]
    SpiUnavailable { bus: u8, cs: u8, detail: String },
    #[error("SPI transfer failed: {0}")]
    Transfer(String),
    #[error("GPIO pin {pin}: {detail}")]
    Pin { pin: u8, detail: String },
    #[error("{0}")]
    Other(String),
}

/// One SPI device (the radio, with its chip select). A call is one transaction: chip select is
/// asserted for the whole of `write`, and `read` receives what came back on MISO (same length).
pub trait SpiBus: Send + 'static {
    fn transfer(&mut self, write: &[u8], read: &mut [u8]) -> Result<(), HwError>;
}

/// The radio's control lines.
pub trait Pins: Send + 'static {
    /// Drive NRESET: `asserted` holds the chip in reset. Boards without a reset line return Ok.
    fn set_reset(&mut self, asserted: bool) -> Result<(), HwError>;
    /// Whether a reset line is wired (if not, recovery re-initialises by software only).
    fn has_reset(&self) -> bool;
    /// Deliver every rising edge of DIO0 into `tx` (from whatever thread the implementation uses;
    /// `try_send`, so a full queue never blocks the interrupt thread: the driver reads the IRQ flags).
    fn watch_dio0(&mut self, tx: mpsc::Sender<()>) -> Result<(), HwError>;
}

/// How long NRESET is held low (datasheet 7.2.2: > 100 µs) and how long the chip needs afterwards (5 ms).
pub const RESET_PULSE: Duration = Duration::from_millis(1);
pub const RESET_RECOVERY: Duration = Duration::from_millis(10);

/// Where the radio is wired, for [`open_rppal`].
#[derive(Debug, Clone)]
pub struct RppalWiring {
    pub spi_bus: u8,
    pub spi_cs: u8,
    pub spi_clock_hz: u32,
    pub reset_pin: Option<u8>,
    pub reset_active_low: bool,
    pub dio0_pin: u8,
}

/// The SX127x on a Raspberry Pi's SPI (spidev) with its chip select.
pub struct RppalSpi {
    spi: rppal::spi::Spi,
}

impl SpiBus for RppalSpi {
    fn transfer(&mut self, write: &[u8], read: &mut [u8]) -> Result<(), HwError> {
        if write.len() != read.len() {
            return Err(HwError::Transfer(format!("buffer lengths differ: {} vs {}", write.len(), read.len())));
        }
        let n = self.spi.transfer(read, write).map_err(|e| HwError::Transfer(e.to_string()))?;
        if n != write.len() {
            return Err(HwError::Transfer(format!("short transfer: {n} of {} bytes", write.len())));
        }
        Ok(())
    }
}

/// NRESET and DIO0 through rppal's GPIO (character device).
pub struct RppalPins {
    reset: Option<(rppal::gpio::OutputPin, bool)>,
    dio0: rppal::gpio::InputPin,
}

impl Pins for RppalPins {
    fn set_reset(&mut self, asserted: bool) -> Result<(), HwError> {
        if let Some((pin, active_low)) = &mut self.reset {
            // active-low NRESET: asserted = low
            if asserted == *active_low {
                pin.set_low();
            } else {
                pin.set_high();
            }
        }
        Ok(())
    }

    fn has_reset(&self) -> bool {
        self.reset.is_some()
    }

    fn watch_dio0(&mut self, tx: mpsc::Sender<()>) -> Result<(), HwError> {
        let pin = self.dio0.pin();
        // The callback runs on a thread rppal spawns; try_send is fine from any thread.
        self.dio0
            .set_async_interrupt(rppal::gpio::Trigger::RisingEdge, None, move |_event| {
                let _ = tx.try_send(());
            })
            .map_err(|e| gpio_error(pin, e))
    }
}

fn gpio_error(pin: u8, e: rppal::gpio::Error) -> HwError {
    match e {
        rppal::gpio::Error::UnknownModel => HwError::NotAPi,
        other => HwError::Pin { pin, detail: other.to_string() },
    }
}

fn spi_bus(n: u8) -> Option<rppal::spi::Bus> {
    use rppal::spi::Bus::*;
    Some(match n {
        0 => Spi0,
        1 => Spi1,
        2 => Spi2,
        3 => Spi3,
        4 => Spi4,
        5 => Spi5,
        6 => Spi6,
        _ => return None,
    })
}

fn spi_cs(n: u8) -> Option<rppal::spi::SlaveSelect> {
    use rppal::spi::SlaveSelect::*;
    Some(match n {
        0 => Ss0,
        1 => Ss1,
        2 => Ss2,
        3 => Ss3,
        4 => Ss4,
        5 => Ss5,
        6 => Ss6,
        7 => Ss7,
        8 => Ss8,
        9 => Ss9,
        10 => Ss10,
        11 => Ss11,
        12 => Ss12,
        13 => Ss13,
        14 => Ss14,
        15 => Ss15,
        _ => return None,
    })
}

/// Opens the radio's SPI device and pins through rppal. On a host that is not a Raspberry Pi this
/// fails with [`HwError::NotAPi`] ("GPIO is not available on this host (not a Raspberry Pi: UnknownModel)").
pub fn open_rppal(w: &RppalWiring) -> Result<(RppalSpi, RppalPins), HwError> {
    let gpio = rppal::gpio::Gpio::new().map_err(|e| match e {
        rppal::gpio::Error::UnknownModel => HwError::NotAPi,
        other => HwError::Other(format!("GPIO: {other}")),
    })?;
    let bus = spi_bus(w.spi_bus).ok_or_else(|| HwError::SpiUnavailable {
        bus: w.spi_bus,
        cs: w.spi_cs,
        detail: "no such bus (0..=6)".into(),
    })?;
    let cs = spi_cs(w.spi_cs).ok_or_else(|| HwError::SpiUnavailable {
        bus: w.spi_bus,
        cs: w.spi_cs,
        detail: "no such chip select (0..=15)".into(),
    })?;
    let spi = rppal::spi::Spi::new(bus, cs, w.spi_clock_hz, rppal::spi::Mode::Mode0)
        .map_err(|e| HwError::SpiUnavailable { bus: w.spi_bus, cs: w.spi_cs, detail: e.to_string() })?;
    let reset = match w.reset_pin {
        Some(n) => {
            let pin = gpio.get(n).map_err(|e| gpio_error(n, e))?;
            // Start released (not in reset).
            let out = if w.reset_active_low { pin.into_output_high() } else { pin.into_output_low() };
            Some((out, w.reset_active_low))
        }
        None => None,
    };
    let dio0 = gpio.get(w.dio0_pin).map_err(|e| gpio_error(w.dio0_pin, e))?.into_input();
    Ok((RppalSpi { spi }, RppalPins { reset, dio0 }))
}
