//! Process-wide counters, shared by the shell's tasks (sources, pipeline, uplink, executor) and
//! exported as Prometheus metrics (`ops::metrics`).
//!
//! Plain atomics: every task bumps its own counters without locks; readers take a snapshot. The
//! district step says what its inputs count ([`Counts`]); the pipeline adds that with [`Counters::add`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::district::Counts;

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        #[derive(Default, Debug)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            /// wM-Bus telegrams by manufacturer and type (foreign meters) and by device (failures).
            pub wmbus: WmbusCounts,
        }

        impl Counters {
            /// (name, value) of every counter, for status replies, metrics and tests.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    datagrams: "UDP datagrams received from packet forwarders",
    datagrams_bad: "datagrams refused: too short, unknown version or type, bad JSON",
    push_data: "PUSH_DATA datagrams",
    pull_data: "PULL_DATA keep-alives",
    tx_ack: "TX_ACK datagrams",
    stat: "gateway status objects received",
    rxpk_bad: "rxpk entries refused: CRC failed, invalid base64, missing fields",
    rxpk_crc: "rxpk entries with a failed CRC (stat != 1)",
    frames_ok: "LoRaWAN frames accepted (MIC and counter valid)",
    frames_bad_mic: "frames refused: no session's MIC verifies",
    frames_replay: "frames refused: frame counter not increasing",
    frames_unknown_dev_addr: "frames refused: no session for the DevAddr",
    frames_malformed: "frames refused: not a parsable LoRaWAN data uplink",
    frames_not_data: "frames that are not data uplinks (join requests, downlinks, proprietary)",
    frames_duplicate: "copies of a frame already received through another rxpk or source",
    frames_mac_only: "FPort 0 / empty frames: MAC commands only, no reading",
    joins: "OTAA joins accepted",
    joins_refused: "join requests refused: unknown device, bad MIC, replayed DevNonce, no window",
    downlinks_sent: "downlinks sent to a gateway (PULL_RESP)",
    downlinks_failed: "downlinks a gateway refused (TX_ACK error) or that had no route",
    downlinks_deferred: "downlinks that found no receive window (too late, duty cycle)",
    downlinks_duty_cycle: "downlinks held back by the EU868 duty cycle",
    decode_errors: "payloads the device's decoder could not decode (reading kept with an error)",
    multicast_frames: "multicast frames built for groups of class C devices (sent once their counter is on disk)",
    multicast_airtime_us: "air time of the multicast frames, microseconds",
    meter_samples: "smart-meter readings received (SML frames with values)",
    readings_journaled: "readings written to the journal",
    records_journaled: "outbox records written to the journal (readings, aggregates, events, command answers)",
    journal_errors: "journal writes that failed",
    published: "outbox records acknowledged by the broker (PUBACK)",
    readings_dropped: "readings dropped by the buffer policy (disk bound reached)",
    commands_received: "messages received on cmd/req",
    commands_dropped: "messages on cmd/req dropped because the executor queue was full",
    commands_unanswered: "refused commands not answered: answer rate limit, uplink queue full or not connected",
    last_uplink_unix_ms: "time of the last accepted uplink (ms since 1970; a gauge)",
    mqtt_connected: "1 while connected to the broker",
    mqtt_reconnects: "broker connections lost",
    readings_refused_power_fail: "frames and meter samples refused (not acknowledged) while mains power was lost",
    power_fail: "1 while the power-fail input says mains power is lost (a gauge)",
    power_fail_since_unix_ms: "when mains power was lost (ms since 1970; 0 while it is present; a gauge)",
    wmbus_telegrams: "telegrams received from wireless M-Bus sticks (every meter heard, configured or not)",
    wmbus_unreadable: "wM-Bus telegrams without a readable link header (noise, torn frames)",
    openadr_polls: "successful polls of the OpenADR VTN (programs and events read)",
    openadr_poll_errors: "failed polls of the OpenADR VTN (unreachable, refused, timed out)",
    openadr_intervals_refused: "OpenADR event intervals refused (unsupported payload type, malformed), once per version",
    openadr_reports_sent: "reports created at the OpenADR VTN",
    openadr_reports_dropped: "reports of OpenADR events the VTN did not get (queue full, or the VTN refused them)",
}

/// The wM-Bus telegrams that became no reading, by label. Foreign meters are counted by manufacturer
/// and device type only: never by id (privacy by default).
#[derive(Debug, Default)]
pub struct WmbusCounts {
    foreign: Mutex<BTreeMap<(String, String), u64>>,
    failed: Mutex<BTreeMap<String, u64>>,
}

impl WmbusCounts {
    /// A telegram of a meter that is not configured.
    pub fn foreign(&self, manufacturer: &str, device_type: &str) {
        if let Ok(mut m) = self.foreign.lock() {
            *m.entry((manufacturer.to_string(), device_type.to_string())).or_default() += 1;
        }
    }

    /// A configured meter's telegram that could not be decoded (wrong key, ...).
    pub fn failed(&self, device: &str) {
        if let Ok(mut m) = self.failed.lock() {
            *m.entry(device.to_string()).or_default() += 1;
        }
    }

    /// ((manufacturer, type), count) of the foreign meters' telegrams.
    pub fn foreign_snapshot(&self) -> Vec<((String, String), u64)> {
        self.foreign.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    /// (device, count) of the decode failures.
    pub fn failed_snapshot(&self) -> Vec<(String, u64)> {
        self.failed.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }
}

impl Counters {
    /// When mains power was lost, while the power-fail input says it is (`power_fail` = 1).
    pub fn power_lost_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        if self.power_fail.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let ms = self.power_fail_since_unix_ms.load(Ordering::Relaxed);
        Some(chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default())
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what one step of the district counted.
    pub fn add(&self, c: &Counts) {
        let deltas = [
            (&self.meter_samples, c.meter_samples),
            (&self.frames_ok, c.frames_ok),
            (&self.frames_mac_only, c.frames_mac_only),
            (&self.frames_duplicate, c.frames_duplicate),
            (&self.frames_bad_mic, c.frames_bad_mic),
            (&self.frames_replay, c.frames_replay),
            (&self.frames_unknown_dev_addr, c.frames_unknown_dev_addr),
            (&self.frames_not_data, c.frames_not_data),
            (&self.frames_malformed, c.frames_malformed),
            (&self.joins, c.joins),
            (&self.joins_refused, c.joins_refused),
            (&self.downlinks_failed, c.downlinks_failed),
            (&self.downlinks_deferred, c.downlinks_deferred),
            (&self.downlinks_duty_cycle, c.downlinks_duty_cycle),
            (&self.decode_errors, c.decode_errors),
            (&self.multicast_frames, c.multicast_frames),
            (&self.multicast_airtime_us, c.multicast_airtime_us),
        ];
        for (counter, delta) in deltas {
            if delta > 0 {
                counter.fetch_add(delta, Ordering::Relaxed);
            }
        }
        if let Some(ms) = c.last_uplink_ms {
            self.last_uplink_unix_ms.store(ms, Ordering::Relaxed);
        }
    }
}
