//! daemon (being built; see ARCHITECTURE.md for what it will own).
