//! Rules a profile must follow beyond what serde checks: schema rules that hold on any
//! machine ([`Profile::problems`]) and host rules that compare the profile with the machine it
//! runs on ([`Profile::host_problems`], [`Profile::validate_for_host`]).
//!
//! Every rule reports a [`Problem`] naming the dotted field. All problems are collected, not
//! only the first. This module does not read the host itself; [`crate::detect`] does.

use std::collections::BTreeSet;

use crate::detect::{Host, InterfaceState, format_cpulist};
use crate::error::{Problem, ProfileError};
use crate::schema::{Profile, XdpMode};

/// Smallest ring size accepted.
pub const RING_SIZE_MIN: u32 = 64;
/// Largest ring size accepted.
pub const RING_SIZE_MAX: u32 = 32_768;
/// Largest UMEM frame count per socket.
pub const UMEM_FRAMES_MAX: u32 = 1 << 20;
/// Frame sizes AF_XDP accepts for a UMEM chunk here (larger is refused with EINVAL).
pub const FRAME_SIZES: [u32; 2] = [2048, 4096];
/// Smallest MTU (IPv6 minimum).
pub const MTU_MIN: u32 = 1280;
/// Largest MTU (jumbo frames, needs multi-buffer).
pub const MTU_MAX: u32 = 9000;
/// Bytes of a frame not available to the packet: Ethernet header (14) and the XDP headroom
/// the kernel reserves in front of a packet (256).
pub const FRAME_OVERHEAD: u32 = 14 + 256;
/// Most NIC queues / workers in one profile.
pub const QUEUES_MAX: u32 = 256;
/// Most streams per transfer.
pub const STREAMS_MAX: u16 = 1024;
/// Smallest chunk.
pub const CHUNK_MIN: u32 = 256;
/// Largest chunk: the largest DWCP payload in one UDP datagram (65 536 - 48 - 16).
pub const CHUNK_MAX: u32 = 65_536 - 48 - 16;
/// Highest logical CPU id accepted.
pub const CORE_MAX: u32 = 4095;
/// Highest NUMA node id accepted.
pub const NODE_MAX: u32 = 1023;
/// Highest Gbit/s target accepted.
pub const GBPS_MAX: f64 = 1000.0;

