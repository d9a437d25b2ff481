//! The binary framing of an attach session (after the JSON request and reply lines).
//!
//! A frame is `kind: u8`, `length: u32 big-endian`, then `length` payload bytes. Unknown kinds
//! are refused; lengths above [`MAX_FRAME`] are refused. The decoder parses bytes from a
//! socket peer, so it is fuzzed (`fuzz/fuzz_targets/control_frame.rs`, [`fuzz_decode`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest payload accepted.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    // Daemon -> client.
    /// Board output.
    Data = 1,
    /// `u64` big-endian: bytes this client missed (its queue was full).
    Missed = 2,
    /// Text: the link to the board is lost; the daemon keeps reopening it.
    Lost = 3,
    /// Text: the link is back (`after_ms opened`).
    Back = 4,
    /// Text for the operator (input refused, read-only...).
    Notice = 5,
    // Client -> daemon.
    /// Keystrokes for the board.
    Input = 16,
    /// Send a serial BREAK.
    Break = 17,
    /// End the session.
    Detach = 18,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Data,
            2 => Self::Missed,
            3 => Self::Lost,
            4 => Self::Back,
            5 => Self::Notice,
            16 => Self::Input,
            17 => Self::Break,
            18 => Self::Detach,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: FrameKind, payload: impl Into<Bytes>) -> Self {
        Self {
            kind,
            payload: payload.into(),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        encode(self.kind, &self.payload, out);
    }
}

/// Appends one frame to `out`.
pub fn encode(kind: FrameKind, payload: &[u8], out: &mut BytesMut) {
    out.reserve(5 + payload.len());
    out.put_u8(kind as u8);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let kind = FrameKind::from_u8(buf[0]).ok_or(FrameError::UnknownKind(buf[0]))?;
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Frame { kind, payload }))
}

/// Fuzz entry point: decoding arbitrary bytes never panics, and whatever decodes re-encodes to
/// the same bytes.
pub fn fuzz_decode(input: &[u8]) {
    let mut buf = BytesMut::from(input);
    let mut consumed = 0usize;
    let mut reencoded = BytesMut::new();
    loop {
        let before = buf.len();
        match decode(&mut buf) {
            Ok(Some(f)) => {
                consumed += before - buf.len();
                f.encode(&mut reencoded);
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(&reencoded[..], &input[..consumed]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_frames() {
        let mut out = BytesMut::new();
        encode(FrameKind::Data, b"\xff\x00abc", &mut out);
        encode(FrameKind::Detach, b"", &mut out);
        let mut partial = BytesMut::from(&out[..7]);
        assert_eq!(decode(&mut partial), Ok(None));
        let mut buf = out.clone();
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(Frame::new(FrameKind::Data, &b"\xff\x00abc"[..]))
        );
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(Frame::new(FrameKind::Detach, Bytes::new()))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            decode(&mut BytesMut::from(&b"\x63\0\0\0\0"[..])),
            Err(FrameError::UnknownKind(0x63))
        );
        assert_eq!(
            decode(&mut BytesMut::from(&b"\x10\xff\xff\xff\xff"[..])),
            Err(FrameError::TooLarge(0xffff_ffff))
        );
    }

    #[test]
    fn fuzz_seeds() {
        for seed in [
            &b""[..],
            b"\x01\0\0\0\x01x\x12\0\0\0\0",
            b"\x10\0\0\0\x05ab",
            b"\xff\xff\xff\xff\xff",
        ] {
            fuzz_decode(seed);
        }
    }
}
