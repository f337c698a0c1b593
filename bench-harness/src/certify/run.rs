//! Runs a certification [`Suite`]: builds one lab per link, runs every peer side by side in
//! it, repeats, summarises, judges against the profile and returns a [`Report`].
//!
//! Owns: the order of the run (packet cases on a direct veth pair, then per link the
//! transfer cases: iperf3 with each congestion control and dwcp with each data kind, every
//! stream count), the source objects (incompressible from [`crate::dwcp_peer::write_source`],
//! compressible from [`write_compressible`]), host information and the progress bar.
//!
//! Does not: implement peers ([`crate::loops`], [`crate::peers`], [`crate::dwcp_peer`]) or
//! write files ([`Report::write_all`]). A failed repetition is recorded as an error of that
//! peer and the run goes on: a certification of a partly broken appliance still reports
//! what it could measure (and the unmeasured targets make it incomplete).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dwcp_hw_profiles::Profile;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{RngCore, SeedableRng};

use super::report::{
    self, DWCP_TRANSFER, HostInfo, Outcome, PacketCase, PacketPeer, ProfileRef, Report,
    TransferCase, TransferPeer,
};
use super::suite::{DataKind, LinkKind, LinkSpec, Suite, TransferPeerSpec};
use crate::Impairment;
use crate::dwcp_peer::{self, DwcpRun};
use crate::error::PeerError;
use crate::lab::{Lab, LabOptions, Offloads, WanOptions};
use crate::loops::{LoopConfig, run_loop};
use crate::peers::{self, Iperf3Run, Iperf3Server, Summary};

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Profile whose targets judge the run.
    pub profile: Profile,
    /// File the profile came from (`None`: embedded default).
    pub profile_path: Option<String>,
    /// Command line recorded in the report.
    pub command: String,
    /// dwcp backend for transfers (`udp`, `afxdp`, `auto`).
    pub dwcp_backend: String,
    /// The `dwcp` binary (`None`: [`dwcp_peer::dwcp_binary`]).
    pub dwcp_bin: Option<PathBuf>,
    /// Directory for source objects and destinations (a tmpfs keeps disk out of the figures).
    pub work_dir: PathBuf,
    /// Mark the report preliminary whatever the load.
    pub force_preliminary: bool,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

fn now_utc() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0, 1, 2].map(|i| v.get(i).copied().unwrap_or(f64::NAN))
}

/// Kernel, CPUs, CPU model and the current load of this machine.
pub fn host_info() -> HostInfo {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let l = loadavg();
    HostInfo {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        load_start: l,
        load_end: l,
    }
}

/// Writes `len` bytes of compressible data to `path`: per MiB, a quarter zeros, a quarter a
/// repeat of the previous MiB's text, half word-like text from a seeded generator (zstd -1
/// shrinks it to roughly a fifth; the HDE zero and duplicate codecs take the rest).
pub fn write_compressible(path: &Path, len: u64, seed: u64) -> Result<(), PeerError> {
    const WORDS: [&str; 16] = [
        "appliance ",
        "transfer ",
        "stream ",
        "frame ",
        "delta ",
        "block ",
        "memory ",
        "disk ",
        "migration ",
        "round ",
        "dirty ",
        "page ",
        "network ",
        "queue ",
        "core ",
        "node ",
    ];
    let io = |source| PeerError::Io {
        what: format!("write compressible object {}", path.display()),
        source,
    };
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    const MIB: usize = 1 << 20;
    let mut text = Vec::with_capacity(MIB / 2 + 16);
    let mut prev_text = vec![b'x'; MIB / 4];
    let mut chunk = Vec::with_capacity(MIB);
    let mut left = len;
    while left > 0 {
        text.clear();
        while text.len() < MIB / 2 {
            let r = rng.next_u32();
            text.extend_from_slice(WORDS[(r & 15) as usize].as_bytes());
            if r >> 28 == 0 {
                text.extend_from_slice(format!("{} ", r >> 8).as_bytes());
            }
        }
        text.truncate(MIB / 2);
        chunk.clear();
        chunk.resize(MIB / 4, 0);
        chunk.extend_from_slice(&prev_text);
        chunk.extend_from_slice(&text);
        prev_text.copy_from_slice(&text[..MIB / 4]);
        let n = left.min(MIB as u64) as usize;
        f.write_all(&chunk[..n]).map_err(io)?;
        left -= n as u64;
    }
    f.flush().map_err(io)
}

