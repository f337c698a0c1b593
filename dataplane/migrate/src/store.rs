//! The destination's on-disk contract: what it holds (a manifest sidecar so a job need not
//! hash the whole image at hello), where a job's rounds go, and the crash-safe switchover.
//!
//! Owns:
//! - **Sidecar** `<image>.dwcp-manifest`: the image's length, XXH3-128 and per-block XXH3-64
//!   hashes, stamped with the image's device, inode, size, mtime and ctime. It is trusted
//!   only while the stamp matches (any write, truncate, rename or `touch` changes mtime or
//!   ctime; ctime cannot be set from user space); otherwise [`held`] hashes the image (both
//!   cores: one reads, one hashes) and writes a fresh sidecar. A wrong sidecar can only make
//!   a job fail its final hash check, never corrupt an image (the check reads every byte).
//! - **Target** of one job ([`Target`]):
//!   - no image yet (*fresh*): rounds are written into `<image>.dwcp-new`; commit = fsync,
//!     hash of every byte, rename, fsync of the directory.
//!   - an image exists (*in place*, redo journal): `<image>` is not written before commit.
//!     Each round's decoded blocks are appended to `<image>.dwcp-journal.part` and indexed
//!     in memory (later rounds override earlier ones; XOR baselines read the journal or the
//!     image). Commit: hash every byte of the new image (the image with the journal laid
//!     over it) and compare with the source's hash; on a mismatch the journal is dropped and
//!     the image is untouched. Then the index and a trailer are appended, the journal is
//!     fsynced and renamed to `<image>.dwcp-journal` (**the commit point**), the directory
//!     fsynced; the blocks are written in place, the image fsynced, the sidecar written, the
//!     journal removed.
//! - **Recovery** ([`recover`], run before every job and when `dwcp migrate recv` starts): a
//!   committed journal is replayed (each block checked against its hash), the image fsynced
//!   and its whole-image hash checked against the journal's; an uncommitted `.part` and a
//!   stale `.dwcp-new` are removed. So a job killed before the commit point leaves the old
//!   image exactly; one killed after it yields the new image exactly.
//!
//! Does not: decode patches ([`crate::patch`]), or protect against a disk that loses fsynced
//! data.
//!
//! ## Journal format (little-endian)
//! ```text
//! data     the blocks' bytes, appended per round
//! index    per entry, sorted by block: block u64, data offset u64, len u32, xxh3-64 u64
//! trailer  magic "DWCPJRN1", entries u64, index offset u64, block size u64,
//!          truncate-to u64 (shortest length the image had during the job), final len u64,
//!          final XXH3-128 (16 bytes), xxh3-64 of index ‖ trailer-so-far
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use crate::image::ImageError;
use crate::patch::read_clipped;

/// Phase name and seconds, in order.
pub type Phases = Vec<(String, f64)>;

