//! Operations: counters, logging (later: remote commands, metrics HTTP, systemd).

pub mod counters;
pub mod logging;
