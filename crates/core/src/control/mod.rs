//! Local control loops: pure state machines driven by events and `now` (no clock, no I/O, no tokio).

pub mod demand;
pub mod lighting;
