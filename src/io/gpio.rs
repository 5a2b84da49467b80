//! GPIO on the gateway: presence inputs (PIR sensors wired to the Pi: edge interrupts, debounce) that
//! feed the lighting loop, relay outputs (e.g. the two SG-Ready contacts of a heat pump) and PWM
//! outputs (a lamp driver). Each sits behind a small trait with an rppal implementation and a fake.
//!
//! On a host that is not a Raspberry Pi every `open_*` function fails with
//! "GPIO is not available on this host (not a Raspberry Pi: UnknownModel)".
//!
//! rppal calls interrupt callbacks on a thread of its own; they only `try_send` into a tokio channel.
//! Debouncing is a pure state machine ([`Debouncer`]) driven by the task with the time as a value.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::io::status::{self, Backoff, SourceStatus};

/// The message for a config that uses GPIO on a host without one.
pub const NOT_A_PI: &str = "GPIO is not available on this host (not a Raspberry Pi: UnknownModel)";

#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("GPIO is not available on this host (not a Raspberry Pi: UnknownModel)")]
    NotAPi,
    #[error("GPIO pin {pin}: {detail}")]
    Pin { pin: u8, detail: String },
    #[error("PWM: {0}")]
    Pwm(String),
    #[error("GPIO: {0}")]
    Other(String),
}

fn map_gpio(pin: Option<u8>, e: rppal::gpio::Error) -> GpioError {
    match (e, pin) {
        (rppal::gpio::Error::UnknownModel, _) => GpioError::NotAPi,
        (rppal::gpio::Error::PermissionDenied(path), p) => GpioError::Pin {
            pin: p.unwrap_or(0),
            detail: format!("permission denied on {path} (run as a member of group gpio)"),
        },
        (other, Some(pin)) => GpioError::Pin { pin, detail: other.to_string() },
        (other, None) => GpioError::Other(other.to_string()),
    }
}

/// Tries rppal's GPIO: Ok on a Raspberry Pi, [`GpioError::NotAPi`] elsewhere. Call it when a config
/// uses GPIO (presence inputs, relays, PWM, the SX127x) to fail early with a clear message.
pub fn gpio_available() -> Result<(), GpioError> {
    rppal::gpio::Gpio::new().map(|_| ()).map_err(|e| map_gpio(None, e))
}

// ---------------------------------------------------------------------------------------------
// Traits

/// A digital input that reports its edges.
pub trait InputPin: Send + 'static {
    fn pin(&self) -> u8;
    /// The electrical level now (true = high).
    fn is_high(&self) -> Result<bool, GpioError>;
    /// Deliver the new level on every edge into `tx` (`try_send` from the implementation's thread).
    fn watch_edges(&mut self, tx: mpsc::Sender<bool>) -> Result<(), GpioError>;
}

/// A digital output (electrical level; polarity is handled by [`Relay`]).
pub trait OutputPin: Send + 'static {
    fn pin(&self) -> u8;
    fn set_high(&mut self, high: bool) -> Result<(), GpioError>;
}

/// Lets the shell hold real and fake outputs behind one type.
impl OutputPin for Box<dyn OutputPin> {
    fn pin(&self) -> u8 {
        (**self).pin()
    }
    fn set_high(&mut self, high: bool) -> Result<(), GpioError> {
        (**self).set_high(high)
    }
}

/// A PWM output; `duty` in 0.0..=1.0.
pub trait PwmOutput: Send + 'static {
    fn set_duty(&mut self, duty: f64) -> Result<(), GpioError>;
}

// ---------------------------------------------------------------------------------------------
// Config

/// A GPIO input's pull resistor (the config's type: the config imports no I/O code).
pub use crate::config::InputPull as Pull;

/// A presence input (PIR sensor output, or a contact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceInputConfig {
    /// The presence device name the lighting loop knows (a `zone` sensor's `device`).
    pub name: String,
    /// BCM GPIO number.
    pub pin: u8,
    #[serde(default)]
    pub pull: Pull,
    /// Presence = low level (open-collector sensors with a pull-up).
    #[serde(default)]
    pub active_low: bool,
    /// A level must hold this long to count.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_debounce_ms() -> u64 {
    50
}

/// A relay output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// BCM GPIO number.
    pub pin: u8,
    /// Relay boards that energise on a low level.
    #[serde(default)]
    pub active_low: bool,
}

