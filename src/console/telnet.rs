//! Telnet (RFC 854/855, option negotiation per RFC 1143) as ser2net speaks it.
//!
//! Used twice: by the ser2net client source (labd is the telnet client) and by labd's own telnet
//! listener (labd is the server and must greet exactly like ser2net, so a LAVA
//! `connection_command: telnet localhost PORT` sees the same bytes). The decoder parses bytes
//! from the network, so it is fuzzed (`fuzz/fuzz_targets/telnet_decode.rs`, [`fuzz_decode`]).

use bytes::{BufMut, BytesMut};

pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
pub const SB: u8 = 250;
pub const BRK: u8 = 243;
pub const SE: u8 = 240;

/// Telnet options labd negotiates.
pub mod opt {
    pub const BINARY: u8 = 0;
    pub const ECHO: u8 = 1;
    pub const SGA: u8 = 3;
    /// RFC 2217 COM-PORT-OPTION.
    pub const COM_PORT: u8 = 44;
}

/// What ser2net 4.3.11 sends right after accepting a `telnet` connection (observed, 18 bytes):
/// WILL SGA, DO SGA, WILL ECHO, DONT ECHO, DO BINARY, WILL BINARY.
pub const SER2NET_GREETING: [u8; 18] = [
    IAC,
    WILL,
    opt::SGA,
    IAC,
    DO,
    opt::SGA,
    IAC,
    WILL,
    opt::ECHO,
    IAC,
    DONT,
    opt::ECHO,
    IAC,
    DO,
    opt::BINARY,
    IAC,
    WILL,
    opt::BINARY,
];

/// Longest sub-negotiation payload kept; the rest is dropped so a hostile peer cannot make the
/// decoder grow without bound.
pub const MAX_SUBNEG: usize = 512;

/// A telnet command found in the stream (everything that is not data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelnetEvent {
    /// WILL/WONT/DO/DONT `option`.
    Negotiate { verb: u8, option: u8 },
    /// `IAC SB option data… IAC SE`, with doubled IACs in `data` undone.
    Subnegotiation { option: u8, data: Vec<u8> },
    /// Any other two-byte command (BRK, NOP, AYT, GA…).
    Command(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Data,
    Iac,
    Verb(u8),
    SbOption,
    SbData,
    SbIac,
}

/// Stateful decoder: separates data from telnet commands across arbitrary read boundaries.
#[derive(Debug, Default)]
pub struct Decoder {
    state: State,
    sb_option: u8,
    sb_data: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `input`, appending data bytes to `data` and commands to `events`.
    /// `IAC IAC` becomes one 0xFF; `CR NUL` is passed through untouched, as ser2net does.
    pub fn decode(&mut self, input: &[u8], data: &mut BytesMut, events: &mut Vec<TelnetEvent>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Data => {
                    // Fast path: copy the run up to the next IAC in one go.
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == IAC) {
                        Some(p) => {
                            data.put_slice(&rest[..p]);
                            self.state = State::Iac;
                            i += p + 1;
                        }
                        None => {
                            data.put_slice(rest);
                            i = input.len();
                        }
                    }
                    continue;
                }
                State::Iac => {
                    let b = input[i];
                    self.state = match b {
                        IAC => {
                            data.put_u8(IAC);
                            State::Data
                        }
                        WILL | WONT | DO | DONT => State::Verb(b),
                        SB => State::SbOption,
                        other => {
                            events.push(TelnetEvent::Command(other));
                            State::Data
                        }
                    };
                }
                State::Verb(verb) => {
                    events.push(TelnetEvent::Negotiate {
                        verb,
                        option: input[i],
                    });
                    self.state = State::Data;
                }
                State::SbOption => {
                    self.sb_option = input[i];
                    self.sb_data.clear();
                    self.state = State::SbData;
                }
                State::SbData => {
                    let b = input[i];
                    if b == IAC {
                        self.state = State::SbIac;
                    } else if self.sb_data.len() < MAX_SUBNEG {
                        self.sb_data.push(b);
                    }
                }
                State::SbIac => {
                    let b = input[i];
                    match b {
                        SE => {
                            events.push(TelnetEvent::Subnegotiation {
                                option: self.sb_option,
                                data: std::mem::take(&mut self.sb_data),
                            });
                            self.state = State::Data;
                        }
                        IAC => {
                            if self.sb_data.len() < MAX_SUBNEG {
                                self.sb_data.push(IAC);
                            }
                            self.state = State::SbData;
                        }
                        // IAC <other> inside SB is a protocol error; end the SB there (as
                        // most implementations do) and treat the byte as a command.
                        other => {
                            events.push(TelnetEvent::Subnegotiation {
                                option: self.sb_option,
                                data: std::mem::take(&mut self.sb_data),
                            });
                            events.push(TelnetEvent::Command(other));
                            self.state = State::Data;
                        }
                    }
                }
            }
            i += 1;
        }
    }
}

