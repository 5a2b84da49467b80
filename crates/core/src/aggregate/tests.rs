//! Aggregator tests: simulated days against a naive recomputation, clock alignment, late readings, restarts.

use super::*;
use serde_json::json;
use std::collections::BTreeMap;

/// SplitMix64: a small deterministic PRNG, so every run sees the same "random" days.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn m(v: Value) -> Metrics {
    match v {
        Value::Object(o) => o,
        _ => Metrics::new(),
    }
}

/// 2026-11-26T03:10:17.500Z
const T: i64 = 1_795_662_617_500;
const DAY: i64 = 86_400_000;

#[derive(Clone)]
struct Input {
    device: String,
    at_ms: i64,
    metrics: Metrics,
}

/// Three days of readings from four devices at irregular intervals (gaps of up to 15 minutes, so some
/// windows are empty), merged in time order. Returns the readings and how many absurd values they carry.
fn simulated_days(seed: u64, days: i64) -> (Vec<Input>, u64) {
    let mut rng = Rng(seed);
    let start = T - T.rem_euclid(DAY) + 1234; // just after midnight UTC
    let mut all = Vec::new();
    let mut absurd = 0;
    for (i, device) in ["bin-017", "bin-018", "pir-01", "tree-07"].iter().enumerate() {
        let mut t = start + rng.range(0, 60_000);
        let mut level = 1800.0;
        while t < start + days * DAY {
            let mut o = Metrics::new();
            match i {
                0 | 1 => {
                    level = (level - rng.unit() * 3.0).max(300.0);
                    if rng.chance(0.001) {
                        level = 1800.0;
                    }
                    let noise = rng.range(-15, 15) as f64;
                    o.insert("distance_mm".into(), json!((level + noise).round() as i64));
                    if rng.chance(0.3) {
                        o.insert("battery_pct".into(), json!(rng.range(80, 100)));
                    }
                    if rng.chance(0.05) {
                        o.insert("status".into(), json!("tilt"));
                    }
                }
                2 => {
                    o.insert("motion".into(), json!(rng.chance(0.4)));
                    if rng.chance(0.5) {
                        o.insert("people_count".into(), json!(rng.range(0, 6)));
                    }
                }
                _ => {
                    o.insert("soil_moisture_pct".into(), json!((rng.unit() * 400.0).round() / 10.0));
                    o.insert("temperature_c".into(), json!(-5.0 + rng.unit() * 30.0));
                    o.insert("probe".into(), json!({"raw": 12}));
                    o.insert("nothing".into(), Value::Null);
                }
            }
            if rng.chance(0.01) {
                o.insert("glitch".into(), json!(1e200 * if rng.chance(0.5) { 1.0 } else { -1.0 }));
            }
            if rng.chance(0.02) {
                // A reading with nothing to aggregate: opens no window.
                o = m(json!({"status": "heartbeat"}));
            }
            absurd += u64::from(o.contains_key("glitch"));
            all.push(Input { device: device.to_string(), at_ms: t, metrics: o });
            t += rng.range(20_000, 900_000);
        }
    }
    all.sort_by_key(|r| (r.at_ms, r.device.clone()));
    (all, absurd)
}

/// The naive recomputation: every accepted reading grouped by (device, window), statistics from scratch.
#[derive(Debug, Default)]
struct Naive {
    count: u64,
    /// metric → (at, value) in arrival order
    values: BTreeMap<String, Vec<(i64, f64)>>,
}

fn naive(inputs: &[Input], window_ms: i64) -> BTreeMap<(String, i64), Naive> {
    let mut out: BTreeMap<(String, i64), Naive> = BTreeMap::new();
    for r in inputs {
        let mut vals = Vec::new();
        for (k, v) in &r.metrics {
            let x = match v {
                Value::Bool(true) => 1.0,
                Value::Bool(false) => 0.0,
                Value::Number(n) => n.as_f64().unwrap(),
                _ => continue,
            };
            if x.abs() <= 1e100 {
                vals.push((k.clone(), x));
            }
        }
        if vals.is_empty() {
            continue;
        }
        let start = r.at_ms.div_euclid(window_ms) * window_ms;
        let e = out.entry((r.device.clone(), start)).or_default();
        e.count += 1;
        for (k, x) in vals {
            e.values.entry(k).or_default().push((r.at_ms, x));
        }
    }
    out
}

