//! What every source on a USB serial device does the same way (serial LoRa modules, wM-Bus sticks):
//! open the port 8N1 without flow control, telling "the device node is gone" (unplugged) from other
//! failures; and keep one session running: wait for the device node to come back, run the session,
//! back off after a failure (the backoff starts again after a session that ran long enough), until
//! shutdown or the consumer goes away.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::io::status::{self, Backoff, SourceState, SourceStatus};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("serial device {0} is missing (unplugged?)")]
    Missing(PathBuf),
    #[error("cannot open serial device {path}: {detail}")]
    Open { path: PathBuf, detail: String },
}

/// Opens `path` at `baud`, 8N1, no flow control.
pub fn open(path: &Path, baud: u32) -> Result<tokio_serial::SerialStream, OpenError> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(path.to_string_lossy().into_owned(), baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|e| match e.kind {
            tokio_serial::ErrorKind::NoDevice => OpenError::Missing(path.to_path_buf()),
            tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => OpenError::Missing(path.to_path_buf()),
            _ => OpenError::Open { path: path.to_path_buf(), detail: e.to_string() },
        })
}

/// How a session ended without an error.
pub enum End {
    Shutdown,
    OutputClosed,
}

/// The supervision settings of one serial source.
pub struct Supervision<'a> {
    /// Source name for logs.
    pub name: &'a str,
    /// "serial LoRa module", "wM-Bus stick": for logs.
    pub what: &'a str,
    pub port: &'a Path,
    pub device_poll: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Runs `session` again and again until shutdown (or the consumer is gone); sets `status` as it goes.
pub async fn supervise<F, Fut, E>(
    s: Supervision<'_>,
    status: Arc<SourceStatus>,
    mut shutdown: watch::Receiver<bool>,
    mut session: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<End, E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::new(s.backoff_min, s.backoff_max);
    let stable_after = s.backoff_max.max(Duration::from_secs(10));
    let mut failed_before = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !s.port.exists() {
            let why = format!("waiting for {} to come back", s.port.display());
            if failed_before || status.state() != SourceState::Down {
                tracing::warn!(source = %s.name, "{why}");
            }
            status.set_down(why);
            failed_before = true;
            if wait_for_device(s.port, s.device_poll, &mut shutdown).await {
                break;
            }
            continue;
        }
        if failed_before {
            status.restart();
            status.set_retrying();
        }
        let started = std::time::Instant::now();
        match session(shutdown.clone()).await {
            Ok(End::Shutdown) => break,
            Ok(End::OutputClosed) => {
                tracing::info!(source = %s.name, "consumer gone; {} source stops", s.what);
                break;
            }
            Err(e) => {
                if started.elapsed() >= stable_after {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(source = %s.name, error = %e, retry_in_ms = delay.as_millis() as u64, "{} down", s.what);
                status.set_down(e.to_string());
                failed_before = true;
                if status::sleep_or_shutdown(delay, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    status.set_stopped();
}

/// Polls until `path` exists again; true on shutdown.
pub async fn wait_for_device(path: &Path, every: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        if status::sleep_or_shutdown(every, shutdown).await {
            return true;
        }
        if path.exists() {
            return false;
        }
    }
}
