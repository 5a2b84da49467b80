//! Event tests: simulated days of containers and trees with noisy sensors, silence, presence, restarts.

use super::*;
use serde_json::json;

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
    /// Uniform in [-a, a].
    fn noise(&mut self, a: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * a
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

fn m(v: Value) -> Metrics {
    match v {
        Value::Object(o) => o,
        _ => Metrics::new(),
    }
}

/// 2026-11-26T00:00:00Z
const T0: i64 = 1_795_651_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

const EMPTY_MM: f64 = 1800.0;
const FULL_MM: f64 = 300.0;

/// The fill the test expects, computed here from the formula of the spec.
fn expected_fill(d: f64) -> f64 {
    let pct = ((EMPTY_MM - d) / (EMPTY_MM - FULL_MM) * 100.0).clamp(0.0, 100.0);
    (pct * 10.0).round() / 10.0
}

struct BinReading {
    at_ms: i64,
    metrics: Metrics,
    /// Which phase of the scenario: 0 = first filling, 1 = after the first collection, ...
    phase: usize,
}

/// A container that fills over three days, is emptied, fills again over three days, is emptied, and fills
/// half way. Readings every 10 minutes (± 2 minutes), ±40 mm of noise (±2.7 points), and a few glitches (no
/// echo = 0 mm, a NaN that the decoder turned into null, a missing distance).
fn bin_days(seed: u64) -> Vec<BinReading> {
    let mut rng = Rng(seed);
    let phases = [(5.0, 100.0, 3 * DAY), (3.0, 97.0, 3 * DAY), (4.0, 60.0, 2 * DAY)];
    let mut out = Vec::new();
    let mut t = T0;
    for (phase, &(from, to, len)) in phases.iter().enumerate() {
        let start = t;
        while t < start + len {
            let true_fill = from + (to - from) * (t - start) as f64 / len as f64;
            let d = EMPTY_MM - true_fill / 100.0 * (EMPTY_MM - FULL_MM) + rng.noise(40.0);
            let metrics = match rng.range(0, 99) {
                0 => m(json!({"distance_mm": 0, "battery_pct": 90})),
                1 => m(json!({"distance_mm": f64::NAN, "battery_pct": 90})),
                2 => m(json!({"battery_pct": 90})),
                _ => m(json!({"distance_mm": d.round() as i64, "battery_pct": 90})),
            };
            out.push(BinReading { at_ms: t, metrics, phase });
            t += 10 * MIN + rng.range(-2 * MIN, 2 * MIN);
        }
    }
    out
}

fn tracker() -> ContainerTracker {
    let mut c = ContainerTracker::new();
    c.set_geometry("bin-017", ContainerGeometry::new(EMPTY_MM, FULL_MM)).unwrap();
    c
}

#[test]
fn a_container_filling_over_days_raises_full_once_per_filling_and_emptied_once_per_collection() {
    for seed in 1..=20 {
        let readings = bin_days(seed);
        let mut c = tracker();
        let mut events = Vec::new();
        for r in &readings {
            let mut metrics = r.metrics.clone();
            let (fill, evs) = c.on_reading(r.at_ms, "bin-017", &mut metrics);
            // fill_pct is derived exactly as the spec says and added to the reading.
            let d = r.metrics.get("distance_mm").and_then(Value::as_f64).filter(|d| *d > 0.0);
            assert_eq!(fill, d.map(expected_fill), "seed {seed}");
            assert_eq!(metrics.get("fill_pct").and_then(Value::as_f64), fill);
            events.extend(evs.into_iter().map(|e| (e, r.phase)));
        }
        let kinds: Vec<(&str, usize)> = events.iter().map(|(e, p)| (e.kind, *p)).collect();
        assert_eq!(
            kinds,
            [(CONTAINER_FULL, 0), (CONTAINER_EMPTIED, 1), (CONTAINER_FULL, 1), (CONTAINER_EMPTIED, 2)],
            "seed {seed}"
        );
        // Each full event is at the first valid reading of its filling that reached 80 %.
        for (e, phase) in events.iter().filter(|(e, _)| e.kind == CONTAINER_FULL) {
            let first = readings
                .iter()
                .filter(|r| r.phase == *phase)
                .find(|r| {
                    let d = r.metrics.get("distance_mm").and_then(Value::as_f64).unwrap_or(0.0);
                    d > 0.0 && expected_fill(d) >= 80.0
                })
                .unwrap();
            assert_eq!(e.at_ms, first.at_ms, "seed {seed}");
            assert!(e.details["fill_pct"].as_f64().unwrap() >= 80.0);
        }
        // Each emptied event is at the first reading after the collection.
        for (e, phase) in events.iter().filter(|(e, _)| e.kind == CONTAINER_EMPTIED) {
            let first = readings
                .iter()
                .filter(|r| {
                    r.phase == *phase && r.metrics.get("distance_mm").and_then(Value::as_f64).unwrap_or(0.0) > 0.0
                })
                .map(|r| r.at_ms)
                .next()
                .unwrap();
            assert_eq!(e.at_ms, first, "seed {seed}");
            assert!(e.details["previous_fill_pct"].as_f64().unwrap() - e.details["fill_pct"].as_f64().unwrap() >= 30.0);
        }
    }
}

#[test]
fn noise_around_the_full_threshold_fires_once() {
    let mut rng = Rng(5);
    let mut c = tracker();
    let mut fired = 0;
    // A day hovering around 80 % (±6 points), dipping as low as 70 % but never to 50 %.
    for i in 0..2000 {
        let fill = 77.0 + rng.noise(7.0);
        let d = EMPTY_MM - fill / 100.0 * (EMPTY_MM - FULL_MM);
        let (_, evs) = c.on_reading(T0 + i * MIN, "bin-017", &mut m(json!({ "distance_mm": d })));
        fired += evs.iter().filter(|e| e.kind == CONTAINER_FULL).count();
        assert!(evs.iter().all(|e| e.kind != CONTAINER_EMPTIED));
    }
    assert_eq!(fired, 1);
    assert!(!c.status("bin-017").unwrap().armed);
    // Dropping below clear_pct re-arms without an "emptied" (a slow drop: compaction, wind, a reading series).
    for (i, fill) in [65.0, 55.0, 45.0, 60.0, 79.0, 81.0, 85.0].iter().enumerate() {
        let d = EMPTY_MM - fill / 100.0 * (EMPTY_MM - FULL_MM);
        let (_, evs) = c.on_reading(T0 + DAY + i as i64 * MIN, "bin-017", &mut m(json!({ "distance_mm": d })));
        let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, if *fill == 81.0 { vec![CONTAINER_FULL] } else { vec![] }, "at {fill}");
    }
}

