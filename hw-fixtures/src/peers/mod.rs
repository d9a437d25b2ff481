//! Harnesses for real peer programs, one module per program.
pub mod httpd;
pub mod tinyproxy;
