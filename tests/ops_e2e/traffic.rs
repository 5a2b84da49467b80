//! Uplinks for the tests: one at a time, again until one becomes a reading, or continuously from a
//! background thread ([`Traffic`]); and the check that every acknowledged frame arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use district_gateway::sim::SimDevice;

use crate::common::*;

/// Sends one uplink of `dev`; `Some((device, f_cnt))` when it was acknowledged.
pub fn send_uplink(fwd: &mut Forwarder, to: SocketAddr, dev: &mut SimDevice, payload: &[u8]) -> Option<(String, u64)> {
    let f_cnt = u64::from(dev.f_cnt);
    let phy = dev.uplink(payload);
    fwd.push(to, &[Forwarder::rxpk(phy)]).then(|| (dev.name.clone(), f_cnt))
}

/// Sends an uplink of `dev` (again and again if needed, with a new f_cnt each time) until a reading of it
/// arrives. True when one did.
pub fn uplink_becomes_reading(sub: &Subscriber, fwd: &mut Forwarder, to: SocketAddr, dev: &mut SimDevice) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    let mut sent = Vec::new();
    while Instant::now() < end {
        if let Some(k) = send_uplink(fwd, to, dev, b"hello") {
            sent.push(k);
        }
        let got = wait_until(Duration::from_secs(2), || {
            let m = by_frame(&sub.readings());
            sent.iter().any(|k| m.contains_key(k))
        });
        if got {
            return true;
        }
    }
    false
}

/// What a [`Traffic`] run leaves: the devices (with their advanced counters), the acknowledged frames
/// and how many were sent.
pub type TrafficResult = (Vec<SimDevice>, Vec<(String, u64)>, usize);

/// Uplinks of several devices in a background thread until stopped; records what was acknowledged.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    /// Frames acknowledged so far.
    pub acks: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<TrafficResult>>,
}

impl Traffic {
    pub fn start(to: SocketAddr, mut devs: Vec<SimDevice>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let acks = Arc::new(AtomicUsize::new(0));
        let a = acks.clone();
        let thread = std::thread::spawn(move || {
            let mut fwd = Forwarder::new();
            fwd.socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut acked = Vec::new();
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                let n = devs.len();
                if let Some(k) = send_uplink(&mut fwd, to, &mut devs[i % n], format!("t{i}").as_bytes()) {
                    acked.push(k);
                    a.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
            (devs, acked, i)
        });
        Traffic { stop, acks, thread: Some(thread) }
    }

    /// Stops; the devices (with their advanced counters), the acknowledged frames and how many were sent.
    pub fn finish(mut self) -> TrafficResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn wait_all_arrive(sub: &Subscriber, acked: &[(String, u64)], limit: Duration, logs: &dyn Fn() -> String) {
    let complete = wait_until(limit, || {
        let m = by_frame(&sub.readings());
        acked.iter().all(|k| m.contains_key(k))
    });
    if !complete {
        let m = by_frame(&sub.readings());
        let missing: Vec<_> = acked.iter().filter(|k| !m.contains_key(*k)).collect();
        panic!("{} of {} acknowledged frames missing: {:?}\nlog:\n{}", missing.len(), acked.len(), missing, logs());
    }
}
