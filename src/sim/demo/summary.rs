//! The end of the run: the backlog drains, then everything is accounted for in the figures of the
//! `DEMO_SUMMARY` line (delivery, outage, lamps, energy, feeder and DR event), printed readably first.

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::district::{Kind, BOOST_LEVEL, FEEDER_LIMIT_KW};
use super::net::ViewerMsg;
use super::{report, Demo, GATEWAY_ID};
use crate::reading::rfc3339;

/// A DR event's first minutes (simulated) are not judged: the meter has to show the sheds first.
const SETTLE_MIN: i64 = 10;

impl Demo {
    /// After the run: let the backlog drain, then account for everything.
    pub(super) async fn finish(&mut self, viewer: &mut tokio::sync::mpsc::UnboundedReceiver<ViewerMsg>) -> Value {
        let end = self.now();
        self.rec.end = Some(end);
        let journaled_at_end = self.daemon.counters.records_journaled.load(std::sync::atomic::Ordering::Relaxed);
        if self.broker.as_mut().is_some_and(|b| !b.alive()) {
            if let Some(b) = self.broker.as_mut() {
                let _ = b.restart().await;
            }
            if let Some(g) = &self.gate {
                g.open();
            }
            if let Some(o) = self.rec.outages.last_mut() {
                o.1.get_or_insert(end);
            }
        }
        // Wait (up to 20 s) until every acknowledged uplink has reached the viewer and the outbox is empty.
        let deadline = Instant::now() + StdDuration::from_secs(20);
        while Instant::now() < deadline {
            let missing = self.acked.difference(&self.received).count();
            if missing == 0 && self.daemon.store.depth() == 0 && self.records_received() >= journaled_at_end {
                break;
            }
            tokio::select! {
                Some(m) = viewer.recv() => self.on_viewer(m),
                _ = tokio::time::sleep(StdDuration::from_millis(50)) => {}
            }
        }
        // And what is still in flight to the viewer.
        let quiet = Instant::now() + StdDuration::from_millis(300);
        while let Ok(Some(m)) =
            tokio::time::timeout(quiet.saturating_duration_since(Instant::now()), viewer.recv()).await
        {
            self.on_viewer(m);
        }
        self.summary(end, journaled_at_end)
    }

    /// Records that reached the viewer: everything with a `seq`, and the command answers (which have none).
    fn records_received(&self) -> u64 {
        (self.seqs.len() + self.cmd_res.iter().filter(|v| v.get("seq").is_none()).count()) as u64
    }

