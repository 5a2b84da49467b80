//! Frames a simulated ABP device sends: real LoRaWAN 1.0.x PHYPayloads, encrypted and MIC'd by the
//! `lorawan` crate's creator, so the simulator exercises the same verification path as a real device.

use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;

use crate::keys::{DevAddr, Key128};

/// Largest FRMPayload LoRaWAN allows (MACPayload 250 bytes minus FHDR and FPort). Also keeps the crate's
/// 256-byte build buffer from overflowing.
pub const MAX_FRM_PAYLOAD: usize = 242;

/// FPort-0 payloads are MAC commands; the creator only takes them as commands, so a raw byte string is
/// passed as one "command" whose CID is its first byte (the creator just concatenates CID + payload).
struct RawMac<'a>(&'a [u8]);

impl SerializableMacCommand for RawMac<'_> {
    fn payload_bytes(&self) -> &[u8] {
        self.0.get(1..).unwrap_or_default()
    }
    fn cid(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }
    fn payload_len(&self) -> usize {
        self.0.len().saturating_sub(1)
    }
}

/// Builds an uplink data frame. For `f_port == 0`, `payload` is a MAC-command byte string and is encrypted
/// with the NwkSKey as LoRaWAN requires. A payload longer than [`MAX_FRM_PAYLOAD`] is cut to that length.
/// Only the low 16 bits of `f_cnt` go on air; MIC and encryption use all 32.
pub fn build_data_uplink(
    dev_addr: DevAddr,
    nwk_s_key: &Key128,
    app_s_key: &Key128,
    f_cnt: u32,
    f_port: u8,
    payload: &[u8],
    confirmed: bool,
) -> Vec<u8> {
    let payload = payload.get(..MAX_FRM_PAYLOAD).unwrap_or(payload);
    let nwk = NewSKey::from(*nwk_s_key.expose());
    let app = AppSKey::from(*app_s_key.expose());
    let mut phy = DataPayloadCreator::new();
    phy.set_uplink(true)
        .set_confirmed(confirmed)
        .set_dev_addr(&dev_addr.0.to_le_bytes())
        .set_fcnt(f_cnt)
        .set_f_port(f_port);
    let raw = RawMac(payload);
    let built = if f_port == 0 && !payload.is_empty() {
        let cmds: [&dyn SerializableMacCommand; 1] = [&raw];
        phy.build(&[], &cmds, &nwk, &app)
    } else {
        phy.build(payload, &[], &nwk, &app)
    };
    // The inputs above are within every limit the creator checks, so this cannot fail; an empty Vec
    // (which no receiver accepts) is the harmless fallback.
    built.map(<[u8]>::to_vec).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::{MacCommand, Sessions, UplinkError};

    fn keys() -> (Key128, Key128) {
        (Key128::new([0x2b; 16]), Key128::new([0x7e; 16]))
    }

    #[test]
    fn round_trip_through_sessions() {
        let (nwk, app) = keys();
        let addr = DevAddr(0x2601_1bda);
        let mut s = Sessions::new();
        s.upsert("meter-1", addr, nwk, app, false);
        for (i, fcnt) in [0u32, 1, 2, 1000].into_iter().enumerate() {
            let confirmed = i % 2 == 1;
            let phy = build_data_uplink(addr, &nwk, &app, fcnt, 5, b"temperature=21.5", confirmed);
            let up = s.accept_uplink(&phy).unwrap();
            assert_eq!(up.device, "meter-1");
            assert_eq!(up.f_cnt, fcnt);
            assert_eq!(up.f_port, Some(5));
            assert_eq!(up.payload, b"temperature=21.5");
            assert_eq!(up.confirmed, confirmed);
            assert!(up.is_application_data());
        }
        // FPort 0: MAC commands encrypted with NwkSKey.
        let phy = build_data_uplink(addr, &nwk, &app, 1001, 0, &[0x02, 0x06, 0xff, 0x05], false);
        let up = s.accept_uplink(&phy).unwrap();
        assert!(!up.is_application_data());
        assert_eq!(up.payload, [0x02, 0x06, 0xff, 0x05]);
        assert_eq!(up.mac_commands, vec![MacCommand::LinkCheckReq, MacCommand::DevStatusAns { battery: 255, margin: 5 }]);
        // Empty payload keeps its FPort.
        let phy = build_data_uplink(addr, &nwk, &app, 1002, 9, &[], false);
        let up = s.accept_uplink(&phy).unwrap();
        assert_eq!((up.f_port, up.payload.len()), (Some(9), 0));
        // Oversized payload is cut, not a panic.
        let phy = build_data_uplink(addr, &nwk, &app, 1003, 9, &[0xaa; 400], false);
        assert_eq!(s.accept_uplink(&phy).unwrap().payload.len(), MAX_FRM_PAYLOAD);
        // Wrong key on the simulator side: BadMic.
        let phy = build_data_uplink(addr, &Key128::new([1; 16]), &app, 1004, 9, b"x", false);
        assert_eq!(s.accept_uplink(&phy), Err(UplinkError::BadMic { dev_addr: addr }));
    }
}
