//! Multi-Node submissions as users write them: split per role, planned, placed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::multinode::fuzz::multinode_split(data);
});
