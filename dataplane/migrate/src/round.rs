//! The destination's round core: which control message may come when, and what the
//! destination does about each one — with no I/O, no threads and no clock.
//!
//! Owns: the destination's side of the conversation in [`crate::wire`] (hello and version,
//! manifest, rounds moved part by part or as one stream, stream attempts and resumptions,
//! commit), the rule for messages that arrive while an object is moving (the next part's
//! `Round`, a `Stream` after the manifest, or the `Commit` after a stream are kept and handled
//! once the move ended; the current stream's `StreamLost` stops it; anything else is out of
//! sequence), and the typed error of a peer out of sequence.
//!
//! Does not: read or write files, hold the image, the applier or the mover, or talk to the
//! peer. The source's convergence rule ([`next_is_final`]) is here too. The driver
//! (`session::dest_inner`) performs each [`DestStep`] — it moves objects,
//! runs the applier thread, opens and commits the image store, sends the answers — and feeds
//! back each message and how each move ended. The source's side is still written inline in
//! `session::source_inner`.

use crate::session::MigrateError;
use crate::wire::Msg;

/// What the destination does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestStep {
    /// A HELLO of another protocol version: answer `HelloAck` with ours, then fail with
    /// [`MigrateError::Version`].
    RefuseVersion(u32),
    /// Open the job: recover the image store, find the image held, answer `HelloAck`.
    Open {
        /// Job id.
        job_id: u64,
        /// Block size of manifests and patches (checked: 64 B to 1 MiB).
        block_size: u32,
    },
    /// Send the held image's manifest as object `object_id` (a move: report its end with
    /// [`DestRound::move_ended`]).
    SendManifest {
        /// Object id.
        object_id: u64,
    },
    /// Receive part `part` of round `round`'s patch as object `object_id`, saying `Ready` once
    /// receiving (a move).
    ReceivePart {
        /// Round.
        round: u32,
        /// Part.
        part: u32,
        /// Object id.
        object_id: u64,
    },
    /// Hand the received part to the applier.
    ApplyPart {
        /// Round.
        round: u32,
        /// Part.
        part: u32,
    },
    /// Receive attempt `attempt` of round `round`'s stream of parts, from `first_part` on,
    /// saying `Ready` once receiving (a move). Attempt 0 starts the round's stream state.
    ReceiveStream {
        /// Round.
        round: u32,
        /// The transport's stream id.
        stream_id: u64,
        /// 0, then 1, 2 for resumed streams.
        attempt: u32,
        /// First part of this attempt (the parts held so far).
        first_part: u32,
        /// The parts are one zstd stream.
        zstd: bool,
    },
    /// Tell the source where the round's stream goes on: `Resume` with the parts held.
    AskResume {
        /// Round.
        round: u32,
        /// The stream that ended without its end.
        attempt: u32,
    },
    /// Finish the applier, commit the image of this length and hash, answer `Committed`.
    Commit {
        /// Image length.
        len: u64,
        /// XXH3-128.
        hash: u128,
    },
    /// Nothing until the next message.
    Wait,
}

/// What a message that arrives during a move means for the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// Kept for after the move; it ends the receive's linger (the source sent it only once
    /// this move verified on its side).
    Keep,
    /// The current stream's `StreamLost`: the receive stops.
    Lost,
    /// Out of sequence: the job fails.
    Unexpected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moving {
    Manifest,
    Part { round: u32, part: u32 },
    Stream { round: u32, attempt: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    Open,
    Moving(Moving),
    Committing,
}

/// The destination's view of the current round's stream and its resumptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamRound {
    round: u32,
    /// The stream being (or last) received: 0, then 1, 2 when resumed.
    attempt: u32,
    /// `Resume` was asked for `attempt`.
    answered: bool,
    zstd: bool,
}

/// The destination's round state machine.
#[derive(Debug)]
pub struct DestRound {
    state: State,
    /// A message that arrived during a move, handled next.
    queued: Option<Msg>,
    stream: Option<StreamRound>,
    rounds: u32,
}

impl Default for DestRound {
    fn default() -> Self {
        Self::new()
    }
}

fn unexpected(m: &Msg) -> MigrateError {
    MigrateError::Unexpected(format!("{m:?}"))
}