#[test]
fn container_details_and_first_sight() {
    let mut c = tracker();
    // First seen already full: raised (the tour needs to know), once.
    let (fill, evs) = c.on_reading(T0, "bin-017", &mut m(json!({"distance_mm": 450})));
    assert_eq!(fill, Some(90.0));
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0].to_json(7),
        json!({"seq": 7, "device": "bin-017", "at": "2026-11-26T00:00:00.000Z", "event": "container_full",
               "fill_pct": 90.0, "full_pct": 80.0, "distance_mm": 450.0})
    );
    assert_eq!(evs[0].topic().suffix(), "event/bin-017");
    // Emptied: a drop of at least 30 points from one reading to the next.
    let (_, evs) = c.on_reading(T0 + HOUR, "bin-017", &mut m(json!({"distance_mm": 1750})));
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, CONTAINER_EMPTIED);
    assert_eq!(evs[0].details["previous_fill_pct"], json!(90.0));
    assert_eq!(evs[0].details["fill_pct"], json!(3.3));
    // A device without geometry is not a container.
    let mut metrics = m(json!({"distance_mm": 450}));
    assert_eq!(c.on_reading(T0, "other", &mut metrics), (None, vec![]));
    assert!(!metrics.contains_key("fill_pct"));
    // A sensor that reports its own fill_pct (no distance) is used as is.
    let mut metrics = m(json!({"fill_pct": 85}));
    let (fill, evs) = c.on_reading(T0 + 2 * HOUR, "bin-017", &mut metrics);
    assert_eq!((fill, evs.len()), (Some(85.0), 1));
    assert_eq!(metrics["fill_pct"], json!(85));
    // Out-of-range reported fills and distances beyond the empty distance.
    assert_eq!(c.on_reading(T0, "bin-017", &mut m(json!({"fill_pct": 140}))).0, None);
    assert_eq!(c.on_reading(T0, "bin-017", &mut m(json!({"distance_mm": 2500}))).0, Some(0.0));
    assert_eq!(c.on_reading(T0, "bin-017", &mut m(json!({"distance_mm": 10}))).0, Some(100.0));
}

