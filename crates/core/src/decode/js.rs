//! Sandboxed JavaScript device codecs in The Things Network format (`profile = "js:PATH"`).
//!
//! A codec is a script that defines `function decodeUplink(input)`; `input` is
//! `{bytes: [..], fPort: n}` (plus `recvTime`, a `Date`, when the caller passes one) and the
//! result is `{data, warnings, errors}`. Each [`JsCodec`] owns one QuickJS runtime and context
//! (via rquickjs): the script is compiled and its top level run once at [`JsCodec::load`], and
//! every [`Decoder::decode`] calls `decodeUplink` in that same context.
//!
//! # Sandbox
//! - Only the ECMAScript built-ins (Object, Math, JSON, Date, RegExp, typed arrays, Map/Set,
//!   Promise, Proxy, BigInt, `eval`). No `std`/`os` modules, no `console`, no `performance`,
//!   no `WeakRef`, no timers, no I/O of any kind. No module loader or resolver is installed
//!   (and rquickjs is built without its `loader` feature), so `require` is undefined, a static
//!   `import` is a syntax error in a script and `import()` rejects.
//! - Memory: the runtime's allocator is capped at [`JsLimits::memory_bytes`]; exhausting it
//!   throws inside the codec.
//! - Stack: native stack use of the interpreter is capped at [`JsLimits::stack_bytes`].
//! - Time: QuickJS calls an interrupt handler every ~10,000 bytecode operations; it reads the
//!   injected clock and aborts the call (an uncatchable exception) once
//!   [`JsLimits::time_budget`] has passed. Loading gets ten times the budget. The regex engine
//!   polls the same handler (QuickJS-ng >= 0.10, i.e. rquickjs >= 0.10; with rquickjs 0.9 a
//!   catastrophically backtracking regular expression would escape the time limit).
//!
//! After a time-out, memory exhaustion, stack overflow, or when the codec's heap stays above
//! half the memory limit, the runtime is dropped and re-created transparently from the stored
//! source on the next call, so one bad payload cannot leave a codec half-updated or starved.
//!
//! # Result mapping
//! - `data` (an object, or absent) → [`Decoded::metrics`], converted like `JSON.stringify`
//!   (`toJSON` honoured, functions and `undefined` skipped, nested objects kept as JSON);
//!   integral numbers become JSON integers; non-finite numbers are dropped (in arrays: `null`)
//!   with a warning.
//! - `warnings` / `errors` (arrays; a single string is accepted) → kept as strings. A codec
//!   that reports errors still yields `Ok`: the caller decides.
//! - An exception, time-out, memory or stack exhaustion, a missing `decodeUplink`, a result
//!   that is not an object (or a `Promise`) → `Err(DecodeError::Codec(msg))`; `msg` is short
//!   and never contains the payload (only the codec's own exception text, truncated).
//!
//! The module reads no clock itself: the caller injects one (see [`JsCodec::load`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rquickjs::context::intrinsic;
use rquickjs::context::EvalOptions;
use rquickjs::function::Constructor;
use rquickjs::{Array, Context, Ctx, Object, Runtime, Type, Value};
use serde_json::Value as Json;

use crate::decode::{DecodeError, Decoded, Decoder, Metrics};

/// A monotonic clock: time since an arbitrary fixed origin.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Resource limits of one codec runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsLimits {
    /// Heap the runtime may allocate (QuickJS malloc limit). Default 16 MiB.
    pub memory_bytes: usize,
    /// Wall time one `decodeUplink` call may take. Default 100 ms. Loading (compiling and
    /// running the script's top level) may take ten times this.
    pub time_budget: Duration,
    /// Native stack the interpreter may use per call. Default 256 KiB.
    pub stack_bytes: usize,
}

impl Default for JsLimits {
    fn default() -> Self {
        Self { memory_bytes: 16 * 1024 * 1024, time_budget: Duration::from_millis(100), stack_bytes: 256 * 1024 }
    }
}

/// Intrinsics a TTN codec may use; deliberately without `Performance` (a clock) and `WeakRef`
/// (GC-dependent behaviour). `Eval` is required to evaluate the script at all.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::BigInt,
);

/// Loading may take this many time budgets.
const LOAD_BUDGET_FACTOR: u32 = 10;
/// Longest error, warning or exception text kept, in characters.
const MAX_MESSAGE_CHARS: usize = 200;
/// Most warnings / errors kept from one result.
const MAX_MESSAGES: usize = 64;
/// Deepest nesting of `data` converted (also stops cycles).
const MAX_DEPTH: usize = 32;
/// Most JSON nodes converted from one `data`.
const MAX_NODES: usize = 100_000;
/// Most promise jobs run after one call.
const MAX_JOBS: usize = 1_000;
/// Message for a `null` exception (see [`failure`]).
const NULL_THROWN: &str = "memory limit exceeded (or the codec threw null)";
/// No deadline armed.
const DISARMED: u64 = u64::MAX;

/// Shared between the codec and its runtime's interrupt handler.
struct Watchdog {
    clock: Clock,
    /// Deadline in clock nanoseconds, or [`DISARMED`].
    deadline_ns: AtomicU64,
    /// Set by the interrupt handler when it aborted a call.
    fired: AtomicBool,
}

