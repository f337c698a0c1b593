//! The flag/rollout table: one writer (control), many readers (dataplane workers), guarded by
//! a seqlock so a reader never acts on a half-written table.
//!
//! Owns the table encoding, the seqlock protocol and the flow-bucketing rule that makes rollout
//! assignment consistent (a flow's bucket never changes, so raising the percentage only adds
//! flows to v3). Does not decide flag values or node targeting: the control process writes the
//! effective values for this node.
//!
//! Protocol (Boehm, "Can seqlocks get along with programming language memory models?"):
//! writer: `seq.store(odd, Relaxed); fence(Release); data.store(Relaxed)...;
//! seq.store(odd + 1, Release)`. Reader: `s1 = seq.load(Acquire)` (retry if odd);
//! `data.load(Relaxed)...; fence(Acquire); s2 = seq.load(Relaxed)`; the copy is good iff
//! `s1 == s2`.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::fence;

use crate::error::ShmError;
use crate::layout::{FLAG_ENTRY_WORDS, FLAG_NAME_MAX, LINE_WORDS, TABLE_HEADER_BYTES};
use crate::mapping::Mapping;
use crate::message::RolloutState;
use crate::region::RoleGuard;

/// Buckets per flow for percentage decisions: 10 000, so one bucket is one basis point.
pub const BUCKETS: u32 = 10_000;

/// The bucket of a flow, 0..10000. A fixed function of the flow id (SplitMix64 finaliser,
/// then modulo 10 000), identical in every process and every version of this ABI.
/// The dataplane uses the DWCP connection id (zero-extended) as the flow id.
pub fn flow_bucket(flow_id: u64) -> u32 {
    let mut z = flow_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % u64::from(BUCKETS)) as u32
}

/// Kind of flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlagKind {
    /// On or off.
    Bool = 0,
    /// On for `pct_bp` basis points of flows (by [`flow_bucket`]).
    Percent = 1,
}

/// One flag as the dataplane sees it (already resolved for this node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagEntry {
    /// Name, at most 32 bytes of UTF-8, no NUL.
    pub name: String,
    /// Kind.
    pub kind: FlagKind,
    /// Effective on/off for this node (false when node targeting excludes it).
    pub enabled: bool,
    /// Share of flows in basis points (Percent flags; 10000 for Bool).
    pub pct_bp: u16,
    /// Table generation at which this entry last changed.
    pub changed_generation: u64,
}

impl FlagEntry {
    /// Whether the flag is on for a flow.
    pub fn enabled_for(&self, flow_id: u64) -> bool {
        self.enabled
            && match self.kind {
                FlagKind::Bool => true,
                FlagKind::Percent => flow_bucket(flow_id) < u32::from(self.pct_bp),
            }
    }
}

/// Rollout position as the dataplane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutEntry {
    /// State.
    pub state: RolloutState,
    /// Stage index in the plan.
    pub stage: u32,
    /// Share of flows on v3, basis points.
    pub pct_bp: u32,
}

impl RolloutEntry {
    /// Whether a flow uses protocol v3 (else v1). Stable as `pct_bp` grows.
    pub fn uses_v3(&self, flow_id: u64) -> bool {
        flow_bucket(flow_id) < self.pct_bp
    }
}

/// What the writer publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableContent {
    /// Rollout position.
    pub rollout: RolloutEntry,
    /// Flags, at most the region's `flag_entries`.
    pub flags: Vec<FlagEntry>,
}

/// A consistent copy of the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSnapshot {
    /// Generation, +1 per publish, persistent in the region.
    pub generation: u64,
    /// The content.
    pub content: TableContent,
}

impl TableSnapshot {
    /// A flag by name.
    pub fn flag(&self, name: &str) -> Option<&FlagEntry> {
        self.content.flags.iter().find(|f| f.name == name)
    }
}

// Word offsets from the table base.
const T_SEQ: usize = 0;
const T_GENERATION: usize = LINE_WORDS;
const T_STATE: usize = LINE_WORDS + 1;
const T_STAGE: usize = LINE_WORDS + 2;
const T_PCT: usize = LINE_WORDS + 3;
const T_COUNT: usize = LINE_WORDS + 4;
const T_ENTRIES: usize = TABLE_HEADER_BYTES / 8;

