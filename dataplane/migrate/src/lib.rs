//! VM image migration: moves a disk or memory image from a source appliance to a destination
//! appliance in pre-copy rounds, then switches over and verifies.
//!
//! Owns: the block-level diff between what the destination holds and the image now
//! ([`scan`]), the patch object of one round — the dirty block list plus HDE containers that
//! code the new blocks against the destination's old blocks ([`patch`]) —, the destination's
//! on-disk contract (manifest sidecar, redo journal, verified switchover, crash recovery;
//! [`store`]), image hashing, qcow2 and the source's base cache ([`image`]), the control
//! conversation between the two sides ([`wire`]) and the round
//! logic with convergence, cancel and progress ([`session`]).
//!
//! Does not: move bytes itself. Patch and manifest objects are handed to a [`Mover`] — the
//! DWCP transfer engine in the appliance (`dwcp-engine` implements it), or [`TcpMover`] as a
//! plain fallback. It has no hypervisor integration: the pause at switchover is a callback
//! (`dwcp migrate send --pause-cmd`), and dirty tracking is by block comparison against the
//! source's snapshot of what the destination holds, not by a hypervisor dirty log.
//!
//! Versioning: the control conversation starts with `Hello{version}`; a peer answering with
//! another version is refused ([`MigrateError::Version`]). The patch format carries its own
//! magic (`DWCPPAT2`); any change to either gets a new version number. Version 2: `Committed`
//! carries the destination's phase timings. Version 3: rounds cut into parts (`part` in
//! `Round`/`Ready`/`Applied`, pipelined: the source does not wait for `Applied` before the
//! next part). Version 4: a pipelined round moves as one stream (`Stream`, [`partstream`]) when
//! the movers carry streams. Version 5: a broken round stream is resumed from the
//! destination's first missing part (`StreamLost`, `Resume`).
//!
//! [`fault`] wraps a mover to break its streams on purpose (tests, failure drills).
#![forbid(unsafe_code)]

pub mod adapt;
pub mod cli;
pub mod fault;
pub mod image;
mod mover;
pub mod partstream;
pub mod partzstd;
pub mod patch;
pub mod round;
pub mod scan;
pub mod session;
pub mod store;
pub mod wire;

pub use mover::{MoveError, MoveProgress, MoveReport, Mover, TcpMover};
pub use session::{
    DEFAULT_PART_BYTES, DestConfig, DestReport, MigrateError, Phase, PipelineReport, Progress,
    RoundReport, SourceConfig, SourceHooks, SourceReport, run_dest, run_source,
};

/// Default block size of the diff and of the HDE containers.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

/// Version of the control conversation ([`wire`]).
pub const PROTOCOL_VERSION: u32 = 5;
