//! Inputs: the city's heartbeat and `dr.*` commands refreshing it, the OpenADR VTN's events, and feeder
//! meter readings.

use chrono::{DateTime, Utc};

use super::events::VTN_PREFIX;
use super::{add_ms, Demand, DrEvent, Output, Reading, MAX_POWER_W};

impl Demand {
    pub(super) fn hear_city(&mut self, now: DateTime<Utc>, at: DateTime<Utc>) {
        let at = at.min(now);
        if self.heartbeat.is_none_or(|h| at > h) {
            self.heartbeat = Some(at);
        }
    }

    /// A `dr.*` command refreshes the heartbeat once the city sends heartbeats at all.
    pub(super) fn refresh_city(&mut self, now: DateTime<Utc>) {
        if self.heartbeat.is_some() {
            self.hear_city(now, now);
        }
    }

    pub(super) fn meter(&mut self, now: DateTime<Utc>, at: DateTime<Utc>, power_w: f64) {
        if !(power_w.is_finite() && (0.0..=MAX_POWER_W).contains(&power_w)) {
            self.invalid_readings += 1;
            if let Some(w) = &mut self.window {
                w.add_invalid();
            }
            for b in &mut self.events.booked {
                if let Some(acc) = &mut b.acc {
                    acc.add_invalid();
                }
            }
            return;
        }
        let at = at.min(now);
        if self.reading.is_some_and(|r| at < r.at) {
            return; // out of order
        }
        let kw = power_w / 1000.0;
        self.reading = Some(Reading { at, kw });
        let settle = i64::from(self.p.settle_s) * 1000;
        self.pending.retain(|p| add_ms(p.at, settle) > at);
        if let Some(w) = &mut self.window {
            w.add_reading(kw);
        }
        for b in &mut self.events.booked {
            if let Some(acc) = &mut b.acc {
                acc.add_reading(kw);
            }
        }
    }

    /// The VTN's complete set: book each, cancel what it withdrew (see [`super::Input::VtnEvents`]).
    pub(super) fn vtn_events(&mut self, now: DateTime<Utc>, events: Vec<DrEvent>, out: &mut Output) {
        let wanted: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        // The VTN's current version always wins: its modification time has whole seconds (an event
        // modified within the second it was created keeps its number) and its clock may step back, so
        // a booked version that differs in anything but the number is replaced, and one that does not
        // is stale whatever the numbers say.
        let same = |a: &DrEvent, b: &DrEvent| {
            DrEvent { modification: 0, ..a.clone() } == DrEvent { modification: 0, ..b.clone() }
        };
        for mut ev in events {
            let id = ev.id.clone();
            if !id.starts_with(VTN_PREFIX) {
                out.acks.push((id, Err(super::EventError::InvalidId)));
                continue;
            }
            if let Some(b) = self.events.booked.iter().find(|b| b.ev.id == id) {
                if same(&b.ev, &ev) {
                    out.acks.push((id, Ok(super::EventAck::Stale { current: b.ev.modification })));
                    continue;
                }
                ev.modification = ev.modification.max(b.ev.modification.saturating_add(1));
            }
            let ack = self.events.upsert(ev, now, &mut self.rng, self.p.limit_kw, &self.p.level_factors);
            out.acks.push((id, ack));
        }
        let withdrawn: Vec<String> = self
            .events
            .booked
            .iter()
            .map(|b| b.ev.id.clone())
            .filter(|id| id.starts_with(VTN_PREFIX) && !wanted.contains(id))
            .collect();
        for id in withdrawn {
            if let Ok((ack, Some(b))) = self.events.cancel(&id, None) {
                self.finish_event(b, now, true, out);
                out.acks.push((id, Ok(ack)));
            }
        }
    }
}
