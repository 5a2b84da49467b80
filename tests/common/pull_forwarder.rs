//! An async packet forwarder for in-process daemons: one UDP socket for up- and downstream, like the
//! Semtech forwarder with one port, registered with PULL_DATA. Each test adds the methods it needs.

use std::net::SocketAddr;
use std::time::Duration;

use district_gateway::io::gwmp::packet::build_pull_data;
use district_gateway::keys::Eui64;
use tokio::net::UdpSocket;

pub struct Forwarder {
    pub sock: UdpSocket,
    pub to: SocketAddr,
    pub token: u16,
}

impl Forwarder {
    /// Binds a loopback socket and sends PULL_DATA for gateway `gw`; waits for the PULL_ACK.
    pub async fn new(to: SocketAddr, gw: Eui64) -> Forwarder {
        let f = Forwarder { sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(), to, token: 0 };
        f.sock.send_to(&build_pull_data(2, [1, 0], gw), to).await.unwrap();
        let mut b = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), f.sock.recv_from(&mut b)).await.unwrap().unwrap();
        assert_eq!((n, b[3]), (4, 4), "PULL_ACK");
        f
    }
}