impl DestRound {
    /// A destination waiting for the source's `Hello`.
    pub fn new() -> Self {
        Self {
            state: State::AwaitHello,
            queued: None,
            stream: None,
            rounds: 0,
        }
    }

    /// The last round a part or stream of arrived whole.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The message kept during the last move, to be handled next.
    pub fn take_queued(&mut self) -> Option<Msg> {
        self.queued.take()
    }

    /// Handles one message while no object moves. `held_parts` is the number of parts of the
    /// current round's stream already handed to the applier (where a resumed stream starts).
    pub fn on_msg(&mut self, m: Msg, held_parts: u32) -> Result<DestStep, MigrateError> {
        match (&self.state, m) {
            (State::Moving(_) | State::Committing, m) => Err(unexpected(&m)),
            (_, Msg::Abort { reason }) => Err(MigrateError::Aborted(reason)),
            (State::AwaitHello, Msg::Failed { reason }) => Err(MigrateError::Remote(reason)),
            (
                State::AwaitHello,
                Msg::Hello {
                    version,
                    job_id,
                    block_size,
                },
            ) => {
                if version != crate::PROTOCOL_VERSION {
                    return Ok(DestStep::RefuseVersion(version));
                }
                if !(64..=1 << 20).contains(&block_size) {
                    return Err(MigrateError::Unexpected(format!("block size {block_size}")));
                }
                self.state = State::Open;
                Ok(DestStep::Open { job_id, block_size })
            }
            (State::Open, Msg::ManifestRequest { object_id }) => {
                self.state = State::Moving(Moving::Manifest);
                Ok(DestStep::SendManifest { object_id })
            }
            (
                State::Open,
                Msg::Round {
                    round,
                    part,
                    object_id,
                    ..
                },
            ) => {
                self.state = State::Moving(Moving::Part { round, part });
                Ok(DestStep::ReceivePart {
                    round,
                    part,
                    object_id,
                })
            }
            (
                State::Open,
                Msg::Stream {
                    round,
                    stream_id,
                    attempt,
                    first_part,
                    zstd,
                },
            ) => {
                // A round's first stream starts at its first part; a resumed one where the
                // parts this side holds end.
                let held = if attempt == 0 { 0 } else { held_parts };
                if attempt == 0 {
                    self.stream = Some(StreamRound {
                        round,
                        attempt,
                        answered: false,
                        zstd,
                    });
                }
                match &mut self.stream {
                    Some(st)
                        if st.round == round
                            && (attempt == 0 || (attempt == st.attempt + 1 && st.answered))
                            && first_part == held
                            && zstd == st.zstd =>
                    {
                        st.attempt = attempt;
                        st.answered = false;
                        self.state = State::Moving(Moving::Stream { round, attempt });
                        Ok(DestStep::ReceiveStream {
                            round,
                            stream_id,
                            attempt,
                            first_part,
                            zstd,
                        })
                    }
                    _ => Err(MigrateError::Unexpected(format!(
                        "stream {attempt} of round {round} from part {first_part}"
                    ))),
                }
            }
            // The source's send failed after this side's receive ended (or failed, and was
            // answered already).
            (State::Open, Msg::StreamLost { round, attempt }) => match &mut self.stream {
                Some(st) if st.round == round && st.attempt == attempt => {
                    if st.answered {
                        Ok(DestStep::Wait)
                    } else {
                        st.answered = true;
                        Ok(DestStep::AskResume { round, attempt })
                    }
                }
                _ => Err(MigrateError::Unexpected(format!(
                    "stream {attempt} of round {round} lost"
                ))),
            },
            (State::Open, Msg::Commit { len, hash }) => {
                let hash = u128::from_str_radix(&hash, 16)
                    .map_err(|_| MigrateError::Unexpected(format!("hash {hash:?}")))?;
                self.state = State::Committing;
                Ok(DestStep::Commit { len, hash })
            }
            (_, m) => Err(unexpected(&m)),
        }
    }

