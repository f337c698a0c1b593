//! Creating, opening and validating the region file, and attaching a side.
//!
//! Owns the header (magic, ABI version, geometry, offsets) and the side blocks (owner PID,
//! epoch, heartbeat). Creation writes every header word and stores the magic last with
//! Release; opening loads the magic with Acquire and refuses any mismatch with a typed
//! error. A side is claimed by a CAS on its owner-PID word and released when the last handle
//! of that side drops; a claim held by a dead PID is taken over (restart). Does not move
//! messages (see `ring`) or interpret statistics (see `stats`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use crate::error::ShmError;
use crate::layout::{ABI_VERSION, Geometry, HEADER_BYTES, Layout, MAGIC, STATS_WORDS, hdr, side};
use crate::mapping::Mapping;
use crate::message::{Command, Event};
use crate::ring::{Consumer, Producer, RingRef};
use crate::stats::{StatsReader, StatsWriter};
use crate::sys;
use crate::table::{TableReader, TableWriter};

/// Which process a side block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The control process: produces commands, consumes events, writes the table.
    Control,
    /// The dataplane: consumes commands, produces events, writes statistics.
    Dataplane,
}

impl Role {
    fn side_w(self) -> usize {
        match self {
            Role::Control => hdr::SIDE_CONTROL,
            Role::Dataplane => hdr::SIDE_DATAPLANE,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Control => "control",
            Role::Dataplane => "dataplane",
        })
    }
}

/// Holds a side's claim; shared by every handle of that side, released on last drop.
#[derive(Debug)]
pub struct RoleGuard {
    map: Arc<Mapping>,
    role: Role,
    pid: u64,
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let w = &self.map.words()[self.role.side_w() + side::OWNER_PID];
        let _ = w.compare_exchange(self.pid, 0, AcqRel, Relaxed);
    }
}

/// What one side can see of a side block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideStatus {
    /// The side.
    pub role: Role,
    /// Owner PID, 0 when detached.
    pub pid: u64,
    /// Whether the owner PID is a live process (false when detached).
    pub alive: bool,
    /// Attach count over the region's life; a change means the side restarted.
    pub epoch: u64,
    /// Time since the last heartbeat; `None` if never stamped.
    pub heartbeat_age: Option<Duration>,
}

