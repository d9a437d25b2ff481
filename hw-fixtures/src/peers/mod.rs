//! Harnesses for real peer programs, one module per program.
pub mod httpd;
pub mod lava_coordinator;
pub mod lava_dispatcher;
pub mod lava_server;
pub mod pdudaemon;
pub mod ser2net;
pub mod snmpsim;
pub mod socat;
pub mod tinyproxy;
