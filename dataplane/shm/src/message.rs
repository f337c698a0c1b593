//! Typed messages carried in ring slots, and their fixed word encoding.
//!
//! A slot is 8 words: word 0 the sequence number (written by the ring), word 1 the tag, words
//! 2..8 six arguments. This module maps each message to tag + arguments and back; it does not
//! touch shared memory. Tags below 0x80 are commands (control -> dataplane), tags from 0x80 are
//! events (dataplane -> control). Unknown tags decode to an error, never a panic.

use crate::error::DecodeError;

/// Encoded form of one message: tag and six argument words.
pub type Words = [u64; 7];

/// Something that can travel in a ring slot.
pub trait Message: Sized {
    /// Ring name for errors ("command" or "event").
    const RING: &'static str;
    /// Encodes to tag + args.
    fn encode(&self) -> Words;
    /// Decodes from tag + args.
    fn decode(w: &Words) -> Result<Self, DecodeError>;
}

/// Rollout state as stored in the table and sent in commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum RolloutState {
    /// No plan.
    #[default]
    Idle = 0,
    /// Advancing through stages.
    Running = 1,
    /// Held at the current stage by an operator.
    Paused = 2,
    /// Reached the last stage.
    Completed = 3,
    /// Rolled back (automatically or by an operator): v3 percentage 0.
    RolledBack = 4,
    /// Aborted by an operator: v3 percentage 0.
    Aborted = 5,
}

impl RolloutState {
    /// From the stored code.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Idle,
            1 => Self::Running,
            2 => Self::Paused,
            3 => Self::Completed,
            4 => Self::RolledBack,
            5 => Self::Aborted,
            _ => return None,
        })
    }
}

/// Transfer mode chosen by mode detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum TransferMode {
    /// Not decided yet.
    #[default]
    Unknown = 0,
    /// Low RTT, high bandwidth.
    Datacenter = 1,
    /// High RTT, loss, narrow link.
    Internet = 2,
    /// Decided per block.
    Hybrid = 3,
}

impl TransferMode {
    /// From the stored code.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Unknown,
            1 => Self::Datacenter,
            2 => Self::Internet,
            3 => Self::Hybrid,
            _ => return None,
        })
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Datacenter => "datacenter",
            Self::Internet => "internet",
            Self::Hybrid => "hybrid",
        }
    }
}

/// What a migration job moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum JobKind {
    /// Guest memory image, iterative pre-copy.
    Memory = 1,
    /// Disk image, iterative pre-copy of dirty blocks.
    Disk = 2,
    /// A plain object, one pass.
    Object = 3,
}

impl JobKind {
    /// From the stored code.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Memory,
            2 => Self::Disk,
            3 => Self::Object,
            _ => return None,
        })
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum JobOutcome {
    /// Switchover done and verified.
    Completed = 1,
    /// Failed; see the error code.
    Failed = 2,
    /// Cancelled on request.
    Cancelled = 3,
}

impl JobOutcome {
    /// From the stored code.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Completed,
            2 => Self::Failed,
            3 => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Dataplane's answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AckStatus {
    /// Applied.
    Ok = 0,
    /// Understood but refused (e.g. unknown job id for a cancel).
    Rejected = 1,
    /// Not understood (unknown tag or bad field).
    Unsupported = 2,
}

impl AckStatus {
    /// From the stored code.
    pub fn from_code(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::Rejected,
            2 => Self::Unsupported,
            _ => return None,
        })
    }
}

/// A migration job as sent to the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSpec {
    /// Job id assigned by the control process (unique, never reused).
    pub job_id: u64,
    /// What is moved.
    pub kind: JobKind,
    /// Object id used on the wire.
    pub object_id: u64,
    /// Size of the image in bytes.
    pub total_bytes: u64,
    /// Peer IPv4 address (host order).
    pub peer_ipv4: u32,
    /// Peer UDP port.
    pub peer_port: u16,
    /// Upper bound on pre-copy rounds before switchover.
    pub max_rounds: u16,
}

/// Control -> dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A flag changed; the table already holds the new state at `generation`.
    SetFlag {
        /// Index of the entry in the table.
        index: u32,
        /// Table generation that carries the change.
        generation: u64,
        /// Effective value for this node.
        enabled: bool,
        /// Percentage in basis points (0..=10000).
        pct_bp: u16,
    },
    /// The rollout moved; the table already holds it at `generation`.
    RolloutStage {
        /// New state.
        state: RolloutState,
        /// Stage index in the plan.
        stage: u32,
        /// v3 share in basis points.
        pct_bp: u32,
        /// Table generation.
        generation: u64,
    },
    /// Start a migration job.
    CreateJob(JobSpec),
    /// Cancel a migration job.
    CancelJob {
        /// Job id.
        job_id: u64,
    },
    /// Liveness probe; answered with [`Event::Pong`].
    Ping {
        /// Echoed.
        nonce: u64,
    },
}

