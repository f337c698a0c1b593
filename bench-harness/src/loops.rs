//! Packet loops between the lab's namespaces: the datagram-rate peers of certification and
//! the measurement of the tuner's ring/batch/UMEM axes.
//!
//! Paths (run inside a [`Lab`] so the harness can put them side by side with iperf3 and dwcp
//! transfers in one run; `scripts/io-bench.sh` repeats them for the datagram benchmark):
//! - [`LoopPath::Dwcp`]: the dataplane's AF_XDP port (`dwcp_engine::io`), every frame built
//!   with `dwcp_proto::build_frame` (header + CRC32C) and checked with `parse_frame`;
//! - [`LoopPath::BareAfXdp`]: `dwcp-xsk` AF_XDP sockets (thin layer over the rings) sending
//!   one prebuilt frame over and over; the receiver only counts (the stand-in for
//!   `xdp-bench`, which cannot load on this kernel: no BTF for its tracepoints, no bpffs);
//! - [`LoopPath::UdpMmsg`]: kernel UDP sockets, `sendmmsg`/`recvmmsg`, no GSO/GRO;
//! - [`LoopPath::UdpGso`]: the same with UDP GSO on send and GRO on receive.
//!
//! Sender pinned to one core in A, receiver to another in B; CPU time of each side's thread
//! from `getrusage(RUSAGE_THREAD)`.
//!
//! Does not: build the lab, repeat or summarise (callers do), or run any congestion control:
//! a loop sends as fast as it can, so through a WAN emulator it measures the emulator.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dwcp_ebpf::{AttachMode, ProgramConfig, XdpProgram};
use dwcp_engine::io::net::{HDR_LEN, HeaderTemplate, own_mac, resolve_peer_mac};
use dwcp_engine::io::{Backend, BackendChoice, IoConfig, SharedProgram, open_port};
use dwcp_netns::{IF_A, IF_B};
use dwcp_proto::{FrameType, Header, Version, build_frame, parse_frame};
use dwcp_xsk::{XskConfig, XskSocket};
use nix::sys::resource::{UsageWho, getrusage};
use serde::{Deserialize, Serialize};

use crate::error::PeerError;
use crate::lab::Lab;

/// UDP port the loops use (DWCP's default port, which the XDP program steers).
pub const LOOP_PORT: u16 = 7470;

/// DWCP framing overhead: 48-byte header + 4-byte CRC32C trailer.
pub const FRAME_OVERHEAD: usize = 52;

/// Which packet path a loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopPath {
    /// AF_XDP port of the dataplane with DWCP framing and CRC32C per frame.
    Dwcp,
    /// AF_XDP sockets with no protocol work.
    BareAfXdp,
    /// UDP `sendmmsg`/`recvmmsg`.
    UdpMmsg,
    /// UDP with GSO/GRO.
    UdpGso,
}

impl LoopPath {
    /// All paths, in report order.
    pub const ALL: [LoopPath; 4] = [Self::Dwcp, Self::BareAfXdp, Self::UdpMmsg, Self::UdpGso];

    /// Name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dwcp => "dwcp-frames",
            Self::BareAfXdp => "bare-afxdp",
            Self::UdpMmsg => "udp-mmsg",
            Self::UdpGso => "udp-gso",
        }
    }

    /// Parses [`LoopPath::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Settings of one loop run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Path.
    pub path: LoopPath,
    /// DWCP payload bytes per frame (UDP payload = this + 52).
    pub payload: usize,
    /// Seconds the sender runs.
    pub secs: f64,
    /// Descriptors per ring batch / datagrams per syscall.
    pub batch: usize,
    /// AF_XDP ring size.
    pub ring_size: u32,
    /// UMEM frames per AF_XDP socket.
    pub umem_frames: u32,
    /// Core of the sender thread (in A).
    pub tx_core: usize,
    /// Core of the receiver thread (in B).
    pub rx_core: usize,
}

impl LoopConfig {
    /// The settings of the io bench: batch 64, ring 4096, 8192 UMEM frames, cores 0 -> 1.
    pub fn new(path: LoopPath, payload: usize, secs: f64) -> Self {
        Self {
            path,
            payload,
            secs,
            batch: 64,
            ring_size: 4096,
            umem_frames: 8192,
            tx_core: 0,
            rx_core: 1,
        }
    }

