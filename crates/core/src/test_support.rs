//! Test helpers for the unit tests of both crates (the shell re-exports them). The integration tests have the same rule in
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

/// The repository (workspace) root, where test data, codecs and tools are kept.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared public test vectors: `../shared/vectors` beside the repository, else `/work/shared/vectors`.
pub fn vectors_dir() -> std::path::PathBuf {
    let near = repo_root().join("../shared/vectors");
    if near.is_dir() {
        near
    } else {
        std::path::PathBuf::from("/work/shared/vectors")
    }
}

/// Tiny deterministic PRNG for the parsers' no-panic loops.
pub struct XorShift(pub u64);

impl XorShift {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
