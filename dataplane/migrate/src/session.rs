//! The two ends of one migration job: [`run_source`] and [`run_dest`].
//!
//! Owns the round logic: what the source assumes the destination holds (nothing, a cached
//! earlier version proven by hash, or a manifest of block hashes), the pre-copy loop (scan,
//! build the patch, move it, wait until applied), convergence (the round after one whose
//! dirty data was at most `converge_bytes`, or round `max_rounds`, is the final one: the
//! source is paused first through [`SourceHooks::pause`]), the switchover (commit with the
//! image hash; the destination verifies and renames), cancel, and progress with ETA.
//!
//! Does not: move bytes (a [`Mover`] does), or talk to the control plane (the caller maps
//! [`Progress`] to its events).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_hde::Policy;
use thiserror::Error;

use crate::image::{BaseCache, ImageError, ManifestCache, RawView, hash_bytes};
use crate::mover::{MoveError, MoveProgress, MoveReport, Mover};
use crate::patch::{self, PatchError};
use crate::round::{DestRound, DestStep, Early};
use crate::scan::{DestView, Dirty, manifest_bytes, parse_manifest, read_image};
use crate::store::{Phases, Target, add_phase};
use crate::wire::{Conn, Msg, STREAM_PART, WireError, send_on};

/// Errors of a migration job.
#[derive(Debug, Error)]
pub enum MigrateError {
    /// Control connection.
    #[error("control connection")]
    Wire(#[from] WireError),
    /// Image file handling.
    #[error("image")]
    Image(#[from] ImageError),
    /// Building or applying a patch.
    #[error("patch of round {round}")]
    Patch {
        /// Round.
        round: u32,
        /// Cause.
        #[source]
        source: PatchError,
    },
    /// Moving an object.
    #[error("moving {what}")]
    Move {
        /// Which object.
        what: String,
        /// Cause.
        #[source]
        source: MoveError,
    },
    /// Scratch file I/O.
    #[error("{what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Peer speaks another protocol version.
    #[error("peer speaks migration protocol version {0}")]
    Version(u32),
    /// Peer sent something out of sequence.
    #[error("unexpected message from the peer: {0}")]
    Unexpected(String),
    /// The destination reported a failure (its image is unchanged).
    #[error("destination failed: {0}")]
    Remote(String),
    /// The peer aborted the job.
    #[error("peer aborted: {0}")]
    Aborted(String),
    /// The switchover pause hook failed.
    #[error("pausing the source: {0}")]
    Pause(String),
    /// The cancel flag was set.
    #[error("cancelled")]
    Cancelled,
}

impl MigrateError {
    fn mv(what: &str, source: MoveError) -> Self {
        match source {
            MoveError::Cancelled => MigrateError::Cancelled,
            source => MigrateError::Move {
                what: what.to_string(),
                source,
            },
        }
    }
}

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Exchanging hello / manifest.
    Handshake,
    /// Reading the image and building the round's patch.
    Scanning,
    /// Moving the patch.
    Sending,
    /// Waiting for the destination to apply it.
    Applying,
    /// Waiting for the destination's hash check and rename.
    Verifying,
    /// Completed.
    Done,
}

/// Progress of the source side.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Current round (0 before the first).
    pub round: u32,
    /// True once the source is paused (the final round).
    pub final_round: bool,
    /// Image length.
    pub image_bytes: u64,
    /// Image bytes the current round's patch covers (its dirty data).
    pub round_data_bytes: u64,
    /// Patch length of the current round.
    pub round_patch_bytes: u64,
    /// Image bytes delivered over all rounds (the current one pro rata).
    pub data_bytes_done: u64,
    /// Bytes on the wire over all rounds (manifest included).
    pub wire_bytes: u64,
    /// Wire rate of the current move, bytes per second.
    pub rate_bps: u64,
    /// Estimated time to the end of the current round (later rounds are not known yet; in
    /// the final round this is the time to completion, verification excluded).
    pub eta: Option<Duration>,
    /// Time since the job started.
    pub elapsed: Duration,
}

/// One finished round.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    /// Round number.
    pub round: u32,
    /// Final round (source paused).
    pub last: bool,
    /// Dirty blocks.
    pub blocks: u64,
    /// Image bytes they cover.
    pub data_bytes: u64,
    /// Patch bytes.
    pub patch_bytes: u64,
    /// Bytes on the wire moving the patch.
    pub wire_bytes: u64,
    /// HDE counters of the patch (before container zstd).
    pub hde: dwcp_hde::Stats,
    /// HDE bytes of the containers stored as zstd frames, and their stored bytes.
    pub zstd_in_out: (u64, u64),
    /// Time to read, scan and build the patch.
    pub scan: Duration,
    /// Of which building (encoding) the patch.
    pub encode: Duration,
    /// Time to move and apply.
    pub moved: Duration,
    /// Parts the round was cut into (1: not pipelined; see [`SourceConfig::part_bytes`]).
    pub parts: u32,
}

/// How a pipelined round overlapped its stages (see [`SourceConfig::part_bytes`]): the
/// source reads, scans and encodes part i+1 while part i moves, and the destination
/// applies part i while part i+1 arrives. The round's `read_scan`/`encode` phases then ran
/// during `move` (their sum exceeds the wall time).
#[derive(Debug, Clone, Default)]
pub struct PipelineReport {
    /// Parts moved.
    pub parts: u32,
    /// Dirty data per part (the setting).
    pub part_bytes: u64,
    /// From the start of the round until the first part was ready to move (the stage the
    /// link waits for once).
    pub first_part: Duration,
    /// Time the mover waited for the encoder between parts (first part excluded): encoding
    /// slower than the link.
    pub waited_for_parts: Duration,
    /// Time the encoder waited for the mover (a finished part queued): the link is the
    /// bottleneck.
    pub encoder_blocked: Duration,
    /// From the end of the last part's move until the destination applied every part.
    pub apply_tail: Duration,
    /// Container zstd level of each part ([`crate::adapt`]; 0 for a policy without zstd).
    pub zstd_levels: Vec<i32>,
    /// The parts moved as one stream ([`crate::partstream`]), not one object each.
    pub stream: bool,
    /// Streams of the round that failed and were resumed from the destination's first
    /// missing part.
    pub stream_resumes: u32,
    /// zstd level of the round's parts as one zstd stream ([`crate::partzstd`]); 0: the
    /// parts' containers carry zstd frames of their own (or none).
    pub stream_zstd_level: i32,
}

/// Callbacks of the source side.
pub trait SourceHooks {
    /// Stop the writer (pause the VM) before the final round. Default: nothing to pause.
    fn pause(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Called at least every move-progress tick and at each phase change.
    fn progress(&mut self, _p: &Progress) {}
    /// Called after each round.
    fn round_done(&mut self, _r: &RoundReport) {}
}

/// Hooks that do nothing.
impl SourceHooks for () {}

/// How the source was told what the destination holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Nothing (or an empty image): zero blocks are skipped.
    Empty,
    /// A version in the source's base cache (XOR deltas from round 1).
    Cached,
    /// Only the destination's block hashes (changed blocks cross without XOR in round 1).
    Manifest,
}

/// Source settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Image to migrate (raw or qcow2).
    pub image: PathBuf,
    /// Job id (object ids are derived from it).
    pub job_id: u64,
    /// Diff and HDE block size.
    pub block_size: usize,
    /// zstd policy for patches.
    pub policy: Policy,
    /// The image is being written (a running VM): pre-copy rounds until convergence. When
    /// false, the source is paused before round 1 and round 1 is the final round.
    pub live: bool,
    /// Most rounds; the last is the final one.
    pub max_rounds: u32,
    /// A round whose dirty data is at most this makes the next round the final one
    /// (0: `max(image / 256, 1 MiB)`).
    pub converge_bytes: u64,
    /// Scratch directory for patches and qcow2 conversions.
    pub scratch: PathBuf,
    /// Base cache directory (one per image), if any.
    pub base_cache: Option<PathBuf>,
    /// A final round read in one pass (the job's only round: not live) is cut into parts
    /// of this much dirty data, each its own patch, and pipelined (see [`PipelineReport`]);
    /// 0 = never cut. The first part is a sixteenth of this and each next one doubles up
    /// to it (the link starts sooner).
    pub part_bytes: u64,
    /// A pipelined round moves as one stream of its parts ([`crate::partstream`]) when the
    /// mover carries streams: one transport start-up and tail per round, not per part. False:
    /// one object per part, as movers without streams do.
    pub part_stream: bool,
}

/// Default [`SourceConfig::part_bytes`].
///
/// 64 MiB: with the parts in one stream a part costs the transport nothing, and smaller
/// parts start the link sooner and end the apply sooner (WAN lab, 1 GiB full copy: 12.5 s
/// with 64 MiB parts, 13.7 s with 256 MiB; docs/perf-migrate.md).
pub const DEFAULT_PART_BYTES: u64 = 64 << 20;

impl SourceConfig {
    /// Defaults for `image`: 4 KiB blocks, hybrid zstd, not live, 30 rounds, scratch in
    /// the image's directory.
    pub fn new(image: &Path, job_id: u64) -> Self {
        SourceConfig {
            image: image.to_path_buf(),
            job_id,
            block_size: crate::DEFAULT_BLOCK_SIZE,
            policy: patch::DEFAULT_POLICY,
            live: false,
            max_rounds: 30,
            converge_bytes: 0,
            scratch: image
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            base_cache: None,
            part_bytes: DEFAULT_PART_BYTES,
            part_stream: true,
        }
    }
}

