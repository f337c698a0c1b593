//! The seam between migration rounds and the transport: a [`Mover`] moves one file as one
//! object to the peer (`send`) or receives one (`recv`), and, if it can, one ordered byte
//! stream (`send_stream`/`recv_stream`: a pipelined round's parts, end to end).
//!
//! Owns the trait and [`TcpMover`], a plain-TCP implementation (length-prefixed file over a
//! fresh connection; a stream is one connection) used as a fallback and by this crate's
//! tests. The appliance's DWCP
//! implementation lives in `dwcp-engine` (`runner::RunnerMover`), which depends on this
//! crate; this crate does not depend on the engine.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Progress of one move.
#[derive(Debug, Clone, Copy, Default)]
pub struct MoveProgress {
    /// Object bytes the receiver acknowledged (sender) or wrote (receiver).
    pub object_bytes: u64,
    /// Bytes put on the wire so far (datagram bytes: headers, retransmissions included).
    pub wire_bytes: u64,
}

/// A finished move.
#[derive(Debug, Clone, Default)]
pub struct MoveReport {
    /// Object length.
    pub object_len: u64,
    /// Bytes this side put on the wire.
    pub wire_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Free text (backend, mode, version) for logs.
    pub detail: String,
    /// AEAD suite of the move (`None`: unsealed, or a transport without sealing).
    pub sealed: Option<&'static str>,
}

