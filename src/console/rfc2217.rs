//! RFC 2217 (telnet COM-PORT-OPTION): setting a remote UART's line from labd's configuration,
//! and reading the server's answers (codes + 100, as ser2net sends them).

use bytes::BytesMut;

use super::config::{FlowControl, LineSettings, Parity};
use super::telnet::{opt, subnegotiation};

pub const SIGNATURE: u8 = 0;
pub const SET_BAUDRATE: u8 = 1;
pub const SET_DATASIZE: u8 = 2;
pub const SET_PARITY: u8 = 3;
pub const SET_STOPSIZE: u8 = 4;
pub const SET_CONTROL: u8 = 5;
/// Server replies carry the client code plus this.
pub const SERVER_OFFSET: u8 = 100;

/// The sub-negotiations that put the remote UART into `line` (baud, data bits, parity, stop
/// bits, flow control), in the order pyserial sends them.
pub fn line_settings_requests(line: &LineSettings, out: &mut BytesMut) {
    subnegotiation(
        opt::COM_PORT,
        &[&[SET_BAUDRATE][..], &line.baud.to_be_bytes()].concat(),
        out,
    );
    subnegotiation(opt::COM_PORT, &[SET_DATASIZE, line.data_bits], out);
    let parity = match line.parity {
        Parity::None => 1,
        Parity::Odd => 2,
        Parity::Even => 3,
        Parity::Mark => 4,
        Parity::Space => 5,
    };
    subnegotiation(opt::COM_PORT, &[SET_PARITY, parity], out);
    subnegotiation(opt::COM_PORT, &[SET_STOPSIZE, line.stop_bits], out);
    let flow = match line.flow_control {
        FlowControl::None => 1,
        FlowControl::Software => 2,
        FlowControl::Hardware => 3,
    };
    subnegotiation(opt::COM_PORT, &[SET_CONTROL, flow], out);
}

/// A server reply worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Baud(u32),
    DataSize(u8),
    Parity(u8),
    StopSize(u8),
    Control(u8),
    Signature(String),
    /// Line/modem state notifications and anything else.
    Other {
        code: u8,
        value: Vec<u8>,
    },
}

/// Interprets the payload of `IAC SB COM-PORT-OPTION … IAC SE` sent by a server.
pub fn parse_reply(data: &[u8]) -> Option<Reply> {
    let (&code, value) = data.split_first()?;
    let code = code.checked_sub(SERVER_OFFSET)?;
    Some(match (code, value) {
        (SET_BAUDRATE, [a, b, c, d]) => Reply::Baud(u32::from_be_bytes([*a, *b, *c, *d])),
        (SET_DATASIZE, [v]) => Reply::DataSize(*v),
        (SET_PARITY, [v]) => Reply::Parity(*v),
        (SET_STOPSIZE, [v]) => Reply::StopSize(*v),
        (SET_CONTROL, [v]) => Reply::Control(*v),
        (SIGNATURE, v) => Reply::Signature(String::from_utf8_lossy(v).into_owned()),
        (code, v) => Reply::Other {
            code,
            value: v.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baud_request_matches_observed_bytes() {
        let mut out = BytesMut::new();
        let line = LineSettings {
            baud: 9600,
            ..LineSettings::default()
        };
        line_settings_requests(&line, &mut out);
        assert!(out.starts_with(&[0xff, 0xfa, 0x2c, 0x01, 0x00, 0x00, 0x25, 0x80, 0xff, 0xf0]));
    }

    #[test]
    fn parses_ser2net_baud_reply() {
        // Observed with ser2net 4.3.11: ff fa 2c 65 00 00 25 80 ff f0.
        assert_eq!(
            parse_reply(&[0x65, 0, 0, 0x25, 0x80]),
            Some(Reply::Baud(9600))
        );
        assert_eq!(
            parse_reply(&[107, 0]),
            Some(Reply::Other {
                code: 7,
                value: vec![0]
            })
        );
        assert_eq!(parse_reply(&[1, 2]), None);
    }

    #[test]
    fn baud_with_ff_byte_is_escaped() {
        let mut out = BytesMut::new();
        let line = LineSettings {
            baud: 0x0001_C2FF,
            ..LineSettings::default()
        };
        line_settings_requests(&line, &mut out);
        assert!(out.starts_with(&[
            0xff, 0xfa, 0x2c, 0x01, 0x00, 0x01, 0xc2, 0xff, 0xff, 0xff, 0xf0
        ]));
    }
}
