//! What `labd run-job` reads back from the daemon over the control socket (reply head, then
//! the job's or the group's stream lines), on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    labd::jobs::runner::service::fuzz_reply_stream(data);
});