/// What the source reports.
#[derive(Debug, Clone)]
pub struct SourceReport {
    /// How round 1 knew the destination's content.
    pub base: Base,
    /// Rounds.
    pub rounds: Vec<RoundReport>,
    /// Final image length.
    pub image_len: u64,
    /// Its XXH3-128 (verified by the destination).
    pub hash: u128,
    /// Wire bytes of the manifest, if one was fetched (received, so counted on the
    /// destination's side of the link).
    pub manifest_bytes: u64,
    /// Total wire bytes (patches sent + manifest received).
    pub wire_bytes: u64,
    /// Total image bytes in patches.
    pub data_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Time from the pause to the destination's commit.
    pub downtime: Duration,
    /// Wall time per phase on the source, in order (`read_overlapped` ran on a second
    /// thread during `hello`/`cache_read`/`manifest`; the rest are sequential).
    pub phases: Phases,
    /// The destination's phases as it reported them at commit.
    pub dest_phases: Phases,
    /// Where the destination's block hashes came from: "none" (exact bytes or nothing
    /// held), "destination" (a manifest transfer), "source cache" (this source sent that
    /// version before and kept its manifest).
    pub manifest_source: &'static str,
    /// How the pipelined round overlapped its stages, if the job had one.
    pub pipeline: Option<PipelineReport>,
    /// The base cache's copy of the destination's version disagreed with the destination's
    /// manifest (a corrupt or stale cache file): from the first such block on, its bytes
    /// were not used as baselines (the job sent those blocks without XOR deltas), and the
    /// cache entry was replaced by the version sent.
    pub base_cache_mismatch: bool,
}

const POLL: Duration = Duration::from_millis(100);

/// Waits for the next message and takes what it needs from it with `take`; a message `take`
/// gives back is out of sequence. `Abort` and `Failed` end the wait as errors.
fn wait_map<T>(
    conn: &mut Conn,
    cancel: &AtomicBool,
    mut take: impl FnMut(Msg) -> Result<T, Msg>,
) -> Result<T, MigrateError> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MigrateError::Cancelled);
        }
        match conn.poll()? {
            None => continue,
            Some(Msg::Abort { reason }) => return Err(MigrateError::Aborted(reason)),
            Some(Msg::Failed { reason }) => return Err(MigrateError::Remote(reason)),
            Some(m) => return take(m).map_err(|m| MigrateError::Unexpected(format!("{m:?}"))),
        }
    }
}

/// [`wait_map`] for a message `want` accepts, returned whole.
fn wait_for(
    conn: &mut Conn,
    cancel: &AtomicBool,
    mut want: impl FnMut(&Msg) -> bool,
) -> Result<Msg, MigrateError> {
    wait_map(conn, cancel, |m| if want(&m) { Ok(m) } else { Err(m) })
}

fn parse_hash(s: &str) -> Option<u128> {
    u128::from_str_radix(s, 16).ok()
}

/// Runs the source side of a job over the control connection `ctl` (already connected to
/// the destination).
pub fn run_source(
    cfg: &SourceConfig,
    ctl: TcpStream,
    mover: &mut dyn Mover,
    hooks: &mut dyn SourceHooks,
    cancel: &AtomicBool,
) -> Result<SourceReport, MigrateError> {
    let mut conn = Conn::new(ctl, POLL).map_err(WireError::from)?;
    let res = source_inner(cfg, &mut conn, mover, hooks, cancel);
    if let Err(e) = &res {
        // Best effort: tell the destination to drop its working copy.
        let _ = conn.send(&Msg::Abort {
            reason: e.to_string(),
        });
    }
    res
}

