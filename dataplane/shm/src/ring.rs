//! Single-producer single-consumer rings of fixed 64-byte slots in the shared region.
//!
//! Owns the head/tail protocol: the producer writes a slot's words (Relaxed) then publishes
//! `head + 1` with Release; the consumer loads `head` with Acquire, reads the slot, then
//! publishes `tail + 1` with Release, which the producer loads with Acquire before reusing a
//! slot. `head` and `tail` are free-running `u64` positions kept in the region (each on its
//! own cache line), so a restarted producer continues at the stored head and a restarted
//! consumer at the stored tail. After publishing `head` the producer issues a futex wake on
//! the head word (a doorbell), so a consumer in [`Consumer::wait`] need not poll. Does not decide who may be producer or consumer: the
//! [`crate::Region`] attach functions hand out exactly one of each per ring.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::error::{DecodeError, RingFull, ShmError};
use crate::layout::{LINE_WORDS, RING_CTRL_BYTES, SLOT_WORDS};
use crate::mapping::Mapping;
use crate::message::{Message, Words};
use crate::region::RoleGuard;

#[derive(Debug, Clone)]
pub(crate) struct RingRef {
    pub(crate) map: Arc<Mapping>,
    /// Word index of the head word.
    pub(crate) head_w: usize,
    /// Word index of the tail word.
    pub(crate) tail_w: usize,
    /// Word index of slot 0.
    pub(crate) slots_w: usize,
    pub(crate) slots: u64,
    pub(crate) name: &'static str,
}

impl RingRef {
    pub(crate) fn new(map: Arc<Mapping>, off_bytes: usize, slots: u32, name: &'static str) -> Self {
        let base = off_bytes / 8;
        Self {
            map,
            head_w: base,
            tail_w: base + LINE_WORDS,
            slots_w: base + RING_CTRL_BYTES / 8,
            slots: u64::from(slots),
            name,
        }
    }

    pub(crate) fn positions(&self) -> (u64, u64) {
        let w = self.map.words();
        // Tail first: a tail read before head can never exceed that head.
        let tail = w[self.tail_w].load(Acquire);
        let head = w[self.head_w].load(Acquire);
        (head, tail)
    }

    pub(crate) fn check(&self) -> Result<(u64, u64), ShmError> {
        let (head, tail) = self.positions();
        if tail > head || head - tail > self.slots {
            return Err(ShmError::RingCorrupt {
                ring: self.name,
                head,
                tail,
                slots: self.slots,
            });
        }
        Ok((head, tail))
    }

    fn slot_w(&self, pos: u64) -> usize {
        self.slots_w + ((pos & (self.slots - 1)) as usize) * SLOT_WORDS
    }
}

/// Writing end of a ring. Exactly one exists per ring in the system while its side is attached.
#[derive(Debug)]
pub struct Producer<M> {
    ring: RingRef,
    head: u64,
    cached_tail: u64,
    _guard: Arc<RoleGuard>,
    _m: PhantomData<fn(M)>,
}

impl<M: Message> Producer<M> {
    pub(crate) fn new(ring: RingRef, guard: Arc<RoleGuard>) -> Result<Self, ShmError> {
        let (head, tail) = ring.check()?;
        Ok(Self {
            ring,
            head,
            cached_tail: tail,
            _guard: guard,
            _m: PhantomData,
        })
    }

    /// Appends a message; returns its sequence number (ring position). Never blocks: a full
    /// ring is an error and nothing is written.
    pub fn push(&mut self, msg: &M) -> Result<u64, RingFull> {
        let slots = self.ring.slots;
        if self.head - self.cached_tail >= slots {
            self.cached_tail = self.ring.map.words()[self.ring.tail_w].load(Acquire);
            if self.head - self.cached_tail >= slots {
                return Err(RingFull {
                    ring: M::RING,
                    slots,
                });
            }
        }
        let seq = self.head;
        let enc = msg.encode();
        let words = self.ring.map.words();
        let s = self.ring.slot_w(seq);
        let slot = &words[s..s + SLOT_WORDS];
        slot[0].store(seq, Relaxed);
        for (dst, v) in slot[1..].iter().zip(enc) {
            dst.store(v, Relaxed);
        }
        // Release: the slot words above become visible before the new head.
        words[self.ring.head_w].store(seq + 1, Release);
        self.head = seq + 1;
        // Doorbell: a consumer sleeping in `Consumer::wait` wakes now instead of at its timeout.
        crate::sys::futex_wake(&words[self.ring.head_w]);
        Ok(seq)
    }

