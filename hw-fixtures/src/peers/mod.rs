//! Harnesses for real peer programs, one module per program.
pub mod pdudaemon;
pub mod snmpsim;
pub mod lava_server;