fn source_inner(
    cfg: &SourceConfig,
    conn: &mut Conn,
    mover: &mut dyn Mover,
    hooks: &mut dyn SourceHooks,
    cancel: &AtomicBool,
) -> Result<SourceReport, MigrateError> {
    let start = Instant::now();
    let bs = cfg.block_size;
    let mut phases: Phases = Vec::new();
    let mut prog = Progress {
        phase: Phase::Handshake,
        round: 0,
        final_round: !cfg.live,
        image_bytes: std::fs::metadata(&cfg.image).map_or(0, |m| m.len()),
        round_data_bytes: 0,
        round_patch_bytes: 0,
        data_bytes_done: 0,
        wire_bytes: 0,
        rate_bps: 0,
        eta: None,
        elapsed: Duration::ZERO,
    };
    hooks.progress(&prog);
    std::fs::create_dir_all(&cfg.scratch).map_err(|source| MigrateError::Io {
        what: "creating",
        path: cfg.scratch.clone(),
        source,
    })?;
    let raw = RawView::open(&cfg.image, &cfg.scratch)?;
    let mut last = !cfg.live;
    let mut paused_at = None;
    if last {
        // Round 1 is the final round: pause before the image is read (it is read while the
        // handshake runs).
        hooks.pause().map_err(MigrateError::Pause)?;
        paused_at = Some(Instant::now());
    }
    let t = Instant::now();
    conn.send(&Msg::Hello {
        version: crate::PROTOCOL_VERSION,
        job_id: cfg.job_id,
        block_size: bs as u32,
    })?;
    // Round 1's read of the image overlaps the handshake, the manifest transfer and the
    // base cache read (a second core). A job whose round 1 is the final round streams the
    // image instead (no whole copy in memory: that read is several times faster).
    let preread_path = if last {
        None
    } else {
        Some(raw.refresh()?.to_path_buf())
    };
    let preread = preread_path.map(|path| {
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = read_image(&path, bs).map_err(|source| MigrateError::Io {
                what: "reading the image",
                path,
                source,
            });
            (r, t.elapsed())
        })
    });
    let (version, held_len, held_hash) = wait_map(conn, cancel, |m| match m {
        Msg::HelloAck {
            version,
            held_len,
            held_hash,
        } => Ok((version, held_len, held_hash)),
        m => Err(m),
    })?;
    if version != crate::PROTOCOL_VERSION {
        return Err(MigrateError::Version(version));
    }
    let (held_len, held_hash) = (
        held_len.unwrap_or(0),
        held_hash.as_deref().and_then(parse_hash),
    );
    add_phase(&mut phases, "hello", t);
    let cache = cfg.base_cache.as_deref().map(BaseCache::new).transpose()?;
    let obj_base = cfg.job_id << 16;
    let mut manifest_wire = 0u64;
    let mcache = ManifestCache::new(
        &cfg.base_cache
            .clone()
            .unwrap_or_else(|| cfg.scratch.join("manifests")),
    )?;
    // A version this source sent before: its manifest is known here (no transfer), and
    // with a base cache its bytes are read for the dirty blocks only.
    let known = held_hash
        .filter(|_| held_len > 0)
        .and_then(|h| Some((h, mcache.get(h, bs, held_len)?)));
    let mut manifest_source = "none";
    let t = Instant::now();
    let cached = match (&cache, held_hash, &known) {
        (Some(_), _, Some(_)) => None,
        (Some(c), Some(h), None) if held_len > 0 => c.get(h)?,
        _ => None,
    };
    if cache.is_some() && held_len > 0 {
        add_phase(&mut phases, "cache_read", t);
    }
    let cached_file = match (&cache, &known) {
        (Some(c), Some((h, _))) => c.open(*h),
        _ => None,
    };
    let (base, mut view) = if held_len == 0 {
        (Base::Empty, DestView::empty(bs))
    } else if let Some(bytes) = cached {
        (Base::Cached, DestView::known(bs, bytes))
    } else if let Some((_, m)) = known {
        manifest_source = "source cache";
        match cached_file {
            Some(f) => (
                Base::Cached,
                DestView::from_manifest_and_file(bs, held_len, m, f),
            ),
            None => (Base::Manifest, DestView::from_manifest(bs, held_len, m)),
        }
    } else {
        let t = Instant::now();
        let path = cfg.scratch.join(format!("manifest-{}", cfg.job_id));
        let object_id = obj_base | 0xffff;
        let mut writer = conn.writer().map_err(WireError::from)?;
        let mut sent = Ok(());
        let (r, early) = watch(conn, cancel, |c| {
            mover.recv(&path, object_id, c, &mut || {
                sent = send_on(&mut writer, &Msg::ManifestRequest { object_id });
            })
        })?;
        sent?;
        no_early(early)?;
        let r = r.map_err(|e| MigrateError::mv("the manifest", e))?;
        let bytes = std::fs::read(&path).map_err(|source| MigrateError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(&path);
        let m = parse_manifest(&bytes).ok_or_else(|| {
            MigrateError::Unexpected("manifest length not a multiple of 8".into())
        })?;
        manifest_wire = r.wire_bytes.max(bytes.len() as u64);
        prog.wire_bytes += manifest_wire;
        add_phase(&mut phases, "manifest", t);
        manifest_source = "destination";
        (Base::Manifest, DestView::from_manifest(bs, held_len, m))
    };
    tracing::info!(
        job_id = cfg.job_id,
        ?base,
        held_len,
        "migration source: destination state known"
    );

    let mut preread = preread;
    // The hash of a pipelined round's image (read once, as it was sent).
    let mut streamed: Option<u128> = None;
    let mut rounds: Vec<RoundReport> = Vec::new();
    // For the base cache update: every block sent, and the shortest length the image had.
    let mut changed: Vec<u64> = Vec::new();
    let mut min_len = held_len;
    let mut pipeline = None;
    let mut round = 0u32;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MigrateError::Cancelled);
        }
        round += 1;
        let t_scan = Instant::now();
        prog.phase = Phase::Scanning;
        prog.round = round;
        prog.final_round = last;
        prog.eta = None;
        prog.elapsed = start.elapsed();
        hooks.progress(&prog);
        if round == 1 && last {
            // The job's only round (the source is paused): streamed and pipelined.
            let path = raw.refresh()?.to_path_buf();
            let keep_bytes = cache.is_some() && base == Base::Cached;
            // The base cache takes the version being sent as soon as the reader has read all
            // of it (while the last parts move), not after the commit.
            let update_cache =
                |hash: u128, len: u64, blocks: &[u64], bytes: &[u8], base_ok: bool| {
                    let Some(c) = &cache else { return Ok(()) };
                    match (base, held_hash) {
                        (Base::Cached, Some(old)) if base_ok => {
                            c.update_blocks(old, hash, len, min_len.min(len), blocks, bytes, bs)
                        }
                        // The image file is what was sent (the source is paused); it also
                        // replaces a cached base that proved wrong.
                        _ => c.put_file(hash, &path),
                    }
                };
            let (rep, produced, pl) = pipelined_final_round(
                cfg,
                conn,
                mover,
                hooks,
                cancel,
                &mut view,
                &path,
                keep_bytes,
                &update_cache,
                round,
                &mut prog,
                &mut phases,
                start,
            )?;
            if cache.is_some() {
                if let Err(e) = &produced.cache_update.0 {
                    tracing::warn!(error = %e, "could not update the base cache");
                }
                add_secs(&mut phases, "cache_update", produced.cache_update.1);
            }
            min_len = min_len.min(produced.image_len);
            streamed = Some(produced.hash);
            pipeline = Some(pl);
            hooks.round_done(&rep);
            rounds.push(rep);
            break;
        }
        let dirty = {
            let img = match preread.take() {
                Some(h) => {
                    let t = Instant::now();
                    let (r, took) = h
                        .join()
                        .map_err(|_| MigrateError::Unexpected("image reader panicked".into()))?;
                    add_phase(&mut phases, "read_wait", t);
                    phases.push(("read_overlapped".into(), took.as_secs_f64()));
                    r?
                }
                None => {
                    let t = Instant::now();
                    let path = raw.refresh()?;
                    let r = read_image(path, bs).map_err(|source| MigrateError::Io {
                        what: "reading the image",
                        path: path.to_path_buf(),
                        source,
                    })?;
                    add_phase(&mut phases, "read", t);
                    r
                }
            };
            let t = Instant::now();
            let d = view.scan_read(img);
            add_phase(&mut phases, "scan", t);
            d
        };
        min_len = min_len.min(dirty.image_len);
        if base == Base::Cached {
            changed.extend_from_slice(&dirty.blocks);
        }
        let t_enc = Instant::now();
        let patch_path = cfg.scratch.join(format!("patch-{}-{round}", cfg.job_id));
        let built = write_patch(cfg, cfg.policy, &patch_path, round, &dirty)?;
        let encode = t_enc.elapsed();
        add_phase(&mut phases, "encode", t_enc);
        let scan = t_scan.elapsed();
        prog.image_bytes = view.len();
        prog.round_data_bytes = built.data_bytes;
        prog.round_patch_bytes = built.patch_bytes;
        let object_id = obj_base | u64::from(round);
        let t_move = Instant::now();
        conn.send(&Msg::Round {
            round,
            part: 0,
            object_id,
            patch_len: built.patch_bytes,
            blocks: built.blocks,
            data_bytes: built.data_bytes,
            last,
        })?;
        wait_for(
            conn,
            cancel,
            |m| matches!(m, Msg::Ready { round: r, .. } if *r == round),
        )?;
        prog.phase = Phase::Sending;
        hooks.progress(&prog);
        let wire_before = prog.wire_bytes;
        let data_before = prog.data_bytes_done;
        let mut last_tick = Instant::now();
        let (moved, early) = watch(conn, cancel, |c| {
            mover.send(&patch_path, object_id, c, &mut |mp: &MoveProgress| {
                if last_tick.elapsed() < Duration::from_millis(100) {
                    return;
                }
                last_tick = Instant::now();
                let obj_rate =
                    move_progress(&mut prog, mp, t_move, wire_before, data_before, &built);
                prog.eta = (obj_rate > 0.0).then(|| {
                    Duration::from_secs_f64(
                        built.patch_bytes.saturating_sub(mp.object_bytes) as f64 / obj_rate,
                    )
                });
                prog.elapsed = start.elapsed();
                hooks.progress(&prog);
            })
        })?;
        let moved =
            moved.map_err(|e| MigrateError::mv(&format!("the patch of round {round}"), e))?;
        add_phase(&mut phases, "move", t_move);
        let t_apply = Instant::now();
        let _ = std::fs::remove_file(&patch_path);
        prog.wire_bytes = wire_before + moved.wire_bytes;
        prog.data_bytes_done = data_before + built.data_bytes;
        prog.phase = Phase::Applying;
        prog.eta = None;
        hooks.progress(&prog);
        match early {
            // The destination applied the patch before the sender heard the final CLOSE.
            Some(Msg::Applied { round: r, .. }) if r == round => {}
            Some(m) => return Err(MigrateError::Unexpected(format!("{m:?}"))),
            None => {
                wait_for(
                    conn,
                    cancel,
                    |m| matches!(m, Msg::Applied { round: r, .. } if *r == round),
                )?;
            }
        }
        add_phase(&mut phases, "apply_wait", t_apply);
        let rep = RoundReport {
            round,
            last,
            blocks: built.blocks,
            data_bytes: built.data_bytes,
            patch_bytes: built.patch_bytes,
            wire_bytes: moved.wire_bytes,
            hde: built.hde,
            zstd_in_out: (built.zstd_in, built.zstd_out),
            scan,
            encode,
            moved: t_move.elapsed(),
            parts: 1,
        };
        tracing::info!(
            job_id = cfg.job_id,
            round,
            last,
            blocks = rep.blocks,
            data = rep.data_bytes,
            patch = rep.patch_bytes,
            wire = rep.wire_bytes,
            detail = %moved.detail,
            "round applied"
        );
        hooks.round_done(&rep);
        rounds.push(rep);
        if last {
            break;
        }
        if crate::round::next_is_final(
            round,
            built.data_bytes,
            prog.image_bytes,
            cfg.converge_bytes,
            cfg.max_rounds,
        ) {
            hooks.pause().map_err(MigrateError::Pause)?;
            paused_at = Some(Instant::now());
            last = true;
        }
    }
    prog.phase = Phase::Verifying;
    hooks.progress(&prog);
    let t = Instant::now();
    let hash = match streamed {
        Some(h) => h,
        None => hash_bytes(view.snapshot()),
    };
    let image_len = view.len();
    add_phase(&mut phases, "hash", t);
    let t = Instant::now();
    conn.send(&Msg::Commit {
        len: image_len,
        hash: format!("{hash:032x}"),
    })?;
    changed.sort_unstable();
    changed.dedup();
    // The base cache is brought to the new version while the destination verifies and
    // syncs (a pipelined round's reader did it already). Should the commit fail, the cache
    // then holds a version the destination lacks: the next job finds no cached base for the
    // destination's hash and falls back to its manifest.
    let (committed, cache_updated) = std::thread::scope(|s| {
        // A pipelined round's reader already updated it.
        let update = cache.as_ref().filter(|_| streamed.is_none()).map(|c| {
            let (view, changed) = (&view, &changed);
            s.spawn(move || {
                let t = Instant::now();
                let r = match (base, held_hash) {
                    (Base::Cached, Some(old)) if !view.base_mismatch() => {
                        c.update(old, hash, view.snapshot(), changed, min_len, bs)
                    }
                    // The whole image is at hand: a wrong cached base is replaced.
                    _ => c.put(hash, view.snapshot()),
                };
                (r, t.elapsed())
            })
        });
        let committed = wait_map(conn, cancel, |m| match m {
            Msg::Committed { phases, .. } => Ok(phases),
            m => Err(m),
        });
        (committed, update.map(|h| h.join()))
    });
    match cache_updated {
        Some(Ok((r, secs))) => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not update the base cache");
            }
            add_secs(&mut phases, "cache_update", secs);
        }
        Some(Err(_)) => tracing::warn!("the base cache update panicked"),
        None => {}
    }
    let dest_phases = committed?;
    add_phase(&mut phases, "commit_wait", t);
    let downtime = paused_at.map_or(Duration::ZERO, |t| t.elapsed());
    let t = Instant::now();
    if view.hashes().len() as u64 == image_len.div_ceil(bs as u64)
        && let Err(e) = mcache.put(hash, bs, image_len, view.hashes())
    {
        tracing::warn!(error = %e, "could not store the manifest");
    }
    add_phase(&mut phases, "manifest_store", t);
    prog.phase = Phase::Done;
    prog.elapsed = start.elapsed();
    hooks.progress(&prog);
    let data_bytes = rounds.iter().map(|r| r.data_bytes).sum();
    Ok(SourceReport {
        base,
        image_len,
        hash,
        manifest_bytes: manifest_wire,
        wire_bytes: prog.wire_bytes,
        data_bytes,
        rounds,
        elapsed: start.elapsed(),
        downtime,
        phases,
        dest_phases,
        manifest_source,
        pipeline,
        base_cache_mismatch: view.base_mismatch(),
    })
}