#[test]
fn geometry_is_validated() {
    let mut c = ContainerTracker::new();
    assert!(matches!(
        c.set_geometry("b", ContainerGeometry::new(300.0, 1800.0)),
        Err(EventConfigError::NotGreater { field: "empty_distance_mm", .. })
    ));
    assert!(c.set_geometry("b", ContainerGeometry::new(f64::NAN, 300.0)).is_err());
    let mut g = ContainerGeometry::new(1800.0, 300.0);
    g.clear_pct = 85.0;
    let err = c.set_geometry("b", g).unwrap_err();
    assert_eq!(err.to_string(), "full_pct: must be greater than clear_pct (85), got 80");
    g.clear_pct = 50.0;
    g.emptied_drop_pct = 0.0;
    assert!(c.set_geometry("b", g).is_err());
    assert!(c.geometry("b").is_none());
    // From config (TOML/JSON), with the defaults.
    let g: ContainerGeometry =
        serde_json::from_value(json!({"empty_distance_mm": 1500, "full_distance_mm": 250})).unwrap();
    assert_eq!((g.full_pct, g.clear_pct, g.emptied_drop_pct), (80.0, 50.0, 30.0));
    assert!(serde_json::from_value::<ContainerGeometry>(
        json!({"empty_distance_mm": 1, "full_distance_mm": 0, "x": 1})
    )
    .is_err());
    let t: TreeThresholds = serde_json::from_value(json!({})).unwrap();
    assert_eq!(t, TreeThresholds::default());
    let mut trees = TreeTracker::new();
    let bad = TreeThresholds { needs_water_below_pct: 30.0, watered_above_pct: 30.0 };
    assert!(trees.set_thresholds("t", bad).is_err());
    let mut s = SilenceWatch::new();
    assert!(s.watch("d", 0, T0).is_err());
    assert!(s.watch("d", 999, T0).is_err());
    assert!(s.watch("d", 1000, T0).is_ok());
}

/// Soil moisture of a tree over `cycles` dry spells: it dries from ~36 % by ~3 points a day with ±1.5 points
/// of noise until a watering truck comes (when it has been below 20 % for a while), then jumps back.
/// Returns (time, metrics, cycle).
fn tree_days(seed: u64, cycles: usize) -> Vec<(i64, Metrics, usize)> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut t = T0;
    for cycle in 0..cycles {
        let mut level = 36.0;
        let mut below_for = 0;
        while below_for < 30 {
            level -= 3.0 / 48.0;
            let v = ((level + rng.noise(1.5)) * 10.0).round() / 10.0;
            let metrics = if rng.range(0, 50) == 0 {
                m(json!({"soil_moisture_pct": -3.0, "temperature_c": 11.0}))
            } else {
                m(json!({"soil_moisture_pct": v, "temperature_c": 11.0}))
            };
            out.push((t, metrics, cycle));
            if level < 18.0 {
                below_for += 1;
            }
            t += 30 * MIN;
        }
    }
    out
}

#[test]
fn trees_need_water_once_per_dry_spell_and_are_watered_once() {
    for seed in 1..=10 {
        let days = tree_days(seed, 4);
        let mut trees = TreeTracker::new();
        trees.set_thresholds("tree-07", TreeThresholds::default()).unwrap();
        let mut events = Vec::new();
        for (t, metrics, cycle) in &days {
            if let Some(e) = trees.on_reading(*t, "tree-07", metrics) {
                events.push((e, *cycle));
            }
        }
        let kinds: Vec<(&str, usize)> = events.iter().map(|(e, c)| (e.kind, *c)).collect();
        let mut expected = Vec::new();
        for c in 0..4 {
            if c > 0 {
                expected.push((WATERED, c));
            }
            expected.push((NEEDS_WATER, c));
        }
        assert_eq!(kinds, expected, "seed {seed}");
        for (e, cycle) in &events {
            let v = |x: &Metrics| x["soil_moisture_pct"].as_f64().unwrap();
            let in_cycle = days.iter().filter(|d| d.2 == *cycle && v(&d.1) >= 0.0);
            let at = if e.kind == NEEDS_WATER {
                in_cycle.clone().find(|d| v(&d.1) < 20.0).unwrap().0
            } else {
                in_cycle.clone().find(|d| v(&d.1) > 30.0).unwrap().0
            };
            assert_eq!(e.at_ms, at, "seed {seed}: {}", e.kind);
        }
    }
}

