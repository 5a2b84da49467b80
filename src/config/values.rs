//! Value types of the config with their own syntax (broker URLs, public keys) and the serde adapters
//! for hex keys and socket addresses. No error message here contains the input text: it may be a key.

use std::fmt;
use std::marker::PhantomData;
use std::net::Ipv6Addr;
use std::str::FromStr;

use base64::Engine as _;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::{DevAddr, Eui64, HexError, Key128};

/// A broker address: `mqtt://HOST[:PORT]` (TCP, default port 1883) or `mqtts://HOST[:PORT]` (TLS,
/// default port 8883). No user info, path, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MqttUrl {
    pub tls: bool,
    /// Host name or IP address; IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl MqttUrl {
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "mqtts"
        } else {
            "mqtt"
        }
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme(), self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme(), self.host, self.port)
        }
    }
}

/// Why a broker URL was refused (never quotes the URL: it might carry a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MqttUrlError(&'static str);

impl FromStr for MqttUrl {
    type Err = MqttUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("mqtt://") {
            (false, rest)
        } else if s.contains("://") {
            return Err(MqttUrlError("unsupported scheme; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"));
        } else {
            return Err(MqttUrlError("expected a URL mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"));
        };
        if rest.contains('@') {
            return Err(MqttUrlError("user info does not belong in the URL; use mqtt.username and mqtt.password_file"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(MqttUrlError("a broker URL has no path, query or fragment"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or(MqttUrlError("unclosed `[` in IPv6 host"))?;
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(MqttUrlError("invalid IPv6 address in brackets"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(MqttUrlError("expected `:PORT` after `]`"))?),
            };
            (addr, port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(MqttUrlError("the URL has no host"));
        }
        if !rest.starts_with('[')
            && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(MqttUrlError("the host may only contain letters, digits, `-`, `_` and `.` (IPv6 in brackets)"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(MqttUrlError("the port must be a number 1..=65535"));
                }
                Ok(p) => p,
            },
        };
        Ok(MqttUrl { tls, host: host.to_string(), port })
    }
}

impl Serialize for MqttUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MqttUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseVisitor::<MqttUrl>::new("a broker URL mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"))
    }
}

/// An Ed25519 public key, written in the config as base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey(pub [u8; 32]);

impl Ed25519PublicKey {
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({})", self.to_base64())
    }
}

/// Why an Ed25519 public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("expected base64 (standard alphabet, with padding) of a 32-byte Ed25519 public key")]
    NotBase64,
    #[error("expected base64 of a 32-byte Ed25519 public key, got {0} bytes")]
    Length(usize),
}

impl FromStr for Ed25519PublicKey {
    type Err = PublicKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| PublicKeyError::NotBase64)?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| PublicKeyError::Length(bytes.len()))?;
        Ok(Ed25519PublicKey(arr))
    }
}

impl Serialize for Ed25519PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Ed25519PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseVisitor::<Ed25519PublicKey>::new("a base64 Ed25519 public key"))
    }
}

/// Visits a string and parses it with `FromStr`; the error is the parser's, without the input.
struct ParseVisitor<T> {
    expecting: &'static str,
    _t: PhantomData<T>,
}

impl<T> ParseVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        ParseVisitor { expecting, _t: PhantomData }
    }
}

impl<T> Visitor<'_> for ParseVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse::<T>().map_err(E::custom)
    }
}

/// `SocketAddr` as `"IP:PORT"` with an error message that explains the syntax.
pub mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserializer, Serializer};

    #[derive(Debug, thiserror::Error)]
    #[error("expected an IP address and port such as 127.0.0.1:1700 or [::1]:1700 (host names are not allowed)")]
    pub struct SocketAddrError;

    pub(crate) fn parse(s: &str) -> Result<SocketAddr, SocketAddrError> {
        s.parse().map_err(|_| SocketAddrError)
    }

    struct Addr(SocketAddr);
    impl std::str::FromStr for Addr {
        type Err = SocketAddrError;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            parse(s).map(Addr)
        }
    }

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(super::ParseVisitor::<Addr>::new("an IP address and port such as 127.0.0.1:1700"))
            .map(|a| a.0)
    }
}

/// Hex strings into the key types of [`crate::keys`]. The `HexError` message carries lengths only.
macro_rules! hex_opt {
    ($module:ident, $ty:ty, $digits:expr, $to_hex:expr) => {
        pub mod $module {
            use super::*;

            struct Wrap($ty);
            impl FromStr for Wrap {
                type Err = HexError;
                fn from_str(s: &str) -> Result<Self, HexError> {
                    <$ty>::from_hex(s).map(Wrap)
                }
            }

            pub fn serialize<S: Serializer>(v: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                let to_hex: fn(&$ty) -> String = $to_hex;
                match v {
                    Some(v) => s.serialize_str(&to_hex(v)),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                d.deserialize_str(ParseVisitor::<Wrap>::new(concat!("a string of ", $digits, " hex digits")))
                    .map(|w| Some(w.0))
            }
        }
    };
}

hex_opt!(key128_opt, Key128, "32", |k| hex::encode(k.expose()));
hex_opt!(dev_addr_opt, DevAddr, "8", |a| a.to_string());
hex_opt!(eui64_opt, Eui64, "16", |e| e.to_string());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        let u: MqttUrl = "mqtts://broker.city.example".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "broker.city.example", 8883));
        let u: MqttUrl = "mqtt://127.0.0.1/".parse().unwrap();
        assert_eq!(u.port, 1883);
        let u: MqttUrl = "mqtt://[::1]:1884".parse().unwrap();
        assert_eq!(u.to_string(), "mqtt://[::1]:1884");
        for bad in [
            "tcp://x:1",
            "broker:1883",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h/topic",
            "mqtt://user:secretpw@h",
            "mqtt://h:1:2",
            "mqtt://[::1",
        ] {
            let e = bad.parse::<MqttUrl>().unwrap_err().to_string();
            assert!(!e.contains("secretpw"), "{e}");
        }
    }

    #[test]
    fn public_keys() {
        let k: Ed25519PublicKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse().unwrap();
        assert_eq!(k.0, [0; 32]);
        assert_eq!("AAAA".parse::<Ed25519PublicKey>(), Err(PublicKeyError::Length(3)));
    }
}