impl Watchdog {
    fn now_ns(&self) -> u64 {
        u64::try_from((self.clock)().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn arm(&self, budget: Duration) {
        let budget = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        let deadline = self.now_ns().saturating_add(budget).min(DISARMED - 1);
        self.fired.store(false, Ordering::SeqCst);
        self.deadline_ns.store(deadline, Ordering::SeqCst);
    }

    /// Disarms; returns whether the deadline aborted something since [`Watchdog::arm`].
    fn disarm(&self) -> bool {
        self.deadline_ns.store(DISARMED, Ordering::SeqCst);
        self.fired.swap(false, Ordering::SeqCst)
    }

    fn expired(&self) -> bool {
        let deadline = self.deadline_ns.load(Ordering::SeqCst);
        deadline != DISARMED && self.now_ns() >= deadline
    }

    /// The interrupt handler: `true` aborts the running script.
    fn interrupt(&self) -> bool {
        if self.expired() {
            self.fired.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    }
}

/// Why a call failed, before it becomes a [`DecodeError::Codec`].
enum Failure {
    /// The codec misbehaved; the runtime is still fine.
    Codec(String),
    /// A resource limit was hit; the runtime is re-created before the next call.
    Limit(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Codec(m) | Failure::Limit(m) => m,
        }
    }
}

/// One QuickJS runtime with the codec's script evaluated in its context.
struct Engine {
    // Field order = drop order: the context before the runtime it lives in.
    ctx: Context,
    rt: Runtime,
}

/// A TTN-format JavaScript codec running in its own sandboxed QuickJS runtime.
pub struct JsCodec {
    profile: String,
    source: String,
    limits: JsLimits,
    watchdog: Arc<Watchdog>,
    /// `None` after a resource failure (or a failed re-creation): re-created on the next call.
    engine: Option<Engine>,
}

impl fmt::Debug for JsCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsCodec")
            .field("profile", &self.profile)
            .field("limits", &self.limits)
            .field("loaded", &self.engine.is_some())
            .finish_non_exhaustive()
    }
}

impl JsCodec {
    /// Compiles `source` and runs its top level once, in a fresh runtime limited by `limits`.
    /// `profile` is what [`Decoder::profile`] reports (e.g. `js:codecs/em310.js`). `clock` is a
    /// monotonic clock (the daemon passes one based on `Instant`; tests may pass a fake); it is
    /// read only by the time limit.
    ///
    /// Fails with [`DecodeError::Codec`] on a syntax error, an exception, time-out or memory
    /// exhaustion in the top level, or when the script defines no function `decodeUplink`.
    pub fn load(profile: &str, source: &str, limits: JsLimits, clock: Clock) -> Result<JsCodec, DecodeError> {
        let watchdog =
            Arc::new(Watchdog { clock, deadline_ns: AtomicU64::new(DISARMED), fired: AtomicBool::new(false) });
        let engine = start(source, &limits, &watchdog).map_err(|f| DecodeError::Codec(f.into_message()))?;
        Ok(JsCodec { profile: profile.to_string(), source: source.to_string(), limits, watchdog, engine: Some(engine) })
    }

    /// The limits this codec runs under.
    pub fn limits(&self) -> &JsLimits {
        &self.limits
    }

    /// Bytes the runtime currently holds (QuickJS `malloc_size`); 0 while no runtime exists
    /// (after a resource failure, until the next call re-creates it).
    pub fn memory_usage(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| usize::try_from(e.rt.memory_usage().malloc_size).unwrap_or(0))
    }

    /// Like [`Decoder::decode`], and passes `recv_time` (RFC 3339) to the codec as
    /// `input.recvTime`, a `Date`, as The Things Stack does.
    pub fn decode_at(&mut self, f_port: u8, payload: &[u8], recv_time: Option<&str>) -> Result<Decoded, DecodeError> {
        self.run(f_port, payload, recv_time).map_err(|f| DecodeError::Codec(f.into_message()))
    }

    fn run(&mut self, f_port: u8, payload: &[u8], recv_time: Option<&str>) -> Result<Decoded, Failure> {
        let engine = match self.engine.take() {
            Some(e) => e,
            None => start(&self.source, &self.limits, &self.watchdog)
                .map_err(|f| Failure::Limit(format!("codec reload failed: {}", f.into_message())))?,
        };

        self.watchdog.arm(self.limits.time_budget);
        let outcome = engine.ctx.with(|ctx| call(&ctx, f_port, payload, recv_time));
        let jobs_left = drain_jobs(&engine.rt, &self.watchdog);
        let timed_out = self.watchdog.disarm();

        let outcome = match outcome {
            _ if timed_out => {
                Err(Failure::Limit(format!("time limit of {} ms exceeded", self.limits.time_budget.as_millis())))
            }
            Ok(_) if jobs_left => Err(Failure::Limit("codec left promise jobs running".into())),
            other => other,
        };
        match outcome {
            Ok(decoded) => {
                if heap_healthy(&engine.rt, self.limits.memory_bytes) {
                    self.engine = Some(engine);
                }
                Ok(decoded)
            }
            Err(Failure::Codec(msg)) => {
                if heap_healthy(&engine.rt, self.limits.memory_bytes) {
                    self.engine = Some(engine);
                }
                Err(Failure::Codec(msg))
            }
            // The engine is dropped here: a clean one is started on the next call.
            Err(Failure::Limit(msg)) => Err(Failure::Limit(msg)),
        }
    }

    /// A trial run before a codec goes into service (`device.upsert`): it must define
    /// `decodeUplink`, and a call with a one-byte payload on FPort 1 must finish within the limits. The
    /// codec may refuse the sample (an error it raises or returns is fine): only a codec that cannot
    /// run at all is refused.
    pub fn self_test(&mut self) -> Result<(), String> {
        let defined = self.engine.as_ref().is_none_or(|e| {
            e.ctx.with(|ctx| ctx.globals().get::<_, Value>("decodeUplink").is_ok_and(|v| v.is_function()))
        });
        if !defined {
            return Err("codec defines no function decodeUplink".into());
        }
        match self.run(1, &[0], None) {
            Err(Failure::Limit(m)) => Err(format!("trial decode: {m}")),
            _ => Ok(()),
        }
    }
}

