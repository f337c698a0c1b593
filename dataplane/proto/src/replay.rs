//! Sliding replay window over sequence numbers of one (connection, direction, stream).
//!
//! Owns the receiver-side rule of docs/protocol.md "Replay window": a frame is accepted once
//! per sequence number, and not at all when it is [`ReplayWindow::SIZE`] or more below the
//! highest accepted. It does not authenticate: mark a sequence number only after the frame's
//! CRC or AEAD tag has been verified, or a forged frame could burn a genuine number.

use crate::error::DropReason;

const WORDS: usize = 16;

/// A 1024-entry sliding window of accepted sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    highest: Option<u64>,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// Window size: sequence numbers this far or further below the highest accepted are
    /// refused.
    pub const SIZE: u64 = (WORDS as u64) * 64;

    /// An empty window.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            highest: None,
            bits: [0; WORDS],
        }
    }

    /// Highest sequence number accepted so far.
    #[must_use]
    pub const fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = (seq % Self::SIZE) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, m) = Self::slot(seq);
        self.bits.get(w).is_some_and(|b| b & m != 0)
    }

    fn set(&mut self, seq: u64, on: bool) {
        let (w, m) = Self::slot(seq);
        if let Some(b) = self.bits.get_mut(w) {
            if on {
                *b |= m;
            } else {
                *b &= !m;
            }
        }
    }

    /// `Err(DropReason::Replay)` when `seq` was accepted before or is too old; changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), DropReason> {
        match self.highest {
            None => Ok(()),
            Some(h) if seq > h => Ok(()),
            Some(h) if h - seq >= Self::SIZE => Err(DropReason::Replay),
            Some(_) if self.is_set(seq) => Err(DropReason::Replay),
            Some(_) => Ok(()),
        }
    }

    /// [`ReplayWindow::check`], then records `seq` as accepted.
    pub fn accept(&mut self, seq: u64) -> Result<(), DropReason> {
        self.check(seq)?;
        match self.highest {
            Some(h) if seq <= h => {}
            Some(h) if seq - h < Self::SIZE => {
                for s in h + 1..seq {
                    self.set(s, false);
                }
                self.highest = Some(seq);
            }
            _ => {
                self.bits = [0; WORDS];
                self.highest = Some(seq);
            }
        }
        self.set(seq, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_once_in_any_order_within_window() {
        let mut w = ReplayWindow::new();
        for s in [5u64, 3, 9, 4, 1000, 7] {
            assert_eq!(w.accept(s), Ok(()), "first {s}");
        }
        for s in [5u64, 3, 9, 4, 1000, 7] {
            assert_eq!(w.accept(s), Err(DropReason::Replay), "again {s}");
        }
        assert_eq!(w.accept(6), Ok(()));
        assert_eq!(w.highest(), Some(1000));
    }

    #[test]
    fn too_old_is_refused_and_window_slides() {
        let mut w = ReplayWindow::new();
        w.accept(10_000).unwrap();
        assert_eq!(
            w.check(10_000 - ReplayWindow::SIZE),
            Err(DropReason::Replay)
        );
        assert_eq!(w.check(10_000 - ReplayWindow::SIZE + 1), Ok(()));
        // A big jump forgets everything older.
        w.accept(50_000).unwrap();
        assert_eq!(w.check(10_000), Err(DropReason::Replay));
        // Slots reused after sliding must be clear: 50_000 + SIZE maps to the slot of 50_000.
        w.accept(50_000 + ReplayWindow::SIZE - 1).unwrap();
        assert_eq!(w.accept(50_001), Ok(()));
        assert_eq!(w.accept(50_000 + ReplayWindow::SIZE), Ok(()));
        assert_eq!(w.check(50_000), Err(DropReason::Replay));
    }

    #[test]
    fn matches_a_set_model() {
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        let mut highest = 0u64;
        // Deterministic pseudo-random walk with reordering and duplicates.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = (i + (x % 1500)).saturating_sub(700);
            let expect_ok = !seen.contains(&seq)
                && (seen.is_empty() || seq > highest || highest - seq < ReplayWindow::SIZE);
            assert_eq!(
                w.accept(seq).is_ok(),
                expect_ok,
                "seq {seq} highest {highest}"
            );
            if expect_ok {
                seen.insert(seq);
                highest = highest.max(seq);
            }
        }
    }
}