/// A PWM output: a hardware channel (`channel`, 0..=3, /sys/class/pwm) or software PWM on a pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PwmConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    /// BCM GPIO number for software PWM (jittery; fine for a lamp driver's dimming input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<u8>,
    #[serde(default = "default_pwm_hz")]
    pub frequency_hz: u32,
    /// Output inverted (duty 1.0 = always low).
    #[serde(default)]
    pub invert: bool,
}

fn default_pwm_hz() -> u32 {
    1_000
}

impl PwmConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        match (self.channel, self.pin) {
            (Some(_), Some(_)) => errs.push("channel/pin: give one, not both".into()),
            (None, None) => errs.push("channel/pin: one is required".into()),
            (Some(c), None) if c > 3 => errs.push(format!("channel: {c} (0..=3)")),
            _ => {}
        }
        if !(1..=1_000_000).contains(&self.frequency_hz) {
            errs.push(format!("frequency_hz: {} (0 < f <= 1 MHz)", self.frequency_hz));
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// rppal implementations

pub struct RppalInput {
    pin: rppal::gpio::InputPin,
}

impl InputPin for RppalInput {
    fn pin(&self) -> u8 {
        self.pin.pin()
    }

    fn is_high(&self) -> Result<bool, GpioError> {
        Ok(self.pin.is_high())
    }

    fn watch_edges(&mut self, tx: mpsc::Sender<bool>) -> Result<(), GpioError> {
        let n = self.pin.pin();
        self.pin
            .set_async_interrupt(rppal::gpio::Trigger::Both, None, move |ev| {
                let _ = tx.try_send(ev.trigger == rppal::gpio::Trigger::RisingEdge);
            })
            .map_err(|e| map_gpio(Some(n), e))
    }
}

pub struct RppalOutput {
    pin: rppal::gpio::OutputPin,
}

impl OutputPin for RppalOutput {
    fn pin(&self) -> u8 {
        self.pin.pin()
    }

    fn set_high(&mut self, high: bool) -> Result<(), GpioError> {
        if high {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }
}

pub enum RppalPwm {
    Hardware(rppal::pwm::Pwm),
    Software { pin: rppal::gpio::OutputPin, frequency_hz: f64 },
}

impl PwmOutput for RppalPwm {
    fn set_duty(&mut self, duty: f64) -> Result<(), GpioError> {
        let duty = duty.clamp(0.0, 1.0);
        match self {
            RppalPwm::Hardware(p) => p.set_duty_cycle(duty).map_err(|e| GpioError::Pwm(e.to_string())),
            RppalPwm::Software { pin, frequency_hz } => {
                let n = pin.pin();
                pin.set_pwm_frequency(*frequency_hz, duty).map_err(|e| map_gpio(Some(n), e))
            }
        }
    }
}

fn gpio() -> Result<rppal::gpio::Gpio, GpioError> {
    rppal::gpio::Gpio::new().map_err(|e| map_gpio(None, e))
}

pub fn open_input(cfg: &PresenceInputConfig) -> Result<RppalInput, GpioError> {
    let pin = gpio()?.get(cfg.pin).map_err(|e| map_gpio(Some(cfg.pin), e))?;
    let pin = match cfg.pull {
        Pull::None => pin.into_input(),
        Pull::Up => pin.into_input_pullup(),
        Pull::Down => pin.into_input_pulldown(),
    };
    Ok(RppalInput { pin })
}

/// The relay starts released. rppal returns the pin to an input when the process exits, which
/// releases an active-high relay (for SG-Ready: "normal operation").
pub fn open_relay(cfg: &RelayConfig) -> Result<Relay<RppalOutput>, GpioError> {
    let pin = gpio()?.get(cfg.pin).map_err(|e| map_gpio(Some(cfg.pin), e))?;
    let pin = if cfg.active_low { pin.into_output_high() } else { pin.into_output_low() };
    Relay::new(RppalOutput { pin }, cfg.active_low)
}

/// Starts at duty 0.
pub fn open_pwm(cfg: &PwmConfig) -> Result<Dimmer<RppalPwm>, GpioError> {
    let errs = cfg.validate();
    if !errs.is_empty() {
        return Err(GpioError::Pwm(errs.join("; ")));
    }
    // Identify the Pi first, so that a non-Pi host gets the clear message for PWM channels too.
    let gpio = gpio()?;
    let out = match (cfg.channel, cfg.pin) {
        (Some(c), _) => {
            let channel = rppal::pwm::Channel::try_from(c).map_err(|e| GpioError::Pwm(e.to_string()))?;
            let pwm = rppal::pwm::Pwm::with_frequency(
                channel,
                f64::from(cfg.frequency_hz),
                0.0,
                rppal::pwm::Polarity::Normal,
                true,
            )
            .map_err(|e| match e {
                rppal::pwm::Error::UnknownModel => GpioError::NotAPi,
                other => GpioError::Pwm(format!("channel {c}: {other} (enable dtoverlay=pwm)")),
            })?;
            RppalPwm::Hardware(pwm)
        }
        (None, Some(p)) => {
            let pin = gpio.get(p).map_err(|e| map_gpio(Some(p), e))?.into_output_low();
            RppalPwm::Software { pin, frequency_hz: f64::from(cfg.frequency_hz) }
        }
        (None, None) => return Err(GpioError::Pwm("channel or pin required".into())),
    };
    Dimmer::new(out, cfg.invert)
}

// ---------------------------------------------------------------------------------------------
// Outputs with meaning

/// A relay with its polarity: `set(true)` energises it.
pub struct Relay<O: OutputPin> {
    out: O,
    active_low: bool,
    on: bool,
}

impl<O: OutputPin> Relay<O> {
    /// The output pin, for re-wrapping (e.g. behind a `Box<dyn OutputPin>`).
    pub fn into_inner(self) -> O {
        self.out
    }

    /// Takes the pin and releases the relay.
    pub fn new(out: O, active_low: bool) -> Result<Self, GpioError> {
        let mut r = Relay { out, active_low, on: true };
        r.set(false)?;
        Ok(r)
    }

    pub fn set(&mut self, on: bool) -> Result<(), GpioError> {
        self.out.set_high(on != self.active_low)?;
        self.on = on;
        Ok(())
    }

    pub fn is_on(&self) -> bool {
        self.on
    }
}

/// SG-Ready operating states (BWP label): contacts (A, B) = (1,0) blocked, (0,0) normal,
/// (0,1) switch-on recommended, (1,1) forced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SgReadyState {
    /// State 1: utility block, heat pump off.
    Blocked,
    /// State 2: normal operation.
    Normal,
    /// State 3: increased operation recommended.
    Recommended,
    /// State 4: forced on.
    Forced,
}

impl SgReadyState {
    /// (contact A, contact B) closed?
    pub fn contacts(self) -> (bool, bool) {
        match self {
            SgReadyState::Blocked => (true, false),
            SgReadyState::Normal => (false, false),
            SgReadyState::Recommended => (false, true),
            SgReadyState::Forced => (true, true),
        }
    }
}

/// The two SG-Ready relays of a heat pump.
pub struct SgReady<O: OutputPin> {
    a: Relay<O>,
    b: Relay<O>,
    state: SgReadyState,
}

impl<O: OutputPin> SgReady<O> {
    /// Both relays start released: normal operation.
    pub fn new(a: Relay<O>, b: Relay<O>) -> Result<Self, GpioError> {
        let mut s = SgReady { a, b, state: SgReadyState::Blocked };
        s.set(SgReadyState::Normal)?;
        Ok(s)
    }

    /// Switches without passing through a state that was not asked for: the contact that opens is
    /// released before the one that closes is energised (so Normal→Forced never shows Blocked long).
    pub fn set(&mut self, state: SgReadyState) -> Result<(), GpioError> {
        let (a, b) = state.contacts();
        if !a {
            self.a.set(false)?;
        }
        if !b {
            self.b.set(false)?;
        }
        if a {
            self.a.set(true)?;
        }
        if b {
            self.b.set(true)?;
        }
        self.state = state;
        Ok(())
    }

    pub fn state(&self) -> SgReadyState {
        self.state
    }
}

/// A PWM-dimmed lamp driver: level in percent.
pub struct Dimmer<P: PwmOutput> {
    out: P,
    invert: bool,
    level: f64,
}

impl<P: PwmOutput> Dimmer<P> {
    /// Takes the output and switches it off.
    pub fn new(out: P, invert: bool) -> Result<Self, GpioError> {
        let mut d = Dimmer { out, invert, level: 100.0 };
        d.set_level(0.0)?;
        Ok(d)
    }

    /// 0.0..=100.0 percent (clamped).
    pub fn set_level(&mut self, percent: f64) -> Result<(), GpioError> {
        let p = if percent.is_finite() { percent.clamp(0.0, 100.0) } else { 0.0 };
        let duty = p / 100.0;
        self.out.set_duty(if self.invert { 1.0 - duty } else { duty })?;
        self.level = p;
        Ok(())
    }

    pub fn level(&self) -> f64 {
        self.level
    }
}

// ---------------------------------------------------------------------------------------------
// Presence inputs

/// Settling debounce: a new level counts once it has held for `debounce_ms` without a further edge.
/// Pure: the caller passes the time (milliseconds on any monotonic scale).
#[derive(Debug, Clone)]
pub struct Debouncer {
    debounce_ms: u64,
    stable: Option<bool>,
    candidate: Option<(bool, u64)>,
}

impl Debouncer {
    pub fn new(debounce_ms: u64) -> Self {
        Debouncer { debounce_ms, stable: None, candidate: None }
    }

    pub fn stable(&self) -> Option<bool> {
        self.stable
    }

    /// A level seen at `now_ms` (an edge, or a periodic read).
    pub fn input(&mut self, level: bool, now_ms: u64) -> Option<bool> {
        match self.candidate {
            Some((l, _)) if l == level => {}
            _ if self.stable == Some(level) => self.candidate = None,
            _ => self.candidate = Some((level, now_ms)),
        }
        self.poll(now_ms)
    }

    /// The new stable level, if the candidate has held long enough.
    pub fn poll(&mut self, now_ms: u64) -> Option<bool> {
        let (l, since) = self.candidate?;
        if now_ms.saturating_sub(since) >= self.debounce_ms {
            self.candidate = None;
            self.stable = Some(l);
            return Some(l);
        }
        None
    }

    /// When `poll` should next be called.
    pub fn deadline(&self) -> Option<u64> {
        self.candidate.map(|(_, since)| since + self.debounce_ms)
    }
}

/// Presence (or its end) at a named input.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    pub name: String,
    pub present: bool,
    pub at: SystemTime,
}

