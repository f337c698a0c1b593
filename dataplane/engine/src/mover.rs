//! The migration jobs' [`dwcp_migrate::Mover`] on the transfer engine: [`RunnerMover`].
//!
//! Owns: moving a job's objects (round patches, the destination's manifest) one
//! [`send_file_cancellable`] / [`crate::runner::recv_file_cancellable`] each on the job's port, a pipelined
//! round's parts as one stream ([`crate::stream`]), and the tally of sealed and unsealed
//! moves ([`MoveTally`]). Does not: decide what to move or when (dwcp-migrate's session does).
//!
//! It sits above both [`crate::runner`] and [`crate::stream`], so neither imports the other's
//! users.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dwcp_transfer::{ReceiverConfig, SenderConfig};

use crate::runner::{RunError, RunOptions, recv_file_with, send_file_cancellable};

/// Moves the objects of a migration job (round patches, the destination's manifest) with
/// the transfer engine, one [`send_file_cancellable`] / [`crate::runner::recv_file_cancellable`] per object
/// on the same port, and a pipelined round's parts as one stream ([`crate::stream`]).
/// `dwcp migrate` and the daemon's disk/memory jobs use it.
#[derive(Debug, Clone)]
pub struct RunnerMover {
    /// Port and worker settings (the peer is the other appliance's DWCP port).
    pub opts: RunOptions,
    /// Sender settings; `object_id` is set per object. Its `security` (SEALED keys) applies
    /// to both directions: objects this mover receives (a migration source receives the
    /// destination's manifest) are accepted under the same keys and policy, since the peer
    /// is the same appliance either way.
    pub sender: SenderConfig,
    /// How long a receiver keeps answering after completion (a lost final CLOSE).
    pub linger: Duration,
    /// What this mover moved so far.
    pub tally: MoveTally,
}

/// Objects and streams a [`RunnerMover`] moved, and how many of them went unsealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveTally {
    /// Completed moves.
    pub moves: u64,
    /// Completed moves without AEAD.
    pub unsealed: u64,
}

impl MoveTally {
    fn count(
        &mut self,
        r: Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError>,
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        if let Ok(rep) = &r {
            self.moves += 1;
            if rep.sealed.is_none() {
                self.unsealed += 1;
            }
        }
        r
    }
}

impl RunnerMover {
    /// The worker yields its core when idle: a pipelined migration round reads, encodes
    /// (source) and decodes, applies (destination) on the same cores while objects move.
    fn shared_core_opts(&self) -> RunOptions {
        RunOptions {
            idle_yield: true,
            ..self.opts.clone()
        }
    }

    /// The stream carrier's settings for a pipelined round ([`dwcp_migrate::Mover::send_stream`]):
    /// 4 MiB segments, 4 with new data at once (the best of 768 KiB x 8, 4 MiB x 4 and
    /// 16 MiB x 2 for a 224 MB stream on the WAN lab, docs/perf-migrate.md), the raw codec
    /// (patches are zstd already), this mover's keys, MTU and linger.
    fn stream_cfg(&self) -> crate::stream::StreamConfig {
        crate::stream::StreamConfig {
            segment_bytes: 4 << 20,
            in_flight: 4,
            idle_flush: Duration::from_millis(20),
            max_version: self.sender.max_version,
            max_streams: self.sender.max_streams,
            mtu: self.sender.mtu,
            linger: self.linger,
            security: self.sender.security.clone(),
            codec: crate::codec::CodecChoice::Raw,
            ..crate::stream::StreamConfig::default()
        }
    }

    /// [`recv_file_with`] for a migration object: the linger after completion also ends once
    /// `next` is set, `ready` is called once the worker polls, and the report is the mover's.
    fn recv_object(
        &self,
        path: &Path,
        cancel: &AtomicBool,
        next: Option<&AtomicBool>,
        ready: &mut dyn FnMut(),
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        let cfg = ReceiverConfig {
            security: self.sender.security.clone(),
            ..ReceiverConfig::default()
        };
        let mut signalled = false;
        let r = recv_file_with(
            path,
            cfg,
            &self.shared_core_opts(),
            self.linger,
            Some(cancel),
            next,
            &mut |_| {
                // The worker polls (its port is open) once it publishes progress.
                if !signalled {
                    signalled = true;
                    ready();
                }
            },
        )
        .map_err(|e| match e {
            RunError::Cancelled => dwcp_migrate::MoveError::Cancelled,
            e => dwcp_migrate::MoveError::failed("DWCP receive", e),
        })?;
        Ok(dwcp_migrate::MoveReport {
            object_len: r.object_len,
            wire_bytes: r.worker.io.tx_bytes,
            elapsed: r.elapsed,
            detail: format!(
                "v{}, {}",
                r.stats.version,
                r.stats.sealed.unwrap_or("unsealed")
            ),
            sealed: r.stats.sealed,
        })
    }
}

