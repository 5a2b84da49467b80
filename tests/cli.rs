//! The command line as an operator uses it: check-config, run refusing a bad config, --version.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_district-gateway");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD: &str = "tests/data/config/many-mistakes.toml";

/// Every problem in the bad example, as FILE:LINE:COL: key.path (the message follows).
const EXPECTED: &[&str] = &[
    "many-mistakes.toml:2:16: devices_file:",
    "many-mistakes.toml:5:6: gateway.id:",
    "many-mistakes.toml:6:1: gateway.colour: unknown key",
    "many-mistakes.toml:10:1: mqtt.keepalive: unknown key",
    "many-mistakes.toml:13:21: buffer.flush_interval_ms:",
    "many-mistakes.toml:14:10: buffer.policy:",
    "many-mistakes.toml:18:8: source[0].bind:",
    "many-mistakes.toml:24:13: device[0].app_s_key: expected 32 hex digits, got 28",
    "many-mistakes.toml:26:1: device[1].join_eui: required key is missing",
    "many-mistakes.toml:27:8: device[1].name: duplicate device name",
    "many-mistakes.toml:29:1: device[1].app_eui: unknown key",
];

#[test]
fn check_config_lists_every_problem_with_line_and_column_and_exits_2() {
    let (code, _, err) = run(&["check-config", "--config", BAD]);
    assert_eq!(code, 2, "stderr:\n{err}");
    for e in EXPECTED {
        assert!(err.contains(e), "missing `{e}` in:\n{err}");
    }
}

#[test]
fn run_refuses_an_invalid_config_with_the_same_message() {
    let (code, _, err) = run(&["run", "--config", BAD]);
    assert_eq!(code, 2);
    for e in EXPECTED {
        assert!(err.contains(e), "missing `{e}` in:\n{err}");
    }
    assert!(err.contains("refusing to start"));
}

#[test]
fn the_example_config_is_valid() {
    let (code, out, err) = run(&["check-config", "--config", "config/gateway.toml"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/gateway.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/gateway.toml"), "{err}");
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn keys_never_appear_in_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gateway.toml");
    // A key one digit short, and a key with a bad character: the messages must not echo them.
    std::fs::write(
        &p,
        "[gateway]\nid = \"k\"\ndata_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\
         [[device]]\nname = \"a\"\ndev_addr = \"26011bda\"\nnwk_s_key = \"c0ffee0102030405060708090a0b0c0\"\n\
         app_s_key = \"c0ffee0102030405060708090a0b0cXY\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    let all = format!("{out}{err}").to_lowercase();
    assert!(all.contains("nwk_s_key") && all.contains("app_s_key"), "{all}");
    assert!(!all.contains("c0ffee"), "a key leaked into an error message:\n{all}");
}