    /// What a message that arrives while the current object moves means.
    pub fn early(&self, m: &Msg) -> Early {
        match (self.state, m) {
            // The source asks for round 1 only after its receive of the manifest verified.
            (State::Moving(Moving::Manifest), Msg::Round { .. } | Msg::Stream { .. }) => {
                Early::Keep
            }
            // A pipelined round: the source announces the next part as soon as its move of
            // this one ended.
            (State::Moving(Moving::Part { .. }), Msg::Round { .. }) => Early::Keep,
            // The source commits as soon as its send verified.
            (State::Moving(Moving::Stream { .. }), Msg::Commit { .. }) => Early::Keep,
            (
                State::Moving(Moving::Stream { round, attempt }),
                Msg::StreamLost {
                    round: r,
                    attempt: a,
                },
            ) if *r == round && *a == attempt => Early::Lost,
            _ => Early::Unexpected,
        }
    }

    /// The current move ended: `early` is the message that arrived during it (if any),
    /// `outcome` the move's own result. Returns what to do next (then
    /// [`DestRound::take_queued`] holds a kept message).
    pub fn move_ended(
        &mut self,
        early: Option<Msg>,
        outcome: Result<(), MigrateError>,
    ) -> Result<DestStep, MigrateError> {
        let State::Moving(moving) = self.state else {
            return Err(MigrateError::Unexpected("no object was moving".into()));
        };
        self.state = State::Open;
        let mut lost = false;
        if let Some(m) = early {
            match self.early_in(moving, &m) {
                Early::Keep => self.queued = Some(m),
                Early::Lost => lost = true,
                Early::Unexpected => return Err(unexpected(&m)),
            }
        }
        match moving {
            // The manifest arrived even if this send has not yet heard the final CLOSE (late
            // on a loaded host, or every copy lost): the source asked for round 1.
            Moving::Manifest if self.queued.is_some() => Ok(DestStep::Wait),
            Moving::Manifest => outcome.map(|()| DestStep::Wait),
            Moving::Part { round, part } => {
                outcome?;
                self.rounds = round;
                Ok(DestStep::ApplyPart { round, part })
            }
            Moving::Stream { round, attempt } => match outcome {
                Ok(()) if !lost => {
                    self.rounds = round;
                    Ok(DestStep::Wait)
                }
                // Ended without its end: the source is told where to go on.
                _ => {
                    if let Some(st) = &mut self.stream {
                        st.answered = true;
                    }
                    Ok(DestStep::AskResume { round, attempt })
                }
            },
        }
    }

    fn early_in(&self, moving: Moving, m: &Msg) -> Early {
        DestRound {
            state: State::Moving(moving),
            queued: None,
            stream: self.stream,
            rounds: self.rounds,
        }
        .early(m)
    }
}

