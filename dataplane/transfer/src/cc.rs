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
//! per clean round. A [`PathHint`] from an earlier connection replaces Startup by one short
//! paced train whose ack dispersion confirms or refutes the hint ([`Bbr::set_path_hint`]).
//! See docs/transfer.md for the state diagram.
//!
//! Does not: keep per-packet state (the sender stores a [`SendSnapshot`] per packet), detect
//! losses, or read clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Startup pacing gain (2/ln 2).
pub const HIGH_GAIN: f64 = 2.885;
/// Startup cwnd gain (BBR v3): inflight stays below 2x the estimated BDP, so while the
/// estimate is at most the bottleneck rate the queue Startup builds stays below one BDP, and
/// a one-BDP buffer does not overflow before the exit.
pub const STARTUP_CWND_GAIN: f64 = 2.0;
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
/// ProbeRtt's cwnd as a fraction of the BDP (BBR v2): the queue drains while half the pipe
/// stays busy, instead of four frames.
pub const PROBE_RTT_CWND_GAIN: f64 = 0.5;
/// An RTT sample within `min_rtt / MIN_RTT_REFRESH_DIVISOR + MIN_RTT_REFRESH_SLACK` of min_rtt
/// shows the queue empty: it keeps min_rtt current, so a flow that drains its queue itself
/// never needs ProbeRtt.
pub const MIN_RTT_REFRESH_DIVISOR: u32 = 16;
/// See [`MIN_RTT_REFRESH_DIVISOR`] (timer and scheduling noise of real hosts).
pub const MIN_RTT_REFRESH_SLACK: Duration = Duration::from_micros(100);
/// Cruise control: a round whose smallest RTT is more than `min_rtt / CRUISE_QUEUE_DIVISOR`
/// (at least [`CRUISE_QUEUE_MIN`]) above min_rtt had a standing queue.
pub const CRUISE_QUEUE_DIVISOR: u32 = 20;
/// Smallest queue delay that counts as standing (see [`CRUISE_QUEUE_DIVISOR`]).
pub const CRUISE_QUEUE_MIN: Duration = Duration::from_millis(1);
/// Slow (integral) part of cruise control: per round judged, the cruise gain goes down by this
/// after a round with a standing queue and up by it after a round with less than a quarter
/// of one. Rounds whose acks return during the probe's drain phase or the phase after it
/// (they carry the probe's own queue) and the first two rounds of ProbeBw (the Startup
/// queue being drained) are not judged.
pub const CRUISE_STEP: f64 = 0.005;
/// The queue band cruise control holds: from the standing threshold to this many times it.
pub const CRUISE_QUEUE_BAND: f64 = 4.0;
/// Lowest cruise gain.
pub const CRUISE_MIN_GAIN: f64 = 0.85;
/// Fast (proportional) part: the cruise phases of the next round pace below the cruise gain
/// by the queue delay above half the standing threshold, as a fraction of min_rtt (so the
/// queue drains within about a round), at most this much.
pub const CRUISE_MAX_DRAIN: f64 = 0.25;
/// Largest random-loss rate the cruise gain makes up for (its cap is `1 / (1 - loss)`).
pub const CRUISE_MAX_LOSS_COMPENSATION: f64 = 0.05;
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
/// MTU-sized frames (1420-byte chunks at MTU 1500) ten frames would be 14 KB, and Startup
/// would need about 2.5 more round trips to fill a long path.
pub const MIN_INITIAL_CWND_BYTES: u64 = 80_000;

