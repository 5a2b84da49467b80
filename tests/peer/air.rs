//! The air between the peer device and the daemon: a packet forwarder of our own (Semtech UDP, GWMP v2,
//! written here from the protocol document and not with the daemon's codec, so that the two cross-check
//! each other) and a virtual concentrator clock.
//!
//! Time: the concentrator's counter (`tmst`, µs) is virtual. It moves only when the device's timer
//! waits ([`Air::advance_to`]), so a device's receive windows cost no real time. What does cost real
//! time is the daemon: after each uplink the forwarder waits for the PUSH_ACK (the daemon has journaled
//! the frame; a downlink answering it leaves in the same step) and then at most [`DOWNLINK_GRACE`] for a
//! PULL_RESP aimed at that uplink's windows, before the device's clock may move on. A downlink whose
//! `tmst` the virtual clock has already passed is a finding: no device could have heard it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// The virtual forwarder's gateway EUI.
pub const GATEWAY_EUI: [u8; 8] = [0xaa, 0x55, 0x5a, 0x00, 0x00, 0x00, 0x70, 0x01];
/// How long the daemon may take to answer an uplink (PUSH_ACK) before the uplink counts as lost.
const PUSH_ACK_LIMIT: Duration = Duration::from_secs(10);
/// After the PUSH_ACK, how long to wait for a downlink aimed at this uplink's windows. The daemon
/// hands its downlinks to the UDP task before it acknowledges, so this is only scheduling slack.
pub const DOWNLINK_GRACE: Duration = Duration::from_millis(300);
/// Where the virtual concentrator clock starts (µs).
const CLOCK_START_US: u64 = 10_000_000;
/// Virtual time between the end of one uplink's windows and the next uplink: a device keeps its duty
/// cycle, and a downlink meant for an earlier uplink's windows can never fall into a later one's.
const UPLINK_GAP_US: u64 = 10_000_000;

/// The link as the gateway hears the device (the test chooses it: ADR decides from it).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub rssi: i32,
    pub snr: f64,
}

/// One uplink as it went on air.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub tmst: u32,
    pub freq_hz: u32,
    pub sf: u32,
    pub bw_hz: u32,
    pub power_dbm: i8,
    pub phy: Vec<u8>,
}

/// One downlink as the daemon asked the gateway to send it (`txpk`).
#[derive(Debug, Clone, PartialEq)]
pub struct TxPk {
    pub imme: bool,
    pub tmst: Option<u32>,
    pub freq_hz: u32,
    pub sf: u32,
    pub bw_hz: u32,
    pub ipol: bool,
    pub data: Vec<u8>,
}

impl TxPk {
    /// Reads a `txpk` object; an error (a finding, and a TX_ACK error) for anything a forwarder refuses.
    fn parse(v: &Value) -> Result<TxPk, String> {
        let freq = v["freq"].as_f64().ok_or("txpk without freq")?;
        let datr = v["datr"].as_str().ok_or("txpk without datr")?;
        let (sf, bw) = datr.strip_prefix("SF").and_then(|r| r.split_once("BW")).ok_or("datr is not SFxBWy")?;
        let sf: u32 = sf.parse().map_err(|_| "bad SF")?;
        let bw_khz: u32 = bw.parse().map_err(|_| "bad BW")?;
        if v["modu"] != "LORA" || v["codr"] != "4/5" {
            return Err(format!("not a LoRaWAN downlink: modu {} codr {}", v["modu"], v["codr"]));
        }
        let data = B64.decode(v["data"].as_str().ok_or("txpk without data")?).map_err(|e| e.to_string())?;
        if v["size"].as_u64() != Some(data.len() as u64) {
            return Err(format!("txpk size {} but {} bytes of data", v["size"], data.len()));
        }
        let imme = v["imme"].as_bool().unwrap_or(false);
        let tmst = v["tmst"].as_u64().map(|t| t as u32);
        if !imme && tmst.is_none() {
            return Err("txpk neither immediate nor timed".into());
        }
        Ok(TxPk {
            imme,
            tmst,
            freq_hz: (freq * 1e6).round() as u32,
            sf,
            bw_hz: bw_khz * 1000,
            ipol: v["ipol"].as_bool().unwrap_or(false),
            data,
        })
    }
}

#[derive(Default)]
struct State {
    clock_us: u64,
    link: Option<Link>,
    uplinks: Vec<Uplink>,
    /// Downlinks received and not yet heard (or found unhearable).
    pending: Vec<TxPk>,
    /// Downlinks the device's radio received, in order.
    heard: Vec<TxPk>,
    /// What disagreed with the specification or with the other side; a test asserts it is empty.
    findings: Vec<String>,
    push_acks: Vec<[u8; 2]>,
    pull_acked: bool,
}

