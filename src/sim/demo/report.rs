//! The night-and-day report: one self-contained HTML file with inline SVG charts, drawn with plain
//! string building (no fonts, no external assets, nothing to install).

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Timelike, Utc};
use serde_json::Value;

use super::district::{BASE_LEVEL, BIN_FULL_PCT, FEEDER_LIMIT_KW, LAMPS, TREE_DRY_PCT};
use super::view::hhmm;
use super::Recording;

const W: f64 = 960.0;
const LEFT: f64 = 92.0;
const RIGHT: f64 = 24.0;
const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
const LAMP_WATTS: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The lamps' energy from the recorded levels: (used Wh, the same lamps at 100 % while lit Wh).
pub fn lamp_energy(rec: &Recording, end: DateTime<Utc>) -> (f64, f64) {
    let (mut used, mut full) = (0.0, 0.0);
    for (k, (t, levels)) in rec.lamps.iter().enumerate() {
        let next = rec.lamps.get(k + 1).map_or(end, |(n, _)| *n).min(end);
        let h = (next - *t).num_milliseconds().max(0) as f64 / 3_600_000.0;
        used += levels.iter().map(|l| f64::from(*l) / 100.0 * LAMP_WATTS).sum::<f64>() * h;
        full += levels.iter().filter(|l| **l > 0).count() as f64 * LAMP_WATTS * h;
    }
    (used, full)
}

/// A plot area: pixel box and the data ranges it shows.
struct Plot {
    y: f64,
    h: f64,
    t0: DateTime<Utc>,
    t1: DateTime<Utc>,
    v0: f64,
    v1: f64,
}

impl Plot {
    fn w(&self) -> f64 {
        W - LEFT - RIGHT
    }

    fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.t1 - self.t0).num_milliseconds().max(1) as f64;
        LEFT + ((t - self.t0).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * self.w()
    }

    fn yv(&self, v: f64) -> f64 {
        let span = (self.v1 - self.v0).max(1e-9);
        self.y + self.h - ((v - self.v0) / span).clamp(0.0, 1.0) * self.h
    }

    /// Frame, hourly grid and local-time labels under the plot.
    fn time_axis(&self, out: &mut String) {
        let span_min = (self.t1 - self.t0).num_minutes().max(1);
        let step = [10, 15, 30, 60, 120, 180, 240].into_iter().find(|s| span_min / s <= 10).unwrap_or(360);
        let mut t = self.t0.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(self.t0);
        while (t.minute() as i64) % step.min(60) != 0 || (step >= 60 && t.hour() as i64 % (step / 60) != 0) {
            t += Duration::minutes(1);
        }
        while t <= self.t1 {
            let x = self.x(t);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555">{}</text>"##,
                self.y,
                self.y + self.h,
                self.y + self.h + 14.0,
                hhmm(t)
            );
            t += Duration::minutes(step);
        }
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#999"/>"##,
            self.y,
            self.w(),
            self.h
        );
    }

    fn value_axis(&self, out: &mut String, ticks: &[f64], unit: &str) {
        for v in ticks {
            let y = self.yv(*v);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{v}{unit}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0
            );
        }
    }

    fn polyline(&self, out: &mut String, pts: &[(DateTime<Utc>, f64)], color: &str, width: f64, dash: &str) {
        if pts.is_empty() {
            return;
        }
        let p: Vec<String> = pts.iter().map(|(t, v)| format!("{:.1},{:.1}", self.x(*t), self.yv(*v))).collect();
        let _ = write!(
            out,
            r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}" stroke-linejoin="round"/>"##,
            p.join(" ")
        );
    }

    /// A value that holds until the next one (step line), up to `end`.
    fn steps(&self, pts: &[(DateTime<Utc>, f64)], end: DateTime<Utc>) -> Vec<(DateTime<Utc>, f64)> {
        let mut out = Vec::new();
        for (k, (t, v)) in pts.iter().enumerate() {
            let next = pts.get(k + 1).map_or(end, |(n, _)| *n);
            out.push((*t, *v));
            out.push((next, *v));
        }
        out
    }

    fn band(&self, out: &mut String, a: DateTime<Utc>, b: DateTime<Utc>, color: &str, label: &str) {
        let (xa, xb) = (self.x(a), self.x(b));
        let _ = write!(
            out,
            r##"<rect x="{xa:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#444">{}</text>"##,
            self.y,
            (xb - xa).max(1.0),
            self.h,
            xa + 3.0,
            self.y + 12.0,
            esc(label)
        );
    }
}

