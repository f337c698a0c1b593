//! Command-line front end of `dwcp migrate send|recv` (the `dwcp` binary supplies the port
//! arguments and the DWCP [`Mover`]).
//!
//! Owns the migration arguments, the control connection set-up (the source connects over
//! TCP to the destination's DWCP address and port; the destination listens on its own), the
//! SIGINT/SIGTERM cancel, the pause command, and the printed report (text or JSON). Does
//! not: open DWCP ports (the mover does).

use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::session::{DestConfig, MigrateError, Progress, RoundReport, SourceConfig, SourceHooks};
use crate::{Mover, run_dest, run_source};

/// `dwcp migrate send` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// Image to migrate (raw, or qcow2: converted with qemu-img each round).
    pub image: PathBuf,
    /// Job id (object ids on the wire derive from it).
    #[arg(long, default_value_t = 1)]
    pub job_id: u64,
    /// The image is in use (a running VM): pre-copy rounds until they converge, then run
    /// --pause-cmd and send the final round. Without it, one round.
    #[arg(long)]
    pub live: bool,
    /// Most rounds (live).
    #[arg(long, default_value_t = 30)]
    pub max_rounds: u32,
    /// A round with at most this many MiB of dirty data makes the next the final one (0:
    /// image / 256, at least 1 MiB).
    #[arg(long, default_value_t = 0)]
    pub converge_mib: u64,
    /// Shell command that pauses the writer (e.g. the VM) before the final round.
    #[arg(long)]
    pub pause_cmd: Option<String>,
    /// Directory caching the last migrated version of this image, for XOR deltas when the
    /// destination still holds it.
    #[arg(long)]
    pub base_cache: Option<PathBuf>,
    /// Scratch directory (patches, qcow2 conversion); default: next to the image.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Block size of the diff.
    #[arg(long, default_value_t = crate::DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,
    /// zstd level for blocks that look compressible (0: no zstd). Default: 1 on a link
    /// whose control connection connected in under 2 ms (a datacenter link, where the
    /// encoder bounds the job), else 3.
    #[arg(long)]
    pub zstd_level: Option<i32>,
    /// Control connection address (default: the peer's DWCP address and port, over TCP).
    #[arg(long)]
    pub control: Option<SocketAddrV4>,
    /// A job's only round is cut into parts of this many MiB of dirty data, moved while
    /// the next part is read and encoded, applied while the next arrives (0: one part).
    #[arg(long, default_value_t = crate::session::DEFAULT_PART_BYTES >> 20)]
    pub part_mib: u64,
    /// Move a pipelined round's parts as one object each instead of one stream (the
    /// transport pays a start-up and a tail per part; for comparison).
    #[arg(long)]
    pub part_objects: bool,
}

/// `dwcp migrate recv` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct RecvArgs {
    /// Image to replace once the job verifies (need not exist).
    pub image: PathBuf,
    /// Scratch directory; default: next to the image.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Control listen address (default: the local DWCP address and port, over TCP).
    #[arg(long)]
    pub control: Option<SocketAddrV4>,
    /// Serve jobs until killed instead of exiting after one.
    #[arg(long)]
    pub keep_serving: bool,
}

/// Which side to run.
#[derive(Debug, Clone)]
pub enum Run {
    /// Source.
    Send(SendArgs),
    /// Destination.
    Recv(RecvArgs),
}

