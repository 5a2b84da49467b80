//! The command executor: verifies signed commands from `cmd/req`, runs them one at a time in order,
//! and journals each answer of an accepted command for `cmd/res` (so those answers reach the city at
//! least once, like readings).
//!
//! A command the verifier refuses (malformed, bad signature, unknown key, expired, wrong gateway,
//! replayed, unknown command, invalid args) may come from anyone who can publish on `cmd/req`: it
//! costs nothing on flash. It is counted by code, answered directly by the uplink (a
//! [`RefusalAnswer`], never journaled) and logged on its own line only within the rate limits of
//! [`RefusalLimiter`] (see `district_core::commands::limits`); beyond them it is counted as
//! unanswered, and the refusals not logged one by one are summed up in one line a minute.
//!
//! Verification is the pure `commands::Verifier`; this task owns its state (the seen ids, persisted in
//! the store — and fsynced — before a command runs) and the side effects. A slow command delays only
//! later commands, never readings: the pipeline and the uplink are other tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Control, DeviceChange, RefusalAnswer};
use crate::config::{Config, DeviceConfig};
use crate::counters::Counters;
use crate::io::status::SourceStatus;
use crate::ops::commands::{
    Command, CommandCounts, CommandName, Refusal, RefusalCode, RefusalLimiter, UnloggedRefusals, Verifier,
};
use crate::reading::rfc3339;
use crate::store::Store;

/// A `config.apply` handed to the supervisor, which answers it after the health verdict.
pub struct ApplyRequest {
    pub id: String,
    pub toml: String,
}

/// What the executor needs from the daemon.
pub struct ExecutorContext {
    pub config: Config,
    pub store: Store,
    pub control: mpsc::Sender<Control>,
    pub counters: Arc<Counters>,
    pub commands: Arc<CommandCounts>,
    pub sources: Vec<Arc<SourceStatus>>,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    pub apply: Option<mpsc::Sender<ApplyRequest>>,
    /// Answers to refused commands, for the uplink to publish without journaling them.
    pub refusals: mpsc::Sender<RefusalAnswer>,
}

pub fn verifier(config: &Config) -> Result<Verifier, String> {
    let keys = config.ops.key.iter().map(|k| (k.id.clone(), k.ed25519_public.0)).collect();
    Verifier::new(keys, crate::ops::commands::DEFAULT_SKEW, crate::ops::commands::DEFAULT_MAX_VALIDITY)
        .map(|v| v.with_gateway_id(config.gateway.id.clone()))
        .map_err(|e| e.to_string())
}

pub async fn run(mut ctx: ExecutorContext, mut verifier: Verifier, mut rx: mpsc::Receiver<Vec<u8>>) {
    let now = crate::clock::now();
    match ctx.store.commands_seen(now.timestamp_millis()) {
        Ok(seen) => verifier.load_seen(
            now,
            seen.into_iter().filter_map(|(id, ms)| DateTime::from_timestamp_millis(ms).map(|t| (id, t))),
        ),
        Err(e) => tracing::error!(error = %e, "cannot read the remembered command ids"),
    }
    let mut limiter = RefusalLimiter::default();
    loop {
        // Wait for the next envelope, or until the summary of unlogged refusals is due.
        let summary_in = limiter.summary_due_at().map(|due| (due - crate::clock::now()).to_std().unwrap_or_default());
        let envelope = tokio::select! {
            e = rx.recv() => e,
            _ = tokio::time::sleep(summary_in.unwrap_or_default()), if summary_in.is_some() => {
                let now = crate::clock::now();
                if let Some(s) = limiter.take_summary(now) {
                    log_unlogged(&s, now);
                }
                continue;
            }
        };
        let Some(envelope) = envelope else { break };
        let now = crate::clock::now();
        verifier.prune(now);
        let cmd = match verifier.verify(now, &envelope) {
            Ok(c) => c,
            Err(refusal) => {
                refused(&ctx, &mut limiter, now, &refusal);
                continue;
            }
        };
        // Remember the id on disk (fsynced) before anything happens, so that a crash cannot make it
        // replayable.
        let remembered = ctx.store.remember_command(&cmd.id, cmd.forget_after.timestamp_millis(), now);
        if remembered.is_err() || ctx.store.flush().await.is_err() {
            let r = cmd.refuse(RefusalCode::Internal, "the command could not be recorded; nothing was done");
            ctx.commands.record(Err(r.code));
            respond(&ctx, r.to_response()).await;
            continue;
        }
        tracing::info!(id = %cmd.id, cmd = cmd.cmd.as_str(), key = %cmd.key_id, "command accepted");
        match execute(&mut ctx, &cmd).await {
            Ok(Some(result)) => {
                ctx.commands.record(Ok(()));
                respond(&ctx, cmd.response_ok(result)).await;
            }
            Ok(None) => ctx.commands.record(Ok(())), // answered later (config.apply)
            Err(refusal) => {
                tracing::warn!(id = %cmd.id, code = refusal.code.as_str(), reason = %refusal.message, "command failed");
                ctx.commands.record(Err(refusal.code));
                respond(&ctx, refusal.to_response()).await;
            }
        }
    }
    if let Some(s) = limiter.finish() {
        log_unlogged(&s, crate::clock::now());
    }
}