/// Appends `data` to `out` with every 0xFF doubled, so it survives the telnet layer.
pub fn escape_into(data: &[u8], out: &mut BytesMut) {
    let mut rest = data;
    while let Some(p) = rest.iter().position(|&b| b == IAC) {
        out.put_slice(&rest[..=p]);
        out.put_u8(IAC);
        rest = &rest[p + 1..];
    }
    out.put_slice(rest);
}

/// `IAC SB option payload IAC SE`, doubling IACs inside the payload.
pub fn subnegotiation(option: u8, payload: &[u8], out: &mut BytesMut) {
    out.put_slice(&[IAC, SB, option]);
    escape_into(payload, out);
    out.put_slice(&[IAC, SE]);
}

/// One side's view of an option (RFC 1143 without the queue bits; labd never asks to turn an
/// option off, so there is no WantNo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Q {
    #[default]
    No,
    Yes,
    WantYes,
}

/// Option negotiation that never loops: it answers requests, stays quiet on acknowledgements,
/// and refuses options it does not support.
#[derive(Debug, Clone)]
pub struct Negotiator {
    /// Options we agree to perform ourselves (answer DO with WILL).
    local_ok: Vec<u8>,
    /// Options we agree the peer performs (answer WILL with DO).
    remote_ok: Vec<u8>,
    local: [Q; 256],
    remote: [Q; 256],
}

impl Negotiator {
    pub fn new(local_ok: &[u8], remote_ok: &[u8]) -> Self {
        Self {
            local_ok: local_ok.to_vec(),
            remote_ok: remote_ok.to_vec(),
            local: [Q::No; 256],
            remote: [Q::No; 256],
        }
    }

    /// The policy of labd's telnet listener, after it sent [`SER2NET_GREETING`]: same options
    /// as ser2net's plain `telnet` accepter, which answers `WILL COM-PORT` with `DONT`.
    pub fn ser2net_server() -> Self {
        let mut n = Self::new(
            &[opt::SGA, opt::ECHO, opt::BINARY],
            &[opt::SGA, opt::BINARY],
        );
        n.local[opt::SGA as usize] = Q::WantYes;
        n.remote[opt::SGA as usize] = Q::WantYes;
        n.local[opt::ECHO as usize] = Q::WantYes;
        n.remote[opt::BINARY as usize] = Q::WantYes;
        n.local[opt::BINARY as usize] = Q::WantYes;
        n
    }

    /// The policy of labd as a client of ser2net: binary both ways, suppress-go-ahead, the
    /// server echoes; COM-PORT-OPTION when RFC 2217 is wanted.
    pub fn ser2net_client(rfc2217: bool) -> Self {
        let mut local = vec![opt::SGA, opt::BINARY];
        if rfc2217 {
            local.push(opt::COM_PORT);
        }
        Self::new(&local, &[opt::SGA, opt::ECHO, opt::BINARY])
    }

