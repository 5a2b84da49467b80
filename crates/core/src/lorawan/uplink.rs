//! One data frame: header fields read with bounds checks, MIC check and FRMPayload decryption through the
//! `lorawan` crate, and the types handed to the rest of the daemon.
//!
//! The header is read here rather than through the crate because the crate's `f_port()` reports "no FPort"
//! for a frame that has an FPort and an empty FRMPayload (LoRaWAN allows that), and because its accessors
//! index slices directly.

use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::AES128;
use lorawan::parser::{DataPayload, EncryptedDataPayload, PhyPayload};
use serde::Serialize;

use crate::keys::{DevAddr, Key128};
use crate::lorawan::mac::{MacCommand, MacParseError};

/// LoRaWAN 1.0.x MAX_FCNT_GAP: how far ahead of the last accepted counter a frame may be.
pub const MAX_FCNT_GAP: u32 = 16384;

/// MHDR + FHDR without FOpts (7) + MIC.
const MIN_DATA_LEN: usize = 1 + 7 + 4;
const MIC_LEN: usize = 4;

/// The message type from the MHDR (LoRaWAN 1.0.x names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MType {
    JoinRequest,
    JoinAccept,
    UnconfirmedDataUp,
    UnconfirmedDataDown,
    ConfirmedDataUp,
    ConfirmedDataDown,
    /// 0b110: RFU in 1.0.x (RejoinRequest in 1.1).
    Rfu,
    Proprietary,
}

impl MType {
    pub fn from_mhdr(mhdr: u8) -> MType {
        match mhdr >> 5 {
            0 => MType::JoinRequest,
            1 => MType::JoinAccept,
            2 => MType::UnconfirmedDataUp,
            3 => MType::UnconfirmedDataDown,
            4 => MType::ConfirmedDataUp,
            5 => MType::ConfirmedDataDown,
            6 => MType::Rfu,
            _ => MType::Proprietary,
        }
    }

    pub fn is_data_up(self) -> bool {
        matches!(self, MType::UnconfirmedDataUp | MType::ConfirmedDataUp)
    }

    pub fn is_data(self) -> bool {
        matches!(
            self,
            MType::UnconfirmedDataUp | MType::UnconfirmedDataDown | MType::ConfirmedDataUp | MType::ConfirmedDataDown
        )
    }
}

/// A verified, decrypted uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// The configured device name of the session whose keys verified the MIC.
    pub device: String,
    pub dev_addr: DevAddr,
    /// The reconstructed 32-bit counter the MIC was verified with. Persist it as the device's last FCnt.
    pub f_cnt: u32,
    pub f_port: Option<u8>,
    /// Decrypted FRMPayload; for FPort 0 these are the (NwkSKey-decrypted) MAC commands.
    pub payload: Vec<u8>,
    /// FOpts as received (plaintext in 1.0.x).
    pub fopts: Vec<u8>,
    /// MAC commands from FOpts or from the FPort-0 payload.
    pub mac_commands: Vec<MacCommand>,
    /// Set when the MAC commands could not be parsed to the end (truncated or unknown CID).
    pub mac_error: Option<MacParseError>,
    pub confirmed: bool,
    pub adr: bool,
    /// ADRACKReq (FCtrl bit 6): the device wants a downlink to know the network still hears it.
    pub adr_ack_req: bool,
    pub ack: bool,
    /// True when a `relax_fcnt` device was accepted with a counter lower than its last one (a restart).
    pub fcnt_reset: bool,
}

impl Uplink {
    /// FPort 1..=223 carries application data; 0 is MAC only, 224 is the LoRaWAN test port, 225.. RFU.
    pub fn is_application_data(&self) -> bool {
        matches!(self.f_port, Some(1..=223))
    }
}

/// Why an uplink was refused. Messages carry identifiers and counters only, never keys or payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    #[error("malformed PHYPayload: {0}")]
    Malformed(String),
    #[error("not an uplink data frame ({mtype:?})")]
    NotUplinkData { mtype: MType },
    #[error("no session for DevAddr {0}")]
    UnknownDevAddr(DevAddr),
    #[error("MIC check failed for DevAddr {dev_addr} with every candidate session")]
    BadMic { dev_addr: DevAddr },
    #[error("replayed frame from {device}: FCnt {f_cnt} <= last accepted {last}")]
    Replay { device: String, f_cnt: u32, last: u32 },
    #[error("FCnt gap too large for {device}: FCnt {f_cnt}, last accepted {last} (max gap {max_gap})", max_gap = MAX_FCNT_GAP)]
    FCntGap { device: String, f_cnt: u32, last: u32 },
}

