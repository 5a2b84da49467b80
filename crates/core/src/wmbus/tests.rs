use super::*;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn plain_short_header_telegram() {
    // abbb23 case from wmbusmeters' tests (plaintext, mode 0).
    let f = hex("844442040011223320027A3E0000200E840017495200000004FFA0150000000004FFA1150000000004FFA2150000000004FFA3150000000007FFA600000000000000000007FFA700000000000000000007FFA800000000000000000007FFA90000000000000000000DFD8E0007302E38322E31420DFFAA000B3030312D313131203332421F");
    let t = decode_telegram(&f, None).unwrap();
    assert_eq!(t.header.id, "33221100");
    assert_eq!(t.header.manufacturer, "ABB");
    assert_eq!(t.metrics["energy_kwh"], serde_json::json!(5249.17));
}
