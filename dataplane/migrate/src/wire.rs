//! The control conversation between source and destination: one JSON object per line over
//! a TCP connection the source opens.
//!
//! Owns the message set ([`Msg`]) and a line reader that can be polled with a timeout
//! ([`Conn::poll`]) so a side waiting for the peer still notices its cancel flag. Does not
//! carry bulk data: patches and manifests are objects moved by a [`crate::Mover`].
//!
//! Sequence (S = source, D = destination):
//! ```text
//! S: Hello{version, job_id, block_size}
//! D: HelloAck{version, held_len?, held_hash?}         what D's image is now (or nothing)
//! [S: ManifestRequest{object_id}  once S receives;  D sends its per-block hashes as an object]
//! repeat per round, and per part of a round (part 0, 1, ...):
//!   S: Round{round, part, object_id, patch_len, blocks, data_bytes, last}
//!   D: Ready{round, part}                             D receives; S sends the patch object
//!   D: Applied{round, part}                           patch applied to D's journal
//! (pipelined: S announces part i+1 as soon as part i's move ends, without waiting for
//! Applied{i}; D applies part i on a second thread while part i+1 arrives, so Applied
//! messages may arrive while S waits for a Ready or moves the next part)
//! or, for a pipelined round when the movers carry streams (version 4):
//!   S: Stream{round, stream_id}
//!   D: Ready{round, part: STREAM_PART}                D receives; S sends every part of the
//!                                                     round as one stream (crate::partstream)
//!   D: Applied{round, part}                           per part, as each is applied
//!   (version 5: a stream that fails is resumed, at most twice per round:
//!    S: StreamLost{round, attempt} when its send failed first, and/or
//!    D: Resume{round, attempt, part}                  D's receive ended without the end
//!    S: Stream{round, stream_id', attempt + 1, first_part: part}, and on as above)
//! S: Commit{len, hash}
//! D: Committed{len, phases} | Failed{reason}          new image verified and in place
//! either side, any time: Abort{reason}                D drops its working copy
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest accepted line.
pub const MAX_LINE: usize = 64 * 1024;

/// The part number of `Ready` that answers a `Stream`.
pub const STREAM_PART: u32 = u32::MAX;

/// A control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", deny_unknown_fields)]
pub enum Msg {
    /// S opens.
    Hello {
        /// [`crate::PROTOCOL_VERSION`].
        version: u32,
        /// Job id (logs, object ids).
        job_id: u64,
        /// Block size of manifests and patches.
        block_size: u32,
    },
    /// D answers with what it holds.
    HelloAck {
        /// D's protocol version.
        version: u32,
        /// Length of D's current image, if it has one.
        held_len: Option<u64>,
        /// Its XXH3-128, 32 hex digits.
        held_hash: Option<String>,
    },
    /// S is receiving; D sends its manifest as object `object_id`.
    ManifestRequest {
        /// Object id.
        object_id: u64,
    },
    /// S is about to send a round's patch.
    Round {
        /// Round number (1-based).
        round: u32,
        /// Part of the round (0-based; a round cut into parts moves one patch per part).
        #[serde(default)]
        part: u32,
        /// Object id of the patch.
        object_id: u64,
        /// Patch bytes.
        patch_len: u64,
        /// Dirty blocks.
        blocks: u64,
        /// Image bytes they cover.
        data_bytes: u64,
        /// The final round (after the switchover pause).
        last: bool,
    },
    /// S is about to send every part of pipelined round `round` as one stream
    /// ([`crate::partstream`]) with id `stream_id`.
    Stream {
        /// Round number.
        round: u32,
        /// Stream id (the transport's, as an object id is).
        stream_id: u64,
        /// 0 for the round's first stream; n for its n-th resumed stream.
        #[serde(default)]
        attempt: u32,
        /// The part the stream starts with (a resumed stream starts at D's `Resume::part`).
        #[serde(default)]
        first_part: u32,
        /// The parts are one zstd stream ([`crate::partzstd`]): D decodes each part's
        /// stretch, in order, with one decoder for the round.
        #[serde(default)]
        zstd: bool,
    },
    /// S: my send of stream `attempt` of round `round` failed; where should the next one
    /// start? (Not sent when D's `Resume` for that attempt came first.)
    StreamLost {
        /// Round.
        round: u32,
        /// The failed stream.
        attempt: u32,
    },
    /// D: stream `attempt` of round `round` ended without its end (D's receive failed, or S
    /// said `StreamLost`); D holds every part before `part` whole. Sent once per attempt.
    Resume {
        /// Round.
        round: u32,
        /// The failed stream.
        attempt: u32,
        /// The first part D does not hold.
        part: u32,
    },
    /// D is receiving round `round` (part [`STREAM_PART`]: its stream).
    Ready {
        /// Round.
        round: u32,
        /// Part.
        #[serde(default)]
        part: u32,
    },
    /// D applied round `round`.
    Applied {
        /// Round.
        round: u32,
        /// Part.
        #[serde(default)]
        part: u32,
    },
    /// S: switch over to the image of this length and hash.
    Commit {
        /// Image length.
        len: u64,
        /// XXH3-128, 32 hex digits.
        hash: String,
    },
    /// D: verified and in place.
    Committed {
        /// Image length.
        len: u64,
        /// D's wall time per phase (name, seconds), for the source's report.
        #[serde(default)]
        phases: Vec<(String, f64)>,
    },
    /// D: a step failed; the image is unchanged.
    Failed {
        /// Why.
        reason: String,
    },
    /// Stop; D drops its working copy.
    Abort {
        /// Why.
        reason: String,
    },
}

