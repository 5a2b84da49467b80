//! The demo's plumbing: the embedded broker as a child process (so that it can really be cut off and
//! brought back on the same port), a gate in front of it for the gateway, and the viewer's MQTT
//! connection.
//!
//! Why the gate: the viewer plays the city. After the broker comes back, the viewer must be subscribed
//! again before the gateway reconnects, or it would miss part of the backlog that drains in the first
//! milliseconds (a restarted broker keeps no sessions). The gateway therefore reaches the broker through
//! a loopback TCP relay that is closed while the broker is down and opened once the viewer is back.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// The embedded broker running as `district-gateway broker --bind ADDR` in a child process.
pub struct BrokerProcess {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl BrokerProcess {
    pub async fn start(addr: SocketAddr) -> anyhow::Result<BrokerProcess> {
        let mut b = BrokerProcess { addr, child: None };
        b.restart().await?;
        Ok(b)
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process still runs (it may have been killed from outside, e.g. by a Ctrl-C).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the broker (SIGKILL): every connection drops at once, nothing is said goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same address; returns once it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let exe = std::env::current_exe().context("locating the district-gateway binary")?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(exe)
            .args(["broker", "--bind", &self.addr.to_string()])
            // Its own process group: a Ctrl-C on the demo's terminal is the demo's to handle.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the embedded broker")?;
        self.child = Some(child);
        for _ in 0..250 {
            if TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        anyhow::bail!("the embedded broker did not come up on {}", self.addr)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The relay in front of the broker for the gateway (see the module docs).
#[derive(Clone)]
pub struct Gate {
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    pub addr: SocketAddr,
}

impl Gate {
    /// Listens on a free loopback port and relays to `upstream` while open. Starts closed.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Gate> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let gate = Gate {
            open: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            addr: listener.local_addr()?,
        };
        let g = gate.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if !g.open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let mut inbound = inbound;
                    if let Ok(mut out) = TcpStream::connect(upstream).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                if let Ok(mut c) = g.conns.lock() {
                    c.retain(|h| !h.is_finished());
                    c.push(task.abort_handle());
                }
            }
        });
        Ok(gate)
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Closes the gate and drops every relayed connection.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for h in c.drain(..) {
                h.abort();
            }
        }
    }
}

/// What the viewer's connection reports to the demo.
pub enum ViewerMsg {
    Subscribed,
    Down,
    Publish(String, Vec<u8>),
}

/// The viewer ("the city"): subscribes to everything below the gateway's topic prefix.
pub fn viewer(host: &str, port: u16, filter: String) -> (AsyncClient, mpsc::UnboundedReceiver<ViewerMsg>) {
    let mut o = MqttOptions::new(format!("demo-viewer-{}", std::process::id()), host, port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(true);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, eventloop) = AsyncClient::new(o, 256);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(viewer_loop(client.clone(), eventloop, filter, tx));
    (client, rx)
}

async fn viewer_loop(client: AsyncClient, mut el: EventLoop, filter: String, tx: mpsc::UnboundedSender<ViewerMsg>) {
    let mut up = false;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                up = true;
                if tx.send(ViewerMsg::Subscribed).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if tx.send(ViewerMsg::Publish(p.topic.clone(), p.payload.to_vec())).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => {
                if up {
                    up = false;
                    if tx.send(ViewerMsg::Down).is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
