//! `mqtts://` with client certificates against a real broker (the embedded rumqttd, or mosquitto with
//! `DG_TEST_BROKER=mosquitto`), including failover from an unreachable broker. The certificates are
//! made afresh for each run (rcgen): a test CA, the broker's certificate for 127.0.0.1, the gateway's
//! client certificate, and a second, unrelated CA with its own client certificate.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use district_gateway::sim::SimDevice;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// Signed by another CA that the broker does not know.
    rogue_ca: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A CA: (certificate, its key).
fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

/// A leaf certificate for `sans` signed by `issuer`: (certificate PEM, key PEM).
fn leaf(cn: &str, sans: &[&str], issuer: &(rcgen::Certificate, KeyPair)) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let city = ca("city test CA");
        let other = ca("somebody else's CA");
        std::fs::write(p("ca.pem"), city.0.pem()).unwrap();
        std::fs::write(p("rogue-ca.pem"), other.0.pem()).unwrap();
        let (c, k) = leaf("broker", &["127.0.0.1", "localhost"], &city);
        std::fs::write(p("server.pem"), c).unwrap();
        write_private(&p("server.key"), &k);
        let (c, k) = leaf("district-gateway tls-01", &[], &city);
        std::fs::write(p("client.pem"), c).unwrap();
        write_private(&p("client.key"), &k);
        let (c, k) = leaf("district-gateway rogue", &[], &other);
        std::fs::write(p("rogue.pem"), c).unwrap();
        write_private(&p("rogue.key"), &k);
        Pki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            rogue_ca: p("rogue-ca.pem"),
            rogue_cert: p("rogue.pem"),
            rogue_key: p("rogue.key"),
            _dir: dir,
        }
    }
}

fn mqtt_tls_lines(urls: &[String], ca: &Path, cert: &Path, key: &Path) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "urls = [{}]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        urls.join(", "),
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// The base64 body lines of a PEM private key: none of them may ever appear in a log.
fn key_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.starts_with("-----")).map(String::from).collect()
}

#[test]
fn mqtts_with_a_client_certificate_fails_over_from_a_dead_broker_and_delivers() {
    let pki = Pki::new();
    let broker = Broker::start_tls(&pki.ca, &pki.server_cert, &pki.server_key);
    let tls_port = broker.tls.as_ref().unwrap().port;
    let sub = Subscriber::start(broker.port, "city/tls-01/#");
    let mut devs = vec![SimDevice::numbered("dev", 1, "raw")];
    // `url` is a broker that is not there; the TLS broker is the second of `urls`.
    let dead = format!("mqtts://127.0.0.1:{}", free_port());
    let extra = mqtt_tls_lines(
        &[format!("mqtts://127.0.0.1:{}", free_port()), format!("mqtts://127.0.0.1:{tls_port}")],
        &pki.ca,
        &pki.client_cert,
        &pki.client_key,
    );
    let daemon = Daemon::start_with("tls-01", &dead, &extra, &devs);
    assert!(
        wait_until(Duration::from_secs(30), || !sub.on_topic("/state").is_empty()),
        "never connected over TLS; log:\n{}",
        daemon.all_logs()
    );
    let mut fwd = Forwarder::new();
    devs[0].f_cnt = 7;
    assert!(fwd.push(daemon.gwmp, &[Forwarder::rxpk(devs[0].uplink(b"\x01\x02"))]), "no PUSH_ACK");
    assert!(
        wait_until(Duration::from_secs(15), || !sub.readings().is_empty()),
        "no reading over TLS; log:\n{}",
        daemon.all_logs()
    );
    let r = &sub.readings()[0];
    assert_eq!(r["device"], "dev-001");
    assert_eq!(r["lorawan"]["f_cnt"], 7);
    let logs = daemon.all_logs();
    assert!(logs.contains("trying the next broker"), "failover not logged:\n{logs}");
    for line in key_lines(&pki.client_key) {
        assert!(!logs.contains(&line), "the client's private key appears in the log");
    }
}

#[test]
fn a_broker_refuses_an_unknown_client_certificate_and_the_gateway_refuses_an_unknown_broker() {
    let pki = Pki::new();
    let broker = Broker::start_tls(&pki.ca, &pki.server_cert, &pki.server_key);
    let tls_url = format!("mqtts://127.0.0.1:{}", broker.tls.as_ref().unwrap().port);
    let sub = Subscriber::start(broker.port, "city/#");
    let devs = vec![SimDevice::numbered("dev", 1, "raw")];
    // A client certificate from a CA the broker does not trust.
    let rogue_client =
        Daemon::start_with("tls-02", &tls_url, &mqtt_tls_lines(&[], &pki.ca, &pki.rogue_cert, &pki.rogue_key), &devs);
    // A broker certificate from a CA the gateway does not trust (what a man in the middle would show).
    let wrong_trust = Daemon::start_with(
        "tls-03",
        &tls_url,
        &mqtt_tls_lines(&[], &pki.rogue_ca, &pki.client_cert, &pki.client_key),
        &devs,
    );
    let mut fwd = Forwarder::new();
    for (i, d) in [&rogue_client, &wrong_trust].into_iter().enumerate() {
        let mut dev = devs[0].clone();
        dev.f_cnt = 10 + i as u32;
        assert!(fwd.push(d.gwmp, &[Forwarder::rxpk(dev.uplink(b"\x01"))]), "the frame is still acknowledged");
    }
    // Several reconnect attempts (reconnect_max_ms = 1000), none may get through.
    std::thread::sleep(Duration::from_secs(5));
    assert!(sub.on_topic("/state").is_empty(), "a gateway got in: {:?}", sub.on_topic("/state"));
    assert!(sub.readings().is_empty());
    for (d, key) in [(&rogue_client, &pki.rogue_key), (&wrong_trust, &pki.client_key)] {
        let logs = d.all_logs();
        assert!(logs.contains("broker not reachable"), "the failure is not logged:\n{logs}");
        for line in key_lines(key) {
            assert!(!logs.contains(&line), "a private key appears in the log");
        }
    }
}
