//! Downlinks: commands only on level changes, the minimum gap between commands, unacknowledged lamps.

use super::*;

#[test]
fn commands_only_on_level_changes() {
    let p = ZoneParams::default();
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut z = zone(&p);
    let mut commands = vec![];
    let mut states = 0;
    for s in 0..=900 {
        let now = start + Duration::seconds(s);
        let mut out = z.tick(now);
        if s <= 300 && s % 20 == 0 && s > 0 {
            out.merge(z.presence(now, "pir-01", now).unwrap());
        }
        if s % 60 == 0 {
            out.merge(z.sensor_heard(now, "pir-01", now).unwrap());
        }
        for c in &out.commands {
            let ack = z.lamp_ack(now, &c.lamp, c.level_pct).unwrap();
            assert!(ack.commands.is_empty());
        }
        states += out.states.len();
        commands.extend(out.commands.into_iter().map(|c| (s, c.lamp, c.level_pct)));
    }
    // Initial 10 %, boost at 20 s, back at 300 + 90 s; nothing else for 900 one-second ticks and 15 detections.
    assert_eq!(commands.len(), 9, "{commands:?}");
    for lamp in ["lamp-01", "lamp-02", "lamp-03"] {
        let mine: Vec<(i64, u8)> = commands.iter().filter(|c| c.1 == lamp).map(|c| (c.0, c.2)).collect();
        assert_eq!(mine, vec![(0, 10), (20, 100), (390, 10)]);
    }
    assert_eq!(states, 3);
}

#[test]
fn min_command_gap_coalesces() {
    let p = ZoneParams { min_command_gap_s: 30, hold_s: 10, ..ZoneParams::default() };
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    // Boost 5 s after the initial command: deferred to 30 s; the hold ends at 15 s before it is sent, so
    // nothing is sent at all (the coalesced level equals the last sent one).
    sim.presence(start + Duration::seconds(5), "pir-01");
    sim.run_to(start + Duration::seconds(60));
    assert_eq!(sim.commands.len(), 3);
    // A boost at 100 s is sent at once, its end (110 s) too: 100 + 30 > 110, so the end waits until 130 s.
    sim.presence(start + Duration::seconds(100), "pir-01");
    sim.run_to(start + Duration::seconds(200));
    let c = sim.commands_for("lamp-01");
    let times: Vec<(i64, u8)> = c.iter().map(|x| ((x.0 - start).num_seconds(), x.1)).collect();
    assert_eq!(times, vec![(0, 10), (100, 100), (130, 10)]);
}

#[test]
fn unacknowledged_lamp_is_reported() {
    let p = ZoneParams::default();
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    sim.auto_ack = false;
    // Initial commands were acked by the sim; now lamp-03 stops answering.
    sim.presence(start + Duration::seconds(10), "pir-01");
    let t = start + Duration::seconds(10);
    for lamp in ["lamp-01", "lamp-02"] {
        let out = sim.zone.lamp_ack(t, lamp, 100).unwrap();
        assert!(out.is_empty());
    }
    sim.run_to(t + Duration::seconds(80));
    let retries: Vec<_> = sim.commands.iter().filter(|(_, c)| c.retry).collect();
    assert!(retries.is_empty());
    sim.run_to(t + Duration::seconds(89));
    // Not yet: the ack timeout is 120 s; the hold ends at 100 s and sends 10 % (a new command).
    sim.run_to(t + Duration::seconds(400));
    let names = sim.event_names();
    assert_eq!(names.iter().filter(|n| **n == "lamp_fault").count(), 3, "{names:?}");
    let ev = sim.events.iter().find(|e| e.device() == Some("lamp-03")).unwrap();
    assert!(matches!(ev.kind, EventKind::LampFault { level_pct: 10, attempts: 2, .. }));
    let lamp3 = sim.commands_for("lamp-03");
    assert_eq!(lamp3.len(), 4, "initial, boost, base, one retry: {lamp3:?}");
    // The lamp answers again.
    let out = sim.zone.lamp_ack(t + Duration::seconds(500), "lamp-03", 10).unwrap();
    assert_eq!(out.events[0].name(), "lamp_recovered");
    // A lamp that lost its level (reports 0 while 10 % was acknowledged) gets it once more.
    let out = sim.zone.lamp_ack(t + Duration::seconds(510), "lamp-03", 10).unwrap();
    assert!(out.is_empty());
    let out = sim.zone.lamp_ack(t + Duration::seconds(520), "lamp-03", 0).unwrap();
    assert_eq!(out.commands.len(), 1);
    assert!(out.commands[0].retry);
}
