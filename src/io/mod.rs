//! The shell's adapters: sources that receive frames and the uplink to the city's broker.

pub mod gwmp;
pub mod mqtt;
