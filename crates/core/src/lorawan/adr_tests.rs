use super::*;

fn history(snrs: &[f64]) -> History {
    let mut h = History::default();
    for (i, s) in snrs.iter().enumerate() {
        h.push(i as u32, *s);
    }
    h
}

fn full(snr: f64) -> History {
    history(&[snr; HISTORY_LEN])
}

const OPEN: Bounds = Bounds { min_dr: 0, max_dr: 5, max_tx_power: EU868_MIN_TX_POWER_INDEX };

fn at(dr: u8, tx_power: u8, nb_trans: u8) -> LinkSettings {
    LinkSettings { dr, tx_power, nb_trans }
}

/// (history, current, bounds, expected margin, expected steps, expected result).
#[test]
fn decisions_follow_the_algorithm() {
    let cfg = AdrConfig::default();
    let table: Vec<(History, LinkSettings, Bounds, f64, i32, LinkSettings)> = vec![
        // The device: SF12, +10 dB → margin 10 + 20 − 10 = 20 → 6 steps: DR0→DR5, then 2 dB less.
        (history(&[10.0; 5]), at(0, 0, 1), OPEN, 20.0, 6, at(5, 1, 1)),
        // Best SNR over the history counts, not the last.
        (history(&[-5.0, 10.0, -5.0]), at(0, 0, 1), OPEN, 20.0, 6, at(5, 1, 1)),
        // +5 dB at SF12: margin 15 → 5 steps, exactly DR5.
        (history(&[5.0]), at(0, 0, 1), OPEN, 15.0, 5, at(5, 0, 1)),
        // At DR5 with +4 dB: margin 1.5 → 0 steps (dead band): nothing changes.
        (history(&[4.0]), at(5, 1, 1), OPEN, 1.5, 0, at(5, 1, 1)),
        // At DR5 with +8 dB: margin 5.5 → 1 step: TX power index +1.
        (history(&[8.0]), at(5, 1, 1), OPEN, 5.5, 1, at(5, 2, 1)),
        // Power stops at the region's minimum (index 7).
        (history(&[30.0]), at(5, 6, 1), OPEN, 27.5, 9, at(5, 7, 1)),
        // max_dr 3 from the config: data rate stops there, then power.
        (history(&[10.0]), at(0, 0, 1), Bounds { max_dr: 3, ..OPEN }, 20.0, 6, at(3, 3, 1)),
        // A device above max_dr is brought down even with 0 steps.
        (history(&[-12.5]), at(5, 0, 1), Bounds { max_dr: 4, ..OPEN }, -15.0, -5, at(4, 0, 1)),
        // Negative steps with a full history: power first (index 2 → 0), then the data rate.
        (full(-10.0), at(5, 2, 1), OPEN, -12.5, -4, at(3, 0, 1)),
        // ... but not below min_dr.
        (full(-10.0), at(5, 2, 1), Bounds { min_dr: 4, ..OPEN }, -12.5, -4, at(4, 0, 1)),
        // Negative steps without a full history change nothing (ChirpStack waits for 20 uplinks).
        (history(&[-10.0; 5]), at(5, 2, 1), OPEN, -12.5, -4, at(5, 2, 1)),
        // −2.9 dB is inside the dead band (truncation, not floor).
        (full(-0.4), at(5, 0, 1), OPEN, -2.9, 0, at(5, 0, 1)),
        // The device's own bound after a refused power step.
        (history(&[30.0]), at(5, 0, 1), Bounds { max_tx_power: 2, ..OPEN }, 27.5, 9, at(5, 2, 1)),
    ];
    for (i, (h, cur, bounds, margin, steps, want)) in table.into_iter().enumerate() {
        let d = decide(&cfg, &h, cur, bounds).unwrap();
        assert!((d.margin_db - margin).abs() < 1e-9, "row {i}: margin {} != {margin}", d.margin_db);
        assert_eq!(d.steps, steps, "row {i}");
        assert_eq!(d.to, want, "row {i}");
        assert_eq!(d.changes(), cur != want, "row {i}");
    }
}

#[test]
fn installation_margin_comes_from_the_config() {
    let cfg = AdrConfig { margin_db: 15.0, ..AdrConfig::default() };
    let d = decide(&cfg, &history(&[10.0]), at(0, 0, 1), OPEN).unwrap();
    assert_eq!((d.margin_db, d.steps, d.to), (15.0, 5, at(5, 0, 1)));
}

#[test]
fn no_decision_without_samples_or_for_other_data_rates() {
    let cfg = AdrConfig::default();
    assert!(decide(&cfg, &History::default(), at(0, 0, 1), OPEN).is_none());
    // DR6 is SF7/250 kHz: not handled.
    assert!(decide(&cfg, &history(&[0.0]), at(6, 0, 1), OPEN).is_none());
    assert!(decide(&cfg, &history(&[0.0]), at(9, 0, 1), OPEN).is_none());
}

#[test]
fn nb_trans_follows_chirpstacks_loss_table() {
    // (current, loss %, expected)
    let rows = [
        (1, 0.0, 1),
        (2, 4.9, 1),
        (3, 0.0, 2),
        (1, 5.0, 1),
        (2, 9.9, 2),
        (3, 7.0, 3),
        (1, 10.0, 2),
        (2, 29.9, 3),
        (1, 30.0, 3),
        (3, 90.0, 3),
        // Out-of-range current values are taken as 1..=3.
        (0, 0.0, 1),
        (9, 50.0, 3),
    ];
    for (cur, loss, want) in rows {
        assert_eq!(nb_trans_for_loss(cur, loss), want, "current {cur}, loss {loss}");
    }
}

#[test]
fn loss_comes_from_frame_counter_gaps_of_a_full_history() {
    let mut h = History::default();
    // Every other FCnt missing: 19 gaps of one over 20 received = 95 %.
    for i in 0..HISTORY_LEN as u32 {
        h.push(i * 2, 0.0);
    }
    assert!((h.loss_pct() - 95.0).abs() < 1e-9);
    let d = decide(&AdrConfig::default(), &h, at(0, 0, 1), OPEN).unwrap();
    assert_eq!(d.to.nb_trans, 3);
    // 2 lost in 20: 10 %.
    let mut h = History::default();
    for f in (0..22u32).filter(|f| *f != 5 && *f != 11) {
        h.push(f, 0.0);
    }
    assert!((h.loss_pct() - 10.0).abs() < 1e-9);
    // Not full: no loss figure yet.
    assert_eq!(history(&[0.0; 3]).loss_pct(), 0.0);
}

#[test]
fn copies_of_one_uplink_keep_the_best_snr() {
    let mut h = History::default();
    h.push(7, -3.0);
    h.push(7, 2.0);
    h.merge_copy(7, 4.5);
    h.merge_copy(8, 20.0);
    h.push(8, f64::NAN);
    assert_eq!(h.len(), 1);
    assert_eq!(h.best_snr_db(), Some(4.5));
    for i in 0..50 {
        h.push(100 + i, -1.0);
    }
    assert_eq!(h.len(), HISTORY_LEN);
    assert_eq!(h.best_snr_db(), Some(-1.0));
}