fn assert_matches_naive(windows: &[AggregateWindow], expected: &BTreeMap<(String, i64), Naive>, window_ms: i64) {
    let mut got: BTreeMap<(String, i64), &AggregateWindow> = BTreeMap::new();
    for w in windows {
        assert_eq!(w.window_end_ms - w.window_start_ms, window_ms);
        assert_eq!(w.window_start_ms % window_ms, 0, "window not aligned to the clock");
        assert!(got.insert((w.device.clone(), w.window_start_ms), w).is_none(), "window published twice");
    }
    assert_eq!(got.len(), expected.len());
    for (key, n) in expected {
        let w = got.get(key).unwrap_or_else(|| panic!("missing window {key:?}"));
        assert_eq!(w.count, n.count, "{key:?}");
        assert_eq!(w.metrics.len(), n.values.len(), "{key:?}");
        for (name, vals) in &n.values {
            let s = w.metrics[name];
            let min = vals.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
            let max = vals.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
            let mean = vals.iter().map(|v| v.1).sum::<f64>() / vals.len() as f64;
            // Latest time wins; among equal times the one that arrived last.
            let last = vals.iter().rev().max_by_key(|v| v.0).unwrap().1;
            assert_eq!(s.count, vals.len() as u64, "{key:?} {name}");
            assert_eq!(s.min, min, "{key:?} {name}");
            assert_eq!(s.max, max, "{key:?} {name}");
            assert!((s.mean - mean).abs() <= 1e-9 * mean.abs().max(1.0), "{key:?} {name}: {} vs {mean}", s.mean);
            assert_eq!(s.last, last, "{key:?} {name}");
        }
    }
}

/// Feeds readings in time order with a timer tick every `tick_ms`; returns every window in emission order.
fn run(agg: &mut Aggregator, inputs: &[Input], tick_ms: i64, from: i64, to: i64) -> Vec<AggregateWindow> {
    let mut out = Vec::new();
    let mut next_tick = from;
    for r in inputs {
        while next_tick <= r.at_ms {
            out.extend(agg.tick(next_tick));
            next_tick += tick_ms;
        }
        out.extend(agg.observe(r.at_ms, &r.device, r.at_ms, &r.metrics));
    }
    while next_tick <= to {
        out.extend(agg.tick(next_tick));
        next_tick += tick_ms;
    }
    out
}

#[test]
fn simulated_days_match_a_naive_recomputation() {
    for (seed, window_s) in [(1, 300), (2, 60), (3, 900), (4, 3600), (5, 7)] {
        let (inputs, absurd) = simulated_days(seed, 3);
        let window_ms = i64::from(window_s) * 1000;
        let mut agg = Aggregator::new(window_s).unwrap();
        let from = inputs[0].at_ms;
        let to = inputs.last().unwrap().at_ms + 2 * window_ms;
        let windows = run(&mut agg, &inputs, 7_000, from, to);
        assert_matches_naive(&windows, &naive(&inputs, window_ms), window_ms);
        assert_eq!(agg.open_windows(), 0);
        let c = agg.counters();
        assert_eq!((c.late_readings, c.future_readings, c.ignored_values), (0, 0, absurd), "window {window_s}");
        // Per device, windows come out in order.
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for w in &windows {
            if let Some(prev) = last.insert(w.device.as_str(), w.window_start_ms) {
                assert!(prev < w.window_start_ms);
            }
        }
    }
}

#[test]
fn closing_by_a_later_reading_and_by_tick_give_the_same_windows() {
    // Without any tick, windows close only when the device's next window starts (and at the final tick).
    let (inputs, _) = simulated_days(11, 2);
    let window_ms = 300_000;
    let mut agg = Aggregator::new(300).unwrap();
    let mut windows = Vec::new();
    for r in &inputs {
        windows.extend(agg.observe(r.at_ms, &r.device, r.at_ms, &r.metrics));
    }
    windows.extend(agg.tick(inputs.last().unwrap().at_ms + window_ms));
    assert_matches_naive(&windows, &naive(&inputs, window_ms), window_ms);
}

