//! Side-by-side datagram benchmark on a veth pair (needs root): one core per side.
//!
//! Paths, each measured in the same run with the same sizes:
//! - `dwcp`: this dataplane's AF_XDP backends (`dwcp_engine::io`), every frame built with
//!   `dwcp_proto::build_frame` (header + CRC32C) and verified with `parse_frame` on receive;
//! - `bare`: AF_XDP with no protocol work: `dwcp-xsk` sockets (the thin owner layer over
//!   `xdpilone` rings) sending one prebuilt frame over and over, receiver only counts;
//! - `udp`: kernel UDP sockets with `sendmmsg`/`recvmmsg`, no GSO/GRO;
//! - `udp-gso`: the same with UDP GSO/GRO (what the UDP fallback backend uses).
//!
//! Reports received packets/s, Gbit/s of UDP payload, and CPU ns per packet of each side's
//! thread (getrusage RUSAGE_THREAD, user + system), min/median/max over the repetitions,
//! and the ratios dwcp/bare and dwcp/udp on medians.
//!
//! Environment: DWCP_BENCH_SECS (3), DWCP_BENCH_REPS (5), DWCP_BENCH_SIZES ("64,1400,8000",
//! DWCP payload bytes; sizes > 3000 run on an MTU 9000 pair with AF_XDP multi-buffer),
//! DWCP_BENCH_PATHS ("dwcp,bare,udp,udp-gso").

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dwcp_ebpf::{AttachMode, ProgramConfig, XdpProgram};
use dwcp_engine::io::net::{HDR_LEN, HeaderTemplate, own_mac, resolve_peer_mac};
use dwcp_engine::io::{Backend, BackendChoice, IoConfig, SharedProgram, open_port};
use dwcp_netns::{IF_A, IF_B, Netns, Pair, VethOptions};
use dwcp_proto::{FrameType, Header, Version, build_frame, parse_frame};
use dwcp_xsk::{XskConfig, XskSocket};
use nix::sys::resource::{UsageWho, getrusage};

const PORT: u16 = 7470;
const BATCH: usize = 64;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn cpu_ns() -> u64 {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| {
        tv.tv_sec() as u64 * 1_000_000_000 + tv.tv_usec() as u64 * 1000
    };
    t(u.user_time()) + t(u.system_time())
}

fn pin(core: usize) {
    assert!(
        core_affinity::set_for_current(core_affinity::CoreId { id: core }),
        "pin to core {core}"
    );
}

#[derive(Debug, Clone, Copy, Default)]
struct Side {
    packets: u64,
    bytes: u64,
    cpu_ns: u64,
    errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct Rep {
    secs: f64,
    tx: Side,
    rx: Side,
}

fn dwcp_frame(len: usize, seq: u64, out: &mut [u8]) -> usize {
    static PAYLOAD: [u8; 9000] = [0x5a; 9000];
    let mut h = Header::new(Version::V3, FrameType::Data);
    h.seq = seq;
    h.stream_id = 1;
    build_frame(&h, &PAYLOAD[..len], out).expect("frame fits")
}

fn io_cfg(ifname: &str, local: Ipv4Addr, peer: Ipv4Addr, size: usize, gso: bool) -> IoConfig {
    let mut c = IoConfig::new(
        ifname,
        SocketAddrV4::new(local, PORT),
        SocketAddrV4::new(peer, PORT),
    );
    c.frames = 8192;
    c.ring_size = 4096;
    c.batch = BATCH;
    c.hugepages = false;
    c.max_datagram = (size + 52).max(1472);
    c.multi_buffer = size > 3000;
    c.udp_gso = gso;
    c.udp_gro = gso;
    c
}

/// Runs one sender (ns A, core 0) and one receiver (ns B, core 1) for `secs`.
fn run_pair(
    pair: &Pair,
    secs: f64,
    rx_fn: impl FnOnce(Arc<AtomicBool>, std::sync::mpsc::Sender<()>) -> Side + Send + 'static,
    tx_fn: impl FnOnce(Arc<AtomicBool>) -> Side + Send + 'static,
) -> Rep {
    let stop_rx = Arc::new(AtomicBool::new(false));
    let stop_tx = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let s = stop_rx.clone();
    let rx = pair.b.spawn_in(move || rx_fn(s, ready_tx)).unwrap();
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("receiver ready");
    let s = stop_tx.clone();
    let tx = pair.a.spawn_in(move || tx_fn(s)).unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop_tx.store(true, Ordering::Relaxed);
    let tx = tx.join().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(50));
    stop_rx.store(true, Ordering::Relaxed);
    let rx = rx.join().unwrap();
    Rep {
        secs: elapsed,
        tx,
        rx,
    }
}

