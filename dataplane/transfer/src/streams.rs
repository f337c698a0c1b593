//! Stream-count adaptation: hill climbing on measured goodput.
//!
//! Owns the decision of how many streams to use, between 1 and the negotiated maximum. Every
//! `interval` (at least [`MIN_INTERVAL_ROUNDS`] round trips) the sender reports the bytes acked
//! in the interval. After an increase, if goodput rose by at least [`GAIN_NEEDED`] the count keeps
//! growing (doubling up to the maximum); otherwise it steps back and holds for
//! [`HOLD_INTERVALS`] intervals before probing again. Per-stream goodput is kept for stats.
//!
//! Does not map streams to cores or queues; the engine reads the count and acts on it.

/// Rounds per adaptation interval (minimum).
pub const MIN_INTERVAL_ROUNDS: u64 = 8;
/// Relative goodput gain that justifies more streams.
pub const GAIN_NEEDED: f64 = 1.05;
/// Intervals to wait after a failed probe.
pub const HOLD_INTERVALS: u32 = 4;

/// Adapter state.
#[derive(Debug, Clone)]
pub struct StreamAdapter {
    current: u16,
    max: u16,
    last_goodput: f64,
    probing_from: Option<u16>,
    hold: u32,
    changes: u32,
}

impl StreamAdapter {
    /// Start with `initial` streams, at most `max`.
    pub fn new(initial: u16, max: u16) -> Self {
        let max = max.max(1);
        Self {
            current: initial.clamp(1, max),
            max,
            last_goodput: 0.0,
            probing_from: None,
            hold: 0,
            changes: 0,
        }
    }

    /// Current stream count.
    pub fn current(&self) -> u16 {
        self.current
    }
    /// Upper bound.
    pub fn max(&self) -> u16 {
        self.max
    }
    /// Changes made so far.
    pub fn changes(&self) -> u32 {
        self.changes
    }

    /// Report the goodput (bytes/s) of the interval just ended; `limited` is true when the
    /// sender was app- or flow-control-limited (no conclusion possible). Returns the new count.
    pub fn on_interval(&mut self, goodput: f64, limited: bool) -> u16 {
        if limited || self.max == 1 {
            self.last_goodput = goodput;
            return self.current;
        }
        if let Some(from) = self.probing_from.take()
            && goodput < self.last_goodput * GAIN_NEEDED
        {
            // more streams did not help: step back and hold
            self.current = from;
            self.changes += 1;
            self.hold = HOLD_INTERVALS;
            self.last_goodput = goodput;
            return self.current;
        }
        if self.hold > 0 {
            self.hold -= 1;
            self.last_goodput = goodput;
            return self.current;
        }
        if self.current < self.max {
            self.probing_from = Some(self.current);
            self.current = (self.current * 2).min(self.max);
            self.changes += 1;
        }
        self.last_goodput = goodput;
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_while_it_helps_and_backs_off_when_not() {
        let mut a = StreamAdapter::new(1, 8);
        assert_eq!(a.on_interval(100.0, false), 2);
        assert_eq!(a.on_interval(190.0, false), 4);
        // no gain at 4: back to 2 and hold
        assert_eq!(a.on_interval(192.0, false), 2);
        for _ in 0..HOLD_INTERVALS {
            assert_eq!(a.on_interval(190.0, false), 2);
        }
        assert_eq!(a.on_interval(190.0, false), 4);
        assert_eq!(a.on_interval(400.0, false), 8);
        assert_eq!(a.on_interval(800.0, false), 8);
        // limited intervals change nothing
        assert_eq!(a.on_interval(1.0, true), 8);
        let mut one = StreamAdapter::new(4, 1);
        assert_eq!(one.current(), 1);
        assert_eq!(one.on_interval(5.0, false), 1);
    }
}