/// Builds the patch of `dirty` into the file `path`.
fn write_patch(
    cfg: &SourceConfig,
    policy: Policy,
    path: &Path,
    round: u32,
    dirty: &Dirty,
) -> Result<patch::BuildStats, MigrateError> {
    let io = |source| MigrateError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let b = build_patch(cfg, policy, &mut w, round, dirty)?;
    std::io::Write::flush(&mut w).map_err(io)?;
    Ok(b)
}

/// Builds the patch of `dirty` into `out`.
fn build_patch(
    cfg: &SourceConfig,
    policy: Policy,
    out: &mut dyn std::io::Write,
    round: u32,
    dirty: &Dirty,
) -> Result<patch::BuildStats, MigrateError> {
    patch::build(
        out,
        cfg.block_size,
        dirty.image_len,
        round,
        &dirty.blocks,
        &dirty.new_compact,
        dirty.old_compact.clone(),
        policy,
    )
    .map_err(|source| MigrateError::Patch { round, source })
}

/// One encoded part of a pipelined round, ready to move.
struct Part {
    index: u32,
    path: PathBuf,
    built: patch::BuildStats,
    /// Image byte where the part's stretch ends.
    end: u64,
    /// The plain patch, in memory, for the zstd stage (the file at `path` is written by it).
    plain: Option<Vec<u8>>,
}

impl crate::partstream::StreamPart for Part {
    fn part(&self) -> u32 {
        self.index
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn end(&self) -> u64 {
        self.end
    }
}

/// What the reader/encoder of a pipelined round produced besides the parts.
struct Produced {
    hash: u128,
    image_len: u64,
    scan: Duration,
    encode: Duration,
    blocked: Duration,
    /// zstd level of each part.
    levels: Vec<i32>,
    /// The base cache update (run by the reader once it read everything) and its time.
    cache_update: (Result<(), ImageError>, Duration),
}

/// Brings the source's base cache to the version just read: hash, length, every dirty
/// block and (when kept) their bytes, and whether the cached base proved right.
type CacheUpdate<'a> = dyn Fn(u128, u64, &[u64], &[u8], bool) -> Result<(), ImageError> + Sync + 'a;

enum ProduceError {
    Io(std::io::Error),
    Job(MigrateError),
}

impl From<std::io::Error> for ProduceError {
    fn from(e: std::io::Error) -> Self {
        ProduceError::Io(e)
    }
}

fn add_secs(p: &mut Phases, name: &str, d: Duration) {
    let secs = d.as_secs_f64();
    if let Some(e) = p.iter_mut().find(|e| e.0 == name) {
        e.1 += secs;
    } else {
        p.push((name.to_string(), secs));
    }
}

/// The job's only round, read in one pass and pipelined: a second thread reads, scans and
/// encodes the image part by part ([`SourceConfig::part_bytes`] of dirty data each, the
/// zstd level set by [`crate::adapt`]) while this one moves the parts — as one stream when
/// the mover carries streams ([`move_stream`]), else one object each ([`move_parts`]) —
/// without waiting for the destination to apply the previous one. Returns once the
/// destination applied every part.
#[allow(clippy::too_many_arguments)]
fn pipelined_final_round(
    cfg: &SourceConfig,
    conn: &mut Conn,
    mover: &mut dyn Mover,
    hooks: &mut dyn SourceHooks,
    cancel: &AtomicBool,
    view: &mut DestView,
    image: &Path,
    keep_bytes: bool,
    update_cache: &CacheUpdate<'_>,
    round: u32,
    prog: &mut Progress,
    phases: &mut Phases,
    start: Instant,
) -> Result<(RoundReport, Produced, PipelineReport), MigrateError> {
    let t_round = Instant::now();
    let part_bytes = if cfg.part_bytes == 0 {
        u64::MAX
    } else {
        cfg.part_bytes
    };
    let obj_base = cfg.job_id << 16;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Part>(1);
    // Parts that move as a stream are one zstd stream (`crate::partzstd`) when the link
    // bounds the job (level 3 and up): their containers carry no zstd of their own. Not at
    // level 1 (a datacenter link: one zstd thread is slower than the containers compressed
    // in parallel, for 1 % fewer bytes).
    let stream_zstd = match crate::adapt::level_of(cfg.policy) {
        Some(level) if level >= 3 && cfg.part_stream && mover.streams() => Some(level),
        _ => None,
    };
    let stop = AtomicBool::new(false);
    let mut pl = PipelineReport {
        part_bytes: cfg.part_bytes,
        stream_zstd_level: stream_zstd.unwrap_or(0),
        ..PipelineReport::default()
    };
    let mut rep = RoundReport {
        round,
        last: true,
        ..RoundReport::default()
    };
    let image_len = prog.image_bytes.max(1);
    prog.round_data_bytes = 0;
    prog.round_patch_bytes = 0;
    let (consumed, produced, zstaged) = std::thread::scope(|s| {
        let producer = s.spawn(|| -> Result<Produced, MigrateError> {
            let tx = tx;
            let t0 = Instant::now();
            let mut encode = Duration::ZERO;
            let mut blocked = Duration::ZERO;
            let mut in_emit = Duration::ZERO;
            let mut blocks = Vec::new();
            let mut bytes = Vec::new();
            let mut index = 0u32;
            let level = crate::adapt::level_of(cfg.policy).unwrap_or(0);
            let mut levels = Vec::new();
            // Small first parts, doubling up to `part_bytes`: the link starts sooner (4 MiB
            // of dirty data is read and encoded in ~0.05 s, 64 MiB in ~0.3 s).
            let first = (part_bytes / 16).max(1);
            let r = view.scan_final_parts(image, first, part_bytes, |d, end| {
                let t = Instant::now();
                if stop.load(Ordering::Relaxed) {
                    return Err(ProduceError::Job(MigrateError::Cancelled));
                }
                let path = cfg
                    .scratch
                    .join(format!("patch-{}-{round}-{index}", cfg.job_id));
                levels.push(level);
                // For the zstd stage the plain patch stays in memory (it never touches the
                // disk); otherwise it is the part's file.
                let (built, plain) = match stream_zstd {
                    Some(_) => {
                        let mut v = Vec::new();
                        let b = build_patch(cfg, Policy::Datacenter, &mut v, round, &d)
                            .map_err(ProduceError::Job)?;
                        (b, Some(v))
                    }
                    None => {
                        let b = write_patch(cfg, cfg.policy, &path, round, &d)
                            .map_err(ProduceError::Job)?;
                        (b, None)
                    }
                };
                encode += t.elapsed();
                blocks.extend_from_slice(&d.blocks);
                if keep_bytes {
                    bytes.extend_from_slice(&d.new_compact);
                }
                drop(d);
                let tb = Instant::now();
                let sent = tx.send(Part {
                    index,
                    path,
                    built,
                    end,
                    plain,
                });
                blocked += tb.elapsed();
                in_emit += t.elapsed();
                index += 1;
                // The mover stopped (failed or cancelled): its error is the job's, and the
                // part it will not take is deleted here.
                sent.map_err(|e| {
                    let _ = std::fs::remove_file(&e.0.path);
                    ProduceError::Job(MigrateError::Cancelled)
                })
            });
            let (len, hash) = r.map_err(|e| match e {
                ProduceError::Io(source) => MigrateError::Io {
                    what: "reading the image",
                    path: image.to_path_buf(),
                    source,
                },
                ProduceError::Job(e) => e,
            })?;
            let t = Instant::now();
            let cached = update_cache(hash, len, &blocks, &bytes, !view.base_mismatch());
            let cache_update = (cached, t.elapsed());
            Ok(Produced {
                cache_update,
                hash,
                image_len: len,
                scan: t0.elapsed().saturating_sub(in_emit),
                encode,
                blocked,
                levels,
            })
        });
        // The zstd stage between the encoder and the mover, on a thread of its own.
        let (rx, zstage) = match stream_zstd {
            None => (rx, None),
            Some(level) => {
                let (ztx, zrx) = std::sync::mpsc::sync_channel::<Part>(1);
                let h = s.spawn(move || compress_parts(level, rx, ztx));
                (zrx, Some(h))
            }
        };
        let ctx = PartsCtx {
            round,
            obj_base,
            image_len,
            t_round,
            start,
            stream_zstd: stream_zstd.is_some(),
        };
        let consumed = if cfg.part_stream && mover.streams() {
            move_stream(conn, mover, hooks, cancel, rx, ctx, prog, &mut pl, &mut rep)
        } else {
            move_parts(conn, mover, hooks, cancel, rx, ctx, prog, &mut pl, &mut rep)
        };
        if consumed.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let zstaged = zstage.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(MigrateError::Unexpected("zstd stage panicked".into())))
        });
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(MigrateError::Unexpected("image reader panicked".into())));
        (consumed, produced, zstaged)
    });
    // A failed zstd stage is the cause when it failed (the stream then ended early); else a
    // failed move (the reader then saw the mover gone).
    if let Some(z) = zstaged {
        add_secs(phases, "stream_zstd", z?);
    }
    let mut applied = consumed?;
    let produced = produced?;
    // Every part moved; the destination may still be applying the last ones.
    let t = Instant::now();
    prog.phase = Phase::Applying;
    prog.eta = None;
    hooks.progress(prog);
    while rep.parts > applied {
        match wait_for(conn, cancel, |m| matches!(m, Msg::Applied { .. }))? {
            Msg::Applied { round: r, .. } if r == round => applied += 1,
            m => return Err(MigrateError::Unexpected(format!("{m:?}"))),
        }
    }
    // (A stream waits for its parts' `Applied` itself: a destination may still ask for a
    // resumed stream then.)
    pl.apply_tail += t.elapsed();
    add_secs(phases, "read_scan", produced.scan);
    add_secs(phases, "encode", produced.encode);
    add_secs(phases, "move", rep.moved);
    add_secs(phases, "part_wait", pl.first_part + pl.waited_for_parts);
    add_secs(phases, "apply_wait", pl.apply_tail);
    rep.scan = produced.scan + produced.encode;
    rep.encode = produced.encode;
    rep.moved = t_round.elapsed().saturating_sub(pl.first_part);
    pl.encoder_blocked = produced.blocked;
    pl.zstd_levels.clone_from(&produced.levels);
    pl.parts = rep.parts;
    tracing::info!(
        round,
        parts = rep.parts,
        data = rep.data_bytes,
        patch = rep.patch_bytes,
        wire = rep.wire_bytes,
        "pipelined round applied"
    );
    Ok((rep, produced, pl))
}

