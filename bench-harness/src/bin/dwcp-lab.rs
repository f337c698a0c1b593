//! `dwcp-lab`: build the namespace lab with or without the WAN emulator, keep it up until
//! Ctrl-C, clean up after interrupted runs, validate the emulator, and run the iperf3
//! baseline benchmark.
//!
//! Does not: keep state on disk; every lab lives exactly as long as the process that built it.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dwcp_bench::peers::{self, Iperf3Run};
use dwcp_bench::validate::{self, Row};
use dwcp_bench::{Impairment, Lab, LabOptions, Offloads, WanOptions};

#[derive(Parser, Debug)]
#[command(
    name = "dwcp-lab",
    about = "DWCP network-namespace lab and WAN emulator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the lab and keep it (and the emulator) running until Ctrl-C.
    Up {
        #[command(flatten)]
        lab: LabArgs,
        /// Print emulator counters every N seconds (0 = never).
        #[arg(long, default_value_t = 5)]
        stats_secs: u64,
    },
    /// Remove namespaces (and processes inside them) left by interrupted runs.
    Cleanup,
    /// Build the lab, measure RTT, loss and rate, and print them against the configuration.
    Validate {
        #[command(flatten)]
        lab: LabArgs,
        /// UDP datagrams for the loss measurement.
        #[arg(long, default_value_t = 20_000)]
        datagrams: u64,
        /// Seconds of iperf3 UDP for the rate measurement.
        #[arg(long, default_value_t = 3)]
        secs: u32,
    },
    /// iperf3 TCP goodput with each congestion control, repeated (min/median/max).
    Bench {
        #[command(flatten)]
        lab: LabArgs,
        /// Congestion controls, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "cubic,bbr")]
        cc: Vec<String>,
        /// Repetitions per congestion control.
        #[arg(long, default_value_t = 3)]
        reps: u32,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        secs: u32,
        /// Side-by-side peers, interleaved per repetition: `dwcp` and/or TCP congestion
        /// controls (e.g. `dwcp,cubic,bbr`); replaces --cc when given.
        #[command(flatten)]
        dwcp: DwcpArgs,
    },
}

/// The dwcp peer of `dwcp-lab bench --peers`.
#[derive(Args, Debug, Clone)]
struct DwcpArgs {
    /// Peers, comma separated (`dwcp` = the appliance, other names = iperf3 TCP with that cc).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// dwcp object size, MiB (default: bottleneck rate x --secs, or 1024 without a rate).
    #[arg(long)]
    dwcp_mib: Option<u64>,
    /// dwcp backend (udp, afxdp, auto).
    #[arg(long, default_value = "udp")]
    dwcp_backend: String,
    /// dwcp most streams.
    #[arg(long, default_value_t = 8)]
    dwcp_streams: u16,
    /// Directory for the object and its copy.
    #[arg(long, default_value = "/dev/shm")]
    dwcp_dir: std::path::PathBuf,
    /// Keep each dwcp run's JSON reports in this directory (`rep-N-send.json`,
    /// `rep-N-recv.json`).
    #[arg(long)]
    keep_reports: Option<std::path::PathBuf>,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
enum ProfileArg {
    /// Plain veth pair (datacenter).
    Direct,
    /// A - R - B through the WAN emulator.
    Wan,
}

#[derive(Args, Debug, Clone)]
struct LabArgs {
    /// Lab profile.
    #[arg(long, value_enum, default_value = "wan")]
    profile: ProfileArg,
    /// One-way delay per direction, ms.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Jitter (uniform +-), ms.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Loss probability per direction (0.01 = 1 %).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Duplication probability.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Corruption probability.
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Explicit reorder probability.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Extra delay of a reordered frame, ms.
    #[arg(long, default_value_t = 1.0)]
    reorder_gap_ms: f64,
    /// Bottleneck rate per direction, Mbit/s of Ethernet frames (omit for none).
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// Bottleneck queue, bytes (default: one bandwidth-delay product).
    #[arg(long)]
    queue_bytes: Option<u64>,
    /// Seed of the emulator's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MTU of every veth.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Turn offloads off in the direct profile too (the WAN profile always does).
    #[arg(long)]
    offloads_off: bool,
    /// Run the emulator threads with ordinary scheduling instead of SCHED_FIFO.
    #[arg(long)]
    no_realtime: bool,
    /// Tag in namespace names.
    #[arg(long, default_value = "lab")]
    tag: String,
}

impl LabArgs {
    fn impairment(&self) -> Impairment {
        Impairment {
            delay: Duration::from_secs_f64(self.delay_ms / 1e3),
            jitter: Duration::from_secs_f64(self.jitter_ms / 1e3),
            loss: self.loss,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            reorder: self.reorder,
            reorder_gap: Duration::from_secs_f64(self.reorder_gap_ms / 1e3),
            rate_bps: self.rate_mbit.map(|m| (m * 1e6) as u64),
            queue_bytes: self.queue_bytes,
        }
    }

