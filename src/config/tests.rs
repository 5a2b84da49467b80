use std::path::{Path, PathBuf};

use super::*;

/// `tests/data/config`, found relative to this source file (works from any crate that includes it).
fn data_dir() -> PathBuf {
    Path::new(file!()).parent().unwrap().join("../../tests/data/config")
}

/// The directory of the example config (`config/`), for resolving its relative paths.
fn example_dir() -> PathBuf {
    Path::new(file!()).parent().unwrap().join("../../config")
}

fn problems(file: &str) -> Vec<ConfigProblem> {
    let dir = data_dir();
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    parse_str(&text, file, &dir).unwrap_err().0
}

/// Finds the problem at `key_path`, failing with the full list if there is none.
fn find<'p>(ps: &'p [ConfigProblem], key_path: &str) -> &'p ConfigProblem {
    ps.iter()
        .find(|p| p.key_path == key_path)
        .unwrap_or_else(|| panic!("no problem at {key_path}; got:\n{}", ConfigErrors(ps.to_vec())))
}

#[test]
fn example_is_valid() {
    let c =
        parse_str(example(), "gateway.toml", &example_dir()).unwrap_or_else(|e| panic!("example config invalid:\n{e}"));
    assert_eq!(c.gateway.id, "garstedt-01");
    assert_eq!(c.gateway.latitude, Some(53.7065));
    assert_eq!(c.mqtt.url.to_string(), "mqtts://broker.city.example:8883");
    assert_eq!(c.mqtt.client_id, "district-gateway-garstedt-01");
    assert_eq!(c.source.len(), 2);
    assert_eq!(c.source[1].name(), "feeder-meter-head");
    assert_eq!(c.device.len(), 6);
    let otaa = c.device.iter().filter(|d| matches!(d.activation(), Ok(Activation::Otaa { .. })));
    assert_eq!(otaa.count(), 1);
    assert!(c.device.iter().all(|d| d.activation().is_ok()));
    assert_eq!(c.lighting.zone[0].sensors[0].lamp, "lamp-02");
    let dr = c.demand_response.as_ref().unwrap();
    assert_eq!(dr.load[0].kind, LoadKind::SgReady);
    assert_eq!(c.ops.key.len(), 1);
    // The serde schema alone agrees with the validating loader.
    let mut plain: Config = toml::from_str(example()).unwrap();
    plain.base_dir = c.base_dir.clone();
    plain.mqtt.client_id = c.mqtt.client_id.clone();
    assert_eq!(plain, c);
}

#[test]
fn defaults_apply() {
    let c = parse_str(
        "[gateway]\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://10.0.0.1\"\n[[source]]\ntype = \"gwmp\"\n",
        "t.toml",
        Path::new(""),
    )
    .unwrap();
    assert_eq!(c.gateway.data_dir, Path::new("/var/lib/district-gateway"));
    assert_eq!(c.gateway.log_level, "info");
    assert_eq!(c.mqtt.url.port, 1883);
    assert_eq!(c.mqtt.topic_prefix, "city");
    assert_eq!(c.mqtt.keep_alive_s, 30);
    assert_eq!((c.mqtt.reconnect_min_ms, c.mqtt.reconnect_max_ms), (500, 30_000));
    assert!(c.publish.readings && c.publish.aggregates);
    assert_eq!(c.aggregate.window_s, 300);
    assert_eq!(c.buffer, BufferConfig::default());
    assert_eq!(c.buffer.max_bytes, 268_435_456);
    assert_eq!(c.buffer.policy, BufferPolicy::DropOldest);
    assert_eq!(c.ops.http_bind.to_string(), "127.0.0.1:9107");
    assert_eq!(c.ops.rollback_after_s, 60);
    assert_eq!(c.source[0].name(), "gwmp-0");
    match &c.source[0] {
        SourceConfig::Gwmp(g) => assert_eq!(g.bind.to_string(), "127.0.0.1:1700"),
        other => panic!("{other:?}"),
    }
    assert!(c.demand_response.is_none());
}