/// CLI errors.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The job failed.
    #[error("migration failed")]
    Migrate(#[from] MigrateError),
    /// Control connection set-up.
    #[error("control connection {addr}")]
    Control {
        /// Address.
        addr: SocketAddrV4,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Signal handler set-up.
    #[error("installing the signal handler")]
    Signal(#[source] std::io::Error),
}

struct CliHooks {
    pause_cmd: Option<String>,
    json: bool,
    last: Instant,
}

impl SourceHooks for CliHooks {
    fn pause(&mut self) -> Result<(), String> {
        let Some(cmd) = &self.pause_cmd else {
            return Ok(());
        };
        let st = Command::new("sh")
            .args(["-c", cmd])
            .status()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("{cmd}: {st}"))
        }
    }
    fn progress(&mut self, p: &Progress) {
        if self.json || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        eprintln!(
            "round {} {:?}: data {} / image {} B, wire {} B, {:.1} Mbit/s, eta {}",
            p.round,
            p.phase,
            p.data_bytes_done,
            p.image_bytes,
            p.wire_bytes,
            p.rate_bps as f64 * 8.0 / 1e6,
            p.eta
                .map_or("-".into(), |e| format!("{:.1} s", e.as_secs_f64()))
        );
    }
    fn round_done(&mut self, r: &RoundReport) {
        if !self.json {
            eprintln!(
                "round {}{}: {} blocks, {} data bytes, patch {} B, wire {} B, scan {:.2} s, move+apply {:.2} s",
                r.round,
                if r.last { " (final)" } else { "" },
                r.blocks,
                r.data_bytes,
                r.patch_bytes,
                r.wire_bytes,
                r.scan.as_secs_f64(),
                r.moved.as_secs_f64()
            );
        }
    }
}

fn cancel_on_signals() -> Result<Arc<AtomicBool>, CliError> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone()).map_err(CliError::Signal)?;
    }
    Ok(cancel)
}

fn scratch_for(image: &std::path::Path, s: Option<PathBuf>) -> PathBuf {
    s.unwrap_or_else(|| {
        image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join(".dwcp-migrate")
    })
}

