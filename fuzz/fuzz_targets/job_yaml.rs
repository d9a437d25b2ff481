//! LAVA job definitions and device configurations (YAML from a server or a user).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| labd::jobs::model::fuzz_job_yaml(data));
