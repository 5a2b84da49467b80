//! The shell's adapters: sources that receive frames and the uplink to the city's broker.

pub mod gpio;
pub mod gwmp;
pub mod mqtt;
pub mod openadr;
pub mod pty;
pub mod serial_lora;
pub mod serial_port;
pub mod sml;
pub mod status;
pub mod sx127x;
pub mod wmbus;
