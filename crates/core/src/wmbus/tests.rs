use super::*;
use crate::test_support::XorShift;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// wmbusmeters' `kadenwater` case: a mode 5 (AES-CBC) water meter telegram and its test key.
const KADEN: &str = "4e4430590010221901077a71004005f8c0d59e1536f306ffcd58075fda84b6f21fc0f33df92c8cf5fcab599bd1fe73b0db2e5d9e6d8a2e3363d67db2cdaf16c26d57886b70ee0f77fc116753809bb5";
const KADEN_KEY: [u8; 16] =
    [0x82, 0xB0, 0x55, 0x11, 0x91, 0xF5, 0x1D, 0x66, 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01];

#[test]
fn plain_short_header_telegram() {
    // abbb23 case from wmbusmeters' tests (plaintext, mode 0; VIFE 0x00 "no error").
    let f = hex("844442040011223320027A3E0000200E840017495200000004FFA0150000000004FFA1150000000004FFA2150000000004FFA3150000000007FFA600000000000000000007FFA700000000000000000007FFA800000000000000000007FFA90000000000000000000DFD8E0007302E38322E31420DFFAA000B3030312D313131203332421F");
    let t = decode_telegram(&f, None).unwrap();
    assert_eq!(t.header.id, "33221100");
    assert_eq!(t.header.manufacturer, "ABB");
    assert_eq!(t.header.device_type_name(), "electricity");
    assert_eq!((t.access_number, t.status, t.encrypted), (Some(0x3E), Some(0), false));
    assert_eq!(t.metrics["energy_kwh"], serde_json::json!(5249.17));
}

#[test]
fn mode5_decrypts_with_the_key_and_a_wrong_key_is_an_error() {
    let f = hex(KADEN);
    let t = decode_telegram(&f, Some(&KADEN_KEY)).unwrap();
    assert!(t.encrypted);
    assert_eq!(t.header.id, "19221000");
    assert_eq!(t.metrics["volume_m3"], serde_json::json!(94.6123));
    let mut wrong = KADEN_KEY;
    wrong[15] ^= 1;
    assert_eq!(decode_telegram(&f, Some(&wrong)), Err(WmbusError::WrongKey));
    assert_eq!(decode_telegram(&f, None), Err(WmbusError::KeyRequired));
    // The error text never carries the key.
    let text = WmbusError::WrongKey.to_string();
    assert!(!text.to_lowercase().contains("82b055"));
}

#[test]
fn format_a_crcs_are_checked_and_stripped() {
    let f = hex(KADEN);
    let with = crc::add_format_a_crcs(&f);
    assert_eq!(decode_telegram(&with, Some(&KADEN_KEY)).unwrap(), decode_telegram(&f, Some(&KADEN_KEY)).unwrap());
    let mut bad = with.clone();
    bad[30] ^= 0x01;
    assert_eq!(decode_telegram(&bad, Some(&KADEN_KEY)), Err(WmbusError::BadCrc));
}

#[test]
fn mode5_round_trip_of_our_own_telegram() {
    // A plaintext payload (2F2F, then volume 0x0413 = 12.345 m³, flow temperature, a date) encrypted
    // with crypt::mode5_encrypt must come back as the same metrics.
    let key = [7u8; 16];
    let mut frame = hex("2E44931578563412330778");
    frame[10] = 0x7A;
    frame.extend_from_slice(&[0x21, 0x00, 0x10, 0x05]); // ACC, status, config: mode 5, 1 block
    let mut payload = hex("2F2F0413393000000259D204026C7F2A");
    let mut m_a = [0u8; 8];
    m_a.copy_from_slice(&frame[2..10]);
    crypt::mode5_encrypt(&key, &crypt::mode5_iv(&m_a, 0x21), &mut payload).unwrap();
    frame.extend_from_slice(&payload);
    frame[0] = (frame.len() - 1) as u8;
    let t = decode_telegram(&frame, Some(&key)).unwrap();
    assert_eq!(t.metrics["volume_m3"], serde_json::json!(12.345));
    assert_eq!(t.metrics["flow_temperature_c"], serde_json::json!(12.34));
    assert_eq!(t.metrics["meter_date"], serde_json::json!("2019-10-31"));
    assert_eq!(t.header.manufacturer, "ELS");
    assert_eq!(t.header.device_type_name(), "water");
}

