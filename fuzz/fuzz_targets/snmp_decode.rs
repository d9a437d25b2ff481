//! SNMP v1/v2c message decoding (what labd's SNMP PDU driver parses from the network): never
//! panics, and whatever decodes re-encodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::power::snmp::fuzz_decode(data);
});