fn svg_open(out: &mut String, h: f64, title: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" role="img"><title>{}</title>"##,
        esc(title)
    );
}

fn legend(out: &mut String, x: f64, y: f64, items: &[(&str, String)]) {
    let mut x = x;
    for (color, label) in items {
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#333">{}</text>"##,
            y - 10.0,
            x + 16.0,
            y,
            esc(label)
        );
        x += 28.0 + label.len() as f64 * 6.6;
    }
}

fn lamp_color(level: u8) -> String {
    if level == 0 {
        return "#11131f".into();
    }
    // Dark blue (dim) to warm yellow (full).
    let f = f64::from(level) / 100.0;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(40.0, 255.0), mix(44.0, 214.0), mix(92.0, 64.0))
}

fn lamps_chart(rec: &Recording, t0: DateTime<Utc>, t1: DateTime<Utc>) -> String {
    let row = 24.0;
    let p = Plot { y: 40.0, h: row * LAMPS as f64, t0, t1, v0: 0.0, v1: 1.0 };
    let mut s = String::new();
    svg_open(&mut s, p.y + p.h + 60.0, "Lamp levels along the path");
    for (k, (t, levels)) in rec.lamps.iter().enumerate() {
        let next = rec.lamps.get(k + 1).map_or(t1, |(n, _)| *n);
        let (xa, xb) = (p.x(*t), p.x(next));
        for (i, l) in levels.iter().enumerate() {
            let _ = write!(
                s,
                r##"<rect x="{xa:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"/>"##,
                p.y + i as f64 * row,
                (xb - xa).max(0.3),
                row - 2.0,
                lamp_color(*l)
            );
        }
    }
    for (i, name) in rec.lamp_names.iter().enumerate() {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
            LEFT - 6.0,
            p.y + i as f64 * row + row / 2.0 + 3.0,
            esc(name)
        );
    }
    for (t, _, lamp) in &rec.detections {
        let (x, y) = (p.x(*t), p.y + *lamp as f64 * row + row / 2.0 - 1.0);
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3.2" fill="#00c2ff" stroke="#003a66" stroke-width="0.8"/>"##
        );
    }
    if let Some((a, b, level)) = rec.override_ {
        let (xa, xb) = (p.x(a), p.x(b));
        let _ = write!(
            s,
            r##"<rect x="{xa:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#e040fb" stroke-width="2" stroke-dasharray="5 3"/><text x="{xa:.1}" y="{:.1}" font-size="11" fill="#a000c0">override {level} %</text>"##,
            p.y - 2.0,
            (xb - xa).max(1.0),
            p.h + 2.0,
            p.y - 6.0
        );
    }
    p.time_axis(&mut s);
    legend(
        &mut s,
        LEFT,
        p.y + p.h + 40.0,
        &[
            (&lamp_color(BASE_LEVEL), format!("{BASE_LEVEL} % (dimmed)")),
            (&lamp_color(60), "60 %".into()),
            (&lamp_color(100), "100 % (presence)".into()),
            ("#11131f", "off".into()),
            ("#00c2ff", "presence detection".into()),
        ],
    );
    s.push_str("</svg>");
    s
}