/// The shared air; cheap to clone (the radio and the timer each hold one).
#[derive(Clone)]
pub struct Air {
    state: Arc<Mutex<State>>,
    /// Bumped on every datagram from the daemon.
    events: watch::Receiver<u64>,
    sock: Arc<UdpSocket>,
    daemon: SocketAddr,
    token: Arc<Mutex<u16>>,
}

impl Air {
    /// Binds the forwarder, announces it with PULL_DATA and waits for the PULL_ACK.
    pub async fn connect(daemon: SocketAddr, link: Link) -> Air {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind the forwarder"));
        let state = Arc::new(Mutex::new(State { clock_us: CLOCK_START_US, link: Some(link), ..State::default() }));
        let (tx, events) = watch::channel(0u64);
        tokio::spawn(receive(sock.clone(), daemon, state.clone(), tx));
        let air = Air { state, events, sock, daemon, token: Arc::new(Mutex::new(0)) };
        let pull = header(air.next_token(), 2);
        for _ in 0..50 {
            air.send(&pull).await;
            if air.wait_for(Duration::from_millis(200), |s| s.pull_acked).await {
                return air;
            }
        }
        panic!("the daemon never answered PULL_DATA");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn next_token(&self) -> [u8; 2] {
        let mut t = self.token.lock().unwrap_or_else(|e| e.into_inner());
        *t = t.wrapping_add(1);
        t.to_le_bytes()
    }

    async fn send(&self, datagram: &[u8]) {
        self.sock.send_to(datagram, self.daemon).await.expect("send to the daemon");
    }

    /// Waits (real time, at most `limit`) until `cond` holds; whether it did.
    async fn wait_for(&self, limit: Duration, mut cond: impl FnMut(&mut State) -> bool) -> bool {
        let mut events = self.events.clone();
        let end = tokio::time::Instant::now() + limit;
        loop {
            if cond(&mut self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(end, events.changed()).await.is_err() {
                return cond(&mut self.lock());
            }
        }
    }

    pub fn set_link(&self, link: Link) {
        self.lock().link = Some(link);
    }

    /// The concentrator clock (µs).
    pub fn now_us(&self) -> u64 {
        self.lock().clock_us
    }

    /// Moves the virtual clock forward (never back).
    pub fn advance_to(&self, us: u64) {
        let mut s = self.lock();
        s.clock_us = s.clock_us.max(us);
    }

    /// Puts an uplink on air: PUSH_DATA, the PUSH_ACK, then the grace for its downlink. Errors if the
    /// daemon never acknowledged it.
    pub async fn uplink(&self, freq_hz: u32, sf: u32, bw_hz: u32, power_dbm: i8, phy: &[u8]) -> Result<(), String> {
        let (tmst, link) = {
            let mut s = self.lock();
            s.clock_us += UPLINK_GAP_US;
            let now = s.clock_us;
            // Timed downlinks the clock has passed were never heard by anyone.
            let (missed, keep): (Vec<TxPk>, Vec<TxPk>) = s
                .pending
                .drain(..)
                .partition(|t| !t.imme && t.tmst.is_some_and(|at| u64::from(at) < now as u32 as u64));
            s.pending = keep;
            for m in missed {
                s.findings.push(format!(
                    "a downlink for tmst {:?} ({} Hz, SF{}) fell in no receive window",
                    m.tmst, m.freq_hz, m.sf
                ));
            }
            let tmst = now as u32;
            s.uplinks.push(Uplink { tmst, freq_hz, sf, bw_hz, power_dbm, phy: phy.to_vec() });
            (tmst, s.link.unwrap_or(Link { rssi: -80, snr: 8.0 }))
        };
        let rxpk = json!({"rxpk": [{
            "tmst": tmst, "chan": 0, "rfch": 0, "freq": f64::from(freq_hz) / 1e6, "stat": 1, "modu": "LORA",
            "datr": format!("SF{sf}BW{}", bw_hz / 1000), "codr": "4/5", "rssi": link.rssi, "lsnr": link.snr,
            "size": phy.len(), "data": B64.encode(phy),
        }]});
        let token = self.next_token();
        let mut datagram = header(token, 0);
        datagram.extend(serde_json::to_vec(&rxpk).expect("rxpk JSON"));
        self.send(&datagram).await;
        if !self.wait_for(PUSH_ACK_LIMIT, |s| s.push_acks.contains(&token)).await {
            return Err(format!("no PUSH_ACK for the uplink at tmst {tmst}"));
        }
        let aimed_here = |t: &TxPk| t.imme || t.tmst.is_some_and(|at| at.wrapping_sub(tmst) < 30_000_000);
        self.wait_for(DOWNLINK_GRACE, |s| s.pending.iter().any(aimed_here)).await;
        Ok(())
    }

    /// A radio listening from `open_us` for `lead_us` on either side of the window start, on these
    /// parameters: the timed downlink it hears, if any. A downlink timed for this window but sent on
    /// other parameters is a finding (the radio cannot hear it) and is dropped.
    pub fn hear_in_window(&self, open_us: u64, lead_us: u64, freq_hz: u32, sf: u32, bw_hz: u32) -> Option<TxPk> {
        let (from, to) = (open_us as u32, (open_us + 2 * lead_us) as u32);
        let mut s = self.lock();
        let i = s
            .pending
            .iter()
            .position(|t| !t.imme && t.tmst.is_some_and(|at| at.wrapping_sub(from) <= to.wrapping_sub(from)))?;
        let t = s.pending.remove(i);
        if let Some(why) = mismatch(&t, freq_hz, sf, bw_hz) {
            s.findings.push(format!("RX window at tmst {from}: {why}"));
            return None;
        }
        s.heard.push(t.clone());
        Some(t)
    }

    /// A radio listening continuously (class C) on these parameters: the next immediate downlink,
    /// waiting at most `limit` of real time for one.
    pub async fn hear_continuous(&self, limit: Duration, freq_hz: u32, sf: u32, bw_hz: u32) -> Option<TxPk> {
        let mut got = None;
        self.wait_for(limit, |s| {
            let Some(i) = s.pending.iter().position(|t| t.imme) else { return false };
            let t = s.pending.remove(i);
            match mismatch(&t, freq_hz, sf, bw_hz) {
                Some(why) => s.findings.push(format!("class C: {why}")),
                None => {
                    s.heard.push(t.clone());
                    got = Some(t);
                }
            }
            got.is_some()
        })
        .await;
        got
    }

    pub fn uplinks(&self) -> Vec<Uplink> {
        self.lock().uplinks.clone()
    }

    pub fn heard(&self) -> Vec<TxPk> {
        self.lock().heard.clone()
    }

    /// The findings so far, and every downlink received but never heard.
    pub fn findings(&self) -> Vec<String> {
        let s = self.lock();
        let unheard = s.pending.iter().map(|t| format!("a downlink never heard: {t:?}"));
        s.findings.iter().cloned().chain(unheard).collect()
    }

    pub fn add_finding(&self, what: String) {
        self.lock().findings.push(what);
    }
}

/// The state, also after a panicking test thread poisoned it (the panic is the test's report).
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a radio on (`freq_hz`, `sf`, `bw_hz`) cannot receive `t`, if it cannot.
fn mismatch(t: &TxPk, freq_hz: u32, sf: u32, bw_hz: u32) -> Option<String> {
    if !t.ipol {
        return Some("downlink without inverted polarity (ipol)".into());
    }
    ((t.freq_hz, t.sf, t.bw_hz) != (freq_hz, sf, bw_hz)).then(|| {
        format!(
            "sent on {} Hz SF{}BW{} but the device listened on {freq_hz} Hz SF{sf}BW{}",
            t.freq_hz,
            t.sf,
            t.bw_hz / 1000,
            bw_hz / 1000
        )
    })
}

/// Protocol version 2, token, identifier, gateway EUI: the header of PUSH_DATA (0), PULL_DATA (2) and
/// TX_ACK (5).
fn header(token: [u8; 2], kind: u8) -> Vec<u8> {
    let mut d = vec![2, token[0], token[1], kind];
    d.extend_from_slice(&GATEWAY_EUI);
    d
}

/// The forwarder's downstream: PUSH_ACK (1), PULL_ACK (4), PULL_RESP (3, answered with TX_ACK).
async fn receive(sock: Arc<UdpSocket>, daemon: SocketAddr, state: Arc<Mutex<State>>, events: watch::Sender<u64>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf).await else { return };
        let Some(d) = buf.get(..n) else { continue };
        if d.len() < 4 || d[0] != 2 {
            lock(&state).findings.push(format!("bad datagram from the daemon: {d:02x?}"));
            continue;
        }
        let token = [d[1], d[2]];
        match d[3] {
            1 => lock(&state).push_acks.push(token),
            4 => lock(&state).pull_acked = true,
            3 => {
                let parsed = serde_json::from_slice::<Value>(&d[4..])
                    .map_err(|e| e.to_string())
                    .and_then(|v| TxPk::parse(&v["txpk"]));
                let mut ack = header(token, 5);
                {
                    let mut s = lock(&state);
                    match parsed {
                        Ok(t) => {
                            s.pending.push(t);
                            ack.extend_from_slice(br#"{"txpk_ack":{"error":"NONE"}}"#);
                        }
                        Err(e) => {
                            s.findings.push(format!("PULL_RESP refused: {e}"));
                            ack.extend_from_slice(br#"{"txpk_ack":{"error":"TX_FREQ"}}"#);
                        }
                    }
                }
                let _ = sock.send_to(&ack, daemon).await;
            }
            other => lock(&state).findings.push(format!("unexpected datagram type {other}")),
        }
        events.send_modify(|n| *n += 1);
    }
}
