//! Inventory files (TOML written by lab admins; also reloaded on SIGHUP).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| labd::inventory::fuzz_inventory(data));
