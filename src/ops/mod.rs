//! Operations: counters, logging (later: remote commands, metrics HTTP, systemd).

pub mod board;
pub use district_core::commands;
pub mod counters;
pub mod executor;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod status_page;
pub mod supervisor;
