//! Params: the product example, parsing from JSON, and validation with key paths.

use super::*;

#[test]
fn params_default_is_the_product_example_and_parses_from_json() {
    let p = DemandParams::default();
    assert_eq!(p.meter, "feeder-meter");
    assert_eq!(p.limit_kw, 250.0);
    assert_eq!(p.load[0].name, "hp-12");
    assert!(p.validate().is_empty());
    let json = r#"{"meter":"feeder-meter","limit_kw":250.0,"load":[
        {"name":"hp-12","kind":"sg-ready","rated_kw":6.0,"priority":1,
         "output":{"type":"gpio","pins":[17,27]},"allow_forced":true},
        {"name":"wb-1","kind":"setpoint","rated_kw":11.0,"priority":2,"min_kw":4.2,
         "output":{"type":"lorawan","device":"wb-1-ctl"}},
        {"name":"pump","kind":"switch","rated_kw":2.0,"priority":3,"output":{"type":"mqtt","topic":"pump/set"}}]}"#;
    let p: DemandParams = serde_json::from_str(json).expect("parses");
    assert!(p.validate().is_empty(), "{:?}", p.validate());
    let d = Demand::from_params(&p).expect("valid");
    assert_eq!(d.load_output("hp-12"), Some(&OutputSpec::Gpio { pins: vec![17, 27], active_low: false }));
    assert_eq!(d.load_output("wb-1"), Some(&OutputSpec::Lorawan { device: "wb-1-ctl".into(), f_port: 20 }));
    assert!(serde_json::from_str::<DemandParams>(r#"{"meter":"m","limit_kw":1,"bogus":1}"#).is_err());
    assert!(serde_json::from_str::<DemandParams>(
        r#"{"meter":"m","limit_kw":1,"load":[{"name":"a","kind":"x","rated_kw":1,"priority":1}]}"#
    )
    .is_err());
    assert_eq!(LoadState::SgReady(1).sg_ready_relays(), Some([true, false]));
    assert_eq!(LoadState::SgReady(4).sg_ready_relays(), Some([true, true]));
}

#[test]
fn params_validation_lists_every_problem_with_key_paths() {
    let mut p = DemandParams::new("bad meter", f64::NAN, vec![]);
    p.restore_delay_min_s = 200;
    p.report_window_s = 7;
    let mut wb = LoadParams::new("wb-1", LoadKind::Setpoint, 11.0, 1);
    wb.min_kw = Some(3.7);
    let mut hp = LoadParams::new("wb-1", LoadKind::SgReady, 6.0, 1);
    hp.min_kw = Some(5.0);
    hp.output = Some(OutputSpec::Gpio { pins: vec![17], active_low: false });
    hp.min_off_s = Some(9000);
    let tiny = LoadParams::new("tiny", LoadKind::Setpoint, 3.0, 1);
    let mut sw = LoadParams::new("sw", LoadKind::Switch, 1.0, 1);
    sw.output = Some(OutputSpec::Mqtt { topic: "a/#".into() });
    p.load = vec![wb, hp, tiny, sw];
    let keys: Vec<String> = p.validate().into_iter().map(|pr| pr.key).collect();
    for k in [
        "demand_response.meter",
        "demand_response.limit_kw",
        "demand_response.restore_delay_min_s",
        "demand_response.report_window_s",
        "demand_response.load[0].min_kw",
        "demand_response.load[1].name",
        "demand_response.load[1].min_kw",
        "demand_response.load[1].output.pins",
        "demand_response.load[1].min_off_s",
        "demand_response.load[2].rated_kw",
        "demand_response.load[3].output.topic",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
    let err = Demand::from_params(&p).expect_err("invalid");
    assert!(err.to_string().contains("demand_response.load[0].min_kw: must be at least 4.2 kW"), "{err}");
}