/// The zstd stage of a pipelined round whose parts are one zstd stream: compresses each
/// part the encoder hands over into the stream's next stretch (its own file) and hands that
/// on; returns its working time. The mover gone (failed or cancelled) ends it quietly: the
/// mover's error is the job's.
fn compress_parts(
    level: i32,
    rx: std::sync::mpsc::Receiver<Part>,
    tx: std::sync::mpsc::SyncSender<Part>,
) -> Result<Duration, MigrateError> {
    let mut busy = Duration::ZERO;
    let mut z = crate::partzstd::PartCompressor::new(level).map_err(|source| MigrateError::Io {
        what: "starting zstd for",
        path: PathBuf::from("the round's stream"),
        source,
    })?;
    for mut part in rx {
        let t = Instant::now();
        let plain = part.plain.take().unwrap_or_default();
        let packed = z.part(&plain, &part.path).map_err(|source| {
            let _ = std::fs::remove_file(&part.path);
            MigrateError::Io {
                what: "compressing into",
                path: part.path.clone(),
                source,
            }
        })?;
        drop(plain);
        part.built.zstd_in += part.built.patch_bytes;
        part.built.zstd_out += packed;
        part.built.patch_bytes = packed;
        busy += t.elapsed();
        if let Err(e) = tx.send(part) {
            let _ = std::fs::remove_file(&e.0.path);
            break;
        }
    }
    Ok(busy)
}

/// Fixed inputs of [`move_parts`].
struct PartsCtx {
    round: u32,
    obj_base: u64,
    image_len: u64,
    t_round: Instant,
    start: Instant,
    /// The parts are one zstd stream ([`crate::partzstd`]).
    stream_zstd: bool,
}

/// The mover's side of [`pipelined_final_round`]: announces and moves each part as the
/// encoder hands it over; counts the destination's `Applied` messages that arrive
/// meanwhile and returns their number.
#[allow(clippy::too_many_arguments)]
fn move_parts(
    conn: &mut Conn,
    mover: &mut dyn Mover,
    hooks: &mut dyn SourceHooks,
    cancel: &AtomicBool,
    rx: std::sync::mpsc::Receiver<Part>,
    ctx: PartsCtx,
    prog: &mut Progress,
    pl: &mut PipelineReport,
    rep: &mut RoundReport,
) -> Result<u32, MigrateError> {
    let PartsCtx {
        round,
        obj_base,
        image_len,
        t_round,
        start,
        stream_zstd: _,
    } = ctx;
    let mut applied = 0u32;
    let mut count = |m: &Msg| count_applied(m, round, &mut applied);
    let mut acked_before = 0u64;
    loop {
        let tw = Instant::now();
        let part = loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(MigrateError::Cancelled);
            }
            match rx.recv_timeout(POLL) {
                Ok(p) => break Some(p),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            }
        };
        let Some(part) = part else { break };
        if part.index == 0 {
            pl.first_part = t_round.elapsed();
        } else {
            pl.waited_for_parts += tw.elapsed();
        }
        let built = &part.built;
        let object_id = obj_base | (u64::from(part.index.min(0xfe)) << 8) | u64::from(round & 0xff);
        if part.index >= 0xfe {
            return Err(MigrateError::Unexpected("more than 254 parts".into()));
        }
        prog.round_data_bytes += built.data_bytes;
        prog.round_patch_bytes += built.patch_bytes;
        conn.send(&Msg::Round {
            round,
            part: part.index,
            object_id,
            patch_len: built.patch_bytes,
            blocks: built.blocks,
            data_bytes: built.data_bytes,
            last: true,
        })?;
        loop {
            let m = wait_for(conn, cancel, |m| {
                matches!(m, Msg::Ready { .. } | Msg::Applied { .. })
            })?;
            match m {
                Msg::Ready { round: r, part: p } if r == round && p == part.index => break,
                m => count(&m)?,
            }
        }
        let t_move = Instant::now();
        prog.phase = Phase::Sending;
        hooks.progress(prog);
        let wire_before = prog.wire_bytes;
        let data_before = prog.data_bytes_done;
        let mut last_tick = Instant::now();
        // The round's patch bytes so far, extrapolated over the image not read yet.
        let est_total = (prog.round_patch_bytes as f64 * image_len as f64 / part.end.max(1) as f64)
            .max(prog.round_patch_bytes as f64);
        // A part whose transfer failed (e.g. no HELLO_ACK: the destination's receiver keeps
        // listening for the object) is sent again, at most twice.
        let mut attempt = 0u32;
        let moved = loop {
            attempt += 1;
            let (moved, early, absorbed) = watch_absorbing(
                conn,
                cancel,
                &|m| matches!(m, Msg::Applied { .. }),
                &|_| false,
                None,
                |c| {
                    mover.send(&part.path, object_id, c, &mut |mp: &MoveProgress| {
                        if last_tick.elapsed() < Duration::from_millis(100) {
                            return;
                        }
                        last_tick = Instant::now();
                        let obj_rate =
                            move_progress(prog, mp, t_move, wire_before, data_before, built);
                        let left = est_total - (acked_before + mp.object_bytes) as f64;
                        prog.eta = (obj_rate > 0.0)
                            .then(|| Duration::from_secs_f64(left.max(0.0) / obj_rate));
                        prog.elapsed = start.elapsed();
                        hooks.progress(prog);
                    })
                },
            )?;
            for m in &absorbed {
                count(m)?;
            }
            no_early(early)?;
            match moved {
                Err(MoveError::Failed { what, source }) if attempt < 3 => {
                    tracing::warn!(
                        round,
                        part = part.index,
                        attempt,
                        error = %what,
                        cause = %source,
                        "part move failed; sending it again"
                    );
                }
                moved => {
                    break moved.map_err(|e| {
                        MigrateError::mv(&format!("part {} of round {round}", part.index), e)
                    })?;
                }
            }
        };
        let _ = std::fs::remove_file(&part.path);
        acked_before += built.patch_bytes;
        prog.wire_bytes = wire_before + moved.wire_bytes;
        prog.data_bytes_done = data_before + built.data_bytes;
        add_part(rep, built);
        rep.wire_bytes += moved.wire_bytes;
        rep.moved += t_move.elapsed();
        tracing::info!(
            round,
            part = part.index,
            patch = built.patch_bytes,
            wire = moved.wire_bytes,
            secs = t_move.elapsed().as_secs_f64(),
            detail = %moved.detail,
            "part moved"
        );
    }
    Ok(applied)
}

/// Counts an `Applied` of `round` that arrived during a part's move or stream; anything
/// else is unexpected there.
fn count_applied(m: &Msg, round: u32, applied: &mut u32) -> Result<(), MigrateError> {
    match m {
        Msg::Applied { round: r, .. } if *r == round => {
            *applied += 1;
            Ok(())
        }
        m => Err(MigrateError::Unexpected(format!("{m:?}"))),
    }
}

/// Adds a part's patch to its round's report.
fn add_part(rep: &mut RoundReport, b: &patch::BuildStats) {
    rep.parts += 1;
    rep.blocks += b.blocks;
    rep.data_bytes += b.data_bytes;
    rep.patch_bytes += b.patch_bytes;
    rep.hde.merge(&b.hde);
    rep.zstd_in_out.0 += b.zstd_in;
    rep.zstd_in_out.1 += b.zstd_out;
}

/// Streams of one round at most: the first and two resumptions.
const STREAM_ATTEMPTS: u32 = 3;

