//! The smart-meter source: an SML optical head on a serial port (9600 8N1 by default).
//!
//! The port is opened with tokio-serial and read in whatever chunks arrive; the pure framer in
//! `crate::meter` finds the frames, checks their CRC and resynchronises on garbage. Every good frame
//! with OBIS values becomes one meter sample for the configured device. A silent port never blocks
//! anything; a port that disappears (USB head unplugged) is retried with backoff until it is back.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_serial::SerialPortBuilderExt;

use crate::config::SmlSource;
use crate::ingest::MeterSample;
use crate::io::status::{sleep_or_shutdown, Backoff, SourceStatus};
use crate::meter::{self, FrameEvent, SmlFramer};

/// If nothing arrives for this long, the source says so (the port stays open: meters are often slow).
const SILENT_AFTER: Duration = Duration::from_secs(60);

pub async fn run(
    cfg: SmlSource,
    out: mpsc::Sender<MeterSample>,
    status: Arc<SourceStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let port = tokio_serial::new(cfg.port.to_string_lossy(), cfg.baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .open_native_async();
        let mut port = match port {
            Ok(p) => p,
            Err(e) => {
                status.set_down(format!("cannot open {}: {e}", cfg.port.display()));
                tracing::debug!(source = %cfg.name, port = %cfg.port.display(), error = %e, "meter port not available");
                if sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
                    break;
                }
                status.set_retrying();
                continue;
            }
        };
        status.set_up();
        tracing::info!(source = %cfg.name, port = %cfg.port.display(), baud = cfg.baud, "meter port open");
        let mut framer = SmlFramer::new();
        let mut buf = vec![0u8; 4096];
        let ended = loop {
            let n = tokio::select! {
                r = tokio::time::timeout(SILENT_AFTER, port.read(&mut buf)) => match r {
                    Err(_) => {
                        status.error("no data from the meter for 60 s");
                        continue;
                    }
                    Ok(Ok(0)) => break false, // the other end closed (pty) or the device went away
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        status.set_down(format!("read error: {e}"));
                        break false;
                    }
                },
                _ = shutdown.changed() => break true,
            };
            let Some(chunk) = buf.get(..n) else { continue };
            for ev in framer.push(chunk) {
                match ev {
                    FrameEvent::Frame(frame) => match meter::values(&frame) {
                        Ok(values) => {
                            let metrics = meter::metrics(&values);
                            if metrics.is_empty() {
                                continue;
                            }
                            status.frame();
                            backoff.reset();
                            let sample = MeterSample {
                                device: cfg.device.clone(),
                                at: crate::clock::now(),
                                metrics,
                                wmbus: None,
                            };
                            if out.try_send(sample).is_err() {
                                status.dropped();
                            }
                        }
                        Err(e) => {
                            status.error(format!("SML parse error: {e}"));
                            tracing::debug!(source = %cfg.name, error = %e, "SML frame refused");
                        }
                    },
                    FrameEvent::CrcError { .. } => {
                        status.crc_error();
                        tracing::debug!(source = %cfg.name, "SML frame with a bad CRC");
                    }
                    FrameEvent::Invalid { .. } | FrameEvent::Oversize { .. } => status.error("invalid SML framing"),
                    FrameEvent::Garbage { .. } => {}
                }
            }
        };
        if ended {
            break;
        }
        status.set_retrying();
        if sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
            break;
        }
    }
    status.set_stopped();
}
