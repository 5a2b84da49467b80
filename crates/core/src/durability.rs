//! When the journal is fsynced: the durability policy (`buffer.durability`, `buffer.flush_interval_ms`).
//!
//! Everything the gateway accepts is written to the journal before it is acknowledged, so a crash or
//! a kill -9 of the daemon loses nothing acknowledged (the kernel's page cache keeps it). What a
//! *power cut* can lose depends on when the journal is fsynced:
//!
//! - [`Durability::Commit`]: every commit is fsynced before anything in it is acknowledged. A power cut
//!   loses nothing acknowledged. Every commit costs at least one rewritten flash page (4 KiB).
//! - [`Durability::Interval`] (the default): commits are acknowledged once written, and fsynced in
//!   groups, at the latest `window_ms` after the first commit not yet fsynced. A power cut loses at
//!   most what was accepted in the last `window_ms` before it. Like Redis's `appendfsync everysec`.
//!
//! Either way a commit whose effects leave the gateway before the next fsync (a downlink, which uses
//! a frame counter; a join accept) is fsynced first ([`SyncPolicy::on_commit`] with `urgent`): a counter
//! is never used again after a power cut. And the uplink publishes only what is fsynced, so no `seq` the
//! city has received is handed out again (in interval mode, readings reach the broker up to `window_ms`
//! later).
//!
//! A plain state machine: the caller passes the time (ms on a monotonic clock of its own) and does
//! the fsync. The pipeline drives it with real time, the power-cut harness with simulated time.

/// How the journal is made durable (`buffer.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync every commit before acknowledging it (`"commit"`).
    Commit,
    /// fsync at most `window_ms` after the first unsynced commit (`"interval"`).
    Interval { window_ms: u64 },
}

/// Decides when the journal must be fsynced. See the module doc.
#[derive(Debug, Clone)]
pub struct SyncPolicy {
    durability: Durability,
    /// When the oldest commit not yet fsynced was made (None: everything is fsynced).
    unsynced_since_ms: Option<u64>,
}

impl SyncPolicy {
    pub fn new(durability: Durability) -> SyncPolicy {
        SyncPolicy { durability, unsynced_since_ms: None }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// A commit was written at `now_ms`. Returns whether it must be fsynced before anything in it is
    /// acknowledged or sent: always in commit mode; in interval mode only when `urgent` (its effects
    /// leave the gateway now, e.g. a downlink that uses a frame counter). After that fsync the caller
    /// calls [`SyncPolicy::on_synced`].
    pub fn on_commit(&mut self, now_ms: u64, urgent: bool) -> bool {
        match self.durability {
            Durability::Commit => true,
            Durability::Interval { .. } => {
                self.unsynced_since_ms.get_or_insert(now_ms);
                urgent
            }
        }
    }

    /// When the next fsync is due (None: nothing waits for one).
    pub fn deadline_ms(&self) -> Option<u64> {
        match self.durability {
            Durability::Commit => None,
            Durability::Interval { window_ms } => self.unsynced_since_ms.map(|t| t.saturating_add(window_ms)),
        }
    }

    /// Whether an fsync is due at `now_ms`.
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.deadline_ms().is_some_and(|d| d <= now_ms)
    }

    /// Everything committed so far has been fsynced (the caller's fsync started after the last
    /// commit it told about).
    pub fn on_synced(&mut self) {
        self.unsynced_since_ms = None;
    }

    /// How much a power cut can lose, in ms of accepted input (0: nothing acknowledged).
    pub fn window_ms(&self) -> u64 {
        match self.durability {
            Durability::Commit => 0,
            Durability::Interval { window_ms } => window_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_mode_syncs_every_commit_and_never_waits() {
        let mut p = SyncPolicy::new(Durability::Commit);
        assert!(p.on_commit(0, false));
        assert!(p.on_commit(5, true));
        assert_eq!(p.deadline_ms(), None);
        assert_eq!(p.window_ms(), 0);
    }

    #[test]
    fn interval_mode_syncs_one_window_after_the_first_unsynced_commit() {
        let mut p = SyncPolicy::new(Durability::Interval { window_ms: 1000 });
        assert_eq!(p.deadline_ms(), None, "nothing written: no fsync due, ever");
        assert!(!p.on_commit(100, false));
        assert!(!p.on_commit(900, false));
        assert_eq!(p.deadline_ms(), Some(1100), "measured from the first unsynced commit, not the last");
        assert!(!p.is_due(1099));
        assert!(p.is_due(1100));
        p.on_synced();
        assert_eq!(p.deadline_ms(), None);
        assert!(!p.on_commit(5000, false));
        assert_eq!(p.deadline_ms(), Some(6000));
    }

    #[test]
    fn an_urgent_commit_is_synced_at_once_in_interval_mode() {
        let mut p = SyncPolicy::new(Durability::Interval { window_ms: 5000 });
        assert!(!p.on_commit(0, false));
        assert!(p.on_commit(10, true), "a downlink's frame counter must be durable before it is sent");
        p.on_synced();
        assert_eq!(p.deadline_ms(), None);
    }

    /// Days of random commits in simulated time: with the caller fsyncing at each deadline, no commit
    /// ever waits longer than the window for its fsync.
    #[test]
    fn no_commit_waits_longer_than_the_window() {
        let mut rng = crate::test_support::XorShift(7);
        for window_ms in [1, 250, 1000, 5000] {
            let mut p = SyncPolicy::new(Durability::Interval { window_ms });
            let mut now = 0u64;
            let mut unsynced: Vec<u64> = Vec::new();
            for _ in 0..20_000 {
                let step = rng.next() % 3000;
                if let Some(d) = p.deadline_ms().filter(|d| *d <= now + step) {
                    now = now.max(d);
                    assert!(unsynced.iter().all(|t| now - t <= window_ms), "a commit waited past the window");
                    unsynced.clear();
                    p.on_synced();
                    continue;
                }
                now += step;
                if p.on_commit(now, rng.next() % 50 == 0) {
                    unsynced.clear();
                    p.on_synced();
                } else {
                    unsynced.push(now);
                }
            }
        }
    }
}
