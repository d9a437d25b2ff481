//! DUT-side test shell.
