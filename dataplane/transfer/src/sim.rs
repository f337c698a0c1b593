//! Deterministic simulated network for driving endpoints in virtual time: a seeded one-way link
//! model (bottleneck serialization with a finite tail-drop buffer, propagation delay, jitter,
//! random loss, reordering, duplication and bit-flip corruption) and a discrete-event loop that
//! runs any number of sender/receiver pairs over a shared forward and reverse link.
//!
//! Owns virtual time (an `Instant` epoch plus offsets), the link model and host stalls
//! ([`HostStall`]: an endpoint's host that periodically does not run it, as a descheduled
//! process on a busy machine; datagrams for it wait, as in a socket buffer). Does not model
//! CPU cost, or anything below the datagram (MTU fragmentation, ECN).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::receiver::Receiver;
use crate::sender::{Sender, SenderState};

/// Small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
    /// `len` pseudo-random bytes (the next u64s, little-endian, cut to `len`): the test and
    /// example objects of the simulator.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// One direction of a link.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Bottleneck rate in bit/s (0 = unlimited).
    pub rate_bps: f64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra uniform delay in `[0, jitter]` per frame.
    pub jitter: Duration,
    /// Bottleneck buffer in bytes (tail drop beyond it).
    pub buffer_bytes: usize,
    /// Random loss probability (after the bottleneck unless `loss_before_queue`).
    pub loss: f64,
    /// Drop at random before the bottleneck queue, as the namespace lab's emulator does (a
    /// frame lost there takes no link time), instead of after it.
    pub loss_before_queue: bool,
    /// Probability that a frame is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of reordered frames.
    pub reorder_delay: Duration,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that one bit of a frame is flipped.
    pub corrupt: f64,
}

impl LinkConfig {
    /// A clean link of `rate_bps` and `rtt` (half of it each way) with a one-BDP buffer.
    pub fn clean(rate_bps: f64, rtt: Duration) -> Self {
        let bdp = (rate_bps / 8.0 * rtt.as_secs_f64()) as usize;
        Self {
            rate_bps,
            delay: rtt / 2,
            jitter: Duration::ZERO,
            buffer_bytes: bdp.max(64 * 1024),
            loss: 0.0,
            loss_before_queue: false,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            corrupt: 0.0,
        }
    }
}

/// What a link did.
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    /// Frames offered.
    pub offered: u64,
    /// Frames delivered (duplicates included).
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes_delivered: u64,
    /// Dropped at random.
    pub dropped_random: u64,
    /// Dropped because the buffer was full.
    pub dropped_queue: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames held back.
    pub reordered: u64,
    /// Dropped because the link was down ([`Link::outage`]).
    pub dropped_outage: u64,
    /// Largest frame offered (bytes).
    pub max_frame: usize,
}

/// One direction of a link with its state.
#[derive(Debug, Clone)]
pub struct Link {
    /// Configuration.
    pub cfg: LinkConfig,
    rng: SimRng,
    busy_until: Option<Instant>,
    /// Counters.
    pub stats: LinkStats,
    /// The link is down (every frame offered is dropped) from the first instant until the
    /// second: a partition of this direction.
    pub outage: Option<(Instant, Instant)>,
}