/// Adds `secs` to phase `name` (appending it if new).
pub fn add_phase(p: &mut Phases, name: &str, t: Instant) {
    let secs = t.elapsed().as_secs_f64();
    if let Some(e) = p.iter_mut().find(|e| e.0 == name) {
        e.1 += secs;
    } else {
        p.push((name.to_string(), secs));
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn suffixed(image: &Path, suffix: &str) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Sidecar path of `image`.
pub fn sidecar_path(image: &Path) -> PathBuf {
    suffixed(image, ".dwcp-manifest")
}
/// Committed journal path of `image`.
pub fn journal_path(image: &Path) -> PathBuf {
    suffixed(image, ".dwcp-journal")
}
/// Uncommitted journal path of `image`.
pub fn journal_part_path(image: &Path) -> PathBuf {
    suffixed(image, ".dwcp-journal.part")
}

fn parent(p: &Path) -> &Path {
    p.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(p: &Path) -> Result<(), ImageError> {
    let dir = parent(p);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the directory", dir))
}

/// Test hook: `DWCP_MIGRATE_FAILPOINT=NAME` aborts the process at that point (no
/// destructors run, like a kill). Points: `before-journal-commit`, `mid-apply`, `mid-round`
/// (the destination applied the second part of a pipelined round).
pub(crate) fn failpoint(name: &str) {
    if std::env::var("DWCP_MIGRATE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// What the destination holds.
#[derive(Debug, Clone)]
pub struct Held {
    /// Image length.
    pub len: u64,
    /// XXH3-128 of the image.
    pub hash: u128,
    /// Per-block XXH3-64 at the held block size.
    pub manifest: Vec<u64>,
    /// True if taken from a valid sidecar (the image was not read).
    pub from_sidecar: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec(),
        }
    }
    fn words(&self) -> [u64; 7] {
        [
            self.dev,
            self.ino,
            self.size,
            self.mtime as u64,
            self.mtime_ns as u64,
            self.ctime as u64,
            self.ctime_ns as u64,
        ]
    }
}

const SIDECAR_MAGIC: &[u8; 8] = b"DWCPMAN1";

fn write_sidecar(image: &Path, bs: usize, len: u64, hash: u128, hashes: &[u64]) {
    let res = (|| -> Result<(), ImageError> {
        let m = std::fs::metadata(image).map_err(io_err("stat", image))?;
        let mut b = Vec::with_capacity(100 + hashes.len() * 8);
        b.extend_from_slice(SIDECAR_MAGIC);
        b.extend_from_slice(&(bs as u64).to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&hash.to_le_bytes());
        for w in Stamp::of(&m).words() {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
        for h in hashes {
            b.extend_from_slice(&h.to_le_bytes());
        }
        let c = dwcp_kernels::xxh3_64(&b);
        b.extend_from_slice(&c.to_le_bytes());
        let p = sidecar_path(image);
        let tmp = suffixed(image, ".dwcp-manifest.tmp");
        std::fs::write(&tmp, &b).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &p))?;
        Ok(())
    })();
    if let Err(e) = res {
        tracing::warn!(error = %e, "could not write the manifest sidecar");
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read_sidecar(image: &Path, bs: usize) -> Option<Held> {
    let b = std::fs::read(sidecar_path(image)).ok()?;
    let m = std::fs::metadata(image).ok()?;
    if b.len() < 8 + 8 + 8 + 16 + 56 + 8 + 8 || &b[..8] != SIDECAR_MAGIC {
        return None;
    }
    let (body, check) = b.split_at(b.len() - 8);
    if dwcp_kernels::xxh3_64(body).to_le_bytes() != check {
        return None;
    }
    if u64_at(body, 8)? != bs as u64 {
        return None;
    }
    let len = u64_at(body, 16)?;
    let hash = u128::from_le_bytes(body.get(24..40)?.try_into().ok()?);
    let words: Vec<u64> = (0..7)
        .map(|i| u64_at(body, 40 + i * 8))
        .collect::<Option<_>>()?;
    if words[..] != Stamp::of(&m).words()[..] || len != m.len() {
        return None;
    }
    let n = u64_at(body, 96)? as usize;
    let hashes = body.get(104..)?;
    if hashes.len() != n * 8 || n as u64 != len.div_ceil(bs as u64) {
        return None;
    }
    let manifest = hashes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Some(Held {
        len,
        hash,
        manifest,
        from_sidecar: true,
    })
}

/// Streams an image of `len` bytes through XXH3-128 and per-block XXH3-64: `fill(offset,
/// buf)` produces the bytes on a helper thread while the caller's thread hashes.
pub fn hash_stream<F>(len: u64, bs: usize, fill: F) -> Result<(u128, Vec<u64>), ImageError>
where
    F: FnMut(u64, &mut [u8]) -> Result<(), ImageError> + Send,
{
    const CHUNK: usize = 4 << 20;
    let chunk = CHUNK / bs * bs.max(1);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut blocks = Vec::with_capacity(len.div_ceil(bs as u64) as usize);
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<u8>, ImageError>>(2);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let mut fill = fill;
        s.spawn(move || {
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(chunk as u64) as usize;
                let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0u8; chunk]);
                buf.resize(n, 0);
                let r = fill(off, &mut buf).map(|()| buf);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
                off += n as u64;
            }
        });
        for r in rx {
            let buf = r?;
            h.update(&buf);
            blocks.extend(buf.chunks(bs).map(crate::scan::block_hash));
            let _ = back_tx.send(buf);
        }
        Ok::<(), ImageError>(())
    })?;
    if blocks.len() as u64 != len.div_ceil(bs as u64) {
        return Err(ImageError::Io {
            what: "hashing (short read)",
            path: PathBuf::new(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    Ok((h.digest128(), blocks))
}

fn hash_file_blocks(path: &Path, bs: usize) -> Result<(u64, u128, Vec<u64>), ImageError> {
    let f = File::open(path).map_err(io_err("opening", path))?;
    let len = f.metadata().map_err(io_err("stat", path))?.len();
    let (hash, blocks) = hash_stream(len, bs, |off, buf| {
        read_clipped(&f, len, off, buf).map_err(io_err("reading", path))
    })?;
    Ok((len, hash, blocks))
}

/// What `image` holds (`None` if it does not exist): from its sidecar when the stamp
/// matches, else by reading it (and then a fresh sidecar is written).
pub fn held(image: &Path, bs: usize) -> Result<Option<Held>, ImageError> {
    let before = match std::fs::metadata(image) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat", image)(e)),
    };
    if let Some(h) = read_sidecar(image, bs) {
        return Ok(Some(h));
    }
    let (len, hash, manifest) = hash_file_blocks(image, bs)?;
    let after = std::fs::metadata(image).map_err(io_err("stat", image))?;
    if Stamp::of(&before) == Stamp::of(&after) {
        write_sidecar(image, bs, len, hash, &manifest);
    }
    Ok(Some(Held {
        len,
        hash,
        manifest,
        from_sidecar: false,
    }))
}

/// What [`recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing to do.
    Clean,
    /// Stale uncommitted files were removed (the image is the old one).
    Discarded,
    /// A committed journal was replayed (the image is the new one, hash checked).
    Replayed,
}

const JOURNAL_MAGIC: &[u8; 8] = b"DWCPJRN1";
const TRAILER_LEN: usize = 8 + 8 * 5 + 16 + 8;
const ENTRY_LEN: usize = 28;

#[derive(Debug, Clone, Copy)]
struct Entry {
    off: u64,
    len: u32,
    hash: u64,
}

fn bad_journal(path: &Path, what: &str) -> ImageError {
    ImageError::Io {
        what: "reading the committed journal",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    }
}

/// Brings `image` to a consistent state after a crash: replays a committed journal,
/// removes uncommitted leftovers.
pub fn recover(image: &Path) -> Result<Recovery, ImageError> {
    let mut out = Recovery::Clean;
    for stale in [
        crate::image::working_path(image),
        journal_part_path(image),
        suffixed(image, ".dwcp-manifest.tmp"),
    ] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {
                tracing::info!(path = %stale.display(), "removed an uncommitted leftover");
                out = Recovery::Discarded;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &stale)(e)),
        }
    }
    let jp = journal_path(image);
    let j = match File::open(&jp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("opening", &jp)(e)),
    };
    let jlen = j.metadata().map_err(io_err("stat", &jp))?.len();
    if jlen < TRAILER_LEN as u64 {
        return Err(bad_journal(&jp, "shorter than its trailer"));
    }
    let mut t = [0u8; TRAILER_LEN];
    j.read_exact_at(&mut t, jlen - TRAILER_LEN as u64)
        .map_err(io_err("reading", &jp))?;
    if &t[..8] != JOURNAL_MAGIC {
        return Err(bad_journal(&jp, "bad trailer magic"));
    }
    let w = |i: usize| u64_at(&t, 8 + i * 8).unwrap_or(0);
    let (n, index_off, bs, truncate_to, final_len) = (w(0), w(1), w(2), w(3), w(4));
    let hash = u128::from_le_bytes(t[48..64].try_into().unwrap_or([0; 16]));
    let check = u64_at(&t, 64).unwrap_or(0);
    let index_len = n
        .checked_mul(ENTRY_LEN as u64)
        .filter(|&l| index_off.checked_add(l) == Some(jlen - TRAILER_LEN as u64))
        .ok_or_else(|| bad_journal(&jp, "index does not fit"))?;
    let mut index = vec![0u8; index_len as usize];
    j.read_exact_at(&mut index, index_off)
        .map_err(io_err("reading", &jp))?;
    let mut hx = xxhash_rust::xxh3::Xxh3::new();
    hx.update(&index);
    hx.update(&t[..64]);
    if hx.digest() != check || !(64..=1 << 20).contains(&bs) {
        return Err(bad_journal(&jp, "index check failed"));
    }
    let img = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(image)
        .map_err(io_err("opening", image))?;
    let cur = img.metadata().map_err(io_err("stat", image))?.len();
    if truncate_to < cur {
        img.set_len(truncate_to)
            .map_err(io_err("truncating", image))?;
    }
    img.set_len(final_len).map_err(io_err("resizing", image))?;
    let mut buf = Vec::new();
    for e in index.chunks_exact(ENTRY_LEN) {
        let block = u64_at(e, 0).unwrap_or(0);
        let off = u64_at(e, 8).unwrap_or(0);
        let len = u32::from_le_bytes(e[16..20].try_into().unwrap_or([0; 4])) as usize;
        let h = u64_at(e, 20).unwrap_or(0);
        buf.resize(len, 0);
        j.read_exact_at(&mut buf, off)
            .map_err(io_err("reading", &jp))?;
        if dwcp_kernels::xxh3_64(&buf) != h {
            return Err(bad_journal(&jp, "block data check failed"));
        }
        img.write_all_at(&buf, block * bs)
            .map_err(io_err("writing", image))?;
    }
    img.sync_all().map_err(io_err("syncing", image))?;
    drop(img);
    let (len, got, blocks) = hash_file_blocks(image, bs as usize)?;
    if got != hash || len != final_len {
        return Err(ImageError::HashMismatch {
            expected: hash,
            got,
        });
    }
    write_sidecar(image, bs as usize, len, hash, &blocks);
    std::fs::remove_file(&jp).map_err(io_err("removing", &jp))?;
    sync_dir(image)?;
    tracing::info!(image = %image.display(), "replayed a committed migration journal");
    Ok(Recovery::Replayed)
}

