//! The embedded MQTT broker (rumqttd) for the demo and the tests, so that neither needs anything
//! installed. Not part of a field build (cargo feature `demo`).

use std::net::SocketAddr;

use anyhow::Context;

/// A second listener speaking MQTT over TLS that requires a client certificate signed by `ca`
/// (PEM files), for testing `mqtts://` with client certificates without installing anything.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub bind: SocketAddr,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn config(bind: SocketAddr, tls: Option<&TlsListener>) -> anyhow::Result<rumqttd::Config> {
    let mut text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{bind}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 262144
    max_inflight_count = 500
    dynamic_filters = true
"#
    );
    if let Some(t) = tls {
        // TOML basic strings: serialize the paths rather than pasting them in.
        let path = |p: &std::path::Path| toml::Value::String(p.display().to_string()).to_string();
        text.push_str(&format!(
            r#"
[v4.2]
name = "v4-2-tls"
listen = "{}"
next_connection_delay_ms = 1
    [v4.2.tls]
    capath = {}
    certpath = {}
    keypath = {}
    [v4.2.connections]
    connection_timeout_ms = 60000
    max_payload_size = 262144
    max_inflight_count = 500
    dynamic_filters = true
"#,
            t.bind,
            path(&t.ca),
            path(&t.cert),
            path(&t.key)
        ));
    }
    toml::from_str(&text).context("embedded broker config")
}

/// Starts the broker on its own thread and returns once it accepts connections (bounded wait).
pub fn start(bind: SocketAddr) -> anyhow::Result<()> {
    let mut broker = rumqttd::Broker::new(config(bind, None)?);
    std::thread::Builder::new().name("rumqttd".into()).spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("embedded broker stopped: {e}");
        }
    })?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(bind).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("embedded broker did not come up on {bind}")
}

/// Runs the broker in the foreground until the process is killed.
pub fn run_blocking(bind: SocketAddr, tls: Option<&TlsListener>) -> anyhow::Result<()> {
    let mut broker = rumqttd::Broker::new(config(bind, tls)?);
    println!("embedded MQTT broker listening on {bind}");
    if let Some(t) = tls {
        println!("embedded MQTT broker listening on {} (TLS, client certificates required)", t.bind);
    }
    broker.start().context("embedded broker")?;
    Ok(())
}

/// A free loopback TCP port (bound and released; good enough for tests and the demo).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