    /// Asks to enable a local option (sends WILL) unless it is on or pending.
    pub fn offer_local(&mut self, option: u8, out: &mut BytesMut) {
        let q = &mut self.local[option as usize];
        if *q == Q::No {
            *q = Q::WantYes;
            out.put_slice(&[IAC, WILL, option]);
        }
    }

    pub fn local_enabled(&self, option: u8) -> bool {
        self.local[option as usize] == Q::Yes
    }

    pub fn remote_enabled(&self, option: u8) -> bool {
        self.remote[option as usize] == Q::Yes
    }

    /// Whether the peer refused (or turned off) a local option we offered.
    pub fn local_refused(&self, option: u8) -> bool {
        self.local[option as usize] == Q::No
    }

    /// Reacts to one WILL/WONT/DO/DONT from the peer, appending any answer to `out`.
    pub fn handle(&mut self, verb: u8, option: u8, out: &mut BytesMut) {
        let i = option as usize;
        match verb {
            WILL => {
                let ok = self.remote_ok.contains(&option);
                self.remote[i] = match self.remote[i] {
                    Q::No if ok => {
                        out.put_slice(&[IAC, DO, option]);
                        Q::Yes
                    }
                    Q::No => {
                        out.put_slice(&[IAC, DONT, option]);
                        Q::No
                    }
                    Q::Yes | Q::WantYes => Q::Yes,
                };
            }
            WONT => {
                self.remote[i] = match self.remote[i] {
                    Q::Yes => {
                        out.put_slice(&[IAC, DONT, option]);
                        Q::No
                    }
                    _ => Q::No,
                };
            }
            DO => {
                let ok = self.local_ok.contains(&option);
                self.local[i] = match self.local[i] {
                    Q::No if ok => {
                        out.put_slice(&[IAC, WILL, option]);
                        Q::Yes
                    }
                    Q::No => {
                        out.put_slice(&[IAC, WONT, option]);
                        Q::No
                    }
                    Q::Yes | Q::WantYes => Q::Yes,
                };
            }
            DONT => {
                self.local[i] = match self.local[i] {
                    Q::Yes => {
                        out.put_slice(&[IAC, WONT, option]);
                        Q::No
                    }
                    _ => Q::No,
                };
            }
            _ => {}
        }
    }
}