#[test]
fn every_mistake_is_reported_with_its_position() {
    let ps = problems("many-mistakes.toml");
    let at = |path: &str| {
        let p = find(&ps, path);
        (p.line, p.col)
    };
    assert_eq!(at("devices_file"), (2, 16));
    assert!(find(&ps, "devices_file").message.contains("no-such-devices.toml"));
    assert_eq!(at("gateway.id"), (5, 6));
    assert_eq!(at("gateway.colour"), (6, 1));
    assert!(find(&ps, "gateway.colour").message.starts_with("unknown key"));
    assert_eq!(at("mqtt.keepalive"), (10, 1));
    assert!(find(&ps, "mqtt.keepalive").message.contains("`keep_alive_s`"));
    assert_eq!(at("buffer.flush_interval_ms"), (13, 21));
    assert_eq!(at("buffer.policy"), (14, 10));
    assert!(find(&ps, "buffer.policy").message.contains("drop-oldest"));
    assert_eq!(at("source[0].bind"), (18, 8));
    assert_eq!(at("device[0].app_s_key"), (24, 13));
    assert_eq!(find(&ps, "device[0].app_s_key").message, "expected 32 hex digits, got 28");
    assert_eq!(at("device[1].name"), (27, 8));
    assert!(find(&ps, "device[1].name").message.contains("duplicate"));
    assert_eq!(at("device[1].app_eui"), (29, 1));
    // The OTAA set lacks join_eui: reported at the device's table header.
    assert_eq!(at("device[1].join_eui"), (26, 1));
    assert_eq!(ps.len(), 11, "{}", ConfigErrors(ps.clone()));
    // Display: FILE:LINE:COL: key.path: problem, sorted by position.
    let text = ConfigErrors(ps.clone()).to_string();
    assert!(text.contains("many-mistakes.toml:24:13: device[0].app_s_key: expected 32 hex digits, got 28"));
    let lines: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn devices_file_problems_name_that_file() {
    let ps = problems("with-devices-file.toml");
    let file_of = |path: &str| find(&ps, path).file.clone();
    assert!(ps.iter().all(|p| p.file.ends_with("devices-bad.toml")), "{}", ConfigErrors(ps.clone()));
    assert!(file_of("device[1].dev_addr").ends_with("devices-bad.toml"));
    let p = find(&ps, "device[1].dev_addr");
    assert_eq!((p.line, p.col, p.message.as_str()), (10, 12, "expected 8 hex digits, got 4"));
    let dup = find(&ps, "device[1].name");
    assert_eq!((dup.line, dup.col), (9, 8));
    assert!(dup.message.contains("with-devices-file.toml"), "{}", dup.message);
    assert_eq!((find(&ps, "device[1].colour").line), 13);
    assert_eq!((find(&ps, "gateway").line), 15);
    assert_eq!(ps.len(), 4, "{}", ConfigErrors(ps.clone()));
}

#[test]
fn devices_file_devices_are_merged() {
    let dir = std::env::temp_dir().join(format!("district-gateway-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("devices.toml"),
        "[[device]]\nname = \"tree-001\"\ndev_eui = \"0004a30b001c0530\"\njoin_eui = \"70b3d57ed0000001\"\napp_key = \"8a4c6b2f9d1e3a5b7c9d0e1f2a3b4c5d\"\n",
    )
    .unwrap();
    let text = "devices_file = \"devices.toml\"\n[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n[[device]]\nname = \"lamp-01\"\ndev_addr = \"260b4f21\"\nnwk_s_key = \"0c7acd75978cc5b38146abc50dc53c11\"\napp_s_key = \"30ec2c6060735ad1252e01d248b8c475\"\n";
    let c = parse_str(text, "t.toml", &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let c = c.unwrap();
    assert_eq!(c.device.len(), 2);
    assert!(!c.device[0].from_devices_file);
    assert!(c.device[1].from_devices_file);
    assert!(matches!(c.device[1].activation(), Ok(Activation::Otaa { .. })));
}

#[test]
fn syntax_errors_have_positions() {
    let ps = problems("syntax-error.toml");
    assert!(!ps.is_empty());
    assert_eq!(ps[0].line, 4, "{}", ConfigErrors(ps.clone()));
    assert!(ps[0].message.starts_with("TOML syntax error"));
    assert!(ps[0].key_path.is_empty());
}

#[test]
fn missing_sections_and_keys() {
    let ps = parse_str("[gateway]\ndata_dir = \"/tmp\"\n", "t.toml", Path::new("")).unwrap_err().0;
    let id = find(&ps, "gateway.id");
    assert_eq!((id.line, id.col), (1, 1));
    assert!(id.message.contains("missing"));
    assert_eq!(find(&ps, "mqtt").line, 1);
    let ps = parse_str(
        "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"tcp://h\"\n[[source]]\ntype = \"lora\"\n[[source]]\nbind = \"127.0.0.1:1\"\n",
        "t.toml",
        Path::new(""),
    )
    .unwrap_err()
    .0;
    assert!(find(&ps, "mqtt.url").message.contains("mqtt://"));
    assert!(find(&ps, "source[0].type").message.contains("gwmp, sml"));
    assert!(find(&ps, "source[1].type").message.contains("missing"));
}

#[test]
fn duplicates_and_references() {
    let text = r#"
[gateway]
id = "g"
[mqtt]
url = "mqtt://h"
[[source]]
type = "gwmp"
name = "a"
[[source]]
type = "gwmp"
name = "a"
bind = "127.0.0.1:1700"
[[device]]
name = "d1"
dev_addr = "26011bda"
nwk_s_key = "000102030405060708090a0b0c0d0e0f"
app_s_key = "0f0e0d0c0b0a09080706050403020100"
[[device]]
name = "d2"
dev_addr = "26011bda"
nwk_s_key = "000102030405060708090a0b0c0d0e0f"
app_s_key = "000102030405060708090a0b0c0d0e0f"
[[lighting.zone]]
name = "z"
time_zone = "Europe/Berlin"
lamps = ["d1", "nope"]
sensors = [{ device = "d2", lamp = "d2" }]
base_level_pct = 120
[demand_response]
meter = "missing-meter"
limit_kw = -1.0
"#;
    let ps = parse_str(text, "t.toml", Path::new("")).unwrap_err().0;
    assert!(find(&ps, "source[1].name").message.contains("duplicate"));
    assert!(find(&ps, "source[1].bind").message.contains("source[0]"));
    let same = find(&ps, "device[1].nwk_s_key");
    assert!(same.message.contains("device[0]"), "{}", same.message);
    assert!(find(&ps, "lighting.zone[0].lamps[1]").message.contains("nope"));
    assert!(find(&ps, "lighting.zone[0].sensors[0].lamp").message.contains("not one of"));
    assert!(find(&ps, "lighting.zone[0].base_level_pct").message.contains("0..=100"));
    assert!(find(&ps, "demand_response.meter").message.contains("missing-meter"));
    find(&ps, "demand_response.limit_kw");
    assert_eq!(ps.len(), 8, "{}", ConfigErrors(ps.clone()));
}

#[test]
fn keys_never_leak() {
    const SECRET: &str = "c0ffee";
    let text = r#"
[gateway]
id = "g"
[mqtt]
url = "mqtt://user:c0ffee@h"
[[device]]
name = "a"
dev_addr = "26011bda"
nwk_s_key = "c0ffeec0ffeec0ffeec0ffeec0ffee"
app_s_key = "c0ffeec0ffeec0ffeec0ffeec0ffeezz"
app_s_kee = "c0ffeec0ffeec0ffeec0ffeec0ffee00"
[[device]]
name = "b"
dev_eui = 123456
join_eui = "c0ffee"
app_key = ["c0ffeec0ffeec0ffeec0ffeec0ffee00"]
relax_fcnt = "c0ffeec0ffeec0ffeec0ffeec0ffee00"
"#;
    let errs = parse_str(text, "t.toml", Path::new("")).unwrap_err();
    let shown = format!("{errs}\n{errs:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("123456"), "{shown}");
    assert!(errs.0.len() >= 7, "{errs}");

    let good = example().replace("e61ab9302caf112c1e5e847197d2736a", "c0ffeec0ffeec0ffeec0ffeec0ffee00");
    let c = parse_str(&good, "gateway.toml", &example_dir()).unwrap();
    let debug = format!("{c:?} {:?}", c.device[0].activation());
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!debug.contains("e61ab93"));
    let redacted = c.redacted_toml();
    assert!(!redacted.contains(SECRET), "{redacted}");
    for hexkey in ["c32a075c4a86ccef", "5f09f6e4548d53d4"] {
        assert!(!redacted.contains(hexkey), "{redacted}");
    }
    assert!(redacted.contains("nwk_s_key = \"<redacted>\""), "{redacted}");
    assert!(redacted.contains("app_key = \"<redacted>\""), "{redacted}");
    assert!(redacted.contains("garstedt-01"));
    let back: toml::Table = toml::from_str(&redacted).unwrap();
    assert!(back.contains_key("device"));
    // In the schema's order, [gateway] first.
    assert!(redacted.starts_with("[gateway]"), "{redacted}");
    // The sorted fallback redacts as well.
    let mut t = toml::Table::try_from(&c).unwrap();
    redact(&mut t);
    assert!(is_redacted(&t));
    assert!(!toml::to_string(&t).unwrap().contains(SECRET));
}

#[test]
fn load_reads_files_and_names_them() {
    let path = data_dir().join("many-mistakes.toml");
    let errs = load(&path).unwrap_err();
    assert!(errs.0.iter().all(|p| p.file == path.display().to_string()));
    let missing = load(&data_dir().join("nope.toml")).unwrap_err();
    assert_eq!(missing.0.len(), 1);
    assert!(missing.to_string().contains("nope.toml: cannot read the config file"));
    let example_path = example_dir().join("gateway.toml");
    let c = load(&example_path).unwrap();
    assert_eq!(c.base_dir, example_dir());
}

#[test]
fn referenced_files_must_exist() {
    let text = r#"
[gateway]
id = "g"
[mqtt]
url = "mqtts://h"
username = "u"
password_file = "no-such-password"
ca_file = "many-mistakes.toml"
cert_file = "no-such.crt"
[[device]]
name = "a"
profile = "js:codecs/none.js"
dev_eui = "0004a30b001c0530"
join_eui = "70b3d57ed0000001"
app_key = "8a4c6b2f9d1e3a5b7c9d0e1f2a3b4c5d"
"#;
    let ps = parse_str(text, "t.toml", &data_dir()).unwrap_err().0;
    find(&ps, "mqtt.password_file");
    find(&ps, "mqtt.cert_file");
    assert!(find(&ps, "mqtt.key_file").message.contains("cert_file"));
    find(&ps, "device[0].profile");
    assert_eq!(ps.len(), 4, "{}", ConfigErrors(ps.clone()));
}

#[test]
fn odd_shapes_are_problems_not_panics() {
    let head = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n";
    for body in [
        "device = 5\n",
        "[device]\nname = \"x\"\n",
        "source = [1, \"x\"]\n",
        "[[source]]\ntype = 5\n",
        "[ops]\nkey = 5\n",
        "[[ops.key]]\nid = \"k\"\ned25519_public = \"AAAA\"\n",
        "lighting = 3\n",
        "[lighting]\nzone = [5]\n",
        "[[lighting.zone]]\nname = \"z\"\ntime_zone = \"UTC\"\nlamps = [1]\nsensors = 5\n",
        "[[lighting.zone]]\nname = \"z\"\ntime_zone = \"UTC\"\nlamps = []\nsensors = [{ device = \"x\" }, 7]\n",
        "[demand_response]\nload = [{ name = \"l\", kind = \"nuclear\" }]\n",
        "[[device]]\n[[device]]\nname = 5\n",
        "[[device]]\nname = \"a\"\ndev_addr = \"26011bda\"\ndev_eui = \"0004a30b001c0530\"\n",
        "[aggregate]\nwindow_s = 7\n[buffer]\nmax_bytes = -1\nmax_age_s = 0\n",
        "devices_file = 5\n",
        "devices_file = \"\"\n",
        "[gateway.sub]\nx = 1\n",
        "a.b.c = 1\n",
    ] {
        // Top-level keys must come before the first table.
        let text = format!("{body}{head}");
        let errs = parse_str(&text, "t.toml", Path::new("")).expect_err(body);
        assert!(!errs.0.is_empty(), "{body}");
        assert!(errs.0.iter().all(|p| p.line >= 1 && p.col >= 1), "{body}: {errs}");
    }
    for text in ["", "[gateway]", "gateway = 5\nmqtt = []", "[[gateway]]\n[[mqtt]]"] {
        assert!(parse_str(text, "t.toml", Path::new("")).is_err());
    }
}

#[test]
fn power_fail_input() {
    let head = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n";
    let parse = |body: &str| parse_str(&format!("{head}{body}"), "t.toml", Path::new(""));
    assert_eq!(parse("").unwrap().power_fail, None, "absent: no power-fail input");
    let defaults = parse("[power_fail]\npin = 6\n").unwrap();
    assert_eq!(
        defaults.power_fail,
        Some(PowerFailConfig { pin: 6, active_low: false, pull: InputPull::None, debounce_ms: 20 })
    );
    let all = parse("[power_fail]\npin = 26\nactive_low = true\npull = \"up\"\ndebounce_ms = 0\n").unwrap();
    assert_eq!(
        all.power_fail,
        Some(PowerFailConfig { pin: 26, active_low: true, pull: InputPull::Up, debounce_ms: 0 })
    );
    // The effective config shows it and reads back the same.
    let shown: Config = toml::from_str(&all.redacted_toml()).unwrap();
    assert_eq!(shown.power_fail, all.power_fail);

    // Problems, at their positions (line 5 is `[power_fail]`).
    let ps = parse("[power_fail]\npin = 54\ndebounce_ms = 6000\n").unwrap_err().0;
    let pin = find(&ps, "power_fail.pin");
    assert_eq!((pin.line, pin.col, pin.message.as_str()), (6, 7, "expected a BCM pin 0..=53, got 54"));
    let deb = find(&ps, "power_fail.debounce_ms");
    assert_eq!((deb.line, deb.col), (7, 15));
    assert!(deb.message.contains("0..=5000 ms"), "{}", deb.message);
    assert_eq!(ps.len(), 2, "{}", ConfigErrors(ps.clone()));
    for (body, key, says) in [
        ("[power_fail]\nactive_low = true\n", "power_fail.pin", "missing"),
        ("[power_fail]\npin = -1\n", "power_fail.pin", ""),
        ("[power_fail]\npin = \"GPIO6\"\n", "power_fail.pin", ""),
        ("[power_fail]\npin = 6\npull = \"sideways\"\n", "power_fail.pull", "up"),
        ("[power_fail]\npin = 6\nactive = \"low\"\n", "power_fail.active", "unknown"),
        ("[power_fail]\npin = 6\nactive_low = \"yes\"\n", "power_fail.active_low", ""),
    ] {
        let ps = parse(body).expect_err(body).0;
        let p = find(&ps, key);
        assert!(p.line >= 5 && p.message.contains(says), "{body}: {}", ConfigErrors(ps.clone()));
    }

    // A pin the config already uses for something else.
    let relays = "[[source]]\ntype = \"sml\"\nport = \"/dev/ttyUSB0\"\ndevice = \"feeder\"\n\
                  [demand_response]\nmeter = \"feeder\"\nlimit_kw = 100.0\n\
                  [[demand_response.load]]\nname = \"hp-1\"\nkind = \"sg-ready\"\nrated_kw = 6.0\npriority = 1\n\
                  output = { type = \"gpio\", pins = [17, 27] }\n";
    assert!(parse(&format!("{relays}[power_fail]\npin = 6\n")).is_ok());
    let ps = parse(&format!("{relays}[power_fail]\npin = 27\n")).unwrap_err().0;
    let clash = find(&ps, "power_fail.pin");
    assert!(
        clash.message.contains("pin 27 is already used by demand_response.load[0].output.pins[1]"),
        "{}",
        clash.message
    );
    assert!(clash.message.contains("hp-1"), "{}", clash.message);
    assert_eq!(ps.len(), 1, "{}", ConfigErrors(ps.clone()));
    let radio = "[[source]]\ntype = \"gwmp\"\n[[source]]\ntype = \"sx127x\"\n"; // reset_pin 17, dio0_pin 4
    for (pin, user) in [(4, "source[1].dio0_pin"), (17, "source[1].reset_pin")] {
        let ps = parse(&format!("{radio}[power_fail]\npin = {pin}\n")).unwrap_err().0;
        let clash = find(&ps, "power_fail.pin");
        assert_eq!(clash.message, format!("pin {pin} is already used by {user}"));
    }
    assert!(parse(&format!("{radio}[power_fail]\npin = 6\n")).is_ok());
}

#[test]
fn adr_and_mac_sections() {
    let head = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n";
    let parse = |body: &str| parse_str(&format!("{head}{body}"), "t.toml", Path::new(""));
    let d = parse("").unwrap();
    assert_eq!(d.lorawan.adr, mac::AdrSection { enabled: true, margin_db: 10.0, min_dr: 0, max_dr: 5 });
    assert_eq!(d.lorawan.mac, mac::MacSection { max_tries: 3, abp_channels_hz: vec![] });
    let c = parse(
        "[lorawan.adr]\nenabled = false\nmargin_db = 15.0\nmin_dr = 1\nmax_dr = 4\n\
         [lorawan.mac]\nmax_tries = 5\nabp_channels_hz = [867100000, 867300000]\n",
    )
    .unwrap();
    assert_eq!(c.lorawan.adr, mac::AdrSection { enabled: false, margin_db: 15.0, min_dr: 1, max_dr: 4 });
    assert_eq!(c.lorawan.mac.abp_channels_hz, [867_100_000, 867_300_000]);
    let shown: Config = toml::from_str(&c.redacted_toml()).unwrap();
    assert_eq!(shown.lorawan, c.lorawan);

    // Problems at their positions (line 5 is `[lorawan.adr]`).
    let ps = parse("[lorawan.adr]\nmargin_db = 40.0\nmin_dr = 7\nmax_dr = 6\n[lorawan.mac]\nmax_tries = 0\nabp_channels_hz = [915000000]\n")
        .unwrap_err()
        .0;
    let m = find(&ps, "lorawan.adr.margin_db");
    assert_eq!((m.line, m.message.as_str()), (6, "must be 0..=30 dB"));
    assert!(find(&ps, "lorawan.adr.max_dr").message.contains("DR5 = SF7"));
    assert!(find(&ps, "lorawan.adr.min_dr").message.contains("max_dr (6)"));
    assert_eq!(find(&ps, "lorawan.mac.max_tries").line, 10);
    let ch = find(&ps, "lorawan.mac.abp_channels_hz[0]");
    assert!(ch.message.contains("915000000 Hz"), "{}", ch.message);
    assert_eq!(ps.len(), 5, "{}", ConfigErrors(ps.clone()));

    // The per-device switch.
    let dev = "[[device]]\nname = \"m\"\ndev_addr = \"26011234\"\nnwk_s_key = \"000102030405060708090a0b0c0d0e0f\"\n\
               app_s_key = \"000102030405060708090a0b0c0d0e0f\"\n";
    assert!(parse(dev).unwrap().device[0].adr);
    assert!(!parse(&format!("{dev}adr = false\n")).unwrap().device[0].adr);
}

#[test]
fn multicast_groups() {
    let head = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\n\
                [[device]]\nname = \"l1\"\nprofile = \"lamp-generic\"\nclass = \"C\"\ndev_addr = \"26000001\"\n\
                nwk_s_key = \"000102030405060708090a0b0c0d0e0f\"\napp_s_key = \"0f0e0d0c0b0a09080706050403020100\"\n\
                [[device]]\nname = \"l2\"\nprofile = \"lamp-generic\"\nclass = \"C\"\ndev_addr = \"26000002\"\n\
                nwk_s_key = \"000102030405060708090a0b0c0d0e1f\"\napp_s_key = \"0f0e0d0c0b0a09080706050403020101\"\n\
                [[device]]\nname = \"s1\"\nprofile = \"raw\"\ndev_addr = \"26000003\"\n\
                nwk_s_key = \"000102030405060708090a0b0c0d0e2f\"\napp_s_key = \"0f0e0d0c0b0a09080706050403020102\"\n\
                [[lighting.zone]]\nname = \"z\"\ntime_zone = \"Europe/Berlin\"\nlamps = [\"l1\", \"l2\"]\n\
                [lorawan]\nrx2_dr = 2\n";
    let keys = "nwk_s_key = \"c0ffeec0ffeec0ffeec0ffeec0ffee00\"\napp_s_key = \"c0ffeec0ffeec0ffeec0ffeec0ffee01\"\n";
    let parse = |body: &str| parse_str(&format!("{head}{body}"), "t.toml", Path::new(""));
    let c =
        parse(&format!("[[lorawan.multicast]]\nname = \"zg\"\ndev_addr = \"260000ff\"\n{keys}zone = \"z\"\n")).unwrap();
    let g = &c.multicast_groups()[0];
    assert_eq!((g.name.as_str(), g.dev_addr.0, g.data_rate, g.freq_hz), ("zg", 0x2600_00ff, 2, 869_525_000));
    assert_eq!(g.members, vec!["l1", "l2"]);
    assert_eq!(c.loops_setup().lamp_groups[0].lamps, vec!["l1", "l2"]);
    let redacted = c.redacted_toml();
    assert!(!redacted.contains("c0ffee") && redacted.contains("[[lorawan.multicast]]"), "{redacted}");
    let listed = parse(&format!("[[lorawan.multicast]]\nname = \"zg\"\ndev_addr = \"260000ff\"\n{keys}devices = [\"l2\"]\ndata_rate = 3\nfreq_hz = 869100000\n")).unwrap();
    let g = &listed.multicast_groups()[0];
    assert_eq!((g.members.clone(), g.data_rate, g.freq_hz), (vec!["l2".to_string()], 3, 869_100_000));

    for (body, key, says) in [
        ("name = \"l1\"\ndev_addr = \"260000ff\"\nzone = \"z\"\n", "lorawan.multicast[0].name", "device's name"),
        ("name = \"g\"\ndev_addr = \"26000001\"\nzone = \"z\"\n", "lorawan.multicast[0].dev_addr", "device \"l1\""),
        ("name = \"g\"\nzone = \"z\"\n", "lorawan.multicast[0].dev_addr", "required"),
        ("name = \"g\"\ndev_addr = \"260000ff\"\nzone = \"nope\"\n", "lorawan.multicast[0].zone", "nope"),
        ("name = \"g\"\ndev_addr = \"260000ff\"\n", "lorawan.multicast[0]", "either"),
        ("name = \"g\"\ndev_addr = \"260000ff\"\ndevices = [\"s1\"]\n", "lorawan.multicast[0].devices", "class C"),
        (
            "name = \"g\"\ndev_addr = \"260000ff\"\ndevices = [\"x\"]\n",
            "lorawan.multicast[0].devices",
            "not a configured",
        ),
        (
            "name = \"g\"\ndev_addr = \"260000ff\"\nzone = \"z\"\ndata_rate = 7\n",
            "lorawan.multicast[0].data_rate",
            "0..=6",
        ),
        (
            "name = \"g\"\ndev_addr = \"260000ff\"\nzone = \"z\"\nfreq_hz = 915000000\n",
            "lorawan.multicast[0].freq_hz",
            "sub-band",
        ),
        ("name = \"g\"\ndev_addr = \"260000ff\"\nzone = \"z\"\nf_port = 3\n", "lorawan.multicast[0].f_port", "unknown"),
    ] {
        let ps = parse(&format!("[[lorawan.multicast]]\n{keys}{body}")).expect_err(body).0;
        let p = find(&ps, key);
        assert!(p.message.contains(says), "{body}: {}", ConfigErrors(ps.clone()));
        assert!(!format!("{}", ConfigErrors(ps.clone())).contains("c0ffee"));
    }
    // Two groups: names, addresses and members are each one group's.
    let two = format!(
        "[[lorawan.multicast]]\nname = \"a\"\ndev_addr = \"260000ff\"\n{keys}zone = \"z\"\n\
         [[lorawan.multicast]]\nname = \"a\"\ndev_addr = \"260000ff\"\n{keys}devices = [\"l1\"]\n"
    );
    let ps = parse(&two).unwrap_err().0;
    assert!(find(&ps, "lorawan.multicast[1].name").message.contains("duplicate"));
    assert!(find(&ps, "lorawan.multicast[1].dev_addr").message.contains("lorawan.multicast[0]"));
    assert!(find(&ps, "lorawan.multicast[1].devices").message.contains("also in lorawan.multicast[0]"));
}

#[test]
fn wmbus_source_and_meters_are_checked_and_the_key_is_redacted() {
    let base = "[gateway]\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://10.0.0.1\"\n";
    let ok = format!(
        "{base}[[source]]\ntype = \"wmbus\"\nport = \"/dev/ttyUSB0\"\nstick = \"im871a\"\n\
         [[device]]\nname = \"w1\"\nprofile = \"wmbus\"\nwmbus_id = \"12345678\"\nmanufacturer = \"KAM\"\n\
         aes_key = \"000102030405060708090a0b0c0d0e0f\"\nmax_silence_s = 3600\n"
    );
    let c = parse_str(&ok, "t.toml", Path::new("")).unwrap_or_else(|e| panic!("{e}"));
    let SourceConfig::Wmbus(s) = &c.source[0] else { panic!("not a wmbus source") };
    assert_eq!((s.name.as_str(), s.mode, s.baud()), ("wmbus-0", radio::WmbusMode::T1, 57_600));
    let m = c.device[0].wmbus_meter().unwrap();
    assert_eq!((m.device.as_str(), m.id.as_str(), m.manufacturer.as_deref()), ("w1", "12345678", Some("KAM")));
    assert!(!c.redacted_toml().contains("0102030405"), "{}", c.redacted_toml());
    assert!(!format!("{c:?}").contains("0102030405"));

    let bad = format!(
        "{base}[[source]]\ntype = \"wmbus\"\nport = \"/dev/ttyUSB0\"\nstick = \"cc1101\"\n\
         [[source]]\ntype = \"wmbus\"\nport = \"/dev/ttyUSB1\"\nstick = \"amb8465\"\nmode = \"x2\"\nreply_timeout_ms = 0\n\
         [[device]]\nname = \"w1\"\nprofile = \"wmbus\"\nwmbus_id = \"1234567\"\nmanufacturer = \"kam\"\ndev_addr = \"01020304\"\n\
         [[device]]\nname = \"w2\"\nprofile = \"raw\"\nwmbus_id = \"12345678\"\n\
         [[device]]\nname = \"w3\"\nprofile = \"wmbus\"\n"
    );
    let ps = parse_str(&bad, "t.toml", Path::new("")).unwrap_err().0;
    assert!(find(&ps, "source[0].stick").message.contains("im871a"), "{}", find(&ps, "source[0].stick"));
    assert!(find(&ps, "source[1].mode").line > 0);
    assert_eq!(find(&ps, "source[1].reply_timeout_ms").message, "must be > 0");
    assert!(find(&ps, "device[0].wmbus_id").message.contains("8-digit"));
    assert!(find(&ps, "device[0].manufacturer").message.contains("three-letter"));
    assert!(find(&ps, "device[0].dev_addr").message.contains("LoRaWAN key"));
    assert!(find(&ps, "device[1].wmbus_id").message.contains("profile = \"wmbus\""));
    assert!(find(&ps, "device[2].wmbus_id").message.contains("missing"));
    let p = find(&ps, "device[0].wmbus_id");
    assert_eq!((p.line, p.file.as_str()), (18, "t.toml"));
}
