//! Every parser of what a LAVA master sends the worker (ping answer, job payload, log
//! acknowledgement, registration answer, error bodies) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::master::wire::fuzz_server_answer(data);
});
