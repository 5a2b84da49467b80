//! Signed remote commands (PRODUCT.md "Remote operations"): envelope verification, replay protection and the
//! `cmd/res` response JSON.
//!
//! Pure: no clock (`now` is passed in), no I/O, no logging. The shell owns the MQTT subscription, persists the
//! seen-id set, runs the executor (one command at a time, in order, off the core loop) and publishes responses.
//!
//! An envelope on `cmd/req`:
//! ```json
//! {"key_id": "ops-1", "payload": "<base64 of the command JSON bytes>", "sig": "<base64 Ed25519 signature>"}
//! ```
//! and the command JSON inside it:
//! ```json
//! {"id": "unique", "cmd": "status", "args": {}, "issued_at": "2026-11-26T03:10:00Z", "expires_at": "2026-11-26T03:15:00Z"}
//! ```
//! `args` may be omitted (= `{}`). An optional `"gateway": "<gateway.id>"` binds a command to one gateway: when the
//! verifier knows its gateway id ([`Verifier::with_gateway_id`]) a command naming another gateway is refused
//! (`wrong_gateway`), so a command signed for one district cannot be replayed to another. Other unknown fields are
//! ignored.
//!
//! Checks, in order; the first that fails decides the code:
//! 1. the envelope is JSON with string `key_id`, `payload`, `sig`, both base64 (standard alphabet, padded) and the
//!    signature 64 bytes, at most [`MAX_ENVELOPE_BYTES`] — else `malformed`;
//! 2. `key_id` is configured — else `unknown_key`;
//! 3. the Ed25519 signature (strict verification, RFC 8032) holds over exactly the decoded payload bytes — else
//!    `bad_signature`;
//! 4. the payload is a command JSON object: `id` 1..=128 characters without control characters, `cmd` a string,
//!    `issued_at` / `expires_at` RFC 3339 with `expires_at` after `issued_at` — else `malformed`;
//! 5. `gateway`, if present and the verifier knows its own id, matches — else `wrong_gateway`;
//! 6. the time window: `issued_at - skew <= now <= expires_at + skew`, and the window is at most `max_validity`
//!    long — else `expired` (the message says which: expired, not valid yet, or window too long);
//! 7. the `id` has not been accepted before — else `replayed`;
//! 8. `cmd` is a pinned command name — else `unknown_command`;
//! 9. `args` is an object, and for `config.apply` and `lighting.override` has the pinned shape — else
//!    `invalid_args`.
//!
//! A refused command changes nothing: only an accepted command's id enters the seen set. Accepted ids are kept until
//! `expires_at + skew` (after that the time check refuses the command anyway), so the set is bounded by the commands
//! accepted within `max_validity + 2 * skew`. The shell must persist the accepted `(id, forget_after)` before it
//! executes the command (see [`Command::forget_after`], [`Verifier::seen_ids`], [`Verifier::load_seen`]); a command
//! the executor later refuses (`invalid_args`, `internal`) has still used up its id. This relies on the gateway's
//! clock not jumping backwards by more than the skew after an id was forgotten.
//!
//! For correlation, a refusal carries the command's `id` whenever it can be read from the payload, even before the
//! signature was checked (the response then only says that the command was refused). Messages never contain key
//! material or argument values.
//!
//! Refusals can come from anyone who can publish on `cmd/req`: [`limits`] decides which of them are answered and
//! which logged one by one (token buckets in the caller's time); every one is counted ([`CommandCounts`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub mod limits;

pub use limits::{RefusalDecision, RefusalLimiter, RefusalLimits, TokenBucket, UnloggedRefusals};

/// The largest envelope accepted (bytes of the MQTT payload); `config.apply` carries a whole TOML file.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// The longest command `id`, in characters.
pub const MAX_ID_LEN: usize = 128;
/// The default allowed clock skew between the city's signer and the gateway.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);
/// The default longest validity window (`expires_at - issued_at`) a command may have.
pub const DEFAULT_MAX_VALIDITY: Duration = Duration::from_secs(24 * 3600);

const MAX_MESSAGE_LEN: usize = 300;