/// A data frame (either direction) parsed far enough to check MICs and decrypt.
pub(crate) struct DataFrame {
    pub mtype: MType,
    pub dev_addr: DevAddr,
    pub fctrl: u8,
    pub fcnt16: u16,
    pub fopts: Vec<u8>,
    pub f_port: Option<u8>,
    /// Offset of the FRMPayload in the PHYPayload (only meaningful when `f_port` is set).
    frm_start: usize,
    enc: EncryptedDataPayload<Vec<u8>, DefaultFactory>,
}

impl DataFrame {
    pub fn parse(phy: &[u8]) -> Result<DataFrame, UplinkError> {
        let malformed = |why: &str| UplinkError::Malformed(why.to_string());
        let mhdr = *phy.first().ok_or_else(|| malformed("empty"))?;
        let mtype = MType::from_mhdr(mhdr);
        if !mtype.is_data() {
            return Err(UplinkError::NotUplinkData { mtype });
        }
        if mhdr & 0x03 != 0 {
            return Err(malformed("unsupported LoRaWAN major version"));
        }
        if phy.len() < MIN_DATA_LEN {
            return Err(UplinkError::Malformed(format!(
                "{} bytes, a data frame has at least {MIN_DATA_LEN}",
                phy.len()
            )));
        }
        let addr: [u8; 4] = phy.get(1..5).and_then(|b| b.try_into().ok()).ok_or_else(|| malformed("short FHDR"))?;
        let fctrl = *phy.get(5).ok_or_else(|| malformed("short FHDR"))?;
        let fcnt: [u8; 2] = phy.get(6..8).and_then(|b| b.try_into().ok()).ok_or_else(|| malformed("short FHDR"))?;
        let fopts_end = 8 + usize::from(fctrl & 0x0f);
        let mic_start = phy.len() - MIC_LEN;
        if fopts_end > mic_start {
            return Err(malformed("FOptsLen runs past the MIC"));
        }
        let fopts = phy.get(8..fopts_end).ok_or_else(|| malformed("FOptsLen runs past the MIC"))?.to_vec();
        let f_port = if fopts_end < mic_start { phy.get(fopts_end).copied() } else { None };

        let enc = match lorawan::parser::parse(phy.to_vec()) {
            Ok(PhyPayload::Data(DataPayload::Encrypted(enc))) => enc,
            Ok(_) => return Err(malformed("not a data frame")),
            Err(e) => return Err(UplinkError::Malformed(format!("{e:?}"))),
        };
        Ok(DataFrame {
            mtype,
            dev_addr: DevAddr(u32::from_le_bytes(addr)),
            fctrl,
            fcnt16: u16::from_le_bytes(fcnt),
            fopts,
            f_port,
            frm_start: fopts_end + 1,
            enc,
        })
    }

    /// MIC check with the full 32-bit counter (direction comes from the MHDR).
    pub fn mic_ok(&self, nwk_s_key: &Key128, fcnt: u32) -> bool {
        self.enc.validate_mic(&AES128(*nwk_s_key.expose()), fcnt)
    }

    /// Decrypts the FRMPayload (AppSKey, or NwkSKey for FPort 0) and returns it. Does not check the MIC.
    pub fn decrypt(self, nwk_s_key: &Key128, app_s_key: &Key128, fcnt: u32) -> Result<Vec<u8>, UplinkError> {
        if self.f_port.is_none() {
            return Ok(Vec::new());
        }
        let frm_start = self.frm_start;
        let nwk = AES128(*nwk_s_key.expose());
        let app = AES128(*app_s_key.expose());
        let dec = self
            .enc
            .decrypt(Some(&nwk), Some(&app), fcnt)
            .map_err(|e| UplinkError::Malformed(format!("decryption: {e:?}")))?;
        let bytes = dec.to_inner();
        let end = bytes.len().saturating_sub(MIC_LEN);
        Ok(bytes.get(frm_start..end).map(<[u8]>::to_vec).unwrap_or_default())
    }

    pub fn confirmed(&self) -> bool {
        matches!(self.mtype, MType::ConfirmedDataUp | MType::ConfirmedDataDown)
    }
}
