//! Lamp groups: which of one call's lamp commands go out as one multicast frame.
//!
//! A group (a LoRaWAN multicast group whose members hold its keys) gets one frame when every one of
//! its lamps has a command in the same call and all of them encode to the same bytes: a zone-wide
//! change (a schedule step, an override of the zone, the clock's safe mode, every lamp covered by a
//! fail-safe). Anything else goes to each lamp on its own (unicast): presence raising a few lamps,
//! a re-send to a lamp that did not acknowledge, lamps outside any group, and a step in which a lamp
//! of the group keeps another level (held by presence, or still within its `min_command_gap_s`): a
//! multicast would set that lamp to the wrong level.

/// A multicast group as the lighting loop sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LampGroup {
    pub name: String,
    pub lamps: Vec<String>,
}

/// One lamp's encoded level command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LampDownlink {
    pub lamp: String,
    pub f_port: u8,
    pub payload: Vec<u8>,
}

/// One frame for every lamp of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDownlink {
    pub group: String,
    pub f_port: u8,
    pub payload: Vec<u8>,
    /// The lamps it replaces the unicast commands of (in the group's order).
    pub lamps: Vec<String>,
}

/// Splits one call's commands into group frames and the commands still sent to each lamp (in their
/// order).
pub fn split(commands: Vec<LampDownlink>, groups: &[LampGroup]) -> (Vec<GroupDownlink>, Vec<LampDownlink>) {
    let mut multicast = Vec::new();
    let mut unicast = commands;
    for g in groups.iter().filter(|g| !g.lamps.is_empty()) {
        let mut same: Option<(u8, &[u8])> = None;
        let whole = g.lamps.iter().all(|lamp| {
            let Some(c) = unicast.iter().find(|c| c.lamp == *lamp) else { return false };
            let this = (c.f_port, c.payload.as_slice());
            *same.get_or_insert(this) == this
        });
        let Some((f_port, payload)) = same.filter(|_| whole).map(|(p, b)| (p, b.to_vec())) else { continue };
        unicast.retain(|c| !g.lamps.contains(&c.lamp));
        multicast.push(GroupDownlink { group: g.name.clone(), f_port, payload, lamps: g.lamps.clone() });
    }
    (multicast, unicast)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(lamp: &str, level: u8) -> LampDownlink {
        LampDownlink { lamp: lamp.into(), f_port: 10, payload: vec![level] }
    }

    fn groups() -> Vec<LampGroup> {
        vec![LampGroup { name: "g".into(), lamps: vec!["l1".into(), "l2".into(), "l3".into()] }]
    }

    #[test]
    fn the_whole_group_at_one_level_is_one_frame() {
        let (m, u) = split(vec![cmd("l1", 40), cmd("x", 40), cmd("l3", 40), cmd("l2", 40)], &groups());
        assert_eq!(
            m,
            vec![GroupDownlink {
                group: "g".into(),
                f_port: 10,
                payload: vec![40],
                lamps: vec!["l1".into(), "l2".into(), "l3".into()]
            }]
        );
        assert_eq!(u, vec![cmd("x", 40)], "a lamp outside the group stays unicast");
    }

    #[test]
    fn part_of_the_group_or_different_levels_stay_unicast() {
        let few = vec![cmd("l1", 100), cmd("l2", 100)];
        assert_eq!(split(few.clone(), &groups()), (vec![], few));
        let mixed = vec![cmd("l1", 40), cmd("l2", 100), cmd("l3", 40)];
        assert_eq!(split(mixed.clone(), &groups()), (vec![], mixed));
        let ports = vec![cmd("l1", 40), cmd("l2", 40), LampDownlink { f_port: 11, ..cmd("l3", 40) }];
        assert_eq!(split(ports.clone(), &groups()), (vec![], ports));
        assert_eq!(split(vec![], &[LampGroup::default()]), (vec![], vec![]));
    }
}
