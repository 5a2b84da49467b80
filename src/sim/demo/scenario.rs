//! The script of the run, what happens when: the broker is cut off and brought back (and the backlog
//! it leaves drains), the city sends a demand-response event and a lighting override as signed
//! commands, and sends again a command that got no answer.

use std::time::{Duration as StdDuration, Instant};

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::Signer;
use rumqttc::QoS;
use serde_json::{json, Value};

use super::district::{self, FEEDER_LIMIT_KW};
use super::net::{BrokerProcess, Gate};
use super::{view, Demo, DemoArgs, GATEWAY_ID, KEY_ID, PREFIX, ZONE};
use crate::reading::rfc3339;

/// A signed command waiting for its answer.
pub(super) struct PendingCmd {
    pub(super) what: &'static str,
    sent: Instant,
    attempts: u32,
    pub(super) cmd: &'static str,
    args: Value,
}

/// The scripted moments of the run (simulated time).
pub(super) struct Script {
    pub(super) outage: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub(super) dr_at: DateTime<Utc>,
    dr_duration_s: i64,
    pub(super) override_at: DateTime<Utc>,
    override_s: u64,
}

impl Script {
    /// The moments, as fractions of the run's simulated span (`--seconds` at the speed; 15 h when it runs
    /// until Ctrl-C): the broker (only ours) is cut off from 30 % to 40 %, the DR event starts at 50 %
    /// (for 20 % of the span, 10 min to 3 h), the lighting override at 75 % (8 %, 5 min to 1 h).
    pub(super) fn plan(args: &DemoArgs, speed: f64, start_at: DateTime<Utc>, broker: Option<&BrokerProcess>) -> Script {
        let span_s = match args.seconds {
            Some(s) => (s as f64 * speed) as i64,
            None => 15 * 3600,
        };
        let at = |f: f64| start_at + Duration::seconds((span_s as f64 * f) as i64);
        Script {
            outage: broker.map(|_| (at(0.30), at(0.40))),
            dr_at: at(0.50),
            dr_duration_s: ((span_s as f64 * 0.2) as i64).clamp(600, 3 * 3600),
            override_at: at(0.75),
            override_s: ((span_s as f64 * 0.08) as u64).clamp(300, 3600),
        }
    }
}

impl Demo {
    pub(super) fn backlog(&mut self, now: DateTime<Utc>) {
        let depth = self.daemon.store.depth();
        self.backlog_max = self.backlog_max.max(depth);
        if self.last_backlog_sample.elapsed() >= StdDuration::from_millis(100)
            || self.rec.backlog.last().is_none_or(|(_, d)| (*d == 0) != (depth == 0))
        {
            self.last_backlog_sample = Instant::now();
            self.rec.backlog.push((now, depth));
        }
        if self.draining && depth == 0 && !self.broker_down() {
            self.draining = false;
            view::line(
                now,
                "backlog",
                &format!("drained: {} readings arrived late (\"replayed\": true), in order per device", self.replayed),
            );
        }
        let interesting = self.broker_down() || (self.draining && depth > 0);
        if interesting && self.last_backlog_line.elapsed() >= StdDuration::from_millis(1000) {
            self.last_backlog_line = Instant::now();
            let state = if self.broker_down() { "broker DOWN, kept in the on-disk journal" } else { "draining" };
            view::line(now, "backlog", &format!("{depth:>5} records waiting  ({state})"));
        }
    }

