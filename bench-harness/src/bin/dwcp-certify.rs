//! `dwcp-certify`: run the certification suite (quick or full) in the netns lab and write
//! the report (JSON, Markdown, SVG) judged against a hardware profile; and `measure`, one
//! real measurement printed as JSON, which `dwcp-hw tune` calls for each sweep point.
//!
//! Does not: keep state between runs; every lab lives as long as the process.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dwcp_bench::certify::run::write_compressible;
use dwcp_bench::certify::suite::{DataKind, LinkSpec};
use dwcp_bench::certify::{Outcome, RunOptions, Suite, run_suite};
use dwcp_bench::dwcp_peer::{self, DwcpRun};
use dwcp_bench::loops::{LoopConfig, LoopPath, run_loop};
use dwcp_bench::{Impairment, Lab, LabOptions, Offloads, WanOptions};
use dwcp_hw_profiles::Profile;

#[derive(Parser, Debug)]
#[command(
    name = "dwcp-certify",
    about = "Certify a DWCP appliance: the suite with every peer side by side, judged against a hardware profile",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    certify: CertifyArgs,
}

#[derive(Args, Debug)]
struct CertifyArgs {
    /// The short CI suite (about 2 minutes on 2 cores) instead of the full one.
    #[arg(long)]
    quick: bool,
    /// Hardware profile whose targets judge the run (default: the embedded default).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Directory for report.json, report.md and the SVG plots.
    #[arg(long, default_value = "certify-report")]
    out: PathBuf,
    /// Repetitions per peer and case (default: the suite's).
    #[arg(long)]
    reps: Option<u32>,
    /// dwcp backend for transfers (udp, afxdp, auto).
    #[arg(long, default_value = "udp")]
    dwcp_backend: String,
    /// The `dwcp` binary (default: $DWCP_BIN, or next to this program).
    #[arg(long)]
    dwcp_bin: Option<PathBuf>,
    /// Directory for the transfer objects (a tmpfs keeps the disk out of the figures).
    #[arg(long, default_value = "/dev/shm")]
    work_dir: PathBuf,
    /// Mark the report preliminary (e.g. the machine is shared) whatever the load average.
    #[arg(long)]
    preliminary: bool,
    /// Exit with status 1 unless every check passes (default: 0 once the report is written).
    #[arg(long)]
    strict: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the suite as JSON and exit without measuring.
    #[arg(long)]
    list: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One measurement in a fresh lab, printed as one JSON object (used by `dwcp-hw tune`).
    Measure {
        #[command(subcommand)]
        what: Measure,
    },
}

#[derive(Subcommand, Debug)]
enum Measure {
    /// A packet loop on the datacenter link; figure: received frames/s (`pps`) and Gbit/s.
    Loop {
        /// Path: dwcp-frames, bare-afxdp, udp-mmsg, udp-gso.
        #[arg(long, default_value = "dwcp-frames")]
        path: String,
        /// DWCP payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Ring size.
        #[arg(long, default_value_t = 2048)]
        ring: u32,
        /// UMEM frames per socket.
        #[arg(long, default_value_t = 4096)]
        umem: u32,
        /// MTU of the veth pair.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
    },
    /// A dwcp transfer; figure: goodput Gbit/s (`gbps`).
    Transfer {
        /// Round-trip delay, ms (0 with no loss and no rate: the datacenter link).
        #[arg(long, default_value_t = 0.0)]
        rtt_ms: f64,
        /// Loss per direction (0.01 = 1 %).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Bottleneck, Mbit/s.
        #[arg(long)]
        rate_mbit: Option<f64>,
        /// MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        /// Streams.
        #[arg(long, default_value_t = 4)]
        streams: u16,
        /// Backend (udp, afxdp, auto).
        #[arg(long, default_value = "udp")]
        backend: String,
        /// Object size, MiB.
        #[arg(long, default_value_t = 64)]
        object_mib: u64,
        /// Data kind.
        #[arg(long, value_enum, default_value = "incompressible")]
        data: DataArg,
        /// Directory for the object.
        #[arg(long, default_value = "/dev/shm")]
        work_dir: PathBuf,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum DataArg {
    Compressible,
    Incompressible,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dwcp-certify: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Some(Cmd::Measure { what }) => measure(what).map(|()| ExitCode::SUCCESS),
        None => certify(cli.certify),
    }
}

fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(a0) = args.first_mut()
        && let Some(name) = std::path::Path::new(a0.as_str()).file_name()
    {
        *a0 = name.to_string_lossy().into_owned();
    }
    args.join(" ")
}

