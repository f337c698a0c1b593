//! `dwcp-hw`: detect a hardware profile for this machine, validate a profile file against the
//! schema and this host, print the embedded default, or tune a profile by sweeping its
//! parameters with real measurements (the bench harness's `dwcp-certify measure`, run once
//! per repetition of every point) and write the best one with the measurements that chose it.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dwcp_hw_profiles::{Profile, ProfileError, detect_profile};

#[derive(Debug, Parser)]
#[command(
    name = "dwcp-hw",
    version,
    about = "DWCP hardware profiles: detect, validate, show"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a profile from this machine (and an interface, looked up in the current network
    /// namespace) and print it as TOML or write it to a file.
    Detect {
        /// Interface the dataplane will use.
        #[arg(long)]
        iface: Option<String>,
        /// Write the profile here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a profile: schema rules, then this host (cores, NUMA nodes, SIMD, hugepages,
    /// interface). Exit status 1 and one line per problem when it is not valid.
    Validate {
        /// Profile file.
        file: PathBuf,
        /// Check the schema only, not this host.
        #[arg(long)]
        schema_only: bool,
    },
    /// Print the embedded default profile.
    Show,
    /// Sweep batch size, ring size, UMEM frames (frames/s of the dataplane's framed AF_XDP
    /// loop) and stream count and backend (goodput of a dwcp transfer) in the netns lab,
    /// one axis at a time, and write the best profile with every measured point.
    Tune(Box<TuneArgs>),
}

#[derive(Debug, clap::Args)]
struct TuneArgs {
    /// Profile to start from (default: the embedded default).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Write the tuned profile here.
    #[arg(long)]
    out: PathBuf,
    /// Name of the tuned profile (default: the base's).
    #[arg(long)]
    name: Option<String>,
    /// The harness binary (default: `dwcp-certify` next to this program, else on PATH).
    #[arg(long)]
    harness: Option<PathBuf>,
    /// Repetitions per point.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Batch sizes to try (empty: skip the axis).
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    batch: Vec<u64>,
    /// Ring sizes to try.
    #[arg(long, value_delimiter = ',', default_value = "512,1024,2048,4096")]
    ring: Vec<u64>,
    /// UMEM frames per socket to try.
    #[arg(long, value_delimiter = ',', default_value = "4096,8192,16384")]
    umem: Vec<u64>,
    /// Stream counts to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    streams: Vec<u64>,
    /// Backends to try (auto, afxdp, udp).
    #[arg(long, value_delimiter = ',', default_value = "afxdp,udp")]
    backend: Vec<String>,
    /// Payload bytes of the packet loop.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds per packet-loop run.
    #[arg(long, default_value_t = 2.0)]
    loop_secs: f64,
    /// Object size of the transfers, MiB.
    #[arg(long, default_value_t = 64)]
    object_mib: u64,
    /// Round-trip delay of the transfers' link, ms (0: datacenter veth).
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// Loss per direction of the transfers' link.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Bottleneck of the transfers' link, Mbit/s.
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// A note stored in `[tuning]` (e.g. that the machine was busy).
    #[arg(long, default_value = "")]
    note: String,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dwcp-hw: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Detect { iface, out } => {
            let p = detect_profile(iface.as_deref()).context("detecting this host")?;
            let text = p.to_toml()?;
            // A detected profile must pass its own checks; say so loudly if it does not.
            if let Err(e) = p.validate_for_host() {
                eprintln!("dwcp-hw: warning: the detected profile does not validate: {e}");
            }
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate { file, schema_only } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let p = match Profile::parse_unchecked(&text) {
                Ok(p) => p,
                Err(e) => {
                    println!("{}: not a profile: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
            };
            let res = if schema_only {
                p.validate()
            } else {
                p.validate_for_host()
            };
            match res {
                Ok(()) => {
                    println!(
                        "{}: profile {:?} is valid{}",
                        file.display(),
                        p.name,
                        if schema_only {
                            " (schema)"
                        } else {
                            " for this host"
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(ProfileError::Invalid { problems, .. }) => {
                    println!("{}: {} problem(s):", file.display(), problems.len());
                    for pr in problems {
                        println!("  {pr}");
                    }
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Tune(a) => tune(*a),
        Cmd::Show => {
            print!("{}", dwcp_hw_profiles::schema::EMBEDDED_DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn tune(a: TuneArgs) -> anyhow::Result<ExitCode> {
    use dwcp_hw_profiles::harness::Harness;
    use dwcp_hw_profiles::tune::Figure;
    use dwcp_hw_profiles::{Param, ParamValue, Tuner, Tuning};

    let base = Profile::load_or_default(a.base.as_deref())
        .with_context(|| format!("base profile {:?}", a.base))?;
    let mut h = Harness::new(a.harness.clone().unwrap_or_else(Harness::find_bin));
    h.payload = a.payload;
    h.loop_secs = a.loop_secs;
    h.object_mib = a.object_mib;
    h.rtt_ms = a.rtt_ms;
    h.loss = a.loss;
    h.rate_mbit = a.rate_mbit;
    let fig = |param: Param| {
        let (args, field) = h.args(param, &base);
        Figure {
            unit: Harness::unit(param).into(),
            command: format!("dwcp-certify {} (figure: {field})", args.join(" ")),
        }
    };
    let mut tuner = Tuner::new("pps", "dwcp-certify measure").repeats(a.reps);
    for (param, values) in [
        (Param::BatchSize, &a.batch),
        (Param::RingSize, &a.ring),
        (Param::UmemFrames, &a.umem),
        (Param::Streams, &a.streams),
    ] {
        if !values.is_empty() {
            tuner = tuner.axis_with(
                param,
                values.iter().map(|v| ParamValue::Int(*v)),
                fig(param),
            );
        }
    }
    if !a.backend.is_empty() {
        tuner = tuner.axis_with(
            Param::Backend,
            a.backend.iter().map(|b| ParamValue::Name(b.clone())),
            fig(Param::Backend),
        );
    }
    let load_start = loadavg();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let total = tuner.points() * a.reps;
    let mut done = 0;
    eprintln!(
        "tuning {}: {} points x {} repetitions",
        base.name,
        tuner.points(),
        a.reps
    );
    let out = tuner
        .run_with(&base, |param, p| {
            done += 1;
            // A failed run (e.g. a transfer that crashed) is retried twice before the
            // sweep gives up; every failure is printed.
            let mut r = h.measure(param, p);
            for attempt in 2..=3 {
                let Err(e) = &r else { break };
                eprintln!(
                    "[{done}/{total}] attempt {} failed: {e}; retrying",
                    attempt - 1
                );
                r = h.measure(param, p);
            }
            match &r {
                Ok(s) => eprintln!(
                    "[{done}/{total}] {} = {}: {:.4} {}",
                    param.field(),
                    param.get_value(p),
                    s.figure,
                    Harness::unit(param)
                ),
                Err(e) => eprintln!(
                    "[{done}/{total}] {} = {}: {e}",
                    param.field(),
                    param.get_value(p)
                ),
            }
            r
        })
        .context("tuning sweep")?;
    for s in &out.skipped {
        eprintln!(
            "skipped {} = {}: {} problem(s)",
            s.parameter,
            s.value,
            s.problems.len()
        );
    }
    let mut p = out.profile;
    if let Some(n) = a.name {
        p.name = n;
    }
    let host = dwcp_hw_profiles::Host::detect().ok();
    p.tuning = Some(Tuning {
        date,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        host: format!(
            "{}, {} online CPUs, kernel {}",
            host.as_ref().map(|h| h.cpu_model.as_str()).unwrap_or("?"),
            host.as_ref().map(|h| h.online_cpus.len()).unwrap_or(0),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        ),
        load: format!("start {load_start}, end {}", loadavg()),
        repeats: a.reps as u32,
        note: a.note,
    });
    p.validate()
        .context("the tuned profile does not validate")?;
    std::fs::write(&a.out, p.to_toml()?).with_context(|| format!("writing {}", a.out.display()))?;
    for m in p.measurements.iter().filter(|m| m.chosen) {
        println!("{} = {} ({:.4} {})", m.parameter, m.value, m.figure, m.unit);
    }
    println!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