fn energy_chart(rec: &Recording, t0: DateTime<Utc>, t1: DateTime<Utc>) -> String {
    let (mut used, mut full) = (vec![(t0, 0.0)], vec![(t0, 0.0)]);
    let (mut u, mut f) = (0.0, 0.0);
    for (k, (t, levels)) in rec.lamps.iter().enumerate() {
        let next = rec.lamps.get(k + 1).map_or(t1, |(n, _)| *n);
        let h = (next - *t).num_milliseconds().max(0) as f64 / 3_600_000.0;
        u += levels.iter().map(|l| f64::from(*l) / 100.0 * LAMP_WATTS).sum::<f64>() * h / 1000.0;
        f += levels.iter().filter(|l| **l > 0).count() as f64 * LAMP_WATTS * h / 1000.0;
        used.push((next, u));
        full.push((next, f));
    }
    let top = nice_max(f.max(0.1));
    let p = Plot { y: 30.0, h: 220.0, t0, t1, v0: 0.0, v1: top };
    let mut s = String::new();
    svg_open(&mut s, 320.0, "Energy of the street lights");
    p.value_axis(&mut s, &ticks(0.0, top, 5), " kWh");
    p.time_axis(&mut s);
    p.polyline(&mut s, &full, "#999", 2.0, "6 4");
    p.polyline(&mut s, &used, "#e6a800", 3.0, "");
    let saved = (f - u).max(0.0);
    legend(
        &mut s,
        LEFT,
        295.0,
        &[
            ("#e6a800", format!("used {u:.2} kWh")),
            ("#999", format!("always-on 100 %: {f:.2} kWh")),
            (
                "#2ca02c",
                format!(
                    "saved {saved:.2} kWh ({:.0} %), {:.2} kg CO2",
                    if f > 0.0 { saved / f * 100.0 } else { 0.0 },
                    saved * 0.380
                ),
            ),
        ],
    );
    s.push_str("</svg>");
    s
}

fn label_color(label: &str) -> &'static str {
    match label {
        "blocked" => "#d62728",
        "reduced" => "#ff7f0e",
        "encouraged" | "forced" => "#2ca02c",
        _ => "#9ecae1",
    }
}

fn feeder_chart(rec: &Recording, t0: DateTime<Utc>, t1: DateTime<Utc>) -> String {
    let max = rec.feeder.iter().map(|(_, k)| *k).fold(FEEDER_LIMIT_KW, f64::max);
    let min = rec.feeder.iter().map(|(_, k)| *k).fold(FEEDER_LIMIT_KW, f64::min);
    let v1 = ((max + 10.0) / 20.0).ceil() * 20.0;
    let v0 = ((min - 10.0) / 20.0).floor().max(0.0) * 20.0;
    let p = Plot { y: 30.0, h: 260.0, t0, t1, v0, v1 };
    let rows = rec.load_names.len() as f64;
    let band_y = p.y + p.h + 30.0;
    let mut s = String::new();
    svg_open(&mut s, band_y + rows * 20.0 + 50.0, "Feeder load versus limit");
    if let Some((a, b, limit)) = rec.dr_event {
        p.band(&mut s, a, b, "#fde0dd", &format!("DR event: {limit:.0} kW"));
    }
    for (a, b) in &rec.outages {
        p.band(&mut s, *a, b.unwrap_or(t1), "#eeeeee", "broker down");
    }
    p.value_axis(&mut s, &ticks(v0, v1, 6), " kW");
    p.time_axis(&mut s);
    let mut limits: Vec<(DateTime<Utc>, f64)> = vec![(t0, FEEDER_LIMIT_KW)];
    limits.extend(rec.limits.iter().map(|(t, l, _)| (*t, *l)));
    p.polyline(&mut s, &p.steps(&limits, t1), "#d62728", 2.0, "7 4");
    p.polyline(&mut s, &rec.feeder, "#1f77b4", 1.6, "");
    // The loads' states, one row each.
    for (i, name) in rec.load_names.iter().enumerate() {
        let y = band_y + i as f64 * 20.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
            LEFT - 6.0,
            y + 12.0,
            esc(name)
        );
        let mine: Vec<&(DateTime<Utc>, usize, String, f64)> = rec.loads.iter().filter(|l| l.1 == i).collect();
        let mut segs = vec![(t0, "normal".to_string())];
        segs.extend(mine.iter().map(|(t, _, l, _)| (*t, l.clone())));
        for (k, (t, label)) in segs.iter().enumerate() {
            let next = segs.get(k + 1).map_or(t1, |(n, _)| *n);
            let (xa, xb) = (p.x(*t), p.x(next));
            let _ = write!(
                s,
                r##"<rect x="{xa:.2}" y="{y:.1}" width="{:.2}" height="16" fill="{}"/>"##,
                (xb - xa).max(0.0),
                label_color(label)
            );
        }
    }
    legend(
        &mut s,
        LEFT,
        band_y + rows * 20.0 + 30.0,
        &[
            ("#1f77b4", "feeder power (smart meter)".into()),
            ("#d62728", "limit in force".into()),
            ("#9ecae1", "load normal".into()),
            ("#ff7f0e", "reduced".into()),
            ("#d62728", "blocked".into()),
        ],
    );
    s.push_str("</svg>");
    s
}