impl Link {
    /// New link with a seed.
    pub fn new(cfg: LinkConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: SimRng::new(seed),
            busy_until: None,
            stats: LinkStats::default(),
            outage: None,
        }
    }

    /// Offer a frame at `now`; returns its arrivals (none, one, or two).
    pub fn transmit(&mut self, now: Instant, mut frame: Vec<u8>) -> Vec<(Instant, Vec<u8>)> {
        self.stats.offered += 1;
        self.stats.max_frame = self.stats.max_frame.max(frame.len());
        if self
            .outage
            .is_some_and(|(from, until)| from <= now && now < until)
        {
            self.stats.dropped_outage += 1;
            return Vec::new();
        }
        if self.cfg.loss_before_queue && self.rng.chance(self.cfg.loss) {
            self.stats.dropped_random += 1;
            return Vec::new();
        }
        let mut depart = now;
        if self.cfg.rate_bps > 0.0 {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let backlog =
                start.saturating_duration_since(now).as_secs_f64() * self.cfg.rate_bps / 8.0;
            if backlog + frame.len() as f64 > self.cfg.buffer_bytes as f64 {
                self.stats.dropped_queue += 1;
                return Vec::new();
            }
            depart = start + Duration::from_secs_f64(frame.len() as f64 * 8.0 / self.cfg.rate_bps);
            self.busy_until = Some(depart);
        }
        if !self.cfg.loss_before_queue && self.rng.chance(self.cfg.loss) {
            self.stats.dropped_random += 1;
            return Vec::new();
        }
        if self.rng.chance(self.cfg.corrupt) && !frame.is_empty() {
            let bit = (self.rng.next_u64() % (frame.len() as u64 * 8)) as usize;
            frame[bit / 8] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let copies = if self.rng.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let mut out = Vec::with_capacity(copies);
        for c in 0..copies {
            let mut at = depart + self.cfg.delay;
            if !self.cfg.jitter.is_zero() {
                at += self.cfg.jitter.mul_f64(self.rng.next_f64());
            }
            if self.rng.chance(self.cfg.reorder) {
                self.stats.reordered += 1;
                at += self.cfg.reorder_delay;
            }
            self.stats.delivered += 1;
            self.stats.bytes_delivered += frame.len() as u64;
            let data = if c + 1 == copies {
                std::mem::take(&mut frame)
            } else {
                frame.clone()
            };
            out.push((at, data));
        }
        out
    }
}

/// A host that does not run its endpoint for `length` out of every `period` (from `phase`
/// after the epoch): no polls, no timers; datagrams that arrive meanwhile are handled when the
/// stall ends, in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStall {
    /// Cycle length.
    pub period: Duration,
    /// Stalled part of each cycle.
    pub length: Duration,
    /// Offset of the first stall from the epoch.
    pub phase: Duration,
}

impl HostStall {
    /// End of the stall covering `now`, if `now` is inside one.
    pub fn stalled_until(&self, epoch: Instant, now: Instant) -> Option<Instant> {
        let t = now.checked_duration_since(epoch + self.phase)?;
        let p = self.period.as_nanos().max(1);
        let into = t.as_nanos() % p;
        (into < self.length.as_nanos())
            .then(|| now + Duration::from_nanos((self.length.as_nanos() - into) as u64))
    }
}

/// A sender/receiver pair in the simulation.
#[derive(Debug)]
pub struct Flow {
    /// Sending endpoint.
    pub sender: Sender,
    /// Receiving endpoint.
    pub receiver: Receiver,
    /// When the flow starts.
    pub start: Instant,
    /// When the sender reached a terminal state.
    pub done_at: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    at: Instant,
    seq: u64,
    flow: usize,
    to_receiver: bool,
    data: Vec<u8>,
}

/// The discrete-event simulator.
#[derive(Debug)]
pub struct Sim {
    /// Virtual time zero.
    pub epoch: Instant,
    /// Current virtual time.
    pub now: Instant,
    /// Sender-to-receiver link (shared by all flows).
    pub fwd: Link,
    /// Receiver-to-sender link (shared by all flows).
    pub rev: Link,
    /// The flows.
    pub flows: Vec<Flow>,
    /// Stalls of the senders' host (all flows), if any.
    pub sender_stall: Option<HostStall>,
    /// Stalls of the receivers' host (all flows), if any.
    pub receiver_stall: Option<HostStall>,
    events: BinaryHeap<Reverse<Ev>>,
    seq: u64,
}

