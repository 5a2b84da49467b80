//! The network server's state in the store: what the pipeline writes from the network server's
//! outputs ([`persist_into`]), and how the network server gets its devices' state back at start
//! ([`restore`]): sessions current and retired, counters, last-heard routes, MAC states (accepted
//! settings, pending MAC requests), used nonces, the sessions of removed devices, and the multicast
//! groups' counters. Shell code (it reads the store); the rules it applies are the pure
//! network server's (`NetworkServer::restore_device`, `lorawan::lifecycle`).

use crate::ingest::Origin;
use crate::lorawan::lifecycle::Counters;
use crate::lorawan::MacState;
use crate::netserver::{DeviceInfo, NetworkServer, Output, Persist, Provisioning, StoredDevice};
use crate::store::{Batch, Store, StoreError, StoredRoute};

/// The network server's state changes into a store batch. Routes are stored by source name
/// (`sources[i]` is the name of source `i`): indexes change when the config's sources are reordered.
pub fn persist_into(batch: &mut Batch, persist: Vec<Persist>, sources: &[String]) {
    for p in persist {
        match p {
            Persist::FcntUp { device, fcnt } => batch.set_fcnt(&device, fcnt),
            Persist::FcntUpReset { device } => batch.reset_fcnt(&device),
            Persist::FcntDown { device, next } => batch.set_fcnt_down(&device, next),
            Persist::Session { device, record } => batch.set_session_record(&device, &record),
            Persist::Route { device, origin } => {
                let route = origin.and_then(|o| {
                    let source = sources.get(o.source)?.clone();
                    Some(StoredRoute { source, gateway: o.gateway })
                });
                batch.set_route(&device, route.as_ref());
            }
            Persist::DevNonce { dev_eui, nonce } => batch.add_dev_nonce(dev_eui, nonce),
            Persist::JoinNonce { next } => batch.set_join_nonce(next),
            Persist::MacState { device, state } => batch.set_mac_state(&device, state.map(|s| s.to_bytes())),
            Persist::McFcntDown { group, next } => batch.set_mc_fcnt_down(&group, next),
        }
    }
}

/// Gives a new network server its devices (as configured now) with their stored state. Returns what
/// the restore decided (new sessions for devices re-keyed while the gateway was stopped, records for
/// devices seen the first time): the caller commits and flushes it before anything is sent.
pub fn restore(
    ns: &mut NetworkServer,
    store: &Store,
    devices: Vec<(String, DeviceInfo, Provisioning)>,
    sources: &[String],
) -> Result<Output, StoreError> {
    let mut records = store.session_records()?;
    let mut fcnts = store.fcnts()?;
    let mut fcnts_down = store.fcnts_down()?;
    let routes = store.routes()?;
    let mut macs = store.mac_states()?;
    let origin_of = |r: &StoredRoute| {
        let source = sources.iter().position(|s| *s == r.source)?;
        Some(Origin { source, gateway: r.gateway })
    };
    let mut out = Output::default();
    for (name, info, prov) in devices {
        let stored = StoredDevice {
            record: records.remove(&name),
            fcnt_up: fcnts.remove(&name),
            fcnt_down: fcnts_down.remove(&name),
            route: routes.get(&name).and_then(origin_of),
            mac: macs.remove(&name).and_then(|b| {
                let state = MacState::from_bytes(&b);
                if state.is_none() {
                    tracing::error!(device = %name, bytes = b.len(), "stored MAC state unreadable: starts afresh");
                }
                state
            }),
        };
        let o = ns.restore_device(&name, info, prov, stored);
        out.persist.extend(o.persist);
        out.notes.extend(o.notes);
    }
    // Devices the store remembers that are not configured now (removed): their sessions are kept, so
    // that a device coming back with the same keys continues its counters.
    for (name, record) in records {
        let counters = Counters { fcnt_up: fcnts.remove(&name), fcnt_down: fcnts_down.remove(&name).unwrap_or(0) };
        ns.restore_removed(&name, record, counters);
    }
    for (eui, nonces) in store.dev_nonces()? {
        ns.restore_nonces(eui, nonces);
    }
    ns.restore_join_nonce(store.join_nonce()?);
    for (group, next) in store.mc_fcnts_down()? {
        ns.restore_multicast_f_cnt(&group, next);
    }
    Ok(out)
}

/// Commits and flushes a restore's output (nothing is written when nothing changed).
pub fn commit_restore(store: &Store, out: Output, sources: &[String]) -> Result<(), StoreError> {
    if out.persist.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::default();
    persist_into(&mut batch, out.persist, sources);
    store.commit(batch, crate::clock::now())?;
    store.flush_blocking()
}
