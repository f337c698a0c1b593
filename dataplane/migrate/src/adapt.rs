//! The zstd level of a pipelined round's containers, adapted part by part to which stage is
//! the bottleneck.
//!
//! Owns [`LevelGovernor`]: after each part the encoder reports how long it worked on the
//! part (read, scan, encode) and how long it then waited to hand it over. Waiting means the
//! link is slower than the encoder: spend more CPU for fewer bytes (level up). Handing over
//! at once means the link waits for the encoder: spend less (level down). On the WAN lab
//! the level climbs until encoding keeps pace with the link; on a fast link it falls to the
//! cheapest level (docs/perf-migrate.md).
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

    /// After a part: `work` the encoder spent on it, `waited` until the mover took it.
    /// Waited more than half its work: level up; less than a tenth: level down.
    pub fn after_part(&mut self, work: Duration, waited: Duration) -> i32 {
        if self.adapt {
            let w = work.as_secs_f64().max(1e-6);
            let r = waited.as_secs_f64() / w;
            if r > 0.5 {
                self.level = (self.level + 1).min(MAX_LEVEL);
            } else if r < 0.1 {
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn level_follows_the_bottleneck_within_bounds() {
        let mut g = LevelGovernor::new(3, true);
        // The link is the bottleneck: up one level per part, up to the cap.
        for want in [4, 5, 6, 7, 8, 9, 9] {
            assert_eq!(g.after_part(ms(100), ms(80)), want);
        }
        // Balanced: stays.
        assert_eq!(g.after_part(ms(100), ms(30)), 9);
        // The encoder is the bottleneck: down to the floor.
        for want in [8, 7, 6, 5, 4, 3, 2, 1, 1] {
            assert_eq!(g.after_part(ms(100), ms(1)), want);
        }
        // Fixed: never moves.
        let mut f = LevelGovernor::new(3, false);
        assert_eq!(f.after_part(ms(100), ms(100)), 3);
        assert_eq!(f.after_part(ms(100), ms(0)), 3);
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
        assert!(matches!(p, Policy::Hybrid { level: 6, max_entropy_bits } if max_entropy_bits == 7.0));
        assert!(matches!(
            with_level(Policy::Datacenter, 6),
            Policy::Datacenter
        ));
    }
}
