//! Console output scanned for test-shell signals.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| labd::jobs::signals::fuzz_signal_stream(data));
