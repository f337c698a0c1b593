//! Rate-based congestion control modelled on BBR (v1 state machine with a v2-style loss/queue
//! bound), plus the delivery-rate sampler it needs.
//!
//! Owns: bottleneck bandwidth estimation (windowed max of delivery-rate samples over
//! [`BTLBW_WINDOW_ROUNDS`] round trips), the windowed minimum RTT, the Startup / Drain / ProbeBw /
//! ProbeRtt state machine, the pacing rate and the congestion window (`cwnd_gain * BDP`, capped by
//! `inflight_hi`), and the per-round loss rate. Random loss alone never lowers the rate: a round
//! counts as congested only if its loss is above [`LOSS_THRESH`] plus twice the long-run loss
//! rate *and* its smallest RTT shows a standing queue (`> QUEUE_RTT_FACTOR * min_rtt`), or if
//! its loss is above [`HEAVY_LOSS_THRESH`]. A congested round sets
//! `inflight_hi = max(BETA * inflight, BDP)`, which then grows back by [`INFLIGHT_HI_GROWTH`]
//! per clean round. See docs/transfer.md for the state diagram.
//!
//! Does not: keep per-packet state (the sender stores a [`SendSnapshot`] per packet), detect
//! losses, or read clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Startup pacing and cwnd gain (2/ln 2).
pub const HIGH_GAIN: f64 = 2.885;
/// ProbeBw pacing gain cycle.
pub const PROBE_BW_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// cwnd gain in ProbeBw: cwnd cap = 2 * BDP.
pub const CWND_GAIN: f64 = 2.0;
/// Round trips over which the bottleneck bandwidth maximum is kept.
pub const BTLBW_WINDOW_ROUNDS: u64 = 10;
/// Lifetime of the minimum RTT before ProbeRtt re-measures it.
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Time spent at the ProbeRtt cwnd.
pub const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// Startup ends after this many rounds without 25 % bandwidth growth.
pub const FULL_BW_ROUNDS: u32 = 3;
/// Per-round loss fraction that, together with queueing, marks congestion.
pub const LOSS_THRESH: f64 = 0.02;
/// Per-round loss fraction that marks congestion on its own.
pub const HEAVY_LOSS_THRESH: f64 = 0.30;
/// A round's smallest RTT above `min_rtt * QUEUE_RTT_FACTOR` means a standing queue.
pub const QUEUE_RTT_FACTOR: f64 = 1.25;
/// Multiplicative decrease of `inflight_hi` on a congested round.
pub const BETA: f64 = 0.7;
/// Growth of `inflight_hi` per clean round.
pub const INFLIGHT_HI_GROWTH: f64 = 1.125;
/// Smallest initial window in bytes, whatever the frame size: ten 8000-byte chunks. With
/// MTU-sized frames (1408-byte chunks at MTU 1500) ten frames would be 14 KB, and Startup
/// would need about 2.5 more round trips to fill a long path.
pub const MIN_INITIAL_CWND_BYTES: u64 = 80_000;

/// Controller state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BbrState {
    /// Exponential search for the bottleneck rate.
    Startup,
    /// Drain the queue Startup built.
    Drain,
    /// Steady state, cycling pacing gains.
    ProbeBw,
    /// Briefly shrink inflight to re-measure the propagation RTT.
    ProbeRtt,
}

/// What the sender stores for each transmitted packet.
#[derive(Debug, Clone, Copy)]
pub struct SendSnapshot {
    /// Send time.
    pub sent: Instant,
    /// Bytes delivered when it was sent.
    pub delivered: u64,
    /// Time of the last delivery when it was sent.
    pub delivered_time: Instant,
    /// Send time of the packet whose ack started the current send interval.
    pub first_sent_time: Instant,
    /// Sent while the sender had nothing more to send.
    pub app_limited: bool,
}

/// Configuration.
#[derive(Debug, Clone, Copy)]
pub struct CcConfig {
    /// Bytes of one full data frame (the pacing quantum).
    pub mss: u64,
    /// Initial cwnd in frames.
    pub initial_cwnd_frames: u64,
    /// Starting phase of the gain cycle (spreads flows apart).
    pub cycle_offset: usize,
    /// Smallest cwnd in frames. A driver that moves frames in batches (a dataplane worker
    /// receives and sends up to a batch at a time) needs about two batches in flight, or a
    /// path whose RTT is below the batch time is never filled.
    pub min_cwnd_frames: u64,
}

#[derive(Debug, Clone, Default)]
struct MaxFilter {
    q: VecDeque<(u64, f64)>,
}