fn dwcp_path(pair: &Pair, size: usize, secs: f64) -> Rep {
    let (a, b) = (pair.ip_a(), pair.ip_b());
    let rcfg = io_cfg(IF_B, b, a, size, false);
    let scfg = io_cfg(IF_A, a, b, size, false);
    run_pair(
        pair,
        secs,
        move |stop, ready| {
            pin(1);
            let prog = SharedProgram::new();
            let mut cfg = rcfg;
            cfg.choice = BackendChoice::AfXdp;
            let (mut port, _) = open_port(&cfg, 0, &prog).expect("AF_XDP receiver");
            ready.send(()).unwrap();
            let mut side = Side::default();
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let (mut rx, tx) = port.batches(BATCH);
                rx.for_each(|d| match parse_frame(d) {
                    Ok(f) => {
                        side.packets += 1;
                        side.bytes += d.len() as u64;
                        std::hint::black_box(f.payload);
                    }
                    Err(_) => side.errors += 1,
                });
                rx.release();
                drop(tx);
                port.poll();
            }
            side.cpu_ns = cpu_ns() - c0;
            side
        },
        move |stop| {
            pin(0);
            let prog = SharedProgram::new();
            let mut cfg = scfg;
            cfg.choice = BackendChoice::AfXdp;
            let (mut port, _) = open_port(&cfg, 0, &prog).expect("AF_XDP sender");
            let mut side = Side::default();
            let mut seq = 0u64;
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let mut tx = port.tx_batch();
                for _ in 0..BATCH {
                    if !tx.push_with(size + 52, |buf| dwcp_frame(size, seq, buf)) {
                        break;
                    }
                    seq += 1;
                }
                side.packets += tx.commit() as u64;
                port.poll();
            }
            side.cpu_ns = cpu_ns() - c0;
            side.bytes = side.packets * (size as u64 + 52);
            side
        },
    )
}

fn bare_socket(ifname: &str, size: usize, prog: &mut XdpProgram) -> XskSocket {
    let (sock, _) = XskSocket::open(&XskConfig {
        ifname: ifname.into(),
        queue: 0,
        frames: 8192,
        ring_size: 4096,
        batch: BATCH,
        zero_copy: false,
        multi_buffer: size > 3000,
        hugepages: false,
        numa_node: None,
    })
    .expect("AF_XDP socket");
    prog.register_socket(0, sock.fd()).expect("XSKMAP");
    sock
}

fn bare_path(pair: &Pair, size: usize, secs: f64) -> Rep {
    let (a, b) = (pair.ip_a(), pair.ip_b());
    let pcfg = ProgramConfig {
        dwcp_ports: vec![PORT],
        relay_ifindex: None,
    };
    let pcfg2 = pcfg.clone();
    run_pair(
        pair,
        secs,
        move |stop, ready| {
            pin(1);
            let mut prog = XdpProgram::attach(IF_B, AttachMode::Native, &pcfg).expect("attach");
            let mut sock = bare_socket(IF_B, size, &mut prog);
            ready.send(()).unwrap();
            let mut side = Side::default();
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let rx = sock.rx_batch(BATCH);
                for p in rx.packets() {
                    side.packets += 1;
                    side.bytes += p.len() as u64;
                }
                rx.release();
                sock.poll();
            }
            side.cpu_ns = cpu_ns() - c0;
            side.bytes -= side.packets * HDR_LEN as u64;
            side
        },
        move |stop| {
            pin(0);
            let mut prog = XdpProgram::attach(IF_A, AttachMode::Native, &pcfg2).expect("attach");
            let src = own_mac(IF_A).unwrap();
            let peer = SocketAddrV4::new(b, PORT);
            let dst = resolve_peer_mac(IF_A, peer, Duration::from_secs(2)).unwrap();
            let t = HeaderTemplate::new(src, dst, SocketAddrV4::new(a, PORT), peer);
            let mut frame = vec![0u8; HDR_LEN + size + 52];
            let n = dwcp_frame(size, 0, &mut frame[HDR_LEN..]);
            t.write(&mut frame, n);
            let mut sock = bare_socket(IF_A, size, &mut prog);
            let mut side = Side::default();
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let mut tx = sock.tx_batch();
                for _ in 0..BATCH {
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
            side
        },
    )
}

