//! Typed errors of the crate: [`ProfileError`] for loading and saving a profile, [`Problem`]
//! for one thing wrong with a profile's values (each names the dotted field it is about),
//! [`DetectError`] for reading the host.
//!
//! This module only defines the types; the checks live in [`crate::validate`].

use std::path::PathBuf;

use crate::schema::SimdLevel;

/// Loading, parsing, validating or writing a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("reading profile {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a profile (TOML syntax, unknown or missing field, wrong type).
    #[error("parsing profile{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// Cause; its message names the key and the line.
        #[source]
        source: toml::de::Error,
    },
    /// The profile could not be written as TOML.
    #[error("serializing profile")]
    Serialize {
        /// Cause.
        #[source]
        source: toml::ser::Error,
    },
    /// The host could not be read while validating against it.
    #[error("reading this host")]
    Detect {
        /// Cause.
        #[source]
        source: DetectError,
    },
    /// The profile parsed but some values break the rules.
    #[error("profile {name:?} is invalid: {}", join(problems))]
    Invalid {
        /// The profile's name.
        name: String,
        /// Every problem found (at least one).
        problems: Vec<Problem>,
    },
}

impl ProfileError {
    /// The problems, when this is [`ProfileError::Invalid`].
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One thing wrong with a profile. `field` is the dotted TOML path, e.g. `rings.ring_size`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// A value that must be a power of two is not.
    #[error("{field}: {value} is not a power of two")]
    NotPowerOfTwo {
        /// Field.
        field: &'static str,
        /// Value found.
        value: u64,
    },
    /// An integer outside its allowed range.
    #[error("{field}: {value} is outside {min}..={max}")]
    OutOfRange {
        /// Field.
        field: &'static str,
        /// Value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A number that is not finite or outside its allowed range.
    #[error("{field}: {value} is not a finite number in {min}..={max}")]
    NumberOutOfRange {
        /// Field.
        field: &'static str,
        /// Value found.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// A frame size other than 2048 or 4096 (the sizes AF_XDP accepts for a UMEM chunk here).
    #[error("{field}: {value} must be 2048 or 4096")]
    FrameSize {
        /// Field.
        field: &'static str,
        /// Value found.
        value: u32,
    },
    /// A value larger than another field allows.
    #[error("{field}: {value} exceeds {limit_field} = {limit}")]
    Exceeds {
        /// Field.
        field: &'static str,
        /// Value found.
        value: u64,
        /// The field that bounds it.
        limit_field: &'static str,
        /// That field's value (or the bound derived from it).
        limit: u64,
    },
    /// A value that must not be empty is.
    #[error("{field}: must not be empty")]
    Empty {
        /// Field.
        field: &'static str,
    },
    /// A string that does not have the required form.
    #[error("{field}: {value:?} {reason}")]
    BadString {
        /// Field.
        field: &'static str,
        /// Value found.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A core listed twice.
    #[error("{field}: core {core} is listed more than once")]
    DuplicateCore {
        /// Field.
        field: &'static str,
        /// The core.
        core: u32,
    },
    /// Two lists that must have the same length do not.
    #[error("{field}: has {len} entries, {other} has {expected}")]
    LengthMismatch {
        /// Field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The field it must match.
        other: &'static str,
        /// That field's length.
        expected: usize,
    },
    /// Settings that cannot go together.
    #[error("{field}: {reason}")]
    Conflict {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A worker core that is not online on this host.
    #[error("{field}: core {core} is not online on this host (online: {online})")]
    CoreNotOnline {
        /// Field.
        field: &'static str,
        /// The core.
        core: u32,
        /// The host's online list, as in `/sys/devices/system/cpu/online`.
        online: String,
    },
    /// A NUMA node that does not match the host's topology.
    #[error(
        "{field}: core {core} is on NUMA node {host_node} on this host, the profile says {profile_node}"
    )]
    NumaMismatch {
        /// Field.
        field: &'static str,
        /// The core.
        core: u32,
        /// Node in the profile.
        profile_node: u32,
        /// Node on the host.
        host_node: u32,
    },
    /// A SIMD level this CPU lacks.
    #[error("{field}: {wanted} is not supported by this CPU (it has {host})")]
    SimdUnsupported {
        /// Field.
        field: &'static str,
        /// Level in the profile.
        wanted: SimdLevel,
        /// Best level of the host.
        host: SimdLevel,
    },
    /// Hugepages requested but not enough are free.
    #[error(
        "{field}: the UMEM needs {needed_kib} KiB of hugepages, {free_kib} KiB are free (set /proc/sys/vm/nr_hugepages)"
    )]
    HugepagesUnavailable {
        /// Field.
        field: &'static str,
        /// KiB needed by all workers' UMEMs.
        needed_kib: u64,
        /// KiB of free hugepages.
        free_kib: u64,
    },
    /// The profile's interface is not visible in this network namespace.
    #[error("{field}: interface {name:?} not found in this network namespace ({detail})")]
    InterfaceMissing {
        /// Field.
        field: &'static str,
        /// Interface name.
        name: String,
        /// What the lookup said.
        detail: String,
    },
    /// A value that differs from what the host has.
    #[error("{field}: the profile says {profile}, the host has {host}")]
    HostMismatch {
        /// Field.
        field: &'static str,
        /// Value in the profile.
        profile: String,
        /// Value on the host.
        host: String,
    },
}

impl Problem {
    /// The dotted field the problem is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::NotPowerOfTwo { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::NumberOutOfRange { field, .. }
            | Self::FrameSize { field, .. }
            | Self::Exceeds { field, .. }
            | Self::Empty { field }
            | Self::BadString { field, .. }
            | Self::DuplicateCore { field, .. }
            | Self::LengthMismatch { field, .. }
            | Self::Conflict { field, .. }
            | Self::CoreNotOnline { field, .. }
            | Self::NumaMismatch { field, .. }
            | Self::SimdUnsupported { field, .. }
            | Self::HugepagesUnavailable { field, .. }
            | Self::InterfaceMissing { field, .. }
            | Self::HostMismatch { field, .. } => field,
        }
    }
}

/// Reading the host failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A file under /sys or /proc could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file had an unexpected form.
    #[error("parsing {}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The interface does not exist in this network namespace.
    #[error("interface {name:?} not found: {detail}")]
    NoInterface {
        /// Interface name.
        name: String,
        /// What `ip` and sysfs said.
        detail: String,
    },
}