fn certify(a: CertifyArgs) -> Result<ExitCode> {
    let mut suite = if a.quick {
        Suite::quick()
    } else {
        Suite::full()
    };
    if let Some(r) = a.reps {
        if r == 0 {
            bail!("--reps must be at least 1");
        }
        suite.reps = r;
    }
    if a.list {
        println!("{}", serde_json::to_string_pretty(&suite)?);
        return Ok(ExitCode::SUCCESS);
    }
    dwcp_netns::require_root().context("certification builds network namespaces")?;
    let profile = Profile::load_or_default(a.profile.as_deref())
        .with_context(|| format!("hardware profile {:?}", a.profile))?;
    let _ = dwcp_bench::cleanup_stale();
    eprintln!(
        "suite {}: {} measurements, at least {:.0} s; profile {}",
        suite.name,
        suite.steps(),
        suite.estimated_secs(),
        profile.name
    );
    let opts = RunOptions {
        profile,
        profile_path: a.profile.as_ref().map(|p| p.display().to_string()),
        command: command_line(),
        dwcp_backend: a.dwcp_backend,
        dwcp_bin: a.dwcp_bin,
        work_dir: a.work_dir,
        force_preliminary: a.preliminary,
        progress: !a.no_progress,
    };
    let mut report = run_suite(&suite, &opts)?;
    let written = report
        .write_all(&a.out)
        .with_context(|| format!("writing the report to {}", a.out.display()))?;
    for c in &report.checks {
        println!(
            "{:<70} {:>14} {:>14}  {:?}",
            c.id,
            format!("{:.3}", c.threshold),
            c.measured.map(|m| format!("{m:.3}")).unwrap_or("-".into()),
            c.verdict
        );
    }
    println!(
        "outcome: {:?}{}",
        report.outcome,
        if report.preliminary {
            " (preliminary: busy machine)"
        } else {
            ""
        }
    );
    for w in written {
        println!("wrote {}", w.display());
    }
    Ok(if a.strict && report.outcome != Outcome::Pass {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn measure(what: Measure) -> Result<()> {
    dwcp_netns::require_root().context("measurements build network namespaces")?;
    match what {
        Measure::Loop {
            path,
            payload,
            secs,
            batch,
            ring,
            umem,
            mtu,
        } => {
            let p = LoopPath::from_name(&path).with_context(|| format!("unknown path {path}"))?;
            let lab = Lab::direct(LabOptions {
                tag: "meas".into(),
                mtu,
                offloads: Offloads::Keep,
            })?;
            let mut cfg = LoopConfig::new(p, payload, secs);
            cfg.batch = batch;
            cfg.ring_size = ring;
            cfg.umem_frames = umem;
            let r = run_loop(&lab, &cfg)?;
            let v = serde_json::json!({
                "kind": "loop",
                "config": cfg,
                "pps": r.rx_pps(),
                "gbps": r.rx_gbps(),
                "cpu_s_per_gb": r.cpu_s_per_gb(),
                "loss": r.loss(),
                "result": r,
            });
            println!("{v}");
        }
        Measure::Transfer {
            rtt_ms,
            loss,
            rate_mbit,
            mtu,
            streams,
            backend,
            object_mib,
            data,
            work_dir,
        } => {
            let link = if rtt_ms == 0.0 && loss == 0.0 && rate_mbit.is_none() {
                LinkSpec::datacenter(mtu)
            } else {
                let mut l = LinkSpec::wan(rtt_ms, loss, rate_mbit.unwrap_or(0.0));
                l.rate_mbit = rate_mbit;
                l.mtu = mtu;
                l
            };
            let lab_opts = LabOptions {
                tag: "meas".into(),
                mtu,
                offloads: Offloads::Keep,
            };
            let lab = if rtt_ms == 0.0 && loss == 0.0 && rate_mbit.is_none() {
                Lab::direct(lab_opts)?
            } else {
                let mut o = WanOptions::symmetric(Impairment {
                    delay: Duration::from_secs_f64(rtt_ms / 2e3),
                    loss,
                    rate_bps: rate_mbit.map(|m| (m * 1e6) as u64),
                    ..Impairment::default()
                });
                o.lab = lab_opts;
                Lab::wan(o)?
            };
            std::fs::create_dir_all(&work_dir)?;
            let src = work_dir.join(format!("measure-{}-src", std::process::id()));
            let dest = work_dir.join(format!("measure-{}-dst", std::process::id()));
            let kind = match data {
                DataArg::Compressible => DataKind::Compressible,
                DataArg::Incompressible => DataKind::Incompressible,
            };
            match kind {
                DataKind::Compressible => write_compressible(&src, object_mib << 20, 7)?,
                DataKind::Incompressible => dwcp_peer::write_source(&src, object_mib << 20, 7)?,
            }
            let mut run = DwcpRun::new(&lab, dwcp_peer::dwcp_binary()?, src.clone(), dest);
            run.backend = backend;
            run.streams = streams;
            let r = dwcp_peer::dwcp_transfer(&lab, &run);
            let _ = std::fs::remove_file(&src);
            let r = r?;
            let v = serde_json::json!({
                "kind": "transfer",
                "link": link,
                "streams": streams,
                "backend": run.backend,
                "data": kind,
                "gbps": r.goodput_gbps(),
                "cpu_s_per_gb": (r.cpu_send_secs + r.cpu_recv_secs) / (r.object_bytes.max(1) as f64 / 1e9),
                "object_bytes": r.object_bytes,
                "seconds": r.elapsed.as_secs_f64(),
                "mode": r.mode,
            });
            println!("{v}");
        }
    }
    Ok(())
}
