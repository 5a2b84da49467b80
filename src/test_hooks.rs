//! Hooks for tests that must observe an order inside the shell (`tests/ack_after_fsync.rs`). Off
//! unless a test installs one: then it costs one atomic load per journal fsync. Not part of the API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A function the store calls on its flush thread; it may block (to hold the fsync back).
pub type Hook = Arc<dyn Fn() + Send + Sync>;

static INSTALLED: AtomicBool = AtomicBool::new(false);
static BEFORE_FSYNC: Mutex<Option<Hook>> = Mutex::new(None);

/// Installs (`Some`) or removes (`None`) the hook every `Store` in this process calls just before it
/// fsyncs journal data that a flush has to make durable.
pub fn set_before_fsync(hook: Option<Hook>) {
    let mut h = BEFORE_FSYNC.lock().unwrap_or_else(|p| p.into_inner());
    INSTALLED.store(hook.is_some(), Ordering::SeqCst);
    *h = hook;
}

pub(crate) fn before_fsync() {
    if !INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    let hook = BEFORE_FSYNC.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(h) = hook {
        h();
    }
}
