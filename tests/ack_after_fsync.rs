//! In `durability = "commit"` mode PUSH_ACK waits for the journal's fsync (README "Durability": an
//! acknowledged frame is on disk); in the default interval mode it comes once the frame is written
//! (page cache: survives kill -9), and the fsync follows within `flush_interval_ms`, before the
//! uplink may publish the record.
//!
//! The SIGKILL tests cannot show this: a killed process leaves its writes in the page cache, so they
//! pass even if the ACK went out before the fsync. Here the daemon runs in-process and the test holds
//! every journal fsync back (`test_hooks::set_before_fsync`, called by the store just before it
//! fsyncs). A PUSH_DATA sent over a real UDP socket is then committed (the outbox's highest seq moves)
//! and its fsync requested, but no fsync can complete: a PUSH_ACK arriving now was sent before the
//! frame was durable, and the test fails. Released, the fsync happens (`StoreStats::fsyncs` moves) and
//! only then the ACK comes. No timing assertion can fail a correct daemon: while the fsync is held it
//! cannot acknowledge at all; the 1.5 s look for a premature ACK only bounds how long a broken one
//! gets to show itself (it acknowledges right after the commit, before the test even looks).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The fsync hook is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

use common::{config_text, free_port, free_udp_port, wait_until, Forwarder};
use district_gateway::io::gwmp::packet::build_push_data;
use district_gateway::keys::Eui64;
use district_gateway::runtime::Daemon;
use district_gateway::sim::SimDevice;

/// Holds every journal fsync back while `hold` is set; counts the fsyncs it held.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    hold: bool,
    /// fsyncs that reached the gate while it held.
    reached: u64,
}

impl Gate {
    fn before_fsync(&self) {
        let mut st = self.state.lock().unwrap();
        if !st.hold {
            return;
        }
        st.reached += 1;
        self.cv.notify_all();
        while st.hold {
            st = self.cv.wait(st).unwrap();
        }
    }

    fn set_hold(&self, hold: bool) {
        let mut st = self.state.lock().unwrap();
        st.hold = hold;
        st.reached = 0;
        self.cv.notify_all();
    }

    fn reached(&self) -> u64 {
        self.state.lock().unwrap().reached
    }
}

/// Sends one PUSH_DATA with `token`.
fn push(socket: &UdpSocket, to: SocketAddr, token: u16, phy: Vec<u8>) {
    let d = build_push_data(2, token.to_le_bytes(), Eui64(0xaa555a0000000001), &[Forwarder::rxpk(phy)]);
    socket.send_to(&d, to).unwrap();
}

/// Waits up to `limit` for the PUSH_ACK with `token`; other datagrams are ignored.
fn ack_within(socket: &UdpSocket, token: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        match socket.recv_from(&mut buf) {
            Ok((4, _)) if buf[3] == 1 && buf[1..3] == token.to_le_bytes() => return true,
            _ => continue,
        }
    }
    false
}

/// A daemon on the test's gate in the given durability mode (`[buffer]` lines), a forwarder socket,
/// and one warm-up frame acknowledged (the gate open).
struct Rig {
    _serial: std::sync::MutexGuard<'static, ()>,
    gate: Arc<Gate>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    dev: SimDevice,
    daemon: Daemon,
    socket: UdpSocket,
}

impl Rig {
    fn warmed_up(buffer: &str) -> Rig {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        district_gateway::test_hooks::set_before_fsync(Some(Arc::new(move || g.before_fsync())));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut dev = SimDevice::numbered("fsync", 1, "raw");
        // No broker listens there: the uplink keeps retrying, which journals nothing.
        let broker = format!("mqtt://127.0.0.1:{}", free_port());
        let text =
            config_text("ack-fsync", &dir.path().join("data"), &broker, free_udp_port(), std::slice::from_ref(&dev))
                .replace(&format!("[buffer]\n{}\n", common::TEST_BUFFER), &format!("[buffer]\n{buffer}\n"));
        let cfg = district_gateway::config::parse_str(&text, "gateway.toml", dir.path()).unwrap();
        let daemon = rt.block_on(Daemon::start(&cfg)).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        push(&socket, daemon.gwmp_addrs[0], 1, dev.uplink(b"warm-up"));
        assert!(ack_within(&socket, 1, Duration::from_secs(10)), "no PUSH_ACK for the warm-up frame");
        Rig { _serial: serial, gate, rt, _dir: dir, dev, daemon, socket }
    }

