//! Placeholder.
#![forbid(unsafe_code)]

pub mod demo;
pub mod files;
pub mod io;
pub mod runner;
pub mod session;
pub mod worker;
