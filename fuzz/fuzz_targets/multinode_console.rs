//! Multi-Node requests in DUT console output (the dispatcher's regex and split rules).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::multinode::fuzz::multinode_console(data);
});
