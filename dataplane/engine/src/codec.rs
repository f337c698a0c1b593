//! Chunk codecs for the appliance's transfers, and the measured signal that lets a
//! datacenter-mode transfer compress when the link, not the CPU, is the bottleneck.
//!
//! Owns: building a transfer's encoder/decoder from a [`CodecChoice`] (the HDE chunk codec
//! of `dwcp_hde::chunk`, or raw for `--codec raw`), and [`LinkBoundMonitor`], which watches
//! the sender's stats in wall-clock time and flips
//! [`CodecControl::set_datacenter_compress`].
//!
//! The signal: in steady state (congestion controller in ProbeBw) over windows of at least
//! [`WINDOW`], the sender is **link-bound** when it sends at >= [`LINK_BOUND_UTIL`] of its own
//! pacing rate while its congestion window is not full: it waits on pacing, so the CPU has
//! time to spare and fewer bytes per chunk mean more chunks per second through the link. It
//! is **CPU-bound** when it falls short of its pacing rate (the worker cannot keep up), or
//! when the congestion window is full on a datacenter path (the ACK clock is slow because
//! the receiver or the path's CPU work is the limit; on veth the receive work runs on the
//! sender's CPU). Compression is switched on after [`ON_WINDOWS`] link-bound windows in a
//! row and off after [`OFF_WINDOWS`] CPU-bound ones; once switched off by a CPU-bound signal it
//! stays off for [`HOLD_OFF`], so a codec that made the sender CPU-bound does not flap. The
//! flag only matters while the mode is Datacenter (internet and hybrid modes compress anyway).
//!
//! Does not: encode anything itself, decide the link mode, or read CPU counters (a busy-poll
//! worker uses 100 % of its core either way, so CPU time says nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dwcp_hde::chunk::{ChunkCodec, ChunkCodecConfig, ChunkCodecError};
pub use dwcp_hde::chunk::{CodecChoice, CodecControl, CodecStats};
use dwcp_transfer::cc::BbrState;
use dwcp_transfer::codec::{ChunkDecoder, ChunkEncoder};
use dwcp_transfer::{LinkMode, SenderStats};

/// Shortest measurement window.
pub const WINDOW: Duration = Duration::from_millis(200);
/// Send rate / pacing rate at or above which a window counts as link-bound.
pub const LINK_BOUND_UTIL: f64 = 0.9;
/// Link-bound windows in a row before compression is switched on.
pub const ON_WINDOWS: u32 = 3;
/// CPU-bound windows in a row before compression is switched off.
pub const OFF_WINDOWS: u32 = 2;
/// After a CPU-bound switch-off, compression stays off this long.
pub const HOLD_OFF: Duration = Duration::from_secs(5);

/// A transfer's encoder and the handle to read its counters and switch it.
pub fn sender_codec(
    choice: CodecChoice,
) -> Result<(Box<dyn ChunkEncoder>, Arc<CodecControl>), ChunkCodecError> {
    let c = ChunkCodec::new(ChunkCodecConfig {
        choice,
        ..Default::default()
    })?;
    let ctl = c.control();
    Ok((Box::new(c), ctl))
}

/// A receiver's decoder (accepts raw, zero, zstd and HDE containers whatever the sender's
/// choice) and its counters.
pub fn receiver_codec() -> Result<(Box<dyn ChunkDecoder>, Arc<CodecControl>), ChunkCodecError> {
    let c = ChunkCodec::new(ChunkCodecConfig::default())?;
    let ctl = c.control();
    Ok((Box::new(c), ctl))
}

/// What the monitor needs from one stats snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    /// Link mode.
    pub mode: LinkMode,
    /// Controller in steady state (ProbeBw).
    pub steady: bool,
    /// Datagram bytes sent so far.
    pub bytes_sent: u64,
    /// Pacing rate, bytes/s.
    pub pacing_rate: f64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
}

