//! Validation of the lab against its configuration: round-trip time with `ping`, loss with a
//! paced stream of sequence-numbered UDP datagrams, bottleneck rate with iperf3 UDP.
//!
//! Owns: the three measurements and a configured-vs-measured table. Does not: decide pass
//! or fail (tests and the CLI do, with their own tolerances).

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::emulator::Counters;
use crate::error::PeerError;
use crate::lab::{Lab, Profile};
use crate::peers::{self, Iperf3Run};

/// Round-trip times from `ping`, ms.
#[derive(Debug, Clone, Serialize)]
pub struct RttStats {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Smallest RTT.
    pub min_ms: f64,
    /// Median RTT.
    pub median_ms: f64,
    /// Largest RTT.
    pub max_ms: f64,
}

/// Pings B from A `count` times, `interval` apart, and summarises the replies' RTT.
pub fn measure_rtt(lab: &Lab, count: u32, interval: Duration) -> Result<RttStats, PeerError> {
    let args = [
        "-n".to_string(),
        "-c".into(),
        count.to_string(),
        "-i".into(),
        format!("{:.3}", interval.as_secs_f64()),
        "-W".into(),
        "2".into(),
        lab.ip_b().to_string(),
    ];
    let cmd = format!("ping {}", args.join(" "));
    let out = lab
        .a()
        .command("ping")
        .args(&args)
        .output()
        .map_err(|source| PeerError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    // ping exits 1 when some replies are missing: that is a measurement, not a failure.
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect();
    let Some(s) = peers::Summary::of(times.clone()) else {
        return Err(PeerError::Failed {
            cmd,
            status: out.status,
            stderr: format!("no replies; {}", String::from_utf8_lossy(&out.stderr)),
        });
    };
    Ok(RttStats {
        sent: count,
        received: times.len() as u32,
        min_ms: s.min,
        median_ms: s.median,
        max_ms: s.max,
    })
}

/// Result of a UDP loss measurement A -> B.
#[derive(Debug, Clone, Serialize)]
pub struct LossStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams received.
    pub received: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Datagrams received after one with a higher sequence number.
    pub reordered: u64,
    /// Datagrams whose payload did not match what was sent (corruption the UDP checksum
    /// missed; expected 0).
    pub damaged: u64,
}

impl LossStats {
    /// Measured loss ratio.
    pub fn loss(&self) -> f64 {
        1.0 - self.received as f64 / self.sent as f64
    }
}

const LOSS_PORT: u16 = 7471;
const LOSS_PAYLOAD: usize = 64;

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> PeerError + '_ {
    move |source| PeerError::Io {
        what: what.to_string(),
        source,
    }
}

