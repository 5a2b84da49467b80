//! Splitting a serial byte stream into lines (pure; the connection owns the buffer).

/// Accumulates bytes and hands out complete lines (`\n`-terminated, `\r` stripped, blank lines
/// skipped). A line longer than `max` is discarded up to its end and reported once as `Err`.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

/// A line that exceeded the buffer (its length so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl LineBuffer {
    pub fn new(max: usize) -> Self {
        LineBuffer { buf: Vec::new(), max: max.max(16), discarding: false }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes waiting without a line end.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete line, `None` when incomplete.
    pub fn next_line(&mut self) -> Option<Result<String, TooLong>> {
        loop {
            let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > self.max {
                    let n = self.buf.len();
                    self.buf.clear();
                    if !self.discarding {
                        self.discarding = true;
                        return Some(Err(TooLong(n)));
                    }
                }
                return None;
            };
            let raw: Vec<u8> = self.buf.drain(..=pos).collect();
            if self.discarding {
                // The tail of an over-long line.
                self.discarding = false;
                continue;
            }
            if raw.len() > self.max {
                return Some(Err(TooLong(raw.len())));
            }
            let text = String::from_utf8_lossy(&raw);
            let line = text.trim_matches(|c: char| c == '\r' || c == '\n' || c == '\0').trim();
            if line.is_empty() {
                continue;
            }
            return Some(Ok(line.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_lines_across_pushes() {
        let mut b = LineBuffer::new(64);
        b.push(b"OK\r\n+EVT:RX");
        assert_eq!(b.next_line(), Some(Ok("OK".into())));
        assert_eq!(b.next_line(), None);
        b.push(b"P2P:-40:7:AB\r\n\r\nradio_rx  01\n");
        assert_eq!(b.next_line(), Some(Ok("+EVT:RXP2P:-40:7:AB".into())));
        assert_eq!(b.next_line(), Some(Ok("radio_rx  01".into())));
        assert_eq!(b.next_line(), None);
    }

    #[test]
    fn over_long_lines_are_reported_once_and_skipped() {
        let mut b = LineBuffer::new(16);
        b.push(&[b'x'; 40]);
        assert_eq!(b.next_line(), Some(Err(TooLong(40))));
        b.push(&[b'y'; 40]);
        assert_eq!(b.next_line(), None);
        b.push(b"zz\r\nOK\r\n");
        assert_eq!(b.next_line(), Some(Ok("OK".into())));
    }
}
