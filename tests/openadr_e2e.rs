//! OpenADR 3.1 against a real VTN: openleadr-vtn on a private PostgreSQL (tests/common/vtn.rs). Needs
//! `openleadr-vtn` (cargo install) and PostgreSQL (apt); without them the tests skip, or fail under CI.

mod common;
#[path = "openadr_e2e/gateway.rs"]
mod gateway;

use std::time::Duration;

use chrono::Utc;
use common::vtn::{self, Vtn};
use openleadr_client::Filter;
use openleadr_wire::event::EventType;
use openleadr_wire::program::ProgramRequest;
use openleadr_wire::values_map::Value;
use openleadr_wire::ven::VenVenRequest;

/// The harness itself, with openleadr-client on both sides: business logic publishes a program and an
/// event, a VEN registers and sees them, sees the event change and go, and keeps working through a
/// restart of the VTN.
#[tokio::test]
async fn vtn_harness_business_logic_creates_a_program_and_an_event_a_ven_sees() {
    let Some(mut vtn) = Vtn::start() else { return };

    // Both users get a token from the VTN's own OAuth provider; a wrong secret does not.
    for who in [vtn.bl(), vtn.ven()] {
        let token = vtn.fetch_token(who).unwrap_or_else(|e| panic!("{}: no token: {e}", who.client_id));
        assert!(!token.access_token.is_empty() && token.expires_in > 0, "{token:?}");
    }
    let mut wrong = vtn.ven().clone();
    wrong.client_secret.push('x');
    assert!(vtn.fetch_token(&wrong).is_err(), "a wrong secret got a token");

    // Business logic: the program and an event with one interval.
    let bl = vtn.business_logic();
    let program = bl.create_program(ProgramRequest::new("district-dr")).await.unwrap();
    let start = Utc::now() + chrono::Duration::seconds(5);
    let request = vtn::event_with_one_interval(program.id(), EventType::ImportCapacityLimit, 30.0, start, "PT10M");
    let mut event = program.create_event(request).await.unwrap();

    // The VEN registers itself and finds both.
    let ven = vtn.ven_client();
    let me = ven.create_ven(VenVenRequest { ven_name: "gw-test".into(), attributes: None }).await.unwrap();
    assert_eq!(me.content().ven_name, "gw-test");
    assert_eq!(me.content().client_id.to_string(), vtn.ven().client_id, "the VTN ties the VEN to its client id");
    let programs = ven.get_program_list(Filter::none()).await.unwrap();
    let seen = programs.iter().find(|p| p.content().program_name == "district-dr").expect("the VEN sees the program");
    assert_eq!(seen.id(), program.id());
    let events = ven.get_event_list(Some(program.id()), Filter::none()).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let seen = events[0].content();
    assert_eq!(events[0].id(), event.id());
    assert_eq!(vtn::first_value(seen), Some((EventType::ImportCapacityLimit, 30.0)));
    let period = seen.interval_period.as_ref().expect("the event's interval period");
    assert!((period.start - start).num_milliseconds().abs() < 1000, "start {} != {start}", period.start);
    let minutes = period.duration.as_ref().map(|d| d.to_chrono_at_datetime(start).num_minutes());
    assert_eq!(minutes, Some(10));

    // Business logic lowers the limit; the VEN sees the new value.
    event.content_mut().intervals.as_mut().unwrap()[0].payloads[0].values = vec![Value::Number(20.0)];
    event.update().await.unwrap();
    let events = ven.get_event_list(Some(program.id()), Filter::none()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(vtn::first_value(events[0].content()), Some((EventType::ImportCapacityLimit, 20.0)));
    assert!(events[0].modification_date_time() >= events[0].created_date_time());

    // ... and deletes it; the VEN sees it gone.
    event.delete().await.unwrap();
    let events = ven.get_event_list(Some(program.id()), Filter::none()).await.unwrap();
    assert!(events.is_empty(), "{events:?}");

    // A restart of the VTN: same port, same database; the VEN's client keeps working with the token
    // it holds (same signing secret), and new tokens are issued.
    let stopped_in = vtn.stop();
    assert!(stopped_in < Duration::from_secs(10), "the VTN needed SIGKILL ({stopped_in:?})");
    assert!(ven.get_program_list(Filter::none()).await.is_err(), "the VTN still answers while stopped");
    vtn.start_again();
    let programs = ven.get_program_list(Filter::none()).await.unwrap();
    assert!(programs.iter().any(|p| p.content().program_name == "district-dr"), "the program survived the restart");
    assert_eq!(ven.get_ven_by_name("gw-test").await.unwrap().id(), me.id());
    vtn.fetch_token(vtn.ven()).unwrap();
}
