//! A device's LoRaWAN sessions over the life of an installation: which session is current and the
//! counters of the sessions it had before. Pure data and rules; the network server applies them and
//! the store keeps them (`s/` + device).
//!
//! A session is identified by its keys (NwkSKey, AppSKey): the keystream of a frame is a function of
//! the key, the DevAddr and the frame counter, and the counters belong to the keys. The two
//! invariants this module exists for (ARCHITECTURE.md):
//! - **no (key, FCntDown) pair is ever used twice**: a session's FCntDown only grows, and counters
//!   start again at 0 only together with keys never used before by this device;
//! - **no uplink at or below a counter already accepted under the same key is accepted again**
//!   (devices configured with `relax_fcnt` excepted, by the operator's choice).
//!
//! So when a device gets other keys (re-provisioning, a re-join, a re-keyed ABP device), the current
//! session is *retired* with its counters, and a device that gets keys it had before resumes their
//! counters instead of starting again. The retired list is bounded ([`MAX_RETIRED`]); OTAA sessions are
//! never resumed (a join always derives new keys: the JoinNonce never repeats), so they are not kept.

use crate::keys::{DevAddr, Key128};

/// Retired ABP sessions kept per device (oldest forgotten first).
pub const MAX_RETIRED: usize = 8;

/// The identity of a session: its address and keys. `Debug` is redacted (through [`Key128`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    pub dev_addr: DevAddr,
    pub nwk_s_key: Key128,
    pub app_s_key: Key128,
}

impl SessionId {
    /// Same keys: the same session as far as counters are concerned (a new DevAddr alone does not
    /// restart the counters).
    pub fn same_keys(&self, other: &SessionId) -> bool {
        self.nwk_s_key == other.nwk_s_key && self.app_s_key == other.app_s_key
    }
}

/// The counters of a session: the last accepted FCntUp (None: nothing accepted yet) and the next
/// FCntDown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub fcnt_up: Option<u32>,
    pub fcnt_down: u32,
}

/// A session that is no longer current, with its counters when it was retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredSession {
    pub session: SessionId,
    pub counters: Counters,
}

/// Everything the store keeps about a device's sessions besides the live counters (`f/`, `d/`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecord {
    pub current: Option<SessionId>,
    /// Oldest first.
    pub retired: Vec<RetiredSession>,
}

/// How the device's activation changes its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumable {
    /// ABP keys may come back (an operator re-keying and undoing it): remember the session.
    Yes,
    /// OTAA keys never come back: do not keep the session.
    No,
}

impl SessionRecord {
    /// Ends the current session, remembering its counters when it may be resumed.
    pub fn retire(&mut self, counters: Counters, resumable: Resumable) {
        let Some(session) = self.current.take() else { return };
        if resumable == Resumable::No {
            return;
        }
        self.retired.retain(|r| !r.session.same_keys(&session));
        self.retired.push(RetiredSession { session, counters });
        if self.retired.len() > MAX_RETIRED {
            let excess = self.retired.len() - MAX_RETIRED;
            self.retired.drain(..excess);
        }
    }

    /// Makes `next` the current session and returns its counters: those of a retired session with the
    /// same keys (it continues), else fresh ones. Call [`SessionRecord::retire`] first.
    pub fn start(&mut self, next: SessionId) -> Counters {
        let resumed = self.retired.iter().position(|r| r.session.same_keys(&next)).map(|i| self.retired.remove(i));
        self.current = Some(next);
        resumed.map(|r| r.counters).unwrap_or_default()
    }

    /// True when the current session has these keys.
    pub fn is_current(&self, s: &SessionId) -> bool {
        self.current.is_some_and(|c| c.same_keys(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(k: u8) -> SessionId {
        SessionId {
            dev_addr: DevAddr(0x2600_0000 + u32::from(k)),
            nwk_s_key: Key128::new([k; 16]),
            app_s_key: Key128::new([k ^ 0x55; 16]),
        }
    }

    #[test]
    fn new_keys_start_fresh_and_old_keys_resume_their_counters() {
        let mut r = SessionRecord::default();
        assert_eq!(r.start(sid(1)), Counters::default());
        r.retire(Counters { fcnt_up: Some(10), fcnt_down: 4 }, Resumable::Yes);
        assert_eq!(r.start(sid(2)), Counters::default());
        r.retire(Counters { fcnt_up: Some(3), fcnt_down: 1 }, Resumable::Yes);
        assert_eq!(r.start(sid(1)), Counters { fcnt_up: Some(10), fcnt_down: 4 });
        assert_eq!(r.retired.len(), 1);
        assert!(r.is_current(&sid(1)));
    }

    #[test]
    fn otaa_sessions_are_not_kept_and_the_list_is_bounded() {
        let mut r = SessionRecord::default();
        r.start(sid(1));
        r.retire(Counters { fcnt_up: Some(1), fcnt_down: 1 }, Resumable::No);
        assert!(r.retired.is_empty() && r.current.is_none());
        for k in 0..20 {
            r.start(sid(k));
            r.retire(Counters { fcnt_up: None, fcnt_down: u32::from(k) }, Resumable::Yes);
        }
        assert_eq!(r.retired.len(), MAX_RETIRED);
        assert_eq!(r.retired[0].counters.fcnt_down, 20 - MAX_RETIRED as u32);
    }
}