#[test]
fn silence_is_raised_once_and_cleared_by_the_next_reading() {
    let mut rng = Rng(3);
    let mut s = SilenceWatch::new();
    s.watch("bin-017", HOUR, T0).unwrap();
    s.watch("never", HOUR, T0).unwrap();
    s.watch("gappy", HOUR, T0).unwrap();
    // bin-017 reports every ~10 minutes for a day, is silent for 6 hours, then reports again;
    // gappy reports every 40-55 minutes throughout; never never reports.
    let mut readings: Vec<(i64, &str)> = Vec::new();
    let mut t = T0;
    while t < T0 + 2 * DAY {
        if !(T0 + DAY..T0 + DAY + 6 * HOUR).contains(&t) {
            readings.push((t, "bin-017"));
        }
        t += 10 * MIN + rng.range(-MIN, MIN);
    }
    let last_before = readings.iter().rev().find(|r| r.0 < T0 + DAY).unwrap().0;
    let first_after = readings.iter().find(|r| r.0 > T0 + DAY).unwrap().0;
    let mut t = T0;
    while t < T0 + 2 * DAY {
        t += 40 * MIN + rng.range(0, 15 * MIN);
        readings.push((t, "gappy"));
    }
    readings.sort();
    let mut events = Vec::new();
    let mut next_tick = T0;
    for (t, device) in &readings {
        while next_tick <= *t {
            events.extend(s.tick(next_tick));
            next_tick += 30_000;
        }
        events.extend(s.on_reading(*t, device));
    }
    let summary: Vec<(&str, &str, i64)> = events.iter().map(|e| (e.device.as_str(), e.kind, e.at_ms)).collect();
    let tick_after = |t: i64| T0 + (t - T0 + 29_999) / 30_000 * 30_000;
    assert_eq!(
        summary,
        [
            ("never", SENSOR_SILENT, T0 + HOUR),
            ("bin-017", SENSOR_SILENT, tick_after(last_before + HOUR)),
            ("bin-017", SENSOR_BACK, first_after),
        ]
    );
    assert_eq!(events[0].details["last_seen"], Value::Null);
    assert_eq!(events[1].details["max_silence_s"], json!(3600));
    assert_eq!(events[1].details["last_seen"], json!(rfc3339_ms(last_before)));
    assert_eq!(events[2].details["silent_for_s"], json!((first_after - last_before) / 1000));
    assert_eq!(s.silent_devices().collect::<Vec<_>>(), ["never"]);
    // Unwatched devices are ignored.
    assert!(s.on_reading(T0, "stranger").is_none());
}

#[test]
fn the_gateways_own_downtime_is_not_silence() {
    let mut s = SilenceWatch::new();
    s.watch("d", HOUR, T0).unwrap();
    assert!(s.on_reading(T0 + 10 * MIN, "d").is_none());
    let state = serde_json::to_string(&s.snapshot(T0 + 20 * MIN)).unwrap();
    // Down for three hours.
    let back = T0 + 20 * MIN + 3 * HOUR;
    let mut s = SilenceWatch::new();
    s.watch("d", HOUR, back).unwrap();
    s.restore(serde_json::from_str(&state).unwrap(), back);
    // 10 minutes of silence were seen before the outage: 50 more after it.
    assert!(s.tick(back + 49 * MIN).is_empty());
    let evs = s.tick(back + 50 * MIN);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].details["last_seen"], json!(rfc3339_ms(T0 + 10 * MIN)));
    // Already silent at the crash: not raised again after the restart.
    let state = s.snapshot(back + 51 * MIN);
    let mut s2 = SilenceWatch::new();
    s2.watch("d", HOUR, back + 5 * HOUR).unwrap();
    s2.restore(state, back + 5 * HOUR);
    assert!(s2.tick(back + 10 * HOUR).is_empty());
    assert_eq!(s2.on_reading(back + 11 * HOUR, "d").unwrap().kind, SENSOR_BACK);
}

/// One stream of everything: two bins, two trees, a silent-prone device; returns the events in order.
struct World {
    containers: ContainerTracker,
    trees: TreeTracker,
    silence: SilenceWatch,
}

impl World {
    fn new(now: i64) -> Self {
        let mut w = World { containers: tracker(), trees: TreeTracker::new(), silence: SilenceWatch::new() };
        let mut g = ContainerGeometry::new(1600.0, 200.0);
        g.full_pct = 75.0;
        w.containers.set_geometry("bin-018", g).unwrap();
        w.trees.set_thresholds("tree-07", TreeThresholds::default()).unwrap();
        let group = TreeThresholds { needs_water_below_pct: 15.0, watered_above_pct: 25.0 };
        w.trees.set_thresholds("tree-08", group).unwrap();
        for d in ["bin-017", "bin-018", "tree-07", "tree-08"] {
            w.silence.watch(d, 2 * HOUR, now).unwrap();
        }
        w
    }