fn encode_entry(f: &FlagEntry) -> Result<[u64; FLAG_ENTRY_WORDS], ShmError> {
    let b = f.name.as_bytes();
    if b.is_empty() || b.len() > FLAG_NAME_MAX || b.contains(&0) {
        return Err(ShmError::TableEncode {
            reason: format!("flag name {:?} must be 1..=32 bytes without NUL", f.name),
        });
    }
    if f.pct_bp > 10_000 {
        return Err(ShmError::TableEncode {
            reason: format!("flag {}: pct_bp {} > 10000", f.name, f.pct_bp),
        });
    }
    let mut name = [0u8; FLAG_NAME_MAX];
    name[..b.len()].copy_from_slice(b);
    let mut out = [0u64; FLAG_ENTRY_WORDS];
    for (i, chunk) in name.chunks_exact(8).enumerate() {
        out[i] = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
    }
    out[4] = f.kind as u64 | u64::from(f.enabled) << 8 | u64::from(f.pct_bp) << 16;
    out[5] = f.changed_generation;
    Ok(out)
}

fn decode_entry(w: &[u64]) -> Option<FlagEntry> {
    let mut name = [0u8; FLAG_NAME_MAX];
    for i in 0..4 {
        name[i * 8..i * 8 + 8].copy_from_slice(&w[i].to_le_bytes());
    }
    let len = name.iter().position(|&c| c == 0).unwrap_or(FLAG_NAME_MAX);
    let name = std::str::from_utf8(&name[..len]).ok()?.to_owned();
    let kind = match w[4] & 0xff {
        0 => FlagKind::Bool,
        1 => FlagKind::Percent,
        _ => return None,
    };
    Some(FlagEntry {
        name,
        kind,
        enabled: (w[4] >> 8) & 1 == 1,
        pct_bp: ((w[4] >> 16) & 0xffff) as u16,
        changed_generation: w[5],
    })
}

/// The single writer of the table (held by the control side).
#[derive(Debug)]
pub struct TableWriter {
    map: Arc<Mapping>,
    base: usize,
    capacity: u32,
    _guard: Arc<RoleGuard>,
}

impl TableWriter {
    pub(crate) fn new(
        map: Arc<Mapping>,
        base: usize,
        capacity: u32,
        guard: Arc<RoleGuard>,
    ) -> Self {
        Self {
            map,
            base,
            capacity,
            _guard: guard,
        }
    }

    /// Publishes a new table content with generation = previous + 1 and returns it. Entries
    /// are validated before anything is written, so an error leaves the table untouched.
    /// Recovers a table left odd (mid-write) by a writer that died.
    pub fn publish(&mut self, content: &TableContent) -> Result<u64, ShmError> {
        if content.flags.len() > self.capacity as usize {
            return Err(ShmError::TableEncode {
                reason: format!(
                    "{} flags exceed the table capacity {}",
                    content.flags.len(),
                    self.capacity
                ),
            });
        }
        if content.rollout.pct_bp > 10_000 {
            return Err(ShmError::TableEncode {
                reason: format!("rollout pct_bp {} > 10000", content.rollout.pct_bp),
            });
        }
        let encoded = content
            .flags
            .iter()
            .map(encode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let w = self.map.words();
        let t = &w[self.base..self.base + T_ENTRIES + self.capacity as usize * FLAG_ENTRY_WORDS];
        let odd = t[T_SEQ].load(Relaxed) | 1;
        t[T_SEQ].store(odd, Relaxed);
        fence(Release);
        let generation = t[T_GENERATION].load(Relaxed) + 1;
        t[T_GENERATION].store(generation, Relaxed);
        t[T_STATE].store(content.rollout.state as u64, Relaxed);
        t[T_STAGE].store(u64::from(content.rollout.stage), Relaxed);
        t[T_PCT].store(u64::from(content.rollout.pct_bp), Relaxed);
        t[T_COUNT].store(encoded.len() as u64, Relaxed);
        for (i, e) in encoded.iter().enumerate() {
            let b = T_ENTRIES + i * FLAG_ENTRY_WORDS;
            for (dst, v) in t[b..b + FLAG_ENTRY_WORDS].iter().zip(e) {
                dst.store(*v, Relaxed);
            }
        }
        t[T_SEQ].store(odd + 1, Release);
        Ok(generation)
    }

    /// Current generation (the writer's own view).
    pub fn generation(&self) -> u64 {
        self.map.words()[self.base + T_GENERATION].load(Relaxed)
    }
}

/// A reader of the table; needs no role, any number may exist.
#[derive(Debug, Clone)]
pub struct TableReader {
    pub(crate) map: Arc<Mapping>,
    pub(crate) base: usize,
    pub(crate) capacity: u32,
}

/// Attempts before [`TableReader::read`] gives up.
const READ_ATTEMPTS: u32 = 100_000;

impl TableReader {
    /// The generation word, read once. A cheap change detector for polling; call
    /// [`TableReader::read`] for a consistent copy.
    pub fn generation(&self) -> u64 {
        self.map.words()[self.base + T_GENERATION].load(Acquire)
    }