    fn summary(&self, end: DateTime<Utc>, journaled: u64) -> Value {
        let rec = &self.rec;
        let start = rec.start.unwrap_or(end);
        let lost: Vec<String> =
            self.acked.difference(&self.received).map(|(d, f)| format!("{d}#{f}")).take(20).collect();
        let lost_n = self.acked.difference(&self.received).count();
        // Lamps reacting to presence: the sensor's lamp reaches the boost level within 10 minutes.
        let level_at = |lamp: usize, from: DateTime<Utc>, to: DateTime<Utc>| -> u8 {
            let mut best = 0u8;
            let mut current = 0u8;
            for (t, levels) in &rec.lamps {
                if *t <= from {
                    current = levels.get(lamp).copied().unwrap_or(0);
                } else if *t <= to {
                    best = best.max(levels.get(lamp).copied().unwrap_or(0));
                }
            }
            best.max(current)
        };
        // Detections during the override are not judged: the city's override wins over presence.
        let overridden = |t: DateTime<Utc>| rec.override_.is_some_and(|(a, b, _)| a <= t && t < b);
        let judged: Vec<&(DateTime<Utc>, String, usize)> =
            rec.detections.iter().filter(|(t, ..)| *t + Duration::minutes(10) <= end && !overridden(*t)).collect();
        let reacted =
            judged.iter().filter(|(t, _, l)| level_at(*l, *t, *t + Duration::minutes(10)) >= BOOST_LEVEL).count();
        let presence_states = rec.lamps.iter().filter(|(_, l)| l.iter().any(|x| *x >= BOOST_LEVEL)).count();
        let (used_wh, full_wh) = report::lamp_energy(rec, end);
        let co2_g = (full_wh - used_wh).max(0.0) / 1000.0 * 380.0;
        let dr = rec.dr_event.map(|(s, e, limit)| {
            let settled = s + Duration::minutes(SETTLE_MIN);
            let e = e.min(end);
            let during: Vec<f64> =
                rec.feeder.iter().filter(|(t, _)| *t >= settled && *t <= e).map(|(_, k)| *k).collect();
            let before = rec.feeder.iter().rev().find(|(t, _)| *t <= s).map(|(_, k)| *k);
            let max = during.iter().copied().fold(f64::NAN, f64::max);
            let sheds = rec.loads.iter().filter(|(t, _, l, _)| *t >= s && *t <= e && l != "normal").count();
            json!({
                "sent": true,
                "accepted": self.dr_ok,
                "limit_kw": limit,
                "start": rfc3339(s),
                "end": rfc3339(e),
                "feeder_before_kw": before,
                "samples_judged": during.len(),
                "max_kw_after_settling": if max.is_nan() { Value::Null } else { json!((max * 10.0).round() / 10.0) },
                "held": !during.is_empty() && max <= limit + 0.5,
                "load_sheds": sheds,
            })
        });
        let peak = rec.feeder.iter().map(|(_, k)| *k).fold(0.0, f64::max);
        let full_events = rec.events.iter().filter(|(_, _, e)| e == "container_full").count();
        let outage = rec.outages.first().map(|(s, e)| {
            json!({
                "from": rfc3339(*s),
                "to": e.map(rfc3339),
                "seconds_real": (self.outage_real_s * 10.0).round() / 10.0,
                "uplinks_acked_during": self.acked_during_outage,
                "backlog_max": self.backlog_max,
                "backlog_at_restore": self.backlog_max_at_restore,
                "replayed_readings": self.replayed,
            })
        });
        let readings: serde_json::Map<String, Value> =
            Kind::ALL.iter().map(|k| (k.key().to_string(), json!(rec.readings.get(k).copied().unwrap_or(0)))).collect();
        let summary = json!({
            "gateway": GATEWAY_ID,
            "speed": rec.speed,
            "sim_start": rfc3339(start),
            "sim_end": rfc3339(end),
            "sim_hours": ((end - start).num_seconds() as f64 / 360.0).round() / 10.0,
            "readings": readings,
            "uplinks": {"sent": self.sent, "acked": self.acked.len(), "downlinks_received": self.downlinks},
            "wmbus": {"ours_sent": self.water_sent.0, "neighbours_sent": self.water_sent.1},
            "delivery": {
                "acked_uplinks_lost": lost_n,
                "lost_examples": lost,
                "records_journaled": journaled,
                "records_received": self.records_received(),
                "records_lost": journaled.saturating_sub(self.records_received()),
                "backlog_left": self.daemon.store.depth(),
            },
            "outage": outage,
            "lamps": {
                "detections": rec.detections.len(),
                "detections_judged": judged.len(),
                "reacted": reacted,
                "boost_states": presence_states,
                "override_accepted": self.override_ok,
            },
            "energy": {
                "lamps_used_kwh": (used_wh / 10.0).round() / 100.0,
                "always_on_kwh": (full_wh / 10.0).round() / 100.0,
                "saved_pct": if full_wh > 0.0 { ((1.0 - used_wh / full_wh) * 1000.0).round() / 10.0 } else { 0.0 },
                "co2_saved_kg": (co2_g / 10.0).round() / 100.0,
            },
            "feeder": {"limit_kw": FEEDER_LIMIT_KW, "peak_kw": (peak * 10.0).round() / 10.0, "telegrams": self.meter.written},
            "dr_event": dr,
            "containers": {"full_events": full_events},
            "events": rec.events.len(),
        });
        print_summary(&summary);
        summary
    }
}

fn print_summary(s: &Value) {
    println!("\n== the night in numbers ==");
    println!(
        "  simulated  {} h ({} -> {})",
        s["sim_hours"],
        s["sim_start"].as_str().unwrap_or(""),
        s["sim_end"].as_str().unwrap_or("")
    );
    println!("  readings   {}", s["readings"]);
    println!(
        "  delivery   {} uplinks sent, {} acknowledged by the gateway, {} of those lost; {} records journaled, {} received",
        s["uplinks"]["sent"],
        s["uplinks"]["acked"],
        s["delivery"]["acked_uplinks_lost"],
        s["delivery"]["records_journaled"],
        s["delivery"]["records_received"]
    );
    if s["outage"].is_object() {
        println!(
            "  outage     {:.1} s real; backlog peaked at {} records; {} readings arrived late (replayed), none lost: {}",
            s["outage"]["seconds_real"].as_f64().unwrap_or(0.0),
            s["outage"]["backlog_max"],
            s["outage"]["replayed_readings"],
            s["delivery"]["acked_uplinks_lost"] == 0
        );
    }
    println!(
        "  lamps      {} detections, lamps reacted to {} of {} judged; energy {} kWh vs {} kWh always-on ({} % saved, {} kg CO2)",
        s["lamps"]["detections"],
        s["lamps"]["reacted"],
        s["lamps"]["detections_judged"],
        s["energy"]["lamps_used_kwh"],
        s["energy"]["always_on_kwh"],
        s["energy"]["saved_pct"],
        s["energy"]["co2_saved_kg"]
    );
    if s["dr_event"].is_object() {
        let d = &s["dr_event"];
        println!(
            "  dr event   limit {} kW; feeder max {} kW after settling; held: {}; {} load actions",
            d["limit_kw"], d["max_kw_after_settling"], d["held"], d["load_sheds"]
        );
    }
    println!("  containers {} container_full events", s["containers"]["full_events"]);
}
