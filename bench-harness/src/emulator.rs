//! The WAN emulator: a userspace delay line that impairs Ethernet frames between two
//! interfaces of the router namespace.
//!
//! Owns: the impairment model ([`Impairment`]) and its deterministic, I/O-free core
//! ([`Pipeline`]: seeded loss, duplication, corruption, a bottleneck with a finite tail-drop
//! queue, one-way delay with jitter and explicit reordering, per-direction [`Counters`]), and
//! the runtime ([`WanEmulator`]): one thread per direction, entered into the router namespace,
//! reading frames from one raw socket and writing them out of the other at their release time.
//!
//! Does not: build namespaces or veths (that is [`crate::lab`]), look at IP or above except to
//! pick which byte to corrupt, or emulate anything below Ethernet (no FCS, preamble or
//! inter-frame gap: rates count Ethernet header + payload bytes as seen on the veth).
//!
//! Frame path per direction, in this order (the same as the brief of the lab):
//! 1. random loss (probability `loss`),
//! 2. duplication (probability `duplicate`, the copy follows the original through 3-5),
//! 3. corruption (probability `corrupt`, one byte of the L3 payload is inverted),
//! 4. bottleneck: serialisation at `rate_bps` (a token bucket one frame deep, i.e. a link of
//!    that speed), tail drop when the bytes waiting for the link plus the frame exceed
//!    `queue_bytes`,
//! 5. delay line: release at departure + `delay` + uniform jitter in [-jitter, +jitter]
//!    (so jitter reorders frames when it exceeds their spacing), plus `reorder_gap` for a
//!    fraction `reorder` of frames (they are overtaken by what follows within the gap).
//!
//! The delay line is a binary heap keyed by (release time, arrival sequence).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::error::LabError;
use crate::raw::{self, PacketSocket};

/// Impairments of one direction of the emulated path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Impairment {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Half-width of the uniform jitter added to the delay (0 = none).
    pub jitter: Duration,
    /// Probability that a frame is lost, in [0, 1].
    pub loss: f64,
    /// Probability that a frame is duplicated, in [0, 1].
    pub duplicate: f64,
    /// Probability that a frame has one payload byte inverted, in [0, 1].
    pub corrupt: f64,
    /// Probability that a frame is held back by `reorder_gap`, in [0, 1].
    pub reorder: f64,
    /// Extra delay of a frame chosen for reordering.
    pub reorder_gap: Duration,
    /// Bottleneck rate in bit/s of Ethernet frame bytes; `None` = no bottleneck.
    pub rate_bps: Option<u64>,
    /// Bottleneck queue limit in bytes; `None` = one bandwidth-delay product of the path
    /// (see [`Impairment::resolved_queue_bytes`]).
    pub queue_bytes: Option<u64>,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(1),
            rate_bps: None,
            queue_bytes: None,
        }
    }
}

/// Smallest default queue: ten full-size frames, so a path with tiny delay still buffers.
const MIN_DEFAULT_QUEUE_FRAMES: u64 = 10;

impl Impairment {
    /// Checks that probabilities are in [0, 1] and the rate is not zero.
    pub fn validate(&self) -> Result<(), LabError> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(LabError::Config(format!(
                    "{name} = {p} is not a probability"
                )));
            }
        }
        if self.rate_bps == Some(0) {
            return Err(LabError::Config("rate of 0 bit/s".into()));
        }
        Ok(())
    }

    /// Queue limit in bytes: the configured one, or one bandwidth-delay product for the given
    /// round-trip time (at least ten frames of `max_frame` bytes). `None` without a rate.
    pub fn resolved_queue_bytes(&self, rtt: Duration, max_frame: u64) -> Option<u64> {
        let rate = self.rate_bps?;
        Some(self.queue_bytes.unwrap_or_else(|| {
            let bdp = (u128::from(rate) * rtt.as_nanos() / 8 / 1_000_000_000) as u64;
            bdp.max(MIN_DEFAULT_QUEUE_FRAMES * max_frame)
        }))
    }
}