    fn build(&self) -> Result<Lab> {
        let lab_opts = LabOptions {
            tag: self.tag.clone(),
            mtu: self.mtu,
            offloads: if self.offloads_off {
                Offloads::Off
            } else {
                Offloads::Keep
            },
        };
        match self.profile {
            ProfileArg::Direct => Lab::direct(lab_opts).context("building the direct lab"),
            ProfileArg::Wan => {
                let mut o = WanOptions::symmetric(self.impairment());
                o.lab = lab_opts;
                o.seed = self.seed;
                if self.no_realtime {
                    o.realtime_priority = None;
                }
                Lab::wan(o).context("building the WAN lab")
            }
        }
    }
}

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    Ok(stop)
}

fn up(args: &LabArgs, stats_secs: u64) -> Result<()> {
    let stop = stop_flag()?;
    let lab = args.build()?;
    println!("lab up ({:?} profile)", args.profile);
    println!("  A: {}  {}", lab.a().name(), lab.ip_a());
    if let Some(r) = lab.r() {
        println!("  R: {}  (emulator, no addresses)", r.name());
    }
    println!("  B: {}  {}", lab.b().name(), lab.ip_b());
    println!(
        "  run a program:  ip netns exec {} iperf3 -c {}",
        lab.a().name(),
        lab.ip_b()
    );
    println!("Ctrl-C tears everything down.");
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(e) = lab.emulator()
            && !e.is_running()
        {
            bail!("the emulator stopped unexpectedly");
        }
        if stats_secs > 0 && last.elapsed() >= Duration::from_secs(stats_secs) {
            last = Instant::now();
            if let Some(c) = lab.counters() {
                print!("{}", validate::format_counters(&c));
            }
        }
    }
    if let Some(c) = lab.counters() {
        print!("{}", validate::format_counters(&c));
    }
    drop(lab);
    println!("lab down");
    Ok(())
}

fn rel(measured: f64, configured: f64) -> Option<f64> {
    (configured != 0.0).then(|| measured / configured - 1.0)
}

fn run_validate(args: &LabArgs, datagrams: u64, secs: u32) -> Result<()> {
    let lab = args.build()?;
    let imp = args.impairment();
    let mut rows = Vec::new();
    let rtt = validate::measure_rtt(&lab, 50, Duration::from_millis(20))?;
    let cfg_rtt = 2.0 * args.delay_ms;
    rows.push(Row {
        metric: "RTT median (ping, 50 x 20 ms)".into(),
        configured: format!("{cfg_rtt:.3} ms"),
        measured: format!(
            "{:.3} ms ({:.3}..{:.3})",
            rtt.median_ms, rtt.min_ms, rtt.max_ms
        ),
        deviation: rel(rtt.median_ms, cfg_rtt),
    });
    let pps = 10_000;
    let loss = validate::measure_loss(&lab, datagrams, pps)?;
    // A corrupted datagram fails the UDP checksum in B and is lost too.
    let expected = 1.0 - (1.0 - imp.loss) * (1.0 - imp.corrupt);
    let sd = (expected * (1.0 - expected) / datagrams as f64).sqrt();
    rows.push(Row {
        metric: format!("loss A->B ({datagrams} UDP, {pps}/s)"),
        configured: if imp.corrupt > 0.0 {
            format!("{:.3}% (+corrupt)", expected * 100.0)
        } else {
            format!("{:.3}%", expected * 100.0)
        },
        measured: format!("{:.3}% (+-{:.3}% 1sd)", loss.loss() * 100.0, sd * 100.0),
        deviation: rel(loss.loss(), expected),
    });
    rows.push(Row {
        metric: "  duplicates / reordered / damaged".into(),
        configured: "-".into(),
        measured: format!(
            "{} / {} / {}",
            loss.duplicates, loss.reordered, loss.damaged
        ),
        deviation: None,
    });
    let len = args.mtu - 28 - 72;
    let offered = imp.rate_bps.map(|r| r * 3 / 2).unwrap_or(1_000_000_000);
    let rate = validate::measure_rate(&lab, offered, len, secs)?;
    rows.push(Row {
        metric: format!("rate A->B (iperf3 -u -b {}M -l {len})", offered / 1_000_000),
        configured: imp
            .rate_bps
            .map(|r| format!("{:.1} Mbit/s", r as f64 / 1e6))
            .unwrap_or_else(|| "none".into()),
        measured: format!(
            "{:.1} Mbit/s frames ({:.1} payload)",
            rate.frame_bps / 1e6,
            rate.payload_bps / 1e6
        ),
        deviation: imp.rate_bps.and_then(|r| rel(rate.frame_bps, r as f64)),
    });
    print!("{}", validate::format_table(&rows));
    if let Some(c) = lab.counters() {
        print!("{}", validate::format_counters(&c));
    }
    Ok(())
}