/// Why a move failed.
#[derive(Debug, Error)]
pub enum MoveError {
    /// The cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// The transport failed.
    #[error("{what}")]
    Failed {
        /// What failed.
        what: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl MoveError {
    /// A failure with a cause.
    pub fn failed(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        MoveError::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Moves whole files as objects between the two appliances.
pub trait Mover {
    /// Sends the file at `path` as object `object_id`; the peer is already receiving (its
    /// `recv` called `ready`). Returns once the peer holds the verified object.
    fn send(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, MoveError>;

    /// Receives object `object_id` into `path` (which appears only once complete). Calls
    /// `ready` once, as soon as the peer may start sending.
    fn recv(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError>;

    /// [`Mover::recv`] whose linger after completion (a transport that keeps answering for a
    /// while so a peer that missed its final acknowledgement hears it again) ends as soon as
    /// `next` is set. The session sets it when the peer announced its next object, which the
    /// peer does only after its send of this one verified: it needs no more answers, and the
    /// next object's receive should not wait out the linger. Default: [`Mover::recv`].
    fn recv_until_next(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        next: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError> {
        let _ = next;
        self.recv(path, object_id, cancel, ready)
    }

    /// Whether this mover carries a byte stream ([`Mover::send_stream`],
    /// [`Mover::recv_stream`]). A pipelined round then moves all its parts as one ordered
    /// stream instead of one object per part. Default: no.
    fn streams(&self) -> bool {
        false
    }

    /// Carries everything `input` yields, in order, to the peer's [`Mover::recv_stream`] of
    /// stream `stream_id` (the peer is already receiving). Returns once the peer holds all of
    /// it, verified. `progress` is called now and then from the calling thread with the
    /// stream bytes taken from `input` so far (`object_bytes`) and the wire bytes. Default:
    /// unsupported.
    fn send_stream(
        &mut self,
        input: Box<dyn Read + Send>,
        stream_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, MoveError> {
        let _ = (input, stream_id, cancel, progress);
        Err(MoveError::failed(
            "send_stream",
            "this mover carries no streams",
        ))
    }

    /// Receives stream `stream_id` and writes it, in order and verified, to `output`; calls
    /// `ready` once, as soon as the peer may start sending. Returns after the end of the
    /// stream was written and `output` flushed; a linger after that ends once `next` is set
    /// (as for [`Mover::recv_until_next`]). Default: unsupported.
    fn recv_stream(
        &mut self,
        output: Box<dyn Write + Send>,
        stream_id: u64,
        cancel: &AtomicBool,
        next: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError> {
        let _ = (output, stream_id, cancel, next, ready);
        Err(MoveError::failed(
            "recv_stream",
            "this mover carries no streams",
        ))
    }
}

/// Objects over plain TCP: a connection per object carrying `object_id u64, len u64`, the
/// bytes, then a one-byte acknowledgement from the receiver after it synced the file.
#[derive(Debug)]
pub struct TcpMover {
    listener: TcpListener,
    peer: SocketAddr,
}

impl TcpMover {
    /// A mover that listens on `listener` and sends to `peer` (the other side's listener).
    pub fn new(listener: TcpListener, peer: SocketAddr) -> Self {
        TcpMover { listener, peer }
    }

    /// The next connection to the listener (blocking, but the cancel flag is checked).
    fn accept(&self, cancel: &AtomicBool) -> Result<TcpStream, MoveError> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| MoveError::failed("listener", e))?;
        let s = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(MoveError::Cancelled);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(MoveError::failed("accept", e)),
            }
        };
        s.set_nonblocking(false)
            .map_err(|e| MoveError::failed("socket", e))?;
        Ok(s)
    }

    /// [`TcpMover::accept`], then the id the peer opens with must be `want` (`what`:
    /// "object" or "stream").
    fn accept_checked(
        &self,
        cancel: &AtomicBool,
        what: &str,
        want: u64,
    ) -> Result<TcpStream, MoveError> {
        let s = self.accept(cancel)?;
        let mut h = [0u8; 8];
        (&s).read_exact(&mut h)
            .map_err(|e| MoveError::failed("tcp read", e))?;
        let id = u64::from_be_bytes(h);
        if id != want {
            return Err(MoveError::failed(
                format!("expected {what} {want}, peer sent {id}"),
                format!("{what} id mismatch"),
            ));
        }
        Ok(s)
    }
}

const TCP_HEADER: u64 = 16;

impl Mover for TcpMover {
    fn send(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, MoveError> {
        let start = Instant::now();
        let mut f = std::fs::File::open(path).map_err(|e| MoveError::failed("opening", e))?;
        let len = f
            .metadata()
            .map_err(|e| MoveError::failed("stat", e))?
            .len();
        let s = TcpStream::connect(self.peer).map_err(|e| MoveError::failed("connect", e))?;
        let mut w = BufWriter::with_capacity(1 << 20, &s);
        let werr = |e| MoveError::failed("tcp write", e);
        w.write_all(&object_id.to_be_bytes()).map_err(werr)?;
        w.write_all(&len.to_be_bytes()).map_err(werr)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(MoveError::Cancelled);
            }
            let n = f
                .read(&mut buf)
                .map_err(|e| MoveError::failed("reading", e))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).map_err(werr)?;
            done += n as u64;
            progress(&MoveProgress {
                object_bytes: done,
                wire_bytes: done + TCP_HEADER,
            });
        }
        w.flush().map_err(werr)?;
        drop(w);
        let mut ack = [0u8; 1];
        (&s).read_exact(&mut ack)
            .map_err(|e| MoveError::failed("waiting for the receiver's acknowledgement", e))?;
        Ok(MoveReport {
            object_len: len,
            wire_bytes: len + TCP_HEADER,
            elapsed: start.elapsed(),
            detail: "tcp".into(),
            sealed: None,
        })
    }

    fn recv(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError> {
        let start = Instant::now();
        ready();
        let s = self.accept_checked(cancel, "object", object_id)?;
        let rerr = |e| MoveError::failed("tcp read", e);
        let mut r = BufReader::with_capacity(1 << 20, &s);
        let mut h = [0u8; 8];
        r.read_exact(&mut h).map_err(rerr)?;
        let len = u64::from_be_bytes(h);
        let mut part = path.as_os_str().to_os_string();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let mut f = std::fs::File::create(&part).map_err(|e| MoveError::failed("creating", e))?;
        let copied = std::io::copy(&mut (&mut r).take(len), &mut f).map_err(rerr)?;
        if copied != len {
            return Err(MoveError::failed("short object", "connection closed early"));
        }
        f.sync_all().map_err(|e| MoveError::failed("sync", e))?;
        std::fs::rename(&part, path).map_err(|e| MoveError::failed("rename", e))?;
        (&s).write_all(&[1])
            .map_err(|e| MoveError::failed("ack", e))?;
        Ok(MoveReport {
            object_len: len,
            wire_bytes: 1,
            elapsed: start.elapsed(),
            detail: "tcp".into(),
            sealed: None,
        })
    }

    fn streams(&self) -> bool {
        true
    }

    /// The stream over one connection: `stream_id u64`, the bytes, the sender's half-close;
    /// then a one-byte acknowledgement from the receiver after it flushed its output.
    fn send_stream(
        &mut self,
        mut input: Box<dyn Read + Send>,
        stream_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, MoveError> {
        let start = Instant::now();
        let s = TcpStream::connect(self.peer).map_err(|e| MoveError::failed("connect", e))?;
        let werr = |e| MoveError::failed("tcp write", e);
        (&s).write_all(&stream_id.to_be_bytes()).map_err(werr)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(MoveError::Cancelled);
            }
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(MoveError::failed("reading the stream's input", e)),
            };
            if n == 0 {
                break;
            }
            (&s).write_all(&buf[..n]).map_err(werr)?;
            done += n as u64;
            progress(&MoveProgress {
                object_bytes: done,
                wire_bytes: done + 8,
            });
        }
        s.shutdown(std::net::Shutdown::Write).map_err(werr)?;
        let mut ack = [0u8; 1];
        (&s).read_exact(&mut ack)
            .map_err(|e| MoveError::failed("waiting for the receiver's acknowledgement", e))?;
        Ok(MoveReport {
            object_len: done,
            wire_bytes: done + 8,
            elapsed: start.elapsed(),
            detail: "tcp stream".into(),
            sealed: None,
        })
    }

    fn recv_stream(
        &mut self,
        mut output: Box<dyn Write + Send>,
        stream_id: u64,
        cancel: &AtomicBool,
        _next: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError> {
        let start = Instant::now();
        ready();
        let s = self.accept_checked(cancel, "stream", stream_id)?;
        let mut r = BufReader::with_capacity(1 << 20, &s);
        let len = std::io::copy(&mut r, &mut output)
            .map_err(|e| MoveError::failed("writing the stream's output", e))?;
        output
            .flush()
            .map_err(|e| MoveError::failed("flushing the stream's output", e))?;
        drop(output);
        (&s).write_all(&[1])
            .map_err(|e| MoveError::failed("ack", e))?;
        Ok(MoveReport {
            object_len: len,
            wire_bytes: 1,
            elapsed: start.elapsed(),
            detail: "tcp stream".into(),
            sealed: None,
        })
    }
}