    fn step(&mut self, t: i64, device: &str, metrics: &Metrics, out: &mut Vec<Value>) {
        let mut metrics = metrics.clone();
        let mut evs: Vec<Event> = self.silence.on_reading(t, device).into_iter().collect();
        evs.extend(self.containers.on_reading(t, device, &mut metrics).1);
        evs.extend(self.trees.on_reading(t, device, &metrics));
        out.extend(evs.iter().map(|e| e.to_json(0)));
        out.push(json!({"reading": device, "metrics": metrics}));
    }

    fn state(&self, now: i64) -> String {
        serde_json::to_string(&EventsState {
            containers: self.containers.snapshot(),
            silence: self.silence.snapshot(now),
            trees: self.trees.snapshot(),
        })
        .unwrap()
    }

    fn restored(text: &str, now: i64) -> Self {
        let state: EventsState = serde_json::from_str(text).unwrap();
        let mut w = World::new(now);
        w.containers.restore(state.containers);
        w.trees.restore(state.trees);
        w.silence.restore(state.silence, now);
        w
    }
}

fn world_stream() -> Vec<(i64, String, Metrics)> {
    let mut all: Vec<(i64, String, Metrics)> = Vec::new();
    for r in bin_days(8) {
        all.push((r.at_ms, "bin-017".into(), r.metrics));
    }
    for r in bin_days(9) {
        // bin-018 misses a few hours now and then.
        if (r.at_ms - T0) % (2 * DAY) > 5 * HOUR {
            all.push((r.at_ms + 17_000, "bin-018".into(), r.metrics));
        }
    }
    for (t, metrics, _) in tree_days(4, 3) {
        all.push((t + 5_000, "tree-07".into(), metrics.clone()));
        let mut noisy = metrics;
        if let Some(v) = noisy.get("soil_moisture_pct").and_then(Value::as_f64) {
            noisy.insert("soil_moisture_pct".into(), json!(v - 4.0 + (t % 7) as f64 / 3.0));
        }
        all.push((t + 9_000, "tree-08".into(), noisy));
    }
    all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    all
}

fn run_world(w: &mut World, stream: &[(i64, String, Metrics)], next_tick: &mut i64, out: &mut Vec<Value>) {
    for (t, device, metrics) in stream {
        while *next_tick <= *t {
            out.extend(w.silence.tick(*next_tick).iter().map(|e| e.to_json(0)));
            *next_tick += 60_000;
        }
        w.step(*t, device, metrics, out);
    }
}

#[test]
fn snapshot_and_restore_mid_stream_match_an_uninterrupted_run() {
    let stream = world_stream();
    let mut reference = World::new(T0);
    let mut expected = Vec::new();
    let mut tick = T0;
    run_world(&mut reference, &stream, &mut tick, &mut expected);
    let count = |kind: &str| expected.iter().filter(|v| v["event"] == kind).count();
    assert!(count(CONTAINER_FULL) >= 4 && count(NEEDS_WATER) >= 4 && count(SENSOR_SILENT) >= 2, "a rich stream");
    // The bins stop reporting when their 8 days are over, the trees go on for weeks: those two stay silent.
    assert_eq!(count(SENSOR_SILENT), count(SENSOR_BACK) + 2);
    assert!(count(SENSOR_BACK) >= 2);

    let mut rng = Rng(77);
    for _ in 0..25 {
        let cut = rng.range(1, stream.len() as i64 - 1) as usize;
        let mut w = World::new(T0);
        let mut got = Vec::new();
        let mut tick = T0;
        run_world(&mut w, &stream[..cut], &mut tick, &mut got);
        // Restart at the time of the last reading before the cut: no downtime.
        let now = stream[cut - 1].0;
        let text = w.state(now);
        let mut w = World::restored(&text, now);
        run_world(&mut w, &stream[cut..], &mut tick, &mut got);
        assert_eq!(got.len(), expected.len(), "cut {cut}");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "cut {cut}, item {i}");
        }
    }
}