/// Pacing gain of the warm-start train: a little above the hinted rate, so a train whose
/// acks come back faster than the hint shows that the hint was too low.
pub const WARM_TRAIN_GAIN: f64 = 1.25;
/// The warm-start train is this fraction of the hinted BDP. With a hint 10x too high the train
/// is one real BDP, which a one-BDP bottleneck buffer absorbs without a drop.
pub const WARM_TRAIN_BDP_FRACTION: f64 = 0.1;
/// Smallest warm-start train in frames (enough acks for a dispersion measurement).
pub const WARM_TRAIN_MIN_FRAMES: u64 = 16;
/// The train's measured rate confirms the hint if it lies in
/// `[WARM_CONFIRM_LOW, WARM_CONFIRM_HIGH] x hint`.
pub const WARM_CONFIRM_LOW: f64 = 0.9;
/// See [`WARM_CONFIRM_LOW`]; above this the hint was too low and Startup takes over.
pub const WARM_CONFIRM_HIGH: f64 = 1.15;
/// A handshake RTT above `WARM_MAX_RTT_FACTOR x hint.min_rtt` (+1 ms) means another path: the
/// hint is ignored.
pub const WARM_MAX_RTT_FACTOR: f64 = 2.0;

/// A path estimate carried over from an earlier connection to the same peer (see
/// [`crate::Sender::path_estimate`] and `SenderConfig::path_hint`).
///
/// Rates are in datagram bytes per second, as the controller measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathHint {
    /// Bottleneck bandwidth, datagram bytes per second.
    pub btl_bw_bytes_per_sec: u64,
    /// Propagation round-trip time.
    pub min_rtt: Duration,
}

/// Controller state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BbrState {
    /// A path hint is being checked: one paced train of a tenth of the hinted BDP is in
    /// flight; the dispersion of its acks confirms or refutes the hint.
    WarmStart,
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

/// How a path hint fared against the first measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmOutcome {
    /// The train's ack rate matched the hint: the connection went straight to ProbeBw.
    Confirmed,
    /// The acks came back faster than the hint: Startup searched on from the measured rate.
    TooLow,
    /// The acks came back slower: the hint was dropped, the measured rate taken, and the
    /// queue the train built drained.
    TooHigh,
    /// No usable measurement (heavy loss or no acks in time): a cold Startup.
    Unmeasured,
    /// The handshake RTT did not fit the hint (another path) or the hint was empty: cold start.
    Ignored,
}