impl dwcp_migrate::Mover for RunnerMover {
    fn send(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&dwcp_migrate::MoveProgress),
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        let cfg = SenderConfig {
            object_id,
            ..self.sender.clone()
        };
        let opts = self.shared_core_opts();
        let r = send_file_cancellable(path, cfg, &opts, Some(cancel), &mut |s| {
            progress(&dwcp_migrate::MoveProgress {
                object_bytes: s.bytes_acked,
                wire_bytes: s.bytes_sent,
            })
        })
        .map_err(|e| match e {
            RunError::Cancelled => dwcp_migrate::MoveError::Cancelled,
            e => dwcp_migrate::MoveError::failed("DWCP send", e),
        })?;
        self.tally.count(Ok(dwcp_migrate::MoveReport {
            object_len: r.object_len,
            wire_bytes: r.stats.bytes_sent,
            elapsed: r.elapsed,
            detail: format!(
                "v{} {} {} streams, {} retransmitted, {}",
                r.stats.version,
                r.stats.mode,
                r.stats.streams,
                r.stats.data_frames_retransmitted,
                r.stats.sealed.unwrap_or("unsealed")
            ),
            sealed: r.stats.sealed,
        }))
    }

    fn recv(
        &mut self,
        path: &Path,
        _object_id: u64,
        cancel: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        let r = self.recv_object(path, cancel, None, ready);
        self.tally.count(r)
    }

    fn streams(&self) -> bool {
        true
    }

    /// The stream carrier ([`crate::stream`]): segments with several in flight, each new
    /// one starting from the window the last verified one measured, so a round's parts pay
    /// one start-up and one tail.
    fn send_stream(
        &mut self,
        input: Box<dyn std::io::Read + Send>,
        _stream_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&dwcp_migrate::MoveProgress),
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        let cfg = self.stream_cfg();
        let r = crate::stream::send_stream_with(
            crate::stream::StreamInput::Reader(input),
            &cfg,
            &self.shared_core_opts(),
            Some(cancel),
            &mut |bytes, wire| {
                progress(&dwcp_migrate::MoveProgress {
                    object_bytes: bytes,
                    wire_bytes: wire,
                })
            },
        )
        .map_err(|e| match e {
            crate::stream::StreamError::Cancelled => dwcp_migrate::MoveError::Cancelled,
            e => dwcp_migrate::MoveError::failed("DWCP stream send", e),
        })?;
        self.tally.count(Ok(dwcp_migrate::MoveReport {
            object_len: r.bytes,
            wire_bytes: r.bytes_on_wire,
            elapsed: r.elapsed,
            detail: format!(
                "stream: {} segments, {} retransmitted, {}",
                r.segments,
                r.bytes_retransmitted,
                r.sealed.unwrap_or("unsealed")
            ),
            sealed: r.sealed,
        }))
    }

    fn recv_stream(
        &mut self,
        output: Box<dyn std::io::Write + Send>,
        _stream_id: u64,
        cancel: &AtomicBool,
        next: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        let cfg = self.stream_cfg();
        let r = crate::stream::recv_stream_with(
            Box::new(move || Ok(output)),
            &cfg,
            &self.shared_core_opts(),
            Some(cancel),
            Some(next),
            ready,
        )
        .map_err(|e| match e {
            crate::stream::StreamError::Cancelled => dwcp_migrate::MoveError::Cancelled,
            e => dwcp_migrate::MoveError::failed("DWCP stream receive", e),
        })?;
        self.tally.count(Ok(dwcp_migrate::MoveReport {
            object_len: r.bytes,
            wire_bytes: 0,
            elapsed: r.elapsed,
            detail: format!(
                "stream: {} segments, {}",
                r.segments,
                r.sealed.unwrap_or("unsealed")
            ),
            sealed: r.sealed,
        }))
    }

    fn recv_until_next(
        &mut self,
        path: &Path,
        _object_id: u64,
        cancel: &AtomicBool,
        next: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<dwcp_migrate::MoveReport, dwcp_migrate::MoveError> {
        let r = self.recv_object(path, cancel, Some(next), ready);
        self.tally.count(r)
    }
}
