//! LoRaWAN 1.0.x network-side core: sessions and frame counters, uplink verification and
//! decryption, cross-gateway de-duplication and a defensive MAC-command parser.
//!
//! Everything here is pure: no I/O, no clock (callers pass `now`), no async. The `lorawan` crate (0.9) does
//! the parsing of the PHYPayload envelope, the MIC and the FRMPayload decryption; the header fields that
//! the crate gets wrong or could panic on (FPort of an empty FRMPayload, MAC commands) are read here with
//! bounds-checked code.
//!
//! OTAA and downlinks: [`join`] (join server, JoinAccept, session keys, DevAddr allocation), [`downlink`]
//! (per-device queue, confirmed downlinks, MAC answers, window choice), and the EU868 rules in [`region`],
//! [`airtime`] and [`dutycycle`]. Network → device MAC commands: [`mac_engine`] (pending requests per
//! device, what it accepted, the answers it is owed), [`mac_down`] (their encodings) and [`adr`]. Join requests given to `Sessions::accept_uplink` still get
//! [`UplinkError::NotUplinkData`]: the caller routes MType JoinRequest to [`JoinServer`].

pub mod adr;
pub mod airtime;
pub mod dedup;
pub mod downlink;
pub mod dutycycle;
pub mod join;
pub mod lifecycle;
pub mod mac;
pub mod mac_down;
pub mod mac_engine;
pub mod multicast;
pub mod region;
pub mod session;
pub mod uplink;

pub use adr::AdrConfig;
pub use dedup::Dedup;
pub use downlink::{
    DeviceClass, DownlinkEvent, DownlinkFrame, DownlinkQueue, QueueConfig, ScheduleError, ScheduledDownlink, Scheduler,
};
pub use dutycycle::{DutyCycle, DutyCycleError, SubBand};
pub use join::{DevAddrAllocator, JoinContext, JoinError, JoinOutcome, JoinServer, NetId, OtaaDevice, SessionKeys};
pub use mac::{parse_mac_uplink, MacCommand, MacParseError};
pub use mac_down::MacRequest;
pub use mac_engine::{MacConfig, MacEngine, MacState, MacStatus};
pub use multicast::{McError, McGroup, McSent, Multicast};
pub use region::{Eu868, RxSettings, TxParams, UplinkRadio, Window};
pub use session::Sessions;
pub use uplink::{MType, Uplink, UplinkError};

#[cfg(test)]
pub(crate) mod testvectors {
    //! The shared public test vectors (`crate::test_support::vectors_dir`).
    use std::path::PathBuf;

    pub fn dir() -> PathBuf {
        crate::test_support::vectors_dir()
    }

    pub fn load(rel: &str) -> serde_json::Value {
        let path = dir().join(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

#[cfg(test)]
mod otaa_tests;
#[cfg(test)]
mod tests;