impl Decoder for JsCodec {
    fn profile(&self) -> &str {
        &self.profile
    }

    fn decode(&mut self, f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
        self.decode_at(f_port, payload, None)
    }
}

/// Creates a runtime with the limits and the sandboxed context, and evaluates the script.
fn start(source: &str, limits: &JsLimits, watchdog: &Arc<Watchdog>) -> Result<Engine, Failure> {
    let rt = Runtime::new().map_err(|e| Failure::Codec(format!("cannot create JavaScript runtime: {e}")))?;
    rt.set_memory_limit(limits.memory_bytes);
    rt.set_max_stack_size(limits.stack_bytes);
    let wd = Arc::clone(watchdog);
    rt.set_interrupt_handler(Some(Box::new(move || wd.interrupt())));
    let ctx = Context::custom::<Intrinsics>(&rt)
        .map_err(|e| Failure::Codec(format!("cannot create JavaScript context: {e}")))?;

    watchdog.arm(limits.time_budget.saturating_mul(LOAD_BUDGET_FACTOR));
    let outcome = ctx.with(|ctx| {
        let mut opts = EvalOptions::default();
        opts.global = true;
        opts.strict = false;
        ctx.eval_with_options::<(), _>(source, opts).map_err(|e| failure(&ctx, e))?;
        let f: Value = ctx.globals().get("decodeUplink").map_err(|e| failure(&ctx, e))?;
        if f.is_function() {
            Ok(())
        } else {
            Err(Failure::Codec("codec defines no function decodeUplink".into()))
        }
    });
    let jobs_left = drain_jobs(&rt, watchdog);
    if watchdog.disarm() {
        let ms = limits.time_budget.saturating_mul(LOAD_BUDGET_FACTOR).as_millis();
        return Err(Failure::Limit(format!("time limit of {ms} ms exceeded while loading")));
    }
    outcome?;
    if jobs_left {
        return Err(Failure::Limit("codec left promise jobs running while loading".into()));
    }
    Ok(Engine { ctx, rt })
}

/// Runs queued promise jobs (e.g. from an `import()`) under the armed deadline; `true` if some
/// are still pending afterwards.
fn drain_jobs(rt: &Runtime, watchdog: &Watchdog) -> bool {
    let mut n = 0;
    while rt.is_job_pending() {
        if n >= MAX_JOBS || watchdog.expired() {
            return true;
        }
        // A job's exception (e.g. a rejected import) is the codec's business.
        let _ = rt.execute_pending_job();
        n += 1;
    }
    false
}

/// After a call: `false` if the heap stays above half the limit even after a GC (a codec that
/// hoards memory in globals), so the runtime is re-created before it starves.
fn heap_healthy(rt: &Runtime, limit: usize) -> bool {
    let used = |rt: &Runtime| usize::try_from(rt.memory_usage().malloc_size).unwrap_or(usize::MAX);
    if limit == 0 || used(rt) <= limit / 2 {
        return true;
    }
    rt.run_gc();
    used(rt) <= limit / 2
}