#[derive(Debug)]
enum Mode {
    Fresh {
        file: File,
    },
    InPlace {
        old: File,
        /// Shortest length the image had (old or after any round): old bytes at or past it
        /// read as zero.
        min_len: u64,
        cur_len: u64,
        part: File,
        part_len: u64,
        overlay: BTreeMap<u64, Entry>,
    },
}

/// The destination's target of one job (see the module doc).
#[derive(Debug)]
pub struct Target {
    image: PathBuf,
    bs: usize,
    mode: Mode,
    /// The commit's hash, advanced over a final prefix while parts arrive
    /// ([`Target::verify_ahead`]).
    ahead: Option<Ahead>,
}

/// The new image's XXH3-128 and block hashes over `[0, upto)`, a prefix no later write
/// touches.
struct Ahead {
    h: xxhash_rust::xxh3::Xxh3,
    blocks: Vec<u64>,
    upto: u64,
    len: u64,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahead")
            .field("upto", &self.upto)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Starts a job on `image` (recovers first). `in_place` when the image exists.
    pub fn begin(image: &Path, bs: usize) -> Result<Self, ImageError> {
        recover(image)?;
        let mode = if image.exists() {
            let old = File::open(image).map_err(io_err("opening", image))?;
            let old_len = old.metadata().map_err(io_err("stat", image))?.len();
            let pp = journal_part_path(image);
            let part = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&pp)
                .map_err(io_err("creating", &pp))?;
            Mode::InPlace {
                old,
                min_len: old_len,
                cur_len: old_len,
                part,
                part_len: 0,
                overlay: BTreeMap::new(),
            }
        } else {
            let p = crate::image::working_path(image);
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .map_err(io_err("creating", &p))?;
            Mode::Fresh { file }
        };
        Ok(Target {
            image: image.to_path_buf(),
            bs,
            mode,
            ahead: None,
        })
    }

    /// Hashes the new image's bytes up to `upto` (of `image_len`) now, so the commit reads
    /// only the rest: the caller states that `[0, upto)` is final — a pipelined round's
    /// parts cover the image in order, and part i ends at the byte the source names. A
    /// later [`Target::write_round`] below the hashed prefix, or another length, drops
    /// what was hashed (the commit then reads everything), so a wrong claim costs time,
    /// never a false verification.
    pub fn verify_ahead(&mut self, upto: u64, image_len: u64) -> Result<(), ImageError> {
        let bs = self.bs as u64;
        let mut a = match self.ahead.take() {
            Some(a) if a.len == image_len => a,
            Some(_) => return Ok(()),
            None => Ahead {
                h: xxhash_rust::xxh3::Xxh3::new(),
                blocks: Vec::with_capacity(image_len.div_ceil(bs) as usize),
                upto: 0,
                len: image_len,
            },
        };
        let upto = if upto >= image_len {
            image_len
        } else {
            upto / bs * bs
        };
        let mut buf = vec![0u8; (4 << 20) / self.bs * self.bs];
        while a.upto < upto {
            let n = (upto - a.upto).min(buf.len() as u64) as usize;
            let b = &mut buf[..n];
            self.read_current(a.upto, b)
                .map_err(io_err("reading", &self.image))?;
            a.h.update(b);
            a.blocks
                .extend(b.chunks(self.bs).map(crate::scan::block_hash));
            a.upto += n as u64;
        }
        self.ahead = Some(a);
        Ok(())
    }
}

