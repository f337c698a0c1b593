//! The zstd level of a pipelined round's containers, adapted part by part to which stage is
//! the bottleneck.
//!
//! Owns [`LevelGovernor`]: after each part the encoder compares its own rate (patch bytes
//! per second of read, scan and encode) with the link's. An encoder well ahead of the link
//! spends more CPU for fewer bytes (level up); one barely ahead or behind spends less
//! (level down). Opt-in (`SourceConfig::zstd_adapt`, `--zstd-adapt`): on the WAN lab the
//! level climbed to 7-9 and saved 2.5 % of the bytes but no time, because the lab's WAN
//! emulator, both appliances and the encoder share two cores, so more encoder CPU slows the
//! "link"; on the datacenter lab it raised the level for the same reason
//! (docs/perf-migrate.md). Between separate hosts the signal is the real link's.
//!
//! Does not: measure anything itself, or change the patch format (each container names its
//! own frame; the decoder does not care about the level).

use std::time::Duration;

use dwcp_hde::Policy;

/// Lowest level the governor goes to.
pub const MIN_LEVEL: i32 = 1;
/// Highest level: above it zstd costs ~4x level 3 per byte for a few per cent.
pub const MAX_LEVEL: i32 = 9;

/// Picks the next part's level from the last part's work and wait.
#[derive(Debug, Clone)]
pub struct LevelGovernor {
    level: i32,
    adapt: bool,
}

impl LevelGovernor {
    /// Starts at `level` (clamped to the governor's range when `adapt`, kept as is otherwise).
    pub fn new(level: i32, adapt: bool) -> Self {
        let level = if adapt {
            level.clamp(MIN_LEVEL, MAX_LEVEL)
        } else {
            level
        };
        LevelGovernor { level, adapt }
    }

    /// The level for the next part.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// After a part of `patch_bytes` that took the encoder `work` (read, scan, encode),
    /// with the link moving `link_bps` patch bytes per second meanwhile (0: not known yet).
    /// The encoder more than 1.5x as fast as the link: level up (a level costs ~1.2-1.4x
    /// the CPU per byte here); less than 1.1x: level down.
    pub fn after_part(&mut self, patch_bytes: u64, work: Duration, link_bps: u64) -> i32 {
        if self.adapt && link_bps > 0 {
            let enc = patch_bytes as f64 / work.as_secs_f64().max(1e-6);
            let link = link_bps as f64;
            if enc > 1.5 * link {
                self.level = (self.level + 1).min(MAX_LEVEL);
            } else if enc < 1.1 * link {
                self.level = (self.level - 1).max(MIN_LEVEL);
            }
        }
        self.level
    }
}

/// `p`'s zstd level, if it uses zstd.
pub fn level_of(p: Policy) -> Option<i32> {
    match p {
        Policy::Datacenter => None,
        Policy::Internet { level } | Policy::Hybrid { level, .. } => Some(level),
    }
}

/// `p` with its zstd level replaced (a policy without zstd is returned as is).
pub fn with_level(p: Policy, level: i32) -> Policy {
    match p {
        Policy::Datacenter => Policy::Datacenter,
        Policy::Internet { .. } => Policy::Internet { level },
        Policy::Hybrid {
            max_entropy_bits, ..
        } => Policy::Hybrid {
            level,
            max_entropy_bits,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_follows_the_bottleneck_within_bounds() {
        let mut g = LevelGovernor::new(3, true);
        let sec = Duration::from_secs(1);
        // Unknown link rate: no change.
        assert_eq!(g.after_part(100, sec, 0), 3);
        // The link is the bottleneck: up one level per part, up to the cap.
        for want in [4, 5, 6, 7, 8, 9, 9] {
            assert_eq!(g.after_part(200, sec, 100), want);
        }
        // Balanced: stays.
        assert_eq!(g.after_part(130, sec, 100), 9);
        // The encoder is the bottleneck: down to the floor.
        for want in [8, 7, 6, 5, 4, 3, 2, 1, 1] {
            assert_eq!(g.after_part(90, sec, 100), want);
        }
        // Fixed: never moves.
        let mut f = LevelGovernor::new(3, false);
        assert_eq!(f.after_part(200, sec, 100), 3);
        assert_eq!(f.after_part(50, sec, 100), 3);
        assert_eq!(LevelGovernor::new(19, true).level(), MAX_LEVEL);
    }

    #[test]
    fn with_level_keeps_the_rest_of_the_policy() {
        let p = with_level(
            Policy::Hybrid {
                level: 3,
                max_entropy_bits: 7.0,
            },
            6,
        );
        assert!(
            matches!(p, Policy::Hybrid { level: 6, max_entropy_bits } if max_entropy_bits == 7.0)
        );
        assert!(matches!(
            with_level(Policy::Datacenter, 6),
            Policy::Datacenter
        ));
    }
}
