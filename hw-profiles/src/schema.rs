//! The profile type tree: one set of serde types for the TOML file, the detector, the tuner
//! and the binary, with `deny_unknown_fields` everywhere so a misspelt key is an error and
//! not a silently ignored setting.
//!
//! This module owns parsing, loading, serializing and the embedded default profile. It does
//! not check values beyond what serde checks: that is [`crate::validate`], which `load` and
//! `from_str` call before returning.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;

/// The default profile, compiled in; used when no profile file is given.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../profiles/default.toml");

/// A hardware profile: what the dataplane should use on one kind of machine, and what it
/// promises to reach there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short identifier (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Free text for operators.
    #[serde(default)]
    pub description: String,
    /// `true` for a profile written from published figures for hardware the project has
    /// not measured; such a profile is a starting point, not a certified configuration.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub example: bool,
    /// CPU and worker placement.
    pub cpu: Cpu,
    /// Network interface.
    pub nic: Nic,
    /// AF_XDP rings and UMEM.
    pub rings: Rings,
    /// Transfer engine settings.
    pub transfer: Transfer,
    /// Performance floors the bench harness checks.
    pub targets: Targets,
    /// How and when the tuner chose the values (absent when the profile was written by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<Tuning>,
    /// What tuning measured (written by the tuner; empty when the profile was written by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
}

/// Provenance of a tuned profile (`[tuning]`): the sweep that chose its values. The points
/// themselves are in `[[measurements]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// When the sweep ran (RFC 3339, UTC).
    pub date: String,
    /// The `dwcp-hw tune` command line.
    pub command: String,
    /// Machine: CPU model, CPUs, kernel.
    pub host: String,
    /// Load averages (1, 5, 15 min) at the start and end of the sweep.
    pub load: String,
    /// Repetitions per point (each point's figure is their median).
    pub repeats: u32,
    /// Free text: caveats (e.g. measured while the machine was busy).
    #[serde(default)]
    pub note: String,
}

/// SIMD instruction level the kernels may use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum SimdLevel {
    /// Portable code only.
    #[default]
    Scalar,
    /// AVX2 (x86-64-v3).
    Avx2,
    /// AVX-512 foundation (x86-64-v4).
    Avx512,
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        })
    }
}

/// CPU and worker placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// CPU model name as `/proc/cpuinfo` reports it; `"any"` for portable profiles.
    #[serde(default = "any")]
    pub model: String,
    /// Highest SIMD level the kernels may use.
    pub simd: SimdLevel,
    /// Logical CPU ids of the pinned polling workers (one worker per NIC queue).
    pub worker_cores: Vec<u32>,
    /// NUMA node of each worker core, same order and length as `worker_cores`.
    pub numa_nodes: Vec<u32>,
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode (`xdpdrv`).
    Native,
    /// Generic mode (`xdpgeneric`, after the skb is built; works on any interface).
    Generic,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// Network interface settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Interface name; absent: given at run time (e.g. `--iface`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Expected kernel driver (`ethtool -i`); `"any"` skips the check.
    #[serde(default = "any")]
    pub driver: String,
    /// NIC queues used (one AF_XDP socket and one worker per queue).
    pub queues: u32,
    /// IP MTU in bytes.
    pub mtu: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Bind AF_XDP sockets in zero-copy mode.
    pub zero_copy: bool,
}

/// AF_XDP rings and UMEM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rings {
    /// Entries in each of the fill, completion, rx and tx rings.
    pub ring_size: u32,
    /// UMEM frames per socket (half receive, half transmit).
    pub umem_frames: u32,
    /// Bytes per UMEM frame.
    pub frame_size: u32,
    /// Descriptors moved per ring batch.
    pub batch_size: u32,
    /// Back the UMEM with hugepages.
    pub hugepages: bool,
    /// Bind with `XDP_USE_SG` so a packet may span several frames (needed above one frame).
    pub multi_buffer: bool,
}