/// The commit's hash and block hashes of the new image (`len` bytes of blocks of `bs`, read
/// through `fill`): the rest after [`Target::verify_ahead`]'s prefix, or all of it.
fn final_hash<F>(
    ahead: Option<Ahead>,
    bs: usize,
    len: u64,
    mut fill: F,
) -> Result<(u128, Vec<u64>), ImageError>
where
    F: FnMut(u64, &mut [u8]) -> Result<(), ImageError> + Send,
{
    match ahead {
        Some(mut a) if a.len == len && a.upto > 0 => {
            let mut buf = vec![0u8; (4 << 20) / bs * bs];
            while a.upto < len {
                let n = (len - a.upto).min(buf.len() as u64) as usize;
                fill(a.upto, &mut buf[..n])?;
                a.h.update(&buf[..n]);
                a.blocks
                    .extend(buf[..n].chunks(bs).map(crate::scan::block_hash));
                a.upto += n as u64;
            }
            Ok((a.h.digest128(), a.blocks))
        }
        _ => hash_stream(len, bs, fill),
    }
}

impl Target {
    /// Syncs what the rounds wrote so far (working copy or journal data), so the commit's
    /// own sync has little left: called by the destination's applier after each part,
    /// while the next part arrives. Not a commit point: recovery ignores it.
    pub fn sync_data(&self) -> Result<(), ImageError> {
        match &self.mode {
            Mode::Fresh { file } => file
                .sync_data()
                .map_err(io_err("syncing", &crate::image::working_path(&self.image))),
            Mode::InPlace { part, .. } => part
                .sync_data()
                .map_err(io_err("syncing", &journal_part_path(&self.image))),
        }
    }

