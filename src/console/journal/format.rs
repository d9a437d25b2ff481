//! The journal's on-disk record format.
//!
//! Every record is a one-line text header followed by the raw payload and a newline:
//!
//! ```text
//! @<wall µs since epoch> <monotonic µs> <kind> <payload length> <who>\n<payload>\n
//! ```
//!
//! `kind` is `out` (board output), `in` (input sent to the board; `who` names the sender),
//! `brk` (a BREAK, `who` sent it) or `mark` (a labd event such as "console lost"; payload is
//! text). `who` is `-` when there is nobody. The length prefix keeps any byte (0xFF, NUL, a
//! newline) intact; the `@` and text header keep the file greppable and let a reader resync
//! after a torn write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BufMut;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Output,
    Input,
    Break,
    Marker,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Output => "out",
            Self::Input => "in",
            Self::Break => "brk",
            Self::Marker => "mark",
        }
    }

    fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"out" => Self::Output,
            b"in" => Self::Input,
            b"brk" => Self::Break,
            b"mark" => Self::Marker,
            _ => return None,
        })
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub wall_us: u64,
    pub mono_us: u64,
    pub kind: RecordKind,
    pub who: Option<String>,
    pub data: Vec<u8>,
}

impl Record {
    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.wall_us)
    }
}

/// Longest header accepted when reading (a sane bound for resynchronising).
const MAX_HEADER: usize = 256;
/// Largest payload accepted when reading; larger lengths mean corruption.
const MAX_PAYLOAD: usize = 64 << 20;

/// Wall-clock microseconds since the Unix epoch.
pub fn wall_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CLOCK_MONOTONIC in microseconds: orders records even when the wall clock jumps.
pub fn mono_now_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
    })
}

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, kind: RecordKind, who: Option<&str>, data: &[u8]) {
    encode_at(out, wall_now_us(), mono_now_us(), kind, who, data);
}

pub fn encode_at(
    out: &mut Vec<u8>,
    wall_us: u64,
    mono_us: u64,
    kind: RecordKind,
    who: Option<&str>,
    data: &[u8],
) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "@{wall_us} {mono_us} {} {} ",
        kind.as_str(),
        data.len()
    );
    match who {
        Some(w) if !w.is_empty() => out.extend(
            w.bytes()
                .take(96)
                .map(|b| if b.is_ascii_graphic() { b } else { b'_' }),
        ),
        _ => out.put_u8(b'-'),
    }
    out.put_u8(b'\n');
    out.extend_from_slice(data);
    out.put_u8(b'\n');
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Record(Record, usize),
    /// Not enough bytes yet (the writer is mid-record or the file was cut short).
    Incomplete,
    /// Garbage: skip this many bytes to the next plausible record start.
    Skip(usize),
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.is_empty() {
        return Decoded::Incomplete;
    }
    let resync = || {
        // The next "\n@" (after the first byte) is the next candidate.
        match buf[1..].windows(2).position(|w| w == b"\n@") {
            Some(p) => Decoded::Skip(p + 2),
            None => Decoded::Incomplete,
        }
    };
    if buf[0] != b'@' {
        return match buf.iter().position(|&b| b == b'@') {
            Some(p) => Decoded::Skip(p),
            None => Decoded::Skip(buf.len()),
        };
    }
    let Some(nl) = buf.iter().take(MAX_HEADER).position(|&b| b == b'\n') else {
        return if buf.len() < MAX_HEADER {
            Decoded::Incomplete
        } else {
            resync()
        };
    };
    let header = &buf[1..nl];
    let mut fields = header.split(|&b| b == b' ');
    let (Some(wall), Some(mono), Some(kind), Some(len), Some(who), None) = (
        fields.next().and_then(parse_u64),
        fields.next().and_then(parse_u64),
        fields.next().and_then(RecordKind::parse),
        fields.next().and_then(parse_u64),
        fields.next(),
        fields.next(),
    ) else {
        return resync();
    };
    let len = len as usize;
    if len > MAX_PAYLOAD {
        return resync();
    }
    let end = nl + 1 + len;
    if buf.len() < end + 1 {
        return Decoded::Incomplete;
    }
    if buf[end] != b'\n' {
        return resync();
    }
    Decoded::Record(
        Record {
            wall_us: wall,
            mono_us: mono,
            kind,
            who: (who != b"-").then(|| String::from_utf8_lossy(who).into_owned()),
            data: buf[nl + 1..end].to_vec(),
        },
        end + 1,
    )
}

/// Decodes every complete record in `buf`; returns them and how many bytes were consumed
/// (an incomplete last record is left for later). Garbage is skipped.
pub fn decode_all(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match decode(&buf[at..]) {
            Decoded::Record(r, n) => {
                out.push(r);
                at += n;
            }
            Decoded::Skip(n) => at += n,
            Decoded::Incomplete => return (out, at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_binary_payload() {
        let mut buf = Vec::new();
        encode_at(&mut buf, 1, 2, RecordKind::Output, None, b"a\nb\xff\x00");
        encode_at(
            &mut buf,
            3,
            4,
            RecordKind::Input,
            Some("op:alice bob"),
            b"ls\r",
        );
        assert!(buf.starts_with(b"@1 2 out 5 -\na\nb\xff\x00\n@3 4 in 3 op:alice_bob\nls\r\n"));
        let (recs, used) = decode_all(&buf);
        assert_eq!(used, buf.len());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].data, b"a\nb\xff\x00");
        assert_eq!(recs[1].who.as_deref(), Some("op:alice_bob"));
        assert_eq!(recs[1].kind, RecordKind::Input);
    }

    #[test]
    fn incomplete_tail_is_left_and_garbage_skipped() {
        let mut buf = b"junk\n".to_vec();
        encode_at(&mut buf, 1, 2, RecordKind::Marker, None, b"console lost");
        let full = buf.len();
        encode_at(&mut buf, 5, 6, RecordKind::Output, None, b"partial");
        let cut = &buf[..buf.len() - 3];
        let (recs, used) = decode_all(cut);
        assert_eq!(recs.len(), 1);
        assert_eq!(used, full);
        assert_eq!(recs[0].data, b"console lost");
    }

    #[test]
    fn corrupt_header_resyncs() {
        let mut buf = b"@1 2 out 999999999999 -\nxx\n".to_vec();
        encode_at(&mut buf, 1, 2, RecordKind::Output, None, b"ok");
        let (recs, _) = decode_all(&buf);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].data, b"ok");
    }
}
