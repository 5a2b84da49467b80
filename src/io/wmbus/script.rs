//! A scripted wM-Bus stick (iM871A or AMB8465) on the far end of a real pseudo-terminal: it parses the
//! host's command frames, records them, answers them as the stick would (status OK unless told to
//! refuse one), and once its link mode is set sends the telegrams it is given, framed as that stick
//! frames them (iM871A: HCI with RSSI and CRC; AMB8465: raw, RSSI appended). Unplug = [`ScriptedStick::close`]
//! (firmware stopped, pty closed, link removed); replug = a new stick behind the same link.
//!
//! Always compiled (tests and the demo use it). Linux/Unix only, like the daemon.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::io::pty;
use crate::wmbus_stick::{amber, imst, StickKind};

#[derive(Debug, Default)]
struct State {
    /// Every command frame received, as bytes.
    commands: Vec<Vec<u8>>,
    /// The link-mode code last set (the stick's own code); None until set.
    mode: Option<u8>,
    /// Init sequences completed (link mode set).
    inits: u32,
    /// Refuse the next command with this id (iM871A message id / AMB8465 command) with status 1.
    refuse: Option<u8>,
}

pub struct ScriptedStick {
    kind: StickKind,
    state: Arc<Mutex<State>>,
    master: Arc<OwnedFd>,
    slave: Option<OwnedFd>,
    link: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScriptedStick {
    /// Creates a pty, points `link` at its slave, and starts the stick's firmware on the master.
    pub fn spawn(kind: StickKind, link: &Path) -> std::io::Result<Self> {
        let pty = pty::open_linked(link)?;
        let master = Arc::new(pty.master);
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, master, stop) = (state.clone(), master.clone(), stop.clone());
            std::thread::Builder::new()
                .name("scripted-wmbus-stick".into())
                .spawn(move || firmware(kind, &state, &master, &stop))?
        };
        Ok(ScriptedStick {
            kind,
            state,
            master,
            slave: Some(pty.slave),
            link: link.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// Sends a telegram (L-field first) heard with RSSI byte `rssi_raw`; false while the link mode is unset.
    pub fn inject_telegram(&self, telegram: &[u8], rssi_raw: u8) -> bool {
        if lock(&self.state).mode.is_none() {
            return false;
        }
        let bytes = match self.kind {
            StickKind::Im871a => imst::telegram_indication(telegram, Some(rssi_raw), true),
            StickKind::Amb8465 => amber::telegram_output(telegram, rssi_raw),
        };
        pty::write_master(&self.master, &bytes);
        true
    }

    /// Raw bytes to the host (noise on the line).
    pub fn inject_bytes(&self, bytes: &[u8]) {
        pty::write_master(&self.master, bytes);
    }

    /// The next command with this id is refused (status 1).
    pub fn refuse_next(&self, id: u8) {
        lock(&self.state).refuse = Some(id);
    }

    pub fn commands(&self) -> Vec<Vec<u8>> {
        lock(&self.state).commands.clone()
    }

    /// The link-mode code the host set (the stick's own code).
    pub fn mode(&self) -> Option<u8> {
        lock(&self.state).mode
    }

    /// Init sequences completed so far.
    pub fn inits(&self) -> u32 {
        lock(&self.state).inits
    }

    /// Waits (bounded) until `n` init sequences have completed.
    pub async fn wait_inits(&self, n: u32, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.inits() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inits() >= n
    }

    /// Unplugs the stick: stops the firmware, closes both ends of the pty, removes the link.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.link);
        self.slave.take();
    }
}

impl Drop for ScriptedStick {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The length of the command frame at the start of `buf`, once it is all there (None: wait; the
/// first byte is not a start byte: Some(1), to drop it).
fn command_len(kind: StickKind, buf: &[u8]) -> Option<usize> {
    let (sof, len_at, extra) = match kind {
        StickKind::Im871a => (imst::SOF, 3, 4),
        StickKind::Amb8465 => (amber::SOF, 2, 4),
    };
    if *buf.first()? != sof {
        return Some(1);
    }
    let n = extra + usize::from(*buf.get(len_at)?);
    (buf.len() >= n).then_some(n)
}

fn firmware(kind: StickKind, state: &Mutex<State>, master: &OwnedFd, stop: &AtomicBool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let n = pty::read_master(master, &mut chunk);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        while let Some(len) = command_len(kind, &buf) {
            let cmd: Vec<u8> = buf.drain(..len).collect();
            if len == 1 {
                continue; // not a start byte
            }
            if let Some(reply) = answer(kind, state, cmd) {
                pty::write_master(master, &reply);
            }
        }
    }
}

fn answer(kind: StickKind, state: &Mutex<State>, cmd: Vec<u8>) -> Option<Vec<u8>> {
    let mut s = lock(state);
    s.commands.push(cmd.clone());
    match kind {
        StickKind::Im871a => {
            let (ep, msg) = (*cmd.get(1)?, *cmd.get(2)?);
            let status = if s.refuse.take_if(|id| *id == msg).is_some() { 1 } else { 0 };
            match (ep, msg) {
                (imst::DEVMGMT, imst::PING_REQ) => {
                    Some(imst::device_frame(imst::DEVMGMT, imst::PING_RSP, &[], None, false))
                }
                (imst::DEVMGMT, imst::SET_CONFIG_REQ) => {
                    if status == 0 {
                        // payload: temporary flag, IIFlag1 (link mode), the link mode, ...
                        s.mode = cmd.get(6).copied();
                        s.inits += 1;
                    }
                    Some(imst::device_frame(imst::DEVMGMT, imst::SET_CONFIG_RSP, &[status], None, false))
                }
                _ => None,
            }
        }
        StickKind::Amb8465 => {
            let op = *cmd.get(1)?;
            let status = if s.refuse.take_if(|id| *id == op).is_some() { 1 } else { 0 };
            match op {
                amber::CMD_SERIALNO_REQ => Some(amber::reply(op, &[0x00, 0x00, 0x19, 0x01])),
                amber::CMD_SET_REQ => Some(amber::reply(op, &[status])),
                amber::CMD_SET_MODE_REQ => {
                    if status == 0 {
                        s.mode = cmd.get(3).copied();
                        s.inits += 1;
                    }
                    Some(amber::reply(op, &[status]))
                }
                _ => Some(amber::reply(op, &[0x01])),
            }
        }
    }
}