fn udp_path(pair: &Pair, size: usize, secs: f64, gso: bool) -> Rep {
    let (a, b) = (pair.ip_a(), pair.ip_b());
    let rcfg = io_cfg(IF_B, b, a, size, gso);
    let scfg = io_cfg(IF_A, a, b, size, gso);
    run_pair(
        pair,
        secs,
        move |stop, ready| {
            pin(1);
            let mut cfg = rcfg;
            cfg.choice = BackendChoice::Udp;
            let (mut port, _) = open_port(&cfg, 0, &SharedProgram::new()).expect("UDP receiver");
            ready.send(()).unwrap();
            let mut side = Side::default();
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let (mut rx, tx) = port.batches(BATCH);
                rx.for_each(|d| {
                    side.packets += 1;
                    side.bytes += d.len() as u64;
                });
                rx.release();
                drop(tx);
            }
            side.cpu_ns = cpu_ns() - c0;
            side
        },
        move |stop| {
            pin(0);
            let mut cfg = scfg;
            cfg.choice = BackendChoice::Udp;
            let (mut port, _) = open_port(&cfg, 0, &SharedProgram::new()).expect("UDP sender");
            let mut frame = vec![0u8; size + 52];
            let n = dwcp_frame(size, 0, &mut frame);
            let mut side = Side::default();
            let c0 = cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                let mut tx = port.tx_batch();
                for _ in 0..BATCH {
                    if !tx.push(&frame[..n]) {
                        break;
                    }
                }
                side.packets += tx.commit() as u64;
            }
            side.cpu_ns = cpu_ns() - c0;
            side.bytes = side.packets * n as u64;
            side
        },
    )
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    if dwcp_netns::require_root().is_err() {
        eprintln!("io bench: needs root (network namespaces, XDP); not run");
        return;
    }
    let secs: f64 = env("DWCP_BENCH_SECS", 3.0);
    let reps: usize = env("DWCP_BENCH_REPS", 5);
    let sizes: Vec<usize> = env("DWCP_BENCH_SIZES", "64,1400,8000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let paths: Vec<String> = env("DWCP_BENCH_PATHS", "dwcp,bare,udp,udp-gso".to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let _ = dwcp_netns::cleanup_stale();
    println!(
        "# dwcp io bench: {reps} x {secs} s per cell, sender core 0 -> receiver core 1, veth, XDP native"
    );
    println!(
        "{:<8} {:>6} | {:>26} | {:>20} | {:>14} | {:>14} | {:>6}",
        "path",
        "size",
        "rx kpps min/med/max",
        "Gbit/s min/med/max",
        "tx ns/pkt med",
        "rx ns/pkt med",
        "loss%"
    );
    for &size in &sizes {
        let mtu = if size > 3000 { 9000 } else { 1500 };
        let pair = Pair::new(
            "iob",
            VethOptions {
                mtu,
                ..Default::default()
            },
        )
        .expect("veth pair");
        let mut med = std::collections::HashMap::new();
        for path in &paths {
            let mut pps = Vec::new();
            let mut gbps = Vec::new();
            let mut txns = Vec::new();
            let mut rxns = Vec::new();
            let mut loss = Vec::new();
            for _ in 0..reps {
                let r = match path.as_str() {
                    "dwcp" => dwcp_path(&pair, size, secs),
                    "bare" => bare_path(&pair, size, secs),
                    "udp" => udp_path(&pair, size, secs, false),
                    "udp-gso" => udp_path(&pair, size, secs, true),
                    other => panic!("unknown path {other}"),
                };
                pps.push(r.rx.packets as f64 / r.secs / 1e3);
                gbps.push(r.rx.bytes as f64 * 8.0 / r.secs / 1e9);
                txns.push(r.tx.cpu_ns as f64 / r.tx.packets.max(1) as f64);
                rxns.push(r.rx.cpu_ns as f64 / r.rx.packets.max(1) as f64);
                loss.push(100.0 * (1.0 - r.rx.packets as f64 / r.tx.packets.max(1) as f64));
            }
            let p = stats(&mut pps);
            let g = stats(&mut gbps);
            let t = stats(&mut txns);
            let x = stats(&mut rxns);
            let l = stats(&mut loss);
            med.insert(path.clone(), p.1);
            println!(
                "{:<8} {:>6} | {:>8.0} {:>8.0} {:>8.0} | {:>6.2} {:>6.2} {:>6.2} | {:>14.0} | {:>14.0} | {:>6.1}",
                path, size, p.0, p.1, p.2, g.0, g.1, g.2, t.1, x.1, l.1
            );
        }
        if let Some(d) = med.get("dwcp") {
            for base in ["bare", "udp", "udp-gso"] {
                if let Some(v) = med.get(base) {
                    println!(
                        "ratio dwcp/{base} at {size} B (median rx pps): {:.2}",
                        d / v
                    );
                }
            }
        }
        drop(pair);
    }
    let _ = Netns::new; // keep the import used when paths are filtered out
}