    fn multi_buffer(&self) -> bool {
        self.payload + FRAME_OVERHEAD + HDR_LEN > 4096
    }
}

/// What one side of a loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SideStats {
    /// Frames sent or received.
    pub packets: u64,
    /// UDP payload bytes sent or received.
    pub bytes: u64,
    /// CPU time of the side's thread (user + system), ns.
    pub cpu_ns: u64,
    /// Frames received that failed DWCP parsing (receiver of the dwcp path only).
    pub errors: u64,
}

/// Result of one loop run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoopResult {
    /// Wall time of the sending phase, s.
    pub secs: f64,
    /// Sender.
    pub tx: SideStats,
    /// Receiver.
    pub rx: SideStats,
}

impl LoopResult {
    /// Received frames per second.
    pub fn rx_pps(&self) -> f64 {
        self.rx.packets as f64 / self.secs
    }

    /// Received UDP payload, Gbit/s.
    pub fn rx_gbps(&self) -> f64 {
        self.rx.bytes as f64 * 8.0 / self.secs / 1e9
    }

    /// CPU seconds (both sides) per GB (1e9 bytes) received.
    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        (self.rx.bytes > 0)
            .then(|| (self.tx.cpu_ns + self.rx.cpu_ns) as f64 / 1e9 / (self.rx.bytes as f64 / 1e9))
    }

    /// Fraction of sent frames not received.
    pub fn loss(&self) -> f64 {
        1.0 - self.rx.packets as f64 / self.tx.packets.max(1) as f64
    }
}

fn cpu_ns() -> u64 {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                tv.tv_sec() as u64 * 1_000_000_000 + tv.tv_usec() as u64 * 1000
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0)
}

fn pin(core: usize) {
    // Best effort: an unpinned loop still measures, only noisier.
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

fn dwcp_frame(len: usize, seq: u64, out: &mut [u8]) -> usize {
    static PAYLOAD: [u8; 9000] = [0x5a; 9000];
    let mut h = Header::new(Version::V3, FrameType::Data);
    h.seq = seq;
    h.stream_id = 1;
    build_frame(&h, &PAYLOAD[..len.min(PAYLOAD.len())], out).unwrap_or(0)
}

fn io_cfg(cfg: &LoopConfig, ifname: &str, local: Ipv4Addr, peer: Ipv4Addr) -> IoConfig {
    let gso = cfg.path == LoopPath::UdpGso;
    let mut c = IoConfig::new(
        ifname,
        SocketAddrV4::new(local, LOOP_PORT),
        SocketAddrV4::new(peer, LOOP_PORT),
    );
    c.frames = cfg.umem_frames;
    c.ring_size = cfg.ring_size;
    c.batch = cfg.batch;
    c.hugepages = false;
    c.max_datagram = (cfg.payload + FRAME_OVERHEAD).max(1472);
    c.multi_buffer = cfg.multi_buffer();
    c.udp_gso = gso;
    c.udp_gro = gso;
    c.choice = match cfg.path {
        LoopPath::Dwcp => BackendChoice::AfXdp,
        _ => BackendChoice::Udp,
    };
    c
}

type Ready = mpsc::Sender<Result<(), String>>;

/// Runs `cfg` once in `lab` (A sends to B). The lab should be the direct profile; through
/// the WAN emulator a loop measures the emulator.
pub fn run_loop(lab: &Lab, cfg: &LoopConfig) -> Result<LoopResult, PeerError> {
    if cfg.payload == 0 || cfg.payload + FRAME_OVERHEAD > 9000 - 28 {
        return Err(PeerError::Loop {
            path: cfg.path.name(),
            detail: format!("payload {} B out of range", cfg.payload),
        });
    }
    if cfg.payload + FRAME_OVERHEAD + 28 > lab.options().mtu as usize {
        return Err(PeerError::Loop {
            path: cfg.path.name(),
            detail: format!(
                "payload {} B does not fit the lab MTU {}",
                cfg.payload,
                lab.options().mtu
            ),
        });
    }
    let (a, b) = (lab.ip_a(), lab.ip_b());
    let stop_rx = Arc::new(AtomicBool::new(false));
    let stop_tx = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let lerr = |detail: String| PeerError::Loop {
        path: cfg.path.name(),
        detail,
    };
    let (rc, tc) = (cfg.clone(), cfg.clone());
    let s = stop_rx.clone();
    let rx = lab
        .b()
        .spawn_in(move || receiver(&rc, b, a, &s, ready_tx))
        .map_err(|e| lerr(format!("receiver thread: {e}")))?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = rx.join();
            return Err(lerr(format!("receiver: {e}")));
        }
        Err(_) => {
            stop_rx.store(true, Ordering::Relaxed);
            let _ = rx.join();
            return Err(lerr("receiver not ready within 10 s".into()));
        }
    }
    let s = stop_tx.clone();
    let tx = lab
        .a()
        .spawn_in(move || sender(&tc, a, b, &s))
        .map_err(|e| lerr(format!("sender thread: {e}")));
    let tx = match tx {
        Ok(t) => t,
        Err(e) => {
            stop_rx.store(true, Ordering::Relaxed);
            let _ = rx.join();
            return Err(e);
        }
    };
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cfg.secs));
    stop_tx.store(true, Ordering::Relaxed);
    let tx = tx.join();
    let secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(50));
    stop_rx.store(true, Ordering::Relaxed);
    let rx = rx.join();
    let tx = tx
        .map_err(|_| lerr("sender panicked".into()))?
        .map_err(|e| lerr(format!("sender: {e}")))?;
    let rx = rx.map_err(|_| lerr("receiver panicked".into()))?;
    Ok(LoopResult { secs, tx, rx })
}

