//! Coordinator frames: header, body, Python-exact JSON and the state machine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::multinode::fuzz::coordinator_frame(data);
});
