//! The pure core of district-gateway: every decision the gateway makes, as plain state machines that
//! take `now` and an input and return outputs. No clock, no sleep, no I/O, no async runtime: this
//! crate's dependency tree has no tokio, mio, sled, rumqttc, rppal, tokio-serial or nix, and chrono is
//! built without its `clock` feature (so reading the system time does not compile here). The daemon crate
//! (`district-gateway`, the shell) feeds it frames, samples, commands and the time, and does the
//! journaling, flushing and sending. See ARCHITECTURE.md for the map.

pub mod aggregate;
pub mod commands;
pub mod control;
pub mod decode;
pub mod device_frames;
pub mod district;
pub mod durability;
pub mod events;
pub mod ingest;
pub mod keys;
pub mod loops;
pub mod lorawan;
pub mod meter;
pub mod netserver;
pub mod openadr;
pub mod reading;
#[doc(hidden)]
pub mod test_support;
pub mod topic;
pub mod wmbus;
pub mod wmbus_meters;
pub mod wmbus_stick;
