//! Adaptive data rate: the network side of LoRaWAN ADR with the semantics of ChirpStack's default
//! algorithm (written here from its description, not its code):
//!
//! - the best SNR over the device's last (up to) [`HISTORY_LEN`] uplinks (copies heard by several
//!   gateways are merged into one sample, the best SNR kept);
//! - margin = best SNR − the SNR the current spreading factor needs (SF7 −7.5 dB … SF12 −20 dB in
//!   2.5 dB steps, [`demodulation_floor_db`]) − the installation margin (default 10 dB);
//! - steps = margin / 3 dB, truncated towards zero as ChirpStack does (a ±3 dB dead band, so a device
//!   near its optimum is not told to move back and forth);
//! - a positive step raises the data rate up to `max_dr`, and once there lowers the TX power by 2 dB
//!   (TXPower index + 1) down to the region's minimum; a negative step raises the TX power (towards
//!   index 0, the maximum) and — where ChirpStack stops and leaves it to the device's own ADR backoff —
//!   then lowers the data rate down to `min_dr`, so a device whose link degrades is slowed down by
//!   the network. Negative steps wait for a full history, as in ChirpStack: one bad uplink does not
//!   raise the power;
//! - NbTrans from the packet loss seen in the frame-counter gaps of a full history, with ChirpStack's
//!   table (`internal/adr/default.go` `getNbTrans` / `chirpstack/src/adr/default.rs`): loss < 5 %
//!   lowers NbTrans, 5–10 % keeps it, 10–30 % raises it by one, more than 30 % sets 3.
//!
//! Pure: [`decide`] takes the history and the device's current settings and returns the decision.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::lorawan::region::{demodulation_floor_db, DataRate};

/// Uplinks the decision looks at.
pub const HISTORY_LEN: usize = 20;
/// EU868 TXPower indexes 0..=7: max EIRP − 2 dB × index (RP002 table 2-3).
pub const EU868_MIN_TX_POWER_INDEX: u8 = 7;
/// The highest EU868 LoRa data rate at 125 kHz (SF7); DR6 (SF7/250 kHz) is left out as ChirpStack does.
pub const EU868_MAX_LORA125_DR: u8 = 5;
/// One ADR step in dB.
const STEP_DB: f64 = 3.0;

/// `[lorawan.adr]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdrConfig {
    pub enabled: bool,
    /// Installation margin in dB.
    pub margin_db: f64,
    pub min_dr: u8,
    pub max_dr: u8,
}

impl Default for AdrConfig {
    fn default() -> Self {
        AdrConfig { enabled: true, margin_db: 10.0, min_dr: 0, max_dr: EU868_MAX_LORA125_DR }
    }
}

/// One uplink as ADR sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub f_cnt: u32,
    pub snr_db: f64,
}

/// The device's last uplinks (not persisted: after a restart it fills again from the next uplinks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds an uplink; the same FCnt again (another gateway's copy) keeps the better SNR.
    pub fn push(&mut self, f_cnt: u32, snr_db: f64) {
        if !snr_db.is_finite() {
            return;
        }
        if let Some(last) = self.samples.back_mut().filter(|s| s.f_cnt == f_cnt) {
            last.snr_db = last.snr_db.max(snr_db);
            return;
        }
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { f_cnt, snr_db });
    }

    /// Another gateway's copy of the last uplink (the de-duplication step dropped it as a frame).
    pub fn merge_copy(&mut self, f_cnt16: u16, snr_db: f64) {
        if let Some(last) = self.samples.back_mut().filter(|s| s.f_cnt as u16 == f_cnt16) {
            if snr_db.is_finite() {
                last.snr_db = last.snr_db.max(snr_db);
            }
        }
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.samples.len() >= HISTORY_LEN
    }

    pub fn best_snr_db(&self) -> Option<f64> {
        self.samples.iter().map(|s| s.snr_db).reduce(f64::max)
    }

    /// Lost uplinks in percent of the uplinks received, from the frame-counter gaps (0 until the
    /// history is full, as in ChirpStack).
    pub fn loss_pct(&self) -> f64 {
        if !self.is_full() {
            return 0.0;
        }
        let lost: u64 = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| u64::from(b.f_cnt.wrapping_sub(a.f_cnt).saturating_sub(1)))
            .sum();
        lost as f64 / self.samples.len() as f64 * 100.0
    }
}