/// Sends `count` sequence-numbered 64-byte UDP datagrams from A to B at `pps` per second and
/// counts what arrives (waiting one RTT plus 300 ms after the last one).
pub fn measure_loss(lab: &Lab, count: u64, pps: u64) -> Result<LossStats, PeerError> {
    let ip_b = lab.ip_b();
    let settle = match lab.profile() {
        Profile::Wan(o) => o.rtt() + o.a_to_b.jitter + o.a_to_b.reorder_gap,
        Profile::Direct => Duration::ZERO,
    } + Duration::from_millis(300);
    let rx = UdpSocketInNs::bind(lab, ip_b)?;
    let receiver = lab
        .b()
        .spawn_in(move || -> Result<LossStats, PeerError> {
            let s = rx.0;
            // Room for every datagram, so a busy receiver thread does not lose any.
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::RcvBufForce,
                &(32 << 20),
            );
            let mut seen = vec![false; count as usize];
            let mut st = LossStats {
                sent: count,
                received: 0,
                duplicates: 0,
                reordered: 0,
                damaged: 0,
            };
            let mut max_seq: Option<u64> = None;
            let mut buf = [0u8; 2048];
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .map_err(io_err("set timeout"))?;
            let mut last_rx = Instant::now();
            loop {
                match s.recv(&mut buf) {
                    Ok(n) => {
                        last_rx = Instant::now();
                        if n != LOSS_PAYLOAD {
                            st.damaged += 1;
                            continue;
                        }
                        let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                        if seq == u64::MAX {
                            // End marker, sent (repeatedly) once everything is delivered.
                            break;
                        }
                        if seq >= count || buf[8..n].iter().any(|&b| b != (seq as u8)) {
                            st.damaged += 1;
                            continue;
                        }
                        if seen[seq as usize] {
                            st.duplicates += 1;
                            continue;
                        }
                        seen[seq as usize] = true;
                        st.received += 1;
                        match max_seq {
                            Some(m) if seq < m => st.reordered += 1,
                            _ => max_seq = Some(seq),
                        }
                    }
                    Err(_) if last_rx.elapsed() > Duration::from_secs(2) => break,
                    Err(_) => {}
                }
            }
            Ok(st)
        })
        .map_err(crate::error::LabError::from_netns("enter B"))?;
    let sender = lab
        .a()
        .spawn_in(move || -> Result<(), PeerError> {
            let s = UdpSocket::bind("0.0.0.0:0").map_err(io_err("bind sender"))?;
            s.connect((ip_b, LOSS_PORT)).map_err(io_err("connect"))?;
            let start = Instant::now();
            let mut buf = [0u8; LOSS_PAYLOAD];
            for seq in 0..count {
                buf[..8].copy_from_slice(&seq.to_be_bytes());
                buf[8..].fill(seq as u8);
                let due = start + Duration::from_nanos(seq * 1_000_000_000 / pps);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                s.send(&buf).map_err(io_err("send"))?;
            }
            std::thread::sleep(settle);
            // End markers: several, since they cross the lossy path too.
            buf[..8].copy_from_slice(&u64::MAX.to_be_bytes());
            buf[8..].fill(0xEE);
            for _ in 0..50 {
                let _ = s.send(&buf);
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .map_err(crate::error::LabError::from_netns("enter A"))?;
    sender.join().expect("sender thread panicked")?;
    receiver.join().expect("receiver thread panicked")
}

/// A UDP socket bound inside B before the sender starts (so no datagram is refused).
struct UdpSocketInNs(UdpSocket);

impl UdpSocketInNs {
    fn bind(lab: &Lab, ip: std::net::Ipv4Addr) -> Result<Self, PeerError> {
        lab.b()
            .run_in(move || UdpSocket::bind((ip, LOSS_PORT)))
            .map_err(crate::error::LabError::from_netns("enter B"))?
            .map(Self)
            .map_err(io_err("bind receiver"))
    }
}

/// Result of a rate measurement with iperf3 UDP.
#[derive(Debug, Clone, Serialize)]
pub struct RateStats {
    /// Offered UDP payload rate, bit/s.
    pub offered_bps: f64,
    /// Received UDP payload rate over the whole run (iperf3's receiver summary), bit/s.
    pub total_payload_bps: f64,
    /// Received UDP payload rate in steady state (server intervals after the first second,
    /// without the last partial one), bit/s.
    pub payload_bps: f64,
    /// Received rate counted as the emulator counts it: Ethernet frame bytes
    /// (payload + 8 UDP + 20 IPv4 + 14 Ethernet per datagram), bit/s.
    pub frame_bps: f64,
    /// UDP datagram payload length used.
    pub len: u32,
}

/// Runs iperf3 UDP A -> B for `secs` (at least 2) at `offered_bps` with `len`-byte
/// datagrams and 4 MiB socket buffers.
pub fn measure_rate(
    lab: &Lab,
    offered_bps: u64,
    len: u32,
    secs: u32,
) -> Result<RateStats, PeerError> {
    let mut run = Iperf3Run::udp(offered_bps, len, secs.max(2));
    run.window = Some("4M".into());
    run.server_output = true;
    let cmd = format!("iperf3 {}", run.client_args(lab.ip_b()).join(" "));
    let r = peers::iperf3(lab, &run)?;
    let steady = r.steady_state_bps().ok_or_else(|| PeerError::Parse {
        cmd,
        detail: "no steady-state server interval".into(),
    })?;
    let per = f64::from(len);
    Ok(RateStats {
        offered_bps: offered_bps as f64,
        total_payload_bps: r.received_bps,
        payload_bps: steady,
        frame_bps: steady * (per + 42.0) / per,
        len,
    })
}

/// A row of the validation table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// Configured value (with unit).
    pub configured: String,
    /// Measured value (with unit).
    pub measured: String,
    /// Relative deviation of measured from configured, when meaningful.
    pub deviation: Option<f64>,
}

/// Formats rows as an aligned text table.
pub fn format_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>16} {:>26} {:>9}",
        "metric", "configured", "measured", "dev"
    );
    for r in rows {
        let dev = r
            .deviation
            .map(|d| format!("{:+.2}%", d * 100.0))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<34} {:>16} {:>26} {:>9}",
            r.metric, r.configured, r.measured, dev
        );
    }
    out
}

/// Formats emulator counters of both directions as text lines.
pub fn format_counters(c: &(Counters, Counters)) -> String {
    let mut out = String::new();
    for (name, c) in [("A->B", c.0), ("B->A", c.1)] {
        let _ = writeln!(
            out,
            "{name}: in {} out {} loss {} queue {} overflow {} oversize {} socket {} txerr {} dup {} corrupt {} reordered {} late mean {:?} max {:?}",
            c.in_frames,
            c.out_frames,
            c.dropped_loss,
            c.dropped_queue,
            c.dropped_overflow,
            c.dropped_oversize,
            c.dropped_socket,
            c.tx_errors,
            c.duplicated,
            c.corrupted,
            c.reordered,
            c.mean_late(),
            Duration::from_nanos(c.late_max_ns),
        );
    }
    out
}