impl Sim {
    /// New simulation starting at `epoch`.
    pub fn new(epoch: Instant, fwd: Link, rev: Link) -> Self {
        Self {
            epoch,
            now: epoch,
            fwd,
            rev,
            flows: Vec::new(),
            sender_stall: None,
            receiver_stall: None,
            events: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Add a flow starting at `start`; returns its index.
    pub fn add_flow(&mut self, sender: Sender, receiver: Receiver, start: Instant) -> usize {
        self.flows.push(Flow {
            sender,
            receiver,
            start,
            done_at: None,
        });
        self.flows.len() - 1
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }

    /// Drop frames in flight (e.g. after replacing a flow's endpoints).
    pub fn clear_in_flight(&mut self, flow: usize) {
        let ev: Vec<_> = std::mem::take(&mut self.events).into_vec();
        self.events = ev.into_iter().filter(|e| e.0.flow != flow).collect();
    }

    fn terminal(s: &Sender) -> bool {
        matches!(s.state(), SenderState::Complete | SenderState::Failed)
    }

    /// True when every sender finished (completed or failed).
    pub fn all_done(&self) -> bool {
        self.flows.iter().all(|f| Self::terminal(&f.sender))
    }

    fn push(&mut self, flow: usize, to_receiver: bool, arrivals: Vec<(Instant, Vec<u8>)>) {
        for (at, data) in arrivals {
            self.seq += 1;
            self.events.push(Reverse(Ev {
                at,
                seq: self.seq,
                flow,
                to_receiver,
                data,
            }));
        }
    }

    /// End of the current stall of the sender (`to_receiver == false`) or receiver host.
    fn stalled(&self, receiver: bool) -> Option<Instant> {
        let st = if receiver {
            self.receiver_stall
        } else {
            self.sender_stall
        };
        st.and_then(|s| s.stalled_until(self.epoch, self.now))
    }

    fn pump(&mut self) {
        let now = self.now;
        let (s_stalled, r_stalled) = (self.stalled(false).is_some(), self.stalled(true).is_some());
        for i in 0..self.flows.len() {
            if now < self.flows[i].start {
                continue;
            }
            while let Some(b) = (!s_stalled)
                .then(|| self.flows[i].sender.poll_transmit(now))
                .flatten()
            {
                let a = self.fwd.transmit(now, b);
                self.push(i, true, a);
            }
            while let Some(b) = (!r_stalled)
                .then(|| self.flows[i].receiver.poll_transmit(now))
                .flatten()
            {
                let a = self.rev.transmit(now, b);
                self.push(i, false, a);
            }
            if self.flows[i].done_at.is_none() && Self::terminal(&self.flows[i].sender) {
                self.flows[i].done_at = Some(now);
            }
        }
    }

    fn next_time(&mut self) -> Option<Instant> {
        let mut t = self.events.peek().map(|e| e.0.at);
        let now = self.now;
        let (s_until, r_until) = (self.stalled(false), self.stalled(true));
        let mut min = |x: Instant| t = Some(t.map_or(x, |y: Instant| y.min(x)));
        for f in &mut self.flows {
            if now < f.start {
                min(f.start);
                continue;
            }
            // a stalled host wakes up at the end of its stall at the earliest
            if let Some(x) = f.sender.poll_timeout() {
                min(s_until.map_or(x, |u| x.max(u)));
            }
            if let Some(x) = f.receiver.poll_timeout() {
                min(r_until.map_or(x, |u| x.max(u)));
            }
        }
        t
    }

    /// Run until every sender finished, `stop` returns true, or `deadline` (virtual) passes.
    /// Returns true if every sender finished.
    pub fn run_until(&mut self, deadline: Instant, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        let mut spins = 0u32;
        loop {
            self.pump();
            if self.all_done() || stop(self) {
                return self.all_done();
            }
            let Some(t) = self.next_time() else {
                return false;
            };
            if t > deadline {
                self.now = deadline;
                return false;
            }
            if t <= self.now {
                spins += 1;
                assert!(spins < 100_000, "simulation stuck at {:?}", self.elapsed());
            } else {
                spins = 0;
                self.now = t;
            }
            let now = self.now;
            let (s_until, r_until) = (self.stalled(false), self.stalled(true));
            let mut deferred = Vec::new();
            while self.events.peek().is_some_and(|e| e.0.at <= now) {
                let Some(Reverse(ev)) = self.events.pop() else {
                    break;
                };
                let until = if ev.to_receiver { r_until } else { s_until };
                if let Some(u) = until {
                    // the host is not running: the datagram waits (keeps its order)
                    deferred.push(Ev { at: u, ..ev });
                    continue;
                }
                let f = &mut self.flows[ev.flow];
                if ev.to_receiver {
                    f.receiver.handle_frame(now, &ev.data);
                } else {
                    f.sender.handle_frame(now, &ev.data);
                }
            }
            for ev in deferred {
                self.events.push(Reverse(ev));
            }
            for f in &mut self.flows {
                if now < f.start {
                    continue;
                }
                if s_until.is_none() && f.sender.poll_timeout().is_some_and(|x| x <= now) {
                    f.sender.handle_timeout(now);
                }
                if r_until.is_none() && f.receiver.poll_timeout().is_some_and(|x| x <= now) {
                    f.receiver.handle_timeout(now);
                }
            }
        }
    }

    /// Run for at most `limit` of virtual time; true if every sender finished.
    pub fn run(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        self.run_until(deadline, |_| false)
    }
}