fn bench(args: &LabArgs, ccs: &[String], reps: u32, secs: u32) -> Result<()> {
    let lab = args.build()?;
    println!("iperf3 TCP A->B, {secs} s per run, {reps} runs; goodput Gbit/s (min / median / max)");
    for cc in ccs {
        match peers::ensure_congestion_control(cc) {
            Ok(()) => {}
            Err(e) => {
                println!("{cc:>6}: unavailable: {e}");
                continue;
            }
        }
        let s = peers::iperf3_repeated(&lab, &Iperf3Run::tcp(cc, secs), reps)?;
        println!(
            "{cc:>6}: {:.4} / {:.4} / {:.4}   samples {:?}",
            s.min,
            s.median,
            s.max,
            s.samples
                .iter()
                .map(|x| (x * 1e4).round() / 1e4)
                .collect::<Vec<_>>()
        );
    }
    if let Some(c) = lab.counters() {
        print!("{}", validate::format_counters(&c));
    }
    Ok(())
}

fn bench_peers(args: &LabArgs, d: &DwcpArgs, reps: u32, secs: u32) -> Result<()> {
    use dwcp_bench::dwcp_peer::{self, DwcpRun, PeerKind};
    let peers: Vec<PeerKind> = d.peers.iter().map(|p| PeerKind::parse(p)).collect();
    let lab = args.build()?;
    let dir = d.dwcp_dir.join(format!("dwcp-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mib = d.dwcp_mib.unwrap_or_else(|| {
        args.rate_mbit
            .map(|m| (m * 1e6 / 8.0 * f64::from(secs) / f64::from(1u32 << 20)).ceil() as u64)
            .unwrap_or(1024)
    });
    let mut run = DwcpRun::new(
        &lab,
        dwcp_peer::dwcp_binary()?,
        dir.join("object"),
        dir.join("copy"),
    );
    run.backend = d.dwcp_backend.clone();
    run.streams = d.dwcp_streams;
    run.keep_reports = d.keep_reports.clone();
    if peers.contains(&PeerKind::Dwcp) {
        dwcp_peer::write_source(&run.source, mib << 20, 1)?;
    }
    println!(
        "side by side, {reps} interleaved reps: iperf3 TCP one stream {secs} s, dwcp {mib} MiB random object ({} backend, MTU {}, {})",
        run.backend,
        run.mtu,
        run.bin.display()
    );
    let res = dwcp_peer::compare(&lab, &peers, reps, secs, &run, &mut |l| println!("{l}"));
    let _ = std::fs::remove_dir_all(&dir);
    print!("{}", res?.report());
    if let Some(c) = lab.counters() {
        print!("{}", validate::format_counters(&c));
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up { lab, stats_secs } => up(&lab, stats_secs),
        Cmd::Cleanup => {
            let r = dwcp_bench::cleanup_stale()?;
            for (pid, comm) in &r.killed {
                println!("killed {pid} ({comm})");
            }
            for ns in &r.namespaces {
                println!("deleted namespace {ns}");
            }
            if r.killed.is_empty() && r.namespaces.is_empty() {
                println!("nothing to clean up");
            }
            Ok(())
        }
        Cmd::Validate {
            lab,
            datagrams,
            secs,
        } => run_validate(&lab, datagrams, secs),
        Cmd::Bench {
            lab,
            reps,
            secs,
            dwcp,
            ..
        } if !dwcp.peers.is_empty() => bench_peers(&lab, &dwcp, reps, secs),
        Cmd::Bench {
            lab,
            cc,
            reps,
            secs,
            ..
        } => bench(&lab, &cc, reps, secs),
    }
}
