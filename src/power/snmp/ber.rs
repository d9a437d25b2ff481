//! The subset of ASN.1 BER that SNMP v1/v2c uses: definite lengths, one-byte tags, INTEGER,
//! OCTET STRING, NULL, OBJECT IDENTIFIER, SEQUENCE and the SNMP application/context types.
//!
//! The reader parses bytes from the network: every length is checked against what remains, and
//! nothing it reads can make it allocate more than the input's size.

use super::SnmpError;

pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OBJECT_ID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;

fn err(offset: usize, reason: impl Into<String>) -> SnmpError {
    SnmpError::Decode {
        offset,
        reason: reason.into(),
    }
}

/// A cursor over one BER-encoded buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the whole message, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            base: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// The next element's tag, without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads one tag-length-value; returns the tag and a reader over the value.
    pub fn read_tlv(&mut self) -> Result<(u8, Reader<'a>), SnmpError> {
        let start = self.offset();
        let tag = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| err(start, "truncated: expected a tag"))?;
        if tag & 0x1f == 0x1f {
            return Err(err(start, "multi-byte tags are not used by SNMP"));
        }
        self.pos += 1;
        let first = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| err(self.offset(), "truncated: expected a length"))?;
        self.pos += 1;
        let len = if first < 0x80 {
            first as usize
        } else if first == 0x80 {
            return Err(err(start, "indefinite length is not allowed in SNMP"));
        } else {
            let n = (first & 0x7f) as usize;
            if n > 4 {
                return Err(err(start, format!("length of {n} bytes is too long")));
            }
            let bytes = self
                .buf
                .get(self.pos..self.pos + n)
                .ok_or_else(|| err(self.offset(), "truncated length"))?;
            self.pos += n;
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize)
        };
        let remaining = self.buf.len() - self.pos;
        if len > remaining {
            return Err(err(
                start,
                format!(
                    "element of tag 0x{tag:02x} claims {len} bytes but only {remaining} remain"
                ),
            ));
        }
        let value = Reader {
            buf: &self.buf[self.pos..self.pos + len],
            pos: 0,
            base: self.offset(),
        };
        self.pos += len;
        Ok((tag, value))
    }

    /// Reads an element that must have tag `want`.
    pub fn expect(&mut self, want: u8, what: &str) -> Result<Reader<'a>, SnmpError> {
        let at = self.offset();
        let (tag, r) = self.read_tlv()?;
        if tag != want {
            return Err(err(
                at,
                format!("expected {what} (tag 0x{want:02x}), found tag 0x{tag:02x}"),
            ));
        }
        Ok(r)
    }

    pub fn bytes(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn read_integer(&mut self) -> Result<i64, SnmpError> {
        let at = self.offset();
        let r = self.expect(INTEGER, "INTEGER")?;
        decode_signed(r.bytes(), at)
    }

    pub fn read_octets(&mut self) -> Result<&'a [u8], SnmpError> {
        Ok(self.expect(OCTET_STRING, "OCTET STRING")?.bytes())
    }
}

/// A two's complement INTEGER of at most 8 bytes.
pub fn decode_signed(b: &[u8], at: usize) -> Result<i64, SnmpError> {
    if b.is_empty() {
        return Err(err(at, "INTEGER with no content"));
    }
    if b.len() > 8 {
        return Err(err(
            at,
            format!("INTEGER of {} bytes does not fit 64 bits", b.len()),
        ));
    }
    let mut v: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for &x in b {
        v = (v << 8) | x as i64;
    }
    Ok(v)
}

/// An unsigned application integer (Counter32, Gauge32, TimeTicks, Counter64): up to `max_bits`
/// bits, with an optional leading zero byte.
pub fn decode_unsigned(b: &[u8], at: usize, max_bits: u32) -> Result<u64, SnmpError> {
    if b.is_empty() {
        return Err(err(at, "unsigned integer with no content"));
    }
    let b = if b.len() > 1 && b[0] == 0 { &b[1..] } else { b };
    if b.len() as u32 * 8 > max_bits {
        return Err(err(
            at,
            format!("unsigned integer does not fit {max_bits} bits"),
        ));
    }
    Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
}

