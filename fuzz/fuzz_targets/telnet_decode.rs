//! The telnet decoder parses bytes from ser2net and from telnet listener clients.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    labd::console::telnet::fuzz_decode(data);
});