    fn stop(self) {
        district_gateway::test_hooks::set_before_fsync(None);
        self.rt.block_on(self.daemon.stop());
    }
}

#[test]
fn push_ack_is_sent_only_after_the_journal_fsync() {
    let mut rig = Rig::warmed_up("durability = \"commit\"\nflush_interval_ms = 250");
    let (gate, socket, gwmp) = (rig.gate.clone(), &rig.socket, rig.daemon.gwmp_addrs[0]);
    let store = rig.daemon.store.clone();

    // Hold every fsync, then send the frame under test.
    gate.set_hold(true);
    let fsyncs_before = store.stats().fsyncs.load(Ordering::SeqCst);
    let durable_before = store.max_committed();
    let seq_before = store.next_seq();
    push(socket, gwmp, 2, rig.dev.uplink(b"must be on disk before the ACK"));

    // 1. The frame got its seq and its fsync was requested (and is held).
    let allocated = wait_until(Duration::from_secs(20), || store.next_seq() > seq_before);
    let requested = wait_until(Duration::from_secs(20), || gate.reached() > 0);
    if !(allocated && requested) {
        gate.set_hold(false);
        panic!("the frame got no seq ({allocated}) or no fsync was requested ({requested})");
    }
    // 2. No PUSH_ACK while the fsync is held back, and nothing readable for the uplink either.
    let early = ack_within(socket, 2, Duration::from_millis(1500));
    let fsyncs_held = store.stats().fsyncs.load(Ordering::SeqCst);
    let durable_held = store.max_committed();
    gate.set_hold(false);
    assert_eq!(fsyncs_held, fsyncs_before, "an fsync completed although the gate held it");
    assert_eq!(durable_held, durable_before, "the uplink could read a record that was not fsynced yet");
    assert!(
        !early,
        "PUSH_ACK arrived for a frame that was committed but not yet fsynced (the test held the fsync): \
         the pipeline acknowledges before the journal is durable"
    );
    // 3. Released: the fsync completes and then the ACK comes.
    assert!(ack_within(socket, 2, Duration::from_secs(20)), "no PUSH_ACK after the fsync was released");
    assert!(
        store.stats().fsyncs.load(Ordering::SeqCst) > fsyncs_before,
        "PUSH_ACK without an fsync after the frame's commit"
    );
    assert!(store.max_committed() > durable_before, "after the fsync the record is readable for the uplink");

    rig.stop();
}

#[test]
fn in_interval_mode_push_ack_comes_before_the_fsync_and_publication_after_it() {
    // No DevStatusReq: a downlink is fsynced at once in every mode, and would hide the window.
    let mut rig =
        Rig::warmed_up("durability = \"interval\"\nflush_interval_ms = 1000\n[lorawan]\ndev_status_interval_s = 0");
    let (gate, socket, gwmp) = (rig.gate.clone(), &rig.socket, rig.daemon.gwmp_addrs[0]);
    let store = rig.daemon.store.clone();
    // Wait for the warm-up's own fsync (its window) so that the next one is the frame's.
    let warm_up = store.next_seq() - 1;
    assert!(
        wait_until(Duration::from_secs(10), || store.max_committed() >= warm_up),
        "the warm-up never became durable"
    );

    gate.set_hold(true);
    let durable_before = store.max_committed();
    let seq_before = store.next_seq();
    push(socket, gwmp, 2, rig.dev.uplink(b"acknowledged once written"));
    // 1. Acknowledged while no fsync can complete: written (page cache), not yet durable.
    let acked = ack_within(socket, 2, Duration::from_secs(10));
    let committed = store.next_seq() > seq_before;
    let durable_at_ack = store.max_committed();
    // 2. The window's fsync comes by itself (no more traffic), and is held.
    let requested = wait_until(Duration::from_secs(20), || gate.reached() > 0);
    let durable_held = store.max_committed();
    gate.set_hold(false);
    assert!(acked && committed, "no PUSH_ACK ({acked}) or no commit ({committed}) while the fsync was held");
    assert!(requested, "no fsync was requested within the window after the commit");
    assert_eq!(durable_at_ack, durable_before, "the uplink could read the record before its fsync");
    assert_eq!(durable_held, durable_before, "the uplink could read the record before its fsync");
    // 3. Released: durable, and readable for the uplink.
    assert!(
        wait_until(Duration::from_secs(20), || store.max_committed() > durable_before),
        "after the window's fsync the record is readable for the uplink"
    );
    rig.stop();
}
