//! What both module dialects share: a command with the reply it must get, what a line from the
//! module means, and the judgement of a reply against an expectation. Pure.

/// A line from a module, classified by its dialect.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `OK` / `ok`.
    Ok,
    /// An error reply (`AT_PARAM_ERROR`, `invalid_param`, `busy`, ...).
    Error(String),
    /// A received frame; the RN2483 gives RSSI/SNR only on request.
    Frame { phy: Vec<u8>, rssi: Option<i32>, snr: Option<f64> },
    /// The module reports a reception that failed (CRC/header error, `radio_err`).
    RxError(String),
    /// The receive window closed without a frame: re-arm.
    RxEnded,
    /// Anything else: query answers, banners, echoes.
    Other(String),
}

/// What a command must be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ok,
    /// A line starting with this text (e.g. the version banner).
    Prefix(&'static str),
    /// A decimal number.
    Number,
    /// A decimal number, or an error reply taken as "not supported" (older firmware).
    NumberOrError,
    /// `OK`, or an error reply that is fine too (stopping a receiver that was not running).
    OkOrError,
}

/// Where a numeric answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    None,
    Snr,
    Rssi,
}

/// One command of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub cmd: String,
    pub expect: Expect,
    /// Sent again on timeout (not on an error reply) up to this many times in all.
    pub attempts: u8,
    pub capture: Capture,
    /// Per-attempt wait, if shorter than the source's `reply_timeout_ms` (quick polls while a module
    /// restarts).
    pub timeout_ms: Option<u64>,
}

impl Step {
    pub fn ok(cmd: impl Into<String>) -> Self {
        Step { cmd: cmd.into(), expect: Expect::Ok, attempts: 1, capture: Capture::None, timeout_ms: None }
    }

    pub fn expect(cmd: impl Into<String>, expect: Expect) -> Self {
        Step { cmd: cmd.into(), expect, attempts: 1, capture: Capture::None, timeout_ms: None }
    }

    pub fn attempts(mut self, n: u8) -> Self {
        self.attempts = n.max(1);
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    pub fn capture(mut self, c: Capture) -> Self {
        self.capture = c;
        self
    }
}

/// A reply judged against what was expected.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The step is done (with the number, for numeric answers).
    Done(Option<f64>),
    /// The module refused the command.
    Rejected(String),
    /// Not the answer (an unsolicited line, an echo): keep waiting.
    Wait,
}

pub fn judge(expect: Expect, line: &Line) -> Verdict {
    match (expect, line) {
        (Expect::Ok, Line::Ok) => Verdict::Done(None),
        (Expect::OkOrError, Line::Ok | Line::Error(_)) => Verdict::Done(None),
        (Expect::NumberOrError, Line::Error(_)) => Verdict::Done(None),
        (_, Line::Error(e)) => Verdict::Rejected(e.clone()),
        (Expect::Prefix(p), Line::Other(s)) if s.starts_with(p) => Verdict::Done(None),
        (Expect::Number | Expect::NumberOrError, Line::Other(s)) => match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Verdict::Done(Some(n)),
            _ => Verdict::Wait,
        },
        _ => Verdict::Wait,
    }
}

/// Lower-case hex to bytes; None unless an even number of hex digits.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    hex::decode(s).ok() // refuses an odd number of digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_replies() {
        assert_eq!(judge(Expect::Ok, &Line::Ok), Verdict::Done(None));
        assert_eq!(judge(Expect::Ok, &Line::Error("AT_BUSY_ERROR".into())), Verdict::Rejected("AT_BUSY_ERROR".into()));
        assert_eq!(judge(Expect::Ok, &Line::Other("AT+P2P=1".into())), Verdict::Wait);
        assert_eq!(judge(Expect::Prefix("RN2"), &Line::Other("RN2483 1.0.5".into())), Verdict::Done(None));
        assert_eq!(judge(Expect::Number, &Line::Other("-7".into())), Verdict::Done(Some(-7.0)));
        assert_eq!(judge(Expect::Number, &Line::Ok), Verdict::Wait);
        assert_eq!(judge(Expect::NumberOrError, &Line::Error("invalid_param".into())), Verdict::Done(None));
        assert_eq!(parse_hex("0aFF"), Some(vec![0x0A, 0xFF]));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("zz"), None);
    }
}