#[derive(Debug, Clone, Copy)]
struct Warm {
    hint: PathHint,
    hint_bw: f64,
    train: u64,
    first_ack: Option<(Instant, u64)>,
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
    /// Ack aggregation (BBR's `extra_acked`): start of the current epoch and the bytes
    /// acknowledged in it; the windowed max of the excess over what btlbw explains.
    ack_epoch: Option<Instant>,
    ack_epoch_acked: u64,
    extra_acked: MaxFilter,
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
    warm: Option<Warm>,
    warm_outcome: Option<WarmOutcome>,
    cruise_gain: f64,
    cruise_from_round: u64,
    cruise_drain: f64,
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
            ack_epoch: None,
            ack_epoch_acked: 0,
            extra_acked: MaxFilter::default(),
            min_rtt: None,
            min_rtt_stamp: now,
            initial_rtt: None,
            full_bw: 0.0,
            full_bw_count: 0,
            filled: false,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: STARTUP_CWND_GAIN,
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
            warm: None,
            warm_outcome: None,
            cruise_gain: 1.0,
            cruise_from_round: 0,
            cruise_drain: 0.0,
        }
    }

    /// Start from a path hint instead of a cold Startup (call once, after
    /// [`Bbr::set_initial_rtt`] and before anything was sent). `handshake_rtt` is the
    /// handshake's RTT sample, if unambiguous.
    ///
    /// The connection first sends one train of a tenth of the hinted BDP (at least
    /// [`WARM_TRAIN_MIN_FRAMES`] frames) paced at [`WARM_TRAIN_GAIN`] x the hinted rate, and
    /// holds the window there until most of the train is acknowledged. The acks leave the
    /// bottleneck at its rate, so their dispersion measures it: within
    /// [`WARM_CONFIRM_LOW`]..[`WARM_CONFIRM_HIGH`] of the hint, the controller goes to ProbeBw
    /// with the hinted bandwidth (cwnd 2 BDP); faster, Startup searches on from the measured
    /// rate; slower, the measured rate replaces the hint and Drain empties the queue the train
    /// built. The train is all a wrong hint can put on the path before the first measurement.
    /// Returns false (cold start) if the hint does not fit the handshake RTT.
    pub fn set_path_hint(&mut self, hint: PathHint, handshake_rtt: Option<Duration>) -> bool {
        if self.state != BbrState::Startup || self.delivered > 0 {
            return false;
        }
        let fits = handshake_rtt.is_none_or(|h| {
            h.as_secs_f64() <= hint.min_rtt.as_secs_f64() * WARM_MAX_RTT_FACTOR + 0.001
        });
        if hint.btl_bw_bytes_per_sec == 0 || hint.min_rtt.is_zero() || !fits {
            self.warm_outcome = Some(WarmOutcome::Ignored);
            return false;
        }
        let rtt = handshake_rtt.map_or(hint.min_rtt, |h| h.min(hint.min_rtt));
        let bw = hint.btl_bw_bytes_per_sec as f64;
        let train = ((bw * rtt.as_secs_f64() * WARM_TRAIN_BDP_FRACTION) as u64)
            .max(WARM_TRAIN_MIN_FRAMES * self.cfg.mss);
        self.warm = Some(Warm {
            hint,
            hint_bw: bw,
            train,
            first_ack: None,
        });
        self.state = BbrState::WarmStart;
        self.pacing_gain = WARM_TRAIN_GAIN;
        self.cwnd_gain = 1.0;
        self.cwnd = train;
        true
    }

    /// What became of the path hint, once decided (`None`: no hint, or still measuring).
    pub fn warm_outcome(&self) -> Option<WarmOutcome> {
        self.warm_outcome
    }

    /// The current path estimate: the hint while it is being checked, then the measured
    /// bottleneck bandwidth and min RTT (`None` until both exist). During Startup the
    /// bandwidth is a lower bound.
    pub fn path_estimate(&self) -> Option<PathHint> {
        if let Some(w) = &self.warm {
            return Some(PathHint {
                btl_bw_bytes_per_sec: w.hint.btl_bw_bytes_per_sec,
                min_rtt: self.min_rtt.unwrap_or(w.hint.min_rtt),
            });
        }
        let bw = self.btlbw.get();
        match self.min_rtt {
            Some(min_rtt) if bw >= 1.0 => Some(PathHint {
                btl_bw_bytes_per_sec: bw as u64,
                min_rtt,
            }),
            _ => None,
        }
    }

    /// Warm start: measure the train's ack dispersion and decide (see [`Bbr::set_path_hint`]).
    fn warm_check(&mut self, now: Instant) {
        let Some(mut w) = self.warm else { return };
        let Some((t0, d0)) = w.first_ack else {
            w.first_ack = Some((now, self.delivered));
            self.warm = Some(w);
            return;
        };
        let got = self.delivered - d0;
        let dt = now.saturating_duration_since(t0).as_secs_f64();
        let measured = self.delivered * 4 >= w.train * 3 && got > 0 && dt > 0.0;
        if !measured {
            // a packet sent after the first ack came back (two rounds) or the round lost a
            // quarter of the train: no clean measurement, search as a cold start would
            if self.round_count >= 3 || self.round_lost * 4 > w.train {
                self.warm = None;
                self.warm_outcome = Some(WarmOutcome::Unmeasured);
                self.enter_startup();
            }
            return;
        }
        self.warm = None;
        let rate = got as f64 / dt;
        if rate > WARM_CONFIRM_HIGH * w.hint_bw {
            self.warm_outcome = Some(WarmOutcome::TooLow);
            self.btlbw.update(self.round_count, rate);
            self.enter_startup();
            // the window a cold Startup has when its estimate reaches this rate, so the next
            // round's samples can show growth beyond it
            self.cwnd = self
                .cwnd
                .max((STARTUP_CWND_GAIN * self.bdp() as f64) as u64);
        } else if rate >= WARM_CONFIRM_LOW * w.hint_bw {
            self.warm_outcome = Some(WarmOutcome::Confirmed);
            self.btlbw.update(self.round_count, w.hint_bw);
            self.filled = true;
            self.enter_probe_bw(now);
        } else {
            self.warm_outcome = Some(WarmOutcome::TooHigh);
            self.btlbw.update(self.round_count, rate);
            self.filled = true;
            self.enter_drain();
        }
    }

    fn enter_startup(&mut self) {
        self.state = BbrState::Startup;
        self.pacing_gain = HIGH_GAIN;
        self.cwnd_gain = STARTUP_CWND_GAIN;
        self.full_bw = 0.0;
        self.full_bw_count = 0;
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

    /// The retransmission timer expired. A hint still being checked gets no measurement from
    /// this train: search as a cold start would.
    pub fn on_rto(&mut self) {
        if self.warm.take().is_some() {
            self.warm_outcome = Some(WarmOutcome::Unmeasured);
            self.enter_startup();
        }
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
            } else if self
                .min_rtt
                .is_some_and(|m| r <= m + m / MIN_RTT_REFRESH_DIVISOR + MIN_RTT_REFRESH_SLACK)
            {
                // the queue is empty: min_rtt is still the path's
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
        self.update_ack_aggregation(now, acked_bytes);

        if round_start {
            self.end_round(bytes_in_flight);
        }
        if self.state == BbrState::WarmStart {
            self.warm_check(now);
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
        self.update_cruise_gain();
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
        // HyStart) one round without growth while a standing queue shows in the RTT: more
        // than twice cruise control's lower queue bound, so the exit comes a round before
        // Startup's window (2 x BDP) would fill a one-BDP buffer.
        let startup_queue = match (self.round_min_rtt, self.min_rtt) {
            (Some(r), Some(m)) => {
                r.saturating_sub(m) > (m / CRUISE_QUEUE_DIVISOR).max(CRUISE_QUEUE_MIN) * 2
            }
            _ => false,
        };
        if !self.filled
            && self.state != BbrState::WarmStart
            && self.app_limited_until <= self.delivered
        {
            let bw = self.btlbw.get();
            if bw >= self.full_bw * 1.25 {
                self.full_bw = bw;
                self.full_bw_count = 0;
            } else {
                self.full_bw_count += 1;
                if self.full_bw_count >= FULL_BW_ROUNDS || queue || startup_queue {
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

    /// Cruise control, once per round in ProbeBw: the round's smallest RTT above min_rtt is
    /// the queue that stood all round. The max-filtered bandwidth estimate reads a few
    /// percent high on real hosts (ack timing noise), and cruising at it fills the bottleneck
    /// buffer until it overflows. Two terms act on the cruise phases (gain 1): the next
    /// round paces below the cruise gain by the queue's share of min_rtt, so it drains within
    /// about a round (proportional, [`CRUISE_MAX_DRAIN`]); and the cruise gain itself steps
    /// down while judged rounds keep a standing queue and back up while they do not
    /// (integral, [`CRUISE_STEP`]), which takes out the estimate's bias.
    fn update_cruise_gain(&mut self) {
        self.cruise_drain = 0.0;
        if self.state != BbrState::ProbeBw {
            return;
        }
        let (Some(r), Some(m)) = (self.round_min_rtt, self.min_rtt) else {
            return;
        };
        let lo = (m / CRUISE_QUEUE_DIVISOR)
            .max(CRUISE_QUEUE_MIN)
            .as_secs_f64();
        let hi = lo * CRUISE_QUEUE_BAND;
        let q = r.saturating_sub(m).as_secs_f64();
        self.cruise_drain = ((q - hi).max(0.0) / m.as_secs_f64()).min(CRUISE_MAX_DRAIN);
        if matches!(self.cycle_index, 1 | 2) || self.round_count < self.cruise_from_round {
            return;
        }
        // The estimate counts delivered bytes: with random loss p the bottleneck is kept busy
        // by sending 1 / (1 - p) of it (the lost frames never reach it, or were already
        // counted on it), so that is the cap, not 1.
        let cap = 1.0 / (1.0 - self.loss_ewma.min(CRUISE_MAX_LOSS_COMPENSATION));
        if q > hi {
            self.cruise_gain = (self.cruise_gain - CRUISE_STEP).max(CRUISE_MIN_GAIN);
        } else if q < lo {
            self.cruise_gain += CRUISE_STEP;
        }
        self.cruise_gain = self.cruise_gain.min(cap);
    }

    /// Pacing gain in effect: the cruise phases of ProbeBw use the cruise gain.
    fn effective_gain(&self) -> f64 {
        if self.state == BbrState::ProbeBw && self.pacing_gain == 1.0 {
            self.cruise_gain * (1.0 - self.cruise_drain)
        } else {
            self.pacing_gain
        }
    }

    /// Cruise gain of ProbeBw (1 = the bandwidth estimate).
    pub fn cruise_gain(&self) -> f64 {
        self.cruise_gain
    }

    fn enter_drain(&mut self) {
        self.state = BbrState::Drain;
        self.pacing_gain = 1.0 / HIGH_GAIN;
        self.cwnd_gain = HIGH_GAIN;
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        if self.state != BbrState::ProbeBw {
            self.cruise_from_round = self.round_count + 2;
        }
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
            if self.probe_rtt_done.is_none() && bytes_in_flight <= self.probe_rtt_cwnd() {
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
                    self.cwnd_gain = STARTUP_CWND_GAIN;
                }
            }
        }
    }

    /// Ack aggregation (BBR v1/v2's `bbr_update_ack_aggregation`): a receiver that answers
    /// once per receive batch, or an ACK path that bunches ACKs, acknowledges data in lumps;
    /// between lumps the sender must keep sending, so the window needs room for the largest
    /// lump beyond what btlbw × elapsed explains. On a veth lab a receive batch is up to
    /// 0.5 MB against a BDP (btlbw × min_rtt) of ~80 KB: without this the window, not the
    /// path, sets the rate.
    fn update_ack_aggregation(&mut self, now: Instant, acked: u64) {
        let bw = self.btlbw.get();
        if bw <= 0.0 || acked == 0 {
            return;
        }
        let start = *self.ack_epoch.get_or_insert(now);
        let mut expected = bw * now.saturating_duration_since(start).as_secs_f64();
        if self.ack_epoch_acked as f64 <= expected {
            // the epoch caught up with the estimate: start a new one
            self.ack_epoch = Some(now);
            self.ack_epoch_acked = 0;
            expected = 0.0;
        }
        self.ack_epoch_acked += acked;
        let extra = (self.ack_epoch_acked as f64 - expected).max(0.0);
        let extra = extra.min(self.cwnd as f64);
        self.extra_acked.update(self.round_count, extra);
        self.extra_acked.expire(self.round_count);
    }

    /// The window's allowance for ack aggregation (see `update_ack_aggregation`), bytes.
    pub fn extra_acked(&self) -> u64 {
        self.extra_acked.get() as u64
    }

    fn update_cwnd(&mut self, acked_bytes: u64) {
        let min_cwnd = self.cfg.min_cwnd_frames.max(4) * self.cfg.mss;
        if self.state == BbrState::ProbeRtt {
            self.cwnd = self.probe_rtt_cwnd();
            return;
        }
        if let Some(w) = &self.warm {
            self.cwnd = w.train.max(min_cwnd);
            return;
        }
        // as in BBR, the aggregation allowance only once the pipe was filled (Startup's
        // window stays 2 x BDP, whose overshoot a one-BDP buffer holds)
        let extra = if self.filled {
            self.extra_acked.get() as u64
        } else {
            0
        };
        let target = (self.cwnd_gain * self.bdp() as f64) as u64 + extra + 3 * self.cfg.mss;
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

    /// cwnd during ProbeRtt: [`PROBE_RTT_CWND_GAIN`] x BDP, at least the minimum window.
    fn probe_rtt_cwnd(&self) -> u64 {
        let min_cwnd = self.cfg.min_cwnd_frames.max(4) * self.cfg.mss;
        ((PROBE_RTT_CWND_GAIN * self.bdp() as f64) as u64).max(min_cwnd)
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
        if let Some(w) = &self.warm {
            return (WARM_TRAIN_GAIN * w.hint_bw).max(self.cfg.mss as f64);
        }
        let bw = self.btlbw.get();
        if bw > 0.0 {
            return (self.effective_gain() * bw).max(self.cfg.mss as f64);
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
