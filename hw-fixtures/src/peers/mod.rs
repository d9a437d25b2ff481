//! Harnesses for real peer programs, one module per program.
