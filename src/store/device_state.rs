//! Per-device LoRaWAN lifecycle state in the store: session records (`s/`), cleared uplink counters,
//! last-heard routes (`r/`), MAC states (`a/`) and remote device changes written in the same batch as the state they
//! cause. The encodings are private to this file.
//!
//! `s/` + device: the legacy value (36 bytes: DevAddr, NwkSKey, AppSKey of an OTAA session) or, since
//! sessions have a lifecycle, version 2: `2`, has-current (0/1), [current: 36 bytes], number of retired
//! sessions (u8), each 36 bytes + fcnt-up-present (0/1) + FCntUp (u32 BE) + FCntDown (u32 BE). A
//! version-2 value is never 36 bytes long (3 + 36·c + 45·n), so the two cannot be confused.

use std::collections::HashMap;

use super::codec::Reader;
use super::state::{prefixed, FCNT_PREFIX, REMOTE_DEVICE_PREFIX, SESSION_PREFIX};
use super::{Batch, Store, StoreError};
use crate::keys::{DevAddr, Eui64, Key128};
use crate::lorawan::lifecycle::{Counters, RetiredSession, SessionId, SessionRecord};

const ROUTE_PREFIX: &[u8] = b"r/";
/// The MAC engine's state of a device (the core's JSON, `MacState::to_bytes`); empty: none.
const MAC_PREFIX: &[u8] = b"a/";
const RECORD_V2: u8 = 2;
const LEGACY_LEN: usize = 36;

/// Where a device was last heard, as stored: the source's name (indexes change when the config's
/// sources are reordered) and the gateway's EUI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoute {
    pub source: String,
    pub gateway: Eui64,
}

fn put_session(v: &mut Vec<u8>, s: &SessionId) {
    v.extend_from_slice(&s.dev_addr.0.to_be_bytes());
    v.extend_from_slice(s.nwk_s_key.expose());
    v.extend_from_slice(s.app_s_key.expose());
}

fn u32_be(r: &mut Reader<'_>) -> Option<u32> {
    Some(u32::from_be_bytes(r.bytes(4)?.try_into().ok()?))
}

fn get_session(r: &mut Reader<'_>) -> Option<SessionId> {
    let dev_addr = DevAddr(u32_be(r)?);
    let nwk: [u8; 16] = r.bytes(16)?.try_into().ok()?;
    let app: [u8; 16] = r.bytes(16)?.try_into().ok()?;
    Some(SessionId { dev_addr, nwk_s_key: Key128::new(nwk), app_s_key: Key128::new(app) })
}

fn encode_record(rec: &SessionRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(3 + 36 + 45 * rec.retired.len());
    v.push(RECORD_V2);
    v.push(u8::from(rec.current.is_some()));
    if let Some(c) = &rec.current {
        put_session(&mut v, c);
    }
    let n = rec.retired.len().min(u8::MAX as usize);
    v.push(n as u8);
    for r in rec.retired.iter().take(n) {
        put_session(&mut v, &r.session);
        v.push(u8::from(r.counters.fcnt_up.is_some()));
        v.extend_from_slice(&r.counters.fcnt_up.unwrap_or(0).to_be_bytes());
        v.extend_from_slice(&r.counters.fcnt_down.to_be_bytes());
    }
    v
}

pub(super) fn decode_record(v: &[u8]) -> Option<SessionRecord> {
    let mut r = Reader::new(v);
    if v.len() == LEGACY_LEN {
        return Some(SessionRecord { current: Some(get_session(&mut r)?), retired: Vec::new() });
    }
    if r.u8()? != RECORD_V2 {
        return None;
    }
    let current = match r.u8()? {
        0 => None,
        1 => Some(get_session(&mut r)?),
        _ => return None,
    };
    let n = r.u8()?;
    let mut retired = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let session = get_session(&mut r)?;
        let has_up = r.u8()? == 1;
        let up = u32_be(&mut r)?;
        let down = u32_be(&mut r)?;
        retired.push(RetiredSession { session, counters: Counters { fcnt_up: has_up.then_some(up), fcnt_down: down } });
    }
    r.is_empty().then_some(SessionRecord { current, retired })
}

impl Batch {
    /// A device's session record (written whenever it changes).
    pub fn set_session_record(&mut self, device: &str, rec: &SessionRecord) {
        self.kv.push((prefixed(SESSION_PREFIX, device.as_bytes()), encode_record(rec)));
    }

    /// No uplink accepted yet under the device's current keys (an empty value: read as absent).
    pub fn reset_fcnt(&mut self, device: &str) {
        self.kv.push((prefixed(FCNT_PREFIX, device.as_bytes()), Vec::new()));
    }

    /// Where the device was last heard (None: forgotten).
    pub fn set_route(&mut self, device: &str, route: Option<&StoredRoute>) {
        let v = route.map_or_else(Vec::new, |r| {
            let mut v = r.gateway.0.to_be_bytes().to_vec();
            v.extend_from_slice(r.source.as_bytes());
            v
        });
        self.kv.push((prefixed(ROUTE_PREFIX, device.as_bytes()), v));
    }

    /// A device's MAC state (None: forgotten).
    pub fn set_mac_state(&mut self, device: &str, state: Option<Vec<u8>>) {
        self.kv.push((prefixed(MAC_PREFIX, device.as_bytes()), state.unwrap_or_default()));
    }