impl MaxFilter {
    fn update(&mut self, round: u64, v: f64) {
        while self.q.back().is_some_and(|&(_, b)| b <= v) {
            self.q.pop_back();
        }
        self.q.push_back((round, v));
        self.expire(round);
    }
    fn expire(&mut self, round: u64) {
        while self.q.len() > 1
            && self
                .q
                .front()
                .is_some_and(|&(r, _)| r + BTLBW_WINDOW_ROUNDS <= round)
        {
            self.q.pop_front();
        }
    }
    fn get(&self) -> f64 {
        self.q.front().map_or(0.0, |&(_, v)| v)
    }
}

/// The BBR-like controller.
#[derive(Debug, Clone)]
pub struct Bbr {
    cfg: CcConfig,
    state: BbrState,
    // delivery rate sampling
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited_until: u64,
    // rounds
    round_count: u64,
    next_round_delivered: u64,
    round_lost: u64,
    round_delivered: u64,
    round_min_rtt: Option<Duration>,
    // model
    btlbw: MaxFilter,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    initial_rtt: Option<Duration>,
    full_bw: f64,
    full_bw_count: u32,
    filled: bool,
    pacing_gain: f64,
    cwnd_gain: f64,
    cycle_index: usize,
    cycle_stamp: Instant,
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    prior_cwnd: u64,
    cwnd: u64,
    inflight_hi: u64,
    loss_ewma: f64,
    congestion_events: u64,
    last_sample: f64,
}

impl Bbr {
    /// New controller; `now` anchors its timers.
    pub fn new(cfg: CcConfig, now: Instant) -> Self {
        Self {
            cfg,
            state: BbrState::Startup,
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            app_limited_until: 0,
            round_count: 0,
            next_round_delivered: 0,
            round_lost: 0,
            round_delivered: 0,
            round_min_rtt: None,
            btlbw: MaxFilter::default(),
            min_rtt: None,
            min_rtt_stamp: now,
            initial_rtt: None,
            full_bw: 0.0,
            full_bw_count: 0,
            filled: false,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            cycle_index: 0,
            cycle_stamp: now,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            prior_cwnd: 0,
            cwnd: Self::initial_window(&cfg),
            inflight_hi: u64::MAX,
            loss_ewma: 0.0,
            congestion_events: 0,
            last_sample: 0.0,
        }
    }

    /// Initial window: `initial_cwnd_frames` frames, at least [`MIN_INITIAL_CWND_BYTES`] (unless
    /// fewer frames were configured than that takes at the default chunk size).
    fn initial_window(cfg: &CcConfig) -> u64 {
        let frames = cfg.mss * cfg.initial_cwnd_frames;
        if cfg.initial_cwnd_frames >= 10 {
            frames.max(MIN_INITIAL_CWND_BYTES)
        } else {
            frames
        }
    }

    /// RTT measured by the handshake, used for the initial pacing rate.
    pub fn set_initial_rtt(&mut self, rtt: Duration) {
        self.initial_rtt = Some(rtt.max(Duration::from_micros(1)));
    }

