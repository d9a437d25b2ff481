//! Harnesses for real peer programs, one module per program.
pub mod ser2net;
pub mod socat;