/// A command the verifier refused: counted; answered through the uplink (not journaled) and logged,
/// each within its rate limit; not answered: counted as unanswered.
fn refused(ctx: &ExecutorContext, limiter: &mut RefusalLimiter, now: DateTime<Utc>, refusal: &Refusal) {
    ctx.commands.record(Err(refusal.code));
    let decision = limiter.on_refusal(now, refusal.code);
    if decision.log {
        tracing::warn!(code = refusal.code.as_str(), id = ?refusal.id, reason = %refusal.message, "command refused");
    }
    let sent = decision.answer && ctx.refusals.try_send(RefusalAnswer { payload: refusal.to_response() }).is_ok();
    if !sent {
        Counters::inc(&ctx.counters.commands_unanswered);
    }
    if let Some(s) = limiter.take_summary(now) {
        log_unlogged(&s, now);
    }
}

fn log_unlogged(s: &UnloggedRefusals, now: DateTime<Utc>) {
    let (n, secs, codes) = (s.count, s.seconds(now), s.codes());
    tracing::warn!("{n} commands refused in the last {secs} s, not logged one by one ({codes})");
}

/// Journals a `cmd/res` payload through the pipeline (the only writer of the outbox).
pub async fn respond(ctx: &ExecutorContext, payload: Vec<u8>) {
    journal_response(&ctx.control, payload).await;
}

pub async fn journal_response(control: &mpsc::Sender<Control>, payload: Vec<u8>) {
    let (reply, done) = oneshot::channel();
    let req = Control::Journal { topic: crate::topic::Topic::CommandResult, payload, reply };
    if control.send(req).await.is_ok() {
        let _ = done.await;
    }
}

async fn execute(ctx: &mut ExecutorContext, cmd: &Command) -> Result<Option<Value>, Refusal> {
    match cmd.cmd {
        CommandName::Ping => Ok(Some(json!({"pong": true, "at": rfc3339(crate::clock::now())}))),
        CommandName::Status => Ok(Some(status(ctx).await)),
        CommandName::ConfigGet => Ok(Some(json!({"toml": ctx.config.redacted_toml()}))),
        CommandName::ConfigApply => {
            let args: crate::ops::commands::ConfigApplyArgs = cmd.args_as()?;
            let Some(apply) = &ctx.apply else {
                return Err(cmd.refuse(RefusalCode::UnknownCommand, "config.apply is not available in this mode"));
            };
            apply
                .send(ApplyRequest { id: cmd.id.clone(), toml: args.toml })
                .await
                .map_err(|_| cmd.refuse(RefusalCode::Internal, "the daemon is stopping"))?;
            Ok(None)
        }
        CommandName::DeviceUpsert => device_upsert(ctx, cmd).await.map(Some),
        CommandName::DeviceRemove => device_remove(ctx, cmd).await.map(Some),
        CommandName::BufferStats => Ok(Some(buffer_stats(ctx))),
        CommandName::LogLevel => {
            let level = cmd.args.get("level").and_then(Value::as_str).ok_or_else(|| {
                cmd.refuse(RefusalCode::InvalidArgs, "args.level: expected a string such as \"debug\"")
            })?;
            crate::ops::logging::set_filter(level).map_err(|e| cmd.refuse(RefusalCode::InvalidArgs, e))?;
            Ok(Some(json!({"level": level})))
        }
        CommandName::LightingOverride | CommandName::LightingClear | CommandName::DrEvent | CommandName::DrCancel => {
            let (reply, answer) = oneshot::channel();
            let req = Control::Command { cmd: cmd.cmd, args: cmd.args.clone(), reply };
            ctx.control.send(req).await.map_err(|_| cmd.refuse(RefusalCode::Internal, "the daemon is stopping"))?;
            match answer.await {
                Ok(Ok(v)) => Ok(Some(v)),
                Ok(Err((code, msg))) => Err(cmd.refuse(code, msg)),
                Err(_) => Err(cmd.refuse(RefusalCode::Internal, "no answer from the control loops")),
            }
        }
    }
}

