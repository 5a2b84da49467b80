//! The network server's multicast side: the configured groups, a frame for a group (from the
//! lighting loop) and its route, its counter to persist before it leaves (`lorawan::multicast` builds
//! and accounts the frames; this is the glue to routes, the scheduler and the outputs).

use super::{DownlinkKind, NetworkServer, Note, OutDownlink, Output, Persist};
use crate::ingest::Origin;
use crate::lorawan::multicast::{McError, McGroup, Multicast};

impl NetworkServer {
    /// The multicast groups as configured (a group that keeps its name keeps its counter).
    pub fn set_multicast_groups(&mut self, groups: Vec<McGroup>) {
        self.multicast.set_groups(groups);
    }

    /// A group's next frame counter as the store had it at start.
    pub fn restore_multicast_f_cnt(&mut self, group: &str, next: u32) {
        self.multicast.restore_f_cnt(group, next);
    }

    pub fn multicast_groups(&self) -> &Multicast {
        &self.multicast
    }

    /// One frame to every member of a multicast group, at once if the duty cycle and a route allow
    /// (else it waits, replaced by a newer one, and `tick` tries again). Its counter comes out in
    /// `persist` with the frame: persist before sending, as for unicast.
    pub fn multicast(&mut self, now_ms: u64, group: &str, f_port: u8, payload: &[u8]) -> Result<Output, McError> {
        self.multicast.set_pending(group, f_port, payload)?;
        let mut out = Output::default();
        self.multicast_for(group, now_ms, &mut out);
        Ok(out)
    }

    pub(super) fn multicast_for(&mut self, group: &str, now_ms: u64, out: &mut Output) {
        let Some(origin) = self.multicast_route(group) else { return };
        match self.multicast.send_pending(group, now_ms, &mut self.scheduler) {
            Ok(Some(s)) => {
                out.persist.push(Persist::McFcntDown { group: s.group.clone(), next: s.next_f_cnt });
                let airtime_us = u64::try_from(s.airtime.as_micros()).unwrap_or(u64::MAX);
                out.notes.push(Note::MulticastSent { group: s.group.clone(), f_cnt: s.f_cnt, airtime_us });
                out.downlinks.push(OutDownlink {
                    origin,
                    device: s.group,
                    params: s.params,
                    phy: s.phy,
                    f_cnt_down: Some(s.f_cnt),
                    kind: DownlinkKind::Multicast,
                });
            }
            Ok(None) => {}
            Err(e) => out.notes.push(Note::DownlinkDeferred {
                device: group.to_string(),
                reason: e.to_string(),
                duty_cycle: e.is_duty_cycle(),
            }),
        }
    }

    /// Where a group's frame goes: the source and gateway most of its members were last heard
    /// through (the first member's on a tie), else the one source that can transmit; None: wait.
    fn multicast_route(&self, group: &str) -> Option<Origin> {
        let g = self.multicast.group(group)?;
        let mut seen: Vec<(Origin, usize)> = Vec::new();
        for o in g.members.iter().filter_map(|m| self.last_origin.get(m)) {
            match seen.iter_mut().find(|(s, _)| s == o) {
                Some((_, n)) => *n += 1,
                None => seen.push((*o, 1)),
            }
        }
        let best = seen.iter().fold(None, |best: Option<(Origin, usize)>, &(o, n)| match best {
            Some((_, b)) if b >= n => best,
            _ => Some((o, n)),
        });
        best.map(|(o, _)| o).or(self.default_route)
    }
}