#[test]
fn windows_align_to_the_utc_clock() {
    let reading = m(json!({"distance_mm": 2116}));
    let cases = [
        (300, "2026-11-26T03:10:00.000Z", "2026-11-26T03:15:00.000Z"),
        (60, "2026-11-26T03:10:00.000Z", "2026-11-26T03:11:00.000Z"),
        (3600, "2026-11-26T03:00:00.000Z", "2026-11-26T04:00:00.000Z"),
        (86_400, "2026-11-26T00:00:00.000Z", "2026-11-27T00:00:00.000Z"),
        // Epoch-aligned: 1795662617 is a multiple of 7.
        (7, "2026-11-26T03:10:17.000Z", "2026-11-26T03:10:24.000Z"),
    ];
    for (window_s, start, end) in cases {
        let mut agg = Aggregator::new(window_s).unwrap();
        assert!(agg.observe(T, "bin-017", T, &reading).is_empty());
        let ws = agg.tick(T + i64::from(window_s) * 1000);
        assert_eq!(ws.len(), 1);
        let v = ws[0].to_json(1, "garstedt-01");
        assert_eq!(v["window_start"], start, "window {window_s}");
        assert_eq!(v["window_end"], end, "window {window_s}");
        assert_eq!(ws[0].window_start_ms % (i64::from(window_s) * 1000), 0);
    }
    // A reading exactly on a boundary opens the window that starts there.
    let mut agg = Aggregator::new(300).unwrap();
    let boundary = T - T.rem_euclid(300_000);
    agg.observe(boundary, "d", boundary, &reading);
    let ws = agg.tick(boundary + 300_000);
    assert_eq!(ws[0].window_start_ms, boundary);
    // The window stays open until its end has passed, not before.
    let mut agg = Aggregator::new(300).unwrap();
    agg.observe(boundary, "d", boundary, &reading);
    assert!(agg.tick(boundary + 299_999).is_empty());
    assert_eq!(agg.tick(boundary + 300_000).len(), 1);
}

