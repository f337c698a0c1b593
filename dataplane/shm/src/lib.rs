//! Shared-memory ABI between the control process and the dataplane.
//!
//! One file (under `/dev/shm` or any path), mapped `MAP_SHARED` by both processes, holding:
//! a versioned header, a command ring (control -> dataplane), an event ring
//! (dataplane -> control), per-worker statistics blocks and a seqlock-guarded flag/rollout
//! table. The byte layout, ordering rules and versioning are specified in docs/shm-abi.md.
//!
//! This crate owns the layout and the concurrency protocol. It does not decide policy (which
//! flags exist, when a rollout advances) and does no network I/O. Unsafe code is confined to
//! `mapping` (the mmap-to-`&[AtomicU64]` view) and `sys` (clock and PID probe FFI).
//!
//! ```no_run
//! use dwcp_shm::{Command, Geometry, Region};
//! let region = Region::create_or_open("/dev/shm/dwcp".as_ref(), Geometry::default())?;
//! // control process
//! let mut control = region.attach_control()?;
//! control.commands.push(&Command::Ping { nonce: 1 }).expect("ring full");
//! // dataplane process (another process, same path)
//! let mut dp = Region::open("/dev/shm/dwcp".as_ref())?.attach_dataplane()?;
//! while let Some(r) = dp.commands.pop() {
//!     println!("{} {:?}", r.seq, r.msg);
//! }
//! # Ok::<(), dwcp_shm::ShmError>(())
//! ```
#![deny(unsafe_code)]

mod error;
pub mod layout;
mod mapping;
mod message;
mod region;
mod ring;
mod stats;
mod sys;
mod table;

pub use error::{DecodeError, RingFull, ShmError};
pub use layout::{ABI_VERSION, Geometry, Layout, MAGIC};
pub use message::{
    AckStatus, Command, Event, JobKind, JobOutcome, JobSpec, Message, RolloutState, TransferMode,
    Words, tag,
};
pub use region::{ControlSide, DataplaneSide, Heartbeat, Region, Role, RoleGuard, SideStatus};
pub use ring::{Consumer, Producer, Received};
pub use stats::{ALL_STATS, DROP_REASONS, Stat, StatsReader, StatsWriter, WorkerStats};
pub use sys::monotonic_ns;
pub use table::{
    BUCKETS, FlagEntry, FlagKind, RolloutEntry, TableContent, TableReader, TableSnapshot,
    TableWriter, flow_bucket,
};
