//! district-gateway, the shell: configuration, the store, the I/O sources, MQTT, the ops HTTP server,
//! the runtime that wires them, and the simulator. Every decision is made by the pure core, the
//! `district-core` crate, whose modules are re-exported here under their old paths
//! (`crate::lorawan`, `crate::netserver`, ...; `crate::district` is the pipeline's step). See
//! ARCHITECTURE.md for the map.

pub use district_core::{
    aggregate, control, decode, district, durability, events, ingest, keys, loops, lorawan, meter, netserver, openadr,
    reading, topic, wmbus_meters, wmbus_stick,
};

pub mod bus;
pub mod clock;
pub mod codecs;
pub mod config;
pub mod counters;
pub mod io;
pub mod ns_store;
pub mod ops;
pub mod runtime;
pub mod sim;
pub mod store;
#[doc(hidden)]
pub mod test_hooks;
