//! Fault injection for tests and failure drills: [`CutStreams`] wraps a [`Mover`] and breaks
//! its streams after a given number of bytes, as a link or a peer that goes away mid-round
//! would, so the session's stream resumption can be exercised over any transport.
//!
//! Owns nothing of the protocol; objects (`send`/`recv`) pass through untouched.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::mover::{MoveError, MoveProgress, MoveReport, Mover};

/// Bytes each stream carried, in order (source: taken from its input; destination: written
/// to its output).
type Carried = Arc<Mutex<Vec<u64>>>;

/// A [`Mover`] whose n-th stream breaks after `cuts[n]` bytes (`None`: it does not): the
/// source's input or the destination's output fails there, and the transport ends the
/// stream as it does for any failed input or output.
#[derive(Debug)]
pub struct CutStreams<M> {
    inner: M,
    cuts: Vec<Option<u64>>,
    streams: usize,
    carried: Carried,
}

impl<M> CutStreams<M> {
    /// `inner` whose n-th stream breaks after `cuts[n]` bytes.
    pub fn new(inner: M, cuts: &[Option<u64>]) -> Self {
        CutStreams {
            inner,
            cuts: cuts.to_vec(),
            streams: 0,
            carried: Carried::default(),
        }
    }

    /// Bytes each stream carried so far, in order.
    pub fn carried(&self) -> Vec<u64> {
        self.carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next stream's cut and its slot in `carried`.
    fn next_stream(&mut self) -> (Option<u64>, usize) {
        let cut = self.cuts.get(self.streams).copied().flatten();
        self.streams += 1;
        self.carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(0);
        (cut, self.streams - 1)
    }
}

/// Counts the bytes through it into `carried[slot]` and fails once `cut` were passed.
struct Cut<T> {
    inner: T,
    cut: Option<u64>,
    done: u64,
    carried: Carried,
    slot: usize,
}

impl<T> Cut<T> {
    /// How much of `want` may pass now.
    fn allow(&self, want: usize) -> std::io::Result<usize> {
        match self.cut {
            Some(c) if self.done >= c => Err(std::io::Error::other("stream cut by the test")),
            Some(c) => Ok(want.min((c - self.done) as usize)),
            None => Ok(want),
        }
    }
    fn count(&mut self, n: usize) {
        self.done += n as u64;
        self.carried.lock().unwrap_or_else(|p| p.into_inner())[self.slot] = self.done;
    }
}

impl<T: Read> Read for Cut<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.allow(buf.len())?;
        let n = self.inner.read(&mut buf[..n])?;
        self.count(n);
        Ok(n)
    }
}

impl<T: Write> Write for Cut<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.allow(buf.len())?;
        let n = self.inner.write(&buf[..n])?;
        self.count(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<M: Mover> Mover for CutStreams<M> {
    fn send(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, MoveError> {
        self.inner.send(path, object_id, cancel, progress)
    }
    fn recv(
        &mut self,
        path: &Path,
        object_id: u64,
        cancel: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError> {
        self.inner.recv(path, object_id, cancel, ready)
    }
    fn streams(&self) -> bool {
        true
    }
    fn send_stream(
        &mut self,
        input: Box<dyn Read + Send>,
        stream_id: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&MoveProgress),
    ) -> Result<MoveReport, MoveError> {
        let (cut, slot) = self.next_stream();
        let input = Cut {
            inner: input,
            cut,
            done: 0,
            carried: self.carried.clone(),
            slot,
        };
        self.inner
            .send_stream(Box::new(input), stream_id, cancel, progress)
    }
    fn recv_stream(
        &mut self,
        output: Box<dyn Write + Send>,
        stream_id: u64,
        cancel: &AtomicBool,
        next: &AtomicBool,
        ready: &mut dyn FnMut(),
    ) -> Result<MoveReport, MoveError> {
        let (cut, slot) = self.next_stream();
        let output = Cut {
            inner: output,
            cut,
            done: 0,
            carried: self.carried.clone(),
            slot,
        };
        self.inner
            .recv_stream(Box::new(output), stream_id, cancel, next, ready)
    }
}
