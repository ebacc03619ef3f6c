//! Gateway policy for zt: lists, rules and a wirefilter-style filter expression language.
//!
//! This crate is not written yet; see the project's issues.
