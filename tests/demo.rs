//! The whole demo, as CI runs it: the real binary, a short run at high speed, and its outcome checked
//! from the machine-readable summary line and the report it wrote.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_district-gateway");

#[test]
fn the_district_demo_runs_a_night_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("night.html");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["demo", "--seconds", "40", "--speed", "900", "--report"])
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(started.elapsed() < Duration::from_secs(100), "the demo took {:?}", started.elapsed());
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DEMO_SUMMARY "))
        .unwrap_or_else(|| panic!("no DEMO_SUMMARY line\n{stdout}"));
    let s: Value = serde_json::from_str(line).unwrap();
    let ctx = format!("summary: {s:#}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");

    // About ten hours of night passed.
    assert!(s["sim_hours"].as_f64().unwrap() > 9.0, "{ctx}");

    // Readings of every device type arrived at the broker.
    for kind in ["container", "tree", "presence", "lamp", "load", "meter", "water_meter"] {
        assert!(s["readings"][kind].as_u64().unwrap_or(0) > 0, "no {kind} reading arrived\n{ctx}");
    }

    // The neighbour's wM-Bus meter was heard as often as ours, and never published (only counted).
    assert!(s["wmbus"]["neighbours_sent"].as_u64().unwrap_or(0) > 0, "{ctx}");
    assert!(!stdout.contains("87654321"), "the neighbour's meter id is shown\n{ctx}");

    // The lamps reacted to presence: the lamp at the sensor reached the boost level after (nearly) every
    // detection.
    let judged = s["lamps"]["detections_judged"].as_u64().unwrap();
    let reacted = s["lamps"]["reacted"].as_u64().unwrap();
    assert!(judged >= 10, "too few people on the path\n{ctx}");
    assert!(reacted * 10 >= judged * 9, "lamps reacted to {reacted} of {judged} detections\n{ctx}");
    assert_eq!(s["lamps"]["override_accepted"], true, "{ctx}");
    assert!(s["energy"]["saved_pct"].as_f64().unwrap() > 30.0, "{ctx}");

    // The broker outage happened, a backlog built up, drained, and nothing was lost.
    let o = &s["outage"];
    assert!(o["seconds_real"].as_f64().unwrap() >= 2.0, "{ctx}");
    assert!(o["uplinks_acked_during"].as_u64().unwrap() > 0, "{ctx}");
    assert!(o["backlog_max"].as_u64().unwrap() > 0, "{ctx}");
    assert!(o["replayed_readings"].as_u64().unwrap() > 0, "{ctx}");
    let d = &s["delivery"];
    assert_eq!(d["acked_uplinks_lost"], 0, "{ctx}");
    assert_eq!(d["records_lost"], 0, "{ctx}");
    assert_eq!(d["backlog_left"], 0, "{ctx}");
    assert_eq!(s["uplinks"]["acked"], s["uplinks"]["sent"], "{ctx}");

    // The demand-response event was accepted and held the feeder under its limit.
    let dr = &s["dr_event"];
    assert_eq!(dr["accepted"], true, "{ctx}");
    assert!(dr["samples_judged"].as_u64().unwrap() >= 10, "{ctx}");
    assert_eq!(dr["held"], true, "{ctx}");
    assert!(dr["feeder_before_kw"].as_f64().unwrap() > dr["limit_kw"].as_f64().unwrap(), "the event had to act\n{ctx}");
    assert!(dr["load_sheds"].as_u64().unwrap() > 0, "{ctx}");

    // Containers filled up and the gateway said so.
    assert!(s["containers"]["full_events"].as_u64().unwrap() >= 1, "{ctx}");

    // The live view was readable: not a flood.
    assert!(stdout.lines().count() < 600, "{} lines of output", stdout.lines().count());
    assert!(stdout.contains("lamps ") && stdout.contains("feeder ") && stdout.contains("BROKER"), "{ctx}");

    // The report exists, is self-contained and has its charts.
    let html = std::fs::read_to_string(&report).expect("the report was written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(html.matches("<svg").count() >= 6, "charts: {}", html.matches("<svg").count());
    for title in [
        "Lamp levels along the path",
        "Energy of the street lights",
        "Feeder load versus limit",
        "Container fill levels",
        "Backlog during the broker outage",
    ] {
        assert!(html.contains(title), "chart {title:?} missing");
    }
    assert!(html.contains("<polyline") && html.contains("<circle"), "charts have data");
    assert!(!html.contains(" src=") && !html.contains("<link") && !html.contains("url("), "no external assets");
    assert!(html.contains("container_full"));
}