/// One `decodeUplink` call and the conversion of its result.
fn call<'js>(ctx: &Ctx<'js>, f_port: u8, payload: &[u8], recv_time: Option<&str>) -> Result<Decoded, Failure> {
    let js = |e: rquickjs::Error| failure(ctx, e);
    let f: Value = ctx.globals().get("decodeUplink").map_err(js)?;
    let Some(f) = f.as_function() else {
        return Err(Failure::Codec("codec defines no function decodeUplink".into()));
    };

    let input = Object::new(ctx.clone()).map_err(js)?;
    let bytes = Array::new(ctx.clone()).map_err(js)?;
    for (i, b) in payload.iter().enumerate() {
        bytes.set(i, i32::from(*b)).map_err(js)?;
    }
    input.set("bytes", bytes).map_err(js)?;
    input.set("fPort", i32::from(f_port)).map_err(js)?;
    if let Some(t) = recv_time {
        let date: Constructor = ctx.globals().get("Date").map_err(js)?;
        let date: Value = date.construct((t,)).map_err(js)?;
        input.set("recvTime", date).map_err(js)?;
    }

    let result: Value = f.call((input,)).map_err(js)?;
    if result.is_promise() {
        return Err(Failure::Codec("decodeUplink returned a Promise; async codecs are not supported".into()));
    }
    let Some(result) = result.as_object().filter(|_| result.type_of() == Type::Object) else {
        return Err(Failure::Codec(format!("decodeUplink returned {}, expected an object", type_name(&result))));
    };

    let mut decoded = Decoded::new();
    let mut conv = Converter { ctx, nodes: 0, warnings: Vec::new() };
    let data: Value = result.get("data").map_err(js)?;
    match data.type_of() {
        Type::Undefined | Type::Null | Type::Uninitialized => {}
        Type::Object => {
            let data = data.as_object().ok_or_else(|| Failure::Codec("data is not an object".into()))?;
            decoded.metrics = conv.object(data, "data", 0)?;
        }
        _ => return Err(Failure::Codec(format!("data is {}, expected an object", type_name(&data)))),
    }
    decoded.errors = messages(ctx, result, "errors")?;
    decoded.warnings = messages(ctx, result, "warnings")?;
    decoded.warnings.extend(conv.warnings);
    decoded.warnings.truncate(MAX_MESSAGES);
    Ok(decoded)
}

/// `warnings` / `errors` of a result: an array (elements as strings) or one string.
fn messages<'js>(ctx: &Ctx<'js>, result: &Object<'js>, key: &str) -> Result<Vec<String>, Failure> {
    let v: Value = result.get(key).map_err(|e| failure(ctx, e))?;
    if v.is_undefined() || v.is_null() {
        return Ok(Vec::new());
    }
    let items: Vec<Value> = match v.as_array() {
        Some(a) => {
            (0..a.len().min(MAX_MESSAGES)).map(|i| a.get(i)).collect::<Result<_, _>>().map_err(|e| failure(ctx, e))?
        }
        None => vec![v],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = match item.as_string() {
            Some(s) => s.to_string().map_err(|e| failure(ctx, e))?,
            None => {
                let mut conv = Converter { ctx, nodes: 0, warnings: Vec::new() };
                match conv.value(item, key, 0)? {
                    Some(j) => j.to_string(),
                    None => continue,
                }
            }
        };
        out.push(truncate(&text));
    }
    Ok(out)
}

/// Converts JavaScript values to JSON like `JSON.stringify`, with limits.
struct Converter<'a, 'js> {
    ctx: &'a Ctx<'js>,
    nodes: usize,
    warnings: Vec<String>,
}

impl<'js> Converter<'_, 'js> {
    fn object(&mut self, obj: &Object<'js>, path: &str, depth: usize) -> Result<Metrics, Failure> {
        let mut map = Metrics::new();
        let props: Vec<(String, Value)> =
            obj.props::<String, Value>().collect::<Result<_, _>>().map_err(|e| failure(self.ctx, e))?;
        for (k, v) in props {
            let p = format!("{path}.{k}");
            if let Some(j) = self.value(v, &p, depth + 1)? {
                map.insert(k, j);
            }
        }
        Ok(map)
    }

    /// `None` = skipped (undefined, function, symbol, non-finite number).
    fn value(&mut self, v: Value<'js>, path: &str, depth: usize) -> Result<Option<Json>, Failure> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Failure::Codec(format!("data has more than {MAX_NODES} values")));
        }
        if depth > MAX_DEPTH {
            return Err(Failure::Codec(format!("data is nested deeper than {MAX_DEPTH} levels (a cycle?)")));
        }
        let js = |e: rquickjs::Error| failure(self.ctx, e);
        // `toJSON` first, as JSON.stringify does (Date → ISO string).
        let v = match v.as_object() {
            Some(o) if !v.is_function() => match o.get::<_, Value>("toJSON").map_err(js)?.as_function() {
                Some(to_json) => to_json.call((rquickjs::function::This(v.clone()), path)).map_err(js)?,
                None => v,
            },
            _ => v,
        };
        Ok(match v.type_of() {
            Type::Undefined | Type::Uninitialized | Type::Function | Type::Constructor | Type::Symbol => None,
            Type::Null => Some(Json::Null),
            Type::Bool => v.as_bool().map(Json::Bool),
            Type::Int => v.as_int().map(Json::from),
            Type::Float => match v.as_float() {
                Some(f) if f.is_finite() => Some(number(f)),
                _ => {
                    self.warnings.push(truncate(&format!("{path}: non-finite number dropped")));
                    None
                }
            },
            Type::String => {
                Some(Json::String(v.as_string().map(|s| s.to_string()).transpose().map_err(js)?.unwrap_or_default()))
            }
            Type::BigInt => {
                let s: rquickjs::Coerced<String> = v.get().map_err(js)?;
                Some(s.0.parse::<i64>().map(Json::from).unwrap_or(Json::String(s.0)))
            }
            Type::Array => {
                let a = v.as_array().ok_or_else(|| Failure::Codec(format!("{path} is not an array")))?;
                let mut out = Vec::new();
                for i in 0..a.len() {
                    let item: Value = a.get(i).map_err(js)?;
                    out.push(self.value(item, &format!("{path}[{i}]"), depth + 1)?.unwrap_or(Json::Null));
                }
                Some(Json::Array(out))
            }
            Type::Object | Type::Exception => {
                let o = v.as_object().ok_or_else(|| Failure::Codec(format!("{path} is not an object")))?;
                Some(Json::Object(self.object(o, path, depth)?))
            }
            Type::Promise | Type::Module | Type::Unknown => {
                return Err(Failure::Codec(format!("{path} is {}, not JSON", type_name(&v))))
            }
        })
    }
}