/// Why a command was refused; serialized as the `error.code` of a `cmd/res` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The signature does not verify over the payload bytes with the named key.
    BadSignature,
    /// No public key is configured for `key_id`.
    UnknownKey,
    /// Outside the time window: expired, not valid yet, or a window longer than the allowed maximum.
    Expired,
    /// The `id` was accepted before.
    Replayed,
    /// Not an envelope / command of the documented shape.
    Malformed,
    /// `cmd` is not a known command.
    UnknownCommand,
    /// `args` does not fit the command (also used by the executor, e.g. an unknown zone).
    InvalidArgs,
    /// The command names another gateway (`"gateway"` field). Added name.
    WrongGateway,
    /// The gateway could not carry out a valid command (e.g. the seen-id store failed). Added name.
    Internal,
    /// A valid change (`device.upsert`, `device.remove`) could not be written to the journal: nothing
    /// changed; send it again later. Added name.
    NotPersisted,
}

impl RefusalCode {
    pub const ALL: [RefusalCode; 10] = [
        RefusalCode::BadSignature,
        RefusalCode::UnknownKey,
        RefusalCode::Expired,
        RefusalCode::Replayed,
        RefusalCode::Malformed,
        RefusalCode::UnknownCommand,
        RefusalCode::InvalidArgs,
        RefusalCode::WrongGateway,
        RefusalCode::Internal,
        RefusalCode::NotPersisted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadSignature => "bad_signature",
            RefusalCode::UnknownKey => "unknown_key",
            RefusalCode::Expired => "expired",
            RefusalCode::Replayed => "replayed",
            RefusalCode::Malformed => "malformed",
            RefusalCode::UnknownCommand => "unknown_command",
            RefusalCode::InvalidArgs => "invalid_args",
            RefusalCode::WrongGateway => "wrong_gateway",
            RefusalCode::Internal => "internal",
            RefusalCode::NotPersisted => "not_persisted",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: the `id` when it could be read, the code, and a message for the operator (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command {} refused: {code}: {message}", id.as_deref().unwrap_or("(no id)"))]
pub struct Refusal {
    pub id: Option<String>,
    pub code: RefusalCode,
    pub message: String,
}

impl Refusal {
    pub fn new(id: Option<&str>, code: RefusalCode, message: impl Into<String>) -> Self {
        Refusal { id: id.map(str::to_owned), code, message: truncate(message.into()) }
    }

    /// The `cmd/res` JSON for this refusal.
    pub fn to_response(&self) -> Vec<u8> {
        response_err(self.id.as_deref(), self.code, &self.message)
    }
}

macro_rules! command_names {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// The pinned command names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandName { $($variant,)* }

        impl CommandName {
            pub const ALL: &'static [CommandName] = &[$(CommandName::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(CommandName::$variant => $name,)* }
            }

            pub fn parse(s: &str) -> Option<CommandName> {
                match s { $($name => Some(CommandName::$variant),)* _ => None }
            }
        }
    };
}

command_names! {
    Ping = "ping",
    Status = "status",
    ConfigGet = "config.get",
    ConfigApply = "config.apply",
    DeviceUpsert = "device.upsert",
    DeviceRemove = "device.remove",
    LightingOverride = "lighting.override",
    LightingClear = "lighting.clear",
    DrEvent = "dr.event",
    DrCancel = "dr.cancel",
    BufferStats = "buffer.stats",
    LogLevel = "log.level",
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified, accepted command, ready for the executor.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    /// The key that signed it (for the log: who did what).
    pub key_id: String,
    pub cmd: CommandName,
    /// Always a JSON object (`{}` when the command had none).
    pub args: Value,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Until when the id must be remembered: `expires_at + skew`. Persist `(id, forget_after)` before executing.
    pub forget_after: DateTime<Utc>,
}

impl Command {
    /// `args` as a typed struct; a mismatch is an `invalid_args` refusal whose message names the problem without
    /// echoing argument values.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, Refusal> {
        args_as(&self.id, self.cmd, &self.args)
    }

    /// A refusal for this command (for the executor: `invalid_args`, `internal`).
    pub fn refuse(&self, code: RefusalCode, message: impl Into<String>) -> Refusal {
        Refusal::new(Some(&self.id), code, message)
    }

    /// The `cmd/res` JSON for a successful execution.
    pub fn response_ok(&self, result: Value) -> Vec<u8> {
        response_ok(&self.id, result)
    }
}

