//! Hardware profiles for the DWCP appliance: a TOML file per kind of machine saying which
//! cores poll which NIC queues, how the AF_XDP rings and UMEM are sized, how many streams a
//! transfer uses, and which performance floors the bench harness must see there.
//!
//! - [`schema`]: the serde type tree ([`Profile`]), load / parse / serialize, the embedded
//!   default profile.
//! - [`validate`]: rules beyond serde, on any machine and against this host, reported as
//!   typed [`Problem`]s naming the field.
//! - [`detect`]: builds a profile from sysfs, procfs, `ip` and `ethtool`.
//! - [`tune`]: the sweep engine that varies parameters and records what a caller-provided
//!   measurement returns.
//! - [`harness`]: the real measurement for `dwcp-hw tune`: runs the bench harness's
//!   `dwcp-certify measure` (packet loops and dwcp transfers in a netns lab) per point.
//!
//! This crate does not apply a profile (the dataplane reads it) and does not run benchmarks
//! (the bench harness provides the measurement to [`tune::Tuner`]).
#![forbid(unsafe_code)]

pub mod detect;
pub mod error;
pub mod harness;
pub mod schema;
pub mod tune;
pub mod validate;

pub use detect::{Host, IfaceInfo, detect_profile};
pub use error::{DetectError, Problem, ProfileError};
pub use schema::{
    BackendKind, Cpu, Measurement, Nic, ParamValue, Profile, Rings, SimdLevel, Targets, Transfer,
    Tuning, XdpMode,
};
pub use tune::{Figure, Param, Sample, TuneError, TuneOutcome, Tuner};
