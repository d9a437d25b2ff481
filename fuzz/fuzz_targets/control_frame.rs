//! Attach-session frames and request lines come from any local user in the socket's group.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    labd::control::frame::fuzz_decode(data);
    labd::control::fuzz_request_line(data);
});
