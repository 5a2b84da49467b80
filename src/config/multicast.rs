//! `[[lorawan.multicast]]`: the checks of the multicast groups (names, addresses, keys, radio
//! settings, members) and the groups as the network server and the lighting loop use them (members
//! resolved from the zone, radio defaults from the RX2 settings).

use std::collections::{HashMap, HashSet};

use super::problem::{name_problem, Sink};
use super::schema::{Config, DeviceClass, DeviceConfig, LorawanConfig, MulticastConfig, ZoneConfig};
use super::spans::{Doc, KeyPath};
use crate::control::lighting::groups::LampGroup;
use crate::lorawan::dutycycle::SubBand;
use crate::lorawan::multicast::McGroup;
use crate::lorawan::region::DataRate;

pub(super) fn check(
    doc: &Doc<'_>,
    l: &LorawanConfig,
    zones: &[&ZoneConfig],
    devices: &[&DeviceConfig],
    sink: &mut Sink,
) {
    let by_name: HashMap<&str, &DeviceConfig> = devices.iter().map(|d| (d.name.as_str(), *d)).collect();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<u32, usize> = HashMap::new();
    let mut member_of: HashMap<String, usize> = HashMap::new();
    for (i, g) in l.multicast.iter().enumerate() {
        let p = KeyPath::root().key("lorawan").key("multicast").index(i);
        if let Some(msg) = name_problem(&g.name) {
            doc.problem(sink, p.key("name"), msg);
        } else if let Some(first) = names.insert(&g.name, i) {
            doc.problem(
                sink,
                p.key("name"),
                format!("duplicate group name {:?} (also lorawan.multicast[{first}])", g.name),
            );
        } else if by_name.contains_key(g.name.as_str()) {
            doc.problem(
                sink,
                p.key("name"),
                format!("{:?} is a device's name: a group needs a name of its own", g.name),
            );
        }
        match g.dev_addr {
            None => doc.problem(sink, p.key("dev_addr"), "required key is missing (the group address, 8 hex digits)"),
            Some(a) => {
                if let Some(first) = addrs.insert(a.0, i) {
                    doc.problem(sink, p.key("dev_addr"), format!("the address of lorawan.multicast[{first}] too"));
                } else if let Some(d) = devices.iter().find(|d| d.dev_addr == Some(a)) {
                    doc.problem(sink, p.key("dev_addr"), format!("the address of device {:?}", d.name));
                }
            }
        }
        for (key, value) in [("nwk_s_key", g.nwk_s_key.is_some()), ("app_s_key", g.app_s_key.is_some())] {
            if !value {
                doc.problem(sink, p.key(key), "required key is missing (32 hex digits, the same as on the members)");
            }
        }
        if let Some(dr) = g.data_rate.filter(|dr| DataRate::from_dr(*dr).is_none()) {
            doc.problem(sink, p.key("data_rate"), format!("must be 0..=6 (an EU868 LoRa data rate), got {dr}"));
        }
        if g.data_rate.is_none() && DataRate::from_dr(l.rx2_dr).is_none() {
            doc.problem(
                sink,
                p.key("data_rate"),
                format!("required: lorawan.rx2_dr {} is no LoRa data rate", l.rx2_dr),
            );
        }
        if let Some(f) = g.freq_hz.filter(|f| SubBand::of(*f).is_none()) {
            doc.problem(sink, p.key("freq_hz"), format!("{f} Hz is in no EU868 sub-band (863-870 MHz)"));
        }
        let members = match (&g.zone, g.devices.is_empty()) {
            (Some(_), false) | (None, true) => {
                doc.problem(sink, p.clone(), "set either `zone` (its lamps are the members) or `devices`");
                continue;
            }
            (Some(z), true) => match zones.iter().find(|zone| zone.name == *z) {
                Some(zone) => zone.lamps.iter().map(|l| l.device().to_string()).collect(),
                None => {
                    doc.problem(sink, p.key("zone"), format!("no [[lighting.zone]] is named {z:?}"));
                    continue;
                }
            },
            (None, false) => g.devices.clone(),
        };
        let key = if g.zone.is_some() { p.key("zone") } else { p.key("devices") };
        let mut profiles = HashSet::new();
        for m in &members {
            match by_name.get(m.as_str()) {
                None => doc.problem(sink, key.clone(), format!("{m:?} is not a configured device")),
                Some(d) if d.class != DeviceClass::C => {
                    doc.problem(sink, key.clone(), format!("{m:?} is not a class C device (it would not listen)"))
                }
                Some(d) => {
                    profiles.insert(d.profile.as_str());
                }
            }
            if let Some(first) = member_of.insert(m.clone(), i) {
                doc.problem(sink, key.clone(), format!("{m:?} is also in lorawan.multicast[{first}]"));
            }
        }
        if profiles.len() > 1 {
            let mut v: Vec<&str> = profiles.into_iter().collect();
            v.sort_unstable();
            doc.problem(sink, key, format!("members with different profiles ({}) cannot share a frame", v.join(", ")));
        }
    }
}

impl Config {
    /// The multicast groups with their members and radio settings resolved (a checked config).
    pub fn multicast_groups(&self) -> Vec<McGroup> {
        let l = &self.lorawan;
        l.multicast
            .iter()
            .filter_map(|g| {
                Some(McGroup {
                    name: g.name.clone(),
                    dev_addr: g.dev_addr?,
                    nwk_s_key: g.nwk_s_key?,
                    app_s_key: g.app_s_key?,
                    data_rate: g.data_rate.unwrap_or(l.rx2_dr),
                    freq_hz: g.freq_hz.unwrap_or(l.rx2_freq_hz),
                    members: self.members(g),
                })
            })
            .collect()
    }

    /// The groups as the lighting loop sees them.
    pub fn lamp_groups(&self) -> Vec<LampGroup> {
        self.lorawan.multicast.iter().map(|g| LampGroup { name: g.name.clone(), lamps: self.members(g) }).collect()
    }

    fn members(&self, g: &MulticastConfig) -> Vec<String> {
        match &g.zone {
            Some(z) => self
                .lighting
                .zone
                .iter()
                .filter(|zone| zone.name == *z)
                .flat_map(|zone| zone.lamps.iter().map(|l| l.device().to_string()))
                .collect(),
            None => g.devices.clone(),
        }
    }
}
