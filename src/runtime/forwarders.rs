//! Small tasks between the sources and the pipeline: frames and meter samples from local sources into
//! the pipeline's queue, downlinks to an SX127x chip, and downlinks routed to sources that cannot send.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::bus::{IngestRequest, SourceDownlink};
use crate::counters::Counters;
use crate::ingest::{MeterSample, RadioFrame};
use crate::io::sx127x;

/// Frames from a local radio (SX127x, serial module) into the pipeline. Nothing outside waits for an
/// acknowledgement here, but the frames are journaled the same way.
pub(super) async fn forward_frames(
    source: usize,
    mut rx: mpsc::Receiver<RadioFrame>,
    pipeline: mpsc::Sender<IngestRequest>,
) {
    while let Some(mut frame) = rx.recv().await {
        frame.origin.source = source;
        let (done, _) = oneshot::channel();
        if pipeline.send(IngestRequest { frames: vec![frame], meter: vec![], done }).await.is_err() {
            break;
        }
    }
}

pub(super) async fn forward_samples(mut rx: mpsc::Receiver<MeterSample>, pipeline: mpsc::Sender<IngestRequest>) {
    while let Some(sample) = rx.recv().await {
        let (done, _) = oneshot::channel();
        if pipeline.send(IngestRequest { frames: vec![], meter: vec![sample], done }).await.is_err() {
            break;
        }
    }
}

/// Downlinks for a source with an SX127x: sent by the same chip (class C on RX2 parameters).
pub(super) async fn forward_downlinks_to_chip(
    mut rx: mpsc::Receiver<SourceDownlink>,
    chip: mpsc::Sender<sx127x::TxRequest>,
) {
    while let Some(d) = rx.recv().await {
        let p = &d.params;
        if chip.send(sx127x::TxRequest::downlink(d.phy, p.freq_hz, p.sf, p.bw_khz)).await.is_err() {
            break;
        }
    }
}

/// Sources that cannot transmit: a downlink routed to them is counted and dropped.
pub(super) async fn drop_downlinks(name: String, mut rx: mpsc::Receiver<SourceDownlink>, counters: Arc<Counters>) {
    while let Some(d) = rx.recv().await {
        Counters::inc(&counters.downlinks_failed);
        tracing::warn!(source = %name, device = %d.device, "this source cannot transmit: downlink dropped");
    }
}