/// Errors of the control connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Socket error.
    #[error("control connection")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the control connection")]
    Closed,
    /// A line that is not a message.
    #[error("bad control message {line:?}")]
    Bad {
        /// The line (truncated).
        line: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A line longer than [`MAX_LINE`].
    #[error("control line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// One side of the control connection.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl Conn {
    /// Wraps a connected stream; reads time out after `poll` so [`Conn::poll`] returns.
    pub fn new(stream: TcpStream, poll: Duration) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(poll))?;
        let writer = stream.try_clone()?;
        Ok(Conn {
            reader: BufReader::new(stream),
            writer,
            line: String::new(),
        })
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Msg) -> Result<(), WireError> {
        let mut s = serde_json::to_string(m).map_err(|source| WireError::Bad {
            line: format!("{m:?}"),
            source,
        })?;
        s.push('\n');
        self.writer.write_all(s.as_bytes())?;
        Ok(())
    }

    /// A sender handle for use while another thread polls.
    pub fn writer(&self) -> std::io::Result<TcpStream> {
        self.writer.try_clone()
    }

    /// The next message, or `None` if none arrived within the poll timeout.
    pub fn poll(&mut self) -> Result<Option<Msg>, WireError> {
        match self.reader.read_line(&mut self.line) {
            Ok(0) => Err(WireError::Closed),
            Ok(_) if self.line.ends_with('\n') => {
                let line = std::mem::take(&mut self.line);
                serde_json::from_str(line.trim_end())
                    .map(Some)
                    .map_err(|source| WireError::Bad {
                        line: line.chars().take(200).collect(),
                        source,
                    })
            }
            Ok(_) => Err(WireError::Closed),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if self.line.len() > MAX_LINE {
                    return Err(WireError::TooLong);
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Sends `m` on a writer handle.
pub fn send_on(w: &mut TcpStream, m: &Msg) -> Result<(), WireError> {
    let mut s = serde_json::to_string(m).map_err(|source| WireError::Bad {
        line: format!("{m:?}"),
        source,
    })?;
    s.push('\n');
    w.write_all(s.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_fields_are_refused() {
        let m = Msg::Round {
            round: 2,
            part: 3,
            object_id: 7,
            patch_len: 9,
            blocks: 1,
            data_bytes: 4096,
            last: true,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Msg>(&s).unwrap(), m);
        assert!(serde_json::from_str::<Msg>(r#"{"t":"Ready","round":1,"x":2}"#).is_err());
    }
}