/// [`move_parts`] for a mover that carries streams: the whole round is one stream
/// ([`crate::partstream`]), so it pays one transport start-up and one tail. The parts
/// enter the stream as the encoder hands them over; `Applied` messages are counted as they
/// arrive, and each applied part's file is deleted then. A stream that fails is resumed
/// from the first part the destination does not hold whole (`StreamLost`/`Resume`), at most
/// [`STREAM_ATTEMPTS`] streams per round.
#[allow(clippy::too_many_arguments)]
fn move_stream(
    conn: &mut Conn,
    mover: &mut dyn Mover,
    hooks: &mut dyn SourceHooks,
    cancel: &AtomicBool,
    rx: std::sync::mpsc::Receiver<Part>,
    ctx: PartsCtx,
    prog: &mut Progress,
    pl: &mut PipelineReport,
    rep: &mut RoundReport,
) -> Result<u32, MigrateError> {
    let PartsCtx {
        round,
        obj_base,
        image_len,
        t_round,
        start,
        stream_zstd,
        ..
    } = ctx;
    let mut applied = 0u32;
    let feed = crate::partstream::PartFeed::new(rx);
    // Applied parts are let go of at once (their files deleted), counted after the move.
    let absorb = |m: &Msg| match m {
        Msg::Applied { round: r, part } => {
            if *r == round {
                feed.applied(*part);
            }
            true
        }
        _ => false,
    };
    let on_msg = |m: &Msg, applied: &mut u32| {
        absorb(m);
        count_applied(m, round, applied)
    };
    // Stream bytes of each part (header included): where a resumed stream's bytes start.
    let mut sizes: Vec<u64> = Vec::new();
    // Parts taken from the encoder: accounted here, on the calling thread, once each.
    let take = |part: Part,
                prog: &mut Progress,
                pl: &mut PipelineReport,
                rep: &mut RoundReport,
                sizes: &mut Vec<u64>| {
        let b = &part.built;
        if part.index == 0 {
            pl.first_part = t_round.elapsed();
        }
        let bytes = b.patch_bytes + crate::partstream::HEADER_LEN as u64;
        sizes.push(bytes);
        prog.round_data_bytes += b.data_bytes;
        prog.round_patch_bytes += bytes;
        add_part(rep, b);
        part.end
    };
    let wire_start = prog.wire_bytes;
    let data_before = prog.data_bytes_done;
    let mut t_move = Instant::now();
    let mut end = 0u64;
    let mut from = 0u32;
    let mut attempt = 0u32;
    let moved = loop {
        // Part object ids use bits 8..16 below 0xfe: the streams count down from 0xff.
        let stream_id = obj_base | (u64::from(0xff - attempt) << 8) | u64::from(round & 0xff);
        conn.send(&Msg::Stream {
            round,
            stream_id,
            attempt,
            first_part: from,
            zstd: stream_zstd,
        })?;
        loop {
            match wait_for(conn, cancel, |m| {
                matches!(m, Msg::Ready { .. } | Msg::Applied { .. })
            })? {
                Msg::Ready { round: r, part } if r == round && part == STREAM_PART => break,
                m => on_msg(&m, &mut applied)?,
            }
        }
        if attempt == 0 {
            t_move = Instant::now();
            pl.stream = true;
            prog.phase = Phase::Sending;
            hooks.progress(prog);
        }
        let reader = feed.reader(from);
        // What earlier streams of this round moved: their parts' bytes before `from`, and
        // their wire bytes as of their last progress tick.
        let base = sizes.iter().take(from as usize).sum::<u64>();
        let wire_before = prog.wire_bytes - wire_start;
        let mut last_tick = Instant::now();
        let resume_of_this = |m: &Msg| matches!(m, Msg::Resume { round: r, attempt: a, .. } if *r == round && *a == attempt);
        let (moved, early, absorbed) =
            watch_absorbing(conn, cancel, &absorb, &resume_of_this, None, |c| {
                mover.send_stream(Box::new(reader), stream_id, c, &mut |mp: &MoveProgress| {
                    for part in feed.take_new() {
                        end = take(part, prog, pl, rep, &mut sizes);
                    }
                    if last_tick.elapsed() < Duration::from_millis(100) {
                        return;
                    }
                    last_tick = Instant::now();
                    let so_far = patch::BuildStats {
                        patch_bytes: prog.round_patch_bytes,
                        data_bytes: prog.round_data_bytes,
                        ..patch::BuildStats::default()
                    };
                    let mp = MoveProgress {
                        object_bytes: base + mp.object_bytes,
                        wire_bytes: wire_before + mp.wire_bytes,
                    };
                    let rate = move_progress(prog, &mp, t_move, wire_start, data_before, &so_far);
                    // The round's patch bytes so far, extrapolated over the image not read yet.
                    let est = (prog.round_patch_bytes as f64 * image_len as f64
                        / end.max(1) as f64)
                        .max(prog.round_patch_bytes as f64);
                    let left = est - mp.object_bytes as f64;
                    prog.eta = (rate > 0.0).then(|| Duration::from_secs_f64(left.max(0.0) / rate));
                    prog.elapsed = start.elapsed();
                    hooks.progress(prog);
                })
            })?;
        for part in feed.take_new() {
            take(part, prog, pl, rep, &mut sizes);
        }
        for m in &absorbed {
            count_applied(m, round, &mut applied)?;
        }
        let mut failed = None;
        let resume_at = match moved {
            // The transport delivered everything, but the destination may still fail to
            // write it: the round is moved once every part is applied, or resumed if the
            // destination asks to.
            Ok(moved) => {
                let sent = MoveReport {
                    wire_bytes: wire_before + moved.wire_bytes,
                    ..moved
                };
                prog.wire_bytes = wire_start + sent.wire_bytes;
                rep.moved = t_move.elapsed();
                let t = Instant::now();
                prog.phase = Phase::Applying;
                prog.eta = None;
                hooks.progress(prog);
                let resume_at = match early {
                    Some(Msg::Resume { part, .. }) => Some(part),
                    early => {
                        no_early(early)?;
                        let parts = sizes.len() as u32;
                        let mut resume_at = None;
                        while applied < parts {
                            match wait_for(conn, cancel, |m| {
                                resume_of_this(m) || matches!(m, Msg::Applied { .. })
                            })? {
                                Msg::Resume { part, .. } => {
                                    resume_at = Some(part);
                                    break;
                                }
                                m => on_msg(&m, &mut applied)?,
                            }
                        }
                        resume_at
                    }
                };
                pl.apply_tail = t.elapsed();
                match resume_at {
                    None => break sent,
                    Some(part) => part,
                }
            }
            Err(e) => {
                let part = match early {
                    Some(Msg::Resume { part, .. })
                        if !cancel.load(Ordering::Relaxed) && attempt + 1 < STREAM_ATTEMPTS =>
                    {
                        part
                    }
                    early
                        if matches!(e, MoveError::Failed { .. })
                            && early.is_none()
                            && !cancel.load(Ordering::Relaxed)
                            && attempt + 1 < STREAM_ATTEMPTS =>
                    {
                        // Where to go on: the destination says.
                        conn.send(&Msg::StreamLost { round, attempt })?;
                        loop {
                            match wait_for(conn, cancel, |m| {
                                resume_of_this(m) || matches!(m, Msg::Applied { .. })
                            })? {
                                Msg::Resume { part, .. } => break part,
                                m => on_msg(&m, &mut applied)?,
                            }
                        }
                    }
                    _ => return Err(MigrateError::mv(&format!("the stream of round {round}"), e)),
                };
                failed = Some(e);
                part
            }
        };
        if attempt + 1 >= STREAM_ATTEMPTS {
            return Err(MigrateError::Unexpected(format!(
                "the destination lost the stream of round {round} {STREAM_ATTEMPTS} times"
            )));
        }
        let cause = failed.as_ref().map_or_else(
            || "the destination could not take it".to_string(),
            |e| dwcp_transfer::error_chain(e),
        );
        tracing::warn!(
            round,
            attempt,
            from_part = resume_at,
            cause,
            "the round's stream failed; resuming it"
        );
        pl.stream_resumes += 1;
        prog.phase = Phase::Sending;
        from = resume_at;
        attempt += 1;
    };
    prog.data_bytes_done = data_before + rep.data_bytes;
    rep.wire_bytes += moved.wire_bytes;
    tracing::info!(
        round,
        parts = rep.parts,
        patch = rep.patch_bytes,
        wire = moved.wire_bytes,
        resumed = attempt,
        secs = rep.moved.as_secs_f64(),
        detail = %moved.detail,
        "round stream moved"
    );
    Ok(applied)
}

/// Updates `prog` from a move's progress (wire bytes, wire rate, and the round's data bytes in
/// proportion to the patch bytes moved) and returns the patch bytes per second so far.
fn move_progress(
    prog: &mut Progress,
    mp: &MoveProgress,
    since: Instant,
    wire_before: u64,
    data_before: u64,
    built: &patch::BuildStats,
) -> f64 {
    let secs = since.elapsed().as_secs_f64().max(1e-3);
    prog.wire_bytes = wire_before + mp.wire_bytes;
    prog.rate_bps = (mp.wire_bytes as f64 / secs) as u64;
    let frac = if built.patch_bytes == 0 {
        1.0
    } else {
        (mp.object_bytes as f64 / built.patch_bytes as f64).min(1.0)
    };
    prog.data_bytes_done = data_before + (frac * built.data_bytes as f64) as u64;
    mp.object_bytes as f64 / secs
}

/// Destination settings.
#[derive(Debug, Clone)]
pub struct DestConfig {
    /// The image to replace (need not exist).
    pub image: PathBuf,
    /// Scratch directory for received patches and manifests.
    pub scratch: PathBuf,
}

/// What the destination reports.
#[derive(Debug, Clone, Default)]
pub struct DestReport {
    /// Job id.
    pub job_id: u64,
    /// Rounds applied.
    pub rounds: u32,
    /// Image bytes written by patches.
    pub data_bytes: u64,
    /// Patch bytes received.
    pub patch_bytes: u64,
    /// Final image length.
    pub image_len: u64,
    /// Its verified XXH3-128.
    pub hash: u128,
    /// Wall time.
    pub elapsed: Duration,
    /// Wall time per phase, in order.
    pub phases: Phases,
}

/// Runs the destination side of one job on an accepted control connection.
pub fn run_dest(
    cfg: &DestConfig,
    ctl: TcpStream,
    mover: &mut dyn Mover,
    cancel: &AtomicBool,
) -> Result<DestReport, MigrateError> {
    let mut conn = Conn::new(ctl, POLL).map_err(WireError::from)?;
    let res = dest_inner(cfg, &mut conn, mover, cancel);
    if let Err(e) = &res
        && !matches!(
            e,
            MigrateError::Aborted(_) | MigrateError::Wire(WireError::Closed)
        )
    {
        let _ = conn.send(&Msg::Failed {
            reason: dwcp_transfer::error_chain(e),
        });
    }
    res
}