impl From<&SenderStats> for LinkSample {
    fn from(s: &SenderStats) -> Self {
        Self {
            mode: s.mode,
            steady: s.cc_state == BbrState::ProbeBw,
            bytes_sent: s.bytes_sent,
            pacing_rate: s.pacing_rate,
            cwnd: s.cwnd,
            bytes_in_flight: s.bytes_in_flight,
        }
    }
}

/// Verdict of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Waiting on pacing with the window open: the link (or its pacing) is the limit.
    Link,
    /// Behind the pacing rate or window-limited: the CPU is the limit.
    Cpu,
}

/// Watches a sender and switches datacenter compression (see the module docs).
#[derive(Debug)]
pub struct LinkBoundMonitor {
    control: Arc<CodecControl>,
    start: Option<(Instant, LinkSample)>,
    cwnd_full: u32,
    samples: u32,
    pacing_sum: f64,
    link_streak: u32,
    cpu_streak: u32,
    hold_until: Option<Instant>,
    last: Option<(Bound, f64)>,
    switches: u32,
}

/// Frames' worth of slack when judging a full congestion window.
const CWND_SLACK: u64 = 2 * 9000;

impl LinkBoundMonitor {
    /// A monitor driving `control`.
    pub fn new(control: Arc<CodecControl>) -> Self {
        Self {
            control,
            start: None,
            cwnd_full: 0,
            samples: 0,
            pacing_sum: 0.0,
            link_streak: 0,
            cpu_streak: 0,
            hold_until: None,
            last: None,
            switches: 0,
        }
    }

    /// Feed one snapshot taken at `now` (call every few tens of milliseconds).
    pub fn observe(&mut self, now: Instant, s: LinkSample) {
        if s.mode != LinkMode::Datacenter || !s.steady {
            // Outside steady datacenter operation there is nothing to judge: start over.
            self.start = None;
            self.link_streak = 0;
            self.cpu_streak = 0;
            return;
        }
        let Some((t0, s0)) = self.start else {
            self.begin(now, s);
            return;
        };
        self.samples += 1;
        self.pacing_sum += s.pacing_rate;
        if s.bytes_in_flight + CWND_SLACK >= s.cwnd {
            self.cwnd_full += 1;
        }
        let dt = now.saturating_duration_since(t0);
        if dt < WINDOW {
            return;
        }
        let pacing = (self.pacing_sum / f64::from(self.samples)).max(1.0);
        let rate = s.bytes_sent.saturating_sub(s0.bytes_sent) as f64 / dt.as_secs_f64();
        let util = rate / pacing;
        let window_limited = self.cwnd_full * 2 > self.samples;
        let bound = if util >= LINK_BOUND_UTIL && !window_limited {
            Bound::Link
        } else {
            Bound::Cpu
        };
        self.last = Some((bound, util));
        match bound {
            Bound::Link => {
                self.link_streak += 1;
                self.cpu_streak = 0;
            }
            Bound::Cpu => {
                self.cpu_streak += 1;
                self.link_streak = 0;
            }
        }
        let on = self.control.datacenter_compress();
        let held = self.hold_until.is_some_and(|t| now < t);
        if !on && !held && self.link_streak >= ON_WINDOWS {
            self.control.set_datacenter_compress(true);
            self.switches += 1;
        } else if on && self.cpu_streak >= OFF_WINDOWS {
            self.control.set_datacenter_compress(false);
            self.hold_until = Some(now + HOLD_OFF);
            self.switches += 1;
        }
        self.begin(now, s);
    }

    fn begin(&mut self, now: Instant, s: LinkSample) {
        self.start = Some((now, s));
        self.samples = 0;
        self.pacing_sum = 0.0;
        self.cwnd_full = 0;
    }

    /// The last window's verdict and send rate / pacing rate.
    pub fn last(&self) -> Option<(Bound, f64)> {
        self.last
    }

