//! Unit-test helpers (compiled only with `cfg(test)`). The integration tests have the same rule in
//! `tests/common/mod.rs` (`require`): a test never passes by skipping when `CI` is set.

/// Whether tests must not skip: `CI` is set (`.ci/run` sets `CI=1`) to anything but `""`, `0` or `false`.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `available`, or: under CI the test FAILS naming `what` is missing and how to install it; elsewhere
/// a `SKIPPED` line is printed and false returned (the caller returns).
#[track_caller]
pub fn require(what: &str, install_hint: &str, available: bool) -> bool {
    if available {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("this test").to_string();
    if ci() {
        panic!("{test}: {what} is missing, and CI is set, so the test fails instead of skipping: {install_hint}");
    }
    eprintln!("SKIPPED {test}: {what} is missing ({install_hint}; with CI=1 this fails)");
    false
}

/// Whether `python3 -c "import MODULE"` works.
pub fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
