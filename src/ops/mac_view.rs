//! ADR and MAC commands on `/metrics` and the status page, from the network server's part of the
//! status (`lorawan.mac`: per device data rate, TX power, NbTrans, SNR margin, pending requests, last
//! ADR decision; the engine's counts since start), and the multicast groups (`lorawan.multicast`) on the
//! status page.

use serde_json::Value;

use crate::ops::metrics::ExtraGauge;

/// Per-device gauges and the engine's counters.
pub fn metrics(lorawan: &Value) -> (Vec<ExtraGauge>, Vec<ExtraGauge>) {
    let mut gauges = Vec::new();
    let devices = lorawan.pointer("/mac/devices").and_then(Value::as_object);
    for (device, d) in devices.into_iter().flatten() {
        let mut g = |name: &str, help: &str, v: Option<f64>| {
            if let Some(value) = v {
                let labels = vec![("device".to_string(), device.clone())];
                gauges.push(ExtraGauge { name: name.into(), help: help.into(), labels, value });
            }
        };
        let f = |k: &str| d.get(k).and_then(Value::as_f64);
        g("lorawan_device_data_rate", "data rate (EU868 DR) of the device's last uplink", f("dr"));
        g(
            "lorawan_device_tx_power_index",
            "TXPower index the device accepted (0 = max EIRP, 2 dB steps)",
            f("tx_power"),
        );
        g("lorawan_device_nb_trans", "transmissions per uplink the device accepted (NbTrans)", f("nb_trans"));
        g(
            "lorawan_device_snr_margin_db",
            "best SNR of the last uplinks above what the data rate needs, less the installation margin",
            f("snr_margin_db"),
        );
        let pending = d.get("pending").and_then(Value::as_array).map(|p| p.len() as f64);
        g("lorawan_device_mac_pending", "MAC requests waiting for the device's answer", pending);
    }
    let mut counters = Vec::new();
    let counts = lorawan.pointer("/mac/counts").and_then(Value::as_object);
    for (k, v) in counts.into_iter().flatten() {
        if let Some(value) = v.as_f64() {
            counters.push(ExtraGauge {
                name: "lorawan_mac_total".into(),
                help: "MAC engine since start: requests sent, accepted, refused, dropped unanswered, unexpected \
                       answers, ADR requests, DeviceTimeAns, downlinks forced by ADRACKReq or sticky answers"
                    .into(),
                labels: vec![("kind".into(), k.clone())],
                value,
            });
        }
    }
    (gauges, counters)
}

/// Column headings of the status page's "ADR and MAC commands" table.
pub const COLUMNS: [&str; 7] = ["name", "DR", "TX power", "NbTrans", "SNR margin", "pending", "last ADR decision"];

/// The rows of the "ADR and MAC commands" table as plain text, one per device with a MAC state (the
/// status page escapes and lays them out).
pub fn rows(lorawan: &Value) -> Vec<[String; 7]> {
    let devices = lorawan.pointer("/mac/devices").and_then(Value::as_object);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    devices
        .into_iter()
        .flatten()
        .map(|(name, d)| {
            let text = |k: &str, unit: &str| {
                d.get(k).and_then(Value::as_f64).map(|x| format!("{}{unit}", round(x))).unwrap_or_default()
            };
            let pending: Vec<&str> =
                d.get("pending").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let adr = d.get("last_adr").filter(|v| !v.is_null()).map_or_else(String::new, |a| {
                let n = |k: &str| a.pointer(k).and_then(Value::as_f64).unwrap_or(0.0);
                format!(
                    "margin {} dB, {} steps: DR{} → DR{}, power {} → {}, NbTrans {}",
                    round(n("/margin_db")),
                    n("/steps"),
                    n("/from/dr"),
                    n("/to/dr"),
                    n("/from/tx_power"),
                    n("/to/tx_power"),
                    n("/to/nb_trans")
                )
            });
            [
                name.clone(),
                text("dr", ""),
                text("tx_power", ""),
                text("nb_trans", ""),
                text("snr_margin_db", " dB"),
                pending.join(", "),
                adr,
            ]
        })
        .collect()
}

/// Column headings of the status page's "Multicast groups" table.
pub const MULTICAST_COLUMNS: [&str; 6] = ["group", "address", "DR / frequency", "members", "frames sent", "air time"];

/// The rows of the "Multicast groups" table (`lorawan.multicast`: no keys are in it), one per group.
pub fn multicast_rows(lorawan: &Value) -> Vec<[String; 6]> {
    let groups = lorawan.get("multicast").and_then(Value::as_array);
    groups
        .into_iter()
        .flatten()
        .map(|g| {
            let s = |k: &str| g.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let n = |k: &str| g.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let members: Vec<&str> =
                g.get("members").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let waiting = if g.get("waiting").and_then(Value::as_bool) == Some(true) { " (one waiting)" } else { "" };
            [
                s("name"),
                s("dev_addr"),
                format!("DR{} / {:.3} MHz", n("data_rate"), n("frequency_hz") / 1e6),
                members.join(", "),
                format!("{}{waiting}", n("frames_sent")),
                format!("{:.1} s", n("airtime_ms") / 1000.0),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lorawan() -> Value {
        json!({"mac": {"devices": {"meter-<1>": {"dr": 5, "tx_power": 1, "nb_trans": 1, "snr_margin_db": 2.5,
            "pending": ["link_adr_req"], "last_adr": {"margin_db": 20.0, "steps": 6, "from": {"dr": 0, "tx_power": 0,
            "nb_trans": 1}, "to": {"dr": 5, "tx_power": 1, "nb_trans": 1}}}},
            "counts": {"requests_sent": 3, "dropped": 1}}})
    }

    #[test]
    fn gauges_per_device_and_counters() {
        let (g, c) = metrics(&lorawan());
        let value = |n: &str| g.iter().find(|x| x.name == n).map(|x| x.value);
        assert_eq!(value("lorawan_device_data_rate"), Some(5.0));
        assert_eq!(value("lorawan_device_mac_pending"), Some(1.0));
        assert_eq!(value("lorawan_device_snr_margin_db"), Some(2.5));
        assert_eq!(c.len(), 2);
        assert_eq!(metrics(&Value::Null), (vec![], vec![]));
    }

    #[test]
    fn rows_show_the_state_and_the_decision() {
        let rows = rows(&lorawan());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][..5], ["meter-<1>", "5", "1", "1", "2.5 dB"].map(String::from));
        assert_eq!(rows[0][5], "link_adr_req");
        assert!(rows[0][6].contains("DR0 → DR5"), "{}", rows[0][6]);
        assert!(super::rows(&Value::Null).is_empty());
    }

    #[test]
    fn multicast_rows_show_each_group() {
        let l = json!({"multicast": [{"name": "zone-a", "dev_addr": "260bff01", "data_rate": 3,
            "frequency_hz": 869525000, "members": ["l1", "l2"], "next_f_cnt": 7, "frames_sent": 6,
            "airtime_ms": 864.0, "waiting": true}]});
        let rows = multicast_rows(&l);
        assert_eq!(
            rows,
            vec![["zone-a", "260bff01", "DR3 / 869.525 MHz", "l1, l2", "6 (one waiting)", "0.9 s"].map(String::from)]
        );
        assert!(multicast_rows(&Value::Null).is_empty());
    }
}
