//! Operations: signed commands (`commands`, from the core) and their executor, the ops HTTP server
//! (metrics, health, the status page), logging.

pub mod board;
pub use district_core::commands;
pub mod executor;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod status_page;
