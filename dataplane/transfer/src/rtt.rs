//! Round-trip time estimation after RFC 6298 (smoothed RTT, variance, retransmission timeout
//! with exponential backoff) plus the minimum RTT, which the congestion controller and the mode
//! detector use as the propagation delay estimate.
//!
//! Does not decide which samples are valid (Karn's rule is applied by the sender).

use std::time::Duration;

/// RTT state.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Duration,
    min: Option<Duration>,
    min_rto: Duration,
    max_rto: Duration,
    initial_rto: Duration,
}

impl RttEstimator {
    /// New estimator with bounds.
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: Duration::ZERO,
            min: None,
            min_rto,
            max_rto,
            initial_rto,
        }
    }

    /// Feed a sample (already corrected for the peer's ack delay where appropriate).
    pub fn update(&mut self, sample: Duration) {
        let sample = sample.max(Duration::from_micros(1));
        self.latest = sample;
        self.min = Some(self.min.map_or(sample, |m| m.min(sample)));
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                // rttvar = 3/4 rttvar + 1/4 |srtt - r|; srtt = 7/8 srtt + 1/8 r
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// Smoothed RTT (initial RTO / 2 before any sample... reported as `None`).
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
    /// RTT variance.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
    /// Latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }
    /// Minimum sample seen.
    pub fn min(&self) -> Option<Duration> {
        self.min
    }
    /// Forget the minimum (the congestion controller keeps its own windowed minimum).
    pub fn reset_min(&mut self) {
        self.min = None;
    }

    /// Retransmission timeout before backoff: `max(srtt + 4 rttvar, 1.5 srtt) + ack_delay`,
    /// clamped to `[min_rto, max_rto]`.
    pub fn rto(&self, max_ack_delay: Duration) -> Duration {
        match self.srtt {
            None => self.initial_rto,
            // srtt + min_rtt: a queue as deep as the path (one BDP, the usual bottleneck
            // buffer) doubles the RTT of the newest packets before srtt follows; an RTO below
            // that declares packets lost that are only queued.
            Some(srtt) => ((srtt + self.rttvar * 4)
                .max(srtt * 3 / 2)
                .max(srtt + self.min.unwrap_or(Duration::ZERO))
                + max_ack_delay)
                .clamp(self.min_rto, self.max_rto),
        }
    }
    /// RTO after `backoff` consecutive expiries.
    pub fn rto_backoff(&self, max_ack_delay: Duration, backoff: u32) -> Duration {
        (self.rto(max_ack_delay) * (1u32 << backoff.min(10))).min(self.max_rto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc6298() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(ms(200), ms(1), ms(2000));
        assert_eq!(r.rto(Duration::ZERO), ms(200));
        r.update(ms(100));
        assert_eq!(r.srtt(), Some(ms(100)));
        assert_eq!(r.rttvar(), ms(50));
        assert_eq!(r.rto(Duration::ZERO), ms(300));
        r.update(ms(60));
        // rttvar = (150 + 40)/4 = 47.5, srtt = (700 + 60)/8 = 95
        assert_eq!(r.srtt(), Some(ms(95)));
        assert_eq!(r.rttvar(), Duration::from_micros(47_500));
        assert_eq!(r.min(), Some(ms(60)));
        assert_eq!(r.rto_backoff(Duration::ZERO, 1), ms(570));
        assert_eq!(r.rto_backoff(Duration::ZERO, 8), ms(2000));
    }
}
