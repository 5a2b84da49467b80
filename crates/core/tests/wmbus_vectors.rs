//! Every wmbusmeters driver test case (shared/vectors/wmbus, 369 cases) through our telegram decoder.
//!
//! - All cases must run without a panic.
//! - The share: among the cases whose expected JSON has a total volume (`total_m3`, `total_volume_m3`,
//!   `total_water_m3`) or total energy (`total_energy_consumption_kwh`, `total_kwh`, `total_heat_energy_kwh`,
//!   `total_energy_kwh`, `total_heating_kwh`) as a number — the denominator — the cases where our
//!   `volume_m3` and `energy_kwh` equal every one of those values it has (one volume key and one energy key
//!   at most, the first found in that order). Asserted ≥ 75 %.
//! - Cases with a real (non-zero) key carry the telegram as received: they must decrypt, and with a wrong
//!   key they must give an error, never metrics.
//! - Cases without a real key carry a payload wmbusmeters already decrypted (the `_` splice): decoded with
//!   `already_decrypted`. `_` and `|` are only markers and are removed; one case has a stray trailing
//!   nibble, which is dropped.
//!
//! Run with `cargo test --release -p district-core --test wmbus_vectors -- --nocapture` to see the failing
//! cases by reason (docs/DECODERS.md lists them).

use std::collections::BTreeMap;

use district_core::wmbus::{decode_telegram_with, DecodeOptions, WmbusError};
use serde_json::Value;

const VOLUME_KEYS: &[&str] = &["total_m3", "total_volume_m3", "total_water_m3"];
const ENERGY_KEYS: &[&str] =
    &["total_energy_consumption_kwh", "total_kwh", "total_heat_energy_kwh", "total_energy_kwh", "total_heating_kwh"];

fn cases() -> Vec<Value> {
    let path = district_core::test_support::vectors_dir().join("wmbus/wmbusmeters_driver_tests.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match serde_json::from_str(&text).expect("vector file is JSON") {
        Value::Array(a) => a,
        _ => panic!("vector file is not a JSON array"),
    }
}

fn telegram_bytes(s: &str) -> Vec<u8> {
    let mut h: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if h.len() % 2 == 1 {
        h.pop();
    }
    hex::decode(h).expect("hex")
}

/// The case's AES key if it is a real (non-zero) one.
fn real_key(case: &Value) -> Option<[u8; 16]> {
    let k = hex::decode(case["key"].as_str()?).ok()?;
    let k: [u8; 16] = k.try_into().ok()?;
    (k != [0; 16]).then_some(k)
}

fn first_number<'a>(j: &'a Value, keys: &[&'a str]) -> Option<(&'a str, f64)> {
    keys.iter().find_map(|k| Some((*k, j.get(*k)?.as_f64()?)))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn case_name(case: &Value, i: usize) -> String {
    format!("#{i} {} ({})", case["driver"].as_str().unwrap_or("?"), case["id"].as_str().unwrap_or("?"))
}

#[test]
fn wmbusmeters_cases_share_and_keys() {
    let cases = cases();
    assert_eq!(cases.len(), 369, "the vector file has 369 cases");
    let mut denominator = 0;
    let mut matched = 0;
    let mut failed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut decoded_ok = 0;
    let mut keyed = 0;
    let mut decrypted = 0;
    for (i, case) in cases.iter().enumerate() {
        let tel = case["telegrams"].as_array().and_then(|a| a.first()).and_then(Value::as_str).expect("telegram");
        let bytes = telegram_bytes(tel);
        let key = real_key(case);
        let opts = DecodeOptions { already_decrypted: key.is_none() };
        let result = decode_telegram_with(&bytes, key.as_ref(), opts);
        if result.is_ok() {
            decoded_ok += 1;
        }
        if let Some(k) = key {
            keyed += 1;
            // The cases an independent AES check decrypted to the 2F2F filler must decrypt here too.
            let checked = case["aes_spot_check"]["starts_with_2f2f"].as_bool() == Some(true);
            if checked {
                if let Err(e) = &result {
                    panic!("{}: real key did not decrypt: {e}", case_name(case, i));
                }
                decrypted += 1;
            }
            let mut wrong = k;
            wrong[0] ^= 0x55;
            match decode_telegram_with(&bytes, Some(&wrong), DecodeOptions::default()) {
                Ok(t) => panic!("{}: decoded with a wrong key: {:?}", case_name(case, i), t.metrics),
                Err(e) if checked => assert_eq!(e, WmbusError::WrongKey, "{}", case_name(case, i)),
                Err(_) => {}
            }
        }
        let expected = &case["expected_json"];
        let want: Vec<(&str, &str, f64)> = [("volume_m3", VOLUME_KEYS), ("energy_kwh", ENERGY_KEYS)]
            .iter()
            .filter_map(|(ours, keys)| first_number(expected, keys).map(|(k, v)| (*ours, k, v)))
            .collect();
        if want.is_empty() {
            continue;
        }
        denominator += 1;
        let reason = match &result {
            Err(e) => Some(reason_of(e)),
            Ok(t) => want.iter().find_map(|(ours, theirs, v)| match t.metrics.get(*ours).and_then(Value::as_f64) {
                None => Some(format!("no `{ours}` in the generic records")),
                Some(got) if !close(got, *v) => Some(format!("`{ours}` differs from `{theirs}`")),
                Some(_) => None,
            }),
        };
        match reason {
            None => matched += 1,
            Some(r) => failed.entry(r).or_default().push(case_name(case, i)),
        }
    }
    let share = 100.0 * matched as f64 / denominator as f64;
    println!("wmbus vectors: {} cases run, {decoded_ok} decoded without error, {keyed} with a real key ({decrypted} spot-checked ones decrypted)", cases.len());
    println!(
        "wmbus vectors: share {matched}/{denominator} = {share:.1} % (denominator: cases with a total volume or energy)"
    );
    for (reason, list) in &failed {
        println!("- {reason} ({}): {}", list.len(), list.join(", "));
    }
    assert!(share >= 75.0, "share {share:.1} % below 75 %");
}

/// The reason class of an error (without case-specific numbers, so cases group).
fn reason_of(e: &WmbusError) -> String {
    match e {
        WmbusError::TooShort { .. } => "telegram ends inside a record".into(),
        WmbusError::Invalid(m) => format!("invalid: {m}"),
        other => other.to_string(),
    }
}