#[test]
fn payload_has_the_product_shape() {
    let mut agg = Aggregator::new(300).unwrap();
    let base = T - T.rem_euclid(300_000);
    agg.observe(base + 1000, "bin-017", base + 1000, &m(json!({"distance_mm": 2116, "battery_pct": 92})));
    agg.observe(base + 2000, "bin-017", base + 2000, &m(json!({"distance_mm": 2100, "temperature_c": 3.5})));
    agg.observe(base + 3000, "bin-017", base + 3000, &m(json!({"distance_mm": 2105, "motion": true})));
    let ws = agg.tick(base + 300_000);
    assert_eq!(ws[0].topic().suffix(), "agg/bin-017");
    let v = ws[0].to_json(18_232, "garstedt-01");
    assert_eq!(
        v,
        json!({
            "seq": 18_232, "gateway": "garstedt-01", "device": "bin-017",
            "window_start": "2026-11-26T03:10:00.000Z", "window_end": "2026-11-26T03:15:00.000Z",
            "count": 3,
            "metrics": {
                "battery_pct": {"min": 92, "max": 92, "mean": 92.0, "last": 92, "count": 1},
                "distance_mm": {"min": 2100, "max": 2116, "mean": 2107.0, "last": 2105, "count": 3},
                "motion": {"min": 1, "max": 1, "mean": 1.0, "last": 1, "count": 1},
                "temperature_c": {"min": 3.5, "max": 3.5, "mean": 3.5, "last": 3.5, "count": 1}
            }
        })
    );
    // Integers stay integers in the text.
    let text = serde_json::to_string(&v).unwrap();
    assert!(text.contains(r#""min":2100"#), "{text}");
}

#[test]
fn late_readings_are_ignored_counted_and_never_reopen_a_window() {
    let w = 300_000;
    let base = T - T.rem_euclid(w);
    let r = |v: i64| m(json!({ "distance_mm": v }));
    let mut agg = Aggregator::new(300).unwrap();
    agg.observe(base + 10, "a", base + 10, &r(1));
    // A reading in the next window closes the first.
    let closed = agg.observe(base + w + 10, "a", base + w + 10, &r(2));
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].window_start_ms, closed[0].count), (base, 1));
    // A straggler for the first window: late, ignored.
    assert!(agg.observe(base + w + 20, "a", base + 20, &r(100)).is_empty());
    assert_eq!(agg.counters().late_readings, 1);
    // Device b may still add to its own window of that time: nothing closed it yet.
    assert!(agg.observe(base + w + 30, "b", base + 30, &r(5)).is_empty());
    assert_eq!(agg.counters().late_readings, 1);
    // The timer closes both current windows.
    let closed = agg.tick(base + 2 * w);
    assert_eq!(
        closed.iter().map(|c| (c.device.as_str(), c.window_start_ms)).collect::<Vec<_>>(),
        [("b", base), ("a", base + w)]
    );
    assert_eq!(closed[1].metrics["distance_mm"].max, 2.0, "the straggler was not added");
    // Stragglers for closed windows, of any device, known or new: late.
    assert!(agg.observe(base + 2 * w + 5, "a", base + w + 99, &r(7)).is_empty());
    assert!(agg.observe(base + 2 * w + 5, "c", base + w + 99, &r(7)).is_empty());
    assert!(agg.observe(base + 2 * w + 5, "c", -5, &r(7)).is_empty());
    assert_eq!(agg.counters().late_readings, 4);
    assert_eq!(agg.open_windows(), 0);
    assert!(agg.tick(base + 10 * w).is_empty(), "no window was reopened");
    // A reading dated far in the future is ignored too (and would otherwise block the device's windows).
    let now = base + 10 * w + 1;
    assert!(agg.observe(now, "a", now + 3_600_000, &r(1)).is_empty());
    assert!(agg.observe(now, "a", i64::MAX, &r(1)).is_empty());
    assert_eq!(agg.counters().future_readings, 2);
    // ... but a few seconds of clock skew are fine.
    assert!(agg.observe(now, "a", now + 5_000, &r(1)).is_empty());
    assert_eq!(agg.open_windows(), 1);
}

#[test]
fn late_within_the_open_window_updates_stats_but_not_last() {
    let w = 300_000;
    let base = T - T.rem_euclid(w);
    let mut agg = Aggregator::new(300).unwrap();
    agg.observe(base + 50_000, "d", base + 50_000, &m(json!({"x": 5, "y": 1})));
    agg.observe(base + 60_000, "d", base + 60_000, &m(json!({"y": 2})));
    // Arrives last, dated earlier: counts for min/max/mean, not for `last`.
    agg.observe(base + 70_000, "d", base + 40_000, &m(json!({"x": 9, "y": 3})));
    // x's latest reading is this one (55 s), even though y has seen a later one.
    agg.observe(base + 80_000, "d", base + 55_000, &m(json!({"x": 7})));
    let ws = agg.tick(base + w);
    let x = ws[0].metrics["x"];
    let y = ws[0].metrics["y"];
    assert_eq!((x.min, x.max, x.last, x.count), (5.0, 9.0, 7.0, 3));
    assert_eq!((y.min, y.max, y.last, y.count), (1.0, 3.0, 2.0, 3));
    assert_eq!(ws[0].count, 4);
}