/// OBJECT IDENTIFIER contents into sub-identifiers.
pub fn decode_oid(b: &[u8], at: usize) -> Result<Vec<u32>, SnmpError> {
    if b.is_empty() {
        return Err(err(at, "empty OBJECT IDENTIFIER"));
    }
    let mut subs = Vec::with_capacity(b.len() + 1);
    let mut acc: u64 = 0;
    let mut in_progress = false;
    for (i, &x) in b.iter().enumerate() {
        if !in_progress && x == 0x80 {
            return Err(err(
                at + i,
                "OBJECT IDENTIFIER sub-identifier with a leading 0x80",
            ));
        }
        acc = (acc << 7) | (x & 0x7f) as u64;
        if acc > u32::MAX as u64 {
            return Err(err(
                at + i,
                "OBJECT IDENTIFIER sub-identifier exceeds 32 bits",
            ));
        }
        in_progress = x & 0x80 != 0;
        if !in_progress {
            if subs.is_empty() {
                let (first, second) = match acc {
                    0..40 => (0, acc),
                    40..80 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                subs.push(first as u32);
                subs.push(second as u32);
            } else {
                subs.push(acc as u32);
            }
            acc = 0;
        }
    }
    if in_progress {
        return Err(err(
            at + b.len(),
            "OBJECT IDENTIFIER ends inside a sub-identifier",
        ));
    }
    Ok(subs)
}

/// Appends tag, length and `content`.
pub fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    write_len(out, content.len());
    out.extend_from_slice(content);
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Minimal two's complement content of `v`.
pub fn signed_content(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// Minimal unsigned content of `v` (a leading zero when the top bit is set).
pub fn unsigned_content(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&bytes[skip..]);
    out
}

/// OBJECT IDENTIFIER contents; the caller guarantees at least two sub-identifiers, the first
/// 0..=2 (as `Oid::parse` checks).
pub fn oid_content(subs: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(subs.len() + 4);
    let first =
        subs.first().copied().unwrap_or(0) as u64 * 40 + subs.get(1).copied().unwrap_or(0) as u64;
    push_base128(&mut out, first);
    for &s in subs.iter().skip(2) {
        push_base128(&mut out, s as u64);
    }
    out
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    let n = tmp.len();
    for (k, b) in tmp[i..].iter().enumerate() {
        out.push(if i + k + 1 < n { b | 0x80 } else { *b });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_minimally() {
        for (v, want) in [
            (0i64, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x00, 0x80]),
            (256, vec![0x01, 0x00]),
            (-1, vec![0xff]),
            (-128, vec![0x80]),
            (-129, vec![0xff, 0x7f]),
        ] {
            assert_eq!(signed_content(v), want, "{v}");
            assert_eq!(decode_signed(&want, 0).unwrap(), v);
        }
        assert_eq!(decode_signed(&i64::MIN.to_be_bytes(), 0).unwrap(), i64::MIN);
        assert_eq!(unsigned_content(0x8000_0000), vec![0, 0x80, 0, 0, 0]);
        assert_eq!(
            decode_unsigned(&[0, 0x80, 0, 0, 0], 0, 32).unwrap(),
            0x8000_0000
        );
        assert!(decode_unsigned(&[1, 0, 0, 0, 0], 0, 32).is_err());
    }

    #[test]
    fn oids_round_trip() {
        let subs = [1u32, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 3, 1, 1, 4, 3];
        let c = oid_content(&subs);
        assert_eq!(&c[..6], &[0x2b, 6, 1, 4, 1, 0x82]);
        assert_eq!(decode_oid(&c, 0).unwrap(), subs);
        assert_eq!(
            decode_oid(&oid_content(&[2, 999, u32::MAX]), 0).unwrap(),
            [2, 999, u32::MAX]
        );
        assert!(decode_oid(&[0x2b, 0x86], 0).is_err());
        assert!(decode_oid(&[0x2b, 0x80, 0x01], 0).is_err());
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let mut out = Vec::new();
        write_tlv(&mut out, OCTET_STRING, &content);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut r = Reader::new(&out);
        assert_eq!(r.read_octets().unwrap(), &content[..]);
        assert!(r.is_empty());
        let mut short = Reader::new(&out[..100]);
        assert!(short.read_octets().is_err());
        assert!(Reader::new(&[0x04, 0x80, 0, 0]).read_tlv().is_err());
        assert!(
            Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1])
                .read_tlv()
                .is_err()
        );
    }
}