/// Percentages over time, one line per device, with a threshold and the devices' events marked.
fn series_chart(
    title: &str,
    series: &std::collections::BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    threshold: (f64, &str),
    events: &[(DateTime<Utc>, String, String)],
    event_name: &str,
    t0: DateTime<Utc>,
    t1: DateTime<Utc>,
) -> String {
    let p = Plot { y: 30.0, h: 220.0, t0, t1, v0: 0.0, v1: 100.0 };
    let mut s = String::new();
    svg_open(&mut s, 320.0, title);
    p.value_axis(&mut s, &ticks(0.0, 100.0, 5), " %");
    p.time_axis(&mut s);
    p.polyline(&mut s, &[(t0, threshold.0), (t1, threshold.0)], "#d62728", 1.5, "6 4");
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#d62728">{}</text>"##,
        W - RIGHT - 4.0,
        p.yv(threshold.0) - 4.0,
        esc(threshold.1)
    );
    let mut items = Vec::new();
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        p.polyline(&mut s, pts, color, 2.0, "");
        for (t, device, ev) in events {
            if device == name && ev == event_name {
                let v = pts.iter().rev().find(|(pt, _)| pt <= t).map_or(threshold.0, |(_, v)| *v);
                let (x, y) = (p.x(*t), p.yv(v));
                let _ = write!(
                    s,
                    r##"<path d="M{x:.1},{:.1} l6,-10 h-12 z" fill="{color}" stroke="#000" stroke-width="0.8"/>"##,
                    y - 3.0
                );
            }
        }
        items.push((color, name.clone()));
    }
    let mut labels: Vec<(&str, String)> = items.iter().map(|(c, n)| (*c, n.clone())).collect();
    labels.push(("#000", format!("triangle = {event_name}")));
    legend(&mut s, LEFT, 295.0, &labels);
    s.push_str("</svg>");
    s
}

fn backlog_chart(rec: &Recording, t0: DateTime<Utc>, t1: DateTime<Utc>) -> String {
    let max = rec.backlog.iter().map(|(_, d)| *d).max().unwrap_or(0) as f64;
    let top = nice_max(max.max(10.0));
    let p = Plot { y: 30.0, h: 200.0, t0, t1, v0: 0.0, v1: top };
    let mut s = String::new();
    svg_open(&mut s, 290.0, "Backlog during the broker outage");
    for (a, b) in &rec.outages {
        p.band(&mut s, *a, b.unwrap_or(t1), "#fde0dd", "broker down");
    }
    p.value_axis(&mut s, &ticks(0.0, top, 5), "");
    p.time_axis(&mut s);
    let pts: Vec<(DateTime<Utc>, f64)> = rec.backlog.iter().map(|(t, d)| (*t, *d as f64)).collect();
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        let mut area: Vec<String> = vec![format!("{:.1},{:.1}", p.x(first.0), p.yv(0.0))];
        area.extend(pts.iter().map(|(t, v)| format!("{:.1},{:.1}", p.x(*t), p.yv(*v))));
        area.push(format!("{:.1},{:.1}", p.x(last.0), p.yv(0.0)));
        let _ =
            write!(s, r##"<polygon points="{}" fill="#9467bd" fill-opacity="0.35" stroke="none"/>"##, area.join(" "));
        p.polyline(&mut s, &pts, "#6a3d9a", 1.5, "");
    }
    legend(&mut s, LEFT, 270.0, &[("#9467bd", "records in the gateway's on-disk outbox".into())]);
    s.push_str("</svg>");
    s
}