fn receiver(
    cfg: &LoopConfig,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    stop: &AtomicBool,
    ready: Ready,
) -> SideStats {
    pin(cfg.rx_core);
    let mut side = SideStats::default();
    match cfg.path {
        LoopPath::BareAfXdp => {
            let pcfg = ProgramConfig {
                dwcp_ports: vec![LOOP_PORT],
                relay_ifindex: None,
            };
            let mut prog = match XdpProgram::attach(IF_B, AttachMode::Native, &pcfg) {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready.send(Err(format!("attach XDP on {IF_B}: {e}")));
                    return side;
                }
            };
            let mut sock = match bare_socket(cfg, IF_B, &mut prog) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return side;
                }
            };
            let _ = ready.send(Ok(()));
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let rx = sock.rx_batch(cfg.batch);
                for p in rx.packets() {
                    side.packets += 1;
                    side.bytes += p.len().saturating_sub(HDR_LEN) as u64;
                }
                rx.release();
                sock.poll();
            }
            side.cpu_ns = cpu_ns() - c0;
        }
        path => {
            let prog = SharedProgram::new();
            let (mut port, _) = match open_port(&io_cfg(cfg, IF_B, local, peer), 0, &prog) {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready.send(Err(dwcp_engine::io::error_chain(&e)));
                    return side;
                }
            };
            let _ = ready.send(Ok(()));
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let (mut rx, tx) = port.batches(cfg.batch);
                rx.for_each(|d| {
                    if path == LoopPath::Dwcp {
                        match parse_frame(d) {
                            Ok(f) => {
                                std::hint::black_box(f.payload);
                                side.packets += 1;
                                side.bytes += d.len() as u64;
                            }
                            Err(_) => side.errors += 1,
                        }
                    } else {
                        side.packets += 1;
                        side.bytes += d.len() as u64;
                    }
                });
                rx.release();
                drop(tx);
                if path == LoopPath::Dwcp {
                    port.poll();
                }
            }
            side.cpu_ns = cpu_ns() - c0;
        }
    }
    side
}

fn bare_socket(cfg: &LoopConfig, ifname: &str, prog: &mut XdpProgram) -> Result<XskSocket, String> {
    let (sock, _) = XskSocket::open(&XskConfig {
        ifname: ifname.into(),
        queue: 0,
        frames: cfg.umem_frames,
        ring_size: cfg.ring_size,
        batch: cfg.batch,
        zero_copy: false,
        multi_buffer: cfg.multi_buffer(),
        // Single tx frames: the loops' jumbo frames go through `push_gather`.
        tx_max_len: 0,
        hugepages: false,
        numa_node: None,
    })
    .map_err(|e| format!("AF_XDP socket on {ifname}: {e}"))?;
    prog.register_socket(0, sock.fd())
        .map_err(|e| format!("XSKMAP on {ifname}: {e}"))?;
    Ok(sock)
}

