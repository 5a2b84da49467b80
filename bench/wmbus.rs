//! Criterion benchmark of wireless M-Bus telegram decoding (pure core): a plaintext telegram and an
//! AES-128-CBC (security mode 5) one, from wmbusmeters' test cases. Reports telegrams/s.
//! `cargo bench --bench wmbus`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use district_core::wmbus::decode_telegram;

/// Plaintext water meter (wmbusmeters `watertech` case with its security mode cleared), ELL + short TPL.
const PLAIN: &str =
    "3144945E3838383859078C20007A010000002F2F066D1C1F0EF021000413B91E000002FD17000002FD0F4C2B2F2F2F2F2F2F";
/// Encrypted water meter (wmbusmeters `kadenwater` case, its test key), short TPL, mode 5, 4 blocks.
const AES: &str = "4e4430590010221901077a71004005f8c0d59e1536f306ffcd58075fda84b6f21fc0f33df92c8cf5fcab599bd1fe73b0db2e5d9e6d8a2e3363d67db2cdaf16c26d57886b70ee0f77fc116753809bb5";
const AES_KEY: &str = "82B0551191F51D66EFCDAB8967452301";

fn bench(c: &mut Criterion) {
    let plain = hex::decode(PLAIN).expect("hex");
    let aes = hex::decode(AES).expect("hex");
    let key: [u8; 16] = hex::decode(AES_KEY).expect("hex").try_into().expect("16 bytes");
    let mut g = c.benchmark_group("wmbus");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("decode plaintext telegram", |b| b.iter(|| decode_telegram(&plain, None)));
    g.bench_function("decode AES (mode 5) telegram", |b| b.iter(|| decode_telegram(&aes, Some(&key))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