/// Transfer engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Streams a transfer starts with.
    pub streams_initial: u16,
    /// Most streams a transfer may grow to.
    pub streams_max: u16,
    /// Raw object bytes per DATA frame (shrunk further to fit the MTU).
    pub chunk_size: u32,
    /// I/O backend: AF_XDP, UDP sockets (GSO/GRO), or AF_XDP with UDP as fallback.
    #[serde(default, skip_serializing_if = "BackendKind::is_auto")]
    pub backend: BackendKind,
}

/// The dataplane I/O backend a profile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// AF_XDP when it can be opened, else UDP sockets.
    #[default]
    Auto,
    /// AF_XDP only.
    Afxdp,
    /// UDP sockets with GSO/GRO only.
    Udp,
}

impl BackendKind {
    /// Every backend, in sweep order.
    pub const ALL: [BackendKind; 3] = [Self::Auto, Self::Afxdp, Self::Udp];

    /// Name as written in the TOML file and on `dwcp --backend`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Afxdp => "afxdp",
            Self::Udp => "udp",
        }
    }

    /// Parses [`BackendKind::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    fn is_auto(&self) -> bool {
        *self == Self::Auto
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Performance floors checked by the bench harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Minimum frames per second with 64-byte payloads, whole appliance.
    pub min_pps_64b: u64,
    /// Minimum payload throughput in Gbit/s with 1400-byte payloads.
    pub min_gbps_1400b: f64,
    /// Minimum goodput on the emulated WAN as a fraction of the emulated link rate (0..=1).
    pub min_wan_goodput_fraction: f64,
    /// Where the figures come from (measurement command, publication, or how a conservative floor was derived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One point a tuning sweep measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    /// Dotted name of the parameter varied, e.g. `rings.batch_size`.
    pub parameter: String,
    /// The value it had (a number, or a name such as a backend).
    pub value: ParamValue,
    /// Figure of merit: the median of `samples`.
    pub figure: f64,
    /// Unit of `figure` and `samples`, e.g. `pps`.
    #[serde(default)]
    pub unit: String,
    /// Every repetition, in the order measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
    /// Whether the sweep kept this value.
    #[serde(default)]
    pub chosen: bool,
    /// The command (or description of it) that produced the figure.
    pub command: String,
}

/// A swept parameter's value: a number (sizes, counts) or a name (backend).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A number.
    Int(u64),
    /// A name.
    Name(String),
}

impl From<u64> for ParamValue {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        Self::Name(v.to_string())
    }
}

impl PartialEq<u64> for ParamValue {
    fn eq(&self, other: &u64) -> bool {
        matches!(self, Self::Int(v) if v == other)
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

fn any() -> String {
    "any".to_string()
}

impl Profile {
    /// Parses and validates (schema only, not against the host) a profile.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Result<Self, ProfileError> {
        let p = Self::parse_unchecked(text)
            .map_err(|source| ProfileError::Parse { path: None, source })?;
        p.validate()?;
        Ok(p)
    }

    /// Reads, parses and validates (schema only) a profile file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let p = Self::parse_unchecked(&text).map_err(|source| ProfileError::Parse {
            path: Some(path.to_path_buf()),
            source,
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Parses without the checks of [`Profile::validate`] (serde's checks still apply).
    pub fn parse_unchecked(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The profile as TOML text.
    pub fn to_toml(&self) -> Result<String, ProfileError> {
        toml::to_string_pretty(self).map_err(|source| ProfileError::Serialize { source })
    }

    /// The compiled-in default profile (`profiles/default.toml`).
    pub fn embedded_default() -> Self {
        Self::from_str(EMBEDDED_DEFAULT_TOML)
            .expect("profiles/default.toml is valid (checked by the crate's tests)")
    }

    /// The profile at `path`, or the embedded default when `path` is `None`.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ProfileError> {
        match path {
            Some(p) => Self::load(p),
            None => Ok(Self::embedded_default()),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::from_str(s)
    }
}