    /// Times compression was switched on or off.
    pub fn switches(&self) -> u32 {
        self.switches
    }

    /// One line for stats: the decision and the measurement behind it.
    pub fn reason(&self) -> String {
        let on = self.control.datacenter_compress();
        match self.last {
            None => format!(
                "datacenter compression {}: no steady datacenter measurement",
                if on { "on" } else { "off" }
            ),
            Some((b, util)) => format!(
                "datacenter compression {}: last window {} (sending at {:.0} % of the pacing rate)",
                if on { "on" } else { "off" },
                match b {
                    Bound::Link => "link-bound",
                    Bound::Cpu => "cpu-bound",
                },
                util * 100.0
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes_sent: u64, pacing: f64, in_flight: u64) -> LinkSample {
        LinkSample {
            mode: LinkMode::Datacenter,
            steady: true,
            bytes_sent,
            pacing_rate: pacing,
            cwnd: 1_000_000,
            bytes_in_flight: in_flight,
        }
    }

    /// Drives the monitor at 50 ms steps, sending `rate` bytes/s against `pacing`.
    fn drive(
        m: &mut LinkBoundMonitor,
        t: &mut Instant,
        sent: &mut u64,
        rate: f64,
        pacing: f64,
        in_flight: u64,
        steps: u32,
    ) {
        for _ in 0..steps {
            *t += Duration::from_millis(50);
            *sent += (rate * 0.05) as u64;
            m.observe(*t, sample(*sent, pacing, in_flight));
        }
    }

    #[test]
    fn switches_on_when_pacing_bound_and_off_when_cpu_bound() {
        let ctl = Arc::new(CodecControl::default());
        let mut m = LinkBoundMonitor::new(ctl.clone());
        let (mut t, mut sent) = (Instant::now(), 0);
        // keeping up with pacing, window open: link-bound
        drive(&mut m, &mut t, &mut sent, 1.0e9, 1.02e9, 100_000, 10);
        assert!(!ctl.datacenter_compress(), "needs {ON_WINDOWS} windows");
        drive(&mut m, &mut t, &mut sent, 1.0e9, 1.02e9, 100_000, 10);
        assert!(ctl.datacenter_compress(), "{}", m.reason());
        assert_eq!(m.last().map(|l| l.0), Some(Bound::Link));
        // falls behind its pacing rate: cpu-bound, off, and held off
        drive(&mut m, &mut t, &mut sent, 0.6e9, 1.0e9, 100_000, 12);
        assert!(!ctl.datacenter_compress(), "{}", m.reason());
        drive(&mut m, &mut t, &mut sent, 1.0e9, 1.0e9, 100_000, 40);
        assert!(!ctl.datacenter_compress(), "held off for {HOLD_OFF:?}");
        drive(&mut m, &mut t, &mut sent, 1.0e9, 1.0e9, 100_000, 80);
        assert!(ctl.datacenter_compress(), "{}", m.reason());
        assert_eq!(m.switches(), 3);
    }

    #[test]
    fn a_full_window_or_another_mode_is_not_link_bound() {
        let ctl = Arc::new(CodecControl::default());
        let mut m = LinkBoundMonitor::new(ctl.clone());
        let (mut t, mut sent) = (Instant::now(), 0);
        drive(&mut m, &mut t, &mut sent, 1.0e9, 1.0e9, 995_000, 40);
        assert!(!ctl.datacenter_compress());
        assert_eq!(m.last().map(|l| l.0), Some(Bound::Cpu));
        let mut m = LinkBoundMonitor::new(ctl.clone());
        for i in 0..40u64 {
            t += Duration::from_millis(50);
            m.observe(
                t,
                LinkSample {
                    mode: LinkMode::Hybrid,
                    ..sample(i * 50_000_000, 1.0e9, 0)
                },
            );
        }
        assert!(!ctl.datacenter_compress());
        assert!(m.last().is_none());
    }
}
