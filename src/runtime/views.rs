//! What the HTTP side sees: the `/metrics` and status-page renderers, closures over the shared
//! counters, store, sources, health and the pipeline's board, called on each request.

use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use crate::counters::Counters;
use crate::io::status::SourceStatus;
use crate::store::Store;

#[allow(clippy::too_many_arguments)]
pub(super) fn metrics_fn(
    config: &Config,
    board: crate::ops::board::SharedBoard,
    store: Store,
    counters: Arc<Counters>,
    commands: Arc<crate::ops::commands::CommandCounts>,
    sources: Vec<Arc<SourceStatus>>,
    health: crate::ops::health::Health,
    started: std::time::Instant,
) -> crate::ops::http::MetricsFn {
    use crate::ops::metrics::{MetricsSnapshot, ProcessStats, SourceMetrics};
    let gateway_id = config.gateway.id.clone();
    Arc::new(move || {
        let (lorawan, dr) = board
            .lock()
            .ok()
            .map(|b| (b.control.get("lorawan").cloned(), b.control.get("demand_response").cloned()))
            .unwrap_or_default();
        let (gauges, mut extra_counters) = crate::ops::mac_view::metrics(&lorawan.unwrap_or_default());
        // The §14a control box: the time spent reduced, which the operator must document.
        let reduced = dr.as_ref().and_then(|d| d.pointer("/control_box/reduced_s")).and_then(serde_json::Value::as_f64);
        if let Some(value) = reduced {
            extra_counters.push(crate::ops::metrics::ExtraGauge {
                name: "control_box_reduced_seconds_total".into(),
                help: "time the §14a EnWG control box kept the loads reduced since the start, in seconds".into(),
                labels: Vec::new(),
                value,
            });
        }
        extra_counters.extend(wmbus_counters(&counters));
        let source_metrics = sources
            .iter()
            .map(|s| SourceMetrics {
                name: s.name().to_string(),
                kind: s.snapshot().kind.to_string(),
                state: health_state(s.state()),
            })
            .collect();
        crate::ops::metrics::render(&MetricsSnapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            gateway_id: gateway_id.clone(),
            uptime_s: started.elapsed().as_secs_f64(),
            counters: counters.snapshot(),
            backlog_records: store.depth() as u64,
            backlog_bytes: store.size_on_disk(),
            backlog_oldest_age_s: store.oldest_record_age_s(crate::clock::now()),
            readings_dropped: counters.readings_dropped.load(std::sync::atomic::Ordering::Relaxed),
            journal_bytes_written: store.stats().log_bytes.load(std::sync::atomic::Ordering::Relaxed),
            journal_fsyncs: store.stats().fsyncs.load(std::sync::atomic::Ordering::Relaxed),
            sources: source_metrics,
            commands: commands.snapshot(),
            health: Some(health.check()),
            process: ProcessStats::read(),
            gauges,
            extra_counters,
            ..MetricsSnapshot::default()
        })
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn page_fn(
    config: &Config,
    board: crate::ops::board::SharedBoard,
    store: Store,
    counters: Arc<Counters>,
    sources: Vec<Arc<SourceStatus>>,
    health: crate::ops::health::Health,
    started_at: chrono::DateTime<Utc>,
) -> crate::ops::http::PageFn {
    use crate::ops::board::{PowerView, SourceView, StatusView};
    use std::sync::atomic::Ordering::Relaxed;
    let gateway_id = config.gateway.id.clone();
    let power_pin = config.power_fail.as_ref().map(|p| p.pin);
    Arc::new(move || {
        let now = crate::clock::now();
        let report = health.check();
        let (devices, control) = match board.lock() {
            Ok(b) => (b.devices.values().cloned().collect(), b.control.clone()),
            Err(_) => (Vec::new(), serde_json::Value::Null),
        };
        let view = StatusView {
            gateway_id: gateway_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            now: Some(now),
            started_at: Some(started_at),
            mqtt_connected: counters.mqtt_connected.load(Relaxed) == 1,
            mqtt_reconnects: counters.mqtt_reconnects.load(Relaxed),
            backlog_depth: store.depth() as u64,
            backlog_oldest_age_s: store.oldest_record_age_s(now),
            readings_journaled: counters.readings_journaled.load(Relaxed),
            readings_published: counters.published.load(Relaxed),
            readings_dropped: counters.readings_dropped.load(Relaxed),
            healthy: report.healthy,
            health_reason: report.reason(),
            disk_write_bytes: crate::ops::metrics::disk_write_bytes(),
            journal_fsyncs: store.stats().fsyncs.load(Relaxed),
            power: power_pin.map(|pin| PowerView {
                pin,
                lost_since: counters.power_lost_since(),
                refused: counters.readings_refused_power_fail.load(Relaxed),
            }),
            sources: sources
                .iter()
                .map(|s| {
                    let snap = s.snapshot();
                    SourceView {
                        name: snap.name,
                        kind: snap.kind.to_string(),
                        state: snap.state.as_str().to_string(),
                        since: Some(snap.since.into()),
                        frames: snap.frames,
                        errors: snap.errors,
                        last_error: snap.last_error,
                    }
                })
                .collect(),
            devices,
            control,
            counters: counters.snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            wmbus_foreign: counters
                .wmbus
                .foreign_snapshot()
                .into_iter()
                .map(|((manufacturer, kind), n)| (manufacturer, kind, n))
                .collect(),
        };
        crate::ops::status_page::render(&view)
    })
}

/// The wM-Bus telegrams that became no reading: foreign meters by manufacturer and type (never by
/// id), decode failures by configured device.
fn wmbus_counters(counters: &Counters) -> Vec<crate::ops::metrics::ExtraGauge> {
    use crate::ops::metrics::ExtraGauge;
    let foreign = counters.wmbus.foreign_snapshot().into_iter().map(|((manufacturer, kind), n)| ExtraGauge {
        name: "wmbus_foreign_total".into(),
        help: "wM-Bus telegrams of meters that are not configured (counted, not decoded), by manufacturer and type"
            .into(),
        labels: vec![("manufacturer".into(), manufacturer), ("type".into(), kind)],
        value: n as f64,
    });
    let failed = counters.wmbus.failed_snapshot().into_iter().map(|(device, n)| ExtraGauge {
        name: "wmbus_decode_failures_total".into(),
        help: "telegrams of configured wM-Bus meters that could not be decoded (wrong or missing key, bad telegram)"
            .into(),
        labels: vec![("device".into(), device)],
        value: n as f64,
    });
    foreign.chain(failed).collect()
}

fn health_state(s: crate::io::status::SourceState) -> crate::ops::health::SourceState {
    use crate::io::status::SourceState as S;
    use crate::ops::health::SourceState as H;
    match s {
        S::Up => H::Up,
        S::Starting | S::Retrying => H::Retrying,
        S::Down | S::Stopped => H::Down,
    }
}
