//! Operations: how the city and a technician run the gateway. Signed commands (verified by the core's
//! `commands`, executed by `executor`), the HTTP server (`http`: `/metrics`, `/healthz`, the status
//! page from `board` + `status_page`), process-wide `counters`, `health` (systemd watchdog and
//! readiness), `logging` (journald), and the `supervisor` (start, reloads with rollback, signals).

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