#[test]
fn what_is_aggregated() {
    let w = 300_000;
    let base = T - T.rem_euclid(w);
    let mut agg = Aggregator::new(300).unwrap();
    // Only strings, nulls, objects: no window.
    agg.observe(base, "d", base, &m(json!({"status": "ok", "n": null, "o": {"a": 1}, "a": [1, 2]})));
    assert_eq!(agg.open_windows(), 0);
    agg.observe(base + 1, "d", base + 1, &m(json!({"motion": true, "nan": f64::NAN, "big": 1e101})));
    agg.observe(base + 2, "d", base + 2, &m(json!({"motion": false, "inf": f64::INFINITY, "big": -1e300})));
    agg.observe(base + 3, "d", base + 3, &m(json!({"motion": false, "edge": 1e100, "u": u64::MAX})));
    let ws = agg.tick(base + w);
    assert_eq!(ws.len(), 1);
    let s = &ws[0].metrics;
    assert_eq!(s.keys().collect::<Vec<_>>(), ["edge", "motion", "u"]);
    assert!((s["motion"].mean - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((s["motion"].min, s["motion"].max, s["motion"].last), (0.0, 1.0, 0.0));
    assert_eq!(ws[0].count, 3);
    assert_eq!(agg.counters().ignored_values, 2, "NaN and inf are already null in JSON; 1e101 and -1e300 count");
    // The JSON never holds null or non-numbers.
    let v = ws[0].to_json(1, "g");
    for stats in v["metrics"].as_object().unwrap().values() {
        for x in stats.as_object().unwrap().values() {
            assert!(x.is_number(), "{v}");
        }
    }
}

#[test]
fn constant_values_have_their_exact_mean() {
    let w = 300_000;
    let base = T - T.rem_euclid(w);
    let mut agg = Aggregator::new(300).unwrap();
    for i in 0..1000 {
        agg.observe(base + i, "d", base + i, &m(json!({"x": 0.1})));
    }
    let s = agg.tick(base + w)[0].metrics["x"];
    assert_eq!((s.min, s.max, s.mean, s.count), (0.1, 0.1, 0.1, 1000));
}

#[test]
fn restore_mid_stream_is_identical_to_an_uninterrupted_run() {
    let (inputs, _) = simulated_days(21, 3);
    let window_s = 300;
    let tick_ms = 5_000;
    let from = inputs[0].at_ms;
    let to = inputs.last().unwrap().at_ms + 600_000;

    let mut reference = Aggregator::new(window_s).unwrap();
    let expected: Vec<Value> =
        run(&mut reference, &inputs, tick_ms, from, to).iter().map(|w| w.to_json(0, "g")).collect();

    let mut rng = Rng(99);
    for _ in 0..20 {
        // Restart after a random reading: persist as JSON, start a new process, restore, go on.
        let cut = rng.range(1, inputs.len() as i64 - 2) as usize;
        let mut first = Aggregator::new(window_s).unwrap();
        let mut got = run(&mut first, &inputs[..cut], tick_ms, from, inputs[cut - 1].at_ms);
        let saved = serde_json::to_string(&first.snapshot()).unwrap();
        let mut second = Aggregator::new(window_s).unwrap();
        assert!(second.restore(serde_json::from_str(&saved).unwrap()).is_empty());
        // The timer of the new process starts where the old one's next tick would have been.
        let resume = from + ((inputs[cut - 1].at_ms - from) / tick_ms + 1) * tick_ms;
        got.extend(run(&mut second, &inputs[cut..], tick_ms, resume, to));
        let got: Vec<Value> = got.iter().map(|w| w.to_json(0, "g")).collect();
        assert_eq!(got.len(), expected.len(), "restart after reading {cut}");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "restart after reading {cut}: window {i}");
        }
    }
}

#[test]
fn restore_after_downtime_publishes_the_windows_that_ended_meanwhile() {
    let (inputs, _) = simulated_days(31, 1);
    let w = 300_000;
    let cut = inputs.len() / 2;
    let mut agg = Aggregator::new(300).unwrap();
    let mut got = run(&mut agg, &inputs[..cut], 10_000, inputs[0].at_ms, inputs[cut - 1].at_ms);
    let open_before = agg.open_windows();
    assert!(open_before > 0);
    let state = agg.snapshot();
    // Down for an hour: the readings of that hour never arrive.
    let back = inputs[cut - 1].at_ms + 3_600_000;
    let after: Vec<Input> = inputs[cut..].iter().filter(|r| r.at_ms >= back).cloned().collect();
    let mut agg = Aggregator::new(300).unwrap();
    agg.restore(state);
    let flushed = agg.tick(back);
    assert_eq!(flushed.len(), open_before, "every window open at the crash is published after it");
    got.extend(flushed);
    got.extend(run(&mut agg, &after, 10_000, back, after.last().unwrap().at_ms + w));
    let seen: Vec<Input> = inputs[..cut].iter().chain(after.iter()).cloned().collect();
    assert_matches_naive(&got, &naive(&seen, w), w);
}