    /// The seqlock word; even when no write is in progress. Exposed for tests and health.
    pub fn seq(&self) -> u64 {
        self.map.words()[self.base + T_SEQ].load(Acquire)
    }

    /// One attempt at a consistent copy; `None` if a write overlapped.
    pub fn try_read(&self) -> Option<TableSnapshot> {
        let w = self.map.words();
        let t = &w[self.base..self.base + T_ENTRIES + self.capacity as usize * FLAG_ENTRY_WORDS];
        let s1 = t[T_SEQ].load(Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let generation = t[T_GENERATION].load(Relaxed);
        let state = t[T_STATE].load(Relaxed);
        let stage = t[T_STAGE].load(Relaxed);
        let pct = t[T_PCT].load(Relaxed);
        let count = (t[T_COUNT].load(Relaxed) as usize).min(self.capacity as usize);
        let mut raw = Vec::with_capacity(count * FLAG_ENTRY_WORDS);
        for word in &t[T_ENTRIES..T_ENTRIES + count * FLAG_ENTRY_WORDS] {
            raw.push(word.load(Relaxed));
        }
        fence(Acquire);
        if t[T_SEQ].load(Relaxed) != s1 {
            return None;
        }
        // The copy is consistent; only now interpret it.
        let flags = raw
            .chunks_exact(FLAG_ENTRY_WORDS)
            .filter_map(decode_entry)
            .collect();
        Some(TableSnapshot {
            generation,
            content: TableContent {
                rollout: RolloutEntry {
                    state: RolloutState::from_code(state).unwrap_or_default(),
                    stage: stage as u32,
                    pct_bp: (pct as u32).min(10_000),
                },
                flags,
            },
        })
    }

    /// A consistent copy, retrying while writes overlap (spinning, then yielding).
    pub fn read(&self) -> Result<TableSnapshot, ShmError> {
        for i in 0..READ_ATTEMPTS {
            if let Some(s) = self.try_read() {
                return Ok(s);
            }
            if i > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        Err(ShmError::TableBusy {
            attempts: READ_ATTEMPTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_spread_and_stable() {
        let mut hist = [0u32; 10];
        for f in 0..100_000u64 {
            let b = flow_bucket(f);
            assert!(b < BUCKETS);
            assert_eq!(b, flow_bucket(f));
            hist[(b / 1000) as usize] += 1;
        }
        for h in hist {
            assert!((9_000..11_000).contains(&h), "{hist:?}");
        }
        // Monotonic growth: a flow on v3 at 5 % stays on v3 at 10 %.
        let at = |pct| RolloutEntry {
            state: RolloutState::Running,
            stage: 0,
            pct_bp: pct,
        };
        for f in 0..10_000u64 {
            if at(500).uses_v3(f) {
                assert!(at(1000).uses_v3(f));
            }
        }
    }

    #[test]
    fn entry_encoding_round_trips_and_validates() {
        let f = FlagEntry {
            name: "hde.zstd".into(),
            kind: FlagKind::Percent,
            enabled: true,
            pct_bp: 2500,
            changed_generation: 17,
        };
        let e = encode_entry(&f).unwrap();
        assert_eq!(decode_entry(&e), Some(f.clone()));
        let long = FlagEntry {
            name: "x".repeat(33),
            ..f.clone()
        };
        assert!(encode_entry(&long).is_err());
        let pct = FlagEntry {
            pct_bp: 10_001,
            ..f
        };
        assert!(encode_entry(&pct).is_err());
    }
}
