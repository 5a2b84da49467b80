//! The live terminal view: a few readable lines per thing that happens, in simulated local time.

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Berlin;

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
