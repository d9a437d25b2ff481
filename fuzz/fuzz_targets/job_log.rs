//! LAVA log lines read back (from labd's own files or a master double).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| labd::jobs::log::fuzz_log_line(data));
