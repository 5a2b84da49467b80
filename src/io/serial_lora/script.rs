//! A scripted LoRa module on the far end of a real pseudo-terminal: it speaks the RAK3172 (RUI3) or
//! RN2483 dialect closely enough to exercise the source for real, error replies included. The source
//! opens the pty's slave through a symlink (like /dev/serial/by-id/...), so a module can be "unplugged"
//! (pty closed, link removed) and "plugged in again" (a new pty behind the same link).
//!
//! Always compiled (tests and the demo use it). Linux/Unix only, like the daemon.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ModuleKind;

#[derive(Debug)]
struct State {
    kind: ModuleKind,
    /// Reads and ignores everything; sends nothing (a hung module).
    silent: bool,
    /// Input ignored until then (restarting).
    booting_until: Option<Instant>,
    /// RAK: 1 = LoRaWAN, 0 = P2P. RN: the MAC is paused.
    lorawan: bool,
    /// Listening; `single` = stops after one frame.
    armed: bool,
    single: bool,
    commands: Vec<String>,
    /// Radio configurations accepted (one per init sequence).
    configs: u32,
    failures: VecDeque<(String, String)>,
    last_snr: i32,
    last_rssi: i32,
    p2p: String,
    sync: String,
}

/// Handle on one scripted module. The firmware runs on a thread of its own (plain non-blocking reads
/// of the pty master), so the module works the same whatever runtime the host side uses.
pub struct ScriptedModule {
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

fn write_line(master: &OwnedFd, line: &str) {
    let mut data = Vec::with_capacity(line.len() + 2);
    data.extend_from_slice(line.as_bytes());
    data.extend_from_slice(b"\r\n");
    crate::io::pty::write_master(master, &data);
}

impl ScriptedModule {
    /// Creates a pty, points `link` at its slave, and starts the module firmware on the master.
    pub fn spawn(kind: ModuleKind, link: &Path) -> std::io::Result<Self> {
        let pty = crate::io::pty::open_linked(link)?;
        let master = Arc::new(pty.master);
        let state = Arc::new(Mutex::new(State {
            kind,
            silent: false,
            booting_until: None,
            lorawan: true,
            armed: false,
            single: false,
            commands: Vec::new(),
            configs: 0,
            failures: VecDeque::new(),
            last_snr: 0,
            last_rssi: 0,
            p2p: String::new(),
            sync: String::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, master, stop) = (state.clone(), master.clone(), stop.clone());
            std::thread::Builder::new()
                .name("scripted-module".into())
                .spawn(move || firmware(&state, &master, &stop))?
        };
        Ok(ScriptedModule {
            state,
            master,
            slave: Some(pty.slave),
            link: link.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends a received frame to the host if the module is listening; false if it is not.
    pub fn inject_frame(&self, phy: &[u8], rssi: i32, snr: i32) -> bool {
        let mut s = self.lock();
        if s.silent || !s.armed {
            return false;
        }
        let line = match s.kind {
            ModuleKind::Rak3172 => format!("+EVT:RXP2P:{rssi}:{snr}:{}", hex::encode_upper(phy)),
            ModuleKind::Rn2483 => {
                s.armed = false; // radio rx 0 ends with the frame
                format!("radio_rx  {}", hex::encode_upper(phy))
            }
        };
        if s.single {
            s.armed = false;
        }
        s.last_snr = snr;
        s.last_rssi = rssi;
        write_line(&self.master, &line);
        true
    }

    /// A reception that failed (CRC): `+EVT:RXP2P RECEIVE ERROR` / `radio_err`.
    pub fn inject_rx_error(&self) -> bool {
        let mut s = self.lock();
        if s.silent || !s.armed {
            return false;
        }
        let line = match s.kind {
            ModuleKind::Rak3172 => "+EVT:RXP2P RECEIVE ERROR",
            ModuleKind::Rn2483 => {
                s.armed = false;
                "radio_err"
            }
        };
        write_line(&self.master, line);
        true
    }

    /// A hung module: reads everything, answers nothing. Unhanging it clears its receive state, as a
    /// power cycle would.
    pub fn set_silent(&self, silent: bool) {
        let mut s = self.lock();
        s.silent = silent;
        if !silent {
            s.armed = false;
        }
    }

    /// The next command starting with `prefix` is answered with `reply` (an error line).
    pub fn fail_next(&self, prefix: &str, reply: &str) {
        self.lock().failures.push_back((prefix.to_string(), reply.to_string()));
    }

    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    /// Radio configurations accepted so far (one per completed init).
    pub fn configs(&self) -> u32 {
        self.lock().configs
    }

    pub fn is_listening(&self) -> bool {
        let s = self.lock();
        s.armed && !s.silent
    }

    /// Waits (bounded) until the module listens.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_listening() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.is_listening()
    }

    /// Unplugs the module: stops the firmware, closes both ends of the pty, removes the link.
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
        // `master` closes when this handle drops (the firmware thread's clone is gone).
    }
}

impl Drop for ScriptedModule {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The module's firmware: reads commands from the master side and answers, until `stop`.
fn firmware(state: &Mutex<State>, master: &OwnedFd, stop: &AtomicBool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let n = match nix::unistd::read(master.as_raw_fd(), &mut chunk) {
            Ok(n) if n > 0 => n,
            // EAGAIN: nothing yet; EIO: no slave open at the moment; 0: likewise.
            _ => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=pos).collect();
            let cmd = String::from_utf8_lossy(&raw).trim().to_string();
            if cmd.is_empty() {
                continue;
            }
            let replies = {
                let mut s = lock(state);
                if s.silent {
                    continue;
                }
                if let Some(until) = s.booting_until {
                    if Instant::now() < until {
                        continue;
                    }
                    s.booting_until = None;
                }
                s.commands.push(cmd.clone());
                let failure = s.failures.iter().position(|(p, _)| cmd.starts_with(p.as_str()));
                if let Some(i) = failure {
                    let (_, reply) = s.failures.remove(i).unwrap_or_default();
                    vec![reply]
                } else {
                    match s.kind {
                        ModuleKind::Rak3172 => rak3172(&mut s, &cmd),
                        ModuleKind::Rn2483 => rn2483(&mut s, &cmd),
                    }
                }
            };
            for r in replies {
                write_line(master, &r);
            }
        }
        if buf.len() > 4096 {
            buf.clear();
        }
    }
}

fn ok() -> Vec<String> {
    vec!["OK".into()]
}

fn err(e: &str) -> Vec<String> {
    vec![e.into()]
}

/// RUI3 AT command set, the part a P2P receiver uses.
fn rak3172(s: &mut State, cmd: &str) -> Vec<String> {
    let banner = || {
        vec![
            "RAKwireless RAK3172-E Example".to_string(),
            "------------------------------------------------------".to_string(),
            "Version: RUI_4.0.6_RAK3172-E".to_string(),
        ]
    };
    match cmd {
        "AT" => return ok(),
        "ATZ" => {
            s.armed = false;
            s.booting_until = Some(Instant::now() + Duration::from_millis(100));
            return banner();
        }
        "AT+NWM=?" => return vec![format!("AT+NWM={}", if s.lorawan { 1 } else { 0 }), "OK".into()],
        _ => {}
    }
    if let Some(v) = cmd.strip_prefix("AT+NWM=") {
        let to_lorawan = match v {
            "0" => false,
            "1" => true,
            _ => return err("AT_PARAM_ERROR"),
        };
        if to_lorawan == s.lorawan {
            return ok();
        }
        // Mode change: OK, then the module restarts.
        s.lorawan = to_lorawan;
        s.armed = false;
        s.booting_until = Some(Instant::now() + Duration::from_millis(100));
        let mut r = ok();
        r.extend(banner());
        r.push(format!("Current Work Mode: {}.", if to_lorawan { "LoRaWAN" } else { "LoRa P2P" }));
        return r;
    }
    let p2p_only = |s: &State| if s.lorawan { Some(err("AT_MODE_NO_SUPPORT")) } else { None };
    if let Some(v) = cmd.strip_prefix("AT+PRECV=") {
        if let Some(e) = p2p_only(s) {
            return e;
        }
        return match v.parse::<u32>() {
            Ok(0) => {
                s.armed = false;
                ok()
            }
            Ok(65534) => {
                s.armed = true;
                s.single = false;
                ok()
            }
            Ok(n) if n <= 65535 => {
                s.armed = true;
                s.single = true;
                ok()
            }
            _ => err("AT_PARAM_ERROR"),
        };
    }
    if let Some(v) = cmd.strip_prefix("AT+P2P=") {
        if let Some(e) = p2p_only(s) {
            return e;
        }
        if s.armed {
            return err("AT_BUSY_ERROR");
        }
        let f: Vec<&str> = v.split(':').collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<i64>().ok());
        let valid = f.len() == 6
            && num(0).is_some_and(|x| (150_000_000..=960_000_000).contains(&x))
            && num(1).is_some_and(|x| (5..=12).contains(&x))
            && num(2).is_some_and(|x| [125, 250, 500].contains(&x))
            && num(3).is_some_and(|x| (0..=3).contains(&x))
            && num(4).is_some_and(|x| (2..=65535).contains(&x))
            && num(5).is_some_and(|x| (5..=22).contains(&x));
        if !valid {
            return err("AT_PARAM_ERROR");
        }
        s.p2p = v.to_string();
        s.configs += 1;
        return ok();
    }
    if let Some(v) = cmd.strip_prefix("AT+SYNCWORD=") {
        if let Some(e) = p2p_only(s) {
            return e;
        }
        if v.len() != 4 || u16::from_str_radix(v, 16).is_err() {
            return err("AT_PARAM_ERROR");
        }
        s.sync = v.to_string();
        return ok();
    }
    if let Some(v) = cmd.strip_prefix("AT+IQINVER=") {
        if let Some(e) = p2p_only(s) {
            return e;
        }
        return if v == "0" || v == "1" { ok() } else { err("AT_PARAM_ERROR") };
    }
    if cmd.starts_with("AT+") {
        return err("AT_COMMAND_NOT_FOUND");
    }
    err("AT_ERROR")
}

/// RN2483 1.0.5 command set, the part a radio receiver uses.
fn rn2483(s: &mut State, cmd: &str) -> Vec<String> {
    const VERSION: &str = "RN2483 1.0.5 Oct 31 2018 15:06:52";
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let ok = || vec!["ok".to_string()];
    let invalid = || vec!["invalid_param".to_string()];
    match words.as_slice() {
        ["sys", "get", "ver"] => vec![VERSION.into()],
        ["sys", "reset"] => {
            s.armed = false;
            s.lorawan = true;
            vec![VERSION.into()]
        }
        ["mac", "pause"] => {
            s.lorawan = false;
            vec!["4294967245".into()]
        }
        ["mac", "resume"] => {
            s.lorawan = true;
            ok()
        }
        ["radio", "rxstop"] => {
            s.armed = false;
            ok()
        }
        ["radio", ..] if s.armed => vec!["busy".into()],
        ["radio", ..] if s.lorawan => vec!["busy".into()],
        ["radio", "rx", n] => match n.parse::<u32>() {
            Ok(_) => {
                s.armed = true;
                s.single = true;
                ok()
            }
            Err(_) => invalid(),
        },
        ["radio", "get", "snr"] => vec![s.last_snr.to_string()],
        ["radio", "get", "pktrssi"] => vec![s.last_rssi.to_string()],
        ["radio", "set", key, value] => {
            let num = value.parse::<i64>().ok();
            let valid = match *key {
                "mod" => *value == "lora" || *value == "fsk",
                "freq" => num.is_some_and(|f| {
                    (433_050_000..=434_790_000).contains(&f) || (863_000_000..=870_000_000).contains(&f)
                }),
                "sf" => ["sf7", "sf8", "sf9", "sf10", "sf11", "sf12"].contains(value),
                "bw" => ["125", "250", "500"].contains(value),
                "cr" => ["4/5", "4/6", "4/7", "4/8"].contains(value),
                "sync" => value.len() <= 2 && u8::from_str_radix(value, 16).is_ok(),
                "crc" | "iqi" => *value == "on" || *value == "off",
                "prlen" => num.is_some_and(|n| (0..=65535).contains(&n)),
                "pwr" => num.is_some_and(|n| (-3..=15).contains(&n)),
                "wdt" => num.is_some_and(|n| (0..=4_294_967_295).contains(&n)),
                _ => false,
            };
            if !valid {
                return invalid();
            }
            if *key == "freq" {
                s.configs += 1;
            }
            if *key == "sync" {
                s.sync = value.to_string();
            }
            ok()
        }
        _ => invalid(),
    }
}
