//! The LAVA job log: one YAML flow mapping per line (`{"dt": ..., "lvl": ..., "msg": ...}`),
//! byte-compatible with lava-dispatcher's `lava_common/log.py`, its parser, and the target-line
//! logger that turns console output into `lvl: target` records (`ShellLogger`).

mod emit;
mod parse;
mod record;
mod target;
mod value;

pub use emit::{emit_str, emit_value, python_float_repr, yaml_float};
pub use parse::{LogParseError, fuzz_log_line, parse_line, parse_upload};
pub use record::{
    Level, LogRecord, LogSink, LogWriter, MAX_LINE_LEN, MarkerKind, format_dt, utc_now,
};
pub use target::TargetLineLogger;
pub use value::LogValue;
