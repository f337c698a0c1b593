//! Certification: a defined suite of datacenter and WAN cases with every peer side by side
//! (dwcp transfers, iperf3 TCP cubic/bbr, the dataplane's framed AF_XDP loop, a bare AF_XDP
//! loop, UDP sockets with and without GSO/GRO), repeated, summarised as min / median / max
//! with CPU seconds per GB, judged against the targets of a hardware profile, and written as
//! JSON, Markdown and SVG plots.
//!
//! - [`suite`]: what is measured ([`Suite::quick`] for CI, [`Suite::full`] for operators);
//! - [`run`]: runs a suite in the lab and returns a [`Report`];
//! - [`report`]: the report's type tree (JSON schema `dwcp-certify/1`), pass/fail rules
//!   and Markdown;
//! - [`plot`]: the SVG plots.
//!
//! Does not: tune (the `dwcp-hw tune` command does, through `dwcp-lab measure`), or decide
//! targets (they come from the profile).

pub mod plot;
pub mod report;
pub mod run;
pub mod suite;

pub use report::{Check, Outcome, Report, Verdict};
pub use run::{RunOptions, run_suite};
pub use suite::Suite;