/// How often the level is read in addition to the interrupts (catches a lost edge).
const RESYNC: Duration = Duration::from_secs(30);

/// Watches one presence input until shutdown: edges (rppal interrupt thread → channel) are debounced
/// and each settled change is sent as a [`PresenceEvent`] (the first settled level too). If the pin
/// fails (the factory errs, or the interrupt bridge closes) it is re-opened with backoff.
pub async fn run_presence<I, F>(
    cfg: PresenceInputConfig,
    pin_factory: F,
    out: mpsc::Sender<PresenceEvent>,
    status: Arc<SourceStatus>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: InputPin,
    F: Fn() -> Result<I, GpioError>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut failed = false;
    let origin = Instant::now();
    let now_ms = move || origin.elapsed().as_millis() as u64;
    let mut last_sent: Option<bool> = None;
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        if failed {
            status.restart();
            status.set_retrying();
        }
        let (tx, mut edges) = mpsc::channel::<bool>(64);
        let opened = pin_factory().and_then(|mut p| {
            p.watch_edges(tx)?;
            let level = p.is_high()?;
            Ok((p, level))
        });
        let (pin, level) = match opened {
            Ok(v) => v,
            Err(e) => {
                status.set_down(e.to_string());
                failed = true;
                if let GpioError::NotAPi = e {
                    tracing::error!(input = %cfg.name, "{e}");
                }
                if status::sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        status.set_up();
        backoff.reset();
        let mut deb = Debouncer::new(cfg.debounce_ms);
        let mut pending = deb.input(level, now_ms());
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        loop {
            if let Some(l) = pending.take() {
                let present = l != cfg.active_low;
                if last_sent != Some(present) {
                    let ev = PresenceEvent { name: cfg.name.clone(), present, at: SystemTime::now() };
                    match out.try_send(ev) {
                        Ok(()) => {
                            status.frame();
                            last_sent = Some(present);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => status.dropped(),
                        Err(mpsc::error::TrySendError::Closed(_)) => break 'outer,
                    }
                }
            }
            let sleep_ms = deb.deadline().map(|d| d.saturating_sub(now_ms())).unwrap_or(3_600_000);
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break 'outer;
                    }
                }
                edge = edges.recv() => match edge {
                    Some(l) => pending = deb.input(l, now_ms()),
                    None => {
                        status.set_down("interrupt bridge closed");
                        failed = true;
                        break;
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => pending = deb.poll(now_ms()),
                _ = resync.tick() => match pin.is_high() {
                    Ok(l) => pending = deb.input(l, now_ms()),
                    Err(e) => {
                        status.set_down(e.to_string());
                        failed = true;
                        break;
                    }
                },
            }
        }
        drop(pin);
        if status::sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await {
            break;
        }
    }
    status.set_stopped();
}

// ---------------------------------------------------------------------------------------------
// Fakes (always compiled: tests, the demo and the simulator use them)

#[derive(Default)]
struct FakeInputState {
    level: bool,
    watchers: Vec<mpsc::Sender<bool>>,
    opens: u32,
}

/// A fake input and the handle that drives it.
#[derive(Clone, Default)]
pub struct FakeInput {
    pin: u8,
    state: Arc<Mutex<FakeInputState>>,
}

impl FakeInput {
    pub fn new(pin: u8, level: bool) -> Self {
        let f = FakeInput { pin, state: Arc::default() };
        f.lock().level = level;
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeInputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pin factory for `run_presence`.
    pub fn factory(&self) -> impl Fn() -> Result<FakeInput, GpioError> + Send + Sync + 'static {
        let f = self.clone();
        move || {
            f.lock().opens += 1;
            Ok(f.clone())
        }
    }

    /// Sets the level; an edge goes to the watchers if it changed.
    pub fn set_level(&self, level: bool) {
        let mut s = self.lock();
        if s.level != level {
            s.level = level;
            s.watchers.retain(|w| !w.is_closed());
            for w in &s.watchers {
                let _ = w.try_send(level);
            }
        }
    }

    /// Drops the interrupt bridge, as when rppal's interrupt thread dies.
    pub fn break_interrupts(&self) {
        self.lock().watchers.clear();
    }

    pub fn opens(&self) -> u32 {
        self.lock().opens
    }
}

impl InputPin for FakeInput {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn is_high(&self) -> Result<bool, GpioError> {
        Ok(self.lock().level)
    }

    fn watch_edges(&mut self, tx: mpsc::Sender<bool>) -> Result<(), GpioError> {
        self.lock().watchers.push(tx);
        Ok(())
    }
}

/// A fake output that records every level written.
#[derive(Clone, Default)]
pub struct FakeOutput {
    pin: u8,
    levels: Arc<Mutex<Vec<bool>>>,
}

impl FakeOutput {
    pub fn new(pin: u8) -> Self {
        FakeOutput { pin, levels: Arc::default() }
    }

    pub fn levels(&self) -> Vec<bool> {
        self.levels.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn level(&self) -> Option<bool> {
        self.levels().last().copied()
    }
}

impl OutputPin for FakeOutput {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn set_high(&mut self, high: bool) -> Result<(), GpioError> {
        self.levels.lock().unwrap_or_else(|e| e.into_inner()).push(high);
        Ok(())
    }
}

/// A fake PWM output that records every duty written.
#[derive(Clone, Default)]
pub struct FakePwm {
    duties: Arc<Mutex<Vec<f64>>>,
}

impl FakePwm {
    pub fn duties(&self) -> Vec<f64> {
        self.duties.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PwmOutput for FakePwm {
    fn set_duty(&mut self, duty: f64) -> Result<(), GpioError> {
        self.duties.lock().unwrap_or_else(|e| e.into_inner()).push(duty);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debouncer_ignores_bounces_and_settles() {
        let mut d = Debouncer::new(50);
        assert_eq!(d.input(false, 0), None);
        assert_eq!(d.poll(50), Some(false));
        // bounce: high, low, high within 50 ms, then holds
        assert_eq!(d.input(true, 100), None);
        assert_eq!(d.input(false, 110), None);
        assert_eq!(d.poll(200), None, "went back to the stable level: nothing");
        assert_eq!(d.input(true, 300), None);
        assert_eq!(d.input(true, 320), None, "same level again does not restart the timer");
        assert_eq!(d.deadline(), Some(350));
        assert_eq!(d.poll(349), None);
        assert_eq!(d.poll(350), Some(true));
        assert_eq!(d.stable(), Some(true));
        let mut zero = Debouncer::new(0);
        assert_eq!(zero.input(true, 5), Some(true));
    }

    #[test]
    fn relay_polarity_and_sg_ready_states() {
        let (a, b) = (FakeOutput::new(5), FakeOutput::new(6));
        let ra = Relay::new(a.clone(), true).expect("relay");
        let rb = Relay::new(b.clone(), false).expect("relay");
        let mut sg = SgReady::new(ra, rb).expect("sg");
        assert_eq!((a.level(), b.level()), (Some(true), Some(false)), "released: active-low high, active-high low");
        sg.set(SgReadyState::Forced).expect("set");
        assert_eq!((a.level(), b.level()), (Some(false), Some(true)));
        sg.set(SgReadyState::Blocked).expect("set");
        assert_eq!((a.level(), b.level()), (Some(false), Some(false)));
        sg.set(SgReadyState::Recommended).expect("set");
        assert_eq!((a.level(), b.level()), (Some(true), Some(true)));
        assert_eq!(sg.state(), SgReadyState::Recommended);
    }

    #[test]
    fn dimmer_levels() {
        let pwm = FakePwm::default();
        let mut d = Dimmer::new(pwm.clone(), false).expect("dimmer");
        d.set_level(40.0).expect("set");
        d.set_level(150.0).expect("set");
        d.set_level(f64::NAN).expect("set");
        assert_eq!(pwm.duties(), vec![0.0, 0.4, 1.0, 0.0]);
        let inv = FakePwm::default();
        let mut d = Dimmer::new(inv.clone(), true).expect("dimmer");
        d.set_level(25.0).expect("set");
        assert_eq!(inv.duties(), vec![1.0, 0.75]);
    }

    #[test]
    fn config_keys() {
        let p: PresenceInputConfig =
            toml::from_str("name = \"pir-3\"\npin = 23\npull = \"up\"\nactive_low = true\ndebounce_ms = 80")
                .expect("ok");
        assert_eq!((p.pin, p.pull, p.active_low, p.debounce_ms), (23, Pull::Up, true, 80));
        let r: RelayConfig = toml::from_str("pin = 5\nactive_low = true").expect("ok");
        assert!(r.active_low);
        let w: PwmConfig = toml::from_str("channel = 0\nfrequency_hz = 500").expect("ok");
        assert!(w.validate().is_empty());
        let both: PwmConfig = toml::from_str("channel = 0\npin = 18").expect("ok");
        assert_eq!(both.validate().len(), 1);
        assert!(toml::from_str::<RelayConfig>("pin = 5\npolarity = 1").is_err());
    }

    #[test]
    fn not_a_pi_is_a_clear_error() {
        let is_pi =
            std::fs::read_to_string("/proc/device-tree/model").map(|m| m.contains("Raspberry")).unwrap_or(false);
        if is_pi {
            return;
        }
        let e = gpio_available().expect_err("not a Pi");
        assert_eq!(e.to_string(), NOT_A_PI);
        let cfg =
            PresenceInputConfig { name: "pir".into(), pin: 23, pull: Pull::None, active_low: false, debounce_ms: 50 };
        assert_eq!(open_input(&cfg).err().map(|e| e.to_string()).as_deref(), Some(NOT_A_PI));
        let relay = RelayConfig { name: String::new(), pin: 5, active_low: false };
        assert_eq!(open_relay(&relay).err().map(|e| e.to_string()).as_deref(), Some(NOT_A_PI));
        let pwm = PwmConfig { name: String::new(), channel: Some(0), pin: None, frequency_hz: 1000, invert: false };
        assert_eq!(open_pwm(&pwm).err().map(|e| e.to_string()).as_deref(), Some(NOT_A_PI));
    }

    async fn recv(rx: &mut mpsc::Receiver<PresenceEvent>) -> PresenceEvent {
        tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.expect("event in time").expect("open")
    }

    #[tokio::test]
    async fn presence_edges_are_debounced_and_reported() {
        let input = FakeInput::new(23, true); // active-low sensor, idle high = nobody
        let cfg =
            PresenceInputConfig { name: "pir-3".into(), pin: 23, pull: Pull::Up, active_low: true, debounce_ms: 30 };
        let (out, mut rx) = mpsc::channel(16);
        let status = SourceStatus::new("pir-3", "gpio");
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run_presence(cfg, input.factory(), out, status.clone(), shutdown));
        let first = recv(&mut rx).await;
        assert_eq!((first.name.as_str(), first.present), ("pir-3", false));
        // A glitch shorter than the debounce time is ignored.
        input.set_level(false);
        input.set_level(true);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(rx.try_recv().is_err(), "glitch ignored");
        input.set_level(false);
        assert!(recv(&mut rx).await.present);
        input.set_level(true);
        assert!(!recv(&mut rx).await.present);
        // The interrupt thread dies: the input is re-opened and keeps working.
        input.break_interrupts();
        for _ in 0..400 {
            if input.opens() >= 2 && status.state() == crate::io::status::SourceState::Up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(input.opens() >= 2);
        input.set_level(false);
        assert!(recv(&mut rx).await.present);
        assert_eq!(status.snapshot().restarts, 1);
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops").expect("no panic");
    }
}