#[test]
fn restore_with_another_window_length_flushes_the_old_windows() {
    let base = T - T.rem_euclid(300_000);
    let mut agg = Aggregator::new(300).unwrap();
    agg.observe(base + 10, "a", base + 10, &m(json!({"x": 1})));
    agg.observe(base + 20, "b", base + 20, &m(json!({"x": 2})));
    let state = agg.snapshot();
    let mut agg = Aggregator::new(60).unwrap();
    let flushed = agg.restore(state);
    assert_eq!(flushed.len(), 2);
    assert!(flushed.iter().all(|w| w.window_end_ms - w.window_start_ms == 300_000));
    // Nothing of the new length overlaps the old windows.
    assert!(agg.observe(base + 30, "a", base + 30, &m(json!({"x": 3}))).is_empty());
    assert_eq!(agg.counters().late_readings, 1);
    agg.observe(base + 300_000, "a", base + 300_000, &m(json!({"x": 3})));
    assert_eq!(agg.open_windows(), 1);
}

#[test]
fn corrupt_state_is_dropped_not_trusted() {
    let mut agg = Aggregator::new(300).unwrap();
    let base = T - T.rem_euclid(300_000);
    let state: AggregatorState = serde_json::from_value(json!({
        "window_ms": 300_000,
        "closed_until_ms": base,
        "devices": {
            "good": {"open": {"start_ms": base, "count": 2, "metrics": {"x": [1.0, 3.0, 4.0, 3.0, base, 2]}}},
            "misaligned": {"open": {"start_ms": base + 1, "count": 1, "metrics": {"x": [1.0, 1.0, 1.0, 1.0, base, 1]}}},
            "inverted": {"open": {"start_ms": base, "count": 1, "metrics": {"x": [5.0, 1.0, 1.0, 1.0, base, 1]}}},
            "zero": {"open": {"start_ms": base, "count": 0, "metrics": {"x": [1.0, 1.0, 1.0, 1.0, base, 1]}}},
            "empty": {"open": {"start_ms": base, "count": 1, "metrics": {}}},
            "negative": {"open": {"start_ms": -300_000, "count": 1, "metrics": {"x": [1.0, 1.0, 1.0, 1.0, 0, 1]}}}
        }
    }))
    .unwrap();
    assert!(agg.restore(state).is_empty());
    let ws = agg.tick(base + 300_000);
    assert_eq!(ws.len(), 1);
    assert_eq!(ws[0].device, "good");
    assert_eq!(ws[0].metrics["x"].mean, 2.0);
    // Garbage does not deserialise at all; the shell then starts empty.
    assert!(serde_json::from_str::<AggregatorState>(r#"{"window_ms": "x"}"#).is_err());
}

#[test]
fn clock_stepping_back_closes_windows_and_starts_again() {
    let w = 300_000;
    let base = T - T.rem_euclid(w);
    let mut agg = Aggregator::new(300).unwrap();
    agg.observe(base + 10, "a", base + 10, &m(json!({"x": 1})));
    assert!(agg.tick(base + 100).is_empty());
    // NTP corrects a clock that was a day ahead.
    let now = base - DAY + 50;
    let closed = agg.tick(now);
    assert_eq!(closed.len(), 1);
    assert_eq!(agg.counters().clock_steps_back, 1);
    assert!(agg.observe(now, "a", now, &m(json!({"x": 2}))).is_empty());
    assert_eq!(agg.counters().late_readings, 0);
    let ws = agg.tick(now + w);
    assert_eq!(ws.len(), 1);
    assert_eq!(ws[0].window_start_ms, now - now.rem_euclid(w));
    // A small step back (less than a window) changes nothing.
    assert!(agg.tick(now + w - 1000).is_empty());
    assert_eq!(agg.counters().clock_steps_back, 1);
}

#[test]
fn flush_closes_everything() {
    let mut agg = Aggregator::new(300).unwrap();
    agg.observe(T, "a", T, &m(json!({"x": 1})));
    agg.observe(T, "b", T, &m(json!({"x": 1})));
    assert_eq!(agg.flush().len(), 2);
    assert_eq!(agg.open_windows(), 0);
    // Flushed windows are closed: no straggler reopens them.
    assert!(agg.observe(T, "a", T, &m(json!({"x": 1}))).is_empty());
    assert_eq!(agg.counters().late_readings, 1);
}

#[test]
fn window_length_is_validated() {
    assert_eq!(Aggregator::new(0).unwrap_err(), AggregateError::InvalidWindow(0));
    assert!(Aggregator::new(86_401).is_err());
    assert_eq!(Aggregator::new(86_400).unwrap().window_s(), 86_400);
    assert_eq!(Aggregator::new(1).unwrap().window_s(), 1);
}

#[test]
fn state_is_compact() {
    let (inputs, _) = simulated_days(41, 1);
    let mut agg = Aggregator::new(300).unwrap();
    run(&mut agg, &inputs, 10_000, inputs[0].at_ms, inputs.last().unwrap().at_ms);
    let text = serde_json::to_string(&agg.snapshot()).unwrap();
    assert!(agg.open_windows() <= 4);
    assert!(text.len() < 1200, "{} bytes: {text}", text.len());
}

#[test]
fn no_panic_on_any_input() {
    let mut rng = Rng(7);
    let times = [i64::MIN, i64::MIN + 1, -1, 0, 1, T, MAX_TIME_MS, MAX_TIME_MS + 1, i64::MAX - 1, i64::MAX];
    for window_s in [1, 7, 300, 86_400] {
        let mut agg = Aggregator::new(window_s).unwrap();
        for _ in 0..5000 {
            let pick = |rng: &mut Rng| {
                if rng.chance(0.3) {
                    times[rng.range(0, times.len() as i64 - 1) as usize]
                } else {
                    T + rng.range(-DAY, DAY)
                }
            };
            let now = pick(&mut rng);
            let at = pick(&mut rng);
            let v = match rng.range(0, 6) {
                0 => json!(f64::MAX),
                1 => json!(-f64::MAX),
                2 => json!(i64::MIN),
                3 => json!(u64::MAX),
                4 => json!(true),
                5 => json!(f64::MIN_POSITIVE),
                _ => json!(rng.unit()),
            };
            let metrics = m(json!({ "x": v, "y": 1 }));
            for w in agg.observe(now, "d", at, &metrics) {
                let _ = w.to_json(u64::MAX, "");
            }
            if rng.chance(0.1) {
                for w in agg.tick(pick(&mut rng)) {
                    let _ = w.to_json(0, "g");
                }
            }
            if rng.chance(0.02) {
                let text = serde_json::to_string(&agg.snapshot()).unwrap();
                let state: AggregatorState = serde_json::from_str(&text).unwrap();
                let mut fresh = Aggregator::new(window_s).unwrap();
                fresh.restore(state);
                assert_eq!(fresh.snapshot(), agg.snapshot());
                agg = fresh;
            }
        }
    }
}

#[test]
fn rfc3339_is_clamped_not_panicking() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    assert_eq!(rfc3339_ms(T), "2026-11-26T03:10:17.500Z");
}

#[test]
fn persisted_floats_round_trip_exactly() {
    let values =
        [0.0, -0.0, 1.0, -7.0, 0.1, 0.11119776193195284, 14.748326573590319, 1e100, -1e-300, 2116.5, 9e15, 1e17];
    for v in values {
        let text = serde_json::to_string(&ExactF64(v)).unwrap();
        let back: ExactF64 = serde_json::from_str(&text).unwrap();
        assert_eq!(back.0.to_bits(), v.to_bits(), "{v} as {text}");
    }
    assert_eq!(serde_json::to_string(&ExactF64(2116.0)).unwrap(), "2116");
    // Hand-written states may use plain numbers.
    assert_eq!(serde_json::from_str::<ExactF64>("2.5").unwrap().0, 2.5);
    assert!(serde_json::from_str::<ExactF64>("\"abc\"").is_err());
}