/// A finite JavaScript number as JSON: integral values (within ±2^53) as integers.
fn number(f: f64) -> Json {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if f.fract() == 0.0 && f.abs() <= MAX_SAFE {
        // Exact: integral and within the safe range.
        Json::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v.type_of() {
        Type::Undefined | Type::Uninitialized => "undefined",
        Type::Null => "null",
        Type::Bool => "a boolean",
        Type::Int | Type::Float => "a number",
        Type::String => "a string",
        Type::Symbol => "a symbol",
        Type::Array => "an array",
        Type::Function | Type::Constructor => "a function",
        Type::Promise => "a Promise",
        Type::BigInt => "a BigInt",
        Type::Object => "an object",
        Type::Exception => "an Error object",
        Type::Module | Type::Unknown => "an unknown value",
    }
}

/// Turns an rquickjs error (usually a pending JavaScript exception) into a [`Failure`].
fn failure(ctx: &Ctx<'_>, e: rquickjs::Error) -> Failure {
    if !e.is_exception() {
        return match e {
            rquickjs::Error::Allocation => Failure::Limit("memory limit exceeded".into()),
            other => Failure::Codec(truncate(&other.to_string())),
        };
    }
    let exc = ctx.catch();
    let Some(obj) = exc.as_object() else {
        return match exc.type_of() {
            // QuickJS throws `null` when memory is so short that it cannot allocate the error
            // object; a codec may also throw null itself. Treated as a resource failure (the
            // runtime is re-created), the message says both.
            Type::Null | Type::Uninitialized => Failure::Limit(NULL_THROWN.into()),
            Type::String | Type::Int | Type::Float | Type::Bool | Type::BigInt => {
                let text = coerce_string(ctx, &exc).unwrap_or_default();
                Failure::Codec(truncate(&format!("uncaught exception: {text}")))
            }
            _ => Failure::Codec(format!("uncaught exception: {}", type_name(&exc))),
        };
    };
    let name = prop_string(ctx, obj, "name");
    let message = prop_string(ctx, obj, "message");
    let (name, message) = match (name, message) {
        (None, None) => return Failure::Codec(format!("uncaught exception: {}", type_name(&exc))),
        (name, message) => (name.unwrap_or_else(|| "Error".into()), message.unwrap_or_default()),
    };
    match (name.as_str(), message.as_str()) {
        ("InternalError", "out of memory") => Failure::Limit("memory limit exceeded".into()),
        ("InternalError", "interrupted") => Failure::Limit("time limit exceeded".into()),
        ("RangeError", "Maximum call stack size exceeded") => Failure::Limit("stack limit exceeded".into()),
        ("InternalError", m) if m.starts_with("stack overflow") => Failure::Limit("stack limit exceeded".into()),
        _ => Failure::Codec(truncate(&format!("{name}: {message}"))),
    }
}

/// `String(obj[key])` unless it is undefined; `None` also when that throws (the exception is
/// cleared; a time-out is still seen by the watchdog).
fn prop_string<'js>(ctx: &Ctx<'js>, obj: &Object<'js>, key: &str) -> Option<String> {
    match obj.get::<_, Value>(key) {
        Ok(v) if v.is_undefined() => None,
        Ok(v) => coerce_string(ctx, &v),
        Err(_) => {
            ctx.catch();
            None
        }
    }
}

/// `String(v)`; `None` (exception cleared) when that throws.
fn coerce_string<'js>(ctx: &Ctx<'js>, v: &Value<'js>) -> Option<String> {
    match v.get::<rquickjs::Coerced<String>>() {
        Ok(s) => Some(s.0),
        Err(_) => {
            ctx.catch();
            None
        }
    }
}

