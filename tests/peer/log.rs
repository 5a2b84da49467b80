//! The in-process daemon's log, captured for the tests that check what it recorded (e.g. that a
//! confirmed downlink was acknowledged). One subscriber per test binary; tests look for lines that
//! name their own device.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOG: OnceLock<Buf> = OnceLock::new();

/// Starts capturing (idempotent): info and above, no colours.
pub fn capture() {
    LOG.get_or_init(|| {
        let buf = Buf::default();
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        buf
    });
}

/// The log lines that contain every one of `parts`.
pub fn lines_with(parts: &[&str]) -> Vec<String> {
    let Some(buf) = LOG.get() else { return Vec::new() };
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    text.lines().filter(|l| parts.iter().all(|p| l.contains(p))).map(str::to_string).collect()
}
