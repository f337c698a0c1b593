//! Link mode detection: Datacenter / Internet / Hybrid, from measured minimum and smoothed RTT,
//! bottleneck bandwidth and loss rate, with hysteresis.
//!
//! Owns the classification rule and its hysteresis only; what a mode means for encoding (no
//! compression, HDE + zstd, per-block decision) is the codec layer's business.
//!
//! Rule per evaluation (thresholds in [`ModeThresholds`]):
//! - Internet if `min_rtt > internet_rtt` or `loss > internet_loss` or
//!   `0 < btlbw < internet_bw`;
//! - else Datacenter if `min_rtt < dc_rtt` and `srtt < 4 * dc_rtt` and `loss < dc_loss`;
//! - else Hybrid.
//!
//! The current mode changes only after the same different candidate was seen on `k` consecutive
//! evaluations (the sender evaluates once per round trip).

use std::fmt;
use std::time::Duration;

/// Link mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkMode {
    /// Low RTT, low loss, high bandwidth: no compression, many streams.
    Datacenter,
    /// High RTT or loss or a narrow link: delta + compression, pacing.
    Internet,
    /// In between: decide per block.
    Hybrid,
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkMode::Datacenter => "datacenter",
            LinkMode::Internet => "internet",
            LinkMode::Hybrid => "hybrid",
        })
    }
}

/// Thresholds and hysteresis.
#[derive(Debug, Clone, Copy)]
pub struct ModeThresholds {
    /// Datacenter needs `min_rtt` below this.
    pub dc_rtt: Duration,
    /// Datacenter needs loss below this fraction.
    pub dc_loss: f64,
    /// Internet if `min_rtt` above this.
    pub internet_rtt: Duration,
    /// Internet if loss above this fraction.
    pub internet_loss: f64,
    /// Internet if the bottleneck estimate is below this (bytes/s).
    pub internet_bw: f64,
    /// Consecutive evaluations needed to switch.
    pub k: u32,
}

impl Default for ModeThresholds {
    fn default() -> Self {
        Self {
            dc_rtt: Duration::from_millis(2),
            dc_loss: 0.001,
            internet_rtt: Duration::from_millis(20),
            internet_loss: 0.005,
            internet_bw: 100e6 / 8.0,
            k: 5,
        }
    }
}

/// Measurements behind a mode decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeReason {
    /// Rule that fired.
    pub rule: &'static str,
    /// Minimum RTT at the decision.
    pub min_rtt: Duration,
    /// Smoothed RTT at the decision.
    pub srtt: Duration,
    /// Bottleneck bandwidth estimate, bytes/s.
    pub btlbw: f64,
    /// Loss rate (fraction).
    pub loss: f64,
}

impl fmt::Display for ModeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (min_rtt {:.3} ms, srtt {:.3} ms, btlbw {:.1} Mbit/s, loss {:.3} %)",
            self.rule,
            self.min_rtt.as_secs_f64() * 1e3,
            self.srtt.as_secs_f64() * 1e3,
            self.btlbw * 8.0 / 1e6,
            self.loss * 100.0
        )
    }
}

/// Detector with hysteresis.
#[derive(Debug, Clone)]
pub struct ModeDetector {
    th: ModeThresholds,
    mode: LinkMode,
    reason: ModeReason,
    candidate: LinkMode,
    streak: u32,
    switches: u32,
}

impl ModeDetector {
    /// Start in Hybrid (no measurement yet).
    pub fn new(th: ModeThresholds) -> Self {
        Self {
            th,
            mode: LinkMode::Hybrid,
            reason: ModeReason {
                rule: "initial: no measurement yet",
                min_rtt: Duration::ZERO,
                srtt: Duration::ZERO,
                btlbw: 0.0,
                loss: 0.0,
            },
            candidate: LinkMode::Hybrid,
            streak: 0,
            switches: 0,
        }
    }

    /// Classify one set of measurements (no hysteresis).
    pub fn classify(
        &self,
        min_rtt: Duration,
        srtt: Duration,
        btlbw: f64,
        loss: f64,
    ) -> (LinkMode, &'static str) {
        let th = &self.th;
        if min_rtt > th.internet_rtt {
            (LinkMode::Internet, "min_rtt above internet threshold")
        } else if loss > th.internet_loss {
            (LinkMode::Internet, "loss above internet threshold")
        } else if btlbw > 0.0 && btlbw < th.internet_bw {
            (LinkMode::Internet, "bandwidth below internet threshold")
        } else if min_rtt < th.dc_rtt && srtt < th.dc_rtt * 4 && loss < th.dc_loss {
            (LinkMode::Datacenter, "low rtt and loss")
        } else {
            (
                LinkMode::Hybrid,
                "between datacenter and internet thresholds",
            )
        }
    }

    /// Feed one evaluation; returns true if the mode switched.
    pub fn evaluate(&mut self, min_rtt: Duration, srtt: Duration, btlbw: f64, loss: f64) -> bool {
        let (m, rule) = self.classify(min_rtt, srtt, btlbw, loss);
        let reason = ModeReason {
            rule,
            min_rtt,
            srtt,
            btlbw,
            loss,
        };
        if m == self.mode {
            self.streak = 0;
            self.reason = reason;
            return false;
        }
        if m == self.candidate {
            self.streak += 1;
        } else {
            self.candidate = m;
            self.streak = 1;
        }
        if self.streak >= self.th.k {
            self.mode = m;
            self.reason = reason;
            self.streak = 0;
            self.switches += 1;
            return true;
        }
        false
    }

    /// Current mode.
    pub fn mode(&self) -> LinkMode {
        self.mode
    }
    /// Measurements behind the current mode.
    pub fn reason(&self) -> ModeReason {
        self.reason
    }
    /// Number of switches so far.
    pub fn switches(&self) -> u32 {
        self.switches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_k_consecutive() {
        let ms = Duration::from_millis;
        let mut d = ModeDetector::new(ModeThresholds::default());
        let dc = (
            Duration::from_micros(200),
            Duration::from_micros(300),
            1e9,
            0.0,
        );
        let inet = (ms(50), ms(55), 25e6, 0.01);
        for i in 0..4 {
            assert!(!d.evaluate(dc.0, dc.1, dc.2, dc.3), "switched after {i}");
        }
        assert_eq!(d.mode(), LinkMode::Hybrid);
        assert!(d.evaluate(dc.0, dc.1, dc.2, dc.3));
        assert_eq!(d.mode(), LinkMode::Datacenter);
        // an interrupted streak does not switch
        for _ in 0..4 {
            d.evaluate(inet.0, inet.1, inet.2, inet.3);
        }
        d.evaluate(dc.0, dc.1, dc.2, dc.3);
        for _ in 0..4 {
            d.evaluate(inet.0, inet.1, inet.2, inet.3);
        }
        assert_eq!(d.mode(), LinkMode::Datacenter);
        d.evaluate(inet.0, inet.1, inet.2, inet.3);
        assert_eq!(d.mode(), LinkMode::Internet);
        assert_eq!(d.reason().rule, "min_rtt above internet threshold");
        // hybrid band
        let (m, _) = d.classify(ms(8), ms(9), 1e9, 0.002);
        assert_eq!(m, LinkMode::Hybrid);
        let (m, r) = d.classify(ms(1), ms(1), 1e9, 0.02);
        assert_eq!(
            (m, r),
            (LinkMode::Internet, "loss above internet threshold")
        );
    }
}
