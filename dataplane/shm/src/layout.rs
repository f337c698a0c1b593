//! Byte layout of the shared region: constants, header word indexes and the geometry
//! (ring sizes, worker count, flag table size) from which every offset is computed.
//!
//! Owns the numbers that docs/shm-abi.md documents; does no I/O and touches no memory.
//! Every field is a little-endian `u64` word ("word" below), so the whole region is an
//! array of `AtomicU64` and every offset is a word index.

use crate::error::ShmError;

/// "DWCPSHM1" read as a big-endian integer; stored in word 0 last during creation.
pub const MAGIC: u64 = 0x4457_4350_5348_4D31;
/// ABI version. Bumped on any incompatible layout or message change.
pub const ABI_VERSION: u64 = 1;
/// Cache line size assumed by the layout (x86_64, aarch64 common case).
pub const CACHE_LINE: usize = 64;
/// Words per cache line.
pub const LINE_WORDS: usize = CACHE_LINE / 8;
/// Bytes reserved for the header page.
pub const HEADER_BYTES: usize = 4096;
/// Bytes of one ring slot (one cache line).
pub const SLOT_BYTES: usize = 64;
/// Words of one ring slot.
pub const SLOT_WORDS: usize = SLOT_BYTES / 8;
/// Bytes of a ring control block: head line + tail line.
pub const RING_CTRL_BYTES: usize = 2 * CACHE_LINE;
/// Bytes of one worker statistics block (4 cache lines).
pub const STATS_BYTES: usize = 256;
/// Words of one worker statistics block.
pub const STATS_WORDS: usize = STATS_BYTES / 8;
/// Bytes of the flag/rollout table header: seqlock line + generation/rollout line.
pub const TABLE_HEADER_BYTES: usize = 2 * CACHE_LINE;
/// Bytes of one flag table entry.
pub const FLAG_ENTRY_BYTES: usize = 64;
/// Words of one flag table entry.
pub const FLAG_ENTRY_WORDS: usize = FLAG_ENTRY_BYTES / 8;
/// Longest flag name in bytes (UTF-8, NUL padded in the table).
pub const FLAG_NAME_MAX: usize = 32;

/// Header word indexes (word = 8 bytes; byte offset = index * 8).
pub mod hdr {
    /// Magic, written last by the creator with Release.
    pub const MAGIC: usize = 0;
    /// ABI version.
    pub const VERSION: usize = 1;
    /// Total region size in bytes.
    pub const LAYOUT_SIZE: usize = 2;
    /// Command ring slot count.
    pub const CMD_SLOTS: usize = 3;
    /// Event ring slot count.
    pub const EVT_SLOTS: usize = 4;
    /// Worker statistics block count.
    pub const WORKERS: usize = 5;
    /// Flag table entry capacity.
    pub const FLAG_ENTRIES: usize = 6;
    /// Byte offset of the command ring control block.
    pub const CMD_OFF: usize = 7;
    /// Byte offset of the event ring control block.
    pub const EVT_OFF: usize = 8;
    /// Byte offset of the first statistics block.
    pub const STATS_OFF: usize = 9;
    /// Byte offset of the flag/rollout table.
    pub const TABLE_OFF: usize = 10;
    /// CLOCK_REALTIME nanoseconds at creation.
    pub const CREATED_NS: usize = 11;
    /// First word of the control side block (byte 128).
    pub const SIDE_CONTROL: usize = 16;
    /// First word of the dataplane side block (byte 192).
    pub const SIDE_DATAPLANE: usize = 24;
}

/// Word offsets inside a side block (one cache line per side).
pub mod side {
    /// PID of the attached process, 0 when none.
    pub const OWNER_PID: usize = 0;
    /// Incremented on every attach of this side.
    pub const EPOCH: usize = 1;
    /// CLOCK_MONOTONIC nanoseconds of the last heartbeat.
    pub const HEARTBEAT_NS: usize = 2;
    /// CLOCK_MONOTONIC nanoseconds of the last attach.
    pub const ATTACHED_NS: usize = 3;
}