/// Per-direction counters of the emulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Frames taken in.
    pub in_frames: u64,
    /// Bytes taken in (Ethernet header + payload).
    pub in_bytes: u64,
    /// Frames sent out.
    pub out_frames: u64,
    /// Bytes sent out.
    pub out_bytes: u64,
    /// Frames dropped by random loss.
    pub dropped_loss: u64,
    /// Frames dropped because the bottleneck queue was full.
    pub dropped_queue: u64,
    /// Frames dropped because the delay line held its memory cap.
    pub dropped_overflow: u64,
    /// Frames dropped because they were larger than the receive buffer (offloads left on).
    pub dropped_oversize: u64,
    /// Frames the kernel dropped before the emulator read them (its socket queue was full:
    /// the emulator did not keep up).
    pub dropped_socket: u64,
    /// Frames the kernel refused to send (`send` error).
    pub tx_errors: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Frames with a corrupted byte.
    pub corrupted: u64,
    /// Frames sent after a frame that arrived later than them.
    pub reordered: u64,
    /// Sum over sent frames of (actual send time - release time), ns.
    pub late_sum_ns: u64,
    /// Largest such lateness, ns.
    pub late_max_ns: u64,
}

impl Counters {
    /// Mean lateness of sent frames against their release time.
    pub fn mean_late(&self) -> Duration {
        Duration::from_nanos(self.late_sum_ns.checked_div(self.out_frames).unwrap_or(0))
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    release_ns: u64,
    seq: u64,
    frame: Vec<u8>,
}

/// Default memory cap of the delay line (frames beyond are dropped and counted).
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 256 << 20;

/// Deterministic core of one direction: frames and time go in, frames come out at their
/// release time. No I/O, no clock: tests drive it with synthetic time.
#[derive(Debug)]
pub struct Pipeline {
    imp: Impairment,
    queue_limit: Option<u64>,
    rng: Xoshiro256PlusPlus,
    link_free_ns: u64,
    heap: BinaryHeap<Reverse<Scheduled>>,
    inflight_bytes: u64,
    max_inflight_bytes: u64,
    next_seq: u64,
    max_sent_seq: Option<u64>,
    counters: Counters,
}

/// Ethernet header length.
const ETH_HLEN: usize = 14;

impl Pipeline {
    /// A pipeline with impairment `imp`, bottleneck queue limit `queue_limit` (bytes; ignored
    /// without a rate) and RNG seed `seed`.
    pub fn new(imp: Impairment, queue_limit: Option<u64>, seed: u64) -> Self {
        Self {
            imp,
            queue_limit,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            link_free_ns: 0,
            heap: BinaryHeap::new(),
            inflight_bytes: 0,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            next_seq: 0,
            max_sent_seq: None,
            counters: Counters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Records a frame that could not be taken in because it was too large.
    pub fn count_oversize(&mut self) {
        self.counters.in_frames += 1;
        self.counters.dropped_oversize += 1;
    }

    /// Records frames the kernel dropped on the receive socket.
    pub fn count_socket_drops(&mut self, n: u64) {
        self.counters.in_frames += n;
        self.counters.dropped_socket += n;
    }

    /// Records a failed send.
    pub fn count_tx_error(&mut self) {
        self.counters.tx_errors += 1;
    }

    /// Takes in one frame that arrived at `now_ns`.
    pub fn ingress(&mut self, now_ns: u64, frame: &[u8]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counters.in_frames += 1;
        self.counters.in_bytes += frame.len() as u64;
        if self.imp.loss > 0.0 && self.rng.random_bool(self.imp.loss) {
            self.counters.dropped_loss += 1;
            return;
        }
        let copies = if self.imp.duplicate > 0.0 && self.rng.random_bool(self.imp.duplicate) {
            self.counters.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut f = frame.to_vec();
            if self.imp.corrupt > 0.0 && self.rng.random_bool(self.imp.corrupt) {
                self.corrupt(&mut f);
            }
            self.enqueue(now_ns, seq, f);
        }
    }

    /// Inverts one byte after the Ethernet, IP and transport headers when the frame has such
    /// bytes, else one byte after the Ethernet header: the frame still reaches the receiver,
    /// whose checksum (UDP/TCP, or DWCP's CRC32C) must catch it.
    fn corrupt(&mut self, f: &mut [u8]) {
        let start = if f.len() > ETH_HLEN + 20 + 8 {
            let ihl = usize::from(f[ETH_HLEN] & 0x0f) * 4;
            let l4 = if f.get(ETH_HLEN + 9) == Some(&6) {
                20
            } else {
                8
            };
            (ETH_HLEN + ihl.max(20) + l4).min(f.len() - 1)
        } else {
            ETH_HLEN.min(f.len().saturating_sub(1))
        };
        if f.is_empty() {
            return;
        }
        let at = self.rng.random_range(start..f.len());
        f[at] = !f[at];
        self.counters.corrupted += 1;
    }

    fn enqueue(&mut self, now_ns: u64, seq: u64, frame: Vec<u8>) {
        let len = frame.len() as u64;
        let depart_ns = match self.imp.rate_bps {
            None => now_ns,
            Some(rate) => {
                let backlog = if self.link_free_ns > now_ns {
                    (u128::from(self.link_free_ns - now_ns) * u128::from(rate) / 8 / 1_000_000_000)
                        as u64
                } else {
                    0
                };
                if let Some(limit) = self.queue_limit
                    && backlog + len > limit
                {
                    self.counters.dropped_queue += 1;
                    return;
                }
                let tx_ns = (u128::from(len) * 8 * 1_000_000_000 / u128::from(rate)) as u64;
                let start = self.link_free_ns.max(now_ns);
                self.link_free_ns = start + tx_ns;
                self.link_free_ns
            }
        };
        if self.inflight_bytes + len > self.max_inflight_bytes {
            self.counters.dropped_overflow += 1;
            return;
        }
        let base = depart_ns + self.imp.delay.as_nanos() as u64;
        let j = self.imp.jitter.as_nanos() as i64;
        let mut release = if j > 0 {
            let off = self.rng.random_range(-j..=j);
            base.saturating_add_signed(off).max(depart_ns)
        } else {
            base
        };
        if self.imp.reorder > 0.0 && self.rng.random_bool(self.imp.reorder) {
            release += self.imp.reorder_gap.as_nanos() as u64;
        }
        self.inflight_bytes += len;
        self.heap.push(Reverse(Scheduled {
            release_ns: release,
            seq,
            frame,
        }));
    }

    /// Release time of the next frame, if any.
    pub fn next_release(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(s)| s.release_ns)
    }

    /// Frames held in the delay line and the bottleneck.
    pub fn inflight(&self) -> usize {
        self.heap.len()
    }

    /// Takes out the next frame due at `now_ns`, with its release time.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, Vec<u8>)> {
        if self.next_release()? > now_ns {
            return None;
        }
        let Reverse(s) = self.heap.pop()?;
        self.inflight_bytes -= s.frame.len() as u64;
        match self.max_sent_seq {
            Some(m) if s.seq < m => self.counters.reordered += 1,
            _ => self.max_sent_seq = Some(s.seq),
        }
        self.counters.out_frames += 1;
        self.counters.out_bytes += s.frame.len() as u64;
        let late = now_ns - s.release_ns;
        self.counters.late_sum_ns += late;
        self.counters.late_max_ns = self.counters.late_max_ns.max(late);
        Some((s.release_ns, s.frame))
    }
}

/// One direction of the running emulator: where frames come from and go to.
#[derive(Debug, Clone)]
pub struct Direction {
    /// Interface (in the router namespace) frames are read from.
    pub from_if: String,
    /// Interface frames are written to.
    pub to_if: String,
    /// Impairment of this direction.
    pub impairment: Impairment,
    /// Resolved bottleneck queue limit (bytes).
    pub queue_bytes: Option<u64>,
    /// RNG seed of this direction.
    pub seed: u64,
    /// `SCHED_FIFO` priority of the thread (`None` = ordinary scheduling). If the kernel
    /// refuses, the thread runs with ordinary scheduling.
    pub realtime_priority: Option<i32>,
}

/// Largest frame the emulator takes in; larger ones are counted as oversize and dropped.
pub const MAX_FRAME: usize = 65_536;

/// Longest the emulator thread sleeps before it checks its stop flag.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// The running emulator: one thread per direction inside the router namespace. Stops and
/// joins its threads on drop.
#[derive(Debug)]
pub struct WanEmulator {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<Arc<Mutex<Counters>>>,
    names: Vec<String>,
}

impl WanEmulator {
    /// Starts one thread per direction inside `router`; returns once every thread has bound
    /// its sockets (so no frame sent after this returns is missed).
    pub fn start(router: &dwcp_netns::Netns, directions: Vec<Direction>) -> Result<Self, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut emu = Self {
            stop: stop.clone(),
            threads: Vec::new(),
            counters: Vec::new(),
            names: Vec::new(),
        };
        for d in directions {
            d.impairment.validate()?;
            let shared = Arc::new(Mutex::new(Counters::default()));
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let stop = stop.clone();
            let c = shared.clone();
            let name = format!("{}->{}", d.from_if, d.to_if);
            let handle = router
                .spawn_in(move || run_direction(d, stop, c, ready_tx))
                .map_err(|source| LabError::Netns {
                    step: "enter router namespace",
                    source,
                })?;
            emu.threads.push(handle);
            emu.counters.push(shared);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((ifname, source))) => return Err(LabError::Socket { ifname, source }),
                Err(_) => return Err(LabError::ThreadDied { direction: name }),
            }
            emu.names.push(name);
        }
        Ok(emu)
    }

    /// Counters of each direction, in the order given to [`WanEmulator::start`].
    pub fn counters(&self) -> Vec<Counters> {
        self.counters
            .iter()
            .map(|c| *c.lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// Names of the directions (`from->to`), same order as [`WanEmulator::counters`].
    pub fn direction_names(&self) -> &[String] {
        &self.names
    }

    /// Whether every emulator thread is still running.
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }
}

