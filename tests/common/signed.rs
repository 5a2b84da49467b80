//! The city's side of signed commands: the RFC 8032 TEST 1 key (configured as `[[ops.key]]` `ops-1`),
//! envelopes, publishing on `cmd/req` and reading answers on `cmd/res`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{TimeDelta, Utc};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use super::{wait_until, Subscriber};

/// RFC 8032 section 7.1, TEST 1.
pub const TEST1_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
pub const TEST1_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
/// How long an answer on `cmd/res` may take (config.apply with a rollback takes longer; see there).
pub const ANSWER: Duration = Duration::from_secs(20);

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn signing_key() -> SigningKey {
    let seed: [u8; 32] = hex::decode(TEST1_SECRET).unwrap().try_into().unwrap();
    let key = SigningKey::from_bytes(&seed);
    assert_eq!(hex::encode(key.verifying_key().to_bytes()), TEST1_PUBLIC, "RFC 8032 TEST 1 key pair");
    key
}

pub fn public_key_b64() -> String {
    b64(&hex::decode(TEST1_PUBLIC).unwrap())
}

// ---------------------------------------------------------------------------------------------- commands

/// Publishes one message with QoS 1 and returns once the broker acknowledged it.
pub fn publish(port: u16, topic: &str, payload: &[u8]) {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!("test-pub-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_vec()).unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)))) => {
                let _ = client.disconnect();
                for _ in 0..20 {
                    match conn.recv_timeout(Duration::from_millis(50)) {
                        Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
                return;
            }
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
            _ => {}
        }
    }
    panic!("publishing on {topic}: no PUBACK from the broker");
}

/// Publishes every payload with QoS 1 over one connection, as fast as the broker takes them, and
/// returns once the broker acknowledged them all.
pub fn publish_many(port: u16, topic: &str, payloads: &[Vec<u8>]) {
    let id = format!("test-flood-{}", std::process::id());
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    let n = payloads.len();
    let acks = std::thread::spawn(move || {
        let (mut acks, end) = (0, Instant::now() + Duration::from_secs(30));
        while acks < n && Instant::now() < end {
            match conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)))) => acks += 1,
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                _ => {}
            }
        }
        (acks, conn)
    });
    for p in payloads {
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, p.clone()).unwrap();
    }
    let (acked, mut conn) = acks.join().unwrap();
    assert_eq!(acked, n, "publishing {n} messages on {topic}: not all acknowledged by the broker");
    let _ = client.disconnect();
    for _ in 0..20 {
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => break,
            _ => {}
        }
    }
}

/// The command JSON bytes.
pub fn command_json(
    id: &str,
    cmd: &str,
    args: Value,
    issued: chrono::DateTime<Utc>,
    expires: chrono::DateTime<Utc>,
) -> Vec<u8> {
    let t = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({"id": id, "cmd": cmd, "args": args, "issued_at": t(issued), "expires_at": t(expires)})
        .to_string()
        .into_bytes()
}

pub fn envelope(key_id: &str, key: &SigningKey, payload: &[u8]) -> Vec<u8> {
    let sig = key.sign(payload);
    json!({"key_id": key_id, "payload": b64(payload), "sig": b64(&sig.to_bytes())}).to_string().into_bytes()
}

/// The city's side: signs commands, publishes them on `cmd/req` and reads the answers on `cmd/res`.
pub struct Ops<'a> {
    pub broker_port: u16,
    pub gateway: String,
    pub sub: &'a Subscriber,
    pub key: SigningKey,
    next: AtomicU32,
    /// Ids of the readiness pings sent (some may have been lost before the daemon subscribed).
    ready_ids: std::sync::Mutex<Vec<String>>,
}

impl<'a> Ops<'a> {
    pub fn new(broker_port: u16, gateway: &str, sub: &'a Subscriber) -> Ops<'a> {
        Ops {
            broker_port,
            gateway: gateway.to_string(),
            sub,
            key: signing_key(),
            next: AtomicU32::new(1),
            ready_ids: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn fresh_id(&self, what: &str) -> String {
        format!("{}-{what}-{}", self.gateway, self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub fn send(&self, envelope: &[u8]) {
        publish(self.broker_port, &format!("city/{}/cmd/req", self.gateway), envelope);
    }

    /// A correctly signed envelope, valid from 30 s ago for 5 minutes.
    pub fn signed(&self, id: &str, cmd: &str, args: Value) -> Vec<u8> {
        let now = Utc::now();
        envelope(
            "ops-1",
            &self.key,
            &command_json(id, cmd, args, now - TimeDelta::seconds(30), now + TimeDelta::minutes(5)),
        )
    }

    /// Every answer on `cmd/res` so far (duplicates included: delivery is at least once).
    pub fn answers(&self) -> Vec<Value> {
        self.sub.on_topic("/cmd/res").into_iter().map(|m| m.json).collect()
    }

    pub fn try_answer(&self, id: &str) -> Option<Value> {
        self.answers().into_iter().find(|a| a["id"] == id)
    }

    pub fn answer_within(&self, id: &str, limit: Duration, logs: &dyn Fn() -> String) -> Value {
        let mut found = None;
        wait_until(limit, || {
            found = self.try_answer(id);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!("no answer to command {id} on cmd/res; answers: {:?}\nlog:\n{}", self.answers(), logs())
        })
    }

    /// Sends a correctly signed command and returns its answer.
    pub fn call(&self, cmd: &str, args: Value, logs: &dyn Fn() -> String) -> Value {
        let id = self.fresh_id(cmd);
        self.send(&self.signed(&id, cmd, args));
        self.answer_within(&id, ANSWER, logs)
    }

    /// Waits until the daemon answers commands: pings until one is answered (the daemon subscribes to
    /// `cmd/req` after it connected; a command published before that is not delivered to it).
    pub fn wait_ready(&self, logs: &dyn Fn() -> String) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let id = self.fresh_id("ready");
            self.ready_ids.lock().unwrap().push(id.clone());
            self.send(&self.signed(&id, "ping", json!({})));
            let answered = wait_until(Duration::from_secs(1), || {
                let ids = self.ready_ids.lock().unwrap();
                self.answers().iter().any(|a| a["id"].as_str().is_some_and(|i| ids.iter().any(|r| r == i)))
            });
            if answered {
                return;
            }
        }
        panic!("the daemon never answered a ping; log:\n{}", logs());
    }

    /// How many distinct readiness pings were answered (each one was executed once, as `ok`).
    pub fn ready_answered(&self) -> usize {
        let ids = self.ready_ids.lock().unwrap();
        let mut answered: Vec<String> = self
            .answers()
            .iter()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .filter(|i| ids.contains(i))
            .collect();
        answered.sort();
        answered.dedup();
        answered.len()
    }
}

pub fn assert_ok(answer: &Value, id_hint: &str) -> Value {
    assert_eq!(answer["ok"], true, "{id_hint}: expected ok, got {answer}");
    assert!(answer.get("error").is_none(), "{id_hint}: {answer}");
    assert!(answer["result"].is_object(), "{id_hint}: result must be an object: {answer}");
    answer["result"].clone()
}

pub fn assert_refused(answer: &Value, code: &str) {
    assert_eq!(answer["ok"], false, "expected {code}, got {answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    assert!(answer.get("result").is_none(), "{answer}");
}