pub fn buffer_stats(ctx: &ExecutorContext) -> Value {
    let oldest = ctx.store.oldest_record_age_s(crate::clock::now());
    json!({
        "depth": ctx.store.depth(),
        "oldest_age_s": oldest,
        "bytes_on_disk": ctx.store.size_on_disk(),
        "journaled": ctx.counters.readings_journaled.load(Ordering::Relaxed),
        "published": ctx.counters.published.load(Ordering::Relaxed),
        "dropped": ctx.counters.readings_dropped.load(Ordering::Relaxed),
    })
}

async fn status(ctx: &ExecutorContext) -> Value {
    let sources: Vec<Value> = ctx
        .sources
        .iter()
        .map(|s| {
            let snap = s.snapshot();
            let since: DateTime<Utc> = snap.since.into();
            json!({"name": snap.name, "kind": snap.kind, "state": snap.state.as_str(), "since": rfc3339(since),
                   "frames": snap.frames, "errors": snap.errors})
        })
        .collect();
    let last_uplink_ms = ctx.counters.last_uplink_unix_ms.load(Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    let control = match ctx.control.send(Control::LoopStatus { reply }).await {
        Ok(()) => tokio::time::timeout(Duration::from_secs(2), answer).await.ok().and_then(Result::ok),
        Err(_) => None,
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "gateway": ctx.config.gateway.id,
        "started_at": rfc3339(ctx.started_at),
        "uptime_s": ctx.started.elapsed().as_secs(),
        "sources": sources,
        "devices": ctx.config.device.len(),
        "backlog": buffer_stats(ctx),
        "mqtt_connected": ctx.counters.mqtt_connected.load(Ordering::Relaxed) == 1,
        "last_uplink": DateTime::from_timestamp_millis(last_uplink_ms as i64).filter(|_| last_uplink_ms > 0).map(rfc3339),
        "control": control.unwrap_or(Value::Null),
        "power": power_status(ctx),
    })
}

/// The power-fail input and what it says (`null` when none is configured).
fn power_status(ctx: &ExecutorContext) -> Value {
    let Some(pf) = &ctx.config.power_fail else {
        return Value::Null;
    };
    let since = ctx.counters.power_lost_since();
    json!({
        "pin": pf.pin,
        "mains": if since.is_some() { "lost" } else { "on" },
        "lost_since": since.map(rfc3339),
        "readings_refused": ctx.counters.readings_refused_power_fail.load(Ordering::Relaxed),
    })
}