fn dest_inner(
    cfg: &DestConfig,
    conn: &mut Conn,
    mover: &mut dyn Mover,
    cancel: &AtomicBool,
) -> Result<DestReport, MigrateError> {
    let start = Instant::now();
    // What to do about each message and each move's end is decided by the round core; this
    // driver performs it (files, threads, the mover, the control connection).
    let mut core = DestRound::new();
    let mut job_id = 0;
    let mut phases: Phases = Vec::new();
    let mut held = None;
    let mut target: Option<Target> = None;
    let mut applier: Option<Applier> = None;
    let mut rep = DestReport::default();
    // The current round's stream gate (what its receive hands to the applier), once one began.
    let mut gate: Option<Arc<Mutex<StreamGate>>> = None;
    let held_parts = |g: &Option<Arc<Mutex<StreamGate>>>| {
        g.as_ref()
            .map_or(0, |g| g.lock().unwrap_or_else(|p| p.into_inner()).held)
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MigrateError::Cancelled);
        }
        if applier.as_ref().is_some_and(Applier::failed) {
            if let Some(a) = applier.take() {
                a.finish()?;
            }
            return Err(MigrateError::Unexpected("the applier stopped".into()));
        }
        let m = match core.take_queued() {
            Some(m) => m,
            None => match conn.poll()? {
                Some(m) => m,
                None => continue,
            },
        };
        let mut step = core.on_msg(m, held_parts(&gate))?;
        // A move's end may lead to one more step (apply the part, ask for a resume).
        loop {
            step = match step {
                DestStep::Wait => break,
                DestStep::RefuseVersion(version) => {
                    let _ = conn.send(&Msg::HelloAck {
                        version: crate::PROTOCOL_VERSION,
                        held_len: None,
                        held_hash: None,
                    });
                    return Err(MigrateError::Version(version));
                }
                DestStep::Open {
                    job_id: id,
                    block_size,
                } => {
                    job_id = id;
                    rep.job_id = id;
                    let bs = block_size as usize;
                    std::fs::create_dir_all(&cfg.scratch).map_err(|source| MigrateError::Io {
                        what: "creating",
                        path: cfg.scratch.clone(),
                        source,
                    })?;
                    let t = Instant::now();
                    crate::store::recover(&cfg.image)?;
                    held = crate::store::held(&cfg.image, bs)?;
                    target = Some(Target::begin(&cfg.image, bs)?);
                    add_phase(
                        &mut phases,
                        if held.as_ref().is_some_and(|h| h.from_sidecar) {
                            "hello_sidecar"
                        } else {
                            "hello_hash"
                        },
                        t,
                    );
                    conn.send(&Msg::HelloAck {
                        version: crate::PROTOCOL_VERSION,
                        held_len: held.as_ref().map(|h| h.len),
                        held_hash: held.as_ref().map(|h| format!("{:032x}", h.hash)),
                    })?;
                    DestStep::Wait
                }
                DestStep::SendManifest { object_id } => {
                    let t = Instant::now();
                    let m = held.as_ref().map(|h| &h.manifest[..]).unwrap_or(&[]);
                    let path = cfg.scratch.join(format!("manifest-{job_id}"));
                    std::fs::write(&path, manifest_bytes(m)).map_err(|source| {
                        MigrateError::Io {
                            what: "writing",
                            path: path.clone(),
                            source,
                        }
                    })?;
                    let r = watch(conn, cancel, |c| {
                        mover.send(&path, object_id, c, &mut |_| {})
                    });
                    let _ = std::fs::remove_file(&path);
                    let (r, early) = r?;
                    let next = core.move_ended(
                        early,
                        r.map(|_| ())
                            .map_err(|e| MigrateError::mv("the manifest", e)),
                    )?;
                    add_phase(&mut phases, "manifest", t);
                    next
                }
                DestStep::ReceivePart {
                    round,
                    part,
                    object_id,
                } => {
                    let t = Instant::now();
                    let path = cfg.scratch.join(format!("patch-{job_id}-{round}-{part}"));
                    let mut writer = conn.writer().map_err(WireError::from)?;
                    let mut sent = Ok(());
                    // Any message during the receive ends its linger: the source sends the
                    // next one only once this move verified.
                    let next = AtomicBool::new(false);
                    let r =
                        watch_absorbing(conn, cancel, &|_| false, &|_| false, Some(&next), |c| {
                            mover.recv_until_next(&path, object_id, c, &next, &mut || {
                                sent = send_on(&mut writer, &Msg::Ready { round, part });
                            })
                        });
                    let (r, early, _) = r?;
                    sent?;
                    let r = r.map(|r| {
                        rep.patch_bytes += r.object_len;
                    });
                    let step = core.move_ended(
                        early,
                        r.map_err(|e| {
                            MigrateError::mv(
                                &format!("part {part} of the patch of round {round}"),
                                e,
                            )
                        }),
                    )?;
                    add_phase(&mut phases, "receive", t);
                    rep.rounds = core.rounds();
                    if step == (DestStep::ApplyPart { round, part }) {
                        // Decoded and written on the applier thread while the next part
                        // arrives.
                        applier_for(&mut applier, &mut target, conn)?.push(ApplyJob {
                            round,
                            part,
                            path,
                            final_upto: None,
                            zstd: false,
                        })?;
                        DestStep::Wait
                    } else {
                        step
                    }
                }
                DestStep::ApplyPart { .. } => DestStep::Wait,
                DestStep::ReceiveStream {
                    round,
                    stream_id,
                    attempt,
                    first_part,
                    zstd,
                } => {
                    let t = Instant::now();
                    if attempt == 0 {
                        gate = Some(Arc::new(Mutex::new(StreamGate::default())));
                    }
                    let g = gate
                        .clone()
                        .ok_or_else(|| MigrateError::Unexpected("no stream gate".into()))?;
                    g.lock().unwrap_or_else(|p| p.into_inner()).open = true;
                    let jobs = applier_for(&mut applier, &mut target, conn)?.jobs.clone();
                    let scratch = cfg.scratch.clone();
                    let out_gate = g.clone();
                    // Each part is decoded and written on the applier thread as soon as its
                    // last byte is in, while the next ones arrive.
                    let out = crate::partstream::PartWriter::new(
                        Box::new(move |part| {
                            scratch.join(format!("patch-{job_id}-{round}-{part}"))
                        }),
                        Box::new(move |r: crate::partstream::Received| {
                            // Under the gate: once the receive ended, a transport thread
                            // still finishing its writes hands over nothing more (a resumed
                            // stream sends those parts again).
                            let mut g = out_gate.lock().unwrap_or_else(|p| p.into_inner());
                            if !g.open {
                                return Err(std::io::Error::other("the stream was given up"));
                            }
                            jobs.send(ApplyJob {
                                round,
                                part: r.part,
                                path: r.path,
                                final_upto: Some(r.end),
                                zstd,
                            })
                            .map_err(|_| std::io::Error::other("the applier stopped"))?;
                            g.held = r.part + 1;
                            Ok(())
                        }),
                    )
                    .from_part(first_part);
                    let mut writer = conn.writer().map_err(WireError::from)?;
                    let mut sent = Ok(());
                    let next = AtomicBool::new(false);
                    let lost = |m: &Msg| core.early(m) == Early::Lost;
                    let r = watch_absorbing(conn, cancel, &|_| false, &lost, Some(&next), |c| {
                        mover.recv_stream(Box::new(out), stream_id, c, &next, &mut || {
                            sent = send_on(
                                &mut writer,
                                &Msg::Ready {
                                    round,
                                    part: STREAM_PART,
                                },
                            );
                        })
                    });
                    g.lock().unwrap_or_else(|p| p.into_inner()).open = false;
                    let (r, early, _) = r?;
                    sent?;
                    let r = match r {
                        Ok(r) => {
                            rep.patch_bytes += r.object_len;
                            Ok(())
                        }
                        Err(e) => {
                            tracing::warn!(round, attempt, error = %dwcp_transfer::error_chain(&e), "round stream receive failed");
                            Err(MigrateError::mv("the round's stream", e))
                        }
                    };
                    let step = core.move_ended(early, r)?;
                    if step == DestStep::Wait {
                        add_phase(&mut phases, "receive", t);
                        rep.rounds = core.rounds();
                    }
                    step
                }
                DestStep::AskResume { round, attempt } => {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(MigrateError::Cancelled);
                    }
                    if applier.as_ref().is_some_and(Applier::failed) {
                        // Not resumable: the loop's check returns the applier's error.
                        break;
                    }
                    let part = held_parts(&gate);
                    tracing::warn!(
                        round,
                        attempt,
                        part,
                        "asking for the round's stream from part {part} on"
                    );
                    conn.send(&Msg::Resume {
                        round,
                        attempt,
                        part,
                    })?;
                    DestStep::Wait
                }
                DestStep::Commit { len, hash } => {
                    let mut target = target.take();
                    if let Some(a) = applier.take() {
                        let t = Instant::now();
                        let out = a.finish()?;
                        add_phase(&mut phases, "apply_tail", t);
                        for (k, v) in out.phases {
                            add_secs(&mut phases, &k, Duration::from_secs_f64(v));
                        }
                        rep.data_bytes += out.data_bytes;
                        target = Some(out.target);
                    }
                    let target = target
                        .ok_or_else(|| MigrateError::Unexpected("no target at commit".into()))?;
                    let got_len = target.commit(len, hash, &mut phases)?;
                    if got_len != len {
                        return Err(MigrateError::Unexpected(format!(
                            "committed {got_len} bytes, source said {len}"
                        )));
                    }
                    conn.send(&Msg::Committed {
                        len,
                        phases: phases.clone(),
                    })?;
                    rep.image_len = len;
                    rep.hash = hash;
                    rep.elapsed = start.elapsed();
                    rep.phases = phases;
                    return Ok(rep);
                }
            };
        }
    }
}

