//! The OpenADR VTN's events: booked as a complete set, withdrawn ones cancelled with their report,
//! the city cannot touch them, and they run on while the city's heartbeat is lost.

use super::*;

fn vtn(id: &str, modification: u32, start: DateTime<Utc>, duration_s: u64, limit_kw: f64) -> DrEvent {
    DrEvent::limit(&format!("{VTN_PREFIX}{id}:0"), modification, start, duration_s, limit_kw)
}

#[test]
fn the_vtn_set_is_booked_once_modified_and_withdrawn_with_a_report() {
    let p = small();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    let a = vtn("ev-a", 10, t0 + Duration::minutes(1), 3600, 220.0);
    let b = vtn("ev-b", 10, t0 + Duration::minutes(1), 3600, 230.0);
    sim.input(Input::VtnEvents(vec![a.clone(), b.clone()]));
    assert_eq!(sim.vtn_acks, vec![(a.id.clone(), Ok(EventAck::Accepted)), (b.id.clone(), Ok(EventAck::Accepted))]);
    sim.run_until(t0 + Duration::minutes(5));
    assert_eq!(sim.d.limit(), (220.0, &LimitReason::Event(a.id.clone())));
    assert_eq!(sim.shed_count(), 4);
    // The same set again (the next poll): nothing changes.
    sim.vtn_acks.clear();
    sim.input(Input::VtnEvents(vec![a.clone(), b.clone()]));
    assert!(sim.vtn_acks.iter().all(|(_, ack)| matches!(ack, Ok(EventAck::Stale { current: 10 }))));
    // A modification of a relaxes it; b is withdrawn (deleted on the VTN): cancelled, with its report.
    let a2 = DrEvent { modification: 11, limit_kw: Some(235.0), ..a.clone() };
    sim.vtn_acks.clear();
    sim.input(Input::VtnEvents(vec![a2]));
    assert_eq!(
        sim.vtn_acks,
        vec![(a.id.clone(), Ok(EventAck::Replaced { previous: 10 })), (b.id.clone(), Ok(EventAck::Cancelled))]
    );
    assert_eq!(sim.d.limit(), (235.0, &LimitReason::Event(a.id.clone())));
    let rep = sim.reports.last().expect("b's report");
    assert_eq!(rep.scope, ReportScope::Event { id: b.id.clone(), modification: 10, cancelled: true });
    assert!(rep.mean_kw.is_some_and(|m| m > 200.0), "{:?}", rep.mean_kw);
    // Everything withdrawn: the configured limit again; the city's own events are not touched.
    sim.input(Input::Event(DrEvent::limit("city-1", 0, sim.now, 3600, 245.0)));
    sim.input(Input::VtnEvents(vec![]));
    assert_eq!(sim.d.limit(), (245.0, &LimitReason::Event("city-1".into())));
    assert_eq!(sim.d.booked_events(), vec!["city-1".to_string()]);
}

#[test]
fn the_city_cannot_book_or_cancel_a_vtn_event_nor_the_vtn_a_city_event() {
    let p = small();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    let a = vtn("ev-a", 1, t0, 3600, 220.0);
    sim.input(Input::Event(a.clone()));
    assert_eq!(sim.acks.last(), Some(&Err(EventError::ReservedId)));
    sim.input(Input::VtnEvents(vec![a.clone(), DrEvent::limit("city-x", 0, t0, 60, 1.0)]));
    assert_eq!(sim.vtn_acks[0], (a.id.clone(), Ok(EventAck::Accepted)));
    assert_eq!(sim.vtn_acks[1], ("city-x".to_string(), Err(EventError::InvalidId)));
    sim.input(Input::Cancel { id: a.id.clone(), modification: None });
    assert_eq!(sim.acks.last(), Some(&Err(EventError::ReservedId)));
    assert_eq!(sim.d.booked_events(), vec![a.id.clone()]);
}

#[test]
fn vtn_events_run_on_while_the_city_heartbeat_is_lost() {
    let mut p = small();
    p.heartbeat_timeout_s = 300;
    p.failsafe_limit_kw = Some(230.0);
    p.failsafe_duration_s = 3600;
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.input(Input::Heartbeat { at: t0 });
    sim.input(Input::Event(DrEvent::limit("city", 0, t0, 6 * 3600, 200.0)));
    let a = vtn("ev-a", 1, t0, 6 * 3600, 215.0);
    sim.input(Input::VtnEvents(vec![a.clone()]));
    sim.run_until(t0 + Duration::minutes(4));
    assert_eq!(sim.d.limit(), (200.0, &LimitReason::Event("city".into())));
    // The city falls silent: its event is suspended, the fail-safe (230) and the VTN's event (215) hold.
    sim.run_until(t0 + Duration::minutes(10));
    assert_eq!(sim.d.limit(), (215.0, &LimitReason::Event(a.id.clone())));
    // After the fail-safe time the VTN's event still limits.
    sim.run_until(t0 + Duration::minutes(70));
    assert_eq!(sim.d.limit(), (215.0, &LimitReason::Event(a.id.clone())));
}

#[test]
fn a_vtn_version_that_differs_replaces_the_booked_one_whatever_its_number() {
    let p = small();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    let a = vtn("ev-a", 10, t0, 3600, 220.0);
    sim.input(Input::VtnEvents(vec![a.clone()]));
    // Modified within the same second: the same number, another limit.
    let same_second = DrEvent { limit_kw: Some(230.0), ..a.clone() };
    sim.vtn_acks.clear();
    sim.input(Input::VtnEvents(vec![same_second.clone()]));
    assert_eq!(sim.vtn_acks, vec![(a.id.clone(), Ok(EventAck::Replaced { previous: 10 }))]);
    assert_eq!(sim.d.limit(), (230.0, &LimitReason::Event(a.id.clone())));
    // The next poll brings the same version again: stale, nothing changes.
    sim.vtn_acks.clear();
    sim.input(Input::VtnEvents(vec![same_second]));
    assert_eq!(sim.vtn_acks, vec![(a.id.clone(), Ok(EventAck::Stale { current: 11 }))]);
    // A version with an older number (the VTN's clock stepped back) that differs still replaces.
    let older = DrEvent { modification: 3, limit_kw: Some(225.0), ..a.clone() };
    sim.vtn_acks.clear();
    sim.input(Input::VtnEvents(vec![older]));
    assert_eq!(sim.vtn_acks, vec![(a.id.clone(), Ok(EventAck::Replaced { previous: 11 }))]);
    assert_eq!(sim.d.limit(), (225.0, &LimitReason::Event(a.id.clone())));
}
