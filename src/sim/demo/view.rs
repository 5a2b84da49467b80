//! The live terminal view: a few readable lines per thing that happens, in simulated local time. The
//! functions format; the demo's two standing lines, the lamp bar and the feeder gauge, are printed by
//! the `Demo` methods at the end, which decide when one is due.

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Europe::Berlin;

use super::district::BASE_LEVEL;
use super::Demo;

/// `HH:MM` in the district's local time.
pub fn hhmm(t: DateTime<Utc>) -> String {
    t.with_timezone(&Berlin).format("%H:%M").to_string()
}

/// `Thu 26 Nov 17:00 CET`.
pub fn long_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Berlin).format("%a %d %b %H:%M %Z").to_string()
}

/// One line of the view: the simulated time, a tag, the text.
pub fn line(t: DateTime<Utc>, tag: &str, text: &str) {
    println!("{}  {:<8} {}", hhmm(t), tag, text);
}

/// Lamp levels along the path: `  10  10 100 100 100  10  10  10`.
pub fn lamp_bar(levels: &[u8]) -> String {
    levels.iter().map(|l| format!("{l:>4}")).collect::<String>()
}

/// A bar of `width` cells for `value` out of `max`, with `!` past `mark` (the limit).
pub fn gauge(value: f64, mark: f64, max: f64, width: usize) -> String {
    let cells = |v: f64| ((v / max).clamp(0.0, 1.0) * width as f64).round() as usize;
    let (v, m) = (cells(value), cells(mark));
    (0..width)
        .map(|i| match (i < v, i < m) {
            (true, true) => '#',
            (true, false) => '!',
            (false, true) => '.',
            (false, false) => ' ',
        })
        .collect::<String>()
        + "|"
}

/// Groups lamps by the gateway's reason: `presence lamp-02..05, schedule others`.
pub fn reasons(reasons: &[(String, String)]) -> String {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, (_, r)) in reasons.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| g == r) {
            Some((_, v)) => v.push(i),
            None => groups.push((r.clone(), vec![i])),
        }
    }
    if groups.len() == 1 {
        return format!("all: {}", groups[0].0);
    }
    groups.sort_by_key(|(_, v)| v.len());
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(k, (r, v))| {
            if k + 1 == groups.len() {
                format!("{r} elsewhere")
            } else {
                let names: Vec<&str> = v.iter().map(|i| reasons[*i].0.as_str()).collect();
                match names.as_slice() {
                    [one] => format!("{r} at {one}"),
                    [first, .., last] if v.last().copied().unwrap_or(0) - v[0] + 1 == v.len() => {
                        format!("{r} {first}..{}", last.trim_start_matches("lamp-"))
                    }
                    _ => format!("{r} at {}", names.join(",")),
                }
            }
        })
        .collect();
    parts.join(", ")
}

impl Demo {
    /// Prints the lamp bar when the controllers' levels changed (at most every 300 ms real).
    pub(super) fn lamps_changed(&mut self, now: DateTime<Utc>) {
        let levels = self.district.lamp_levels();
        if levels != self.last_lamps {
            self.last_lamps = levels.clone();
            self.rec.lamps.push((now, levels));
            if self.lamps_dirty.is_none() {
                self.lamps_dirty = Some(Instant::now());
            }
        }
        if self.lamps_dirty.is_some_and(|t| t.elapsed() >= StdDuration::from_millis(300)) {
            self.lamps_dirty = None;
            let levels = self.last_lamps.clone();
            if levels == self.printed_lamps {
                return;
            }
            self.printed_lamps = levels.clone();
            let why = if self.lighting_levels == levels && !self.lighting_reasons.is_empty() {
                reasons(&self.lighting_reasons)
            } else if self.override_active(now) {
                "override (city command)".to_string()
            } else if levels.iter().all(|l| *l <= BASE_LEVEL) {
                "schedule (nobody on the path)".to_string()
            } else if let Some((t, s, l)) =
                self.rec.detections.last().filter(|(t, ..)| now - *t < Duration::minutes(10))
            {
                let ago = (now - *t).num_minutes();
                format!("presence: {s} saw someone at lamp-{:02} {ago} min ago", l + 1)
            } else {
                "schedule".to_string()
            };
            let local = if self.broker_down() { "  [broker down: decided locally]" } else { "" };
            line(now, "lamps", &format!("{}   {why}{local}", lamp_bar(&levels)));
        }
    }

    fn override_active(&self, now: DateTime<Utc>) -> bool {
        self.rec.override_.is_some_and(|(a, b, _)| a <= now && now < b)
    }

    pub(super) fn feeder_line(&mut self, now: DateTime<Utc>, why: &str) {
        self.last_feeder_line = now;
        let kw = self.district.feeder_kw(now);
        let (limit, reason) = &self.limit;
        let loads: Vec<String> = self.district.loads().map(|l| format!("{} {}", l.name, l.label())).collect();
        let over = if kw > *limit + 0.05 { " OVER" } else { "" };
        line(
            now,
            "feeder",
            &format!(
                "{kw:>6.1} kW / limit {limit:.0} kW ({reason}) {}{over}  [{}]{}",
                gauge(kw, *limit, 300.0, 30),
                loads.join(", "),
                if why.is_empty() { String::new() } else { format!("  <- {why}") }
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_reasons_read_well() {
        assert_eq!(lamp_bar(&[10, 100, 0]), "  10 100   0");
        assert_eq!(gauge(280.0, 250.0, 300.0, 12), "##########! |");
        assert_eq!(gauge(100.0, 250.0, 300.0, 12), "####......  |");
        let r: Vec<(String, String)> = [("lamp-01", "schedule"), ("lamp-02", "presence"), ("lamp-03", "presence")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(reasons(&r), "schedule at lamp-01, presence elsewhere");
        let r: Vec<(String, String)> = ["schedule", "presence", "presence", "schedule", "schedule"]
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("lamp-0{}", i + 1), s.to_string()))
            .collect();
        assert_eq!(reasons(&r), "presence lamp-02..03, schedule elsewhere");
    }
}
