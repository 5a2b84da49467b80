//! The packet-forwarder source: Semtech UDP (GWMP v1/v2) on a UDP socket.
//!
//! The socket loop never waits for the journal or the broker: it hands each PUSH_DATA's frames to the
//! pipeline and answers PUSH_ACK from a small task once the pipeline says the frames are on disk. Bad
//! datagrams are counted and logged, never fatal.

pub mod packet;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ingest::RadioFrame;
use crate::ops::counters::Counters;
use crate::runtime::IngestRequest;
use packet::{Modulation, Packet, RxPkError};

/// Binds the socket (so that a bad address fails the start, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    use anyhow::Context;
    UdpSocket::bind(addr).await.with_context(|| format!("binding the gwmp source to {addr}"))
}

pub async fn run(
    name: String,
    socket: UdpSocket,
    pipeline: mpsc::Sender<IngestRequest>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; they do not end the source.
                    tracing::debug!(source = %name, error = %e, "udp receive error");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        Counters::inc(&counters.datagrams);
        let Some(datagram) = buf.get(..len) else { continue };
        match packet::parse(datagram) {
            Ok(Packet::PushData { version, token, gateway_eui, body }) => {
                Counters::inc(&counters.push_data);
                if body.stat.is_some() {
                    Counters::inc(&counters.stat);
                }
                let mut frames = Vec::with_capacity(body.rxpk.len());
                for rx in body.rxpk {
                    match rx {
                        Ok(rx) => {
                            let (sf, is_lora) = match rx.modulation {
                                Modulation::Lora { sf, .. } => (Some(sf), true),
                                _ => (None, false),
                            };
                            if !is_lora {
                                continue; // FSK frames are not LoRaWAN uplinks for us.
                            }
                            frames.push(RadioFrame {
                                phy: rx.data,
                                rssi: rx.rssi,
                                snr: rx.lsnr,
                                freq_hz: rx.freq_hz,
                                sf,
                            });
                        }
                        Err(RxPkError::CrcFailed { .. }) => {
                            Counters::inc(&counters.rxpk_crc);
                            Counters::inc(&counters.rxpk_bad);
                        }
                        Err(e) => {
                            Counters::inc(&counters.rxpk_bad);
                            tracing::warn!(source = %name, gateway = %gateway_eui, error = %e, "rxpk refused");
                        }
                    }
                }
                let ack = packet::push_ack(version, token);
                if frames.is_empty() {
                    send(&socket, &ack, from).await;
                    continue;
                }
                let (done, on_disk) = oneshot::channel();
                if pipeline.send(IngestRequest { frames, done }).await.is_err() {
                    break; // the pipeline is gone: we are shutting down
                }
                let socket = socket.clone();
                // Acknowledge only what is on disk: no PUSH_ACK if the journal write failed.
                tokio::spawn(async move {
                    if let Ok(true) = on_disk.await {
                        send(&socket, &ack, from).await;
                    }
                });
            }
            Ok(Packet::PullData { version, token, .. }) => {
                Counters::inc(&counters.pull_data);
                send(&socket, &packet::pull_ack(version, token), from).await;
            }
            Ok(Packet::TxAck { .. }) => Counters::inc(&counters.tx_ack),
            Ok(other) => {
                Counters::inc(&counters.datagrams_bad);
                tracing::warn!(source = %name, %from, kind = other.kind(), "unexpected datagram type from a packet forwarder");
            }
            Err(e) => {
                Counters::inc(&counters.datagrams_bad);
                tracing::warn!(source = %name, %from, len, error = %e, "bad datagram");
            }
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to).await {
        tracing::debug!(%to, error = %e, "udp send failed");
    }
}
