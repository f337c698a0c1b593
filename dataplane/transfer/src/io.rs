//! The storage boundary of a transfer: [`Source`] (what the sender reads), [`Sink`] (where the
//! receiver writes) and [`Journal`] (which byte ranges of an object are durable in the sink), plus
//! shared in-memory implementations used by tests, the simulator and benchmarks.
//!
//! Does not do I/O scheduling or caching; a file- or block-device-backed implementation lives
//! with the engine that owns the file descriptors.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::rangeset::RangeSet;

/// The object to send, read at arbitrary offsets.
pub trait Source: std::fmt::Debug + Send {
    /// Object length in bytes.
    fn len(&self) -> u64;
    /// True for an empty object.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from `offset`; returns bytes read (short only at the end of the object).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// What identifies this version of the object without reading it (a file: device,
    /// inode, length, modification and change times), as a 128-bit key that changes
    /// whenever the object may have. It keys the receiver's resume journal under
    /// LATE_DIGEST, so the sender need not hash the whole object before HELLO. `None`: no
    /// such identity; the sender hashes the object first.
    fn identity(&self) -> Option<u128> {
        None
    }
}

/// Where received chunks go.
pub trait Sink: std::fmt::Debug + Send {
    /// Write `data` at `offset` (chunks arrive in any order, possibly twice).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make everything written so far durable (fsync-like).
    fn flush_durable(&mut self) -> io::Result<()>;
    /// Read back (used for the final hash check, which also covers data from earlier sessions).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// A HELLO named `object_id` of `len` bytes (called before the journal's `begin`, for a
    /// new object or a new version of one). A sink that places objects in a larger file
    /// learns from it where; offsets passed to the other methods stay object-relative.
    fn begin_object(&mut self, object_id: u64, len: u64) -> io::Result<()> {
        let _ = (object_id, len);
        Ok(())
    }
}

/// Persistent record of which byte ranges of an object are durable in the sink.
pub trait Journal: std::fmt::Debug + Send {
    /// Start (or resume) receiving `object_id` of `len` bytes hashing to `hash`. Returns the
    /// durable byte ranges recorded for this exact object; a journal holding another version of
    /// the object (different length or hash) forgets it and returns nothing.
    fn begin(&mut self, object_id: u64, len: u64, hash: u128) -> io::Result<Vec<Range<u64>>>;
    /// Record that `range` of `object_id` is durable (called only after `Sink::flush_durable`).
    fn record_durable(&mut self, object_id: u64, range: Range<u64>) -> io::Result<()>;
    /// Forget everything recorded for `object_id`: its bytes did not verify, so none of them
    /// may be resumed from.
    fn forget(&mut self, object_id: u64) -> io::Result<()>;
}

/// An in-memory object to send.
#[derive(Debug, Clone)]
pub struct MemSource {
    data: Arc<Vec<u8>>,
    identity: Option<u128>,
}

impl MemSource {
    /// Wrap a byte vector.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data: Arc::new(data),
            identity: None,
        }
    }

    /// The same source with an identity ([`Source::identity`]): a sender offers LATE_DIGEST.
    #[must_use]
    pub fn with_identity(mut self, identity: u128) -> Self {
        self.identity = Some(identity);
        self
    }
}

impl Source for MemSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset"))?
            .min(self.data.len());
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }
    fn identity(&self) -> Option<u128> {
        self.identity
    }
}

#[derive(Debug, Default)]
struct MemSinkInner {
    data: Vec<u8>,
    unflushed: Vec<Range<u64>>,
    writes: u64,
    bytes_written: u64,
    flushes: u64,
}

/// An in-memory sink. Clones share the same storage, so a test can keep a handle while a
/// receiver owns another. It models durability: [`MemSink::crash`] zeroes every range written
/// since the last `flush_durable` (as if those writes never reached the disk).
#[derive(Debug, Clone, Default)]
pub struct MemSink {
    inner: Arc<Mutex<MemSinkInner>>,
}

impl MemSink {
    /// Empty sink.
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> MutexGuard<'_, MemSinkInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Copy of the current content.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().data.clone()
    }
    /// Moves the content out (the sink is empty afterwards), without a copy: for an owner
    /// that is done with a verified object.
    pub fn take_contents(&self) -> Vec<u8> {
        let mut g = self.lock();
        g.unflushed.clear();
        std::mem::take(&mut g.data)
    }
    /// Simulate a power loss: writes not yet flushed are lost (zeroed).
    pub fn crash(&self) {
        let mut g = self.lock();
        let ranges = std::mem::take(&mut g.unflushed);
        for r in ranges {
            let end = (r.end as usize).min(g.data.len());
            let start = (r.start as usize).min(end);
            g.data[start..end].fill(0);
        }
    }
    /// Overwrite bytes directly (test helper to model a corrupted disk).
    pub fn poke(&self, offset: usize, bytes: &[u8]) {
        let mut g = self.lock();
        let end = offset + bytes.len();
        if g.data.len() < end {
            g.data.resize(end, 0);
        }
        g.data[offset..end].copy_from_slice(bytes);
    }
    /// (write calls, bytes written, flushes).
    pub fn counters(&self) -> (u64, u64, u64) {
        let g = self.lock();
        (g.writes, g.bytes_written, g.flushes)
    }
}

impl Sink for MemSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut g = self.lock();
        let off = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset"))?;
        let end = off + data.len();
        if g.data.len() < end {
            g.data.resize(end, 0);
        }
        g.data[off..end].copy_from_slice(data);
        g.unflushed.push(offset..offset + data.len() as u64);
        g.writes += 1;
        g.bytes_written += data.len() as u64;
        Ok(())
    }
    fn flush_durable(&mut self) -> io::Result<()> {
        let mut g = self.lock();
        g.unflushed.clear();
        g.flushes += 1;
        Ok(())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let g = self.lock();
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset"))?
            .min(g.data.len());
        let n = buf.len().min(g.data.len() - start);
        buf[..n].copy_from_slice(&g.data[start..start + n]);
        Ok(n)
    }
}

#[derive(Debug, Default)]
struct JournalEntry {
    len: u64,
    hash: u128,
    ranges: RangeSet,
}

/// An in-memory journal; clones share state (it stands for a file that survives a restart).
#[derive(Debug, Clone, Default)]
pub struct MemJournal {
    inner: Arc<Mutex<std::collections::HashMap<u64, JournalEntry>>>,
}

impl MemJournal {
    /// Empty journal.
    pub fn new() -> Self {
        Self::default()
    }
    /// Durable byte ranges recorded for `object_id`.
    pub fn ranges(&self, object_id: u64) -> Vec<Range<u64>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.get(&object_id)
            .map(|e| e.ranges.iter().collect())
            .unwrap_or_default()
    }
    /// Total durable bytes recorded for `object_id`.
    pub fn durable_bytes(&self, object_id: u64) -> u64 {
        self.ranges(object_id).iter().map(|r| r.end - r.start).sum()
    }
}

impl Journal for MemJournal {
    fn begin(&mut self, object_id: u64, len: u64, hash: u128) -> io::Result<Vec<Range<u64>>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = g.entry(object_id).or_default();
        if e.len != len || e.hash != hash {
            *e = JournalEntry {
                len,
                hash,
                ranges: RangeSet::default(),
            };
        }
        Ok(e.ranges.iter().collect())
    }
    fn record_durable(&mut self, object_id: u64, range: Range<u64>) -> io::Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(object_id).or_default().ranges.insert(range);
        Ok(())
    }
    fn forget(&mut self, object_id: u64) -> io::Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.remove(&object_id);
        Ok(())
    }
}
