//! Harnesses for real peer programs, one module per program.
pub mod lava_server;
