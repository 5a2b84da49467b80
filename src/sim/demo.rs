//! `district-gateway demo`: a simulated district on this machine. An embedded broker on loopback
//! (unless `--broker`), simulated ABP devices sending real encrypted uplinks over the packet-forwarder
//! protocol, the real daemon in between, and a subscriber that prints what reaches the broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

use crate::config;
use crate::io::gwmp::packet::{build_push_data, RxPkOut};
use crate::keys::Eui64;
use crate::runtime::Daemon;
use crate::sim::{broker, payloads, SimDevice};

const GATEWAY_ID: &str = "demo-district";
const PREFIX: &str = "city";

/// Parses `mqtt://host:port` (the demo only needs plain TCP).
fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.strip_prefix("mqtt://").context("--broker must look like mqtt://host:port")?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    Ok((host.to_string(), port.parse().context("--broker port")?))
}

fn demo_devices() -> Vec<(SimDevice, &'static str)> {
    vec![
        (SimDevice::numbered("bin", 1, "milesight-em310-udl"), "waste container, ultrasonic fill level"),
        (SimDevice::numbered("bin", 2, "milesight-em310-udl"), "waste container, ultrasonic fill level"),
        (SimDevice::numbered("tree", 1, "raw"), "city tree, soil moisture"),
        (SimDevice::numbered("pir", 1, "milesight-ws202"), "presence sensor on the lit path"),
        (SimDevice::numbered("lamp", 1, "lamp-generic"), "street-light controller"),
    ]
}

pub async fn run(seconds: Option<u64>, broker_url: Option<String>) -> anyhow::Result<()> {
    let (host, port) = match &broker_url {
        Some(url) => host_port(url)?,
        None => {
            let port = broker::free_port()?;
            broker::start(SocketAddr::from(([127, 0, 0, 1], port)))?;
            ("127.0.0.1".to_string(), port)
        }
    };
    let data = tempfile::tempdir().context("creating a temporary data dir")?;
    let mut devices = demo_devices();
    let mut cfg = format!(
        "[gateway]\nid = \"{GATEWAY_ID}\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\n\n[ops]\nhttp_bind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://{host}:{port}\"\ntopic_prefix = \"{PREFIX}\"\n\n[[source]]\ntype = \"gwmp\"\nbind = \"127.0.0.1:0\"\n\n",
        data.path().join("data").display()
    );
    for (d, _) in &devices {
        cfg.push_str(&d.config_toml());
    }
    let config = config::parse_str(&cfg, "demo.toml", data.path()).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;

    println!("district-gateway demo");
    println!("  broker     mqtt://{host}:{port}{}", if broker_url.is_none() { " (embedded)" } else { "" });
    // Subscribe before the daemon starts so that the viewer sees every reading.
    let received = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let subscriber = tokio::spawn(subscribe(host.clone(), port, received.clone(), subscribed_tx));
    if tokio::time::timeout(Duration::from_secs(10), subscribed).await.is_err() {
        anyhow::bail!("could not subscribe at the broker mqtt://{host}:{port}");
    }
    let daemon = Daemon::start(&config).await?;
    let gwmp = *daemon.gwmp_addrs.first().context("demo daemon has no gwmp source")?;
    println!("  daemon     gateway '{GATEWAY_ID}', packet forwarder on udp://{gwmp}");
    for (d, what) in &devices {
        println!("  device     {:<9} {}  ({what})", d.name, d.dev_addr);
    }
    println!("  topics     {PREFIX}/{GATEWAY_ID}/#");
    println!(
        "{}",
        match seconds {
            Some(s) => format!("running for {s} s ...\n"),
            None => "running until Ctrl-C ...\n".to_string(),
        }
    );

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let eui = Eui64(0xaa55_5a00_0000_0001);
    let started = tokio::time::Instant::now();
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut token: u16 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        let i = (sent as usize) % devices.len();
        let (dev, _) = &mut devices[i];
        let (port, payload) = payloads::for_profile(&dev.profile, dev.f_cnt);
        dev.f_port = port;
        let phy = dev.uplink(&payload);
        token = token.wrapping_add(1);
        let rx = RxPkOut {
            tmst: (started.elapsed().as_micros() as u32),
            freq_hz: 868_100_000 + 200_000 * (sent % 3),
            sf: 7 + (sent % 3) as u8,
            bw_khz: 125,
            rssi: -60 - (sent % 40) as i32,
            lsnr: 7.5,
            data: phy,
        };
        let datagram = build_push_data(2, token.to_le_bytes(), eui, &[rx]);
        socket.send_to(&datagram, gwmp).await?;
        sent += 1;
        let mut buf = [0u8; 64];
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
            if n >= 4 && buf[3] == 0x01 {
                acked += 1;
            }
        }
    }
    // Let the last readings reach the broker.
    for _ in 0..30 {
        let got: u64 = received.lock().await.values().sum();
        if got >= acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: u64 = received.lock().await.values().sum();
    daemon.stop().await;
    subscriber.abort();
    println!("\nsummary: {sent} uplinks sent, {acked} acknowledged by the gateway (PUSH_ACK), {got} readings received from the broker");
    if got < acked {
        println!(
            "         {} readings still in the gateway's outbox (they would be sent on the next connection)",
            acked - got
        );
    }
    Ok(())
}

async fn subscribe(
    host: String,
    port: u16,
    received: Arc<Mutex<HashMap<String, u64>>>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    let mut o = MqttOptions::new("demo-viewer", host, port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let filter = format!("{PREFIX}/{GATEWAY_ID}/#");
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let topic = p.topic.strip_prefix(&format!("{PREFIX}/{GATEWAY_ID}/")).unwrap_or(&p.topic).to_string();
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                if topic.starts_with("reading/") {
                    let device = v["device"].as_str().unwrap_or("?").to_string();
                    let l = &v["lorawan"];
                    println!(
                        "  {}  reading  {:<9} seq={:<4} f_cnt={:<4} sf={} rssi={:<4} payload={}{}",
                        v["at"].as_str().unwrap_or("").get(11..23).unwrap_or(""),
                        device,
                        v["seq"].to_string(),
                        l["f_cnt"].to_string(),
                        l["sf"],
                        l["rssi"].to_string(),
                        l["payload_hex"].as_str().unwrap_or(""),
                        if v["replayed"] == true { "  (replayed)" } else { "" },
                    );
                    *received.lock().await.entry(device).or_default() += 1;
                } else if topic == "state" {
                    println!("  state    {}", String::from_utf8_lossy(&p.payload));
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
