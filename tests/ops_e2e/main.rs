//! Remote operations end to end: signed commands over a real MQTT broker to the daemon running as a
//! separate process, `config.apply` with its automatic rollback, `/metrics` and `/healthz`, SIGTERM and
//! SIGHUP. No timing assertions: only bounded waits.
//!
//! Commands are signed with the RFC 8032 TEST 1 key (its public key is configured as `[[ops.key]]`
//! `ops-1`); one command is also signed by the city's own signer, `tools/sign-command.py`, when python3
//! with `cryptography` is available (required when `CI` is set: see `common::require`).
//!
//! One test crate in modules: the helpers ([`harness`]: the daemon as a process and the rig around
//! it; [`traffic`]: uplinks; [`prometheus`]: a strict `/metrics` parser) and the tests by theme
//! ([`commands`], [`config_apply`], [`metrics`], [`signals`]). A test's full name includes its module
//! (`commands::signed_commands_are_checked_and_every_refusal_changes_nothing`, as `--exact` and
//! tests/no_skip_check.sh need it); filtering by a part of the name works as before.

#[path = "../common/mod.rs"]
mod common;

mod harness;
mod prometheus;
mod traffic;

mod commands;
mod config_apply;
mod metrics;
mod signals;
