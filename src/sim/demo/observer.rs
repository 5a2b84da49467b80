//! The city's side: the viewer, subscribed to everything the gateway publishes, and what it makes of
//! each message (readings, events, lighting and DR status, energy reports, command answers) — both the
//! terminal lines and the record of what was received.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::district::Kind;
use super::net::ViewerMsg;
use super::{view, Demo, GATEWAY_ID, METER, PREFIX, WATER_METER, ZONE};

fn parse_at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

impl Demo {
    pub(super) fn on_viewer(&mut self, m: ViewerMsg) {
        match m {
            ViewerMsg::Subscribed => {
                self.viewer_up = true;
                if let Some(g) = &self.gate {
                    if !g.is_open() && !self.broker_down() {
                        g.open();
                        view::line(
                            self.now(),
                            "BROKER",
                            "the viewer (the city) is subscribed again; the gateway reconnects",
                        );
                    }
                }
            }
            ViewerMsg::Down => self.viewer_up = false,
            ViewerMsg::Publish(topic, payload) => self.on_message(&topic, &payload),
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let Some(suffix) = topic.strip_prefix(&format!("{PREFIX}/{GATEWAY_ID}/")) else { return };
        let v: Value = serde_json::from_slice(payload).unwrap_or_default();
        if let Some(seq) = v["seq"].as_u64() {
            self.seqs.insert(seq);
        }
        let now = self.now();
        let at = parse_at(&v["at"]).unwrap_or(now);
        if let Some(device) = suffix.strip_prefix("reading/") {
            let kind = if device == METER {
                Kind::Meter
            } else if device == WATER_METER {
                Kind::WaterMeter
            } else {
                match self.district.by_name(device) {
                    Some(i) => self.district.devices[i].kind,
                    None => return,
                }
            };
            *self.rec.readings.entry(kind).or_default() += 1;
            if let Some(f) = v["lorawan"]["f_cnt"].as_u64() {
                self.received.insert((device.to_string(), f as u32));
            }
            let replayed = v["replayed"] == true;
            if replayed {
                self.replayed += 1;
            }
            let m = &v["metrics"];
            let text = match kind {
                Kind::Container => m["fill_pct"].as_f64().map(|f| {
                    self.rec.fills.entry(device.to_string()).or_default().push((at, f));
                    format!("fill {f:.1} % (distance {} mm)", m["distance_mm"])
                }),
                Kind::Tree => m["soil_moisture_pct"].as_f64().map(|f| {
                    self.rec.moisture.entry(device.to_string()).or_default().push((at, f));
                    format!("soil moisture {f:.1} %")
                }),
                Kind::Presence => Some(format!("motion {}", m["motion"])),
                Kind::Lamp => Some(format!("reports level {} %", m["lamp_level_pct"])),
                Kind::Load => Some(format!("status {}", v["lorawan"]["payload_hex"].as_str().unwrap_or(""))),
                Kind::Meter => m["power_w"].as_f64().map(|p| format!("{:.1} kW", p / 1000.0)),
                Kind::WaterMeter => m["volume_m3"].as_f64().map(|v| format!("{v:.3} m³")),
            };
            // Readings are many: one line per kind of device every 45 (simulated) minutes.
            let due = self.last_printed.get(kind.key()).is_none_or(|t| now - *t >= Duration::minutes(45));
            if due && !replayed {
                self.last_printed.insert(kind.key().to_string(), now);
                let l = &v["lorawan"];
                let radio = if l.is_object() {
                    format!("  [f_cnt {} sf{} rssi {}]", l["f_cnt"], l["sf"], l["rssi"])
                } else if v["wmbus"].is_object() {
                    format!("  [wM-Bus rssi {}]", v["wmbus"]["rssi"])
                } else {
                    "  [SML]".into()
                };
                view::line(at, "reading", &format!("{device:<10} {}{radio}", text.unwrap_or_default()));
            }
        } else if let Some(device) = suffix.strip_prefix("event/") {
            let ev = v["event"].as_str().unwrap_or("?").to_string();
            self.rec.events.push((at, device.to_string(), ev.clone()));
            let detail = match ev.as_str() {
                "container_full" | "container_emptied" => format!("fill {} %", v["fill_pct"]),
                "needs_water" | "watered" => format!("soil moisture {} %", v["soil_moisture_pct"]),
                _ => String::new(),
            };
            view::line(at, "EVENT", &format!("{ev} from {device} {detail}"));
        } else if suffix == format!("lighting/{ZONE}") {
            if let Some(lamps) = v["lamps"].as_object() {
                let names = &self.rec.lamp_names;
                self.lighting_reasons = names
                    .iter()
                    .map(|n| (n.clone(), lamps.get(n).and_then(|l| l["reason"].as_str()).unwrap_or("?").to_string()))
                    .collect();
                self.lighting_levels = names
                    .iter()
                    .map(|n| lamps.get(n).and_then(|l| l["level_pct"].as_u64()).unwrap_or(0) as u8)
                    .collect();
            }
        } else if suffix == "dr/status" {
            if let Some(limit) = v["limit_kw"].as_f64() {
                let reason = v["limit_reason"].as_str().unwrap_or("?").to_string();
                if self.rec.limits.last().is_none_or(|(_, l, r)| (*l - limit).abs() > 0.01 || *r != reason) {
                    self.rec.limits.push((at, limit, reason.clone()));
                    if self.limit.0 != limit || self.limit.1 != reason {
                        self.limit = (limit, reason.clone());
                        self.feeder_line(now, &format!("limit in force: {limit:.0} kW ({reason})"));
                    }
                }
            }
        } else if suffix == format!("agg/lighting-{ZONE}") {
            let window = v["period"] == "window";
            if let (true, Some(e), Some(f)) = (window, v["energy_wh"].as_f64(), v["full_power_wh"].as_f64()) {
                let end = parse_at(&v["window_end"]).unwrap_or(now);
                self.rec.energy_reports.push((end, e, f, v["co2_saved_g"].as_f64().unwrap_or(0.0)));
            }
        } else if suffix == "cmd/res" {
            let id = v["id"].as_str().unwrap_or("").to_string();
            if let Some(p) = self.pending_cmds.remove(&id) {
                let ok = v["ok"] == true;
                match p.cmd {
                    "dr.event" => self.dr_ok = Some(ok),
                    _ => self.override_ok = Some(ok),
                }
                let text = if ok {
                    let r = &v["result"];
                    let detail = match r["lamps"].as_object() {
                        Some(lamps) => format!(
                            "{} lamps {}, until {}",
                            lamps.len(),
                            lamps
                                .values()
                                .next()
                                .map(|l| format!("{} % ({})", l["level_pct"], l["reason"].as_str().unwrap_or("")))
                                .unwrap_or_default(),
                            parse_at(&r["override_until"]).map(view::hhmm).unwrap_or_default()
                        ),
                        None => r.to_string(),
                    };
                    format!("{} accepted by the gateway: {detail}", p.what)
                } else {
                    format!("{} REFUSED: {}", p.what, v["error"])
                };
                view::line(now, "cmd/res", &text);
            }
            self.cmd_res.push(v);
        } else if suffix == "state" {
            view::line(now, "state", &format!("gateway says {}", String::from_utf8_lossy(payload)));
        }
    }
}
