//! SNMP v1/v2c messages: what labd's `snmp` PDU driver sends (GetRequest, SetRequest of an
//! INTEGER) and parses back (Response). Written here rather than pulled in as a crate because
//! the subset is small and the decoder, which parses whatever arrives on a UDP socket, is
//! fuzzed (`fuzz/fuzz_targets/snmp_decode.rs`).

pub mod ber;

use std::fmt;

use ber::{NULL, OBJECT_ID, Reader, SEQUENCE};

/// Why SNMP bytes or names could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnmpError {
    #[error("malformed SNMP message at byte {offset}: {reason}")]
    Decode { offset: usize, reason: String },
    #[error("bad OID {text:?}: {reason}")]
    BadOid { text: String, reason: String },
}

/// An OBJECT IDENTIFIER.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// Parses dotted decimal (`1.3.6.1...`, a leading dot allowed).
    pub fn parse(s: &str) -> Result<Self, SnmpError> {
        let bad = |reason: &str| SnmpError::BadOid {
            text: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim().trim_start_matches('.');
        if t.is_empty() {
            return Err(bad("empty"));
        }
        let subs = t
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad("sub-identifiers are decimal numbers separated by dots"))
                } else {
                    p.parse::<u32>()
                        .map_err(|_| bad("sub-identifier exceeds 32 bits"))
                }
            })
            .collect::<Result<Vec<u32>, _>>()?;
        if subs.len() < 2 || subs[0] > 2 || (subs[0] < 2 && subs[1] >= 40) {
            return Err(bad(
                "an OID starts with 0, 1 or 2 and has at least two parts",
            ));
        }
        if subs.len() > 128 {
            return Err(bad("more than 128 sub-identifiers"));
        }
        Ok(Self(subs))
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2c,
}

impl Version {
    fn wire(self) -> i64 {
        match self {
            Self::V1 => 0,
            Self::V2c => 1,
        }
    }
}

/// A variable binding's value (RFC 1155/2578 types and the v2c exceptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(i64),
    OctetString(Vec<u8>),
    Null,
    ObjectId(Oid),
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Opaque(Vec<u8>),
    Counter64(u64),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(v) => write!(f, "INTEGER: {v}"),
            Self::OctetString(b) => write!(f, "STRING: {:?}", String::from_utf8_lossy(b)),
            Self::Null => f.write_str("NULL"),
            Self::ObjectId(o) => write!(f, "OID: {o}"),
            Self::IpAddress(a) => write!(f, "IpAddress: {}.{}.{}.{}", a[0], a[1], a[2], a[3]),
            Self::Counter32(v) => write!(f, "Counter32: {v}"),
            Self::Gauge32(v) => write!(f, "Gauge32: {v}"),
            Self::TimeTicks(v) => write!(f, "Timeticks: {v}"),
            Self::Opaque(b) => write!(f, "Opaque: {} bytes", b.len()),
            Self::Counter64(v) => write!(f, "Counter64: {v}"),
            Self::NoSuchObject => f.write_str("No Such Object available on this agent at this OID"),
            Self::NoSuchInstance => f.write_str("No Such Instance currently exists at this OID"),
            Self::EndOfMibView => f.write_str("No more variables left in this MIB View"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarBind {
    pub oid: Oid,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduKind {
    Get,
    GetNext,
    Response,
    Set,
    GetBulk,
    Inform,
    TrapV2,
    Report,
}

impl PduKind {
    fn tag(self) -> u8 {
        match self {
            Self::Get => 0xa0,
            Self::GetNext => 0xa1,
            Self::Response => 0xa2,
            Self::Set => 0xa3,
            Self::GetBulk => 0xa5,
            Self::Inform => 0xa6,
            Self::TrapV2 => 0xa7,
            Self::Report => 0xa8,
        }
    }

    fn from_tag(t: u8) -> Option<Self> {
        Some(match t {
            0xa0 => Self::Get,
            0xa1 => Self::GetNext,
            0xa2 => Self::Response,
            0xa3 => Self::Set,
            0xa5 => Self::GetBulk,
            0xa6 => Self::Inform,
            0xa7 => Self::TrapV2,
            0xa8 => Self::Report,
            _ => return None,
        })
    }
}

/// One SNMP v1/v2c message (community-based; the v1 Trap-PDU is not supported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub version: Version,
    pub community: Vec<u8>,
    pub kind: PduKind,
    pub request_id: i32,
    pub error_status: i64,
    pub error_index: i64,
    pub varbinds: Vec<VarBind>,
}

/// RFC 3416 error-status names, as net-snmp prints them.
pub fn error_status_name(status: i64) -> &'static str {
    match status {
        0 => "noError",
        1 => "tooBig",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        7 => "wrongType",
        8 => "wrongLength",
        9 => "wrongEncoding",
        10 => "wrongValue",
        11 => "noCreation",
        12 => "inconsistentValue",
        13 => "resourceUnavailable",
        14 => "commitFailed",
        15 => "undoFailed",
        16 => "authorizationError",
        17 => "notWritable",
        18 => "inconsistentName",
        _ => "unknown error status",
    }
}

