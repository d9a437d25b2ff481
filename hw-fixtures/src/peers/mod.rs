//! Harnesses for real peer programs, one module per program.
pub mod lava_coordinator;
pub mod lava_dispatcher;