    /// Snapshot to store with a packet about to be sent.
    pub fn on_send(&mut self, now: Instant, bytes_in_flight: u64) -> SendSnapshot {
        if bytes_in_flight == 0 {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        SendSnapshot {
            sent: now,
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            app_limited: self.app_limited_until > self.delivered,
        }
    }

    /// The sender ran out of data with room in cwnd: samples until this inflight is delivered
    /// are app-limited.
    pub fn on_app_limited(&mut self, bytes_in_flight: u64) {
        self.app_limited_until = (self.delivered + bytes_in_flight).max(1);
    }

    /// Bytes declared lost.
    pub fn on_loss(&mut self, bytes: u64) {
        self.round_lost += bytes;
    }

    /// Bytes declared lost were delivered after all (a late ACK: reordering, or an RTO that
    /// fired while either host was descheduled). They leave the round's loss count, so a
    /// spurious RTO does not make the round look congested.
    pub fn on_spurious_loss(&mut self, bytes: u64) {
        self.round_lost = self.round_lost.saturating_sub(bytes);
    }

    /// Packets acknowledged by one ACK: `(snapshot, bytes)` each; `rtt` is a valid RTT sample if
    /// any. Returns true when this ack started a new round trip.
    pub fn on_ack(
        &mut self,
        now: Instant,
        acked: &[(SendSnapshot, u64)],
        rtt: Option<Duration>,
        bytes_in_flight: u64,
    ) -> bool {
        if acked.is_empty() {
            return false;
        }
        let mut newest: Option<SendSnapshot> = None;
        let mut acked_bytes = 0;
        for (s, b) in acked {
            self.delivered += b;
            acked_bytes += b;
            if newest.is_none_or(|n| s.delivered >= n.delivered) {
                newest = Some(*s);
            }
        }
        self.delivered_time = now;
        self.round_delivered += acked_bytes;
        let Some(p) = newest else { return false };

        // min RTT
        if let Some(r) = rtt {
            let expired = now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_WINDOW;
            if self.min_rtt.is_none_or(|m| r <= m) || expired {
                self.min_rtt = Some(r);
                self.min_rtt_stamp = now;
            }
            self.round_min_rtt = Some(self.round_min_rtt.map_or(r, |m| m.min(r)));
        }

        // round trip counting
        let mut round_start = false;
        if p.delivered >= self.next_round_delivered {
            self.next_round_delivered = self.delivered;
            self.round_count += 1;
            round_start = true;
        }

        // delivery rate sample
        let send_elapsed = p.sent.saturating_duration_since(p.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(p.delivered_time);
        self.first_sent_time = p.sent;
        let interval = send_elapsed.max(ack_elapsed);
        let valid = !interval.is_zero() && self.min_rtt.is_none_or(|m| interval >= m);
        if valid {
            let rate = (self.delivered - p.delivered) as f64 / interval.as_secs_f64();
            self.last_sample = rate;
            if !p.app_limited || rate >= self.btlbw.get() {
                self.btlbw.update(self.round_count, rate);
            }
        }
        self.btlbw.expire(self.round_count);

        if round_start {
            self.end_round(bytes_in_flight);
        }
        self.update_state(now, bytes_in_flight);
        self.update_cwnd(acked_bytes);
        round_start
    }

    fn end_round(&mut self, bytes_in_flight: u64) {
        let total = self.round_lost + self.round_delivered;
        let frac = if total > 0 {
            self.round_lost as f64 / total as f64
        } else {
            0.0
        };
        let queue = match (self.round_min_rtt, self.min_rtt) {
            (Some(r), Some(m)) => r.as_secs_f64() > m.as_secs_f64() * QUEUE_RTT_FACTOR,
            _ => false,
        };
        // The loss threshold sits above the long-run loss rate, so steady random loss does not
        // count as congestion; a queue-overflow burst on top of it does.
        let thresh = LOSS_THRESH + 2.0 * self.loss_ewma;
        self.loss_ewma = self.loss_ewma * 0.875 + frac * 0.125;
        let congested = (frac > thresh && queue) || frac > HEAVY_LOSS_THRESH;
        if congested {
            self.congestion_events += 1;
            let base = bytes_in_flight.max(self.cwnd.min(self.inflight_hi) / 2);
            // Back off to BETA * inflight, but not below one estimated BDP: that removes the
            // standing queue without giving up the measured share of the bottleneck.
            self.inflight_hi = ((base as f64 * BETA) as u64)
                .max(self.bdp())
                .max(4 * self.cfg.mss);
            if self.state == BbrState::Startup {
                self.filled = true;
                self.enter_drain();
            }
        } else if self.inflight_hi != u64::MAX {
            let grown = (self.inflight_hi as f64 * INFLIGHT_HI_GROWTH) as u64 + self.cfg.mss;
            self.inflight_hi = if grown as f64 > 4.0 * self.bdp() as f64 {
                u64::MAX
            } else {
                grown
            };
        }
        // full pipe detection: bandwidth plateau for FULL_BW_ROUNDS, or (delay-based, like
        // HyStart) one round without growth while a standing queue shows in the RTT.
        if !self.filled && self.app_limited_until <= self.delivered {
            let bw = self.btlbw.get();
            if bw >= self.full_bw * 1.25 {
                self.full_bw = bw;
                self.full_bw_count = 0;
            } else {
                self.full_bw_count += 1;
                if self.full_bw_count >= FULL_BW_ROUNDS || queue {
                    self.filled = true;
                }
            }
        }
        self.round_lost = 0;
        self.round_delivered = 0;
        self.round_min_rtt = None;
        if self.state == BbrState::ProbeRtt && self.probe_rtt_done.is_some() {
            self.probe_rtt_round_done = true;
        }
    }

    fn enter_drain(&mut self) {
        self.state = BbrState::Drain;
        self.pacing_gain = 1.0 / HIGH_GAIN;
        self.cwnd_gain = HIGH_GAIN;
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.state = BbrState::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // never start in the draining phase
        let mut idx = self.cfg.cycle_offset % PROBE_BW_GAINS.len();
        if idx == 1 {
            idx = 2;
        }
        self.cycle_index = idx;
        self.cycle_stamp = now;
        self.pacing_gain = PROBE_BW_GAINS[idx];
    }

    fn update_state(&mut self, now: Instant, bytes_in_flight: u64) {
        if self.state == BbrState::Startup && self.filled {
            self.enter_drain();
        }
        if self.state == BbrState::Drain && bytes_in_flight <= self.bdp() {
            self.enter_probe_bw(now);
        }
        if self.state == BbrState::ProbeBw {
            let min_rtt = self.min_rtt.unwrap_or(Duration::from_millis(1));
            let elapsed = now.saturating_duration_since(self.cycle_stamp) > min_rtt;
            let gain = self.pacing_gain;
            let advance = if gain > 1.0 {
                elapsed
                    && (bytes_in_flight as f64 >= gain * self.bdp() as f64 || self.round_lost > 0)
                    || now.saturating_duration_since(self.cycle_stamp) > min_rtt * 2
            } else if gain < 1.0 {
                elapsed || bytes_in_flight <= self.bdp()
            } else {
                elapsed
            };
            if advance {
                self.cycle_index = (self.cycle_index + 1) % PROBE_BW_GAINS.len();
                self.cycle_stamp = now;
                self.pacing_gain = PROBE_BW_GAINS[self.cycle_index];
            }
        }
        // ProbeRtt entry
        if self.state != BbrState::ProbeRtt
            && self.min_rtt.is_some()
            && now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_WINDOW
        {
            self.state = BbrState::ProbeRtt;
            self.pacing_gain = 1.0;
            self.prior_cwnd = self.cwnd;
            self.probe_rtt_done = None;
            self.probe_rtt_round_done = false;
        }
        if self.state == BbrState::ProbeRtt {
            if self.probe_rtt_done.is_none() && bytes_in_flight <= 4 * self.cfg.mss {
                self.probe_rtt_done = Some(now + PROBE_RTT_DURATION);
                self.probe_rtt_round_done = false;
            }
            if let Some(done) = self.probe_rtt_done
                && self.probe_rtt_round_done
                && now >= done
            {
                self.min_rtt_stamp = now;
                self.cwnd = self.cwnd.max(self.prior_cwnd);
                if self.filled {
                    self.enter_probe_bw(now);
                } else {
                    self.state = BbrState::Startup;
                    self.pacing_gain = HIGH_GAIN;
                    self.cwnd_gain = HIGH_GAIN;
                }
            }
        }
    }

    fn update_cwnd(&mut self, acked_bytes: u64) {
        let min_cwnd = self.cfg.min_cwnd_frames.max(4) * self.cfg.mss;
        if self.state == BbrState::ProbeRtt {
            self.cwnd = min_cwnd;
            return;
        }
        let target = (self.cwnd_gain * self.bdp() as f64) as u64 + 3 * self.cfg.mss;
        if self.filled {
            self.cwnd = target;
        } else if self.btlbw.get() > 0.0 {
            if self.cwnd < target {
                self.cwnd = (self.cwnd + acked_bytes).min(target);
            }
        } else {
            self.cwnd += acked_bytes;
        }
        self.cwnd = self.cwnd.max(min_cwnd);
    }

    /// Bandwidth-delay product estimate in bytes.
    pub fn bdp(&self) -> u64 {
        match self.min_rtt {
            Some(rtt) if self.btlbw.get() > 0.0 => (self.btlbw.get() * rtt.as_secs_f64()) as u64,
            _ => Self::initial_window(&self.cfg),
        }
    }

    /// Pacing rate in bytes per second.
    pub fn pacing_rate(&self) -> f64 {
        let bw = self.btlbw.get();
        if bw > 0.0 {
            return (self.pacing_gain * bw).max(self.cfg.mss as f64);
        }
        let rtt = self
            .initial_rtt
            .or(self.min_rtt)
            .unwrap_or(Duration::from_millis(1));
        HIGH_GAIN * Self::initial_window(&self.cfg) as f64 / rtt.as_secs_f64()
    }

    /// Congestion window in bytes (including the `inflight_hi` bound).
    pub fn cwnd(&self) -> u64 {
        self.cwnd.min(self.inflight_hi).max(4 * self.cfg.mss)
    }
    /// Bottleneck bandwidth estimate, bytes per second.
    pub fn btlbw(&self) -> f64 {
        self.btlbw.get()
    }
    /// Windowed minimum RTT.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }
    /// State.
    pub fn state(&self) -> BbrState {
        self.state
    }
    /// EWMA (1/8 per round) of the per-round loss fraction.
    pub fn loss_rate(&self) -> f64 {
        self.loss_ewma
    }
    /// Rounds counted so far.
    pub fn rounds(&self) -> u64 {
        self.round_count
    }
    /// Congested rounds seen.
    pub fn congestion_events(&self) -> u64 {
        self.congestion_events
    }
    /// Current pacing gain.
    pub fn pacing_gain(&self) -> f64 {
        self.pacing_gain
    }
    /// Latest delivery-rate sample, bytes per second.
    pub fn last_sample(&self) -> f64 {
        self.last_sample
    }
    /// Total bytes delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_filter_expires_old_rounds() {
        let mut f = MaxFilter::default();
        f.update(1, 100.0);
        f.update(2, 50.0);
        assert_eq!(f.get(), 100.0);
        f.update(11, 10.0);
        assert_eq!(f.get(), 50.0);
        f.update(12, 20.0);
        assert_eq!(f.get(), 20.0);
    }
}
