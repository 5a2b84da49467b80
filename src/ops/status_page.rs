//! The local status page (`GET /` on the ops HTTP port): plain server-rendered HTML for a technician at
//! the gateway. No external assets (inline CSS, no scripts, no images, no fonts), refreshes itself every
//! [`REFRESH_S`] seconds, read-only (links only to `/metrics` and `/healthz` on the same server).
//!
//! Everything that comes from outside the code is HTML-escaped: device and zone names come from the
//! config (or a `device.upsert` command), metric names and values from the air (a JS codec can produce
//! any key), error messages from wherever they arose. Class names and widths are chosen from fixed sets
//! or clamped numbers, never interpolated from data.
//!
//! Pure: `render` takes the [`StatusView`] (which carries `now`) and returns the HTML.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::ops::board::{DeviceView, PowerView, SourceView, StatusView};

/// Seconds between the page's own reloads.
pub const REFRESH_S: u32 = 5;
/// At most this many metrics are shown per device (the rest are counted).
const MAX_METRICS_SHOWN: usize = 6;
/// Longest text shown for one value or error before it is cut.
const MAX_TEXT: usize = 120;

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2327;background:#f4f5f7;font-size:14px}\
header{background:#1f3a4d;color:#fff;padding:12px 20px}\
header h1{margin:0;font-size:22px;display:inline-block;margin-right:12px}\
header .sub{color:#c9d6df;font-size:13px}\
main{padding:12px 20px 24px}\
h2{font-size:16px;margin:22px 0 8px;color:#1f3a4d}\
h3{font-size:14px;margin:14px 0 6px}\
.cards{display:flex;flex-wrap:wrap;gap:10px}\
.card{background:#fff;border:1px solid #d9dde1;border-radius:6px;padding:10px 14px;min-width:170px}\
.card .k{font-size:12px;color:#5b6770;text-transform:uppercase;letter-spacing:.04em}\
.card .v{font-size:20px;font-weight:600;margin-top:2px}\
.card .d{font-size:12px;color:#5b6770;margin-top:2px}\
table{border-collapse:collapse;background:#fff;border:1px solid #d9dde1;width:100%}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef0;vertical-align:top}\
th{background:#eef1f4;font-size:12px;color:#3c474f;font-weight:600}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}\
.muted{color:#7b868e}\
.ok{color:#1b7f3b}.warn{color:#a86400}.bad{color:#b3261e}\
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:#7b868e}\
.pill.ok{background:#1b7f3b;color:#fff}.pill.warn{background:#c27c0e;color:#fff}.pill.bad{background:#b3261e;color:#fff}\
.bar{display:inline-block;width:90px;height:9px;background:#e3e6e9;border-radius:5px;vertical-align:middle;margin-right:6px;overflow:hidden}\
.bar span{display:block;height:100%;background:#e0a800}\
.err{color:#b3261e;font-size:12px}\
footer{padding:8px 20px 20px;color:#7b868e;font-size:12px}\
a{color:#1f5f8b}";

/// Renders the page.
pub fn render(view: &StatusView) -> String {
    let now = view.now.unwrap_or_else(Utc::now);
    let mut h = String::with_capacity(8192 + 256 * view.devices.len());
    let id = esc(&view.gateway_id);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{id} &middot; district-gateway</title><style>{STYLE}</style></head>\n<body>"
    );
    header(&mut h, view, now);
    h.push_str("<main>\n");
    cards(&mut h, view, now);
    sources(&mut h, &view.sources, now);
    devices(&mut h, &view.devices, now);
    device_problems(&mut h, view.control.get("lorawan").unwrap_or(&Value::Null));
    mac(&mut h, view.control.get("lorawan").unwrap_or(&Value::Null));
    lighting(&mut h, view.control.get("lighting").unwrap_or(&Value::Null), now);
    demand(&mut h, view.control.get("demand_response").unwrap_or(&Value::Null), now);
    traffic(&mut h, &view.counters);
    h.push_str("</main>\n");
    let _ = writeln!(
        h,
        "<footer>Read-only. Refreshes every {REFRESH_S} s. Page generated {}. \
         Also: <a href=\"/metrics\">/metrics</a> (Prometheus) &middot; <a href=\"/healthz\">/healthz</a>.</footer>\n\
         </body></html>",
        esc(&rfc3339(now))
    );
    h
}

fn header(h: &mut String, v: &StatusView, now: DateTime<Utc>) {
    let uptime = v.started_at.map(|s| duration((now - s).num_milliseconds() as f64 / 1000.0));
    let _ = writeln!(
        h,
        "<header><h1>{}</h1><span class=\"sub\">district-gateway {} &middot; up {} &middot; {}</span></header>",
        esc(&v.gateway_id),
        esc(&v.version),
        uptime.as_deref().map(esc).unwrap_or_else(|| "?".into()),
        esc(&now.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
    );
}

fn card(h: &mut String, key: &str, value_html: &str, detail_html: &str) {
    let _ = writeln!(
        h,
        "<div class=\"card\"><div class=\"k\">{key}</div><div class=\"v\">{value_html}</div><div class=\"d\">{detail_html}</div></div>"
    );
}

/// Bytes for people: 0 B, 812 B, 4.0 KiB, 1.2 MiB, 3.4 GiB.
fn bytes_text(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn cards(h: &mut String, v: &StatusView, now: DateTime<Utc>) {
    h.push_str("<section class=\"cards\" id=\"summary\">\n");
    let (cls, word) = if v.healthy { ("ok", "healthy") } else { ("bad", "unhealthy") };
    card(h, "Health", &format!("<span class=\"{cls}\">{word}</span>"), &esc(&cut(&v.health_reason)));
    let (cls, word) = if v.mqtt_connected { ("ok", "up") } else { ("bad", "down") };
    card(
        h,
        "MQTT link",
        &format!("<span class=\"{cls}\" id=\"mqtt\">{word}</span>"),
        &format!("{} reconnect{}", v.mqtt_reconnects, plural(v.mqtt_reconnects)),
    );
    let age = match v.backlog_oldest_age_s {
        Some(a) if v.backlog_depth > 0 => format!("oldest {}", esc(&duration(a))),
        _ => "nothing waiting".into(),
    };
    let cls = if v.backlog_depth == 0 {
        "ok"
    } else if v.backlog_oldest_age_s.unwrap_or(0.0) > 60.0 {
        "warn"
    } else {
        ""
    };
    card(h, "Backlog", &format!("<span class=\"{cls}\" id=\"backlog\">{}</span>", v.backlog_depth), &age);
    card(
        h,
        "Readings",
        &format!("{} <span class=\"muted\">published</span>", v.readings_published),
        &format!(
            "{} journaled &middot; <span class=\"{}\">{} dropped</span>",
            v.readings_journaled,
            if v.readings_dropped > 0 { "bad" } else { "" },
            v.readings_dropped
        ),
    );
    let written = v.disk_write_bytes.map_or_else(|| "n/a".to_string(), bytes_text);
    card(
        h,
        "Flash writes",
        &format!("<span id=\"disk-writes\">{}</span>", esc(&written)),
        &format!("since start &middot; {} journal fsync{}", v.journal_fsyncs, plural(v.journal_fsyncs)),
    );
    if let Some(p) = &v.power {
        power_card(h, p, now);
    }
    if !v.wmbus_foreign.is_empty() {
        wmbus_card(h, &v.wmbus_foreign);
    }
    h.push_str("</section>\n");
}

/// Other people's wM-Bus meters heard: counted by manufacturer and type for planning, never by id.
fn wmbus_card(h: &mut String, foreign: &[(String, String, u64)]) {
    let total: u64 = foreign.iter().map(|(_, _, n)| n).sum();
    let detail =
        foreign.iter().map(|(m, t, n)| format!("{} {} {n}", esc(m), esc(t))).collect::<Vec<_>>().join(" &middot; ");
    card(h, "Other wM-Bus meters", &format!("<span id=\"wmbus-foreign\">{total}</span> telegrams"), &detail);
}

/// Mains power, as the power-fail input says.
fn power_card(h: &mut String, p: &PowerView, now: DateTime<Utc>) {
    let refused = format!("{} reading{} refused", p.refused, plural(p.refused));
    match p.lost_since {
        Some(since) => card(
            h,
            "Mains power",
            "<span class=\"bad\" id=\"power\">lost</span>",
            &format!(
                "<span title=\"since {}\">for {}</span> &middot; journal synced, not accepting readings &middot; {refused}",
                esc(&rfc3339(since)),
                esc(&short_duration((now - since).num_milliseconds() as f64 / 1000.0))
            ),
        ),
        None => card(
            h,
            "Mains power",
            "<span class=\"ok\" id=\"power\">on</span>",
            &format!("power-fail input on GPIO {} &middot; {refused}", p.pin),
        ),
    }
}

fn state_class(state: &str) -> &'static str {
    match state {
        "up" => "ok",
        "starting" | "retrying" => "warn",
        "down" | "stopped" => "bad",
        _ => "",
    }
}

fn sources(h: &mut String, sources: &[SourceView], now: DateTime<Utc>) {
    let _ = writeln!(h, "<h2>Sources ({})</h2>", sources.len());
    if sources.is_empty() {
        h.push_str("<p class=\"muted\">No sources configured.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"sources\"><tr><th>name</th><th>type</th><th>state</th><th>since</th>\
         <th class=\"n\">frames</th><th class=\"n\">errors</th><th>last error</th></tr>\n",
    );
    for s in sources {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td><span class=\"pill {}\">{}</span></td>{}<td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"err\">{}</td></tr>",
            esc(&s.name),
            esc(&s.kind),
            state_class(&s.state),
            esc(&s.state),
            time_cell(s.since, now),
            s.frames,
            s.errors,
            s.last_error.as_deref().map(|e| esc(&cut(e))).unwrap_or_default(),
        );
    }
    h.push_str("</table>\n");
}

fn devices(h: &mut String, devices: &[DeviceView], now: DateTime<Utc>) {
    let seen = devices.iter().filter(|d| d.last_seen.is_some()).count();
    let _ = writeln!(h, "<h2>Devices ({}, {} heard since start)</h2>", devices.len(), seen);
    if devices.is_empty() {
        h.push_str("<p class=\"muted\">No devices configured.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"devices\"><tr><th>name</th><th>profile</th><th>last seen</th><th>last values</th>\
         <th class=\"n\">RSSI</th><th class=\"n\">SNR</th><th>error</th></tr>\n",
    );
    for d in devices {
        let rssi = d.rssi.map(|r| format!("{r} dBm")).unwrap_or_default();
        let snr = d.snr.map(|s| format!("{} dB", number(s))).unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"mono\">{}</td>{}<td class=\"mono\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"err\">{}</td></tr>",
            esc(&d.name),
            esc(&d.profile),
            time_cell(d.last_seen, now),
            metrics_text(&d.last_metrics),
            esc(&rssi),
            esc(&snr),
            d.error.as_deref().map(|e| esc(&cut(e))).unwrap_or_default(),
        );
    }
    h.push_str("</table>\n");
}

/// Class C devices that wait for a route and quarantined devices, when there are any.
fn device_problems(h: &mut String, lorawan: &Value) {
    let list = |k: &str| lorawan.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (waiting, quarantined) = (list("waiting_for_route"), list("quarantined"));
    if waiting.is_empty() && quarantined.is_empty() {
        return;
    }
    let _ = writeln!(h, "<h2>Devices needing attention ({})</h2>", waiting.len() + quarantined.len());
    h.push_str("<table id=\"device-problems\"><tr><th>name</th><th>state</th><th>why</th></tr>\n");
    let rows = waiting.iter().map(|v| ("waits for a route", v)).chain(quarantined.iter().map(|v| ("quarantined", v)));
    for (state, v) in rows {
        let text = |k: &str| esc(&cut(v.get(k).and_then(Value::as_str).unwrap_or("")));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{state}</td><td class=\"err\">{}</td></tr>",
            text("device"),
            text("reason")
        );
    }
    h.push_str("</table>\n");
}

/// ADR and MAC commands per device (`ops::mac_view`), when any device has a MAC state.
fn mac(h: &mut String, lorawan: &Value) {
    use crate::ops::mac_view::{multicast_rows, rows, COLUMNS, MULTICAST_COLUMNS};
    table(h, "ADR and MAC commands", "mac", COLUMNS, rows(lorawan));
    table(h, "Multicast groups", "multicast", MULTICAST_COLUMNS, multicast_rows(lorawan));
}

/// A titled table of plain-text cells (escaped and cut here); nothing when there are no rows.
fn table<const N: usize>(h: &mut String, title: &str, id: &str, columns: [&str; N], rows: Vec<[String; N]>) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(h, "<h2>{} ({})</h2>", esc(title), rows.len());
    let _ = write!(h, "<table id=\"{}\"><tr>", esc(id));
    for c in columns {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>\n");
    for r in rows {
        h.push_str("<tr>");
        for cell in r {
            let _ = write!(h, "<td>{}</td>", esc(&cut(&cell)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

/// `distance_mm 2116, battery_pct 92` (escaped), the first [`MAX_METRICS_SHOWN`] in key order.
fn metrics_text(m: &Map<String, Value>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> = m
        .iter()
        .take(MAX_METRICS_SHOWN)
        .map(|(k, v)| format!("{} {}", esc(&cut(k)), esc(&cut(&value_text(v)))))
        .collect();
    if m.len() > MAX_METRICS_SHOWN {
        parts.push(format!("<span class=\"muted\">+{} more</span>", m.len() - MAX_METRICS_SHOWN));
    }
    parts.join(", ")
}

fn lighting(h: &mut String, lighting: &Value, now: DateTime<Utc>) {
    h.push_str("<h2>Lighting</h2>\n");
    let zones = match lighting.as_object() {
        Some(z) if !z.is_empty() => z,
        _ => {
            h.push_str("<p class=\"muted\">No lighting zones configured.</p>\n");
            return;
        }
    };
    for (name, z) in zones {
        let mode = z.get("mode").and_then(Value::as_str).unwrap_or("");
        let mode_html = match mode {
            "safe" => " <span class=\"pill bad\">safe mode</span>".to_string(),
            "normal" | "" => String::new(),
            other => format!(" <span class=\"pill\">{}</span>", esc(other)),
        };
        let _ = writeln!(h, "<h3 class=\"zone\">Zone {}{mode_html}</h3>", esc(name));
        let mut notes = Vec::new();
        if let Some(level) = z.get("override_level_pct").and_then(Value::as_u64) {
            let until = z.get("override_until").and_then(Value::as_str).and_then(parse_time);
            notes.push(format!(
                "<span class=\"warn\">override at {level} %{}</span>",
                until.map(|u| format!(" until {}", esc(&in_time(u, now)))).unwrap_or_default()
            ));
        }
        for (key, label) in [("faulted_lamps", "faulted lamps"), ("silent_sensors", "silent sensors (fail-safe)")] {
            let names: Vec<String> = z
                .get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(esc).collect())
                .unwrap_or_default();
            if !names.is_empty() {
                notes.push(format!("<span class=\"bad\">{label}: {}</span>", names.join(", ")));
            }
        }
        if let Some(t) = z.get("today").filter(|t| t.is_object()) {
            let f = |k: &str| t.get(k).and_then(Value::as_f64).map(|x| number(x / 1000.0));
            if let (Some(e), Some(s)) = (f("energy_wh"), f("saved_wh")) {
                notes.push(format!("today {} kWh used, {} kWh saved", esc(&e), esc(&s)));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(h, "<p>{}</p>", notes.join(" &middot; "));
        }
        let lamps = z.get("lamps").and_then(Value::as_object);
        match lamps {
            Some(lamps) if !lamps.is_empty() => {
                h.push_str("<table class=\"lamps\"><tr><th>lamp</th><th>level</th><th>reason</th></tr>\n");
                for (lamp, l) in lamps {
                    let level = l.get("level_pct").and_then(Value::as_u64);
                    let reason = l.get("reason").and_then(Value::as_str).unwrap_or("");
                    let reason_cls = match reason {
                        "presence" => "ok",
                        "override" => "warn",
                        "failsafe" => "bad",
                        _ => "",
                    };
                    let level_html = match level {
                        Some(p) => {
                            let p = p.min(100);
                            format!("<span class=\"bar\"><span style=\"width:{p}%\"></span></span>{p} %")
                        }
                        None => "<span class=\"muted\">?</span>".into(),
                    };
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td>{level_html}</td><td class=\"{reason_cls}\">{}</td></tr>",
                        esc(lamp),
                        esc(reason)
                    );
                }
                h.push_str("</table>\n");
            }
            _ => h.push_str("<p class=\"muted\">No lamps.</p>\n"),
        }
    }
}

fn demand(h: &mut String, dr: &Value, now: DateTime<Utc>) {
    h.push_str("<h2>Demand response</h2>\n");
    let Some(o) = dr.as_object() else {
        h.push_str("<p class=\"muted\">Demand response is not configured.</p>\n");
        return;
    };
    let mut rows = String::new();
    let kw = |k: &str| o.get(k).and_then(Value::as_f64).map(|x| format!("{} kW", number(x)));
    if let Some(l) = kw("limit_kw") {
        let reason =
            o.get("limit_reason").and_then(Value::as_str).map(|r| format!(" ({})", esc(r))).unwrap_or_default();
        let _ = write!(rows, "<tr><th>limit</th><td>{}{reason}</td></tr>", esc(&l));
    }
    if let Some(m) = kw("measured_kw") {
        let _ = write!(rows, "<tr><th>measured</th><td>{}</td></tr>", esc(&m));
    }
    if let Some(ok) = o.get("meter_ok").and_then(Value::as_bool) {
        let _ = write!(
            rows,
            "<tr><th>feeder meter</th><td class=\"{}\">{}</td></tr>",
            if ok { "ok" } else { "bad" },
            if ok { "ok" } else { "lost (fail-safe)" }
        );
    }
    for key in ["active_events", "events"] {
        if let Some(a) = o.get(key).and_then(Value::as_array) {
            let ids: Vec<String> = a.iter().map(|e| esc(&cut(&value_text(e)))).collect();
            let text = if ids.is_empty() { "<span class=\"muted\">none</span>".into() } else { ids.join(", ") };
            let _ = write!(rows, "<tr><th>{}</th><td>{text}</td></tr>", key.replace('_', " "));
        }
    }
    // Anything else the loop reports, as plain key/value.
    let known = ["limit_kw", "limit_reason", "measured_kw", "meter_ok", "active_events", "events", "loads", "at"];
    for (k, v) in o.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
        if !v.is_null() && !v.is_object() {
            let _ =
                write!(rows, "<tr><th>{}</th><td>{}</td></tr>", esc(&k.replace('_', " ")), esc(&cut(&value_text(v))));
        }
    }
    let _ = writeln!(h, "<table id=\"dr\" style=\"width:auto\">{rows}</table>");
    if let Some(loads) = o.get("loads").and_then(Value::as_object).filter(|l| !l.is_empty()) {
        h.push_str(
            "<h3>Loads</h3><table id=\"loads\"><tr><th>load</th><th>state</th><th>since</th><th>command</th></tr>\n",
        );
        for (name, l) in loads {
            let state = l.get("state").and_then(Value::as_str).unwrap_or("");
            let since = l.get("since").and_then(Value::as_str).and_then(parse_time);
            let command: Vec<String> = l
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| *k != "state" && *k != "since")
                        .map(|(k, v)| format!("{} {}", esc(k), esc(&cut(&value_text(v)))))
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td>{}<td class=\"mono\">{}</td></tr>",
                esc(name),
                esc(state),
                time_cell(since, now),
                command.join(", ")
            );
        }
        h.push_str("</table>\n");
    }
}

fn traffic(h: &mut String, counters: &[(String, u64)]) {
    let nonzero: Vec<&(String, u64)> = counters.iter().filter(|(_, v)| *v > 0).collect();
    h.push_str("<h2>Traffic since start</h2>\n");
    if nonzero.is_empty() {
        h.push_str("<p class=\"muted\">No traffic yet.</p>\n");
        return;
    }
    h.push_str("<table id=\"traffic\" style=\"width:auto\"><tr><th>counter</th><th class=\"n\">value</th></tr>\n");
    for (k, v) in nonzero {
        let _ = writeln!(h, "<tr><td class=\"mono\">{}</td><td class=\"n\">{v}</td></tr>", esc(k));
    }
    let zero = (counters.len() - counters.iter().filter(|(_, v)| *v > 0).count()) as u64;
    let _ = writeln!(
        h,
        "</table><p class=\"muted\">{zero} counter{} at zero not shown; all are in /metrics.</p>",
        plural(zero)
    );
}

/// A table cell with "12 s ago" and the exact time as its tooltip.
fn time_cell(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => format!("<td title=\"{}\">{}</td>", esc(&rfc3339(t)), esc(&ago(t, now))),
        None => "<td class=\"muted\">never</td>".into(),
    }
}

/// "12 s ago", "4 min ago", "3 h ago", "2 d ago"; "just now" for a time slightly in the future.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_milliseconds() as f64 / 1000.0;
    if s < 0.0 {
        return "just now".into();
    }
    format!("{} ago", short_duration(s))
}

fn in_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (t - now).num_milliseconds() as f64 / 1000.0;
    if s <= 0.0 {
        "now".into()
    } else {
        format!("{} (in {})", t.format("%H:%M:%S UTC"), short_duration(s))
    }
}

/// One unit: "12 s", "4 min", "3 h", "2 d".
fn short_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Two units: "45 s", "5 min 3 s", "3 h 12 min", "2 d 3 h".
pub fn duration(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    let (d, hr, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d} d {hr} h")
    } else if hr > 0 {
        format!("{hr} h {m} min")
    } else if m > 0 {
        format!("{m} min {sec} s")
    } else {
        format!("{sec} s")
    }
}

/// A number without noise: integers as such, others with at most 3 decimals.
fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{}", x as i64);
    }
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A JSON value as short text (not escaped).
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => number(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// At most [`MAX_TEXT`] characters, with "…" when cut; control characters become spaces.
fn cut(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_TEXT).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().count() > MAX_TEXT {
        out.push('…');
    }
    out
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// HTML-escapes text for element content and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn metrics(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn sample() -> StatusView {
        StatusView {
            gateway_id: "garstedt-01".into(),
            version: "0.1.0".into(),
            now: Some(t(3 * 3600 + 12 * 60 + 5)),
            started_at: Some(t(0)),
            mqtt_connected: true,
            mqtt_reconnects: 2,
            backlog_depth: 17,
            backlog_oldest_age_s: Some(95.0),
            readings_journaled: 1201,
            readings_published: 1184,
            readings_dropped: 0,
            healthy: true,
            health_reason: "ok".into(),
            power: None,
            disk_write_bytes: Some(3 * 1024 * 1024 + 200 * 1024),
            journal_fsyncs: 812,
            sources: vec![
                SourceView {
                    name: "concentrator".into(),
                    kind: "gwmp".into(),
                    state: "up".into(),
                    since: Some(t(1)),
                    frames: 1210,
                    errors: 3,
                    last_error: None,
                },
                SourceView {
                    name: "feeder-meter-head".into(),
                    kind: "sml".into(),
                    state: "retrying".into(),
                    since: Some(t(100)),
                    frames: 0,
                    errors: 41,
                    last_error: Some("/dev/ttyUSB0: No such file or directory".into()),
                },
            ],
            devices: vec![
                DeviceView {
                    name: "bin-017".into(),
                    profile: "milesight-em310-udl".into(),
                    last_seen: Some(t(3 * 3600 + 11 * 60 + 53)),
                    last_metrics: metrics(json!({"battery_pct": 92, "distance_mm": 2116})),
                    rssi: Some(-97),
                    snr: Some(7.5),
                    error: None,
                },
                DeviceView { name: "tree-042".into(), profile: "dragino-lse01".into(), ..DeviceView::default() },
            ],
            control: json!({
                "lighting": {"reiherhagen": {
                    "zone": "reiherhagen", "at": "2026-11-26T03:12:05.000Z", "mode": "normal",
                    "lamps": {"lamp-01": {"level_pct": 100, "reason": "presence"},
                              "lamp-02": {"level_pct": 100, "reason": "presence"},
                              "lamp-03": {"level_pct": 10, "reason": "schedule"}},
                    "override_until": null, "override_level_pct": null,
                    "faulted_lamps": ["lamp-03"], "silent_sensors": [],
                    "today": {"since": "2026-11-25T23:00:00.000Z", "energy_wh": 1234.0,
                              "full_power_wh": 5000.0, "saved_wh": 3766.0}
                }},
                "demand_response": {"limit_kw": 250.0, "limit_reason": "config", "events": ["ev-7"]}
            }),
            counters: vec![("frames_ok".into(), 1201), ("frames_bad_mic".into(), 0)],
            wmbus_foreign: vec![("KAM".into(), "water".into(), 3)],
        }
    }

    #[test]
    fn devices_waiting_for_a_route_and_quarantined_devices_are_listed_with_why() {
        let mut v = sample();
        assert!(!render(&v).contains("device-problems"), "nothing to show, no section");
        v.control["lorawan"] = json!({"waiting_for_route": [{"device": "lamp-9", "reason": "never heard <since>"}],
            "quarantined": [{"device": "bin-3", "reason": "codec gone"}]});
        let html = render(&v);
        assert!(html.contains("device-problems") && html.contains("lamp-9") && html.contains("bin-3"));
        assert!(html.contains("never heard &lt;since&gt;") && html.contains("quarantined"));
    }

    #[test]
    fn bytes_written_since_start_are_shown() {
        let html = render(&sample());
        assert!(html.contains("<span id=\"disk-writes\">3.2 MiB</span>"), "{html}");
        assert!(html.contains("812 journal fsyncs"));
        assert_eq!(bytes_text(812), "812 B");
        assert_eq!(bytes_text(4096), "4.0 KiB");
    }

    #[test]
    fn mains_power_is_shown_when_a_power_fail_input_is_configured() {
        let mut v = sample();
        assert!(!render(&v).contains("Mains power"), "no input, no card");
        v.power = Some(PowerView { pin: 6, lost_since: None, refused: 0 });
        let html = render(&v);
        assert!(html.contains("<span class=\"ok\" id=\"power\">on</span>"), "{html}");
        assert!(html.contains("power-fail input on GPIO 6 &middot; 0 readings refused"), "{html}");
        let now = v.now.unwrap();
        v.power = Some(PowerView { pin: 6, lost_since: Some(now - chrono::Duration::seconds(95)), refused: 1 });
        let html = render(&v);
        assert!(html.contains("<span class=\"bad\" id=\"power\">lost</span>"), "{html}");
        assert!(
            html.contains(
                ">for 95 s</span> &middot; journal synced, not accepting readings &middot; 1 reading refused"
            ),
            "{html}"
        );
    }

    #[test]
    fn renders_everything_a_technician_needs() {
        let html = render(&sample());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("<h1>garstedt-01</h1>"));
        assert!(html.contains("district-gateway 0.1.0"));
        assert!(html.contains("up 3 h 12 min"), "{html}");
        assert!(html.contains("<span class=\"ok\">healthy</span>"));
        assert!(html.contains("<span class=\"ok\" id=\"mqtt\">up</span>"));
        assert!(html.contains("2 reconnects"));
        assert!(html.contains(">17</span>") && html.contains("oldest 1 min 35 s"), "{html}");
        assert!(html.contains("1201 journaled"));
        // Sources: state with colour, error text.
        assert!(html.contains("<span class=\"pill ok\">up</span>"));
        assert!(html.contains("<span class=\"pill warn\">retrying</span>"));
        assert!(html.contains("/dev/ttyUSB0: No such file or directory"));
        // Devices: last seen relative, values, radio.
        assert!(html.contains(">12 s ago</td>"), "{html}");
        assert!(html.contains("battery_pct 92, distance_mm 2116"));
        assert!(html.contains("-97 dBm") && html.contains("7.5 dB"));
        assert!(html.contains("<td>tree-042</td>") && html.contains("never"));
        assert!(html.contains("Devices (2, 1 heard since start)"));
        // Lighting.
        assert!(html.contains("Zone reiherhagen"));
        assert!(html.contains("<td>lamp-02</td><td><span class=\"bar\"><span style=\"width:100%\"></span></span>100 %</td><td class=\"ok\">presence</td>"));
        assert!(html.contains("10 %</td><td class=\"\">schedule</td>"));
        assert!(html.contains("faulted lamps: lamp-03"));
        assert!(html.contains("today 1.234 kWh used, 3.766 kWh saved"), "{html}");
        // Demand response.
        assert!(html.contains("250 kW (config)"));
        assert!(html.contains("ev-7"));
        // Traffic: non-zero counters only.
        assert!(html.contains(">frames_ok</td><td class=\"n\">1201"));
        assert!(!html.contains("frames_bad_mic"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn escapes_everything_from_config_and_air() {
        let mut v = sample();
        v.gateway_id = "<gw>".into();
        v.devices[0].name = "<script>alert(1)</script>".into();
        v.devices[0].profile = "js:\"x\".js".into();
        v.devices[0].last_metrics = metrics(json!({"<b>k": "<img src=x onerror=alert(1)>", "n": "a'b&c"}));
        v.devices[0].error = Some("bad <payload>".into());
        v.sources[1].last_error = Some("<iframe>".into());
        v.sources[1].state = "<weird>".into();
        v.control["lighting"]["<z>"] = json!({"lamps": {"<l>": {"level_pct": 250, "reason": "<r>"}}, "mode": "<m>"});
        v.control["demand_response"]["events"] = json!(["<e>"]);
        v.counters.push(("<c>".into(), 1));
        v.control["lorawan"] = json!({"mac": {"devices": {"<m>": {"pending": ["<pend>"], "dr": 5}}}});
        let html = render(&v);
        for raw in [
            "<gw>",
            "<script>",
            "<b>k",
            "<img",
            "<payload>",
            "<iframe>",
            "<weird>",
            "<z>",
            "<l>",
            "<r>",
            "<m>",
            "<e>",
            "<c>",
            "<pend>",
        ] {
            assert!(!html.contains(raw), "{raw} not escaped");
        }
        assert!(html.contains("ADR and MAC commands (1)"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("js:&quot;x&quot;.js"));
        assert!(html.contains("a&#39;b&amp;c"));
        assert!(html.contains("<span class=\"pill \">&lt;weird&gt;</span>"));
        // Level clamped, never an interpolated style.
        assert!(html.contains("width:100%") && !html.contains("width:250%"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn no_external_references() {
        let html = render(&sample());
        for bad in ["http://", "https://", "src=", "<link", "<script", "@import", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
        for href in html.split("href=\"").skip(1) {
            let target = href.split('"').next().unwrap();
            assert!(target.starts_with('/') && !target.starts_with("//"), "{target}");
        }
    }

    #[test]
    fn empty_view_and_unhealthy_states() {
        let v = StatusView { gateway_id: "gw".into(), ..StatusView::default() };
        let html = render(&v);
        assert!(html.contains("No sources configured."));
        assert!(html.contains("No devices configured."));
        assert!(html.contains("No lighting zones configured."));
        assert!(html.contains("Demand response is not configured."));
        assert!(html.contains("<span class=\"bad\">unhealthy</span>"));
        assert!(html.contains("<span class=\"bad\" id=\"mqtt\">down</span>"));
        assert!(html.contains("nothing waiting"));

        let mut v = sample();
        v.readings_dropped = 5;
        v.control["lighting"]["reiherhagen"]["mode"] = json!("safe");
        v.control["lighting"]["reiherhagen"]["override_level_pct"] = json!(40);
        v.control["lighting"]["reiherhagen"]["override_until"] = json!("2026-11-26T06:22:05.000Z");
        v.control["demand_response"] = json!({"limit_kw": 200, "limit_reason": "event", "measured_kw": 212.25,
            "meter_ok": false, "loads": {"hp-12": {"state": "blocked", "since": "2026-11-26T03:10:00.000Z", "sg_ready": 1}}});
        let html = render(&v);
        assert!(html.contains("<span class=\"bad\">5 dropped</span>"));
        assert!(html.contains("safe mode"));
        assert!(html.contains("override at 40 % until 06:22:05 UTC (in 10 min)"), "{html}");
        assert!(html.contains("212.25 kW"));
        assert!(html.contains("lost (fail-safe)"));
        assert!(html.contains("<td>hp-12</td><td>blocked</td>") && html.contains("sg_ready 1"));
    }

    #[test]
    fn durations_and_numbers() {
        assert_eq!(ago(t(0), t(12)), "12 s ago");
        assert_eq!(ago(t(0), t(600)), "10 min ago");
        assert_eq!(ago(t(0), t(3 * 3600)), "3 h ago");
        assert_eq!(ago(t(0), t(3 * 86_400)), "3 d ago");
        assert_eq!(ago(t(5), t(0)), "just now");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(303.0), "5 min 3 s");
        assert_eq!(duration(2.0 * 86_400.0 + 3.0 * 3600.0 + 5.0), "2 d 3 h");
        assert_eq!(duration(f64::NAN), "0 s");
        assert_eq!(number(7.5), "7.5");
        assert_eq!(number(250.0), "250");
        assert_eq!(number(1.23456), "1.235");
        assert_eq!(cut(&"x".repeat(200)).chars().count(), MAX_TEXT + 1);
        assert_eq!(cut("a\nb"), "a b");
    }
}