/// Sizes chosen when the region is created; stored in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Command ring slots (power of two, 2..=1<<20).
    pub cmd_slots: u32,
    /// Event ring slots (power of two, 2..=1<<20).
    pub evt_slots: u32,
    /// Worker statistics blocks (1..=256).
    pub workers: u32,
    /// Flag table capacity (1..=1024).
    pub flag_entries: u32,
}

impl Default for Geometry {
    fn default() -> Self {
        Self {
            cmd_slots: 1024,
            evt_slots: 4096,
            workers: 8,
            flag_entries: 64,
        }
    }
}

/// Byte offsets computed from a [`Geometry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The geometry the offsets come from.
    pub geometry: Geometry,
    /// Command ring control block.
    pub cmd_off: usize,
    /// Event ring control block.
    pub evt_off: usize,
    /// First statistics block.
    pub stats_off: usize,
    /// Flag/rollout table.
    pub table_off: usize,
    /// Total size, rounded up to 4096.
    pub size: usize,
}

fn check_ring(name: &'static str, slots: u32) -> Result<(), ShmError> {
    if !slots.is_power_of_two() || !(2..=1 << 20).contains(&slots) {
        return Err(ShmError::BadGeometry {
            field: name,
            value: u64::from(slots),
        });
    }
    Ok(())
}

impl Layout {
    /// Computes the layout, refusing geometries outside the documented bounds.
    pub fn new(geometry: Geometry) -> Result<Self, ShmError> {
        check_ring("cmd_slots", geometry.cmd_slots)?;
        check_ring("evt_slots", geometry.evt_slots)?;
        if !(1..=256).contains(&geometry.workers) {
            return Err(ShmError::BadGeometry {
                field: "workers",
                value: u64::from(geometry.workers),
            });
        }
        if !(1..=1024).contains(&geometry.flag_entries) {
            return Err(ShmError::BadGeometry {
                field: "flag_entries",
                value: u64::from(geometry.flag_entries),
            });
        }
        let cmd_off = HEADER_BYTES;
        let evt_off = cmd_off + RING_CTRL_BYTES + geometry.cmd_slots as usize * SLOT_BYTES;
        let stats_off = evt_off + RING_CTRL_BYTES + geometry.evt_slots as usize * SLOT_BYTES;
        let table_off = stats_off + geometry.workers as usize * STATS_BYTES;
        let end =
            table_off + TABLE_HEADER_BYTES + geometry.flag_entries as usize * FLAG_ENTRY_BYTES;
        let size = end.div_ceil(4096) * 4096;
        Ok(Self {
            geometry,
            cmd_off,
            evt_off,
            stats_off,
            table_off,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_offsets_are_documented_values() {
        let l = Layout::new(Geometry::default()).unwrap();
        assert_eq!(l.cmd_off, 4096);
        assert_eq!(l.evt_off, 4096 + 128 + 1024 * 64);
        assert_eq!(l.stats_off, l.evt_off + 128 + 4096 * 64);
        assert_eq!(l.table_off, l.stats_off + 8 * 256);
        assert_eq!(l.size % 4096, 0);
        assert!(l.size >= l.table_off + 128 + 64 * 64);
        assert_eq!(l.cmd_off % CACHE_LINE, 0);
        assert_eq!(l.table_off % CACHE_LINE, 0);
    }

    #[test]
    fn bad_geometry_is_refused() {
        let g = Geometry {
            cmd_slots: 1000,
            ..Geometry::default()
        };
        assert!(matches!(
            Layout::new(g),
            Err(ShmError::BadGeometry {
                field: "cmd_slots",
                ..
            })
        ));
        let g = Geometry {
            workers: 0,
            ..Geometry::default()
        };
        assert!(Layout::new(g).is_err());
    }
}
