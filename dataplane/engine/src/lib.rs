//! Placeholder.
#![forbid(unsafe_code)]

pub mod io;
pub mod worker;
