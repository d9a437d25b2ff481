//! Magic-byte detection and the streaming decoders (gz, xz, bz2, zstd) over arbitrary bytes,
//! fed in data-chosen piece sizes: downloaded images are outside input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::images::fuzz::fuzz_decode(data);
});