impl Message {
    /// A request with one variable binding.
    pub fn request(
        version: Version,
        community: &str,
        kind: PduKind,
        request_id: i32,
        oid: Oid,
        value: Value,
    ) -> Self {
        Self {
            version,
            community: community.as_bytes().to_vec(),
            kind,
            request_id,
            error_status: 0,
            error_index: 0,
            varbinds: vec![VarBind { oid, value }],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut vbs = Vec::new();
        for vb in &self.varbinds {
            let mut one = Vec::new();
            ber::write_tlv(&mut one, OBJECT_ID, &ber::oid_content(&vb.oid.0));
            encode_value(&mut one, &vb.value);
            ber::write_tlv(&mut vbs, SEQUENCE, &one);
        }
        let mut pdu = Vec::new();
        ber::write_tlv(
            &mut pdu,
            ber::INTEGER,
            &ber::signed_content(self.request_id as i64),
        );
        ber::write_tlv(
            &mut pdu,
            ber::INTEGER,
            &ber::signed_content(self.error_status),
        );
        ber::write_tlv(
            &mut pdu,
            ber::INTEGER,
            &ber::signed_content(self.error_index),
        );
        ber::write_tlv(&mut pdu, SEQUENCE, &vbs);
        let mut msg = Vec::new();
        ber::write_tlv(
            &mut msg,
            ber::INTEGER,
            &ber::signed_content(self.version.wire()),
        );
        ber::write_tlv(&mut msg, ber::OCTET_STRING, &self.community);
        ber::write_tlv(&mut msg, self.kind.tag(), &pdu);
        let mut out = Vec::with_capacity(msg.len() + 4);
        ber::write_tlv(&mut out, SEQUENCE, &msg);
        out
    }

    /// Parses one datagram. Refuses anything malformed, including trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, SnmpError> {
        let bad = |offset: usize, reason: &str| SnmpError::Decode {
            offset,
            reason: reason.to_string(),
        };
        let mut outer = Reader::new(buf);
        let mut msg = outer.expect(SEQUENCE, "message SEQUENCE")?;
        if !outer.is_empty() {
            return Err(bad(outer.offset(), "bytes after the message"));
        }
        let at = msg.offset();
        let version = match msg.read_integer()? {
            0 => Version::V1,
            1 => Version::V2c,
            3 => return Err(bad(at, "SNMPv3 messages are not supported")),
            v => return Err(bad(at, &format!("unknown SNMP version {v}"))),
        };
        let community = msg.read_octets()?.to_vec();
        let at = msg.offset();
        let (tag, mut pdu) = msg.read_tlv()?;
        let kind = PduKind::from_tag(tag)
            .ok_or_else(|| bad(at, &format!("unsupported PDU type 0x{tag:02x}")))?;
        if !msg.is_empty() {
            return Err(bad(msg.offset(), "bytes after the PDU"));
        }
        let at = pdu.offset();
        let request_id = i32::try_from(pdu.read_integer()?)
            .map_err(|_| bad(at, "request-id does not fit 32 bits"))?;
        let error_status = pdu.read_integer()?;
        let error_index = pdu.read_integer()?;
        let mut list = pdu.expect(SEQUENCE, "variable-bindings SEQUENCE")?;
        if !pdu.is_empty() {
            return Err(bad(pdu.offset(), "bytes after the variable bindings"));
        }
        let mut varbinds = Vec::new();
        while !list.is_empty() {
            let mut vb = list.expect(SEQUENCE, "VarBind SEQUENCE")?;
            let at = vb.offset();
            let oid = Oid(ber::decode_oid(
                vb.expect(OBJECT_ID, "OBJECT IDENTIFIER")?.bytes(),
                at,
            )?);
            let value = decode_value(&mut vb)?;
            if !vb.is_empty() {
                return Err(bad(vb.offset(), "bytes after a VarBind's value"));
            }
            varbinds.push(VarBind { oid, value });
        }
        Ok(Self {
            version,
            community,
            kind,
            request_id,
            error_status,
            error_index,
            varbinds,
        })
    }
}