    /// True for the in-place (journal) mode.
    pub fn in_place(&self) -> bool {
        matches!(self.mode, Mode::InPlace { .. })
    }

    /// Reads the destination's current bytes (as of the last round) at `off` into `buf`
    /// (zero past the current end): the XOR baseline of the next patch.
    pub fn read_current(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.mode {
            Mode::Fresh { file } => {
                let len = file.metadata()?.len();
                read_clipped(file, len, off, buf)
            }
            Mode::InPlace {
                old,
                min_len,
                cur_len,
                part,
                overlay,
                ..
            } => fill_overlaid(
                old,
                *min_len,
                *cur_len,
                part,
                overlay,
                self.bs as u64,
                off,
                buf,
            ),
        }
    }

    /// Writes a decoded round: the image becomes `image_len` long with `blocks` (runs of
    /// `(first block, byte range in compact)`) replaced.
    pub fn write_round(
        &mut self,
        image_len: u64,
        runs: &[(u64, std::ops::Range<usize>)],
        compact: &[u8],
    ) -> Result<(), ImageError> {
        let bs = self.bs as u64;
        let part_path = journal_part_path(&self.image);
        if self
            .ahead
            .as_ref()
            .is_some_and(|a| a.len != image_len || runs.iter().any(|(s, _)| s * bs < a.upto))
        {
            tracing::warn!("a round wrote below the verified prefix: the commit hashes it all");
            self.ahead = None;
        }
        match &mut self.mode {
            Mode::Fresh { file } => {
                let p = crate::image::working_path(&self.image);
                file.set_len(image_len).map_err(io_err("resizing", &p))?;
                for (s, r) in runs {
                    file.write_all_at(&compact[r.clone()], s * bs)
                        .map_err(io_err("writing", &p))?;
                }
            }
            Mode::InPlace {
                min_len,
                cur_len,
                part,
                part_len,
                overlay,
                ..
            } => {
                // Shrinking drops (or cuts) overlay blocks past the new end.
                let first_gone = image_len.div_ceil(bs);
                overlay.split_off(&first_gone);
                if let Some((&b, e)) = overlay.iter_mut().next_back() {
                    let keep = image_len.saturating_sub(b * bs).min(bs);
                    e.len = e.len.min(keep as u32);
                }
                *min_len = (*min_len).min(image_len);
                *cur_len = image_len;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, &*part);
                for (s, r) in runs {
                    let bytes = &compact[r.clone()];
                    w.write_all(bytes).map_err(io_err("writing", &part_path))?;
                    for (k, blk) in bytes.chunks(bs as usize).enumerate() {
                        let e = Entry {
                            off: *part_len + (k as u64) * bs,
                            len: blk.len() as u32,
                            hash: dwcp_kernels::xxh3_64(blk),
                        };
                        overlay.insert(s + k as u64, e);
                    }
                    *part_len += bytes.len() as u64;
                }
                w.flush().map_err(io_err("writing", &part_path))?;
            }
        }
        Ok(())
    }

    /// Verifies the new image (`len` bytes hashing to `expected`) and switches over (see the
    /// module doc). On a hash mismatch nothing changed. Adds phase timings to `phases`.
    pub fn commit(
        mut self,
        len: u64,
        expected: u128,
        phases: &mut Phases,
    ) -> Result<u64, ImageError> {
        let bs = self.bs;
        let image = self.image.clone();
        let ahead = self.ahead.take();
        match &self.mode {
            Mode::Fresh { file } => {
                let p = crate::image::working_path(&image);
                let cur = file.metadata().map_err(io_err("stat", &p))?.len();
                let t = Instant::now();
                file.sync_all().map_err(io_err("syncing", &p))?;
                add_phase(phases, "fsync", t);
                let t = Instant::now();
                let (got, blocks) = final_hash(ahead, bs, cur, |off, buf| {
                    read_clipped(file, cur, off, buf).map_err(io_err("reading", &p))
                })?;
                add_phase(phases, "verify", t);
                if got != expected || cur != len {
                    return Err(ImageError::HashMismatch { expected, got });
                }
                let t = Instant::now();
                std::fs::rename(&p, &image).map_err(io_err("renaming onto", &image))?;
                sync_dir(&image)?;
                add_phase(phases, "rename", t);
                let t = Instant::now();
                write_sidecar(&image, bs, len, got, &blocks);
                add_phase(phases, "sidecar", t);
                Ok(len)
            }
            Mode::InPlace {
                old,
                min_len,
                cur_len,
                part,
                part_len,
                overlay,
                ..
            } => {
                if *cur_len != len {
                    return Err(ImageError::Io {
                        what: "committing (length differs from the last round's)",
                        path: image.clone(),
                        source: std::io::ErrorKind::InvalidData.into(),
                    });
                }
                let t = Instant::now();
                let (got, blocks) = final_hash(ahead, bs, len, |off, buf| {
                    fill_overlaid(old, *min_len, len, part, overlay, bs as u64, off, buf)
                        .map_err(io_err("reading", &image))
                })?;
                add_phase(phases, "verify", t);
                if got != expected {
                    return Err(ImageError::HashMismatch { expected, got });
                }
                // Journal: index + trailer, fsync, rename (commit point), fsync dir.
                let t = Instant::now();
                let pp = journal_part_path(&image);
                let mut tail = Vec::with_capacity(overlay.len() * ENTRY_LEN + TRAILER_LEN);
                for (b, e) in overlay.iter() {
                    tail.extend_from_slice(&b.to_le_bytes());
                    tail.extend_from_slice(&e.off.to_le_bytes());
                    tail.extend_from_slice(&e.len.to_le_bytes());
                    tail.extend_from_slice(&e.hash.to_le_bytes());
                }
                tail.extend_from_slice(JOURNAL_MAGIC);
                for w in [overlay.len() as u64, *part_len, bs as u64, *min_len, len] {
                    tail.extend_from_slice(&w.to_le_bytes());
                }
                tail.extend_from_slice(&got.to_le_bytes());
                let c = dwcp_kernels::xxh3_64(&tail);
                tail.extend_from_slice(&c.to_le_bytes());
                part.write_all_at(&tail, *part_len)
                    .map_err(io_err("writing", &pp))?;
                part.sync_all().map_err(io_err("syncing", &pp))?;
                failpoint("before-journal-commit");
                let jp = journal_path(&image);
                std::fs::rename(&pp, &jp).map_err(io_err("renaming", &jp))?;
                sync_dir(&image)?;
                add_phase(phases, "journal", t);
                // Apply in place.
                let t = Instant::now();
                let img = File::options()
                    .write(true)
                    .open(&image)
                    .map_err(io_err("opening", &image))?;
                if *min_len < img.metadata().map_err(io_err("stat", &image))?.len() {
                    img.set_len(*min_len)
                        .map_err(io_err("truncating", &image))?;
                }
                img.set_len(len).map_err(io_err("resizing", &image))?;
                let mut buf = vec![0u8; 1 << 20];
                let half = overlay.len() / 2;
                // Adjacent blocks laid out contiguously in the journal go in one write.
                let mut it = overlay.iter().enumerate().peekable();
                while let Some((k, (&b, e))) = it.next() {
                    if k == half {
                        failpoint("mid-apply");
                    }
                    let mut n = e.len as usize;
                    let mut last = (b, *e);
                    while let Some(&(k2, (&b2, e2))) = it.peek() {
                        if k2 != half
                            && b2 == last.0 + 1
                            && last.1.len as usize == bs
                            && e2.off == last.1.off + bs as u64
                            && n + e2.len as usize <= buf.len()
                        {
                            n += e2.len as usize;
                            last = (b2, *e2);
                            it.next();
                        } else {
                            break;
                        }
                    }
                    part_read(part, &jp, e.off, &mut buf[..n])?;
                    img.write_all_at(&buf[..n], b * bs as u64)
                        .map_err(io_err("writing", &image))?;
                }
                add_phase(phases, "apply", t);
                let t = Instant::now();
                img.sync_all().map_err(io_err("syncing", &image))?;
                drop(img);
                add_phase(phases, "fsync", t);
                let t = Instant::now();
                write_sidecar(&image, bs, len, got, &blocks);
                std::fs::remove_file(&jp).map_err(io_err("removing", &jp))?;
                sync_dir(&image)?;
                add_phase(phases, "sidecar", t);
                Ok(len)
            }
        }
    }
}

