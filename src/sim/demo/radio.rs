//! The simulated devices' side of the wire: a packet forwarder that carries their encrypted LoRaWAN
//! uplinks to the daemon's GWMP source (PUSH_DATA, PUSH_ACK), answers its downlinks with TX_ACK and
//! hands each to the addressed class C device; and the feeder meter's serial line, a pseudo-terminal.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use base64::Engine;
use chrono::Duration;

use super::district::Uplink;
use super::Demo;
use crate::io::gwmp::packet::{self, build_pull_data, build_push_data, Packet, RxPkOut};
use crate::keys::{DevAddr, Eui64};
use crate::sim::frames;

/// The simulated concentrator's EUI.
const GW_EUI: Eui64 = Eui64(0xaa55_5a00_0000_0001);

/// The feeder meter's serial line: a pseudo-terminal whose slave the daemon opens.
pub(super) struct MeterLine {
    master: OwnedFd,
    _slave: OwnedFd,
    pub(super) path: PathBuf,
    pub(super) written: u64,
    dropped: u64,
}

impl MeterLine {
    pub(super) fn open() -> anyhow::Result<MeterLine> {
        use nix::sys::termios;
        let pty = nix::pty::openpty(None, None).context("opening a pseudo-terminal for the meter")?;
        let mut t = termios::tcgetattr(&pty.slave)?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        let flags = nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(MeterLine { master: pty.master, _slave: pty.slave, path, written: 0, dropped: 0 })
    }

    /// Writes a telegram; a full line (nobody reading) drops it, as a real meter's push would be lost.
    pub(super) fn send(&mut self, bytes: &[u8]) {
        match nix::unistd::write(&self.master, bytes) {
            Ok(n) if n == bytes.len() => self.written += 1,
            _ => self.dropped += 1,
        }
    }
}

impl Demo {
    pub(super) async fn pull_data(&mut self) {
        self.token = self.token.wrapping_add(1);
        let _ = self.socket.send_to(&build_pull_data(2, self.token.to_le_bytes(), GW_EUI), self.gwmp).await;
        self.last_pull = Instant::now();
    }

    pub(super) async fn send_uplink(&mut self, u: Uplink) {
        let now = self.now();
        let Some(d) = self.district.devices.get_mut(u.device) else { return };
        d.sim.f_port = u.f_port;
        let f_cnt = d.sim.f_cnt;
        let phy = d.sim.uplink(&u.payload);
        let name = d.sim.name.clone();
        self.token = self.token.wrapping_add(1);
        let n = self.sent;
        let rx = RxPkOut {
            tmst: (self.started.elapsed().as_micros() & 0xffff_ffff) as u32,
            freq_hz: 868_100_000 + 200_000 * (n % 3),
            sf: 7 + (u.device % 3) as u8,
            bw_khz: 125,
            rssi: -70 - (u.device as i32 * 7) % 45,
            lsnr: 9.5 - (u.device % 7) as f64,
            data: phy,
        };
        let datagram = build_push_data(2, self.token.to_le_bytes(), GW_EUI, &[rx]);
        if self.socket.send_to(&datagram, self.gwmp).await.is_ok() {
            self.sent += 1;
            self.pending_push.insert(self.token, (name, f_cnt, now));
        }
    }

    pub(super) async fn on_datagram(&mut self, datagram: &[u8]) {
        match packet::parse(datagram) {
            Ok(Packet::PushAck { token, .. }) => {
                if let Some((name, f_cnt, at)) = self.pending_push.remove(&u16::from_le_bytes(token)) {
                    if self.rec.outages.last().is_some_and(|(s, e)| *s <= at && e.is_none_or(|e| at < e)) {
                        self.acked_during_outage += 1;
                    }
                    self.acked.insert((name, f_cnt));
                }
            }
            Ok(Packet::PullResp { token, json, .. }) => {
                let data = json["txpk"]["data"].as_str().unwrap_or("");
                let phy = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
                // TX_ACK: the (simulated) concentrator sends it.
                let mut ack = vec![2, token[0], token[1], 0x05];
                ack.extend_from_slice(&GW_EUI.0.to_be_bytes());
                let _ = self.socket.send_to(&ack, self.gwmp).await;
                self.downlink(&phy).await;
            }
            _ => {}
        }
    }

    /// A downlink on air: the addressed class C device opens it (MIC, decryption) and acts on it.
    async fn downlink(&mut self, phy: &[u8]) {
        let Some(addr) = phy.get(1..5).map(|b| DevAddr(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))) else {
            return;
        };
        let Some(i) = self.district.devices.iter().position(|d| d.sim.dev_addr == addr) else { return };
        let d = &self.district.devices[i];
        let last = self.f_cnt_down.get(&i).copied();
        let Ok(dl) = frames::open_downlink_after(phy, &d.sim.nwk_s_key, &d.sim.app_s_key, last) else { return };
        self.f_cnt_down.insert(i, dl.f_cnt_down);
        self.downlinks += 1;
        let before = d.load.as_ref().map(|l| (l.label(), l.power_kw()));
        let answer = self.district.downlink(i, dl.f_port, &dl.payload);
        let now = self.now();
        let d = &self.district.devices[i];
        if let Some(l) = &d.load {
            let idx = self.district.loads().position(|x| x.name == l.name).unwrap_or(0);
            let (label, kw, text) = (l.label().to_string(), l.power_kw(), l.describe());
            let changed = before.is_none_or(|(b, p)| b != label || (p - kw).abs() > 0.05);
            if changed || self.rec.loads.iter().all(|x| x.1 != idx) {
                let label_changed = before.is_none_or(|(b, _)| b != label);
                // Set-point trims are frequent: one line per load every 30 minutes, or when its state changes.
                let name = l.name.clone();
                let quiet = self.last_printed.get(&name).is_some_and(|t| now - *t < Duration::minutes(30));
                self.rec.loads.push((now, idx, label, kw));
                if label_changed || (changed && !quiet) {
                    self.last_printed.insert(name.clone(), now);
                    self.feeder_line(now, &format!("{name} told: {text}"));
                }
            }
        }
        if let Some(u) = answer {
            self.send_uplink(u).await;
        }
        self.lamps_changed(now);
    }
}