impl Profile {
    /// Checks the schema rules (host-independent).
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.result(self.problems())
    }

    /// Checks the schema rules and compares the profile with this machine (cores online,
    /// NUMA nodes, SIMD, hugepages, and the interface as seen from this network namespace).
    pub fn validate_for_host(&self) -> Result<(), ProfileError> {
        let host = Host::detect_for(self).map_err(|source| ProfileError::Detect { source })?;
        let mut problems = self.problems();
        problems.extend(self.host_problems(&host));
        self.result(problems)
    }

    fn result(&self, problems: Vec<Problem>) -> Result<(), ProfileError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProfileError::Invalid {
                name: self.name.clone(),
                problems,
            })
        }
    }

    /// Every schema problem of the profile (empty when valid).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let p = &mut out;

        // identity
        if self.name.is_empty() {
            p.push(Problem::Empty { field: "name" });
        } else if self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            p.push(Problem::BadString {
                field: "name",
                value: self.name.clone(),
                reason: "must be 1-64 characters of A-Z a-z 0-9 - _ .",
            });
        }
        if self.example && self.targets.source.is_none() {
            p.push(Problem::Conflict {
                field: "targets.source",
                reason: "an example profile must say where its targets come from".into(),
            });
        }

        // cpu
        let cpu = &self.cpu;
        if cpu.model.trim().is_empty() {
            p.push(Problem::Empty { field: "cpu.model" });
        }
        if cpu.worker_cores.is_empty() {
            p.push(Problem::Empty {
                field: "cpu.worker_cores",
            });
        }
        let mut seen = BTreeSet::new();
        for &c in &cpu.worker_cores {
            if c > CORE_MAX {
                p.push(range("cpu.worker_cores", c.into(), 0, CORE_MAX.into()));
            }
            if !seen.insert(c) {
                p.push(Problem::DuplicateCore {
                    field: "cpu.worker_cores",
                    core: c,
                });
            }
        }
        if cpu.numa_nodes.len() != cpu.worker_cores.len() {
            p.push(Problem::LengthMismatch {
                field: "cpu.numa_nodes",
                len: cpu.numa_nodes.len(),
                other: "cpu.worker_cores",
                expected: cpu.worker_cores.len(),
            });
        }
        for &n in &cpu.numa_nodes {
            if n > NODE_MAX {
                p.push(range("cpu.numa_nodes", n.into(), 0, NODE_MAX.into()));
            }
        }

        // nic
        let nic = &self.nic;
        if let Some(ifname) = &nic.interface
            && !valid_ifname(ifname)
        {
            p.push(Problem::BadString {
                field: "nic.interface",
                value: ifname.clone(),
                reason: "is not an interface name (1-15 bytes, no '/', ':' or whitespace)",
            });
        }
        if nic.driver.trim().is_empty() {
            p.push(Problem::Empty {
                field: "nic.driver",
            });
        }
        if !(1..=QUEUES_MAX).contains(&nic.queues) {
            p.push(range("nic.queues", nic.queues.into(), 1, QUEUES_MAX.into()));
        } else if !cpu.worker_cores.is_empty() && cpu.worker_cores.len() != nic.queues as usize {
            p.push(Problem::LengthMismatch {
                field: "cpu.worker_cores",
                len: cpu.worker_cores.len(),
                other: "nic.queues (one worker per queue)",
                expected: nic.queues as usize,
            });
        }
        if !(MTU_MIN..=MTU_MAX).contains(&nic.mtu) {
            p.push(range(
                "nic.mtu",
                nic.mtu.into(),
                MTU_MIN.into(),
                MTU_MAX.into(),
            ));
        }
        if nic.zero_copy && nic.xdp_mode == XdpMode::Generic {
            p.push(Problem::Conflict {
                field: "nic.zero_copy",
                reason: "zero-copy needs nic.xdp_mode = \"native\" (generic XDP always copies)"
                    .into(),
            });
        }

        // rings
        let r = &self.rings;
        let ring_ok = r.ring_size.is_power_of_two();
        if !ring_ok {
            p.push(Problem::NotPowerOfTwo {
                field: "rings.ring_size",
                value: r.ring_size.into(),
            });
        } else if !(RING_SIZE_MIN..=RING_SIZE_MAX).contains(&r.ring_size) {
            p.push(range(
                "rings.ring_size",
                r.ring_size.into(),
                RING_SIZE_MIN.into(),
                RING_SIZE_MAX.into(),
            ));
        }
        if r.umem_frames > UMEM_FRAMES_MAX {
            p.push(range(
                "rings.umem_frames",
                r.umem_frames.into(),
                2 * u64::from(r.ring_size),
                UMEM_FRAMES_MAX.into(),
            ));
        } else if u64::from(r.umem_frames) < 2 * u64::from(r.ring_size) {
            p.push(Problem::Conflict {
                field: "rings.umem_frames",
                reason: format!(
                    "{} frames cannot fill both the fill ring and the tx ring of {} entries \
                     (need at least 2 x rings.ring_size = {})",
                    r.umem_frames,
                    r.ring_size,
                    2 * u64::from(r.ring_size)
                ),
            });
        }
        if !FRAME_SIZES.contains(&r.frame_size) {
            p.push(Problem::FrameSize {
                field: "rings.frame_size",
                value: r.frame_size,
            });
        }
        if r.batch_size == 0 {
            p.push(range("rings.batch_size", 0, 1, r.ring_size.into()));
        } else if r.batch_size > r.ring_size {
            p.push(Problem::Exceeds {
                field: "rings.batch_size",
                value: r.batch_size.into(),
                limit_field: "rings.ring_size",
                limit: r.ring_size.into(),
            });
        }
        if FRAME_SIZES.contains(&r.frame_size)
            && !r.multi_buffer
            && nic.mtu + FRAME_OVERHEAD > r.frame_size
        {
            p.push(Problem::Conflict {
                field: "nic.mtu",
                reason: format!(
                    "a {}-byte packet plus {} bytes of Ethernet header and XDP headroom does not \
                     fit a {}-byte frame: set rings.multi_buffer = true or lower the MTU",
                    nic.mtu, FRAME_OVERHEAD, r.frame_size
                ),
            });
        }

        // transfer
        let t = &self.transfer;
        if !(1..=STREAMS_MAX).contains(&t.streams_max) {
            p.push(range(
                "transfer.streams_max",
                t.streams_max.into(),
                1,
                STREAMS_MAX.into(),
            ));
        }
        if t.streams_initial == 0 {
            p.push(range(
                "transfer.streams_initial",
                0,
                1,
                t.streams_max.into(),
            ));
        } else if t.streams_initial > t.streams_max {
            p.push(Problem::Exceeds {
                field: "transfer.streams_initial",
                value: t.streams_initial.into(),
                limit_field: "transfer.streams_max",
                limit: t.streams_max.into(),
            });
        }
        if !(CHUNK_MIN..=CHUNK_MAX).contains(&t.chunk_size) {
            p.push(range(
                "transfer.chunk_size",
                t.chunk_size.into(),
                CHUNK_MIN.into(),
                CHUNK_MAX.into(),
            ));
        }

        // targets
        let g = &self.targets;
        check_number(p, "targets.min_gbps_1400b", g.min_gbps_1400b, 0.0, GBPS_MAX);
        check_number(
            p,
            "targets.min_wan_goodput_fraction",
            g.min_wan_goodput_fraction,
            0.0,
            1.0,
        );

        // measurements
        for m in &self.measurements {
            if m.parameter.trim().is_empty() {
                p.push(Problem::Empty {
                    field: "measurements.parameter",
                });
            }
            if m.command.trim().is_empty() {
                p.push(Problem::Empty {
                    field: "measurements.command",
                });
            }
            check_number(p, "measurements.figure", m.figure, f64::MIN, f64::MAX);
            for &s in &m.samples {
                check_number(p, "measurements.samples", s, f64::MIN, f64::MAX);
            }
        }
        out
    }

    /// Every problem of the profile against `host` (host rules only; see [`Profile::problems`]
    /// for the schema rules).
    pub fn host_problems(&self, host: &Host) -> Vec<Problem> {
        let mut p = Vec::new();
        let cpu = &self.cpu;
        for (i, &core) in cpu.worker_cores.iter().enumerate() {
            if !host.online_cpus.contains(&core) {
                p.push(Problem::CoreNotOnline {
                    field: "cpu.worker_cores",
                    core,
                    online: format_cpulist(&host.online_cpus),
                });
                continue;
            }
            let host_node = host.node_of(core);
            if let Some(&profile_node) = cpu.numa_nodes.get(i)
                && profile_node != host_node
            {
                p.push(Problem::NumaMismatch {
                    field: "cpu.numa_nodes",
                    core,
                    profile_node,
                    host_node,
                });
            }
        }
        if cpu.simd > host.simd {
            p.push(Problem::SimdUnsupported {
                field: "cpu.simd",
                wanted: cpu.simd,
                host: host.simd,
            });
        }
        if self.rings.hugepages {
            let needed_kib = self.umem_bytes_total() / 1024;
            let free_kib = host.hugepages.free_kib();
            if free_kib < needed_kib {
                p.push(Problem::HugepagesUnavailable {
                    field: "rings.hugepages",
                    needed_kib,
                    free_kib,
                });
            }
        }
        match (&self.nic.interface, &host.interface) {
            (Some(name), Some(InterfaceState::Missing { detail, .. })) => {
                p.push(Problem::InterfaceMissing {
                    field: "nic.interface",
                    name: name.clone(),
                    detail: detail.clone(),
                });
            }
            (Some(_), Some(InterfaceState::Found(info))) => {
                let nic = &self.nic;
                if nic.driver != "any" && nic.driver != info.driver {
                    p.push(Problem::HostMismatch {
                        field: "nic.driver",
                        profile: nic.driver.clone(),
                        host: info.driver.clone(),
                    });
                }
                if nic.mtu != info.mtu {
                    p.push(Problem::HostMismatch {
                        field: "nic.mtu",
                        profile: nic.mtu.to_string(),
                        host: info.mtu.to_string(),
                    });
                }
                let q = info.queues();
                if nic.queues > q {
                    p.push(Problem::Exceeds {
                        field: "nic.queues",
                        value: nic.queues.into(),
                        limit_field: "the interface's combined rx/tx queue count",
                        limit: q.into(),
                    });
                }
                if nic.zero_copy && crate::detect::copy_only_driver(&info.driver) {
                    p.push(Problem::Conflict {
                        field: "nic.zero_copy",
                        reason: format!(
                            "driver {} supports AF_XDP copy mode only (a zero-copy bind fails \
                             with EOPNOTSUPP)",
                            info.driver
                        ),
                    });
                }
            }
            _ => {}
        }
        p
    }

    /// UMEM bytes of all workers together (one socket per queue).
    pub fn umem_bytes_total(&self) -> u64 {
        u64::from(self.nic.queues)
            * u64::from(self.rings.umem_frames)
            * u64::from(self.rings.frame_size)
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Problem {
    Problem::OutOfRange {
        field,
        value,
        min,
        max,
    }
}

fn check_number(p: &mut Vec<Problem>, field: &'static str, value: f64, min: f64, max: f64) {
    if !value.is_finite() || value < min || value > max {
        p.push(Problem::NumberOutOfRange {
            field,
            value,
            min,
            max,
        });
    }
}

/// Whether `name` is acceptable as a Linux interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}