impl Drop for WanEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

type Ready = std::sync::mpsc::Sender<Result<(), (String, std::io::Error)>>;

fn run_direction(d: Direction, stop: Arc<AtomicBool>, shared: Arc<Mutex<Counters>>, ready: Ready) {
    let _ = raw::set_min_timer_slack();
    if let Some(p) = d.realtime_priority {
        let _ = raw::set_realtime(p);
    }
    let rx = match PacketSocket::open(&d.from_if, true) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err((d.from_if.clone(), e)));
            return;
        }
    };
    let tx = match PacketSocket::open(&d.to_if, false) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err((d.to_if.clone(), e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut pipe = Pipeline::new(d.impairment, d.queue_bytes, d.seed);
    let mut buf = vec![0u8; MAX_FRAME];
    let epoch = Instant::now();
    let now_ns = || epoch.elapsed().as_nanos() as u64;
    let mut published = pipe.counters();
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_stats.elapsed() >= Duration::from_millis(100) {
            last_stats = Instant::now();
            if let Ok(n) = rx.take_drops()
                && n > 0
            {
                pipe.count_socket_drops(n);
            }
        }
        // Release what is due.
        let now = now_ns();
        while let Some((_, frame)) = pipe.pop_due(now) {
            if tx.send(&frame).is_err() {
                pipe.count_tx_error();
            }
        }
        // Take in what has arrived (bounded batch so releases are not starved).
        let mut got = 0;
        while got < 64 {
            match rx.recv(&mut buf) {
                Ok(Some(n)) if n <= buf.len() => {
                    pipe.ingress(now_ns(), &buf[..n]);
                    got += 1;
                }
                Ok(Some(_)) => {
                    pipe.count_oversize();
                    got += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        let c = pipe.counters();
        if c != published {
            *shared.lock().unwrap_or_else(|p| p.into_inner()) = c;
            published = c;
        }
        if got > 0 {
            continue;
        }
        let now = now_ns();
        let wait = match pipe.next_release() {
            Some(t) if t <= now => continue,
            Some(t) => Duration::from_nanos(t - now).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        let _ = rx.wait_readable(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn frame(len: usize, tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12] = 0x08; // IPv4
        f[ETH_HLEN] = 0x45;
        f[ETH_HLEN + 9] = 17;
        f[len - 1] = tag;
        f
    }

    fn drain(p: &mut Pipeline, until: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(t) = p.next_release() {
            if t > until {
                break;
            }
            out.push(p.pop_due(t).unwrap());
        }
        out
    }

    #[test]
    fn delay_is_exact_without_jitter() {
        let imp = Impairment {
            delay: Duration::from_millis(25),
            ..Default::default()
        };
        let mut p = Pipeline::new(imp, None, 1);
        p.ingress(5 * MS, &frame(100, 1));
        assert!(p.pop_due(30 * MS - 1).is_none());
        let (rel, f) = p.pop_due(30 * MS).unwrap();
        assert_eq!(rel, 30 * MS);
        assert_eq!(f, frame(100, 1));
    }

    #[test]
    fn loss_ratio_is_statistically_right_and_seeded() {
        let imp = Impairment {
            loss: 0.01,
            ..Default::default()
        };
        let run = |seed| {
            let mut p = Pipeline::new(imp.clone(), None, seed);
            for i in 0..100_000u64 {
                p.ingress(i, &frame(64, 0));
            }
            p.counters().dropped_loss
        };
        let lost = run(7);
        // Binomial(100000, 0.01): sd = 31.5; 5 sd margin.
        assert!((843..=1157).contains(&lost), "lost {lost}");
        assert_eq!(lost, run(7), "same seed, same losses");
        assert_ne!(lost, run(8), "another seed gives another pattern");
    }

    #[test]
    fn bottleneck_serialises_at_rate_and_tail_drops() {
        // 1000 B frames at 8 Mbit/s: 1 ms each. Queue of 3000 B.
        let imp = Impairment {
            rate_bps: Some(8_000_000),
            ..Default::default()
        };
        let mut p = Pipeline::new(imp, Some(3000), 1);
        for i in 0..10u8 {
            p.ingress(0, &frame(1000, i));
        }
        // Frame 0: backlog 0 -> departs 1 ms; frame 1: backlog 1000 -> 2 ms; frame 2: backlog
        // 2000 -> 3 ms; frame 3: backlog 3000 + 1000 > 3000 -> dropped, and so on.
        let c = p.counters();
        assert_eq!(c.dropped_queue, 7);
        let out = drain(&mut p, u64::MAX);
        let times: Vec<u64> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![MS, 2 * MS, 3 * MS]);
        // After the queue drains, the link accepts again at line rate.
        p.ingress(10 * MS, &frame(1000, 42));
        assert_eq!(p.pop_due(11 * MS).unwrap().0, 11 * MS);
    }

    #[test]
    fn long_run_rate_matches_configured_rate() {
        let imp = Impairment {
            rate_bps: Some(200_000_000),
            delay: Duration::from_millis(25),
            ..Default::default()
        };
        let q = imp.resolved_queue_bytes(Duration::from_millis(50), 1514);
        assert_eq!(q, Some(1_250_000));
        let mut p = Pipeline::new(imp, q, 1);
        // Offer 300 Mbit/s of 1514 B frames for 1 s.
        let gap = 1514 * 8 * 1_000_000_000 / 300_000_000;
        let mut t = 0;
        let mut out_bytes = 0u64;
        while t < 1_000 * MS {
            p.ingress(t, &frame(1514, 0));
            while let Some((_, f)) = p.pop_due(t) {
                out_bytes += f.len() as u64;
            }
            t += gap;
        }
        // Over [25 ms, 1 s] the output is the bottleneck rate.
        let mbit = out_bytes as f64 * 8.0 / 0.975 / 1e6;
        assert!((199.0..=201.0).contains(&mbit), "{mbit} Mbit/s");
        assert!(p.counters().dropped_queue > 0);
    }

    #[test]
    fn jitter_reorders_and_is_counted() {
        let imp = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(2),
            ..Default::default()
        };
        let mut p = Pipeline::new(imp, None, 3);
        for i in 0..1000u64 {
            p.ingress(i * 100_000, &frame(64, 0)); // one frame per 0.1 ms
        }
        let out = drain(&mut p, u64::MAX);
        assert_eq!(out.len(), 1000);
        for (t, _) in &out {
            assert!(*t >= 8 * MS);
        }
        let r = p.counters().reordered;
        assert!(r > 100, "reordered {r}");
    }

    #[test]
    fn explicit_reorder_without_jitter() {
        let imp = Impairment {
            delay: Duration::from_millis(5),
            reorder: 0.1,
            reorder_gap: Duration::from_millis(1),
            ..Default::default()
        };
        let mut p = Pipeline::new(imp, None, 4);
        for i in 0..10_000u64 {
            p.ingress(i * 10_000, &frame(64, 0)); // 0.01 ms apart: gap overtakes ~100
        }
        drain(&mut p, u64::MAX);
        let r = p.counters().reordered;
        assert!((850..=1150).contains(&r), "reordered {r}");
    }

    #[test]
    fn duplication_and_corruption() {
        let imp = Impairment {
            duplicate: 0.05,
            corrupt: 0.05,
            ..Default::default()
        };
        let mut p = Pipeline::new(imp, None, 5);
        let original = frame(1000, 9);
        for _ in 0..10_000 {
            p.ingress(0, &original);
        }
        let c = p.counters();
        assert!((400..=600).contains(&c.duplicated), "{c:?}");
        let out = drain(&mut p, u64::MAX);
        assert_eq!(out.len() as u64, 10_000 + c.duplicated);
        let mut damaged = 0;
        for (_, f) in &out {
            let diff: Vec<usize> = (0..f.len()).filter(|&i| f[i] != original[i]).collect();
            assert!(diff.len() <= 1);
            if let Some(&i) = diff.first() {
                assert!(i >= ETH_HLEN + 28, "corrupted a header byte at {i}");
                damaged += 1;
            }
        }
        assert_eq!(damaged, c.corrupted);
        assert!((400..=650).contains(&damaged));
        assert_eq!(c.reordered, 0, "duplicates are not reorderings");
    }

    #[test]
    fn invalid_probability_is_refused() {
        let imp = Impairment {
            loss: 1.5,
            ..Default::default()
        };
        assert!(imp.validate().is_err());
    }
}
