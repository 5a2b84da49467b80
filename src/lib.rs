//! district-gateway: one daemon per district gateway. See ARCHITECTURE.md for the map.
//!
//! Pure core (no tokio, sled, rppal, sockets or clock): `keys`, `lorawan`, `reading`, `ingest`,
//! `config`. The shell: `io` (sources and the MQTT uplink), `store` (sled), `ops`, `runtime`, `sim`.

pub mod aggregate;
pub mod clock;
pub mod config;
pub mod control;
pub mod decode;
pub mod events;
pub mod ingest;
pub mod io;
pub mod keys;
pub mod loops;
pub mod lorawan;
pub mod meter;
pub mod netserver;
pub mod ns_store;
pub mod ops;
pub mod reading;
pub mod runtime;
pub mod sim;
pub mod store;
#[doc(hidden)]
pub mod test_hooks;

#[cfg(test)]
mod test_support;
