//! The zt tunnel wire protocol.
//!
//! This crate is not written yet; see the project's issues.