/// Fuzz entry point: decoding must never panic, must not depend on how the input is split,
/// and data escaped with [`escape_into`] must decode back to itself.
pub fn fuzz_decode(input: &[u8]) {
    let mut whole_data = BytesMut::new();
    let mut whole_events = Vec::new();
    Decoder::new().decode(input, &mut whole_data, &mut whole_events);

    let split = input.first().map_or(0, |&b| b as usize % (input.len() + 1));
    let mut d = Decoder::new();
    let mut data = BytesMut::new();
    let mut events = Vec::new();
    d.decode(&input[..split], &mut data, &mut events);
    d.decode(&input[split..], &mut data, &mut events);
    assert_eq!(whole_data, data, "decoded data depends on the split");
    assert_eq!(whole_events, events, "decoded events depend on the split");

    let mut escaped = BytesMut::new();
    escape_into(input, &mut escaped);
    let mut round = BytesMut::new();
    let mut no_events = Vec::new();
    Decoder::new().decode(&escaped, &mut round, &mut no_events);
    assert_eq!(&round[..], input, "escape/decode round trip");
    assert!(no_events.is_empty());

    let mut server = Negotiator::ser2net_server();
    let mut client = Negotiator::ser2net_client(true);
    let mut out = BytesMut::new();
    for e in &whole_events {
        if let TelnetEvent::Negotiate { verb, option } = e {
            server.handle(*verb, *option, &mut out);
            client.handle(*verb, *option, &mut out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> (Vec<u8>, Vec<TelnetEvent>) {
        let mut d = Decoder::new();
        let mut data = BytesMut::new();
        let mut events = Vec::new();
        for c in chunks {
            d.decode(c, &mut data, &mut events);
        }
        (data.to_vec(), events)
    }

    #[test]
    fn data_with_doubled_iac_and_commands() {
        let (data, events) = decode_all(&[b"ab\xff\xffc\xff\xfb\x03d\xff\xf3e"]);
        assert_eq!(data, b"ab\xffcde");
        assert_eq!(
            events,
            vec![
                TelnetEvent::Negotiate {
                    verb: WILL,
                    option: opt::SGA
                },
                TelnetEvent::Command(BRK)
            ]
        );
    }

    #[test]
    fn split_anywhere_gives_the_same_result() {
        let input: &[u8] = b"x\xff\xfa\x2c\x65\x00\x00\x25\x80\xff\xf0y\xff\xffz\xff\xfd\x00";
        let whole = decode_all(&[input]);
        for cut in 0..=input.len() {
            assert_eq!(
                decode_all(&[&input[..cut], &input[cut..]]),
                whole,
                "cut {cut}"
            );
        }
        assert_eq!(whole.0, b"xy\xffz");
        assert_eq!(
            whole.1[0],
            TelnetEvent::Subnegotiation {
                option: opt::COM_PORT,
                data: vec![0x65, 0, 0, 0x25, 0x80]
            }
        );
    }

    #[test]
    fn cr_nul_passes_through_like_ser2net() {
        assert_eq!(decode_all(&[b"a\r\0b\r\n"]).0, b"a\r\0b\r\n");
    }

    #[test]
    fn escape_doubles_iac() {
        let mut out = BytesMut::new();
        escape_into(b"\xff\x00\xff\xff", &mut out);
        assert_eq!(&out[..], b"\xff\xff\x00\xff\xff\xff\xff");
    }

    #[test]
    fn client_answers_ser2net_greeting_once() {
        let mut n = Negotiator::ser2net_client(false);
        let (_, events) = decode_all(&[&SER2NET_GREETING]);
        let mut out = BytesMut::new();
        for e in &events {
            if let TelnetEvent::Negotiate { verb, option } = e {
                n.handle(*verb, *option, &mut out);
            }
        }
        assert_eq!(
            &out[..],
            &[
                IAC,
                DO,
                opt::SGA,
                IAC,
                WILL,
                opt::SGA,
                IAC,
                DO,
                opt::ECHO,
                IAC,
                WILL,
                opt::BINARY,
                IAC,
                DO,
                opt::BINARY
            ]
        );
        // Repeating the greeting (acknowledgements) must not produce more traffic.
        let mut again = BytesMut::new();
        for e in &events {
            if let TelnetEvent::Negotiate { verb, option } = e {
                n.handle(*verb, *option, &mut again);
            }
        }
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn server_refuses_com_port_like_plain_ser2net() {
        let mut n = Negotiator::ser2net_server();
        let mut out = BytesMut::new();
        n.handle(WILL, opt::COM_PORT, &mut out);
        assert_eq!(&out[..], &[IAC, DONT, opt::COM_PORT]);
        out.clear();
        // Acknowledgements of the greeting are silent.
        n.handle(DO, opt::SGA, &mut out);
        n.handle(WILL, opt::BINARY, &mut out);
        n.handle(DO, opt::ECHO, &mut out);
        assert!(out.is_empty());
        assert!(n.local_enabled(opt::ECHO));
    }

    #[test]
    fn fuzz_seeds() {
        for seed in [
            &b""[..],
            b"\xff",
            b"\xff\xfa",
            b"\xff\xfa\x2c\xff",
            b"\x05\xff\xfb\x2c\xff\xff\xff\xfa\x01\xff\x01\xff\xf0",
            &SER2NET_GREETING,
        ] {
            fuzz_decode(seed);
        }
        fuzz_decode(&[0xff; 700]);
        let mut long_sb = vec![IAC, SB, 44];
        long_sb.extend(std::iter::repeat_n(7u8, 2000));
        fuzz_decode(&long_sb);
    }
}