/// Runs one side with `mover`; `local`/`peer` are the DWCP port addresses. Prints the
/// report (one JSON document with `json`).
pub fn run(
    which: Run,
    mover: &mut dyn Mover,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    json: bool,
) -> Result<(), CliError> {
    let cancel = cancel_on_signals()?;
    match which {
        Run::Send(a) => {
            let addr = a.control.unwrap_or(peer);
            let (ctl, rtt) = connect(addr)?;
            let mut cfg = SourceConfig::new(&a.image, a.job_id);
            cfg.live = a.live;
            cfg.max_rounds = a.max_rounds;
            cfg.converge_bytes = a.converge_mib << 20;
            cfg.block_size = a.block_size;
            cfg.base_cache = a.base_cache;
            cfg.scratch = scratch_for(&a.image, a.scratch);
            cfg.part_bytes = a.part_mib << 20;
            cfg.part_stream = !a.part_objects;
            cfg.policy = match a.zstd_level {
                None => crate::patch::policy_for_link(Some(rtt)),
                Some(0) => dwcp_hde::Policy::Datacenter,
                Some(level) => dwcp_hde::Policy::Hybrid {
                    level,
                    max_entropy_bits: 7.0,
                },
            };
            let mut hooks = CliHooks {
                pause_cmd: a.pause_cmd,
                json,
                last: Instant::now(),
            };
            let r = run_source(&cfg, ctl, mover, &mut hooks, &cancel)?;
            let rounds: Vec<_> = r
                .rounds
                .iter()
                .map(|x| {
                    json!({"round": x.round, "last": x.last, "blocks": x.blocks,
                    "data_bytes": x.data_bytes, "patch_bytes": x.patch_bytes,
                    "wire_bytes": x.wire_bytes, "scan_s": x.scan.as_secs_f64(),
                    "encode_s": x.encode.as_secs_f64(),
                    "move_apply_s": x.moved.as_secs_f64(), "parts": x.parts,
                    "container_zstd": {"in": x.zstd_in_out.0, "out": x.zstd_in_out.1},
                    "kinds": dwcp_hde::BlockKind::ALL.iter().map(|k| {
                        let s = x.hde.kind(*k);
                        (k.name().to_string(), json!({"blocks": s.blocks, "in": s.in_bytes, "out": s.out_bytes}))
                    }).collect::<serde_json::Map<_, _>>()})
                })
                .collect();
            let doc = json!({
                "side": "source",
                "image_len": r.image_len,
                "hash": format!("{:032x}", r.hash),
                "base": format!("{:?}", r.base),
                "manifest_bytes": r.manifest_bytes,
                "manifest_source": r.manifest_source,
                "base_cache_mismatch": r.base_cache_mismatch,
                "data_bytes": r.data_bytes,
                "wire_bytes": r.wire_bytes,
                "elapsed_s": r.elapsed.as_secs_f64(),
                "downtime_s": r.downtime.as_secs_f64(),
                "phases": phases_json(&r.phases),
                "dest_phases": phases_json(&r.dest_phases),
                "rounds": rounds,
                "pipeline": r.pipeline.as_ref().map(|p| json!({
                    "parts": p.parts, "part_bytes": p.part_bytes,
                    "first_part_s": p.first_part.as_secs_f64(),
                    "waited_for_parts_s": p.waited_for_parts.as_secs_f64(),
                    "encoder_blocked_s": p.encoder_blocked.as_secs_f64(),
                    "apply_tail_s": p.apply_tail.as_secs_f64(),
                    "zstd_levels": p.zstd_levels, "stream": p.stream,
                    "stream_resumes": p.stream_resumes,
                    "stream_zstd_level": p.stream_zstd_level,
                })),
            });
            if json {
                println!("{doc}");
            } else {
                println!(
                    "migrated {} bytes in {:.2} s ({} rounds, base {:?}): data {} B, wire {} B, hash {:032x} verified by the destination",
                    r.image_len,
                    r.elapsed.as_secs_f64(),
                    r.rounds.len(),
                    r.base,
                    r.data_bytes,
                    r.wire_bytes,
                    r.hash
                );
            }
        }
        Run::Recv(a) => {
            let addr = a.control.unwrap_or(local);
            // A destination killed during an earlier job: finish or drop it before serving.
            let rec = crate::store::recover(&a.image).map_err(MigrateError::from)?;
            if rec != crate::store::Recovery::Clean {
                tracing::info!(image = %a.image.display(), ?rec, "recovered an interrupted job");
            }
            let l = TcpListener::bind(addr).map_err(|source| CliError::Control { addr, source })?;
            let cfg = DestConfig {
                image: a.image.clone(),
                scratch: scratch_for(&a.image, a.scratch),
            };
            loop {
                let (ctl, from) = l
                    .accept()
                    .map_err(|source| CliError::Control { addr, source })?;
                tracing::info!(%from, "migration job connected");
                let res = run_dest(&cfg, ctl, mover, &cancel);
                match res {
                    Ok(r) => {
                        if json {
                            println!(
                                "{}",
                                json!({"side": "destination", "job_id": r.job_id, "rounds": r.rounds,
                                "data_bytes": r.data_bytes, "patch_bytes": r.patch_bytes,
                                "image_len": r.image_len, "hash": format!("{:032x}", r.hash),
                                "elapsed_s": r.elapsed.as_secs_f64(), "phases": phases_json(&r.phases)})
                            );
                        } else {
                            println!(
                                "job {}: {} rounds, {} patch bytes, image {} bytes verified (xxh3-128 {:032x}) in {:.2} s",
                                r.job_id,
                                r.rounds,
                                r.patch_bytes,
                                r.image_len,
                                r.hash,
                                r.elapsed.as_secs_f64()
                            );
                        }
                    }
                    Err(e) if a.keep_serving => {
                        tracing::warn!(error = %e, "job failed; image unchanged");
                    }
                    Err(e) => return Err(e.into()),
                }
                if !a.keep_serving {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Phases as a JSON object of seconds (in order).
fn phases_json(p: &[(String, f64)]) -> serde_json::Value {
    serde_json::Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), json!((v * 1e4).round() / 1e4)))
            .collect(),
    )
}

/// Connects, retrying for 10 s while the destination starts.
/// The control connection, and how long its successful connect took (about one round
/// trip: the link's RTT for [`crate::patch::policy_for_link`]).
fn connect(addr: SocketAddrV4) -> Result<(TcpStream, Duration), CliError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = Instant::now();
        match TcpStream::connect(addr) {
            Ok(s) => return Ok((s, t.elapsed())),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(source) => return Err(CliError::Control { addr, source }),
        }
    }
}