/// Command tags.
pub mod tag {
    /// [`super::Command::SetFlag`]
    pub const SET_FLAG: u64 = 0x01;
    /// [`super::Command::RolloutStage`]
    pub const ROLLOUT_STAGE: u64 = 0x02;
    /// [`super::Command::CreateJob`]
    pub const CREATE_JOB: u64 = 0x03;
    /// [`super::Command::CancelJob`]
    pub const CANCEL_JOB: u64 = 0x04;
    /// [`super::Command::Ping`]
    pub const PING: u64 = 0x05;
    /// [`super::Event::Ack`]
    pub const ACK: u64 = 0x81;
    /// [`super::Event::JobProgress`]
    pub const JOB_PROGRESS: u64 = 0x82;
    /// [`super::Event::JobFinished`]
    pub const JOB_FINISHED: u64 = 0x83;
    /// [`super::Event::Pong`]
    pub const PONG: u64 = 0x84;
    /// [`super::Event::WorkerMode`]
    pub const WORKER_MODE: u64 = 0x85;
}

fn bad(tag: u64, field: &'static str, value: u64) -> DecodeError {
    DecodeError::BadField { tag, field, value }
}

impl Message for Command {
    const RING: &'static str = "command";

    fn encode(&self) -> Words {
        match *self {
            Command::SetFlag {
                index,
                generation,
                enabled,
                pct_bp,
            } => [
                tag::SET_FLAG,
                u64::from(index),
                generation,
                u64::from(enabled),
                u64::from(pct_bp),
                0,
                0,
            ],
            Command::RolloutStage {
                state,
                stage,
                pct_bp,
                generation,
            } => [
                tag::ROLLOUT_STAGE,
                state as u64,
                u64::from(stage),
                u64::from(pct_bp),
                generation,
                0,
                0,
            ],
            Command::CreateJob(j) => [
                tag::CREATE_JOB,
                j.job_id,
                j.kind as u64,
                j.object_id,
                j.total_bytes,
                u64::from(j.peer_ipv4) << 32
                    | u64::from(j.peer_port) << 16
                    | u64::from(j.max_rounds),
                0,
            ],
            Command::CancelJob { job_id } => [tag::CANCEL_JOB, job_id, 0, 0, 0, 0, 0],
            Command::Ping { nonce } => [tag::PING, nonce, 0, 0, 0, 0, 0],
        }
    }

    fn decode(w: &Words) -> Result<Self, DecodeError> {
        let t = w[0];
        Ok(match t {
            tag::SET_FLAG => Command::SetFlag {
                index: u32::try_from(w[1]).map_err(|_| bad(t, "index", w[1]))?,
                generation: w[2],
                enabled: match w[3] {
                    0 => false,
                    1 => true,
                    v => return Err(bad(t, "enabled", v)),
                },
                pct_bp: u16::try_from(w[4])
                    .ok()
                    .filter(|p| *p <= 10_000)
                    .ok_or_else(|| bad(t, "pct_bp", w[4]))?,
            },
            tag::ROLLOUT_STAGE => Command::RolloutStage {
                state: RolloutState::from_code(w[1]).ok_or_else(|| bad(t, "state", w[1]))?,
                stage: u32::try_from(w[2]).map_err(|_| bad(t, "stage", w[2]))?,
                pct_bp: u32::try_from(w[3])
                    .ok()
                    .filter(|p| *p <= 10_000)
                    .ok_or_else(|| bad(t, "pct_bp", w[3]))?,
                generation: w[4],
            },
            tag::CREATE_JOB => Command::CreateJob(JobSpec {
                job_id: w[1],
                kind: JobKind::from_code(w[2]).ok_or_else(|| bad(t, "kind", w[2]))?,
                object_id: w[3],
                total_bytes: w[4],
                peer_ipv4: (w[5] >> 32) as u32,
                peer_port: (w[5] >> 16) as u16,
                max_rounds: w[5] as u16,
            }),
            tag::CANCEL_JOB => Command::CancelJob { job_id: w[1] },
            tag::PING => Command::Ping { nonce: w[1] },
            _ => return Err(DecodeError::UnknownTag { tag: t }),
        })
    }
}

/// Dataplane -> control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Result of the command at ring position `cmd_seq`.
    Ack {
        /// Sequence number of the command.
        cmd_seq: u64,
        /// Outcome.
        status: AckStatus,
        /// Free detail code (0 = none).
        detail: u32,
    },
    /// Progress of a running job.
    JobProgress {
        /// Job id.
        job_id: u64,
        /// Bytes sent so far (all rounds).
        bytes_done: u64,
        /// Size of the image.
        bytes_total: u64,
        /// Current send rate, bytes per second.
        rate_bps: u64,
        /// Pre-copy round (1-based; 0 before the first).
        round: u32,
        /// Transfer mode in use.
        mode: TransferMode,
        /// Bytes dirtied since the round started (pre-copy), 0 if unknown.
        dirty_bytes: u64,
    },
    /// A job ended.
    JobFinished {
        /// Job id.
        job_id: u64,
        /// How.
        outcome: JobOutcome,
        /// Bytes sent in total.
        bytes_done: u64,
        /// Error code when failed (0 otherwise).
        error_code: u32,
    },
    /// Answer to [`Command::Ping`].
    Pong {
        /// Echoed nonce.
        nonce: u64,
    },
    /// A worker's transfer mode changed.
    WorkerMode {
        /// Worker index.
        worker: u32,
        /// New mode.
        mode: TransferMode,
    },
}