/// The job's applier, started on the first part with the job's target.
fn applier_for<'a>(
    applier: &'a mut Option<Applier>,
    target: &mut Option<Target>,
    conn: &Conn,
) -> Result<&'a Applier, MigrateError> {
    if applier.is_none() {
        let t = target
            .take()
            .ok_or_else(|| MigrateError::Unexpected("no target for the round".into()))?;
        *applier = Some(Applier::spawn(t, conn.writer().map_err(WireError::from)?));
    }
    applier
        .as_ref()
        .ok_or_else(|| MigrateError::Unexpected("no applier".into()))
}

#[derive(Debug, Default)]
struct StreamGate {
    /// The current stream's receive runs: its complete parts go to the applier.
    open: bool,
    /// Parts handed to the applier: where a resumed stream starts.
    held: u32,
}

/// What the destination's applier thread hands back at commit.
struct ApplyOut {
    target: Target,
    phases: Phases,
    data_bytes: u64,
}

/// The destination's applier: a thread that decodes received patches (parts) in order and
/// writes them to the job's target (journal or working copy), answering `Applied` for each,
/// so a part is applied while the next one arrives. On a failure it tells the source
/// (`Failed`) and stops; [`Applier::finish`] returns the error.
struct Applier {
    jobs: std::sync::mpsc::Sender<ApplyJob>,
    handle: Option<std::thread::JoinHandle<Result<ApplyOut, MigrateError>>>,
}

impl Applier {
    fn spawn(mut target: Target, mut writer: TcpStream) -> Self {
        let (jobs, rx) = std::sync::mpsc::channel::<ApplyJob>();
        let handle = std::thread::spawn(move || {
            let mut phases: Phases = Vec::new();
            let mut data_bytes = 0u64;
            // The round's zstd stream decoder, once a part needs it.
            let mut unzstd = None;
            for job in rx {
                let r = apply_part(&mut target, &mut phases, &job, &mut unzstd);
                let (round, part) = (job.round, job.part);
                drop(job); // its file goes
                match r {
                    Ok(n) => {
                        data_bytes += n;
                        if part > 0 {
                            crate::store::failpoint("mid-round");
                        }
                        send_on(&mut writer, &Msg::Applied { round, part })?;
                    }
                    Err(e) => {
                        let _ = send_on(
                            &mut writer,
                            &Msg::Failed {
                                reason: dwcp_transfer::error_chain(&e),
                            },
                        );
                        return Err(e);
                    }
                }
            }
            Ok(ApplyOut {
                target,
                phases,
                data_bytes,
            })
        });
        Applier {
            jobs,
            handle: Some(handle),
        }
    }

    fn push(&self, job: ApplyJob) -> Result<(), MigrateError> {
        self.jobs
            .send(job)
            .map_err(|_| MigrateError::Unexpected("the applier stopped".into()))
    }

    fn failed(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    fn finish(mut self) -> Result<ApplyOut, MigrateError> {
        self.close_and_join()
            .unwrap_or_else(|| Err(MigrateError::Unexpected("applier gone".into())))
    }

    /// Closes the job channel and waits for the thread (which then drops the target).
    fn close_and_join(&mut self) -> Option<Result<ApplyOut, MigrateError>> {
        drop(std::mem::replace(
            &mut self.jobs,
            std::sync::mpsc::channel().0,
        ));
        self.handle.take().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(MigrateError::Unexpected("applier panicked".into())))
        })
    }
}

impl Drop for Applier {
    /// On a failed or cancelled job: the target's cleanup (dropping the uncommitted journal
    /// or working copy) is done before the job returns, not behind its back.
    fn drop(&mut self) {
        let _ = self.close_and_join();
    }
}

/// A received part for the applier. It owns its file: dropping the job (applied, or never
/// applied because the applier stopped with parts still queued, or refused by a closed
/// channel) removes it, so a failed job leaves no part behind in the scratch directory.
struct ApplyJob {
    round: u32,
    part: u32,
    path: PathBuf,
    /// The image before this byte is final once the part is applied (a pipelined round's
    /// stream says so): the commit's hash may advance to it ([`Target::verify_ahead`]).
    final_upto: Option<u64>,
    /// The file is the next stretch of the round's zstd stream ([`crate::partzstd`]).
    zstd: bool,
}

impl Drop for ApplyJob {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Decodes the patch of `job` against `target` and writes it; returns the image bytes
/// written.
fn apply_part(
    target: &mut Target,
    phases: &mut Phases,
    job: &ApplyJob,
    unzstd: &mut Option<crate::partzstd::PartDecompressor>,
) -> Result<u64, MigrateError> {
    let &ApplyJob {
        round,
        part,
        ref path,
        final_upto,
        zstd,
    } = job;
    let mut t = Instant::now();
    let io = |what: &'static str| {
        move |source| MigrateError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let raw = std::fs::read(path).map_err(io("reading"))?;
    let bytes: &[u8] = if zstd {
        let d = match unzstd {
            Some(d) => d,
            None => unzstd
                .insert(crate::partzstd::PartDecompressor::new().map_err(io("starting zstd for"))?),
        };
        let plain = d.part(&raw).map_err(io("decompressing"))?;
        add_phase(phases, "stream_unzstd", t);
        t = Instant::now();
        plain
    } else {
        &raw
    };
    let d = patch::decode(bytes, &mut |off, buf| target.read_current(off, buf))
        .map_err(|source| MigrateError::Patch { round, source })?;
    add_phase(phases, "decode", t);
    let t = Instant::now();
    let runs: Vec<_> = d.runs().map(|(s, _, r)| (s, r)).collect();
    target.write_round(d.header.image_len, &runs, &d.compact)?;
    add_phase(phases, "write", t);
    let t = Instant::now();
    target.sync_data()?;
    add_phase(phases, "part_sync", t);
    if let Some(upto) = final_upto {
        let t = Instant::now();
        target.verify_ahead(upto, d.header.image_len)?;
        add_phase(phases, "verify_ahead", t);
    }
    tracing::debug!(round, part, blocks = d.header.blocks(), "part applied");
    Ok(d.compact.len() as u64)
}

/// Runs `f` (a move) while a helper thread watches the control connection: an `Abort` or
/// `Failed`, a closed connection or the caller's cancel flag cancel the move. Any other
/// message that arrives meanwhile ends the watch and is returned for the caller to handle.
fn watch<T>(
    conn: &mut Conn,
    cancel: &AtomicBool,
    f: impl FnOnce(&AtomicBool) -> T,
) -> Result<(T, Option<Msg>), MigrateError> {
    watch_absorbing(conn, cancel, &|_| false, &|_| false, None, f).map(|(t, early, _)| (t, early))
}

/// [`watch`] that keeps watching past the messages `absorb` accepts (returned in order). A
/// message `stop_on` accepts also cancels the move (it is returned as the early one).
fn watch_absorbing<T>(
    conn: &mut Conn,
    cancel: &AtomicBool,
    absorb: &(dyn Fn(&Msg) -> bool + Sync),
    stop_on: &(dyn Fn(&Msg) -> bool + Sync),
    early_flag: Option<&AtomicBool>,
    f: impl FnOnce(&AtomicBool) -> T,
) -> Result<(T, Option<Msg>, Vec<Msg>), MigrateError> {
    let stop = AtomicBool::new(false);
    let inner_cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| -> Result<(Option<Msg>, Vec<Msg>), MigrateError> {
            let fail = |e: MigrateError| {
                inner_cancel.store(true, Ordering::Relaxed);
                Err(e)
            };
            let mut absorbed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if cancel.load(Ordering::Relaxed) {
                    return fail(MigrateError::Cancelled);
                }
                match conn.poll() {
                    Ok(None) => {}
                    Ok(Some(Msg::Abort { reason })) => return fail(MigrateError::Aborted(reason)),
                    Ok(Some(Msg::Failed { reason })) => return fail(MigrateError::Remote(reason)),
                    Ok(Some(m)) if absorb(&m) => absorbed.push(m),
                    Ok(Some(m)) => {
                        // Set at once: `f` may still be running (e.g. a receiver's linger
                        // that the next part's announcement ends).
                        if let Some(flag) = early_flag {
                            flag.store(true, Ordering::Relaxed);
                        }
                        if stop_on(&m) {
                            inner_cancel.store(true, Ordering::Relaxed);
                        }
                        return Ok((Some(m), absorbed));
                    }
                    Err(e) => return fail(e.into()),
                }
            }
            Ok((None, absorbed))
        });
        let out = f(&inner_cancel);
        stop.store(true, Ordering::Relaxed);
        let w = watcher
            .join()
            .unwrap_or_else(|_| Err(MigrateError::Unexpected("watcher panicked".into())));
        w.map(|(early, absorbed)| (out, early, absorbed))
    })
}

fn no_early(early: Option<Msg>) -> Result<(), MigrateError> {
    match early {
        None => Ok(()),
        Some(m) => Err(MigrateError::Unexpected(format!("{m:?}"))),
    }
}
