//! The zstd level of a patch policy: read it ([`level_of`]) and replace it ([`with_level`]).
//!
//! An adaptive level (a governor that raised or lowered it part by part, from whether the
//! encoder or the link was the bottleneck) was tried and removed: on the WAN lab it saved
//! 2.5 % of the bytes and no time, because the lab's WAN emulator, both appliances and the
//! encoder share two cores (docs/perf-migrate.md).
//!
//! Does not: change the patch format (each container names its own frame).

use dwcp_hde::Policy;

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