impl Message for Event {
    const RING: &'static str = "event";

    fn encode(&self) -> Words {
        match *self {
            Event::Ack {
                cmd_seq,
                status,
                detail,
            } => [tag::ACK, cmd_seq, status as u64, u64::from(detail), 0, 0, 0],
            Event::JobProgress {
                job_id,
                bytes_done,
                bytes_total,
                rate_bps,
                round,
                mode,
                dirty_bytes,
            } => [
                tag::JOB_PROGRESS,
                job_id,
                bytes_done,
                bytes_total,
                rate_bps,
                u64::from(round) | (mode as u64) << 32,
                dirty_bytes,
            ],
            Event::JobFinished {
                job_id,
                outcome,
                bytes_done,
                error_code,
            } => [
                tag::JOB_FINISHED,
                job_id,
                outcome as u64,
                bytes_done,
                u64::from(error_code),
                0,
                0,
            ],
            Event::Pong { nonce } => [tag::PONG, nonce, 0, 0, 0, 0, 0],
            Event::WorkerMode { worker, mode } => {
                [tag::WORKER_MODE, u64::from(worker), mode as u64, 0, 0, 0, 0]
            }
        }
    }

    fn decode(w: &Words) -> Result<Self, DecodeError> {
        let t = w[0];
        Ok(match t {
            tag::ACK => Event::Ack {
                cmd_seq: w[1],
                status: AckStatus::from_code(w[2]).ok_or_else(|| bad(t, "status", w[2]))?,
                detail: u32::try_from(w[3]).map_err(|_| bad(t, "detail", w[3]))?,
            },
            tag::JOB_PROGRESS => Event::JobProgress {
                job_id: w[1],
                bytes_done: w[2],
                bytes_total: w[3],
                rate_bps: w[4],
                round: w[5] as u32,
                mode: TransferMode::from_code(w[5] >> 32)
                    .ok_or_else(|| bad(t, "mode", w[5] >> 32))?,
                dirty_bytes: w[6],
            },
            tag::JOB_FINISHED => Event::JobFinished {
                job_id: w[1],
                outcome: JobOutcome::from_code(w[2]).ok_or_else(|| bad(t, "outcome", w[2]))?,
                bytes_done: w[3],
                error_code: u32::try_from(w[4]).map_err(|_| bad(t, "error_code", w[4]))?,
            },
            tag::PONG => Event::Pong { nonce: w[1] },
            tag::WORKER_MODE => Event::WorkerMode {
                worker: u32::try_from(w[1]).map_err(|_| bad(t, "worker", w[1]))?,
                mode: TransferMode::from_code(w[2]).ok_or_else(|| bad(t, "mode", w[2]))?,
            },
            _ => return Err(DecodeError::UnknownTag { tag: t }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let cmds = [
            Command::SetFlag {
                index: 3,
                generation: 99,
                enabled: true,
                pct_bp: 2500,
            },
            Command::RolloutStage {
                state: RolloutState::Running,
                stage: 2,
                pct_bp: 1000,
                generation: 7,
            },
            Command::CreateJob(JobSpec {
                job_id: 42,
                kind: JobKind::Disk,
                object_id: 0xdead_beef,
                total_bytes: 1 << 40,
                peer_ipv4: 0x0a4d_0002,
                peer_port: 7470,
                max_rounds: 30,
            }),
            Command::CancelJob { job_id: 42 },
            Command::Ping { nonce: u64::MAX },
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()), Ok(c));
        }
        let evts = [
            Event::Ack {
                cmd_seq: 5,
                status: AckStatus::Rejected,
                detail: 9,
            },
            Event::JobProgress {
                job_id: 1,
                bytes_done: 10,
                bytes_total: 100,
                rate_bps: 5,
                round: 3,
                mode: TransferMode::Hybrid,
                dirty_bytes: 4,
            },
            Event::JobFinished {
                job_id: 1,
                outcome: JobOutcome::Cancelled,
                bytes_done: 10,
                error_code: 0,
            },
            Event::Pong { nonce: 1 },
            Event::WorkerMode {
                worker: 2,
                mode: TransferMode::Internet,
            },
        ];
        for e in evts {
            assert_eq!(Event::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn bad_words_decode_to_errors() {
        assert_eq!(
            Command::decode(&[0x7f, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownTag { tag: 0x7f })
        );
        assert!(matches!(
            Command::decode(&[tag::SET_FLAG, 0, 0, 2, 0, 0, 0]),
            Err(DecodeError::BadField {
                field: "enabled",
                ..
            })
        ));
        assert!(matches!(
            Event::decode(&[tag::JOB_FINISHED, 0, 9, 0, 0, 0, 0]),
            Err(DecodeError::BadField {
                field: "outcome",
                ..
            })
        ));
        // An event tag on the command ring is unknown there.
        assert!(Command::decode(&[tag::ACK, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
