//! The embedded MQTT broker (rumqttd) for the demo and the tests, so that neither needs anything
//! installed. Not part of a field build (cargo feature `demo`).

use std::net::SocketAddr;

use anyhow::Context;

fn config(bind: SocketAddr) -> anyhow::Result<rumqttd::Config> {
    let text = format!(
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
    toml::from_str(&text).context("embedded broker config")
}

/// Starts the broker on its own thread and returns once it accepts connections (bounded wait).
pub fn start(bind: SocketAddr) -> anyhow::Result<()> {
    let mut broker = rumqttd::Broker::new(config(bind)?);
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
pub fn run_blocking(bind: SocketAddr) -> anyhow::Result<()> {
    let mut broker = rumqttd::Broker::new(config(bind)?);
    println!("embedded MQTT broker listening on {bind}");
    broker.start().context("embedded broker")?;
    Ok(())
}

/// A free loopback TCP port (bound and released; good enough for tests and the demo).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
