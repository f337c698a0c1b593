//! Userspace mirrors of the XDP program's maps: the configuration record, the counter
//! indices (with stable metric names) and the summed counter snapshot.
//!
//! Owns: the byte layout shared with `xdp/dwcp_xdp.c` (kept in step by the size and
//! encoding tests below and by docs/xdp.md). Does not: touch the kernel; the loader in
//! [`crate::loader`] reads and writes the maps.
//!
//! The configuration is written to the kernel as its byte encoding ([`Config::to_bytes`])
//! rather than by casting the struct, so this crate needs no `unsafe` to implement aya's
//! `Pod` trait.

use std::fmt;

/// Number of DWCP UDP ports the program can match (`DWCP_MAX_PORTS` in the C source).
pub const MAX_PORTS: usize = 4;
/// Number of entries in the XSKMAP: receive queues 0..MAX_QUEUES can have a socket.
pub const MAX_QUEUES: u32 = 64;
/// Default DWCP UDP port.
pub const DEFAULT_PORT: u16 = 7470;

/// Names of the maps and the program in the object file.
pub mod names {
    /// XDP program (section `xdp.frags`).
    pub const PROGRAM: &str = "dwcp_xdp";
    /// `BPF_MAP_TYPE_ARRAY`, one [`super::Config`].
    pub const CONFIG: &str = "dwcp_config";
    /// `BPF_MAP_TYPE_XSKMAP`, rx queue index -> AF_XDP socket.
    pub const XSKS: &str = "dwcp_xsks";
    /// `BPF_MAP_TYPE_DEVMAP`, entry 0 = relay egress interface.
    pub const RELAY: &str = "dwcp_relay";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` of `u64`, indexed by [`super::Counter`].
    pub const COUNTERS: &str = "dwcp_counters";
}

/// `Config::flags` bit: relay mode (DWCP frames go to the DEVMAP entry 0, not to sockets).
pub const CFG_RELAY: u32 = 1 << 0;

/// The program's configuration record (`struct dwcp_config`, entry 0 of `dwcp_config`).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 2 x 4 | `ports`: DWCP UDP ports, host byte order, 0 = unused slot |
/// | 8 | 4 | `flags`: [`CFG_RELAY`] |
/// | 12 | 4 | `reserved`: 0 |
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// DWCP UDP ports in host byte order; 0 marks an unused slot.
    pub ports: [u16; MAX_PORTS],
    /// `CFG_*` bits.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// Size of [`Config`] in bytes, as the kernel map's value size.
pub const CONFIG_SIZE: usize = std::mem::size_of::<Config>();
const _: () = assert!(CONFIG_SIZE == 16);

impl Config {
    /// The record in the host's byte order, exactly as `struct dwcp_config` lays it out.
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        for (i, p) in self.ports.iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&p.to_ne_bytes());
        }
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[12..16].copy_from_slice(&self.reserved.to_ne_bytes());
        b
    }

    /// Parses the host-byte-order record (inverse of [`Config::to_bytes`]).
    pub fn from_bytes(b: &[u8; CONFIG_SIZE]) -> Self {
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Self {
            ports: [u16_at(0), u16_at(2), u16_at(4), u16_at(6)],
            flags: u32_at(8),
            reserved: u32_at(12),
        }
    }
}

/// Index of a per-CPU counter in `dwcp_counters` (`enum dwcp_counter` in the C source).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Valid DWCP frames redirected to an AF_XDP socket.
    RedirectedPackets = 0,
    /// Bytes of those frames (whole L2 frame, all fragments of a multi-buffer frame).
    RedirectedBytes = 1,
    /// Frames not addressed to a DWCP port (or not UDP/IP at all), passed to the stack.
    Pass = 2,
    /// To a DWCP port, but the UDP payload cannot hold a 48-byte header.
    DropTooShort = 3,
    /// To a DWCP port, magic is not 0xDC57.
    DropBadMagic = 4,
    /// To a DWCP port, version is neither 1 nor 3.
    DropBadVersion = 5,
    /// To a DWCP port, unknown frame type.
    DropBadType = 6,
    /// To a DWCP port, unknown flag bits or non-zero reserved bytes.
    DropReservedBits = 7,
    /// To a DWCP port, 48 + payload length + trailer differs from the UDP payload length,
    /// or the UDP length exceeds the IP payload or the received bytes.
    DropBadLength = 8,
    /// Valid DWCP frame, but no socket registered for its rx queue: passed to the stack.
    NoSocket = 9,
    /// Relay mode: valid DWCP frames redirected to the relay interface.
    RelayedPackets = 10,
    /// Relay mode: bytes of those frames.
    RelayedBytes = 11,
    /// Relay mode: no relay interface in the DEVMAP, frame passed to the stack.
    RelayNoTarget = 12,
}

/// Number of counters (`DWCP_C_COUNT`).
pub const COUNTER_COUNT: usize = 13;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_COUNT] = [
        Counter::RedirectedPackets,
        Counter::RedirectedBytes,
        Counter::Pass,
        Counter::DropTooShort,
        Counter::DropBadMagic,
        Counter::DropBadVersion,
        Counter::DropBadType,
        Counter::DropReservedBits,
        Counter::DropBadLength,
        Counter::NoSocket,
        Counter::RelayedPackets,
        Counter::RelayedBytes,
        Counter::RelayNoTarget,
    ];

    /// Index in the per-CPU array.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name, used as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::RedirectedPackets => "redirected_packets",
            Counter::RedirectedBytes => "redirected_bytes",
            Counter::Pass => "pass",
            Counter::DropTooShort => "drop_too_short",
            Counter::DropBadMagic => "drop_bad_magic",
            Counter::DropBadVersion => "drop_bad_version",
            Counter::DropBadType => "drop_bad_type",
            Counter::DropReservedBits => "drop_reserved_bits",
            Counter::DropBadLength => "drop_bad_length",
            Counter::NoSocket => "no_socket",
            Counter::RelayedPackets => "relayed_packets",
            Counter::RelayedBytes => "relayed_bytes",
            Counter::RelayNoTarget => "relay_no_target",
        }
    }

    /// Whether this counter counts dropped malformed frames.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DropTooShort
                | Counter::DropBadMagic
                | Counter::DropBadVersion
                | Counter::DropBadType
                | Counter::DropReservedBits
                | Counter::DropBadLength
        )
    }

    /// The counter with this name, if any.
    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A snapshot of all counters, each summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    values: [u64; COUNTER_COUNT],
}

impl Counters {
    /// Builds a snapshot from per-counter totals in index order.
    pub const fn from_values(values: [u64; COUNTER_COUNT]) -> Self {
        Self { values }
    }

    /// Value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// `(name, value)` for every counter, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.iter().map(|c| (c.name(), self.get(*c)))
    }

    /// Sum of all drop counters.
    pub fn dropped(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|c| self.get(*c))
            .sum()
    }

    /// Per-counter difference `self - earlier` (saturating), for counting what happened
    /// between two snapshots.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut values = [0u64; COUNTER_COUNT];
        for (i, v) in values.iter_mut().enumerate() {
            *v = self.values[i].saturating_sub(earlier.values[i]);
        }
        Counters { values }
    }
}

impl std::ops::Index<Counter> for Counters {
    type Output = u64;
    fn index(&self, c: Counter) -> &u64 {
        &self.values[c as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense_and_match_all() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i, "{c}");
            assert_eq!(Counter::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn counter_enum_matches_c_source() {
        let src = include_str!("../xdp/dwcp_xdp.c");
        for c in Counter::ALL {
            let cname = format!("DWCP_C_{} = {},", c.name().to_uppercase(), c.index());
            assert!(src.contains(&cname), "C source lacks `{cname}`");
        }
        assert!(src.contains(&format!("DWCP_C_COUNT = {COUNTER_COUNT},")));
        assert!(src.contains(&format!("#define DWCP_MAX_PORTS {MAX_PORTS}\n")));
        assert!(src.contains(&format!("#define DWCP_MAX_QUEUES {MAX_QUEUES}\n")));
    }

    #[test]
    fn config_bytes_round_trip_and_layout() {
        let c = Config {
            ports: [7470, 0, 9000, 1],
            flags: CFG_RELAY,
            reserved: 0,
        };
        let b = c.to_bytes();
        assert_eq!(&b[0..2], &7470u16.to_ne_bytes());
        assert_eq!(&b[4..6], &9000u16.to_ne_bytes());
        assert_eq!(&b[8..12], &1u32.to_ne_bytes());
        assert_eq!(Config::from_bytes(&b), c);
    }

    #[test]
    fn counters_since_and_dropped() {
        let mut a = [0u64; COUNTER_COUNT];
        a[Counter::DropBadMagic as usize] = 5;
        a[Counter::DropBadLength as usize] = 2;
        a[Counter::Pass as usize] = 9;
        let later = Counters::from_values(a);
        let mut e = [0u64; COUNTER_COUNT];
        e[Counter::DropBadMagic as usize] = 1;
        let d = later.since(&Counters::from_values(e));
        assert_eq!(d[Counter::DropBadMagic], 4);
        assert_eq!(d.dropped(), 6);
        assert_eq!(d.iter().count(), COUNTER_COUNT);
    }
}
