//! Criterion benchmarks of the core (pure, no I/O): the uplink decode path with 10,000 ABP sessions
//! (`Sessions::accept_uplink`: DevAddr lookup, MIC, FCnt check, decryption) and OTAA joins
//! (`JoinServer::handle_join_request`: MIC, nonce check, key derivation, encrypted join accept), and the
//! store's record compaction. `cargo bench --bench core`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::lorawan::join::JoinConfig;
use district_gateway::lorawan::session::Sessions;
use district_gateway::lorawan::{JoinContext, JoinServer, OtaaDevice};
use district_gateway::sim::frames::build_join_request;
use district_gateway::sim::SimDevice;

const DEVICES: u32 = 10_000;

fn decode(c: &mut Criterion) {
    let mut devs: Vec<SimDevice> = (1..=DEVICES).map(|i| SimDevice::numbered("dev", i, "raw")).collect();
    let mut sessions = Sessions::new();
    for d in &devs {
        sessions.upsert(&d.name, d.dev_addr, d.nwk_s_key, d.app_s_key, false);
    }
    // One frame per device with FCnt 1: replaying the batch after resetting the counters keeps the
    // work identical in every round.
    let frames: Vec<Vec<u8>> = devs
        .iter_mut()
        .map(|d| {
            d.f_cnt = 1;
            d.uplink(&[0x01, 0x75, 0x5c, 0x03, 0x82, 0x44, 0x08, 0x04, 0x00, 0x01])
        })
        .collect();
    let names: Vec<String> = devs.iter().map(|d| d.name.clone()).collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(u64::from(DEVICES)));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("accept_uplink, 10k sessions (per batch of 10k frames)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for n in &names {
                    sessions.set_last_fcnt(n, 0);
                }
                let t = Instant::now();
                for f in &frames {
                    let r = sessions.accept_uplink(f);
                    assert!(r.is_ok());
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn joins(c: &mut Criterion) {
    let mut server = JoinServer::new(JoinConfig::default()).expect("default join config");
    let join_eui = Eui64(0x70b3_d57e_d000_0001);
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let dev_eui = Eui64(0x0004_a30b_0000_0000 | u64::from(i));
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_be_bytes());
        let app_key = Key128::new(k);
        server.upsert_device(OtaaDevice { name: format!("otaa-{i}"), dev_eui, join_eui, app_key });
        devices.push((dev_eui, app_key));
    }
    // Every call gets a fresh DevNonce: device k % N, nonce k / N (criterion runs the routine many
    // times, so the counter lives outside it).
    let mut k = 0u64;
    let mut failures = 0u64;
    let mut g = c.benchmark_group("join");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handle_join_request, 10k devices", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let n = devices.len() as u64;
                let (dev_eui, app_key) = &devices[(k % n) as usize];
                let nonce = (k / n) as u16;
                k += 1;
                let phy = build_join_request(join_eui, *dev_eui, app_key, nonce);
                let ctx = JoinContext {
                    join_nonce: (k as u32) & 0x00ff_ffff,
                    dev_addr: DevAddr(0x0100_0000 | (k as u32 & 0x00ff_ffff)),
                };
                let t = Instant::now();
                let r = server.handle_join_request(&phy, ctx);
                total += t.elapsed();
                if let Err(e) = r {
                    failures += 1;
                    if failures == 1 {
                        eprintln!("join refused in the benchmark: {e}");
                    }
                    server.reset_nonces(*dev_eui);
                }
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, decode, joins);
criterion_main!(benches);
