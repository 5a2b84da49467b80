//! The packet-forwarder source: Semtech UDP (GWMP v1/v2) on a UDP socket.
//!
//! Upstream: the socket loop never waits for the journal or the broker. It hands each PUSH_DATA's
//! frames to the pipeline and answers PUSH_ACK from a small task once the pipeline says the frames are
//! on disk. Downstream: downlinks from the network server go out as PULL_RESP to the address of the
//! gateway's latest PULL_DATA; TX_ACK errors are reported back. Bad datagrams are counted and logged,
//! never fatal.

pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bus::{IngestRequest, SourceDownlink, TxFailed};
use crate::counters::Counters;
use crate::ingest::{Origin, RadioFrame};
use crate::keys::Eui64;
use packet::{Modulation, Packet, RxPkError};

/// PULL_RESP tokens remembered for matching TX_ACKs (oldest forgotten first).
const MAX_PENDING_TX: usize = 1024;

/// Binds the socket (so that a bad address fails the start, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    use anyhow::Context;
    UdpSocket::bind(addr).await.with_context(|| format!("binding the gwmp source to {addr}"))
}

/// The channels a source task is wired with.
pub struct Wiring {
    pub status: Arc<crate::io::status::SourceStatus>,
    pub pipeline: mpsc::Sender<IngestRequest>,
    /// Downlinks a gateway could not send, reported to the pipeline (the network server retries them).
    pub tx_failed: mpsc::Sender<TxFailed>,
    pub downlinks: mpsc::Receiver<SourceDownlink>,
    pub counters: Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
}

pub async fn run(name: String, index: usize, socket: UdpSocket, mut w: Wiring) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65_536];
    // Where each gateway listens for downlinks (the source address of its PULL_DATA).
    let mut pull_addr: HashMap<Eui64, SocketAddr> = HashMap::new();
    let mut pending_tx: HashMap<[u8; 2], (String, Option<u32>)> = HashMap::new();
    let mut pending_order: VecDeque<[u8; 2]> = VecDeque::new();
    let mut next_token: u16 = rand::random();
    let counters = w.counters.clone();
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
            Some(d) = w.downlinks.recv() => {
                // Gateway 0 (a device never heard, sent through the only source that transmits) or
                // a gateway gone quiet: the one gateway pulling here, if there is exactly one.
                let only = || (pull_addr.len() == 1).then(|| pull_addr.values().next().copied()).flatten();
                let Some(to) = pull_addr.get(&d.gateway).copied().or_else(only) else {
                    Counters::inc(&counters.downlinks_failed);
                    tracing::warn!(source = %name, gateway = %d.gateway, device = %d.device, "no PULL_DATA from this gateway yet: downlink dropped");
                    if let Some(f) = d.f_cnt_down {
                        let _ = w.tx_failed.send(TxFailed { device: d.device, f_cnt_down: f }).await;
                    }
                    continue;
                };
                next_token = next_token.wrapping_add(1);
                let token = next_token.to_le_bytes();
                send(&socket, &packet::build_txpk_pull_resp(2, token, &packet::TxPk::from_params(&d.params, d.phy.clone())), to).await;
                Counters::inc(&counters.downlinks_sent);
                tracing::debug!(source = %name, device = %d.device, f_cnt_down = ?d.f_cnt_down, imme = d.params.imme, "downlink sent");
                pending_tx.insert(token, (d.device, d.f_cnt_down));
                pending_order.push_back(token);
                if pending_order.len() > MAX_PENDING_TX {
                    if let Some(old) = pending_order.pop_front() {
                        pending_tx.remove(&old);
                    }
                }
                continue;
            }
            _ = w.shutdown.changed() => break,
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
                            let Modulation::Lora { sf, bw_khz } = rx.modulation else {
                                continue; // FSK frames are not LoRaWAN uplinks for us.
                            };
                            frames.push(RadioFrame {
                                phy: rx.data,
                                rssi: rx.rssi,
                                snr: rx.lsnr,
                                freq_hz: rx.freq_hz,
                                sf: Some(sf),
                                bw_khz,
                                tmst: rx.tmst,
                                origin: Origin { source: index, gateway: gateway_eui },
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
                for _ in &frames {
                    w.status.frame();
                }
                let ack = packet::push_ack(version, token);
                if frames.is_empty() {
                    send(&socket, &ack, from).await;
                    continue;
                }
                let (done, on_disk) = oneshot::channel();
                if w.pipeline.send(IngestRequest { frames, meter: vec![], done }).await.is_err() {
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
            Ok(Packet::PullData { version, token, gateway_eui }) => {
                Counters::inc(&counters.pull_data);
                pull_addr.insert(gateway_eui, from);
                send(&socket, &packet::pull_ack(version, token), from).await;
            }
            Ok(Packet::TxAck { token, error, gateway_eui, .. }) => {
                Counters::inc(&counters.tx_ack);
                let status = packet::classify_tx_ack(error.as_deref());
                let sent = pending_tx.remove(&token);
                if !status.is_ok() {
                    Counters::inc(&counters.downlinks_failed);
                    tracing::warn!(source = %name, gateway = %gateway_eui, error = status.label(), device = ?sent.as_ref().map(|s| &s.0), "gateway refused a downlink");
                    if let Some((device, Some(f_cnt_down))) = sent {
                        let _ = w.tx_failed.send(TxFailed { device, f_cnt_down }).await;
                    }
                }
            }
            Ok(other) => {
                Counters::inc(&counters.datagrams_bad);
                tracing::warn!(source = %name, %from, kind = other.kind(), "unexpected datagram type from a packet forwarder");
            }
            Err(e) => {
                Counters::inc(&counters.datagrams_bad);
                w.status.error(format!("bad datagram: {e}"));
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
