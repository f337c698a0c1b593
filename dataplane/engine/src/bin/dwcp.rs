//! `dwcp`: the appliance's dataplane command line.
//!
//! `dwcp demo` runs a transfer between two appliances in a lab it builds itself;
//! `dwcp send` / `dwcp recv` move one file between two appliances. Human-readable progress
//! on a terminal, `--json` for scripts. `dwcp daemon` attaches to the control process's
//! shared-memory region and runs the jobs it is given (see docs/daemon.md).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dwcp_engine::daemon::{self, DaemonConfig};
use dwcp_engine::demo::{self, DemoOptions};
use dwcp_engine::io::{BackendChoice, IoConfig, IoStats, Selection};
use dwcp_engine::runner::{RecvReport, RunOptions, SendReport, recv_file};
use dwcp_engine::worker::WorkerSnapshot;
use dwcp_transfer::{ReceiverConfig, SenderConfig};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(name = "dwcp", version, about = "DWCP transfer appliance dataplane")]
struct Cli {
    /// Print one JSON document instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// AF_XDP when it works, else UDP sockets (with the reason logged).
    Auto,
    /// AF_XDP or fail.
    Afxdp,
    /// UDP sockets only.
    Udp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CodecArg {
    /// By link mode: datacenter raw/zero (compression only when measured link-bound),
    /// internet HDE + zstd, hybrid per block.
    Auto,
    /// Raw and zero chunks only.
    Raw,
    /// HDE container with zstd on every block.
    Hde,
}

impl From<CodecArg> for dwcp_engine::codec::CodecChoice {
    fn from(c: CodecArg) -> Self {
        match c {
            CodecArg::Auto => Self::Auto,
            CodecArg::Raw => Self::Raw,
            CodecArg::Hde => Self::Hde,
        }
    }
}

fn codec_json(c: &dwcp_engine::codec::CodecStats) -> Value {
    json!({
        "policy": c.policy,
        "datacenter_compress": c.datacenter_compress,
        "data_bytes": c.data_bytes,
        "payload_bytes": c.payload_bytes,
        "payload_ratio": c.ratio(),
        "chunks_raw": c.chunks[0],
        "chunks_zero": c.chunks[1],
        "chunks_zstd": c.chunks[4],
        "chunks_hde": c.chunks[5],
        "container_fallbacks": c.container_fallbacks,
        "hde_blocks": {"zero": c.blocks[0], "dup": c.blocks[1], "xor_delta": c.blocks[2],
                       "zstd": c.blocks[3], "raw": c.blocks[4]},
        "decode_errors": c.decode_errors,
    })
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => BackendChoice::Auto,
            Backend::Afxdp => BackendChoice::AfXdp,
            Backend::Udp => BackendChoice::Udp,
        }
    }
}