    /// A remote device change (`device.upsert` / `device.remove`), in the same atomic entry as the
    /// session state it causes. See [`Store::set_remote_device`].
    pub fn set_remote_device(&mut self, name: &str, json: Option<&[u8]>) {
        self.kv.push((prefixed(REMOTE_DEVICE_PREFIX, name.as_bytes()), json.unwrap_or(&[]).to_vec()));
    }
}

impl Store {
    /// Every device's session record (also of devices no longer configured). A value that cannot be
    /// read is left out and logged (its device starts as new).
    pub fn session_records(&self) -> Result<HashMap<String, SessionRecord>, StoreError> {
        self.read_state(|tree| {
            let mut out = HashMap::new();
            for item in tree.scan_prefix(SESSION_PREFIX) {
                let (k, v) = item?;
                let name = String::from_utf8_lossy(&k[SESSION_PREFIX.len()..]).into_owned();
                match decode_record(&v) {
                    Some(rec) => {
                        out.insert(name, rec);
                    }
                    None => {
                        tracing::error!(device = %name, bytes = v.len(), "stored session record unreadable: ignored")
                    }
                }
            }
            Ok(out)
        })
    }

    /// Each device's MAC state as stored (decoded by the core).
    pub fn mac_states(&self) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        self.read_state(|tree| {
            let mut out = HashMap::new();
            for item in tree.scan_prefix(MAC_PREFIX) {
                let (k, v) = item?;
                if !v.is_empty() {
                    out.insert(String::from_utf8_lossy(&k[MAC_PREFIX.len()..]).into_owned(), v.to_vec());
                }
            }
            Ok(out)
        })
    }

    /// Where each device was last heard.
    pub fn routes(&self) -> Result<HashMap<String, StoredRoute>, StoreError> {
        self.read_state(|tree| {
            let mut out = HashMap::new();
            for item in tree.scan_prefix(ROUTE_PREFIX) {
                let (k, v) = item?;
                let (Some(eui), Some(source)) = (v.get(0..8), v.get(8..)) else { continue };
                let Ok(eui) = <[u8; 8]>::try_from(eui) else { continue };
                out.insert(
                    String::from_utf8_lossy(&k[ROUTE_PREFIX.len()..]).into_owned(),
                    StoredRoute {
                        source: String::from_utf8_lossy(source).into_owned(),
                        gateway: Eui64(u64::from_be_bytes(eui)),
                    },
                );
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(k: u8) -> SessionId {
        SessionId {
            dev_addr: DevAddr(0x2600_0100 + u32::from(k)),
            nwk_s_key: Key128::new([k; 16]),
            app_s_key: Key128::new([k.wrapping_add(1); 16]),
        }
    }

    #[test]
    fn records_round_trip_and_legacy_values_are_read() {
        let rec = SessionRecord {
            current: Some(sid(1)),
            retired: vec![
                RetiredSession { session: sid(2), counters: Counters { fcnt_up: Some(7), fcnt_down: 3 } },
                RetiredSession { session: sid(3), counters: Counters { fcnt_up: None, fcnt_down: 0 } },
            ],
        };
        assert_eq!(decode_record(&encode_record(&rec)), Some(rec));
        let empty = SessionRecord::default();
        assert_eq!(decode_record(&encode_record(&empty)), Some(empty));
        let mut legacy = Vec::new();
        put_session(&mut legacy, &sid(4));
        assert_eq!(decode_record(&legacy), Some(SessionRecord { current: Some(sid(4)), retired: vec![] }));
        assert_eq!(decode_record(&[2, 7]), None);
        assert_eq!(decode_record(&[]), None);
    }

    #[test]
    fn state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let route = StoredRoute { source: "gwmp".into(), gateway: Eui64(0xAA55) };
        {
            let s = Store::open(dir.path(), 1 << 20, chrono::Utc::now()).unwrap();
            let mut b = Batch::default();
            b.set_session_record("lamp-1", &SessionRecord { current: Some(sid(9)), retired: vec![] });
            b.set_fcnt("lamp-1", 12);
            b.set_route("lamp-1", Some(&route));
            b.set_fcnt("lamp-2", 5);
            b.set_mac_state("lamp-1", Some(b"{\"mac\":1}".to_vec()));
            b.set_mac_state("lamp-2", Some(b"{}".to_vec()));
            s.commit(b, chrono::Utc::now()).unwrap();
            let mut b = Batch::default();
            b.reset_fcnt("lamp-2");
            b.set_mac_state("lamp-2", None);
            s.commit(b, chrono::Utc::now()).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Store::open(dir.path(), 1 << 20, chrono::Utc::now()).unwrap();
        assert_eq!(s.session_records().unwrap()["lamp-1"].current, Some(sid(9)));
        assert_eq!(s.routes().unwrap()["lamp-1"], route);
        let f = s.fcnts().unwrap();
        assert_eq!(f.get("lamp-1"), Some(&12));
        assert_eq!(f.get("lamp-2"), None, "a reset counter reads as absent");
        let macs = s.mac_states().unwrap();
        assert_eq!(macs.get("lamp-1").map(Vec::as_slice), Some(&b"{\"mac\":1}"[..]));
        assert!(!macs.contains_key("lamp-2"), "a forgotten MAC state reads as absent");
    }
}
