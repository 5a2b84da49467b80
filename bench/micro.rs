//! Micro-benchmarks of the pure core, reported as figures (no pass/fail): `cargo bench --bench micro`.
//! Each figure is the median of 5 runs of a fixed amount of work, measured in the same process, so
//! ratios between lines are comparable on a shared machine.
//!
//! - SML: frames parsed per second (framing + CRC + parse + OBIS mapping), over the public dumps;
//! - decoders: native decodes/s and JS-codec decodes/s for the same payload, and a JS codec's memory;
//! - LoRaWAN: uplinks/s through `Sessions::accept_uplink` with 10,000 sessions; joins/s;
//! - lighting: time from a presence input to the lamp commands (pure loop), p50/p99;
//! - demand response: time from a meter reading over the limit to the first load command, p50/p99.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use district_gateway::decode::js::{JsCodec, JsLimits};
use district_gateway::decode::{self, Decoder};
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::lorawan::join::{JoinConfig, JoinContext, JoinServer, OtaaDevice};
use district_gateway::lorawan::Sessions;
use district_gateway::meter::{self, FrameEvent, SmlFramer};
use district_gateway::sim::frames::{build_data_uplink, build_join_request};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Runs `f` (which does `n` units of work) 5 times; returns units per second (median).
fn rate(n: u64, mut f: impl FnMut()) -> f64 {
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    let vectors = if beside.is_dir() { beside } else { PathBuf::from("/work/shared/vectors") };
    println!("\n## micro-benchmarks (median of 5 runs)\n");

    // SML.
    let mut dumps = Vec::new();
    if let Ok(dir) = std::fs::read_dir(vectors.join("sml/libsml-testing")) {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "bin") {
                dumps.push(std::fs::read(e.path()).unwrap_or_default());
            }
        }
    }
    let frames_per_pass: u64 = dumps
        .iter()
        .map(|d| SmlFramer::new().push(d).iter().filter(|e| matches!(e, FrameEvent::Frame(_))).count() as u64)
        .sum();
    let passes = 50;
    let r = rate(frames_per_pass * passes, || {
        for _ in 0..passes {
            for d in &dumps {
                let mut f = SmlFramer::new();
                for ev in f.push(d) {
                    if let FrameEvent::Frame(fr) = ev {
                        if let Ok(v) = meter::values(&fr) {
                            std::hint::black_box(meter::metrics(&v));
                        }
                    }
                }
            }
        }
    });
    println!("- SML frames parsed per second (framing, CRC, parse, OBIS mapping): {r:.0}");

    // Decoders.
    let payload = hex::decode("01755c03824408040001").unwrap_or_default();
    let mut native = decode::native("milesight-em310-udl").expect("native decoder");
    let n = 100_000;
    let r_native = rate(n, || {
        for _ in 0..n {
            std::hint::black_box(native.decode(85, &payload).ok());
        }
    });
    let src = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/codecs/milesight-em310-udl.js"),
    )
    .unwrap_or_default();
    let origin = Instant::now();
    let mut js =
        JsCodec::load("js:em310", &src, JsLimits::default(), Arc::new(move || origin.elapsed())).expect("codec");
    let mem_before = js.memory_usage();
    let nj = 5_000;
    let r_js = rate(nj, || {
        for _ in 0..nj {
            std::hint::black_box(js.decode(85, &payload).ok());
        }
    });
    println!("- native decoder (milesight-em310-udl) decodes/s: {r_native:.0}");
    println!("- TTN JavaScript codec (same device) decodes/s: {r_js:.0} ({:.0}x slower than native)", r_native / r_js);
    println!(
        "- memory a loaded JS codec holds: {:.0} KiB (after {} decodes: {:.0} KiB)",
        mem_before as f64 / 1024.0,
        nj * 5,
        js.memory_usage() as f64 / 1024.0
    );

    // LoRaWAN: 10,000 sessions.
    let mut sessions = Sessions::new();
    let mut frames = Vec::new();
    for i in 0..10_000u32 {
        let addr = DevAddr(0x2600_0000 | i);
        let nwk = Key128::new([(i % 251) as u8; 16]);
        let app = Key128::new([(i % 241) as u8 + 1; 16]);
        sessions.upsert(&format!("d{i}"), addr, nwk, app, false);
        frames.push((addr, nwk, app));
    }
    let batch: u64 = 20_000;
    // Time accept alone, separately (building frames is not the gateway's work).
    let phys: Vec<Vec<u8>> = (0..batch)
        .map(|k| {
            let (a, n, s) = frames[(k % 10_000) as usize];
            build_data_uplink(a, &n, &s, 1_000 + (k / 10_000) as u32, 85, &payload, false)
        })
        .collect();
    let t = Instant::now();
    let mut accepted = 0u64;
    for p in &phys {
        accepted += u64::from(sessions.accept_uplink(p).is_ok());
    }
    let accept_rate = batch as f64 / t.elapsed().as_secs_f64();
    assert_eq!(accepted, batch, "every frame must be accepted for the figure to mean anything");
    println!("- uplinks/s through the decode path (MIC, FCnt, decrypt) with 10,000 sessions: {accept_rate:.0}");

    let app_key = Key128::new([7; 16]);
    let mut js_server = JoinServer::new(JoinConfig::default()).expect("join server");
    for i in 0..1000u64 {
        js_server.upsert_device(OtaaDevice { name: format!("o{i}"), dev_eui: Eui64(i), join_eui: Eui64(1), app_key });
    }
    let reqs: Vec<Vec<u8>> = (0..5000u32)
        .map(|k| build_join_request(Eui64(1), Eui64(u64::from(k % 1000)), &app_key, (k / 1000) as u16 + 1))
        .collect();
    let t = Instant::now();
    let mut ok = 0;
    for (k, r) in reqs.iter().enumerate() {
        let ctx = JoinContext { join_nonce: k as u32, dev_addr: DevAddr(0x0100_0000 + k as u32) };
        ok += usize::from(js_server.handle_join_request(r, ctx).is_ok());
    }
    println!(
        "- joins/s (MIC check, accept built and encrypted, keys derived): {:.0} ({ok} of {} accepted)",
        reqs.len() as f64 / t.elapsed().as_secs_f64(),
        reqs.len()
    );

    // Lighting: presence in, lamp commands out.
    use district_gateway::control::{demand, lighting};
    let zone: lighting::params::ZoneParams = toml::from_str(
        "name = \"z\"\ntime_zone = \"Europe/Berlin\"\nlamps = [\"l1\", \"l2\", \"l3\", \"l4\", \"l5\"]\n\
         sensors = [{ device = \"p1\", lamp = \"l2\" }]\nmin_command_gap_s = 0\n[schedule]\nastronomical = false\n\
         [[schedule.period]]\nfrom = \"00:00\"\nto = \"24:00\"\nlevel_pct = 10\n",
    )
    .expect("zone params");
    let site = lighting::Site {
        latitude: Some(53.7),
        longitude: Some(9.99),
        build_date: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
    };
    let mut l = lighting::Lighting::from_params(&[zone], &site).expect("zone");
    let mut now = chrono::DateTime::from_timestamp(1_795_700_000, 0).unwrap_or_default();
    let _ = l.tick(now);
    let mut lat = Vec::new();
    for _ in 0..2000 {
        now += chrono::Duration::seconds(200); // past the hold: every detection changes levels
        let _ = l.tick(now);
        let t = Instant::now();
        let out = l.presence(now, "p1", now).ok();
        lat.push(t.elapsed());
        std::hint::black_box(out);
    }
    println!(
        "- lighting loop, presence input to lamp commands (pure): p50 {:?}, p99 {:?}",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    );

    // Demand response: a meter reading over the limit to the first load command.
    let mut p: demand::params::DemandParams = toml::from_str(
        "meter = \"m\"\nlimit_kw = 250.0\n[[load]]\nname = \"hp\"\nkind = \"sg-ready\"\nrated_kw = 6.0\npriority = 1\nmin_off_s = 0\nmin_on_s = 0\n",
    )
    .expect("dr params");
    p.seed = 1;
    let mut lat = Vec::new();
    for k in 0..2000i64 {
        let mut d = demand::Demand::from_params(&p).expect("dr");
        let t0 = chrono::DateTime::from_timestamp(1_795_700_000 + k, 0).unwrap_or_default();
        let _ = d.handle(t0, demand::Input::Meter { at: t0, power_w: 200_000.0 });
        let t1 = t0 + chrono::Duration::seconds(5);
        let t = Instant::now();
        let out = d.handle(t1, demand::Input::Meter { at: t1, power_w: 253_000.0 });
        lat.push(t.elapsed());
        std::hint::black_box(out);
    }
    println!(
        "- demand response, meter reading over the limit to the first load command (pure): p50 {:?}, p99 {:?}",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    );
}
