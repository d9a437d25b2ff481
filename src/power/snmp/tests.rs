use super::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// `snmpset -v1 -c private HOST 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3 i 2` as net-snmp 5.9.3 sent it.
const NET_SNMP_V1_SET: &str = "3033020100040770726976617465a325020455ba4e490201000201003017301506102b06010401823e01010c030301010403020102";
/// `snmpget -v2c -c public HOST 1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.3` as net-snmp 5.9.3 sent it.
const NET_SNMP_V2C_GET: &str = "303102010104067075626c6963a024020413a23cf90201000201003016301406102b06010401823e01010c0305010104030500";

#[test]
fn encodes_exactly_what_net_snmp_sends() {
    let set = Message::request(
        Version::V1,
        "private",
        PduKind::Set,
        0x55ba4e49,
        Oid::parse("1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3").unwrap(),
        Value::Integer(2),
    );
    assert_eq!(hex::encode(set.encode()), NET_SNMP_V1_SET);
    let get = Message::request(
        Version::V2c,
        "public",
        PduKind::Get,
        0x13a23cf9,
        Oid::parse(".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.3").unwrap(),
        Value::Null,
    );
    assert_eq!(hex::encode(get.encode()), NET_SNMP_V2C_GET);
}

#[test]
fn decodes_net_snmp_requests() {
    let m = Message::decode(&unhex(NET_SNMP_V1_SET)).unwrap();
    assert_eq!(m.version, Version::V1);
    assert_eq!(m.community, b"private");
    assert_eq!(m.kind, PduKind::Set);
    assert_eq!(m.request_id, 0x55ba4e49);
    assert_eq!(m.varbinds.len(), 1);
    assert_eq!(
        m.varbinds[0].oid.to_string(),
        "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3"
    );
    assert_eq!(m.varbinds[0].value, Value::Integer(2));
}

#[test]
fn every_value_type_round_trips() {
    let oid = Oid::parse("1.3.6.1.2.1.1.1.0").unwrap();
    let values = [
        Value::Integer(-5),
        Value::Integer(i64::MAX),
        Value::OctetString(b"Outlet 1".to_vec()),
        Value::Null,
        Value::ObjectId(Oid::parse("1.3.6.1.4.1.318.1.3.4.5").unwrap()),
        Value::IpAddress([127, 0, 0, 1]),
        Value::Counter32(u32::MAX),
        Value::Gauge32(7),
        Value::TimeTicks(123456),
        Value::Opaque(vec![1, 2]),
        Value::Counter64(u64::MAX),
        Value::NoSuchObject,
        Value::NoSuchInstance,
        Value::EndOfMibView,
    ];
    let m = Message {
        version: Version::V2c,
        community: b"public".to_vec(),
        kind: PduKind::Response,
        request_id: -7,
        error_status: 17,
        error_index: 1,
        varbinds: values
            .iter()
            .map(|v| VarBind {
                oid: oid.clone(),
                value: v.clone(),
            })
            .collect(),
    };
    assert_eq!(Message::decode(&m.encode()).unwrap(), m);
}

#[test]
fn refuses_malformed_input_with_a_position() {
    let good = unhex(NET_SNMP_V1_SET);
    // Every truncation is refused, never a panic.
    for n in 0..good.len() {
        assert!(Message::decode(&good[..n]).is_err(), "accepted {n} bytes");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(Message::decode(&trailing).is_err());
    let mut v3 = good.clone();
    v3[4] = 3;
    let e = Message::decode(&v3).unwrap_err();
    assert_eq!(
        e,
        SnmpError::Decode {
            offset: 2,
            reason: "SNMPv3 messages are not supported".into()
        }
    );
    // A length that claims more than the datagram holds.
    let mut long = good.clone();
    long[1] = 0x7f;
    assert!(matches!(
        Message::decode(&long),
        Err(SnmpError::Decode { offset: 0, .. })
    ));
    for seed in [
        &b""[..],
        b"\x30",
        b"\x30\x00",
        b"\x30\x84\xff\xff\xff\xff",
        b"\x06\x01\x2b",
    ] {
        fuzz_decode(seed);
    }
    fuzz_decode(&good);
}

#[test]
fn oid_text() {
    assert_eq!(Oid::parse(".1.3.6").unwrap().0, vec![1, 3, 6]);
    for bad in ["", "1", "3.1", "1.40", "1.3.x", "1..3", "1.3.99999999999"] {
        assert!(Oid::parse(bad).is_err(), "{bad}");
    }
}
