//! udev property dumps (`udevadm info` / `udevadm monitor --property` output, support bundles):
//! parsing, identity extraction and event conversion must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::udev::props::fuzz_dump(data);
});