#[test]
fn state_only_keeps_configured_devices() {
    let mut c = tracker();
    c.on_reading(T0, "bin-017", &mut m(json!({"distance_mm": 1000})));
    c.set_geometry("bin-099", ContainerGeometry::new(1000.0, 100.0)).unwrap();
    c.on_reading(T0, "bin-099", &mut m(json!({"distance_mm": 500})));
    c.remove("bin-099");
    assert_eq!(c.snapshot().devices.keys().collect::<Vec<_>>(), ["bin-017"]);
    // Corrupt entries are dropped on restore.
    let state: ContainerState = serde_json::from_value(
        json!({"devices": {"a": {"fill_pct": 150.0, "armed": true}, "bin-017": {"fill_pct": "12.5", "armed": false}}}),
    )
    .unwrap();
    c.restore(state);
    assert!(c.status("a").is_none());
    assert_eq!(c.status("bin-017"), Some(ContainerStatus { fill_pct: 12.5, armed: false }));
    // The exact float survives JSON.
    let mut t = TreeTracker::new();
    t.set_thresholds("t", TreeThresholds::default()).unwrap();
    t.on_reading(T0, "t", &m(json!({"soil_moisture_pct": 0.11119776193195284})));
    let back: TreeState = serde_json::from_str(&serde_json::to_string(&t.snapshot()).unwrap()).unwrap();
    assert_eq!(back, t.snapshot());
}

#[test]
fn presence_from_metrics() {
    let p = |v: Value| presence_from(&m(v));
    assert_eq!(p(json!({"battery_pct": 90})), None);
    assert_eq!(p(json!({"motion": true})), Some(Presence { occupied: true, people: None }));
    assert_eq!(p(json!({"motion": false})), Some(Presence { occupied: false, people: None }));
    assert_eq!(p(json!({"occupancy": "occupied"})), Some(Presence { occupied: true, people: None }));
    assert_eq!(p(json!({"occupancy": "Vacant"})), Some(Presence { occupied: false, people: None }));
    assert_eq!(p(json!({"motion": 1})), Some(Presence { occupied: true, people: None }));
    assert_eq!(p(json!({"people_count": 3, "occupancy": true})), Some(Presence { occupied: true, people: Some(3) }));
    assert_eq!(p(json!({"people_count": 0})), Some(Presence { occupied: false, people: Some(0) }));
    assert_eq!(p(json!({"people_count": 2.0})), Some(Presence { occupied: true, people: Some(2) }));
    // Disagreement: presence wins.
    assert_eq!(p(json!({"people_count": 0, "motion": true})), Some(Presence { occupied: true, people: Some(0) }));
    // Garbage is no signal.
    assert_eq!(p(json!({"people_count": -1, "motion": "banana", "occupancy": null})), None);
    assert_eq!(p(json!({"people_count": f64::NAN, "motion": [true]})), None);
    assert_eq!(p(json!({"people_count": 1e300})), None);
}

#[test]
fn event_json_keeps_the_pinned_fields() {
    let e = Event::new("d", WATERED, T0).with("event", json!("spoof")).with("seq", json!(1)).with("x", json!(1));
    assert_eq!(
        e.to_json(42),
        json!({"seq": 42, "device": "d", "at": "2026-11-26T00:00:00.000Z", "event": "watered", "x": 1})
    );
    assert!(EVENT_KINDS.contains(&e.kind));
}

#[test]
fn no_panic_on_any_input() {
    let mut rng = Rng(1234);
    let mut w = World::new(T0);
    let values = [
        json!(null),
        json!(true),
        json!("12"),
        json!(-1),
        json!(0),
        json!(f64::MAX),
        json!(-f64::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e-300),
        json!({"a": 1}),
        json!([1]),
    ];
    let times = [i64::MIN, -1, 0, T0, i64::MAX];
    let mut out = Vec::new();
    for i in 0..20_000 {
        let pick = |rng: &mut Rng| values[rng.range(0, values.len() as i64 - 1) as usize].clone();
        let metrics = m(json!({
            "distance_mm": pick(&mut rng), "fill_pct": pick(&mut rng), "soil_moisture_pct": pick(&mut rng),
            "motion": pick(&mut rng), "occupancy": pick(&mut rng), "people_count": pick(&mut rng),
        }));
        let t = if i % 7 == 0 { times[rng.range(0, 4) as usize] } else { T0 + rng.range(0, 10 * DAY) };
        let device = ["bin-017", "bin-018", "tree-07", "x"][rng.range(0, 3) as usize];
        w.step(t, device, &metrics, &mut out);
        let _ = presence_from(&metrics);
        out.extend(w.silence.tick(t).iter().map(|e| e.to_json(u64::MAX)));
        if i % 1000 == 0 {
            let text = w.state(t);
            w = World::restored(&text, t);
        }
        out.clear();
    }
}