/// `config.apply` arguments (pinned): the whole new config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigApplyArgs {
    pub toml: String,
}

/// `lighting.override` arguments (pinned).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightingOverrideArgs {
    pub zone: String,
    pub level_pct: u8,
    pub duration_s: u32,
}

/// A configured key was refused by [`Verifier::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    #[error("ops key {0:?}: not a valid Ed25519 public key")]
    BadKey(String),
    #[error("ops key {0:?} is configured twice")]
    DuplicateKey(String),
    #[error("command time limits out of range")]
    BadDuration,
}

/// Verifies envelopes and remembers accepted ids. One per gateway; commands go through it one at a time.
pub struct Verifier {
    keys: HashMap<String, VerifyingKey>,
    skew: TimeDelta,
    max_validity: TimeDelta,
    gateway_id: Option<String>,
    /// Accepted id → forget_after.
    seen: HashMap<String, DateTime<Utc>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key_ids: Vec<_> = self.keys.keys().collect();
        key_ids.sort();
        f.debug_struct("Verifier")
            .field("key_ids", &key_ids)
            .field("skew", &self.skew)
            .field("max_validity", &self.max_validity)
            .field("gateway_id", &self.gateway_id)
            .field("seen", &self.seen.len())
            .finish()
    }
}

impl Verifier {
    /// `keys`: `(key_id, Ed25519 public key)` from `[[ops.key]]`. `skew`: allowed clock difference.
    /// `max_validity`: the longest `expires_at - issued_at` accepted; it bounds how long ids are remembered.
    pub fn new(keys: Vec<(String, [u8; 32])>, skew: Duration, max_validity: Duration) -> Result<Self, VerifierError> {
        let skew = TimeDelta::from_std(skew).map_err(|_| VerifierError::BadDuration)?;
        let max_validity = TimeDelta::from_std(max_validity).map_err(|_| VerifierError::BadDuration)?;
        if skew > TimeDelta::days(1) || max_validity > TimeDelta::days(366) || max_validity <= TimeDelta::zero() {
            return Err(VerifierError::BadDuration);
        }
        let mut map = HashMap::new();
        for (id, bytes) in keys {
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| VerifierError::BadKey(id.clone()))?;
            if key.is_weak() {
                return Err(VerifierError::BadKey(id));
            }
            if map.insert(id.clone(), key).is_some() {
                return Err(VerifierError::DuplicateKey(id));
            }
        }
        Ok(Verifier { keys: map, skew, max_validity, gateway_id: None, seen: HashMap::new() })
    }

    /// Refuse commands whose optional `"gateway"` field names another gateway.
    pub fn with_gateway_id(mut self, gateway_id: impl Into<String>) -> Self {
        self.gateway_id = Some(gateway_id.into());
        self
    }

    /// Check an envelope (the raw `cmd/req` payload) at time `now`. On success the command's id is remembered.
    pub fn verify(&mut self, now: DateTime<Utc>, envelope: &[u8]) -> Result<Command, Refusal> {
        self.prune(now);

        // 1. Envelope.
        if envelope.len() > MAX_ENVELOPE_BYTES {
            return Err(Refusal::new(
                None,
                RefusalCode::Malformed,
                format!("envelope larger than {MAX_ENVELOPE_BYTES} bytes"),
            ));
        }
        let env: Envelope = serde_json::from_slice(envelope).map_err(|e| {
            Refusal::new(
                None,
                RefusalCode::Malformed,
                format!("envelope is not a JSON object with string key_id, payload and sig: {}", describe_json(&e)),
            )
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(env.payload.as_bytes())
            .map_err(|_| Refusal::new(None, RefusalCode::Malformed, "payload is not valid base64"))?;
        let id = peek_id(&payload);
        let id = id.as_deref();
        let sig_bytes = b64
            .decode(env.sig.as_bytes())
            .map_err(|_| Refusal::new(id, RefusalCode::Malformed, "sig is not base64"))?;
        let sig_bytes: [u8; 64] = sig_bytes.as_slice().try_into().map_err(|_| {
            Refusal::new(id, RefusalCode::Malformed, format!("sig must be 64 bytes, got {}", sig_bytes.len()))
        })?;

        // 2. Key.
        let Some(key) = self.keys.get(&env.key_id) else {
            return Err(Refusal::new(
                id,
                RefusalCode::UnknownKey,
                format!("no ops key {:?} is configured", truncate_chars(&env.key_id, 64)),
            ));
        };

        // 3. Signature over exactly the payload bytes.
        let sig = Signature::from_bytes(&sig_bytes);
        if key.verify_strict(&payload, &sig).is_err() {
            return Err(Refusal::new(
                id,
                RefusalCode::BadSignature,
                format!("signature does not verify with key {:?}", env.key_id),
            ));
        }

        // 4. Command JSON.
        let body: CommandBody = serde_json::from_slice(&payload).map_err(|e| {
            Refusal::new(
                id,
                RefusalCode::Malformed,
                format!("payload is not a command JSON object: {}", describe_json(&e)),
            )
        })?;
        let id = body.id.as_str();
        if !valid_id(id) {
            return Err(Refusal::new(
                None,
                RefusalCode::Malformed,
                format!("id must be 1 to {MAX_ID_LEN} characters without control characters"),
            ));
        }
        let issued_at = parse_time(id, "issued_at", &body.issued_at)?;
        let expires_at = parse_time(id, "expires_at", &body.expires_at)?;
        if expires_at <= issued_at {
            return Err(Refusal::new(Some(id), RefusalCode::Malformed, "expires_at must be later than issued_at"));
        }

        // 5. Gateway binding.
        if let (Some(ours), Some(theirs)) = (&self.gateway_id, &body.gateway) {
            if ours != theirs {
                return Err(Refusal::new(
                    Some(id),
                    RefusalCode::WrongGateway,
                    format!("command is for gateway {:?}, this is {ours:?}", truncate_chars(theirs, 64)),
                ));
            }
        }

        // 6. Time window.
        let window = expires_at - issued_at;
        if window > self.max_validity {
            return Err(Refusal::new(
                Some(id),
                RefusalCode::Expired,
                format!(
                    "validity window of {} s is longer than the allowed {} s",
                    window.num_seconds(),
                    self.max_validity.num_seconds()
                ),
            ));
        }
        if now + self.skew < issued_at {
            return Err(Refusal::new(
                Some(id),
                RefusalCode::Expired,
                format!("not valid yet: issued_at is {} s in the future", (issued_at - now).num_seconds()),
            ));
        }
        if now - self.skew > expires_at {
            return Err(Refusal::new(
                Some(id),
                RefusalCode::Expired,
                format!("expired {} s ago", (now - expires_at).num_seconds()),
            ));
        }

        // 7. Replay.
        if self.seen.contains_key(id) {
            return Err(Refusal::new(Some(id), RefusalCode::Replayed, "this command id was already accepted"));
        }

        // 8. Command name.
        let Some(cmd) = CommandName::parse(&body.cmd) else {
            return Err(Refusal::new(
                Some(id),
                RefusalCode::UnknownCommand,
                format!("unknown command {:?}", truncate_chars(&body.cmd, 64)),
            ));
        };

        // 9. Arguments.
        let args = match body.args {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(Refusal::new(Some(id), RefusalCode::InvalidArgs, "args must be a JSON object")),
        };
        match cmd {
            CommandName::ConfigApply => args_as::<ConfigApplyArgs>(id, cmd, &args).map(drop)?,
            CommandName::LightingOverride => {
                let a = args_as::<LightingOverrideArgs>(id, cmd, &args)?;
                if a.level_pct > 100 {
                    return Err(Refusal::new(Some(id), RefusalCode::InvalidArgs, "level_pct must be 0 to 100"));
                }
            }
            _ => {}
        }

        let forget_after = expires_at + self.skew;
        self.seen.insert(body.id.clone(), forget_after);
        Ok(Command { id: body.id, key_id: env.key_id, cmd, args, issued_at, expires_at, forget_after })
    }

    /// Forget ids whose `forget_after` has passed; returns how many were dropped. `verify` calls it itself.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.seen.len();
        self.seen.retain(|_, forget_after| *forget_after >= now);
        before - self.seen.len()
    }

    /// The remembered ids with their `forget_after`, sorted by id: what the shell persists.
    pub fn seen_ids(&self) -> Vec<(String, DateTime<Utc>)> {
        let mut v: Vec<_> = self.seen.iter().map(|(id, t)| (id.clone(), *t)).collect();
        v.sort();
        v
    }

    /// Restore persisted ids (after a restart); entries already past `forget_after` are dropped.
    /// A later time for an id already known wins.
    pub fn load_seen(&mut self, now: DateTime<Utc>, entries: impl IntoIterator<Item = (String, DateTime<Utc>)>) {
        for (id, forget_after) in entries {
            if forget_after < now || !valid_id(&id) {
                continue;
            }
            let e = self.seen.entry(id).or_insert(forget_after);
            if *e < forget_after {
                *e = forget_after;
            }
        }
    }

    /// How many ids are remembered.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// The configured key ids, sorted (for status).
    pub fn key_ids(&self) -> Vec<String> {
        let mut v: Vec<_> = self.keys.keys().cloned().collect();
        v.sort();
        v
    }
}

