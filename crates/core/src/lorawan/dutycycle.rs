//! Transmit duty-cycle accounting per EU868 sub-band (ETSI EN 300 220, LoRaWAN RP002 EU863-870), over a
//! sliding one-hour window. One [`DutyCycle`] per transmitter (gateway / concentrator).
//!
//! | sub-band | frequencies (centre)  | limit | airtime per hour |
//! |----------|-----------------------|-------|------------------|
//! | g        | 863.0 – 868.0 MHz     | 1 %   | 36 s             |
//! | g1       | 868.0 – 868.6 MHz     | 1 %   | 36 s             |
//! | g2       | 868.7 – 869.2 MHz     | 0.1 % | 3.6 s            |
//! | g3       | 869.4 – 869.65 MHz    | 10 %  | 360 s            |
//! | g4       | 869.7 – 870.0 MHz     | 1 %   | 36 s             |
//!
//! A transmission is counted from its start time for one hour. A reservation may lie in the future (a
//! class A window one or two seconds ahead); it counts from the moment it is made. A frequency outside
//! these sub-bands is refused.
//!
//! Time is the caller's clock in milliseconds; airtime has microsecond resolution.

use std::time::Duration;

/// The observation window.
pub const WINDOW: Duration = Duration::from_secs(3600);
const WINDOW_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SubBand {
    G,
    G1,
    G2,
    G3,
    G4,
}

impl SubBand {
    pub const ALL: [SubBand; 5] = [SubBand::G, SubBand::G1, SubBand::G2, SubBand::G3, SubBand::G4];

    /// The sub-band a centre frequency falls in, if any.
    pub fn of(freq_hz: u64) -> Option<SubBand> {
        Some(match freq_hz {
            863_000_000..=867_999_999 => SubBand::G,
            868_000_000..=868_600_000 => SubBand::G1,
            868_700_000..=869_200_000 => SubBand::G2,
            869_400_000..=869_650_000 => SubBand::G3,
            869_700_000..=870_000_000 => SubBand::G4,
            _ => return None,
        })
    }

    /// Duty cycle in units of 0.1 %.
    pub fn per_mille(self) -> u64 {
        match self {
            SubBand::G | SubBand::G1 | SubBand::G4 => 10,
            SubBand::G2 => 1,
            SubBand::G3 => 100,
        }
    }

    /// Airtime allowed per hour.
    pub fn budget(self) -> Duration {
        Duration::from_micros(WINDOW_MS * 1000 * self.per_mille() / 1000)
    }