fn part_read(part: &File, path: &Path, off: u64, buf: &mut [u8]) -> Result<(), ImageError> {
    part.read_exact_at(buf, off)
        .map_err(io_err("reading", path))
}

/// Fills `buf` with the overlaid image's bytes at `off`: journal blocks where present (zero
/// after their length), else the old image's bytes before `min_len`, else zero; nothing at
/// or past `cur_len`.
#[allow(clippy::too_many_arguments)]
fn fill_overlaid(
    old: &File,
    min_len: u64,
    cur_len: u64,
    part: &File,
    overlay: &BTreeMap<u64, Entry>,
    bs: u64,
    off: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    read_clipped(old, min_len.min(cur_len), off, buf)?;
    let end = off + buf.len() as u64;
    for (&b, e) in overlay.range(off / bs..end.div_ceil(bs)) {
        let bstart = b * bs;
        let bend = bstart + bs;
        let lo = bstart.max(off);
        let hi = bend.min(end);
        if lo >= hi {
            continue;
        }
        let dst = &mut buf[(lo - off) as usize..(hi - off) as usize];
        dst.fill(0);
        let have_end = (bstart + u64::from(e.len)).min(hi);
        if have_end > lo {
            let n = (have_end - lo) as usize;
            part.read_exact_at(&mut dst[..n], e.off + (lo - bstart))?;
        }
    }
    let keep = cur_len.saturating_sub(off).min(buf.len() as u64) as usize;
    buf[keep..].fill(0);
    Ok(())
}

impl Drop for Target {
    fn drop(&mut self) {
        // Not committed (cancelled or failed): drop the uncommitted file; the image stays as
        // it was. After a commit the file was renamed away and this removes nothing.
        let p = match self.mode {
            Mode::Fresh { .. } => crate::image::working_path(&self.image),
            Mode::InPlace { .. } => journal_part_path(&self.image),
        };
        let _ = std::fs::remove_file(p);
    }
}
