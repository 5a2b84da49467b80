//! The topics the gateway publishes to, below `{topic_prefix}/{gateway.id}/` (PRODUCT.md pins them).
//!
//! A message is given its [`Topic`] where it is made; the topic knows its suffix, its kind (for the
//! store's drop policy), whether the broker retains it and whether it is marked `"replayed": true`
//! when it goes out from the backlog. Nothing parses a topic string back to find these out: the store
//! keeps the topic's [`Topic::code`] and [`Topic::name`] beside each record. The one exception is
//! [`Topic::from_legacy`], for records that older versions journaled as bare strings.

use std::fmt;

/// What a message is, for the store's drop policy: raw readings go first, everything else outranks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Reading,
    Aggregate,
    Event,
    /// Command answers, state and anything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `reading/{device}`.
    Reading(String),
    /// `agg/{name}`: a device's window (`agg/bin-017`), a zone's energy (`agg/lighting-{zone}`), the
    /// demand-response report (`agg/dr`).
    Aggregate(String),
    /// `event/{device}` (or a zone, or the gateway itself).
    Event(String),
    /// `lighting/{zone}`: the zone's latest state, retained.
    Lighting(String),
    /// `dr/status`: the demand-response status, retained.
    DrStatus,
    /// `cmd/res`: a command's answer.
    CommandResult,
    /// A demand-response load's own topic (`output = { mqtt = "..." }`): its latest state, retained.
    Load(String),
    /// A topic none of the above (read from a store an older version wrote; published as it was,
    /// never retained).
    Legacy(String),
}

impl Topic {
    /// The topic below `{topic_prefix}/{gateway.id}/`.
    pub fn suffix(&self) -> String {
        match self {
            Topic::Reading(d) => format!("reading/{d}"),
            Topic::Aggregate(n) => format!("agg/{n}"),
            Topic::Event(d) => format!("event/{d}"),
            Topic::Lighting(z) => format!("lighting/{z}"),
            Topic::DrStatus => "dr/status".into(),
            Topic::CommandResult => "cmd/res".into(),
            Topic::Load(t) | Topic::Legacy(t) => t.clone(),
        }
    }

    pub fn kind(&self) -> TopicKind {
        match self {
            Topic::Reading(_) => TopicKind::Reading,
            Topic::Aggregate(_) => TopicKind::Aggregate,
            Topic::Event(_) => TopicKind::Event,
            _ => TopicKind::Other,
        }
    }

    /// Whether the broker keeps the latest message for new subscribers (PRODUCT.md: `lighting/{zone}`
    /// and `dr/status`; a load's own topic carries its state the same way).
    pub fn retained(&self) -> bool {
        matches!(self, Topic::Lighting(_) | Topic::DrStatus | Topic::Load(_))
    }

    /// Whether a message sent late from the backlog is marked `"replayed": true`: data messages
    /// (readings, aggregates, events) are; answers and states keep their pinned shape.
    pub fn replayable(&self) -> bool {
        self.kind() != TopicKind::Other
    }

    /// The variant as one byte, for the store (stable: written to disk).
    pub fn code(&self) -> u8 {
        match self {
            Topic::Reading(_) => 0,
            Topic::Aggregate(_) => 1,
            Topic::Event(_) => 2,
            Topic::Legacy(_) => 3,
            Topic::Lighting(_) => 4,
            Topic::DrStatus => 5,
            Topic::CommandResult => 6,
            Topic::Load(_) => 7,
        }
    }

    /// The variable part (device, zone, aggregate or load name; empty for fixed topics), for the store.
    pub fn name(&self) -> &str {
        match self {
            Topic::Reading(s)
            | Topic::Aggregate(s)
            | Topic::Event(s)
            | Topic::Lighting(s)
            | Topic::Load(s)
            | Topic::Legacy(s) => s,
            Topic::DrStatus | Topic::CommandResult => "",
        }
    }

    /// The topic the store wrote as `code` + `name`. Codes 0-3 are what older versions wrote (3 = any
    /// other topic, kept as the string it was); an unknown code is read as such a string too.
    pub fn from_code(code: u8, name: String) -> Topic {
        match code {
            0 => Topic::Reading(name),
            1 => Topic::Aggregate(name),
            2 => Topic::Event(name),
            4 => Topic::Lighting(name),
            5 => Topic::DrStatus,
            6 => Topic::CommandResult,
            7 => Topic::Load(name),
            _ => Topic::Legacy(name),
        }
    }
}

impl Topic {
    /// A topic suffix as versions before this type journaled it (a bare string), read back once when
    /// such a record is loaded. A load's own topic cannot be told apart from other topics there and
    /// stays a `Legacy` topic (published, not retained, as those versions did).
    pub fn from_legacy(suffix: String) -> Topic {
        let name = |prefix: &str| suffix.strip_prefix(prefix).map(str::to_string);
        if let Some(d) = name("reading/") {
            Topic::Reading(d)
        } else if let Some(n) = name("agg/") {
            Topic::Aggregate(n)
        } else if let Some(d) = name("event/") {
            Topic::Event(d)
        } else if let Some(z) = name("lighting/") {
            Topic::Lighting(z)
        } else if suffix == "dr/status" {
            Topic::DrStatus
        } else if suffix == "cmd/res" {
            Topic::CommandResult
        } else {
            Topic::Legacy(suffix)
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Topic> {
        vec![
            Topic::Reading("bin-017".into()),
            Topic::Aggregate("lighting-north".into()),
            Topic::Event("tree-3".into()),
            Topic::Lighting("north".into()),
            Topic::DrStatus,
            Topic::CommandResult,
            Topic::Load("loads/hp-12".into()),
            Topic::Legacy("lighting/old".into()),
        ]
    }

    #[test]
    fn suffixes_are_the_pinned_topics() {
        let s: Vec<String> = all().iter().map(Topic::suffix).collect();
        assert_eq!(
            s,
            [
                "reading/bin-017",
                "agg/lighting-north",
                "event/tree-3",
                "lighting/north",
                "dr/status",
                "cmd/res",
                "loads/hp-12",
                "lighting/old"
            ]
        );
    }

    #[test]
    fn retained_and_replayable_follow_the_variant_not_the_string() {
        let retained: Vec<bool> = all().iter().map(Topic::retained).collect();
        assert_eq!(retained, [false, false, false, true, true, false, true, false]);
        let replayable: Vec<bool> = all().iter().map(Topic::replayable).collect();
        assert_eq!(replayable, [true, true, true, false, false, false, false, false]);
        // A load topic that looks like a reading's is still a load's.
        let t = Topic::Load("reading/x".into());
        assert_eq!((t.kind(), t.retained()), (TopicKind::Other, true));
    }

    #[test]
    fn code_and_name_round_trip() {
        for t in all() {
            assert_eq!(Topic::from_code(t.code(), t.name().to_string()), t);
        }
        assert_eq!(Topic::from_code(200, "x/y".into()), Topic::Legacy("x/y".into()));
    }

    #[test]
    fn legacy_strings_become_their_topics() {
        for t in all().into_iter().filter(|t| !matches!(t, Topic::Load(_) | Topic::Legacy(_))) {
            assert_eq!(Topic::from_legacy(t.suffix()), t);
        }
        assert_eq!(Topic::from_legacy("loads/hp-1".into()), Topic::Legacy("loads/hp-1".into()));
    }
}