    pub fn name(self) -> &'static str {
        match self {
            SubBand::G => "g",
            SubBand::G1 => "g1",
            SubBand::G2 => "g2",
            SubBand::G3 => "g3",
            SubBand::G4 => "g4",
        }
    }

    fn index(self) -> usize {
        match self {
            SubBand::G => 0,
            SubBand::G1 => 1,
            SubBand::G2 => 2,
            SubBand::G3 => 3,
            SubBand::G4 => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DutyCycleError {
    /// The sub-band's budget for the last hour is used up; the transmission would fit after `retry_after`.
    #[error("duty cycle of sub-band {} exhausted; retry in {} ms", sub_band.name(), retry_after.as_millis())]
    Exceeded { sub_band: SubBand, retry_after: Duration },
    /// Longer than the whole hourly budget: never allowed.
    #[error("{} ms of airtime exceed the hourly budget of sub-band {}", airtime.as_millis(), sub_band.name())]
    TooLong { sub_band: SubBand, airtime: Duration },
    #[error("frequency {freq_hz} Hz is in no EU868 sub-band")]
    OutOfBand { freq_hz: u64 },
}

impl DutyCycleError {
    /// How long to wait before the same transmission fits, if it ever will.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DutyCycleError::Exceeded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Transmissions of the last hour, per sub-band.
#[derive(Debug, Clone, Default)]
pub struct DutyCycle {
    /// (start ms, airtime µs), per sub-band index.
    bands: [Vec<(u64, u64)>; 5],
}

impl DutyCycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a transmission of `airtime` on `freq_hz` starting at `at_ms` fits, without recording it.
    pub fn check(&self, at_ms: u64, freq_hz: u64, airtime: Duration) -> Result<SubBand, DutyCycleError> {
        let sub_band = SubBand::of(freq_hz).ok_or(DutyCycleError::OutOfBand { freq_hz })?;
        let budget_us = duration_us(sub_band.budget());
        let air_us = duration_us(airtime);
        if air_us > budget_us {
            return Err(DutyCycleError::TooLong { sub_band, airtime });
        }
        let mut live: Vec<(u64, u64)> = self
            .bands
            .get(sub_band.index())
            .map(|v| v.iter().copied().filter(|(start, _)| start.saturating_add(WINDOW_MS) > at_ms).collect())
            .unwrap_or_default();
        let used: u64 = live.iter().map(|(_, a)| *a).sum();
        let Some(excess) = (used + air_us).checked_sub(budget_us).filter(|e| *e > 0) else {
            return Ok(sub_band);
        };
        // Wait until enough of the oldest transmissions have left the window.
        live.sort_unstable();
        let mut freed = 0;
        for (start, a) in live {
            freed += a;
            if freed >= excess {
                let free_at = start.saturating_add(WINDOW_MS);
                let retry_after = Duration::from_millis(free_at.saturating_sub(at_ms));
                return Err(DutyCycleError::Exceeded { sub_band, retry_after });
            }
        }
        // Unreachable when airtime <= budget; answer with a full window to stay safe.
        Err(DutyCycleError::Exceeded { sub_band, retry_after: WINDOW })
    }

    /// Records the transmission if it fits; otherwise says how long to wait.
    pub fn try_reserve(&mut self, at_ms: u64, freq_hz: u64, airtime: Duration) -> Result<SubBand, DutyCycleError> {
        self.expire(at_ms);
        let sub_band = self.check(at_ms, freq_hz, airtime)?;
        if let Some(v) = self.bands.get_mut(sub_band.index()) {
            v.push((at_ms, duration_us(airtime)));
        }
        Ok(sub_band)
    }

    /// Airtime counted against `sub_band` at `at_ms`.
    pub fn used(&self, at_ms: u64, sub_band: SubBand) -> Duration {
        let us = self
            .bands
            .get(sub_band.index())
            .map(|v| v.iter().filter(|(s, _)| s.saturating_add(WINDOW_MS) > at_ms).map(|(_, a)| *a).sum())
            .unwrap_or(0);
        Duration::from_micros(us)
    }

    fn expire(&mut self, now_ms: u64) {
        for v in &mut self.bands {
            v.retain(|(start, _)| start.saturating_add(WINDOW_MS) > now_ms);
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_bands() {
        assert_eq!(SubBand::of(868_100_000), Some(SubBand::G1));
        assert_eq!(SubBand::of(868_500_000), Some(SubBand::G1));
        assert_eq!(SubBand::of(867_100_000), Some(SubBand::G));
        assert_eq!(SubBand::of(868_800_000), Some(SubBand::G2));
        assert_eq!(SubBand::of(869_525_000), Some(SubBand::G3));
        assert_eq!(SubBand::of(869_850_000), Some(SubBand::G4));
        assert_eq!(SubBand::of(869_300_000), None);
        assert_eq!(SubBand::of(915_000_000), None);
        assert_eq!(SubBand::G1.budget(), Duration::from_secs(36));
        assert_eq!(SubBand::G2.budget(), Duration::from_millis(3600));
        assert_eq!(SubBand::G3.budget(), Duration::from_secs(360));
    }

    #[test]
    fn thirty_seventh_second_is_refused_until_the_window_slides() {
        let mut dc = DutyCycle::new();
        let f = 868_100_000;
        let one_s = Duration::from_secs(1);
        // 36 transmissions of 1 s, one per minute: exactly the 1 % budget.
        for i in 0..36u64 {
            assert_eq!(dc.try_reserve(i * 60_000, f, one_s), Ok(SubBand::G1), "tx {i}");
        }
        assert_eq!(dc.used(36 * 60_000, SubBand::G1), Duration::from_secs(36));
        let err = dc.try_reserve(36 * 60_000, f, one_s).unwrap_err();
        // The first transmission (t = 0) leaves the window at t = 3600 s.
        assert_eq!(
            err,
            DutyCycleError::Exceeded { sub_band: SubBand::G1, retry_after: Duration::from_secs(3600 - 2160) }
        );
        // Another sub-band is independent.
        assert!(dc.try_reserve(36 * 60_000, 869_525_000, one_s).is_ok());
        // Still refused a millisecond before the first one slides out, allowed at the boundary.
        assert!(dc.try_reserve(3_599_999, f, one_s).is_err());
        assert_eq!(dc.try_reserve(3_600_000, f, one_s), Ok(SubBand::G1));
        // And the next one is refused again until t = 3660 s.
        assert_eq!(dc.try_reserve(3_600_001, f, one_s).unwrap_err().retry_after(), Some(Duration::from_millis(59_999)));
    }

    #[test]
    fn retry_after_frees_enough() {
        let mut dc = DutyCycle::new();
        let f = 868_900_000; // g2: 3.6 s per hour
        dc.try_reserve(0, f, Duration::from_millis(1000)).unwrap();
        dc.try_reserve(1000, f, Duration::from_millis(1000)).unwrap();
        dc.try_reserve(2000, f, Duration::from_millis(1500)).unwrap();
        // 3.5 s used; 2 s more needs the first two gone (at 3601 s).
        let e = dc.try_reserve(3000, f, Duration::from_millis(2000)).unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_millis(3_601_000 - 3000)));
        assert!(dc.try_reserve(3_601_000, f, Duration::from_millis(2000)).is_ok());
        assert!(matches!(dc.try_reserve(0, f, Duration::from_secs(4)), Err(DutyCycleError::TooLong { .. })));
        assert_eq!(
            dc.try_reserve(0, 870_500_000, Duration::from_secs(1)),
            Err(DutyCycleError::OutOfBand { freq_hz: 870_500_000 })
        );
    }
}
