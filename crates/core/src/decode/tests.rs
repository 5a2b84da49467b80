//! Decoder tests against the shared device vectors, plus robustness tests.

use super::*;
use serde_json::Value;
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    crate::test_support::vectors_dir().join("devices")
}

/// Vendor field path → our metric path, with the unit factor (ours = vendor × factor).
///
/// Paths are dot-separated (array elements by index); a `*` matches any part of one segment
/// and is substituted, in order, into our path. The first matching row wins. The profile
/// column is a profile name or a prefix ending in `*`. A vendor leaf without a row keeps its
/// path, with each segment lower-cased and `__` (the NAS unit separator) turned into `_`.
const MAPPING: &[(&str, &str, &str, f64)] = &[
    // Milesight (README labels and newer codec labels).
    ("milesight-*", "battery", "battery_pct", 1.0),
    ("milesight-*", "distance", "distance_mm", 1.0),
    ("milesight-*", "temperature", "temperature_c", 1.0),
    ("milesight-*", "humidity", "humidity_pct", 1.0),
    ("milesight-*", "moisture", "soil_moisture_pct", 1.0),
    ("milesight-*", "ec", "soil_conductivity_us_cm", 1.0),
    ("milesight-*", "electricity", "soil_conductivity_us_cm", 1.0),
    ("milesight-*", "history.*.temperature", "history.*.temperature_c", 1.0),
    ("milesight-*", "history.*.humidity", "history.*.humidity_pct", 1.0),
    ("milesight-*", "people_count_all", "people_count", 1.0),
    // Dragino.
    ("dragino-*", "Bat", "battery_v", 1.0),
    ("dragino-ldds75*", "Distance", "distance_mm", 1.0),
    ("dragino-ldds75*", "TempC_DS18B20", "temperature_c", 1.0),
    ("dragino-lse01", "TempC_DS18B20", "ds18b20_temperature_c", 1.0),
    ("dragino-lse01", "water_SOIL", "soil_moisture_pct", 1.0),
    ("dragino-lse01", "temp_SOIL", "temperature_c", 1.0),
    ("dragino-lse01", "conduct_SOIL", "soil_conductivity_us_cm", 1.0),
    // Decentlab (values are `{displayName, unit, value}` objects).
    ("decentlab-*", "battery_voltage.value", "battery_v", 1.0),
    ("decentlab-dl-mbx", "distance.value", "distance_mm", 1.0),
    ("decentlab-dl-lid", "distance_average.value", "distance_mm", 1.0),
    ("decentlab-dl-lid", "distance_*.value", "distance_*_mm", 1.0),
    ("decentlab-dl-lid", "total_acquisition_time.value", "total_acquisition_time_ms", 1.0),
    ("decentlab-dl-smtp", "soil_temperature_at_depth_*.value", "soil_temperature_at_depth_*_c", 1.0),
    ("decentlab-dl-5tm", "volumetric_water_content.value", "soil_moisture_pct", 100.0),
    ("decentlab-dl-5tm", "soil_temperature.value", "temperature_c", 1.0),
    ("decentlab-*", "*.value", "*", 1.0),
    // Browan.
    ("browan-tbms100", "status", "occupancy", 1.0),
    ("browan-tbms100", "battery", "battery_v", 1.0),
    ("browan-tbms100", "temperatureBoard", "temperature_c", 1.0),
    // NAS UL20xx: status/alert/sensor groups are flattened; metering renamed.
    ("nas-*", "status.*", "*", 1.0),
    ("nas-*", "active_alerts.*", "*", 1.0),
    ("nas-*", "sensor_source.light_sensor__lx", "illuminance_lux", 1.0),
    ("nas-*", "sensor_source.*", "*", 1.0),
    ("nas-*", "dimming_source.*.dimming_level__percent", "dimming_source.*.lamp_level_pct", 1.0),
    ("nas-*", "dimming_source.*.status.*", "dimming_source.*.*", 1.0),
    ("nas-*", "drivers.*.status.*", "drivers.*.*", 1.0),
    ("nas-*", "destination.*.dimming_level__percent", "destination.*.lamp_level_pct", 1.0),
    ("nas-*", "consumption.*.active_energy__Wh", "consumption.*.energy_import_wh", 1.0),
    ("nas-*", "consumption.*.active_power__W", "consumption.*.power_w", 1.0),
    ("nas-*", "consumption.*.mains_voltage__V", "consumption.*.voltage_v", 1.0),
    ("nas-*", "power__W", "power_w", 1.0),
    ("nas-*", "voltage__V", "voltage_v", 1.0),
];