/// An opened, validated region. Cheap to clone; the mapping lives until the last handle drops.
#[derive(Debug, Clone)]
pub struct Region {
    map: Arc<Mapping>,
    layout: Layout,
    path: PathBuf,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ShmError + 'a {
    move |source| ShmError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Region {
    /// Opens the region at `path`, creating it with `geometry` if absent. An existing region
    /// must carry the same magic, ABI version and geometry.
    pub fn create_or_open(path: &Path, geometry: Geometry) -> Result<Self, ShmError> {
        let layout = Layout::new(geometry)?;
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => Self::init(path, file, layout),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let r = Self::open(path)?;
                if r.layout.geometry != geometry {
                    return Err(ShmError::GeometryMismatch {
                        path: path.to_owned(),
                        found: r.layout.geometry,
                        requested: geometry,
                    });
                }
                Ok(r)
            }
            Err(e) => Err(io("create", path)(e)),
        }
    }

    fn init(path: &Path, file: File, layout: Layout) -> Result<Self, ShmError> {
        file.set_len(layout.size as u64)
            .map_err(io("ftruncate", path))?;
        let map = Arc::new(Mapping::new(&file, layout.size).map_err(io("mmap", path))?);
        let w = map.words();
        let g = layout.geometry;
        for (i, v) in [
            (hdr::VERSION, ABI_VERSION),
            (hdr::LAYOUT_SIZE, layout.size as u64),
            (hdr::CMD_SLOTS, u64::from(g.cmd_slots)),
            (hdr::EVT_SLOTS, u64::from(g.evt_slots)),
            (hdr::WORKERS, u64::from(g.workers)),
            (hdr::FLAG_ENTRIES, u64::from(g.flag_entries)),
            (hdr::CMD_OFF, layout.cmd_off as u64),
            (hdr::EVT_OFF, layout.evt_off as u64),
            (hdr::STATS_OFF, layout.stats_off as u64),
            (hdr::TABLE_OFF, layout.table_off as u64),
            (hdr::CREATED_NS, sys::realtime_ns()),
        ] {
            w[i].store(v, Relaxed);
        }
        // Release: every header word above is visible to whoever sees the magic.
        w[hdr::MAGIC].store(MAGIC, Release);
        Ok(Self {
            map,
            layout,
            path: path.to_owned(),
        })
    }

    /// Opens and validates an existing region, taking its geometry from the header. Waits up
    /// to one second for a creator that is still writing the header.
    pub fn open(path: &Path) -> Result<Self, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open", path))?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let len = file.metadata().map_err(io("stat", path))?.len();
            if len >= HEADER_BYTES as u64 && len.is_multiple_of(8) {
                let map = Mapping::new(&file, len as usize).map_err(io("mmap", path))?;
                let magic = map.words()[hdr::MAGIC].load(Acquire);
                if magic != 0 {
                    return Self::validate(path, map, magic, len);
                }
            }
            if Instant::now() > deadline {
                return Err(ShmError::NotInitialized {
                    path: path.to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn validate(path: &Path, map: Mapping, magic: u64, len: u64) -> Result<Self, ShmError> {
        if magic != MAGIC {
            return Err(ShmError::BadMagic {
                path: path.to_owned(),
                found: magic,
                expected: MAGIC,
            });
        }
        let w = map.words();
        let version = w[hdr::VERSION].load(Relaxed);
        if version != ABI_VERSION {
            return Err(ShmError::AbiMismatch {
                path: path.to_owned(),
                found: version,
                expected: ABI_VERSION,
            });
        }
        let mismatch = |field, found: u64, expected: u64| ShmError::LayoutMismatch {
            path: path.to_owned(),
            field,
            found,
            expected,
        };
        let u32_of = |i: usize, field| {
            let v = w[i].load(Relaxed);
            u32::try_from(v).map_err(|_| mismatch(field, v, u64::from(u32::MAX)))
        };
        let geometry = Geometry {
            cmd_slots: u32_of(hdr::CMD_SLOTS, "cmd_slots")?,
            evt_slots: u32_of(hdr::EVT_SLOTS, "evt_slots")?,
            workers: u32_of(hdr::WORKERS, "workers")?,
            flag_entries: u32_of(hdr::FLAG_ENTRIES, "flag_entries")?,
        };
        let layout = Layout::new(geometry)?;
        for (i, field, expected) in [
            (hdr::LAYOUT_SIZE, "layout_size", layout.size as u64),
            (hdr::CMD_OFF, "cmd_off", layout.cmd_off as u64),
            (hdr::EVT_OFF, "evt_off", layout.evt_off as u64),
            (hdr::STATS_OFF, "stats_off", layout.stats_off as u64),
            (hdr::TABLE_OFF, "table_off", layout.table_off as u64),
        ] {
            let found = w[i].load(Relaxed);
            if found != expected {
                return Err(mismatch(field, found, expected));
            }
        }
        if len != layout.size as u64 {
            return Err(mismatch("file_size", len, layout.size as u64));
        }
        let region = Self {
            map: Arc::new(map),
            layout,
            path: path.to_owned(),
        };
        region.cmd_ring().check()?;
        region.evt_ring().check()?;
        Ok(region)
    }

    /// The region's geometry.
    pub fn geometry(&self) -> Geometry {
        self.layout.geometry
    }

    /// The computed layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The region file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cmd_ring(&self) -> RingRef {
        RingRef::new(
            self.map.clone(),
            self.layout.cmd_off,
            self.layout.geometry.cmd_slots,
            "command",
        )
    }

    fn evt_ring(&self) -> RingRef {
        RingRef::new(
            self.map.clone(),
            self.layout.evt_off,
            self.layout.geometry.evt_slots,
            "event",
        )
    }

    fn claim(&self, role: Role) -> Result<Arc<RoleGuard>, ShmError> {
        let w = self.map.words();
        let base = role.side_w();
        let me = sys::own_pid();
        let mut cur = w[base + side::OWNER_PID].load(Acquire);
        loop {
            if cur != 0 && sys::pid_alive(cur) {
                return Err(ShmError::RoleBusy { role, pid: cur });
            }
            match w[base + side::OWNER_PID].compare_exchange(cur, me, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        w[base + side::EPOCH].fetch_add(1, AcqRel);
        let now = sys::monotonic_ns();
        w[base + side::ATTACHED_NS].store(now, Relaxed);
        w[base + side::HEARTBEAT_NS].store(now, Release);
        Ok(Arc::new(RoleGuard {
            map: self.map.clone(),
            role,
            pid: me,
        }))
    }

    /// Attaches as the control process. Fails with [`ShmError::RoleBusy`] while another live
    /// process holds the control side. Resumes the command ring at the stored head and the
    /// event ring at the stored tail.
    pub fn attach_control(&self) -> Result<ControlSide, ShmError> {
        let guard = self.claim(Role::Control)?;
        Ok(ControlSide {
            commands: Producer::new(self.cmd_ring(), guard.clone())?,
            events: Consumer::new(self.evt_ring(), guard.clone())?,
            table: TableWriter::new(
                self.map.clone(),
                self.layout.table_off / 8,
                self.layout.geometry.flag_entries,
                guard.clone(),
            ),
            heartbeat: Heartbeat {
                map: self.map.clone(),
                base: Role::Control.side_w(),
                _guard: guard,
            },
        })
    }

    /// Attaches as the dataplane. Fails with [`ShmError::RoleBusy`] while another live process
    /// holds the dataplane side. Resumes the command ring at the stored tail and the event ring
    /// at the stored head; statistics blocks keep their values.
    pub fn attach_dataplane(&self) -> Result<DataplaneSide, ShmError> {
        let guard = self.claim(Role::Dataplane)?;
        let stats_base = self.layout.stats_off / 8;
        let writers = (0..self.layout.geometry.workers)
            .map(|i| {
                Some(StatsWriter::new(
                    self.map.clone(),
                    stats_base + i as usize * STATS_WORDS,
                    i,
                    guard.clone(),
                ))
            })
            .collect();
        Ok(DataplaneSide {
            commands: Consumer::new(self.cmd_ring(), guard.clone())?,
            events: Producer::new(self.evt_ring(), guard.clone())?,
            table: self.table_reader(),
            stats_writers: writers,
            heartbeat: Heartbeat {
                map: self.map.clone(),
                base: Role::Dataplane.side_w(),
                _guard: guard,
            },
        })
    }

    /// A reader of the flag/rollout table (no role needed).
    pub fn table_reader(&self) -> TableReader {
        TableReader {
            map: self.map.clone(),
            base: self.layout.table_off / 8,
            capacity: self.layout.geometry.flag_entries,
        }
    }

    /// A reader of the statistics blocks (no role needed).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader {
            map: self.map.clone(),
            base: self.layout.stats_off / 8,
            workers: self.layout.geometry.workers,
        }
    }

    /// Status of a side block.
    pub fn side_status(&self, role: Role) -> SideStatus {
        let w = self.map.words();
        let b = role.side_w();
        let pid = w[b + side::OWNER_PID].load(Acquire);
        let hb = w[b + side::HEARTBEAT_NS].load(Acquire);
        SideStatus {
            role,
            pid,
            alive: pid != 0 && sys::pid_alive(pid),
            epoch: w[b + side::EPOCH].load(Acquire),
            heartbeat_age: (hb != 0)
                .then(|| Duration::from_nanos(sys::monotonic_ns().saturating_sub(hb))),
        }
    }

    /// `(head, tail)` of the command ring.
    pub fn command_positions(&self) -> (u64, u64) {
        self.cmd_ring().positions()
    }

    /// `(head, tail)` of the event ring.
    pub fn event_positions(&self) -> (u64, u64) {
        self.evt_ring().positions()
    }

    /// Flag table capacity in entries.
    pub fn flag_capacity(&self) -> usize {
        self.layout.geometry.flag_entries as usize
    }
}

/// A side's heartbeat stamp.
#[derive(Debug)]
pub struct Heartbeat {
    map: Arc<Mapping>,
    base: usize,
    _guard: Arc<RoleGuard>,
}

impl Heartbeat {
    /// Stamps CLOCK_MONOTONIC now.
    pub fn beat(&self) {
        self.map.words()[self.base + side::HEARTBEAT_NS].store(sys::monotonic_ns(), Release);
    }

    /// This side's epoch (attach count).
    pub fn epoch(&self) -> u64 {
        self.map.words()[self.base + side::EPOCH].load(Acquire)
    }
}

/// Everything the control process holds. Fields may be moved out and used from different
/// threads; the side stays claimed until all of them are dropped.
#[derive(Debug)]
pub struct ControlSide {
    /// Commands to the dataplane.
    pub commands: Producer<Command>,
    /// Events from the dataplane.
    pub events: Consumer<Event>,
    /// The flag/rollout table.
    pub table: TableWriter,
    /// The control side's heartbeat.
    pub heartbeat: Heartbeat,
}

/// Everything the dataplane holds. Fields may be moved out and used from different threads;
/// the side stays claimed until all of them are dropped.
#[derive(Debug)]
pub struct DataplaneSide {
    /// Commands from the control process.
    pub commands: Consumer<Command>,
    /// Events to the control process.
    pub events: Producer<Event>,
    /// The flag/rollout table.
    pub table: TableReader,
    stats_writers: Vec<Option<StatsWriter>>,
    /// The dataplane side's heartbeat.
    pub heartbeat: Heartbeat,
}

impl DataplaneSide {
    /// The statistics writer of one worker; `None` if out of range or already taken.
    pub fn take_stats_writer(&mut self, worker: u32) -> Option<StatsWriter> {
        self.stats_writers.get_mut(worker as usize)?.take()
    }
}