/// A device's uplink settings as ADR moves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSettings {
    pub dr: u8,
    /// TXPower index: 0 = max EIRP, each step 2 dB less.
    pub tx_power: u8,
    pub nb_trans: u8,
}

/// The bounds of one decision: the config's data rates and what the device accepted (a refused
/// request lowers the device's own bounds, see the MAC engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min_dr: u8,
    pub max_dr: u8,
    /// The lowest power allowed, as the highest TXPower index.
    pub max_tx_power: u8,
}

/// What ADR decided for one uplink (kept for status).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    pub best_snr_db: f64,
    pub required_snr_db: f64,
    pub margin_db: f64,
    pub steps: i32,
    pub loss_pct: f64,
    pub from: LinkSettings,
    pub to: LinkSettings,
    /// Uplinks the decision looked at.
    pub history: usize,
}

impl Decision {
    pub fn changes(&self) -> bool {
        self.from != self.to
    }
}

/// ChirpStack's NbTrans table: row by loss (< 5 %, < 10 %, < 30 %, more), column by the current NbTrans.
const NB_TRANS_TABLE: [[u8; 3]; 4] = [[1, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]];

/// NbTrans for the packet loss seen (percent) and the current NbTrans (taken as 1..=3).
pub fn nb_trans_for_loss(current: u8, loss_pct: f64) -> u8 {
    let col = usize::from(current.clamp(1, 3) - 1);
    let row = if loss_pct < 5.0 {
        0
    } else if loss_pct < 10.0 {
        1
    } else if loss_pct < 30.0 {
        2
    } else {
        3
    };
    NB_TRANS_TABLE[row][col]
}

/// The ADR decision for a device whose last uplink came at `current.dr`. None: no sample yet, or a
/// data rate ADR does not handle (not EU868 LoRa 125 kHz).
pub fn decide(cfg: &AdrConfig, history: &History, current: LinkSettings, bounds: Bounds) -> Option<Decision> {
    let best = history.best_snr_db()?;
    let rate = DataRate::from_dr(current.dr).filter(|r| r.bw_khz == 125)?;
    let required = demodulation_floor_db(rate.sf)?;
    let margin = best - required - cfg.margin_db;
    // Truncated towards zero, as ChirpStack's `int(snrMargin / 3)`.
    let steps = (margin / STEP_DB).trunc() as i32;
    let max_dr = bounds.max_dr.min(EU868_MAX_LORA125_DR);
    let min_dr = bounds.min_dr.min(max_dr);
    let max_tx = bounds.max_tx_power.min(EU868_MIN_TX_POWER_INDEX);
    let loss = history.loss_pct();
    let mut to = current;
    to.nb_trans = nb_trans_for_loss(current.nb_trans, loss);
    to.dr = to.dr.clamp(min_dr, max_dr);
    to.tx_power = to.tx_power.min(max_tx);
    if steps > 0 {
        for _ in 0..steps {
            if to.dr < max_dr {
                to.dr += 1;
            } else if to.tx_power < max_tx {
                to.tx_power += 1;
            } else {
                break;
            }
        }
    } else if steps < 0 && history.is_full() {
        for _ in 0..steps.unsigned_abs() {
            if to.tx_power > 0 {
                to.tx_power -= 1;
            } else if to.dr > min_dr {
                to.dr -= 1;
            } else {
                break;
            }
        }
    }
    Some(Decision {
        best_snr_db: best,
        required_snr_db: required,
        margin_db: margin,
        steps,
        loss_pct: loss,
        from: current,
        to,
        history: history.len(),
    })
}

#[cfg(test)]
#[path = "adr_tests.rs"]
mod tests;