/// Vendor labels (strings) → our value, for the profiles whose labels drift between README,
/// yaml and codec: (profile, vendor path, vendor label, our path, our value as JSON).
/// Every vendor string of these profiles must be covered by a row (or by `MAPPING` when it is
/// a number with a unit); `IGNORE` as our path skips descriptive strings.
const IGNORE: &str = "-";
const LABELS: &[(&str, &str, &str, &str, &str)] = &[
    ("milesight-*", "pir", "trigger", "motion", "true"),
    ("milesight-*", "pir", "normal", "motion", "false"),
    ("milesight-*", "pir", "idle", "motion", "false"),
    ("milesight-*", "daylight", "dark", "daylight", r#""dark""#),
    ("milesight-*", "daylight", "dim", "daylight", r#""dark""#),
    ("milesight-*", "light", "dark", "daylight", r#""dark""#),
    ("milesight-*", "position", "tilt", "position", r#""tilt""#),
    ("milesight-*", "tilt", "tilt", "position", r#""tilt""#),
    ("milesight-*", "occupancy", "vacant", "occupancy", "false"),
    ("milesight-*", "occupancy", "occupied", "occupancy", "true"),
    ("milesight-*", "history.*.occupancy", "vacant", "history.*.occupancy", "false"),
    ("milesight-*", "history.*.occupancy", "occupied", "history.*.occupancy", "true"),
    ("milesight-*", "history.*.report_type", "period", "history.*.report_type", r#""period""#),
    ("milesight-*", "history.*.report_type", "pir occupancy", "history.*.report_type", r#""pir_occupancy""#),
    ("milesight-*", "history.*.report_type", "pir trigger", "history.*.report_type", r#""pir_occupancy""#),
    ("milesight-*", "temperature_alarm", "threshold_alarm", "temperature_alarm", r#""threshold_alarm""#),
    ("milesight-*", "temperature_alarm", "threshold alarm", "temperature_alarm", r#""threshold_alarm""#),
    ("milesight-*", "temperature_abnormal", "abnormal", "temperature_alarm", r#""threshold_alarm""#),
    ("milesight-*", "distance_alarm", "threshold_alarm", "distance_alarm", r#""threshold_alarm""#),
    ("milesight-vs121", "sn", "6600b0940976", "sn", r#""6600b0940976""#),
    ("milesight-vs121", "hardware_version", "1.0", "hardware_version", r#""1.0""#),
    ("milesight-vs121", "firmware_version", "31.7.0.75", "firmware_version", r#""31.7.0.75""#),
    ("dragino-ldds75*", "distance", "No Sensor", "distance_status", r#""no_sensor""#),
    ("decentlab-*", "*.displayName", "*", IGNORE, ""),
    ("decentlab-*", "*.unit", "*", IGNORE, ""),
];

/// Profiles whose vendor strings are compared exactly (the NAS codec reproduces its own test
/// expectations deep-equal, so there is no label drift to tolerate).
fn strict_strings(profile: &str) -> bool {
    profile.starts_with("nas-")
}

fn profile_matches(pat: &str, profile: &str) -> bool {
    match pat.strip_suffix('*') {
        Some(prefix) => profile.starts_with(prefix),
        None => pat == profile,
    }
}

/// Matches `path` against `pattern` segment by segment, returning the `*` captures.
fn glob(pattern: &str, path: &str) -> Option<Vec<String>> {
    let ps: Vec<&str> = pattern.split('.').collect();
    let xs: Vec<&str> = path.split('.').collect();
    if ps.len() != xs.len() {
        return None;
    }
    let mut caps = Vec::new();
    for (p, x) in ps.iter().zip(&xs) {
        match p.split_once('*') {
            None if p == x => {}
            None => return None,
            Some((pre, suf)) => {
                if x.len() < pre.len() + suf.len() || !x.starts_with(pre) || !x.ends_with(suf) {
                    return None;
                }
                caps.push(x[pre.len()..x.len() - suf.len()].to_string());
            }
        }
    }
    Some(caps)
}

fn substitute(pattern: &str, caps: &[String]) -> String {
    let mut out = String::new();
    let mut it = caps.iter();
    for c in pattern.chars() {
        if c == '*' {
            out.push_str(it.next().map(String::as_str).unwrap_or("*"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Our path and factor for a vendor path; `mapped` tells whether a table row applied.
fn map_path(profile: &str, vendor: &str) -> (String, f64, bool) {
    for (prof, from, to, factor) in MAPPING {
        if !profile_matches(prof, profile) {
            continue;
        }
        if let Some(caps) = glob(from, vendor) {
            return (substitute(to, &caps), *factor, true);
        }
    }
    let default = vendor.split('.').map(|s| s.to_lowercase().replace("__", "_")).collect::<Vec<_>>().join(".");
    (default, 1.0, false)
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&join(k), x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&join(&i.to_string()), x, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

fn lookup<'a>(metrics: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = metrics;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A number from a vendor value: a JSON number, or a string like "24.1" or "2799 mm".
fn vendor_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            let head = s.split(' ').next().unwrap_or("");
            let rest_is_unit = s[head.len()..].trim().chars().all(|c| c.is_alphabetic());
            head.parse::<f64>().ok().filter(|_| rest_is_unit)
        }
        _ => None,
    }
}

fn our_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 + 1e-9 * a.abs().max(b.abs())
}

/// Compares one stated vendor output (`expected` or `codec_output`) with our decode.
/// Returns the number of numeric/bool/string leaves checked.
fn check_output(profile: &str, ctx: &str, stated: &Value, got: &Result<Decoded, DecodeError>) -> usize {
    let data = stated.get("data");
    let stated_errors = stated.get("errors").and_then(Value::as_array);
    if data.is_none() {
        assert!(stated_errors.is_some_and(|e| !e.is_empty()), "{ctx}: stated output has neither data nor errors");
        assert!(got.is_err(), "{ctx}: expected an error, got {got:?}");
        return 1;
    }
    let d = match got {
        Ok(d) => d,
        Err(e) => panic!("{ctx}: expected data, got error {e}"),
    };
    let ours = Value::Object(d.metrics.clone());
    let mut leaves = Vec::new();
    flatten("", data.unwrap_or(&Value::Null), &mut leaves);
    let mut checked = 0;
    for (path, vendor) in leaves {
        let (our_path, factor, mapped) = map_path(profile, &path);
        let mine = lookup(&ours, &our_path);
        match &vendor {
            Value::Number(_) => {
                let want = vendor_number(&vendor).unwrap_or(f64::NAN) * factor;
                let have = mine.and_then(our_number);
                assert!(
                    have.is_some_and(|h| close(h, want)),
                    "{ctx}: {path} = {vendor} → {our_path}: want {want}, have {mine:?}\n{ours:#}"
                );
                checked += 1;
            }
            Value::Bool(b) => {
                assert_eq!(mine.and_then(Value::as_bool), Some(*b), "{ctx}: {path} → {our_path}\n{ours:#}");
                checked += 1;
            }
            Value::String(s) => {
                if mapped {
                    // Mapped vendor strings are numbers with units ("2799 mm", "24.1");
                    // non-numeric ones ("n/a") mean "no value".
                    if let Some(want) = vendor_number(&vendor) {
                        let want = want * factor;
                        let have = mine.and_then(our_number);
                        assert!(
                            have.is_some_and(|h| close(h, want)),
                            "{ctx}: {path} = {s:?} → {our_path}: want {want}, have {mine:?}"
                        );
                        checked += 1;
                    }
                } else if strict_strings(profile) {
                    assert_eq!(mine.and_then(Value::as_str), Some(s.as_str()), "{ctx}: {path} → {our_path}\n{ours:#}");
                    checked += 1;
                } else {
                    let row = LABELS.iter().find_map(|(prof, from, label, to, value)| {
                        let caps = glob(from, &path)?;
                        let hit = profile_matches(prof, profile) && (*label == "*" || label == s);
                        hit.then(|| (substitute(to, &caps), *to, *value))
                    });
                    let Some((to_path, to, value)) = row else {
                        panic!("{ctx}: vendor label {path} = {s:?} has no LABELS row");
                    };
                    if to != IGNORE {
                        let want: Value = serde_json::from_str(value).unwrap();
                        assert_eq!(lookup(&ours, &to_path), Some(&want), "{ctx}: {path} = {s:?} → {to_path}\n{ours:#}");
                        checked += 1;
                    }
                }
            }
            _ => {}
        }
    }
    if strict_strings(profile) {
        let strs = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        assert_eq!(d.warnings, strs(stated.get("warnings")), "{ctx}: warnings");
        assert_eq!(d.errors, strs(stated.get("errors")), "{ctx}: errors");
    }
    checked
}

fn load_vectors() -> Vec<(String, Value)> {
    let dir = vectors_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("vectors at {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn example_bytes(ex: &Value) -> (u8, Vec<u8>) {
    let port = u8::try_from(ex["fPort"].as_u64().unwrap()).unwrap();
    let bytes = hex::decode(ex["bytes_hex"].as_str().unwrap()).unwrap();
    (port, bytes)
}

#[test]
fn every_vector_example_decodes_to_the_stated_numbers() {
    let files = load_vectors();
    assert_eq!(files.len(), 17, "vector files");
    let mut examples = 0;
    let mut outputs = 0;
    let mut leaves = 0;
    for (file, v) in &files {
        let profile = v["device"].as_str().unwrap();
        let mut dec = native(profile).unwrap_or_else(|| panic!("{file}: no decoder for {profile}"));
        assert_eq!(dec.profile(), profile);
        for (i, ex) in v["examples"].as_array().unwrap().iter().enumerate() {
            let (port, bytes) = example_bytes(ex);
            let got = dec.decode(port, &bytes);
            examples += 1;
            for key in ["expected", "codec_output"] {
                if let Some(stated) = ex.get(key) {
                    let ctx = format!("{file} #{i} {key} ({})", ex["description"]);
                    let n = check_output(profile, &ctx, stated, &got);
                    println!("{ctx}: {n} values checked");
                    leaves += n;
                    outputs += 1;
                }
            }
        }
    }
    assert_eq!(examples, 49, "examples");
    assert!(outputs >= 49);
    assert!(leaves > 400, "only {leaves} values checked");
}

#[test]
fn every_device_file_has_a_native_profile() {
    for (file, v) in load_vectors() {
        let profile = v["device"].as_str().unwrap();
        assert!(NATIVE_PROFILES.contains(&profile), "{file}: {profile}");
    }
    for p in NATIVE_PROFILES {
        assert_eq!(native(p).unwrap().profile(), *p);
    }
    assert!(native("js:/etc/codec.js").is_none());
    assert!(native("nope").is_none());
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

#[test]
fn random_payloads_never_panic() {
    let ports = [0u8, 1, 2, 5, 10, 23, 26, 49, 50, 51, 60, 61, 85, 99, 102, 255];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for profile in NATIVE_PROFILES {
        let mut dec = native(profile).unwrap();
        for len in 0..64usize {
            for round in 0..120 {
                let port = if round % 4 == 3 { rng.byte() } else { ports[usize::from(rng.byte()) % ports.len()] };
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                // Bias some payloads towards valid framing so deeper code paths run.
                if let Some(first) = bytes.first_mut() {
                    match round % 5 {
                        0 if profile.starts_with("decentlab") => *first = 2,
                        1 if profile.starts_with("nas") => *first &= 0x01,
                        2 if profile.starts_with("milesight") => *first = 0x01,
                        _ => {}
                    }
                }
                let _ = dec.decode(port, &bytes);
            }
        }
    }
}

#[test]
fn truncated_and_mutated_vectors_never_panic() {
    let mut rng = Rng(42);
    for (_, v) in load_vectors() {
        let mut dec = native(v["device"].as_str().unwrap()).unwrap();
        for ex in v["examples"].as_array().unwrap() {
            let (port, bytes) = example_bytes(ex);
            for cut in 0..=bytes.len() {
                let _ = dec.decode(port, &bytes[..cut]);
            }
            for _ in 0..200 {
                let mut b = bytes.clone();
                if !b.is_empty() {
                    let i = usize::from(rng.byte()) % b.len();
                    b[i] = rng.byte();
                }
                let _ = dec.decode(port, &b);
            }
        }
    }
}

fn dec(profile: &str, port: u8, hex_payload: &str) -> Result<Decoded, DecodeError> {
    native(profile).unwrap().decode(port, &hex::decode(hex_payload).unwrap())
}

#[test]
fn product_example_reading() {
    // PRODUCT.md's example reading: EM310-UDL 01755c03824408040001 → distance_mm 2116, battery_pct 92.
    let d = dec("milesight-em310-udl", 85, "01755c03824408040001").unwrap();
    assert_eq!(d.metrics["distance_mm"], 2116);
    assert_eq!(d.metrics["battery_pct"], 92);
    assert_eq!(d.metrics["position"], "tilt");
}

#[test]
fn lamp_generic() {
    let d = dec("lamp-generic", 10, "4b").unwrap();
    assert_eq!(d.metrics["lamp_level_pct"], 75);
    assert_eq!(dec("lamp-generic", 10, "00").unwrap().metrics["lamp_level_pct"], 0);
    assert_eq!(dec("lamp-generic", 10, "64").unwrap().metrics["lamp_level_pct"], 100);
    assert!(matches!(dec("lamp-generic", 10, "65"), Err(DecodeError::Invalid(_))));
    assert!(matches!(dec("lamp-generic", 10, ""), Err(DecodeError::TooShort { need: 1, got: 0 })));
    assert!(matches!(dec("lamp-generic", 10, "3232"), Err(DecodeError::Invalid(_))));
    assert_eq!(dec("lamp-generic", 11, "32"), Err(DecodeError::UnsupportedPort(11)));
}

#[test]
fn raw_has_no_metrics() {
    let d = dec("raw", 7, "deadbeef").unwrap();
    assert!(d.metrics.is_empty() && d.warnings.is_empty() && d.errors.is_empty());
    assert!(dec("raw", 0, "").unwrap().metrics.is_empty());
}

#[test]
fn lamp_level_commands() {
    assert_eq!(encode_lamp_level("lamp-generic", 40), Some((10, vec![40])));
    assert_eq!(encode_lamp_level("lamp-generic", 101), None);
    assert_eq!(encode_lamp_level("nas-ul20xx-lcu-fw1.1", 100), Some((60, vec![0x01, 0xfe, 100])));
    assert_eq!(encode_lamp_level("nas-ul20xx-lcu-fw1.1", 255), None);
    assert_eq!(encode_lamp_level("milesight-ws202", 50), None);
    // The NAS command, fed back as the LCU's response, decodes to the same level.
    let (port, bytes) = encode_lamp_level("nas-ul20xx-lcu-fw1.1", 35).unwrap();
    let d = native("nas-ul20xx-lcu-fw1.1").unwrap().decode(port, &bytes).unwrap();
    assert_eq!(d.metrics["lamp_level_pct"], 35);
}

#[test]
fn errors_are_errors() {
    assert_eq!(
        dec("milesight-em310-udl", 85, "01755c0999"),
        Err(DecodeError::UnknownChannel { channel: 0x09, kind: 0x99 })
    );
    assert!(matches!(dec("milesight-em310-udl", 85, "0382"), Err(DecodeError::TooShort { .. })));
    assert_eq!(dec("milesight-ws202", 1, "030001"), Err(DecodeError::UnsupportedPort(1)));
    assert!(matches!(dec("decentlab-dl-mbx", 1, "03012f00020bb1"), Err(DecodeError::Invalid(_))));
    assert!(matches!(dec("decentlab-dl-mbx", 1, "02012f000304d2"), Err(DecodeError::TooShort { .. })));
    assert!(matches!(dec("decentlab-dl-mbx", 1, "02012f00040bb1"), Err(DecodeError::Invalid(_))));
    assert!(matches!(dec("dragino-lse01", 2, "ce2900f107a5"), Err(DecodeError::TooShort { need: 8, got: 6 })));
    assert!(matches!(dec("browan-tbms100", 102, "01bb3404"), Err(DecodeError::TooShort { .. })));
    assert!(matches!(dec("nas-ul20xx-lcu-fw1.1", 23, ""), Err(DecodeError::TooShort { .. })));
    assert!(matches!(dec("nas-ul20xx-lcu-fw1.1", 23, "02f37f205e"), Err(DecodeError::Invalid(_))));
    assert!(matches!(dec("nas-ul20xx-lcu-fw1.1", 60, "77"), Err(DecodeError::Invalid(_))));
    assert!(matches!(dec("nas-ul20xx-lcu-fw1.1", 23, "01f37f205e82"), Err(DecodeError::TooShort { .. })));
    assert_eq!(dec("nas-ul20xx-lcu-fw1.1", 42, "00"), Err(DecodeError::UnsupportedPort(42)));
}

#[test]
fn ldds75_distance_states() {
    let p = "dragino-ldds75";
    let d = dec(p, 2, "0d3b0aef00000001").unwrap();
    assert_eq!(d.metrics["distance_mm"], 2799);
    assert_eq!(d.metrics["battery_v"], 3.387);
    let d = dec(p, 2, "0d3b0aef00").unwrap();
    assert_eq!(d.metrics["distance_mm"], 2799);
    let d = dec(p, 2, "0d3b000000").unwrap();
    assert_eq!(d.metrics["distance_status"], "no_sensor");
    assert!(!d.metrics.contains_key("distance_mm"));
    let d = dec(p, 2, "0d3b000f00").unwrap();
    assert_eq!(d.metrics["distance_status"], "invalid_reading");
    // The vector's 4-byte frame: the vendor codec calls it "No Sensor".
    let d = dec(p, 2, "0e1c0b05").unwrap();
    assert_eq!(d.metrics["distance_status"], "no_sensor");
    assert!(!d.metrics.contains_key("distance_mm"));
}

#[test]
fn presence_metrics_are_bools() {
    let d = dec("milesight-ws202", 85, "017510030001040000").unwrap();
    assert_eq!(d.metrics["motion"], true);
    assert_eq!(d.metrics["daylight"], "dark");
    assert_eq!(d.metrics["battery_pct"], 16);
    let d = dec("milesight-ws203", 85, "01756403673401046865050000").unwrap();
    assert_eq!(d.metrics["occupancy"], false);
    let d = dec("browan-tbms100", 102, "01bb340400dc7801").unwrap();
    assert_eq!(d.metrics["occupancy"], true);
    let d = dec("milesight-vs121", 85, "04c9030800a106cd05").unwrap();
    assert_eq!(d.metrics["people_count"], 3);
    assert_eq!(d.metrics["occupancy"], true);
    let d = dec("browan-tbms100", 102, "0000000000000000").unwrap();
    assert!(d.metrics.is_empty() && !d.warnings.is_empty());
}

#[test]
fn nas_top_level_metrics() {
    let p = "nas-ul20xx-lcu-fw1.1";
    let d = dec(p, 23, "01f37f205e8244320916200701d20294550401fe50190012501900").unwrap();
    assert_eq!(d.metrics["lamp_level_pct"], 25);
    assert_eq!(d.metrics["illuminance_lux"], 299.9);
    assert_eq!(d.metrics["device_unix_epoch"], "2020-01-16T15:23:31.000Z");
    let d = dec(p, 26, "00ff80d0ef2f0112ff479403002a00f94a030027005de5c072d902d0ef2f01").unwrap();
    assert_eq!(d.metrics["energy_import_wh"], 234567);
    assert_eq!(d.metrics["power_w"], 42);
    assert_eq!(d.metrics["voltage_v"], 229);
    assert_eq!(d.metrics["power_factor"], 0.93);
    assert_eq!(d.metrics["lamp_on_time_h"], 5533.0);
    let d = dec(p, 61, "84025900e50056").unwrap();
    assert_eq!(d.metrics["power_w"], 89);
    assert_eq!(d.metrics["voltage_v"], 229);
    // Relay off: the level is "n/a", so no lamp_level_pct.
    let d = dec(p, 23, "00f6e5853800340718000ef5ffff").unwrap();
    assert!(!d.metrics.contains_key("lamp_level_pct"));
    // Trailing bytes are reported, not fatal; a pair cut short is.
    let d = dec(p, 61, "81200079ff").unwrap();
    assert_eq!(d.errors, ["invalid_payload_length_long"]);
    assert_eq!(d.metrics["ldr_input_value"], 121);
    assert!(matches!(dec(p, 60, "01fe6400"), Err(DecodeError::TooShort { .. })));
}

#[test]
fn rfc3339() {
    assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_from_unix(1_579_188_211), "2020-01-16T15:23:31.000Z");
    assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_from_unix(u32::MAX), "2106-02-07T06:28:15.000Z");
}