    pub(super) async fn script(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        if let Some((from, to)) = self.script.outage {
            if now >= from && self.outage_started.is_none() && !self.rec.outages.iter().any(|(_, e)| e.is_some()) {
                if let Some(g) = &self.gate {
                    g.close();
                }
                if let Some(b) = self.broker.as_mut() {
                    b.kill();
                }
                self.outage_started = Some(Instant::now());
                self.rec.outages.push((now, None));
                view::line(
                    now,
                    "BROKER",
                    "cut off (the broker process is killed). The gateway keeps running on its own:",
                );
                view::line(
                    now,
                    "",
                    "readings go to its on-disk journal, lamps and loads are still controlled locally.",
                );
            }
            if now >= to && self.broker_down() {
                if let Some(b) = self.broker.as_mut() {
                    b.restart().await?;
                }
                self.outage_real_s = self.outage_started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                self.backlog_max_at_restore = self.daemon.store.depth();
                self.draining = true;
                let now = self.now();
                if let Some(o) = self.rec.outages.last_mut() {
                    o.1 = Some(now);
                }
                view::line(
                    now,
                    "BROKER",
                    &format!(
                        "back (outage of {:.1} s real). {} records waiting to drain.",
                        self.outage_real_s, self.backlog_max_at_restore
                    ),
                );
            }
        }
        let ready = self.gate.as_ref().is_none_or(Gate::is_open) && !self.broker_down();
        if !self.dr_sent && now >= self.script.dr_at && ready {
            self.dr_sent = true;
            let end = now + Duration::seconds(self.script.dr_duration_s);
            let mut max_base: f64 = 0.0;
            let mut t = now;
            while t <= end {
                max_base = max_base.max(district::base_load_kw(t));
                t += Duration::minutes(5);
            }
            let base_now = district::base_load_kw(now);
            // Tight enough that loads must be shed, loose enough that shedding can hold it (the wallbox
            // keeps its 4.2 kW under §14a), and never above the configured limit.
            let limit = (base_now + 15.0).max(max_base + 6.0).min(FEEDER_LIMIT_KW - 2.0).round();
            self.rec.dr_event = Some((now, end, limit));
            let args = json!({
                "id": "evening-peak-1",
                "start": rfc3339(now),
                "duration_s": self.script.dr_duration_s,
                "limit_kw": limit,
            });
            view::line(
                now,
                "CITY",
                &format!(
                    "sends dr.event (signed): hold the feeder under {limit:.0} kW until {} (feeder now {:.1} kW)",
                    view::hhmm(end),
                    self.district.feeder_kw(now)
                ),
            );
            self.command("dr.event", "demand-response event", args);
        }
        if !self.override_sent && now >= self.script.override_at && ready {
            self.override_sent = true;
            let level = 60u8;
            let until = now + Duration::seconds(self.script.override_s as i64);
            self.rec.override_ = Some((now, until, level));
            view::line(
                now,
                "CITY",
                &format!(
                    "sends lighting.override (signed): street festival, all lamps {level} % until {}",
                    view::hhmm(until)
                ),
            );
            self.command(
                "lighting.override",
                "lighting override",
                json!({"zone": ZONE, "level_pct": level, "duration_s": self.script.override_s}),
            );
        }
        Ok(())
    }

    /// Signs a command with the city's key and publishes it on `cmd/req`.
    fn command(&mut self, cmd: &'static str, what: &'static str, args: Value) {
        self.cmd_seq += 1;
        let now = self.now();
        let id = format!("demo-{}-{}", cmd.replace('.', "-"), self.cmd_seq);
        let body = json!({
            "id": id,
            "cmd": cmd,
            "args": args.clone(),
            "gateway": GATEWAY_ID,
            "issued_at": rfc3339(now - Duration::seconds(5)),
            "expires_at": rfc3339(now + Duration::hours(6)),
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let sig = self.key.sign(&bytes);
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope = json!({"key_id": KEY_ID, "payload": b64.encode(&bytes), "sig": b64.encode(sig.to_bytes())});
        let topic = format!("{PREFIX}/{GATEWAY_ID}/cmd/req");
        let _ = self.client.try_publish(topic, QoS::AtLeastOnce, false, envelope.to_string());
        let attempts = self.pending_cmds.values().find(|p| p.cmd == cmd).map_or(1, |p| p.attempts + 1);
        self.pending_cmds.retain(|_, p| p.cmd != cmd);
        self.pending_cmds.insert(id, PendingCmd { what, sent: Instant::now(), attempts, cmd, args });
    }

    /// A command without an answer after 4 s (the gateway was reconnecting) is sent again, once.
    pub(super) fn resend_commands(&mut self) {
        let due: Vec<(&'static str, &'static str, Value)> = self
            .pending_cmds
            .values()
            .filter(|p| p.sent.elapsed() > StdDuration::from_secs(4) && p.attempts < 3)
            .map(|p| (p.cmd, p.what, p.args.clone()))
            .collect();
        for (cmd, what, args) in due {
            if self.broker_down() {
                continue;
            }
            view::line(self.now(), "CITY", &format!("no answer to the {what} yet: sending it again"));
            self.command(cmd, what, args);
        }
    }
}
