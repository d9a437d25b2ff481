//! Test shell signals.