    /// Messages written and not yet consumed (may be stale by the time it returns).
    pub fn lag(&self) -> u64 {
        self.head - self.ring.map.words()[self.ring.tail_w].load(Acquire)
    }

    /// Sequence number the next push will get.
    pub fn next_seq(&self) -> u64 {
        self.head
    }
}

/// One message taken from a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<M> {
    /// Ring position; strictly increasing by one per message over the ring's whole life,
    /// across restarts of either side. Consumers that must survive a crash between applying a
    /// message and committing it store the last applied `seq` with their own state.
    pub seq: u64,
    /// The message, or why its slot could not be decoded (the slot is consumed either way).
    pub msg: Result<M, DecodeError>,
}

/// Reading end of a ring. Exactly one exists per ring while its side is attached.
///
/// Reading and consuming are separate: [`Consumer::next`] reads at a private cursor,
/// [`Consumer::commit`] publishes everything read so far as consumed (only then may the
/// producer reuse those slots). A consumer that dies between the two sees the uncommitted
/// messages again after a restart, with the same `seq`.
#[derive(Debug)]
pub struct Consumer<M> {
    ring: RingRef,
    /// Committed position (mirror of the tail word).
    tail: u64,
    /// Read cursor, `tail <= read <= head`.
    read: u64,
    cached_head: u64,
    _guard: Arc<RoleGuard>,
    _m: PhantomData<fn() -> M>,
}

impl<M: Message> Consumer<M> {
    pub(crate) fn new(ring: RingRef, guard: Arc<RoleGuard>) -> Result<Self, ShmError> {
        let (head, tail) = ring.check()?;
        Ok(Self {
            ring,
            tail,
            read: tail,
            cached_head: head,
            _guard: guard,
            _m: PhantomData,
        })
    }

    /// Reads the next message at the read cursor without consuming it.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Received<M>> {
        if self.read == self.cached_head {
            // Acquire: pairs with the producer's Release store of head, so the slot words
            // written before it are visible below.
            self.cached_head = self.ring.map.words()[self.ring.head_w].load(Acquire);
            if self.read == self.cached_head {
                return None;
            }
        }
        let words = self.ring.map.words();
        let s = self.ring.slot_w(self.read);
        let slot = &words[s..s + SLOT_WORDS];
        let seq = slot[0].load(Relaxed);
        let mut enc: Words = [0; 7];
        for (d, w) in enc.iter_mut().zip(&slot[1..]) {
            *d = w.load(Relaxed);
        }
        let msg = if seq != self.read {
            Err(DecodeError::SeqMismatch {
                found: seq,
                expected: self.read,
            })
        } else {
            M::decode(&enc)
        };
        self.read += 1;
        Some(Received {
            seq: self.read - 1,
            msg,
        })
    }

    /// Sleeps until a message may be available at the read cursor, or `timeout` passes.
    /// Returns at once when one already is. The producer's push wakes the sleeper (a futex on
    /// the head word, shared between processes), so a command is seen within microseconds
    /// rather than a poll period; the timeout bounds the sleep if the producer is an older
    /// build that does not wake. May return early (spuriously); call [`Consumer::next`].
    pub fn wait(&mut self, timeout: std::time::Duration) {
        let head = &self.ring.map.words()[self.ring.head_w];
        let now = head.load(Acquire);
        if now != self.read {
            self.cached_head = now;
            return;
        }
        // The kernel compares the low 32 bits of head with those of the read cursor; a push
        // between the load above and the sleep changes them, so the wait returns at once.
        crate::sys::futex_wait(head, self.read as u32, timeout);
    }

    /// Consumes every message read so far.
    pub fn commit(&mut self) {
        if self.read != self.tail {
            self.tail = self.read;
            // Release: our reads of the slots happen before the producer may reuse them.
            self.ring.map.words()[self.ring.tail_w].store(self.tail, Release);
        }
    }

    /// Moves the read cursor back to the last commit (re-read uncommitted messages).
    pub fn rewind(&mut self) {
        self.read = self.tail;
    }

    /// Reads and consumes the next message.
    pub fn pop(&mut self) -> Option<Received<M>> {
        let r = self.next()?;
        self.commit();
        Some(r)
    }

    /// Messages written and not yet committed (may be stale by the time it returns).
    pub fn lag(&self) -> u64 {
        self.ring.map.words()[self.ring.head_w].load(Acquire) - self.tail
    }

    /// Sequence number of the next message [`Consumer::next`] returns.
    pub fn next_seq(&self) -> u64 {
        self.read
    }
}
