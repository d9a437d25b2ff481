//! The pdudaemon-compatible listener's parsers (HTTP query, legacy TCP message): never panic.
//! (Named `snmp_*` only to stay inside the power branch's file set; it is not SNMP.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::power::listener::fuzz_parse(data);
});
