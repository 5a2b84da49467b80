//! EN 13757-4 block CRCs (frame formats A and B) and how a frame that still carries them is told apart
//! from one whose CRCs the stick already removed.
//!
//! How we tell (the L-field is the first byte):
//! - **Format A with CRCs**: the frame is exactly `L + 1 + 2 × blocks` bytes long, where the blocks are the
//!   10-byte header block and one block per started 16 bytes of the rest. A frame of that length must
//!   carry CRCs (it cannot be a CRC-free frame: that is `L + 1` long), so a failing CRC is [`WmbusError::BadCrc`].
//! - **Format B with CRCs**: L counts the CRCs, so the frame is `L + 1` long like a CRC-free frame. It is
//!   taken as format B only when its CRCs (over blocks 1+2, and block 3 if L > 125) all check; a CRC-free
//!   frame passes that by chance with probability 2⁻¹⁶ (per frame), and would then lose its last 2 bytes.
//! - Anything else is taken as already stripped (the sticks' default).

use super::WmbusError;

/// CRC-16 of EN 13757-4: polynomial 0x3D65, initial value 0, not reflected, final XOR 0xFFFF.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x3D65 } else { crc << 1 };
        }
    }
    !crc
}

/// Does `block` end in the big-endian CRC of the bytes before it?
fn block_ok(block: &[u8]) -> bool {
    match block.len().checked_sub(2) {
        Some(n) if n > 0 => crc16(&block[..n]) == u16::from_be_bytes([block[n], block[n + 1]]),
        _ => false,
    }
}

/// Frame length of a format A frame with CRCs for L-field `l`.
fn format_a_len(l: usize) -> usize {
    let rest = l.saturating_sub(9);
    l + 1 + 2 * (1 + rest.div_ceil(16))
}

/// Which frame format a frame was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Block CRCs already removed (the sticks' default).
    Stripped,
    /// Format A with its block CRCs, checked and removed.
    FormatA,
    /// Format B with its block CRCs, checked and removed.
    FormatB,
}

/// Checks and removes the block CRCs of `frame` if it carries them (see the module comment).
/// The returned frame has the format A L-field convention (L = bytes after L, without CRCs).
pub fn strip_crcs(frame: &[u8]) -> Result<(Vec<u8>, Framing), WmbusError> {
    let Some(&l) = frame.first() else {
        return Err(WmbusError::TooShort { need: 1, got: 0 });
    };
    let l = usize::from(l);
    if l >= 10 && frame.len() == format_a_len(l) {
        let mut out = Vec::with_capacity(l + 1);
        let (first, mut rest) = frame.split_at(12);
        if !block_ok(first) {
            return Err(WmbusError::BadCrc);
        }
        out.extend_from_slice(&first[..10]);
        while !rest.is_empty() {
            let n = rest.len().min(18);
            let (block, tail) = rest.split_at(n);
            if !block_ok(block) {
                return Err(WmbusError::BadCrc);
            }
            out.extend_from_slice(&block[..n - 2]);
            rest = tail;
        }
        return Ok((out, Framing::FormatA));
    }
    if l >= 12 && frame.len() == l + 1 {
        let n12 = frame.len().min(128);
        let (b12, b3) = frame.split_at(n12);
        if block_ok(b12) && (b3.is_empty() || block_ok(b3)) {
            let mut out = Vec::with_capacity(frame.len());
            out.extend_from_slice(&b12[..n12 - 2]);
            if let Some(n) = b3.len().checked_sub(2) {
                out.extend_from_slice(&b3[..n]);
            }
            let new_l =
                u8::try_from(out.len() - 1).map_err(|_| WmbusError::Invalid("format B frame too long".into()))?;
            out[0] = new_l;
            return Ok((out, Framing::FormatB));
        }
    }
    Ok((frame.to_vec(), Framing::Stripped))
}

/// Adds format A block CRCs to a CRC-free frame (for tests and simulators).
pub fn add_format_a_crcs(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 40);
    let (first, rest) = frame.split_at(frame.len().min(10));
    out.extend_from_slice(first);
    out.extend_from_slice(&crc16(first).to_be_bytes());
    for block in rest.chunks(16) {
        out.extend_from_slice(block);
        out.extend_from_slice(&crc16(block).to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_header_block() {
        // EN 13757-4 example header block (L C M A) of a Kamstrup meter with its CRC (as sent on air).
        let block = [0x2E, 0x44, 0x2D, 0x2C, 0x46, 0x46, 0x46, 0x46, 0x30, 0x0C];
        let crc = crc16(&block);
        let mut framed = block.to_vec();
        framed.extend_from_slice(&crc.to_be_bytes());
        assert!(block_ok(&framed));
        framed[3] ^= 1;
        assert!(!block_ok(&framed));
    }

    #[test]
    fn format_a_round_trip_and_bad_crc() {
        let mut frame = vec![0x1Eu8, 0x44, 0x2D, 0x2C, 1, 2, 3, 4, 0x1B, 0x16];
        frame.extend((0..21).map(|i| i as u8));
        assert_eq!(usize::from(frame[0]) + 1, frame.len());
        let with = add_format_a_crcs(&frame);
        assert_eq!(with.len(), format_a_len(usize::from(frame[0])));
        assert_eq!(strip_crcs(&with).unwrap(), (frame.clone(), Framing::FormatA));
        assert_eq!(strip_crcs(&frame).unwrap(), (frame.clone(), Framing::Stripped));
        let mut bad = with.clone();
        bad[20] ^= 0x40;
        assert_eq!(strip_crcs(&bad), Err(WmbusError::BadCrc));
    }

    #[test]
    fn format_b_is_recognised_by_its_crc() {
        let mut body = vec![0u8, 0x44, 0x2D, 0x2C, 1, 2, 3, 4, 0x1B, 0x16, 0x78, 0x03, 0x13, 0x01, 0x02, 0x03];
        body[0] = (body.len() + 2 - 1) as u8;
        let crc = crc16(&body);
        let mut frame = body.clone();
        frame.extend_from_slice(&crc.to_be_bytes());
        let (out, framing) = strip_crcs(&frame).unwrap();
        assert_eq!(framing, Framing::FormatB);
        assert_eq!(out[0] as usize + 1, out.len());
        assert_eq!(&out[1..], &body[1..]);
    }
}