/// `{"id": "...", "ok": true, "result": {...}}`
pub fn response_ok(id: &str, result: Value) -> Vec<u8> {
    json!({"id": id, "ok": true, "result": result}).to_string().into_bytes()
}

/// `{"id": "..." | null, "ok": false, "error": {"code": "...", "message": "..."}}`
pub fn response_err(id: Option<&str>, code: RefusalCode, message: &str) -> Vec<u8> {
    json!({"id": id, "ok": false, "error": {"code": code.as_str(), "message": message}}).to_string().into_bytes()
}

/// Command results by outcome (`ok` and every refusal code), for metrics. The shell records every command once:
/// `record(Ok(()))` after a successful execution, `record(Err(code))` for a refusal by the verifier or executor.
#[derive(Debug, Default)]
pub struct CommandCounts {
    ok: AtomicU64,
    refused: [AtomicU64; RefusalCode::ALL.len()],
}

impl CommandCounts {
    pub fn record(&self, outcome: Result<(), RefusalCode>) {
        let counter = match outcome {
            Ok(()) => &self.ok,
            Err(code) => &self.refused[RefusalCode::ALL.iter().position(|c| *c == code).unwrap_or(0)],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `("ok", n)` then `(code, n)` for every refusal code, zeros included.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![("ok", self.ok.load(Ordering::Relaxed))];
        for (code, n) in RefusalCode::ALL.iter().zip(&self.refused) {
            v.push((code.as_str(), n.load(Ordering::Relaxed)));
        }
        v
    }
}

#[derive(Deserialize)]
struct Envelope {
    key_id: String,
    payload: String,
    sig: String,
}

#[derive(Deserialize)]
struct CommandBody {
    id: String,
    cmd: String,
    #[serde(default)]
    args: Option<Value>,
    issued_at: String,
    expires_at: String,
    #[serde(default)]
    gateway: Option<String>,
}

fn args_as<T: DeserializeOwned>(id: &str, cmd: CommandName, args: &Value) -> Result<T, Refusal> {
    T::deserialize(args).map_err(|e| {
        Refusal::new(Some(id), RefusalCode::InvalidArgs, format!("{cmd} args: {}", redact_quoted(&e.to_string())))
    })
}

/// The `id` of a payload, if it is a JSON object with a valid string `id` (for refusals before full parsing).
fn peek_id(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let id = v.get("id")?.as_str()?;
    valid_id(id).then(|| id.to_owned())
}

fn valid_id(id: &str) -> bool {
    let n = id.chars().count();
    (1..=MAX_ID_LEN).contains(&n) && !id.chars().any(char::is_control)
}

fn parse_time(id: &str, field: &str, s: &str) -> Result<DateTime<Utc>, Refusal> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Refusal::new(Some(id), RefusalCode::Malformed, format!("{field} is not an RFC 3339 time")))
}

/// A serde_json error without the input: its category and position only.
fn describe_json(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => redact_quoted(&e.to_string()),
        serde_json::error::Category::Eof => "unexpected end of input".to_owned(),
        _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
    }
}

/// Replace every `"..."` in a serde message (where serde quotes input values) by `"…"`; field names, which serde
/// quotes with backticks, stay.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push_str("…\"");
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn truncate(s: String) -> String {
    if s.chars().count() <= MAX_MESSAGE_LEN {
        s
    } else {
        truncate_chars(&s, MAX_MESSAGE_LEN)
    }
}

#[cfg(test)]
mod tests;
