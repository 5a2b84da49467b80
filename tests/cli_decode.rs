//! `district-gateway decode ...` as an operator uses it (the real binary): a wM-Bus telegram decrypted
//! with its key, the same with a wrong key (an error, no reading), bad input, and a LoRaWAN payload
//! decoded with a native profile.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_district-gateway");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// wmbusmeters' `kadenwater` test case: an encrypted (security mode 5) water meter telegram and its key.
const TELEGRAM: &str = "4e4430590010221901077a71004005f8c0d59e1536f306ffcd58075fda84b6f21fc0f33df92c8cf5fcab599bd1fe73b0db2e5d9e6d8a2e3363d67db2cdaf16c26d57886b70ee0f77fc116753809bb5";
const KEY: &str = "82B0551191F51D66EFCDAB8967452301";

#[test]
fn decode_wmbus_with_key_prints_one_json_object_with_metrics() {
    let (code, out, err) = run(&["decode", "wmbus", "--key", KEY, TELEGRAM]);
    assert_eq!(code, 0, "stderr: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["id"], "19221000");
    assert_eq!(v["manufacturer"], "VIP");
    assert_eq!(v["type"], "water");
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["access_number"], 0x71);
    // wmbusmeters decodes total_m3 = 94.6123 from this telegram.
    assert_eq!(v["metrics"]["volume_m3"].as_f64(), Some(94.6123), "{out}");
    assert!(!out.contains(KEY) && !out.to_lowercase().contains(&KEY.to_lowercase()));
}

#[test]
fn decode_wmbus_wrong_or_missing_key_is_an_error_never_a_reading() {
    let wrong = "00112233445566778899AABBCCDDEEFF";
    let (code, out, err) = run(&["decode", "wmbus", "--key", wrong, TELEGRAM]);
    assert_eq!(code, 1, "stdout: {out}");
    assert!(out.is_empty(), "no reading on stdout: {out}");
    assert!(err.contains("wrong key"), "{err}");
    assert!(!err.contains(wrong), "the key never appears: {err}");
    let (code, out, err) = run(&["decode", "wmbus", TELEGRAM]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("no key"), "{err}");
}

#[test]
fn decode_wmbus_bad_arguments_exit_2_without_echoing_the_key() {
    let (code, _, err) = run(&["decode", "wmbus", "--key", "0011", TELEGRAM]);
    assert_eq!(code, 2);
    assert!(err.contains("--key: expected 32 hex digits, got 4"), "{err}");
    let (code, _, err) = run(&["decode", "wmbus", "--key", "zz112233445566778899AABBCCDDEEFF", TELEGRAM]);
    assert_eq!(code, 2);
    assert!(!err.contains("zz11"), "{err}");
    let (code, _, err) = run(&["decode", "wmbus", "4e44"]);
    assert_eq!(code, 1);
    assert!(err.contains("too short"), "{err}");
}

#[test]
fn decode_lorawan_with_a_native_profile() {
    // The Milesight EM310-UDL example payload of PRODUCT.md's reading.
    let (code, out, err) =
        run(&["decode", "lorawan", "--profile", "milesight-em310-udl", "--port", "85", "01755c03824408040001"]);
    assert_eq!(code, 0, "stderr: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["metrics"]["distance_mm"], 2116, "{out}");
    assert_eq!(v["metrics"]["battery_pct"], 92, "{out}");
    let (code, _, err) = run(&["decode", "lorawan", "--profile", "no-such-thing", "--port", "1", "00"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown profile"), "{err}");
}