#[derive(clap::Args, Debug)]
struct PortArgs {
    /// Interface that carries DWCP.
    #[arg(long)]
    iface: String,
    /// Local IPv4 address and DWCP port.
    #[arg(long)]
    local: SocketAddrV4,
    /// Peer IPv4 address and DWCP port.
    #[arg(long)]
    peer: SocketAddrV4,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Worker settings shared by the commands that run one.
#[derive(clap::Args, Debug)]
struct WorkerArgs {
    /// Backend [default: the profile's `transfer.backend`, else auto]. Given explicitly, it
    /// overrides the profile.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Core to pin the (first) worker to.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Link MTU (sizes datagrams) [default: the interface's MTU, read from
    /// /sys/class/net/IFACE/mtu, so a jumbo-frame link gets jumbo frames; 1500 if unreadable].
    #[arg(long)]
    mtu: Option<usize>,
    /// Give up on a transfer after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Hardware profile (TOML, see docs/hw-profiles.md); it sets XDP mode, rings, batch,
    /// UMEM, hugepages, MTU and streams. Without it, built-in defaults apply.
    #[arg(long)]
    profile: Option<PathBuf>,
}

impl PortArgs {
    fn mtu(&self) -> usize {
        link_mtu(self.worker.mtu, Some(&self.iface)).0
    }
}

/// `--mtu`, else the interface's MTU (the profile's `nic.mtu`, when one is given, applies
/// after this), else 1500; with where it came from.
fn link_mtu(explicit: Option<usize>, iface: Option<&str>) -> (usize, &'static str) {
    if let Some(m) = explicit {
        return (m, "--mtu");
    }
    let read = iface.and_then(|i| {
        let s = std::fs::read_to_string(format!("/sys/class/net/{i}/mtu")).ok()?;
        s.trim().parse::<usize>().ok()
    });
    match read {
        // Ethernet, up to the usual jumbo limit; loopback's 64 KiB is no link to size for
        Some(m) if (576..=9216).contains(&m) => (m, "the interface's MTU"),
        Some(_) => (1500, "default (interface MTU outside 576..=9216)"),
        None => (1500, "default (interface MTU unreadable)"),
    }
}

impl WorkerArgs {
    fn profile(&self) -> Result<Option<dwcp_hw_profiles::Profile>> {
        self.profile
            .as_deref()
            .map(|p| {
                dwcp_hw_profiles::Profile::load(p)
                    .with_context(|| format!("hardware profile {}", p.display()))
            })
            .transpose()
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Demo transfer between two appliances in a network-namespace lab (needs root; without
    /// it, runs over loopback with UDP sockets).
    Demo {
        /// Object size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Backend for both appliances.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Highest protocol version to offer (1 or 3).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
        version: u8,
        /// Lab link MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        /// Directory for the demo files (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// SEALED transfer: make throwaway key pairs for both appliances (mode 0600, in a
        /// temporary directory removed afterwards) and authenticate and encrypt every frame.
        #[arg(long)]
        sealed: bool,
        /// Workers per appliance: the object moves in that many parts, one worker, port
        /// and connection each (UDP sockets when more than one).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
    },
    /// Write a new key: a static X25519 key pair (PATH mode 0600, PATH.pub) or a PSK.
    Keygen {
        /// Private key file to create (never overwritten); the public key goes to PATH.pub.
        #[arg(long)]
        out: PathBuf,
        /// Write a 32-byte pre-shared key instead of a key pair.
        #[arg(long)]
        psk: bool,
    },
    /// Send one file.
    Send {
        #[command(flatten)]
        port: PortArgs,
        #[command(flatten)]
        keys: dwcp_secure::cli::KeyArgs,
        /// File or block device to send.
        file: PathBuf,
        /// Object id (the receiver's journal keys on it).
        #[arg(long, default_value_t = 1)]
        object_id: u64,
        /// Highest protocol version to offer (1 or 3; 1 = plain v1 endpoint).
        #[arg(long, alias = "max-version", default_value_t = 3)]
        version: u8,
        /// Chunk codec (version 3 only; version 1 always sends raw).
        #[arg(long, value_enum, default_value_t = CodecArg::Auto)]
        codec: CodecArg,
        /// Most streams.
        #[arg(long, default_value_t = 8)]
        streams: u16,
        /// Workers: the file moves in that many parts, one pinned worker, port (local and
        /// peer port + k) and connection each; the receiver needs the same count [default:
        /// one per core of the profile's `cpu.worker_cores`, else 1].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: Option<u16>,
    },
    /// Receive one file (resumes an interrupted receive of the same object).
    Recv {
        #[command(flatten)]
        port: PortArgs,
        #[command(flatten)]
        keys: dwcp_secure::cli::KeyArgs,
        /// Destination path; appears only once the object is complete and verified.
        dest: PathBuf,
        /// Highest protocol version to accept (1 or 3; 1 = plain v1 endpoint).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
        max_version: u8,
        /// Workers: receive the object in that many parts (the sender's count) [default: one
        /// per core of the profile's `cpu.worker_cores`, else 1].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: Option<u16>,
    },
    /// Migrate a VM disk or memory image between appliances (docs/migration.md).
    Migrate {
        #[command(subcommand)]
        cmd: MigrateCmd,
    },
    /// Attach to the control process's shared-memory region and serve its commands.
    Daemon {
        /// Region path (created with the default geometry if missing).
        #[arg(long, default_value = "/dev/shm/dwcp")]
        shm: PathBuf,
        /// Worker slots (concurrent jobs).
        #[arg(long, default_value_t = 1)]
        workers: u32,
        /// Directory of job objects: object id N is the file DIR/N.
        #[arg(long, default_value = ".")]
        objects: PathBuf,
        /// Interface that carries DWCP (with --local; without them, jobs are refused).
        #[arg(long, requires = "local")]
        iface: Option<String>,
        /// Local IPv4 address and DWCP port of worker 0 (worker i uses port + i).
        #[arg(long, requires = "iface")]
        local: Option<SocketAddrV4>,
        /// Default peer for jobs that do not name one.
        #[arg(long)]
        peer: Option<SocketAddrV4>,
        #[command(flatten)]
        worker: WorkerArgs,
        /// Keys for every job (transfers and migrations, both directions; docs/security.md).
        #[command(flatten)]
        keys: dwcp_secure::cli::KeyArgs,
    },
    /// Carry a byte stream (QEMU `migrate tcp:`/`exec:`) to a peer appliance (docs/qemu-migration.md).
    StreamSend {
        #[command(flatten)]
        port: PortArgs,
        #[command(flatten)]
        stream: dwcp_engine::stream::SendArgs,
    },
    /// Receive a carried byte stream and feed it to QEMU `-incoming tcp:` (or stdout).
    StreamRecv {
        #[command(flatten)]
        port: PortArgs,
        #[command(flatten)]
        stream: dwcp_engine::stream::RecvArgs,
    },
}

/// `dwcp migrate` sides.
#[derive(Subcommand, Debug)]
enum MigrateCmd {
    /// Source: send the image in pre-copy rounds, switch over, have it verified.
    Send {
        #[command(flatten)]
        port: PortArgs,
        #[command(flatten)]
        keys: dwcp_secure::cli::KeyArgs,
        #[command(flatten)]
        args: dwcp_migrate::cli::SendArgs,
    },
    /// Destination: apply rounds to a working copy; replace the image once verified.
    Recv {
        #[command(flatten)]
        port: PortArgs,
        #[command(flatten)]
        keys: dwcp_secure::cli::KeyArgs,
        #[command(flatten)]
        args: dwcp_migrate::cli::RecvArgs,
    },
}

fn run_opts(p: &PortArgs) -> Result<RunOptions> {
    let mut io = IoConfig::new(&p.iface, p.local, p.peer);
    io.max_datagram = p.mtu().saturating_sub(28);
    if let Some(prof) = p.worker.profile()? {
        dwcp_engine::profile::apply_io(&prof, &mut io);
    }
    if let Some(b) = p.worker.backend {
        io.choice = b.into();
    }
    Ok(RunOptions {
        io,
        core: p.worker.core,
        timeout: Duration::from_secs(p.worker.timeout),
        idle_yield: false,
    })
}

fn selection_json(s: &Option<Selection>) -> Value {
    match s {
        Some(s) => json!({
            "backend": s.kind.to_string(),
            "fallback_reason": s.fallback_reason,
            "detail": s.detail,
        }),
        None => Value::Null,
    }
}

fn gbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e9
}

/// The port's counters as a JSON object.
fn io_json(io: &IoStats) -> Value {
    json!({
        "rx_packets": io.rx_packets,
        "rx_bytes": io.rx_bytes,
        "tx_packets": io.tx_packets,
        "tx_bytes": io.tx_bytes,
        "rx_not_ours": io.rx_not_ours,
        "rx_oversize": io.rx_oversize,
        "rx_errors": io.rx_errors,
        "tx_dropped": io.tx_dropped,
        "tx_deferred": io.tx_deferred,
        "tx_oversize": io.tx_oversize,
        "wakeups": io.wakeups,
    })
}

/// Worker CPU seconds and CPU ns per object byte.
fn cpu(w: &WorkerSnapshot, object_bytes: u64) -> (f64, f64) {
    (
        w.cpu_ns as f64 / 1e9,
        w.cpu_ns as f64 / object_bytes.max(1) as f64,
    )
}

fn send_json(r: &SendReport) -> Value {
    let s = &r.stats;
    json!({
        "object_bytes": r.object_len,
        "seconds": r.elapsed.as_secs_f64(),
        "goodput_gbit_s": gbit(r.object_len, r.elapsed),
        "version": s.version,
        "mode": format!("{:?}", s.mode),
        "mode_reason": s.mode_reason.to_string(),
        "data_bytes_acked": s.bytes_acked,
        "wire_per_data": s.bytes_sent as f64 / s.bytes_acked.max(1) as f64,
        "codec": codec_json(&r.codec),
        "codec_reason": r.codec_reason,
        "streams": s.streams,
        "bytes_on_wire": s.bytes_sent,
        "bytes_retransmitted": s.bytes_retransmitted,
        "data_frames_sent": s.data_frames_sent,
        "losses": s.losses,
        "rto_count": s.rto_count,
        "chunks_skipped_resume": s.chunks_skipped,
        "srtt_us": s.srtt.map(|d| d.as_micros() as u64),
        "min_rtt_us": s.min_rtt.map(|d| d.as_micros() as u64),
        "btlbw_gbit_s": s.btlbw * 8.0 / 1e9,
        "pacing_gbit_s": s.pacing_rate * 8.0 / 1e9,
        "cwnd_bytes": s.cwnd,
        "cc_state": format!("{:?}", s.cc_state),
        "congestion_events": s.congestion_events,
        "loss_rate": s.loss_rate,
        "data_frames_retransmitted": s.data_frames_retransmitted,
        "spurious_losses": s.spurious_losses,
        "tail_probes": s.tail_probes,
        "reconnects": s.reconnects,
        "waits": {"pacing": s.waits_pacing, "cwnd": s.waits_cwnd, "data": s.waits_data},
        "timeline": timeline_json(&s.timeline),
        "security": dwcp_secure::cli::stats_json(s.sealed, &s.drops),
        "selection": selection_json(&r.selection),
        "io": io_json(&r.worker.io),
        "cpu_s": cpu(&r.worker, r.object_len).0,
        "cpu_ns_per_byte": cpu(&r.worker, r.object_len).1,
        "xdp_counters": r.xdp.as_ref().map(xdp_json),
    })
}

/// The sender's milestones, seconds since the start of the send (`null` = not reached).
/// The XDP program's counters as `{name: value}` (every counter, in index order).
fn xdp_json(c: &dwcp_ebpf::Counters) -> serde_json::Value {
    c.iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn timeline_json(t: &dwcp_transfer::SenderTimeline) -> Value {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    json!({
        "source_hashed_s": secs(t.source_hashed),
        "digest_known_s": secs(t.digest_known),
        "handshake_done_s": secs(t.handshake_done),
        "startup_exit_s": secs(t.startup_exit),
        "probe_bw_s": secs(t.probe_bw),
        "last_new_chunk_sent_s": secs(t.last_new_chunk_sent),
        "all_acked_s": secs(t.all_acked),
        "verified_close_s": secs(t.verified_close),
        "hellos_sent": t.hellos_sent,
        "hello_retransmissions": t.hello_retransmissions,
        "longest_silence_s": t.longest_silence.as_secs_f64(),
        "longest_silence_end_s": secs(t.longest_silence_end),
    })
}

fn recv_json(r: &RecvReport) -> Value {
    let s = &r.stats;
    json!({
        "path": r.path,
        "object_bytes": r.object_len,
        "seconds": r.elapsed.as_secs_f64(),
        "version": s.version,
        "frames_received": s.frames_received,
        "frames_corrupt": s.frames_corrupt,
        "frames_malformed": s.frames_malformed,
        "frames_foreign": s.frames_foreign,
        "duplicate_chunks": s.duplicate_chunks,
        "chunks_resumed": s.chunks_resumed,
        "flushes": s.flushes,
        "codec": codec_json(&r.codec),
        "security": dwcp_secure::cli::stats_json(s.sealed, &s.drops),
        "selection": selection_json(&r.selection),
        "io": io_json(&r.worker.io),
        "cpu_s": cpu(&r.worker, r.object_len).0,
        "cpu_ns_per_byte": cpu(&r.worker, r.object_len).1,
        "xdp_counters": r.xdp.as_ref().map(xdp_json),
    })
}

fn print_send(r: &SendReport) {
    let s = &r.stats;
    println!(
        "sent {} bytes in {:.2} s: {:.2} Gbit/s goodput, v{}, mode {:?} ({}), {} streams",
        r.object_len,
        r.elapsed.as_secs_f64(),
        gbit(r.object_len, r.elapsed),
        s.version,
        s.mode,
        s.mode_reason,
        s.streams
    );
    println!(
        "  on the wire {} bytes ({:.3}x), retransmitted {} bytes, {} losses, {} RTOs, srtt {:?}",
        s.bytes_sent,
        s.bytes_sent as f64 / r.object_len.max(1) as f64,
        s.bytes_retransmitted,
        s.losses,
        s.rto_count,
        s.srtt
    );
    let c = &r.codec;
    println!(
        "  codec {}: {} data bytes -> {} payload bytes ({:.3}x); chunks raw {} zero {} hde {}; {}",
        c.policy,
        c.data_bytes,
        c.payload_bytes,
        c.ratio(),
        c.chunks[0],
        c.chunks[1],
        c.chunks[5],
        r.codec_reason
    );
    let (cpu_s, per_byte) = cpu(&r.worker, r.object_len);
    println!("  worker CPU {cpu_s:.3} s ({per_byte:.2} ns/byte)");
    if let Some(sel) = &r.selection {
        println!("  backend {} ({})", sel.kind, sel.detail);
        if let Some(why) = &sel.fallback_reason {
            println!("  AF_XDP not used: {why}");
        }
    }
}

fn print_recv(r: &RecvReport) {
    let s = &r.stats;
    println!(
        "received {} bytes into {} (verified), v{}; {} frames, {} corrupt, {} malformed, {} duplicate chunks, {} chunks resumed",
        r.object_len,
        r.path.display(),
        s.version,
        s.frames_received,
        s.frames_corrupt,
        s.frames_malformed,
        s.duplicate_chunks,
        s.chunks_resumed
    );
    let (cpu_s, per_byte) = cpu(&r.worker, r.object_len);
    println!("  worker CPU {cpu_s:.3} s ({per_byte:.2} ns/byte)");
    if let Some(sel) = &r.selection {
        println!("  backend {} ({})", sel.kind, sel.detail);
    }
    println!(
        "  security: {}",
        dwcp_secure::cli::stats_json(s.sealed, &s.drops)
    );
    if let Some(c) = &r.xdp {
        println!("  XDP program counters: {c:?}");
    }
}

fn progress_bar(json: bool, total: u64) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    pb
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Demo {
            size_mib,
            backend,
            version,
            mtu,
            dir,
            sealed,
            workers,
        } => {
            let opts = DemoOptions {
                size: size_mib << 20,
                backend: backend.into(),
                version,
                mtu,
                dir,
                sealed,
                workers: workers.into(),
            };
            if !cli.json {
                println!(
                    "dwcp demo: {size_mib} MiB object, backend {backend:?}, v{version}, MTU {mtu}{}",
                    if sealed { ", SEALED" } else { "" }
                );
            }
            let r = demo::run(&opts).context("demo failed")?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "lab": r.lab,
                        "hash": format!("{:032x}", r.hash),
                        "send": send_json(&r.send),
                        "recv": recv_json(&r.recv),
                    })
                );
            } else {
                println!("lab: {}", r.lab);
                print_send(&r.send);
                print_recv(&r.recv);
                println!("object verified: xxh3-128 {:032x} on both sides", r.hash);
            }
        }
        Cmd::Keygen { out, psk } => {
            let msg = dwcp_secure::cli::keygen(&out, psk).context("dwcp keygen")?;
            if cli.json {
                println!("{}", json!({ "message": msg }));
            } else {
                println!("{msg}");
            }
        }
        Cmd::Send {
            port,
            keys,
            file,
            object_id,
            version,
            codec,
            streams,
            workers,
        } => {
            let opts = run_opts(&port)?;
            let mut cfg = SenderConfig {
                object_id,
                max_version: version,
                max_streams: streams,
                mtu: Some(port.mtu()),
                ..SenderConfig::default()
            };
            let prof = port.worker.profile()?;
            if let Some(prof) = &prof {
                dwcp_engine::profile::apply_sender(prof, &mut cfg);
            }
            let wc = dwcp_engine::profile::workers(workers, prof.as_ref());
            let workers = wc.count;
            cfg.security = keys.factory().context("keys")?;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let pb = progress_bar(cli.json, len);
            let r = if workers > 1 {
                dwcp_engine::parts::send_file_parts(
                    &file,
                    cfg,
                    &opts,
                    codec.into(),
                    workers.into(),
                    None,
                )
                .map(dwcp_engine::parts::PartsReport::into_send_report)
            } else {
                dwcp_engine::runner::send_file_with_codec(
                    &file,
                    cfg,
                    &opts,
                    codec.into(),
                    None,
                    &mut |s| {
                        pb.set_position(s.bytes_acked);
                        pb.set_message(format!(
                            "v{} {} ({}) wire/data {:.3} {} streams",
                            s.version,
                            s.mode,
                            s.mode_reason.rule,
                            s.bytes_sent as f64 / s.bytes_acked.max(1) as f64,
                            s.streams
                        ));
                    },
                )
            };
            pb.finish_and_clear();
            let r = r.context("send failed")?;
            if cli.json {
                let mut j = send_json(&r);
                let (mtu, from) = link_mtu(port.worker.mtu, Some(&port.iface));
                j["link"] = json!({"iface": port.iface, "mtu": mtu, "mtu_from": from});
                j["workers"] = json!({"count": wc.count, "from": wc.from});
                println!("{j}");
            } else {
                print_send(&r);
                println!("workers: {} ({})", wc.count, wc.from);
            }
        }
        Cmd::Recv {
            port,
            keys,
            dest,
            max_version,
            workers,
        } => {
            let opts = run_opts(&port)?;
            let pb = progress_bar(cli.json, 0);
            let cfg = ReceiverConfig {
                max_version,
                security: keys.factory().context("keys")?,
                ..ReceiverConfig::default()
            };
            let linger = Duration::from_millis(500);
            let wc = dwcp_engine::profile::workers(workers, port.worker.profile()?.as_ref());
            let workers = wc.count;
            let r = if workers > 1 {
                dwcp_engine::parts::recv_file_parts(&dest, cfg, &opts, workers.into(), linger, None)
                    .map(dwcp_engine::parts::PartsReport::into_recv_report)
            } else {
                recv_file(&dest, cfg, &opts, linger, &mut |s| {
                    pb.set_position(s.bytes_written)
                })
            };
            pb.finish_and_clear();
            let r = r.context("receive failed")?;
            if cli.json {
                let mut j = recv_json(&r);
                j["workers"] = json!({"count": wc.count, "from": wc.from});
                println!("{j}");
            } else {
                print_recv(&r);
                println!("workers: {} ({})", wc.count, wc.from);
            }
        }
        Cmd::Migrate { cmd } => {
            let (port, keys, which) = match cmd {
                MigrateCmd::Send { port, keys, args } => {
                    (port, keys, dwcp_migrate::cli::Run::Send(args))
                }
                MigrateCmd::Recv { port, keys, args } => {
                    (port, keys, dwcp_migrate::cli::Run::Recv(args))
                }
            };
            // The mover uses these keys both ways (patches one way, the manifest the other).
            let mut sender = SenderConfig {
                mtu: Some(port.mtu()),
                security: keys.factory().context("keys")?,
                ..SenderConfig::default()
            };
            if let Some(prof) = port.worker.profile()? {
                dwcp_engine::profile::apply_sender(&prof, &mut sender);
            }
            let mut mover = dwcp_engine::mover::RunnerMover {
                opts: run_opts(&port)?,
                sender,
                linger: Duration::from_millis(100),
                tally: Default::default(),
            };
            dwcp_migrate::cli::run(which, &mut mover, port.local, port.peer, cli.json)
                .context("dwcp migrate")?;
        }
        Cmd::Daemon {
            shm,
            workers,
            objects,
            iface,
            local,
            peer,
            worker,
            keys,
        } => {
            let profile = worker.profile()?;
            let WorkerArgs {
                backend,
                core,
                mtu,
                timeout,
                ..
            } = worker;
            let mut cfg = DaemonConfig::new(shm);
            cfg.workers = workers;
            cfg.objects = objects;
            cfg.core_base = core;
            let (mtu, _) = link_mtu(mtu, iface.as_deref());
            cfg.mtu = Some(mtu);
            cfg.job_timeout = Duration::from_secs(timeout);
            cfg.security = keys.factory().context("keys")?;
            if let (Some(iface), Some(local)) = (iface, local) {
                let peer = peer.unwrap_or(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));
                let mut io = IoConfig::new(&iface, local, peer);
                io.max_datagram = mtu.saturating_sub(28);
                if let Some(prof) = &profile {
                    dwcp_engine::profile::apply_io(prof, &mut io);
                }
                if let Some(b) = backend {
                    io.choice = b.into();
                }
                cfg.io = Some(io);
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing the signal handler")?;
            }
            let summary = daemon::run(&cfg, stop).context("daemon failed")?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "epoch": summary.epoch,
                        "commands": summary.commands,
                        "jobs_started": summary.jobs_started,
                        "jobs_cancelled_at_shutdown": summary.jobs_cancelled_at_shutdown,
                        "jobs_sealed": summary.jobs_sealed,
                        "jobs_auth_failed": summary.jobs_auth_failed,
                    })
                );
            } else {
                println!(
                    "dwcp daemon stopped: epoch {}, {} commands, {} jobs ({} cancelled at shutdown, {} sealed, {} failed authentication)",
                    summary.epoch,
                    summary.commands,
                    summary.jobs_started,
                    summary.jobs_cancelled_at_shutdown,
                    summary.jobs_sealed,
                    summary.jobs_auth_failed
                );
            }
        }
        Cmd::StreamSend { port, stream } => {
            let r = dwcp_engine::stream::cli_send(&stream, &run_opts(&port)?, port.mtu())
                .context("stream-send failed")?;
            eprintln!("{}", dwcp_engine::stream::send_report_json(&r));
        }
        Cmd::StreamRecv { port, stream } => {
            let r = dwcp_engine::stream::cli_recv(&stream, &run_opts(&port)?, port.mtu())
                .context("stream-recv failed")?;
            eprintln!("{}", dwcp_engine::stream::recv_report_json(&r));
        }
    }
    Ok(())
}