async fn device_upsert(ctx: &mut ExecutorContext, cmd: &Command) -> Result<Value, Refusal> {
    // The args are a [[device]] table in JSON; validated like the config file's devices, its `js:`
    // codec loaded and test-run, all before anything changes. Keys are accepted here and stored, and
    // never echoed.
    let dev: DeviceConfig = cmd.args_as()?;
    crate::config::check_device(&dev).map_err(|e| cmd.refuse(RefusalCode::InvalidArgs, e))?;
    let activation = dev.activation().map_err(|e| cmd.refuse(RefusalCode::InvalidArgs, e.to_string()))?;
    let decoder = match dev.js_codec_path() {
        Some(path) => Some(
            crate::codecs::load_js_codec(&ctx.config, &dev.profile, path)
                .map_err(|e| cmd.refuse(RefusalCode::InvalidArgs, format!("profile: {e:#}")))?,
        ),
        None => None,
    };
    let name = dev.name.clone();
    let device = Box::new(dev.clone());
    let change = device_change(ctx, cmd, |reply| Control::UpsertDevice { device, decoder, reply }).await?;
    ctx.config.device.retain(|d| d.name != name);
    ctx.config.device.push(dev);
    let kind = match activation {
        crate::config::Activation::Abp { .. } => "abp",
        crate::config::Activation::Otaa { .. } => "otaa",
    };
    Ok(json!({"device": name, "activation": kind, "persisted": true, "downlinks_dropped": change.downlinks_dropped}))
}

async fn device_remove(ctx: &mut ExecutorContext, cmd: &Command) -> Result<Value, Refusal> {
    let name = cmd
        .args
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| cmd.refuse(RefusalCode::InvalidArgs, "args.name: expected a device name"))?
        .to_string();
    if !ctx.config.device.iter().any(|d| d.name == name) {
        return Err(cmd.refuse(RefusalCode::InvalidArgs, format!("no device named {name:?}")));
    }
    let device = name.clone();
    let change = device_change(ctx, cmd, |reply| Control::RemoveDevice { device, reply }).await?;
    ctx.config.device.retain(|d| d.name != name);
    Ok(json!({"device": name, "removed": true, "downlinks_dropped": change.downlinks_dropped}))
}

/// Hands a device change to the pipeline and waits until it is applied and persisted (all or
/// nothing: `not_persisted` when the journal write failed).
async fn device_change(
    ctx: &ExecutorContext,
    cmd: &Command,
    control: impl FnOnce(oneshot::Sender<Result<DeviceChange, String>>) -> Control,
) -> Result<DeviceChange, Refusal> {
    let stopping = || cmd.refuse(RefusalCode::Internal, "the daemon is stopping");
    let (reply, done) = oneshot::channel();
    ctx.control.send(control(reply)).await.map_err(|_| stopping())?;
    done.await.map_err(|_| stopping())?.map_err(|e| cmd.refuse(RefusalCode::NotPersisted, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(dir: &std::path::Path, extra: &str) -> ExecutorContext {
        let text = format!("[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{extra}");
        let config = crate::config::parse_str(&text, "t.toml", dir).expect("config");
        let store = Store::open(&dir.join("store"), 1 << 20, crate::clock::now()).expect("store");
        // No pipeline: `status` gets no loop status (the send fails at once).
        let (control, _) = mpsc::channel(1);
        let (refusals, _) = mpsc::channel(1);
        ExecutorContext {
            config,
            store,
            control,
            refusals,
            counters: Arc::default(),
            commands: Arc::default(),
            sources: Vec::new(),
            started: Instant::now(),
            started_at: crate::clock::now(),
            apply: None,
        }
    }

    #[tokio::test]
    async fn status_says_what_the_power_fail_input_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = context(&dir.path().join("a"), "");
        assert_eq!(status(&none).await["power"], Value::Null, "no input configured");

        let ctx = context(&dir.path().join("b"), "[power_fail]\npin = 6\nactive_low = true\n");
        ctx.counters.readings_refused_power_fail.store(3, Ordering::Relaxed);
        let st = status(&ctx).await;
        assert_eq!(st["power"], json!({"pin": 6, "mains": "on", "lost_since": null, "readings_refused": 3}), "{st}");
        ctx.counters.power_fail.store(1, Ordering::Relaxed);
        ctx.counters.power_fail_since_unix_ms.store(1_795_000_000_123, Ordering::Relaxed);
        let st = status(&ctx).await;
        assert_eq!(st["power"]["mains"], "lost", "{st}");
        assert_eq!(st["power"]["lost_since"], "2026-11-18T11:06:40.123Z", "{st}");
    }
}