fn nice_max(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|c| *c >= v).unwrap_or(10.0 * mag)
}

fn ticks(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n).map(|i| ((a + (b - a) * i as f64 / n as f64) * 100.0).round() / 100.0).collect()
}

fn row(out: &mut String, what: &str, value: String) {
    let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(what), esc(&value));
}

fn yes(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

/// The whole report.
pub fn render(rec: &Recording, s: &Value) -> String {
    let t0 = rec.start.unwrap_or_else(Utc::now);
    let t1 = rec.end.unwrap_or(t0 + Duration::hours(1)).max(t0 + Duration::minutes(10));
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>District gateway demo: the night of {date}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:24px auto;color:#222}}h2{{margin-top:36px;border-bottom:1px solid #ddd}}
p.note{{color:#555;margin:4px 0 10px}}table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 12px;border-bottom:1px solid #eee}}th{{color:#444;font-weight:600}}</style></head><body>
<h1>A night in the district: {from} to {to}</h1>
<p class="note">Simulated at {speed:.0}x real time by <code>district-gateway demo</code>: every sensor, lamp and load controller sent real encrypted LoRaWAN frames,
the feeder meter real SML telegrams, and the real gateway daemon decided everything shown here.</p>"#,
        date = t0.with_timezone(&chrono_tz::Europe::Berlin).format("%d %B %Y"),
        from = super::view::long_time(t0),
        to = super::view::long_time(t1),
        speed = rec.speed,
    );
    h.push_str("<h2>Street lights along the path</h2><p class=\"note\">Each row is a lamp, in order along the path; colour is the level the lamp controller drove. Blue dots are people detected by the presence sensors: the lamps around them brighten, then dim again.</p>");
    h.push_str(&lamps_chart(rec, t0, t1));
    h.push_str("<h2>Energy used versus always-on</h2><p class=\"note\">Cumulative energy of the street lights, compared with the same lamps at full power whenever lit. CO2 at 380 g/kWh.</p>");
    h.push_str(&energy_chart(rec, t0, t1));
    h.push_str("<h2>Feeder load versus its limit</h2><p class=\"note\">The smart meter's power on the feeder, the limit the gateway holds (dashed), and below what the flexible loads were told. The gateway sheds loads when the feeder goes over the limit, and restores them when there is room.</p>");
    h.push_str(&feeder_chart(rec, t0, t1));
    h.push_str("<h2>Container fill levels</h2><p class=\"note\">From the ultrasonic sensors; the gateway raises <code>container_full</code> once per filling when a container passes the threshold.</p>");
    h.push_str(&series_chart(
        "Container fill levels",
        &rec.fills,
        (BIN_FULL_PCT, "full threshold"),
        &rec.events,
        "container_full",
        t0,
        t1,
    ));
    h.push_str("<h2>Tree soil moisture</h2><p class=\"note\">The gateway raises <code>needs_water</code> when a tree's soil gets too dry.</p>");
    h.push_str(&series_chart(
        "Tree soil moisture",
        &rec.moisture,
        (TREE_DRY_PCT, "needs water below"),
        &rec.events,
        "needs_water",
        t0,
        t1,
    ));
    h.push_str("<h2>Backlog during the broker outage</h2><p class=\"note\">While the city's broker was unreachable the gateway kept every reading in its on-disk journal; when the broker came back the backlog drained.</p>");
    h.push_str(&backlog_chart(rec, t0, t1));
    h.push_str("<h2>Summary</h2><table>");
    row(&mut h, "simulated time", format!("{} h", s["sim_hours"]));
    let readings: Vec<String> =
        s["readings"].as_object().map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect()).unwrap_or_default();
    row(&mut h, "readings received", readings.join(", "));
    row(
        &mut h,
        "uplinks",
        format!(
            "{} sent, {} acknowledged by the gateway, {} lost",
            s["uplinks"]["sent"], s["uplinks"]["acked"], s["delivery"]["acked_uplinks_lost"]
        ),
    );
    if s["outage"].is_object() {
        let o = &s["outage"];
        row(
            &mut h,
            "broker outage",
            format!(
                "{} s real; backlog peaked at {} records; {} readings delivered late",
                o["seconds_real"], o["backlog_max"], o["replayed_readings"]
            ),
        );
    }
    row(
        &mut h,
        "presence",
        format!(
            "{} detections; the lamps reacted to {} of {} judged",
            s["lamps"]["detections"], s["lamps"]["reacted"], s["lamps"]["detections_judged"]
        ),
    );
    row(
        &mut h,
        "street-light energy",
        format!(
            "{} kWh used vs {} kWh always-on: {} % saved, {} kg CO2",
            s["energy"]["lamps_used_kwh"],
            s["energy"]["always_on_kwh"],
            s["energy"]["saved_pct"],
            s["energy"]["co2_saved_kg"]
        ),
    );
    let gw_energy: f64 = rec.energy_reports.iter().map(|r| r.1).sum();
    let gw_full: f64 = rec.energy_reports.iter().map(|r| r.2).sum();
    if !rec.energy_reports.is_empty() {
        row(
            &mut h,
            "the gateway's own hourly energy reports",
            format!(
                "{} windows: {:.2} kWh used vs {:.2} kWh at full power",
                rec.energy_reports.len(),
                gw_energy / 1000.0,
                gw_full / 1000.0
            ),
        );
    }
    row(&mut h, "feeder peak", format!("{} kW (configured limit {FEEDER_LIMIT_KW} kW)", s["feeder"]["peak_kw"]));
    if s["dr_event"].is_object() {
        let d = &s["dr_event"];
        row(
            &mut h,
            "demand-response event",
            format!(
                "limit {} kW; highest feeder power once settled {} kW; held: {}",
                d["limit_kw"],
                d["max_kw_after_settling"],
                yes(&d["held"])
            ),
        );
    }
    row(&mut h, "lighting override accepted", yes(&s["lamps"]["override_accepted"]).to_string());
    row(&mut h, "container_full events", s["containers"]["full_events"].to_string());
    let evs: Vec<String> = rec.events.iter().map(|(t, d, e)| format!("{} {e} ({d})", hhmm(*t))).collect();
    row(&mut h, "all events", if evs.is_empty() { "none".into() } else { evs.join("; ") });
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_recording_still_renders_every_chart() {
        let rec =
            Recording { start: Some(Utc::now()), end: Some(Utc::now() + Duration::hours(2)), ..Default::default() };
        let html = render(&rec, &serde_json::json!({}));
        assert_eq!(html.matches("<svg").count(), 6);
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn energy_counts_dimming_against_full_power() {
        let t = Utc::now();
        let rec =
            Recording { lamps: vec![(t, vec![10, 100]), (t + Duration::hours(1), vec![0, 0])], ..Default::default() };
        let (used, full) = lamp_energy(&rec, t + Duration::hours(2));
        assert!((used - 66.0).abs() < 1e-6 && (full - 120.0).abs() < 1e-6, "{used} {full}");
    }
}