/// At most [`MAX_MESSAGE_CHARS`] characters, on one line.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE_CHARS).collect();
    if s.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    const EM310: &str = include_str!("../../../../tests/data/codecs/milesight-em310-udl.js");

    /// A fake clock that advances 1 ms every time it is read.
    fn ticking_clock() -> Clock {
        let t = Arc::new(AtomicU64::new(0));
        Arc::new(move || Duration::from_millis(t.fetch_add(1, Ordering::SeqCst)))
    }

    fn real_clock() -> Clock {
        let origin = Instant::now();
        Arc::new(move || origin.elapsed())
    }

    fn load(source: &str) -> Result<JsCodec, DecodeError> {
        JsCodec::load("js:test.js", source, JsLimits::default(), ticking_clock())
    }

    fn good() -> JsCodec {
        load(EM310).unwrap()
    }

    fn payload() -> Vec<u8> {
        hex::decode("01755c03824408040001").unwrap()
    }

    fn assert_good_works(codec: &mut JsCodec) {
        let d = codec.decode(85, &payload()).unwrap();
        assert_eq!(d.metrics.get("distance_mm"), Some(&Json::from(2116)));
    }

    fn codec_err(r: Result<Decoded, DecodeError>) -> String {
        match r {
            Err(DecodeError::Codec(m)) => m,
            other => panic!("expected a codec error, got {other:?}"),
        }
    }

    fn load_err(r: Result<JsCodec, DecodeError>) -> String {
        match r {
            Err(DecodeError::Codec(m)) => m,
            other => panic!("expected a codec error, got {other:?}"),
        }
    }

    /// A codec that misbehaves on FPort 1 with `bad` and decodes `{ok: 1}` on other ports.
    fn hostile(bad: &str) -> JsCodec {
        load(&format!(
            "function decodeUplink(input) {{ if (input.fPort === 1) {{ {bad} }} return {{ data: {{ ok: 1 }} }}; }}"
        ))
        .unwrap()
    }

    /// The hostile call fails with a codec error; the same codec and a good one still work.
    fn contained(bad: &str) -> String {
        let mut codec = hostile(bad);
        let mut other = good();
        let msg = codec_err(codec.decode(1, &payload()));
        assert!(msg.len() < 250, "{msg}");
        assert!(!msg.contains("5c") && !msg.contains("92,"), "{msg}");
        let ok = codec.decode(2, &payload()).unwrap();
        assert_eq!(ok.metrics.get("ok"), Some(&Json::from(1)), "{bad}");
        assert_good_works(&mut other);
        // And once more, to make sure the recovered runtime keeps working.
        assert!(codec.decode(1, &payload()).is_err());
        assert!(codec.decode(2, &payload()).is_ok());
        msg
    }

    #[test]
    fn em310_matches_native_decoder() {
        let mut js = good();
        let mut native = crate::decode::native("milesight-em310-udl").unwrap();
        let bytes = payload();
        let j = js.decode(85, &bytes).unwrap();
        let n = native.decode(85, &bytes).unwrap();
        assert_eq!(j.metrics, n.metrics);
        assert_eq!(j, n);
        assert_eq!(j.metrics.get("battery_pct"), Some(&Json::from(92)));
        assert_eq!(j.metrics.get("position"), Some(&Json::from("tilt")));
        assert_eq!(js.profile(), "js:test.js");
        // Codec-reported problems are kept, not turned into Err.
        let d = js.decode(85, &[0x01, 0x75, 0x5c, 0x09, 0x09]).unwrap();
        assert_eq!(d.metrics.get("battery_pct"), Some(&Json::from(92)));
        assert_eq!(d.errors, vec!["unknown channel 0x09 type 0x09".to_string()]);
        assert_eq!(js.decode(10, &bytes).unwrap().errors, vec!["unsupported FPort 10".to_string()]);
    }

    #[test]
    fn warnings_and_errors_are_kept() {
        let mut c = load(
            r#"function decodeUplink(input) {
                return { data: { a: 1.5, nested: { b: [1, "x", null, true] }, skip: undefined, f: function () {} },
                         warnings: ["low battery", 42], errors: ["bad crc"] };
            }"#,
        )
        .unwrap();
        let d = c.decode(1, &[1, 2]).unwrap();
        assert_eq!(d.warnings, vec!["low battery".to_string(), "42".to_string()]);
        assert_eq!(d.errors, vec!["bad crc".to_string()]);
        assert_eq!(Json::Object(d.metrics), serde_json::json!({"a": 1.5, "nested": {"b": [1, "x", null, true]}}));

        // A single string is accepted; errors without data are Ok with empty metrics.
        let mut c = load(r#"function decodeUplink(input) { return { errors: "only one" }; }"#).unwrap();
        let d = c.decode(1, &[]).unwrap();
        assert!(d.metrics.is_empty());
        assert_eq!(d.errors, vec!["only one".to_string()]);
    }

    #[test]
    fn numbers_dates_and_input() {
        let mut c = load(
            r#"function decodeUplink(input) {
                return { data: { n: input.bytes.length, port: input.fPort, first: input.bytes[0],
                                 whole: 4.0 / 2, half: 1 / 2, nan: NaN, inf: [1, Infinity],
                                 big: 12n, when: new Date(0),
                                 recv: input.recvTime ? input.recvTime.toISOString() : null } };
            }"#,
        )
        .unwrap();
        let d = c.decode_at(7, &[255, 0, 1], Some("2024-05-01T12:00:00Z")).unwrap();
        assert_eq!(
            Json::Object(d.metrics),
            serde_json::json!({"n": 3, "port": 7, "first": 255, "whole": 2, "half": 0.5, "inf": [1, null],
                               "big": 12, "when": "1970-01-01T00:00:00.000Z", "recv": "2024-05-01T12:00:00.000Z"})
        );
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
        assert!(d.warnings.iter().any(|w| w.contains("data.nan")));
        assert!(d.warnings.iter().any(|w| w.contains("data.inf[1]")));
        let d = c.decode(7, &[]).unwrap();
        assert_eq!(d.metrics.get("recv"), Some(&Json::Null));
    }

    #[test]
    fn endless_loop_hits_time_limit() {
        let msg = contained("while (true) {}");
        assert!(msg.contains("time limit"), "{msg}");
        // Not even try/catch keeps it alive.
        let msg = contained("try { while (true) {} } catch (e) {} for (;;) {}");
        assert!(msg.contains("time limit"), "{msg}");
    }

    #[test]
    fn endless_loop_with_real_clock() {
        let limits = JsLimits { time_budget: Duration::from_millis(50), ..JsLimits::default() };
        let src =
            "function decodeUplink(input) { if (input.fPort === 1) { while (true) {} } return { data: { ok: 1 } }; }";
        let mut c = JsCodec::load("js:loop.js", src, limits, real_clock()).unwrap();
        let t = Instant::now();
        let msg = codec_err(c.decode(1, &[]));
        assert!(msg.contains("time limit of 50 ms"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(c.decode(2, &[]).is_ok());
    }

    #[test]
    fn memory_exhaustion_is_contained() {
        let msg = contained("var a = new Array(1e9).fill(1); return { data: { n: a.length } };");
        assert!(msg.contains("limit"), "{msg}");
        let msg = contained("var s = 'x'; while (true) { s = s + s; }");
        assert!(msg.contains("memory limit"), "{msg}");
        let msg = contained("var a = []; while (true) { a.push({ x: a.length }); }");
        assert!(msg.contains("memory limit"), "{msg}");
        // Catching the out-of-memory error and allocating on does not escape either.
        contained("var a = []; for (;;) { try { for (;;) a.push('xxxxxxxxxxxxxxxx' + a.length); } catch (e) {} }");
    }

    #[test]
    fn catastrophic_regex_hits_time_limit() {
        // Needs QuickJS-ng >= 0.10 (rquickjs >= 0.10): its regex engine polls the interrupt
        // handler. With rquickjs 0.9 this runs for seconds to minutes and then succeeds.
        let msg =
            contained("var r = /(a+)+b/.test('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'); return { data: { r: r } };");
        assert!(msg.contains("time limit"), "{msg}");
    }

    #[test]
    fn deep_recursion_hits_stack_limit() {
        let msg = contained("function f(n) { return f(n + 1) + 1; } f(0);");
        assert!(msg.contains("stack"), "{msg}");
        let msg =
            contained("var o = {}; var p = o; for (var i = 0; i < 1e6; i++) { p.x = {}; p = p.x; } JSON.stringify(o);");
        assert!(msg.contains("limit"), "{msg}");
    }

    #[test]
    fn no_modules_files_or_processes() {
        let msg = contained("var fs = require('fs'); fs.readFileSync('/etc/passwd');");
        assert!(msg.contains("ReferenceError"), "{msg}");
        let msg = contained("return import('fs');");
        assert!(msg.contains("Promise"), "{msg}");
        // A dynamic import left behind rejects without a loader and does not disturb the call.
        let mut c = hostile("var p = import('fs'); p.then(function (m) { m.writeFileSync('/tmp/x', 'y'); });");
        assert!(c.decode(1, &[]).is_ok());
        let mut c = hostile("var r = 'pending'; import('fs').then(function () { r = 'loaded'; }, function (e) { r = String(e); }); globalThis.r = r;");
        assert!(c.decode(1, &[]).is_ok());
        let mut probe = load("function decodeUplink() { return { data: { r: String(globalThis.r) } }; }").unwrap();
        assert!(probe.decode(1, &[]).is_ok());

        // A static import is a syntax error in a script.
        let msg = load_err(load("import * as std from 'std'; function decodeUplink() { return {}; }"));
        assert!(msg.contains("SyntaxError"), "{msg}");

        let mut c = load(
            r#"function decodeUplink() {
                var names = ["require", "std", "os", "process", "fetch", "XMLHttpRequest", "performance",
                             "console", "print", "setTimeout", "WebAssembly", "Deno", "Bun", "WeakRef"];
                var present = names.filter(function (n) { return typeof globalThis[n] !== "undefined"; });
                return { data: { present: present } };
            }"#,
        )
        .unwrap();
        let d = c.decode(1, &[]).unwrap();
        assert_eq!(d.metrics.get("present"), Some(&serde_json::json!([])));
    }

    #[test]
    fn exceptions_and_garbage_are_codec_errors() {
        let msg = contained("throw new TypeError('bad thing');");
        assert_eq!(msg, "TypeError: bad thing");
        let msg = contained("throw 'plain';");
        assert!(msg.contains("plain"), "{msg}");
        assert_eq!(contained("throw null;"), NULL_THROWN);
        assert_eq!(contained("throw undefined;"), "uncaught exception: undefined");
        assert_eq!(contained("throw {};"), "uncaught exception: an object");
        assert_eq!(contained("throw { message: 'm' };"), "Error: m");
        let msg = contained("throw { get name() { throw 2; }, toString: function () { while (true) {} } };");
        assert_eq!(msg, "uncaught exception: an object");
        let msg = contained("throw { get message() { while (true) {} } };");
        assert!(msg.contains("time limit"), "{msg}");
        contained("input.bytes.nope.nope = 1;");
        for garbage in ["42", "'text'", "[1, 2]", "null", "undefined", "function () {}", "Promise.resolve({})"] {
            let msg = contained(&format!("return {garbage};"));
            assert!(msg.contains("decodeUplink returned"), "{garbage}: {msg}");
        }
        let msg = contained("return { data: 5 };");
        assert!(msg.contains("data is a number"), "{msg}");
        let msg = contained("var o = {}; o.self = o; return { data: o };");
        assert!(msg.contains("nested"), "{msg}");
        contained("return { data: { get x() { throw new Error('getter'); } } };");
        contained("return { data: { get x() { while (true) {} } } };");
        contained("return { data: new Proxy({}, { ownKeys: function () { throw 1; } }) };");
        contained("var m = 'x'.repeat(10000); throw new Error(m);");
    }

    #[test]
    fn load_failures() {
        let msg = load_err(load("function decodeUplink(input) { return {"));
        assert!(msg.contains("SyntaxError"), "{msg}");
        let msg = load_err(load("function decodeDownlink(input) { return {}; }"));
        assert!(msg.contains("decodeUplink"), "{msg}");
        let msg = load_err(load("var decodeUplink = 5;"));
        assert!(msg.contains("decodeUplink"), "{msg}");
        let msg = load_err(load("throw new Error('top');"));
        assert!(msg.contains("top"), "{msg}");
        let msg = load_err(load("while (true) {} function decodeUplink() { return {}; }"));
        assert!(msg.contains("time limit"), "{msg}");
        let msg = load_err(load("var s = 'x'; for (;;) s += s; function decodeUplink() { return {}; }"));
        assert!(msg.contains("memory limit"), "{msg}");
        // Replacing decodeUplink at run time is an error at the call.
        let mut c = load("function decodeUplink() { decodeUplink = 1; return { data: {} }; }").unwrap();
        assert!(c.decode(1, &[]).is_ok());
        let msg = codec_err(c.decode(1, &[]));
        assert!(msg.contains("no function decodeUplink"), "{msg}");
        // A good codec loads after all of that.
        assert_good_works(&mut good());
    }

    #[test]
    fn thousand_decodes_reuse_the_runtime() {
        let mut c = good();
        let bytes = payload();
        for _ in 0..10 {
            c.decode(85, &bytes).unwrap();
        }
        let before = c.memory_usage();
        assert!(before > 0 && before < 1024 * 1024, "{before}");
        for i in 0..1_000u32 {
            let d = c.decode(85, &bytes).unwrap();
            assert_eq!(d.metrics.len(), 3, "call {i}");
        }
        let after = c.memory_usage();
        assert!(after < before + 64 * 1024, "memory grew from {before} to {after}");
        // The runtime was reused: a global counter survives between calls.
        let mut c = load("var n = 0; function decodeUplink() { n++; return { data: { n: n } }; }").unwrap();
        for _ in 0..999 {
            c.decode(1, &[]).unwrap();
        }
        assert_eq!(c.decode(1, &[]).unwrap().metrics.get("n"), Some(&Json::from(1000)));
    }

    #[test]
    fn hoarding_codec_is_restarted_before_it_starves() {
        // Keeps ~1 MiB per call in a global; with 16 MiB it would run out after ~15 calls.
        let mut c = load(
            "var keep = []; function decodeUplink() { keep.push(new Uint8Array(1 << 20)); return { data: { n: keep.length } }; }",
        )
        .unwrap();
        let mut max_n = 0;
        for _ in 0..50 {
            let d = c.decode(1, &[]).unwrap();
            max_n = max_n.max(d.metrics.get("n").and_then(Json::as_i64).unwrap());
            assert!(c.memory_usage() <= JsLimits::default().memory_bytes);
        }
        assert!(max_n < 16, "{max_n}");
    }

    #[test]
    fn codec_is_send_and_works_on_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<JsCodec>();
        let mut c: Box<dyn Decoder> = Box::new(good());
        c.decode(85, &payload()).unwrap();
        let mut c = std::thread::spawn(move || {
            assert_good_works_dyn(&mut *c);
            c
        })
        .join()
        .unwrap();
        assert_good_works_dyn(&mut *c);
        // Deep recursion is still caught on a thread with a different stack.
        let mut h = hostile("function f(n) { return f(n + 1) + 1; } f(0);");
        let h = std::thread::spawn(move || {
            assert!(h.decode(1, &[]).is_err());
            h
        })
        .join()
        .unwrap();
        let mut h = h;
        assert!(h.decode(1, &[]).is_err());
        assert!(h.decode(2, &[]).is_ok());
    }

    fn assert_good_works_dyn(codec: &mut dyn Decoder) {
        let d = codec.decode(85, &payload()).unwrap();
        assert_eq!(d.metrics.get("distance_mm"), Some(&Json::from(2116)));
    }
}