/// The source's convergence rule: after live round `round` moved `data_bytes` of an image
/// of `image_bytes`, the next round is the final one (the guest pauses before it) when that
/// round moved at most `converge_bytes` (0: 1/256 of the image, at least 1 MiB) or the next
/// round is the `max_rounds`-th.
pub fn next_is_final(
    round: u32,
    data_bytes: u64,
    image_bytes: u64,
    converge_bytes: u64,
    max_rounds: u32,
) -> bool {
    let converge = if converge_bytes == 0 {
        (image_bytes / 256).max(1 << 20)
    } else {
        converge_bytes
    };
    data_bytes <= converge || round + 1 >= max_rounds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Msg {
        Msg::Hello {
            version: crate::PROTOCOL_VERSION,
            job_id: 9,
            block_size: 4096,
        }
    }

    fn round(round: u32, part: u32) -> Msg {
        Msg::Round {
            round,
            part,
            object_id: u64::from(round * 100 + part),
            patch_len: 1,
            blocks: 1,
            data_bytes: 4096,
            last: false,
        }
    }

    fn stream(round: u32, attempt: u32, first_part: u32) -> Msg {
        Msg::Stream {
            round,
            stream_id: 7,
            attempt,
            first_part,
            zstd: false,
        }
    }

    fn commit() -> Msg {
        Msg::Commit {
            len: 8192,
            hash: format!("{:032x}", 0xABCDu128),
        }
    }

    fn opened() -> DestRound {
        let mut d = DestRound::new();
        assert_eq!(
            d.on_msg(hello(), 0).unwrap(),
            DestStep::Open {
                job_id: 9,
                block_size: 4096
            }
        );
        d
    }

    #[test]
    fn parts_then_commit() {
        let mut d = opened();
        assert_eq!(
            d.on_msg(Msg::ManifestRequest { object_id: 3 }, 0).unwrap(),
            DestStep::SendManifest { object_id: 3 }
        );
        // Round 1 announced while the manifest's send lingers: kept, and the send's own
        // failure no longer matters.
        assert_eq!(d.early(&round(1, 0)), Early::Keep);
        let late = Err(MigrateError::Cancelled);
        assert_eq!(
            d.move_ended(Some(round(1, 0)), late).unwrap(),
            DestStep::Wait
        );
        let m = d.take_queued().unwrap();
        assert!(matches!(
            d.on_msg(m, 0).unwrap(),
            DestStep::ReceivePart {
                round: 1,
                part: 0,
                object_id: 100
            }
        ));
        // Pipelined: part 1 announced during part 0's receive.
        assert_eq!(
            d.move_ended(Some(round(1, 1)), Ok(())).unwrap(),
            DestStep::ApplyPart { round: 1, part: 0 }
        );
        let m = d.take_queued().unwrap();
        d.on_msg(m, 0).unwrap();
        assert_eq!(
            d.move_ended(None, Ok(())).unwrap(),
            DestStep::ApplyPart { round: 1, part: 1 }
        );
        assert_eq!(d.rounds(), 1);
        assert_eq!(
            d.on_msg(commit(), 0).unwrap(),
            DestStep::Commit {
                len: 8192,
                hash: 0xABCD
            }
        );
        // Nothing after the commit.
        assert!(d.on_msg(round(2, 0), 0).is_err());
    }

    #[test]
    fn each_round_s_first_stream_starts_at_part_zero() {
        let mut d = opened();
        d.on_msg(stream(1, 0, 0), 0).unwrap();
        d.move_ended(None, Ok(())).unwrap();
        // Round 1 handed 4 parts to the applier; round 2's stream starts afresh.
        assert!(matches!(
            d.on_msg(stream(2, 0, 0), 4).unwrap(),
            DestStep::ReceiveStream { round: 2, .. }
        ));
        let mut d = opened();
        assert!(d.on_msg(stream(1, 0, 1), 0).is_err());
    }

    #[test]
    fn a_manifest_send_that_fails_alone_fails_the_job() {
        let mut d = opened();
        d.on_msg(Msg::ManifestRequest { object_id: 3 }, 0).unwrap();
        assert!(matches!(
            d.move_ended(None, Err(MigrateError::Unexpected("x".into()))),
            Err(MigrateError::Unexpected(_))
        ));
    }

    #[test]
    fn a_stream_lost_and_resumed_twice_then_committed() {
        let mut d = opened();
        assert!(matches!(
            d.on_msg(stream(1, 0, 0), 0).unwrap(),
            DestStep::ReceiveStream { attempt: 0, .. }
        ));
        // The source says its send failed: the receive stops, the source is told where to go on.
        let lost = Msg::StreamLost {
            round: 1,
            attempt: 0,
        };
        assert_eq!(d.early(&lost), Early::Lost);
        assert_eq!(
            d.move_ended(Some(lost.clone()), Ok(())).unwrap(),
            DestStep::AskResume {
                round: 1,
                attempt: 0
            }
        );
        // A second StreamLost for the same attempt (already answered) changes nothing.
        assert_eq!(d.on_msg(lost, 3).unwrap(), DestStep::Wait);
        // Attempt 1 must start where this side's parts end.
        assert!(d.on_msg(stream(1, 1, 2), 3).is_err());
        let mut d = opened();
        d.on_msg(stream(1, 0, 0), 0).unwrap();
        assert_eq!(
            d.move_ended(None, Err(MigrateError::Cancelled)).unwrap(),
            DestStep::AskResume {
                round: 1,
                attempt: 0
            },
            "a receive that ended without its end asks for the rest"
        );
        assert!(matches!(
            d.on_msg(stream(1, 1, 3), 3).unwrap(),
            DestStep::ReceiveStream {
                attempt: 1,
                first_part: 3,
                ..
            }
        ));
        // The receive failed, then the source's StreamLost arrives too: answered once only.
        assert!(matches!(
            d.move_ended(None, Err(MigrateError::Cancelled)).unwrap(),
            DestStep::AskResume { attempt: 1, .. }
        ));
        assert_eq!(
            d.on_msg(
                Msg::StreamLost {
                    round: 1,
                    attempt: 1
                },
                5
            )
            .unwrap(),
            DestStep::Wait
        );
        d.on_msg(stream(1, 2, 5), 5).unwrap();
        assert_eq!(d.early(&commit()), Early::Keep);
        assert_eq!(
            d.move_ended(Some(commit()), Ok(())).unwrap(),
            DestStep::Wait
        );
        assert_eq!(d.rounds(), 1);
        let m = d.take_queued().unwrap();
        assert!(matches!(d.on_msg(m, 8).unwrap(), DestStep::Commit { .. }));
    }

    #[test]
    fn out_of_sequence_messages_are_typed_errors() {
        // Before the hello.
        let mut d = DestRound::new();
        assert!(matches!(
            d.on_msg(round(1, 0), 0),
            Err(MigrateError::Unexpected(_))
        ));
        assert!(matches!(
            DestRound::new().on_msg(Msg::Failed { reason: "x".into() }, 0),
            Err(MigrateError::Remote(_))
        ));
        // Another version is answered, then refused.
        let old = Msg::Hello {
            version: crate::PROTOCOL_VERSION + 1,
            job_id: 1,
            block_size: 4096,
        };
        assert_eq!(
            DestRound::new().on_msg(old, 0).unwrap(),
            DestStep::RefuseVersion(crate::PROTOCOL_VERSION + 1)
        );
        let tiny = Msg::Hello {
            version: crate::PROTOCOL_VERSION,
            job_id: 1,
            block_size: 8,
        };
        assert!(DestRound::new().on_msg(tiny, 0).is_err());
        // A second hello, a stream that does not start at attempt 0, a resume never asked.
        assert!(opened().on_msg(hello(), 0).is_err());
        assert!(opened().on_msg(stream(1, 1, 0), 0).is_err());
        let mut d = opened();
        d.on_msg(stream(1, 0, 0), 0).unwrap();
        d.move_ended(None, Ok(())).unwrap();
        assert!(d.on_msg(stream(1, 1, 0), 0).is_err(), "no resume was asked");
        assert!(
            d.on_msg(
                Msg::StreamLost {
                    round: 2,
                    attempt: 0
                },
                0
            )
            .is_err()
        );
        // During a part's receive only the next part may come.
        let mut d = opened();
        d.on_msg(round(1, 0), 0).unwrap();
        assert_eq!(d.early(&commit()), Early::Unexpected);
        assert!(d.on_msg(round(1, 1), 0).is_err(), "a move is running");
        assert!(d.move_ended(Some(commit()), Ok(())).is_err());
        // A bad hash, an abort.
        let bad = Msg::Commit {
            len: 1,
            hash: "zz".into(),
        };
        assert!(opened().on_msg(bad, 0).is_err());
        assert!(matches!(
            opened().on_msg(
                Msg::Abort {
                    reason: "stop".into()
                },
                0
            ),
            Err(MigrateError::Aborted(_))
        ));
        assert!(DestRound::new().move_ended(None, Ok(())).is_err());
    }

    #[test]
    fn a_failed_part_receive_fails_the_job_and_counts_no_round() {
        let mut d = opened();
        d.on_msg(round(1, 0), 0).unwrap();
        assert!(
            d.move_ended(None, Err(MigrateError::Unexpected("gone".into())))
                .is_err()
        );
        assert_eq!(d.rounds(), 0);
    }

    #[test]
    fn the_final_round_comes_when_a_round_is_small_or_the_rounds_run_out() {
        let gib = 1u64 << 30;
        // 1/256 of 1 GiB = 4 MiB.
        assert!(next_is_final(1, 4 << 20, gib, 0, 30));
        assert!(!next_is_final(1, (4 << 20) + 1, gib, 0, 30));
        // Small images converge at 1 MiB.
        assert!(next_is_final(1, 1 << 20, 16 << 20, 0, 30));
        assert!(!next_is_final(1, 2 << 20, 16 << 20, 0, 30));
        // An explicit threshold.
        assert!(next_is_final(3, 100, gib, 100, 30));
        assert!(!next_is_final(3, 101, gib, 100, 30));
        // The last allowed round comes whatever it moves; 0 rounds means 1.
        assert!(next_is_final(29, gib, gib, 0, 30));
        assert!(!next_is_final(28, gib, gib, 0, 30));
        assert!(next_is_final(1, gib, gib, 0, 0));
    }
}
