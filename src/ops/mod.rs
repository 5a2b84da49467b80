//! Operations: how the city and a technician run the gateway. Signed commands (verified by the core's
//! `commands`, executed by `executor`), the HTTP server (`http`: `/metrics`, `/healthz`, the status
//! page from `board` + `status_page`), `health` (systemd watchdog and readiness) and `logging`
//! (journald). The process-wide counters are in `crate::counters`, the supervisor in `runtime`.

pub mod board;
pub use district_core::commands;
pub mod executor;
pub mod health;
pub mod http;
pub mod logging;
pub mod mac_view;
pub mod metrics;
pub mod status_page;
