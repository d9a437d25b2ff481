//! A small expect engine for console streams, with pexpect's semantics as lava-dispatcher uses
//! them (`searchwindowsize=4000`, earliest match wins, `before`/`after`), and the target-line
//! logging LAVA does on the same stream.

mod buffer;
mod pattern;
mod stream;

pub use buffer::{ExpectBuffer, ExpectMatch, LAVA_SEARCH_WINDOW, Utf8Decoder};
pub use pattern::{Pattern, PatternMatch};
pub use stream::{ConsoleExpect, ExpectError, LAVA_MAXREAD, SendPlan};