#[test]
fn record_naming_storage_tariff_subunit_and_function() {
    let mut m = Metrics::new();
    let mut w = Vec::new();
    // volume (storage 0), volume storage 1, energy tariff 1 (DIFE 0x10), max power, volume subunit 1.
    let p = hex("0413E8030000441310270000841003D2040000142B0A000000844013C8000000");
    records::decode(&p, &mut m, &mut w).unwrap();
    assert_eq!(m["volume_m3"], serde_json::json!(1.0));
    assert_eq!(m["volume_m3_storage_1"], serde_json::json!(10.0));
    assert_eq!(m["energy_kwh_tariff_1"], serde_json::json!(1.234));
    assert_eq!(m["power_w_max"], serde_json::json!(10));
    assert_eq!(m["volume_m3_subunit_1"], serde_json::json!(0.2));
}

/// Every prefix and many random mutations of a set of real telegrams: never a panic.
#[test]
fn truncated_and_mutated_telegrams_never_panic() {
    let seeds = [
        hex(KADEN),
        hex("844442040011223320027A3E0000200E840017495200000004FFA0150000000004FFA1150000000004FFA2150000000004FFA3150000000007FFA6000000000000000000"),
        hex("685656680800727537680001061507CCE800000C7875376800046D1DB458340413F73E0000023B0D00441385010000426C413402270902"),
        hex("2F446850313233347462A2069F255900B029310000000306060906030609070606050509050505050407040605070500"),
    ];
    let mut rng = XorShift(0x1234_5678_9abc_def0);
    for seed in &seeds {
        for n in 0..=seed.len() {
            let _ = decode_telegram(&seed[..n], Some(&KADEN_KEY));
            let _ = decode_telegram_with(&seed[..n], None, DecodeOptions { already_decrypted: true });
        }
        for _ in 0..2000 {
            let mut f = seed.clone();
            for _ in 0..(rng.next() % 4 + 1) {
                let i = (rng.next() as usize) % f.len();
                f[i] = rng.next() as u8;
            }
            let _ = decode_telegram(&f, Some(&KADEN_KEY));
            let _ = decode_telegram_with(&f, None, DecodeOptions { already_decrypted: true });
            let _ = decode_telegram(&crc::add_format_a_crcs(&f), None);
        }
    }
}

/// Fuzz regression (`wmbus_telegram`, crash-84282c7d): a record with more DIFE bytes than EN 13757-3's
/// ten shifted the storage number past 64 bits (a panic with overflow checks). Now an error, and the
/// fuzzer's input decodes to an error or a reading, never a panic.
#[test]
fn more_than_ten_dife_bytes_are_an_error() {
    let crash = hex("FFFFFFFFFFFFFFFFFFFF788FFFFFFFFFFFFFFFFFFFFFFFFFFFFF8F3D8F");
    let _ = decode_telegram(&crash, None);
    let _ = decode_telegram(&crash, Some(&KADEN_KEY));
    let _ = decode_telegram_with(&crash, None, DecodeOptions { already_decrypted: true });
    // DIF 0x84 (32-bit integer, a DIFE follows), eleven DIFEs, VIF 0x13 (volume, litres), four data bytes.
    let mut record = vec![0x84];
    record.extend([0x81; 10]);
    record.push(0x01);
    record.extend([0x13, 1, 0, 0, 0]);
    let (mut m, mut w) = (Metrics::new(), Vec::new());
    assert!(matches!(super::records::decode(&record, &mut m, &mut w), Err(WmbusError::Invalid(_))));
    // Ten are fine.
    let mut record = vec![0x84];
    record.extend([0x81; 9]);
    record.push(0x01);
    record.extend([0x13, 1, 0, 0, 0]);
    let (mut m, mut w) = (Metrics::new(), Vec::new());
    assert!(super::records::decode(&record, &mut m, &mut w).is_ok(), "{w:?}");
}