fn sender(
    cfg: &LoopConfig,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    stop: &AtomicBool,
) -> Result<SideStats, String> {
    pin(cfg.tx_core);
    let size = cfg.payload;
    let mut side = SideStats::default();
    match cfg.path {
        LoopPath::BareAfXdp => {
            let pcfg = ProgramConfig {
                dwcp_ports: vec![LOOP_PORT],
                relay_ifindex: None,
            };
            // A native redirect into a veth delivers only if the peer veth has an XDP
            // program too; the sender's side carries one for that reason.
            let mut prog = XdpProgram::attach(IF_A, AttachMode::Native, &pcfg)
                .map_err(|e| format!("attach XDP on {IF_A}: {e}"))?;
            let src = own_mac(IF_A).map_err(|e| format!("MAC of {IF_A}: {e}"))?;
            let peer_addr = SocketAddrV4::new(peer, LOOP_PORT);
            let dst = resolve_peer_mac(IF_A, peer_addr, Duration::from_secs(2))
                .map_err(|e| format!("peer MAC: {e}"))?;
            let t = HeaderTemplate::new(src, dst, SocketAddrV4::new(local, LOOP_PORT), peer_addr);
            let mut frame = vec![0u8; HDR_LEN + size + FRAME_OVERHEAD];
            let n = dwcp_frame(size, 0, &mut frame[HDR_LEN..]);
            t.write(&mut frame, n);
            let mut sock = bare_socket(cfg, IF_A, &mut prog)?;
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let mut tx = sock.tx_batch();
                for _ in 0..cfg.batch {
                    let ok = if frame.len() <= 4096 {
                        tx.push_with(frame.len(), |buf| {
                            buf[..frame.len()].copy_from_slice(&frame);
                            frame.len()
                        })
                    } else {
                        tx.push_gather(&[&frame])
                    };
                    if !ok {
                        break;
                    }
                }
                side.packets += tx.commit() as u64;
                sock.poll();
            }
            side.cpu_ns = cpu_ns() - c0;
            side.bytes = side.packets * n as u64;
        }
        LoopPath::Dwcp => {
            let prog = SharedProgram::new();
            let (mut port, _) = open_port(&io_cfg(cfg, IF_A, local, peer), 0, &prog)
                .map_err(|e| dwcp_engine::io::error_chain(&e))?;
            let mut seq = 0u64;
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let mut tx = port.tx_batch();
                for _ in 0..cfg.batch {
                    if !tx.push_with(size + FRAME_OVERHEAD, |buf| dwcp_frame(size, seq, buf)) {
                        break;
                    }
                    seq += 1;
                }
                side.packets += tx.commit() as u64;
                port.poll();
            }
            side.cpu_ns = cpu_ns() - c0;
            side.bytes = side.packets * (size + FRAME_OVERHEAD) as u64;
        }
        LoopPath::UdpMmsg | LoopPath::UdpGso => {
            let (mut port, _) =
                open_port(&io_cfg(cfg, IF_A, local, peer), 0, &SharedProgram::new())
                    .map_err(|e| dwcp_engine::io::error_chain(&e))?;
            let mut frame = vec![0u8; size + FRAME_OVERHEAD];
            let n = dwcp_frame(size, 0, &mut frame);
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let mut tx = port.tx_batch();
                for _ in 0..cfg.batch {
                    if !tx.push(&frame[..n]) {
                        break;
                    }
                }
                side.packets += tx.commit() as u64;
            }
            side.cpu_ns = cpu_ns() - c0;
            side.bytes = side.packets * n as u64;
        }
    }
    Ok(side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_round_trip() {
        for p in LoopPath::ALL {
            assert_eq!(LoopPath::from_name(p.name()), Some(p));
        }
        assert_eq!(LoopPath::from_name("xdp-bench"), None);
    }

    #[test]
    fn derived_rates() {
        let r = LoopResult {
            secs: 2.0,
            tx: SideStats {
                packets: 1000,
                bytes: 0,
                cpu_ns: 1_000_000_000,
                errors: 0,
            },
            rx: SideStats {
                packets: 900,
                bytes: 500_000_000,
                cpu_ns: 1_000_000_000,
                errors: 0,
            },
        };
        assert_eq!(r.rx_pps(), 450.0);
        assert_eq!(r.rx_gbps(), 2.0);
        assert_eq!(r.cpu_s_per_gb(), Some(4.0));
        assert!((r.loss() - 0.1).abs() < 1e-12);
    }
}