fn encode_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Integer(i) => ber::write_tlv(out, ber::INTEGER, &ber::signed_content(*i)),
        Value::OctetString(b) => ber::write_tlv(out, ber::OCTET_STRING, b),
        Value::Null => ber::write_tlv(out, NULL, &[]),
        Value::ObjectId(o) => ber::write_tlv(out, OBJECT_ID, &ber::oid_content(&o.0)),
        Value::IpAddress(a) => ber::write_tlv(out, 0x40, a),
        Value::Counter32(n) => ber::write_tlv(out, 0x41, &ber::unsigned_content(*n as u64)),
        Value::Gauge32(n) => ber::write_tlv(out, 0x42, &ber::unsigned_content(*n as u64)),
        Value::TimeTicks(n) => ber::write_tlv(out, 0x43, &ber::unsigned_content(*n as u64)),
        Value::Opaque(b) => ber::write_tlv(out, 0x44, b),
        Value::Counter64(n) => ber::write_tlv(out, 0x46, &ber::unsigned_content(*n)),
        Value::NoSuchObject => ber::write_tlv(out, 0x80, &[]),
        Value::NoSuchInstance => ber::write_tlv(out, 0x81, &[]),
        Value::EndOfMibView => ber::write_tlv(out, 0x82, &[]),
    }
}

fn decode_value(r: &mut Reader<'_>) -> Result<Value, SnmpError> {
    let at = r.offset();
    let (tag, v) = r.read_tlv()?;
    let b = v.bytes();
    let u32_of = |b: &[u8]| ber::decode_unsigned(b, at, 32).map(|n| n as u32);
    Ok(match tag {
        ber::INTEGER => Value::Integer(ber::decode_signed(b, at)?),
        ber::OCTET_STRING => Value::OctetString(b.to_vec()),
        NULL => Value::Null,
        OBJECT_ID => Value::ObjectId(Oid(ber::decode_oid(b, at)?)),
        0x40 => Value::IpAddress(b.try_into().map_err(|_| SnmpError::Decode {
            offset: at,
            reason: format!("IpAddress of {} bytes", b.len()),
        })?),
        0x41 => Value::Counter32(u32_of(b)?),
        0x42 => Value::Gauge32(u32_of(b)?),
        0x43 => Value::TimeTicks(u32_of(b)?),
        0x44 => Value::Opaque(b.to_vec()),
        0x46 => Value::Counter64(ber::decode_unsigned(b, at, 64)?),
        0x80 => Value::NoSuchObject,
        0x81 => Value::NoSuchInstance,
        0x82 => Value::EndOfMibView,
        t => {
            return Err(SnmpError::Decode {
                offset: at,
                reason: format!("unknown value type 0x{t:02x}"),
            });
        }
    })
}

/// The fuzz target's entry point: decode, and check that what decodes re-encodes to something
/// that decodes to the same message.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode());
        assert_eq!(
            again.as_ref(),
            Ok(&m),
            "re-encoded message decodes differently"
        );
    }
}

#[cfg(test)]
mod tests;
