//! Reading the frames on air with the peer's session keys (the `lorawan` crate, as the peer itself
//! does), so that a test can see the MAC commands the daemon sent and the peer answered; and the one
//! change the harness makes to the peer's uplinks (the ADR bit, see [`with_adr_bit`]).

use lorawan::creator::DataPayloadCreator;
use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::{DownlinkMacCommand, MacCommandIterator, SerializableMacCommand, UplinkMacCommand};
use lorawan::parser::{parse_with_factory, DataHeader, DataPayload, FCtrl, FRMPayload, PhyPayload};

/// The MAC commands the tests look at; the rest by name.
#[derive(Debug, Clone, PartialEq)]
pub enum Mac {
    LinkAdrReq { data_rate: u8, tx_power: u8, nb_trans: u8 },
    LinkAdrAns { status: u8 },
    RxTimingSetupReq { delay: u8 },
    RxTimingSetupAns,
    Other(String),
}

/// A data frame opened with the session keys.
#[derive(Debug, Clone)]
pub struct Opened {
    pub f_cnt: u16,
    pub f_port: Option<u8>,
    pub confirmed: bool,
    pub adr: bool,
    pub ack: bool,
    pub payload: Vec<u8>,
    /// From FOpts and from an FPort 0 payload.
    pub macs: Vec<Mac>,
}

/// Opens a data frame (either direction) with the session keys; `None` if it is not one of this
/// session's data frames (the MIC does not verify).
pub fn open(phy: &[u8], nwk: &NewSKey, app: &AppSKey, uplink: bool) -> Option<Opened> {
    let mut bytes = phy.to_vec();
    let PhyPayload::Data(DataPayload::Encrypted(enc)) = parse_with_factory(&mut bytes[..], DefaultFactory).ok()? else {
        return None;
    };
    let fhdr = enc.fhdr();
    let (f_cnt, fctrl) = (fhdr.fcnt(), fhdr.fctrl());
    let confirmed = enc.is_confirmed();
    let dec = enc.decrypt_if_mic_ok(nwk.inner(), app.inner(), u32::from(f_cnt)).ok()?;
    let mut macs = mac_list(dec.fhdr().data(), uplink);
    let payload = match dec.frm_payload() {
        FRMPayload::Data(d) => d.to_vec(),
        FRMPayload::MACCommands(m) => {
            macs.extend(mac_list(m.data(), uplink));
            Vec::new()
        }
        FRMPayload::None => Vec::new(),
    };
    Some(Opened { f_cnt, f_port: dec.f_port(), confirmed, adr: fctrl.adr(), ack: fctrl.ack(), payload, macs })
}

fn mac_list(bytes: &[u8], uplink: bool) -> Vec<Mac> {
    if uplink {
        MacCommandIterator::<UplinkMacCommand>::new(bytes)
            .map(|c| match c {
                UplinkMacCommand::LinkADRAns(a) => Mac::LinkAdrAns { status: a.bytes()[0] },
                UplinkMacCommand::RXTimingSetupAns(_) => Mac::RxTimingSetupAns,
                other => Mac::Other(format!("{other:?}")),
            })
            .collect()
    } else {
        MacCommandIterator::<DownlinkMacCommand>::new(bytes)
            .map(|c| match c {
                DownlinkMacCommand::LinkADRReq(r) => Mac::LinkAdrReq {
                    data_rate: r.data_rate(),
                    tx_power: r.tx_power(),
                    nb_trans: r.redundancy().number_of_transmissions(),
                },
                DownlinkMacCommand::RXTimingSetupReq(r) => Mac::RxTimingSetupReq { delay: r.delay() },
                other => Mac::Other(format!("{other:?}")),
            })
            .collect()
    }
}

/// The same uplink with the ADR bit set, MIC recomputed with the session keys.
///
/// lorawan-device 0.12 has no ADR: it builds every uplink with `FCtrl(0x00, true)` (`mac/session.rs`),
/// so it never asks the network for ADR (LoRaWAN 1.0.3 §4.3.1.1: the network may only control the data
/// rate of a device that sets the ADR bit). The tests that need an ADR device set the bit here, on the
/// air, leaving everything else (counters, FOpts, payload) as the device built it.
pub fn with_adr_bit(phy: &[u8], nwk: &NewSKey, app: &AppSKey) -> Option<Vec<u8>> {
    let mut bytes = phy.to_vec();
    let PhyPayload::Data(DataPayload::Encrypted(enc)) = parse_with_factory(&mut bytes[..], DefaultFactory).ok()? else {
        return None;
    };
    let confirmed = enc.is_confirmed();
    let fhdr = enc.fhdr();
    let (f_cnt, fctrl, dev_addr) = (fhdr.fcnt(), fhdr.fctrl().raw_value(), fhdr.dev_addr());
    let dev_addr: [u8; 4] = dev_addr.as_ref().try_into().ok()?;
    let dec = enc.decrypt_if_mic_ok(nwk.inner(), app.inner(), u32::from(f_cnt)).ok()?;
    let fopts = dec.fhdr().data().to_vec();
    let cmds: Vec<UplinkMacCommand<'_>> = MacCommandIterator::<UplinkMacCommand>::new(&fopts).collect();
    let dyn_cmds: Vec<&dyn SerializableMacCommand> = cmds.iter().map(|c| c as &dyn SerializableMacCommand).collect();
    let (port, payload) = (
        dec.f_port(),
        match dec.frm_payload() {
            FRMPayload::Data(d) => d.to_vec(),
            _ => Vec::new(),
        },
    );
    let mut c = DataPayloadCreator::new();
    c.set_uplink(true)
        .set_confirmed(confirmed)
        .set_dev_addr(dev_addr)
        // FOptsLen is written again by `build` from the commands.
        .set_fctrl(&FCtrl::new((fctrl | 0x80) & 0xf0, true))
        .set_fcnt(u32::from(f_cnt));
    if let Some(p) = port {
        c.set_f_port(p);
    }
    c.build(&payload, &dyn_cmds, nwk, app).ok().map(<[u8]>::to_vec)
}

/// The DLSettings byte of a join accept (RX1DROffset in bits 6..4, RX2DataRate in bits 3..0), opened
/// with the AppKey (MSB-first hex); `None` if it does not open or its MIC fails.
pub fn join_accept_dl_settings(phy: &[u8], app_key: &str) -> Option<u8> {
    use lorawan::parser::JoinAcceptPayload;
    use std::str::FromStr;
    let key = lorawan::keys::AppKey::from_str(app_key).ok()?;
    let mut bytes = phy.to_vec();
    let PhyPayload::JoinAccept(JoinAcceptPayload::Encrypted(enc)) =
        parse_with_factory(&mut bytes[..], DefaultFactory).ok()?
    else {
        return None;
    };
    let dec = enc.decrypt(&key);
    dec.validate_mic(&key).then(|| dec.dl_settings().raw_value())
}