fn summary(v: Vec<f64>) -> Option<Summary> {
    Summary::of(v)
}

fn build_lab(link: &LinkSpec, tag: &str) -> Result<Lab, PeerError> {
    let lab_opts = LabOptions {
        tag: tag.into(),
        mtu: link.mtu,
        offloads: Offloads::Keep,
    };
    Ok(match link.kind {
        LinkKind::Datacenter => Lab::direct(lab_opts)?,
        LinkKind::Wan => {
            let imp = Impairment {
                delay: Duration::from_secs_f64(link.rtt_ms / 2e3),
                loss: link.loss,
                rate_bps: link.rate_mbit.map(|m| (m * 1e6) as u64),
                ..Impairment::default()
            };
            let mut o = WanOptions::symmetric(imp);
            o.lab = lab_opts;
            Lab::wan(o)?
        }
    })
}

struct Progress(ProgressBar);

impl Progress {
    fn new(steps: u64, on: bool) -> Self {
        let pb = ProgressBar::with_draw_target(
            Some(steps),
            if on {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Self(pb)
    }
}

/// Runs `suite` and returns the judged report (nothing is written).
pub fn run_suite(suite: &Suite, opts: &RunOptions) -> Result<Report, PeerError> {
    let started_utc = now_utc();
    let mut host = host_info();
    let pb = Progress::new(suite.steps(), opts.progress);
    let mut packet = Vec::new();
    for spec in &suite.packet {
        let link = LinkSpec::datacenter(spec.mtu);
        pb.0.set_message(format!("packet loops, {} B payload", spec.payload));
        let lab = build_lab(&link, "cert")?;
        let mut peers_out = Vec::new();
        for &path in &spec.paths {
            let cfg = LoopConfig::new(path, spec.payload, spec.secs);
            let (mut pps, mut gbps, mut cpu, mut loss, mut errors) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..suite.reps {
                match run_loop(&lab, &cfg) {
                    Ok(r) => {
                        pps.push(r.rx_pps());
                        gbps.push(r.rx_gbps());
                        if let Some(c) = r.cpu_s_per_gb() {
                            cpu.push(c);
                        }
                        loss.push(r.loss());
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                pb.0.inc(1);
            }
            peers_out.push(PacketPeer {
                peer: path.name().into(),
                pps: summary(pps),
                gbps: summary(gbps),
                cpu_s_per_gb: summary(cpu),
                loss: summary(loss),
                errors,
            });
        }
        packet.push(PacketCase {
            id: format!("packet-{}b", spec.payload),
            payload: spec.payload,
            mtu: spec.mtu,
            secs: spec.secs,
            peers: peers_out,
        });
    }

    let bin = match &opts.dwcp_bin {
        Some(b) => Some(b.clone()),
        None => dwcp_peer::dwcp_binary().ok(),
    };
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| PeerError::Io {
        what: format!("create {}", opts.work_dir.display()),
        source,
    })?;
    let mut sources: Vec<((DataKind, u64), PathBuf)> = Vec::new();
    let mut transfer = Vec::new();
    for spec in &suite.transfer {
        pb.0.set_message(spec.link.id());
        let lab = build_lab(&spec.link, "cert")?;
        let server = Iperf3Server::start(&lab, peers::IPERF3_PORT);
        for &streams in &spec.streams {
            let mut peers_out = Vec::new();
            for p in &spec.peers {
                let (mut gbps, mut cpu, mut errors) = (Vec::new(), Vec::new(), Vec::new());
                let (name, data) = match p {
                    TransferPeerSpec::Iperf3(cc) => (format!("iperf3-{cc}"), None),
                    TransferPeerSpec::Dwcp(d) => (DWCP_TRANSFER.to_string(), Some(*d)),
                };
                pb.0.set_message(format!("{} s{streams} {name}", spec.link.id()));
                for _ in 0..suite.reps {
                    let r: Result<(f64, Option<f64>), String> = match p {
                        TransferPeerSpec::Iperf3(cc) => match &server {
                            Err(e) => Err(format!("iperf3 server: {e}")),
                            Ok(_) => {
                                let mut run = Iperf3Run::tcp(cc, spec.iperf3_secs);
                                run.streams = u32::from(streams);
                                peers::iperf3_client(&lab, &run)
                                    .map(|r| (r.received_gbps(), r.cpu_s_per_gb()))
                                    .map_err(|e| e.to_string())
                            }
                        },
                        TransferPeerSpec::Dwcp(kind) => dwcp_once(
                            &lab,
                            opts,
                            bin.as_deref(),
                            &mut sources,
                            *kind,
                            spec.object_mib,
                            streams,
                            spec.dwcp_timeout_secs,
                        ),
                    };
                    match r {
                        Ok((g, c)) => {
                            gbps.push(g);
                            if let Some(c) = c {
                                cpu.push(c);
                            }
                        }
                        Err(e) => errors.push(e),
                    }
                    pb.0.inc(1);
                }
                peers_out.push(TransferPeer {
                    peer: name,
                    data,
                    gbps: summary(gbps),
                    cpu_s_per_gb: summary(cpu),
                    errors,
                });
            }
            transfer.push(TransferCase {
                id: format!("{}-s{streams}", spec.link.id()),
                link: spec.link.clone(),
                streams,
                peers: peers_out,
            });
        }
        drop(server);
    }
    for (_, p) in &sources {
        let _ = std::fs::remove_file(p);
    }
    pb.0.finish_and_clear();
    host.load_end = loadavg();
    let checks = report::evaluate(&opts.profile.targets, &packet, &transfer);
    let outcome: Outcome = report::overall(&checks);
    let half = host.cpus as f64 / 2.0;
    Ok(Report {
        schema: report::SCHEMA.into(),
        suite: suite.name.clone(),
        command: opts.command.clone(),
        started_utc,
        finished_utc: now_utc(),
        reps: suite.reps,
        preliminary: opts.force_preliminary || host.load_start[0] > half,
        host,
        profile: ProfileRef {
            name: opts.profile.name.clone(),
            path: opts.profile_path.clone(),
            example: opts.profile.example,
            targets: opts.profile.targets.clone(),
        },
        packet,
        transfer,
        checks,
        outcome,
        plots: Vec::new(),
    })
}

#[allow(clippy::too_many_arguments)]
fn dwcp_once(
    lab: &Lab,
    opts: &RunOptions,
    bin: Option<&Path>,
    sources: &mut Vec<((DataKind, u64), PathBuf)>,
    kind: DataKind,
    mib: u64,
    streams: u16,
    timeout_secs: u32,
) -> Result<(f64, Option<f64>), String> {
    let Some(bin) = bin else {
        return Err("no `dwcp` binary (build it: cargo build --release -p dwcp-engine --bin dwcp, or pass --dwcp-bin)".into());
    };
    let src = match sources.iter().find(|(k, _)| *k == (kind, mib)) {
        Some((_, p)) => p.clone(),
        None => {
            let p = opts.work_dir.join(format!(
                "certify-{}-{}-{mib}m",
                std::process::id(),
                kind.name()
            ));
            let len = mib << 20;
            match kind {
                DataKind::Incompressible => dwcp_peer::write_source(&p, len, 7),
                DataKind::Compressible => write_compressible(&p, len, 7),
            }
            .map_err(|e| e.to_string())?;
            sources.push(((kind, mib), p.clone()));
            p
        }
    };
    let dest = opts
        .work_dir
        .join(format!("certify-{}-dest", std::process::id()));
    let mut run = DwcpRun::new(lab, bin.to_path_buf(), src, dest);
    run.backend = opts.dwcp_backend.clone();
    run.streams = streams;
    run.timeout = Duration::from_secs(timeout_secs.into());
    let r = dwcp_peer::dwcp_transfer(lab, &run).map_err(|e| error_chain(&e))?;
    let cpu = (r.object_bytes > 0)
        .then(|| (r.cpu_send_secs + r.cpu_recv_secs) / (r.object_bytes as f64 / 1e9));
    Ok((r.goodput_gbps(), cpu))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let s = dwcp_engine::io::error_chain(e);
    // One line in the report: the message, without a backtrace (RUST_BACKTRACE in the
    // environment makes the processes append one), at most 600 characters.
    let s = match s.find("panicked at") {
        Some(i) => s[i..].to_string(),
        None => s,
    };
    let s = ["Stack backtrace:", "stack backtrace:"]
        .iter()
        .filter_map(|m| s.find(m))
        .min()
        .map_or(s.as_str(), |i| &s[..i])
        .trim()
        .replace('\n', " | ");
    s.chars().take(600).collect()
}
