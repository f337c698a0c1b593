//! Image files: hashing, qcow2 sources, and the source's cache of the last version it
//! migrated. The destination's on-disk contract (sidecar, journal, switchover) is in
//! [`crate::store`].
//!
//! Does not: write qcow2 on the destination (a qcow2 source is converted to raw with
//! `qemu-img convert` and arrives raw), or keep more than one cached version per cache
//! directory.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

/// Errors of image handling.
#[derive(Debug, Error)]
pub enum ImageError {
    /// File system error.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img` failed or is missing.
    #[error("qemu-img convert of {path}: {detail}")]
    QemuImg {
        /// Source image.
        path: PathBuf,
        /// stderr or spawn error.
        detail: String,
    },
    /// The committed image does not hash to the source's hash.
    #[error("image hash mismatch: source {expected:032x}, destination {got:032x}")]
    HashMismatch {
        /// Source's hash.
        expected: u128,
        /// Destination's hash.
        got: u128,
    },
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

/// XXH3-128 of a byte slice (the image hash of the switchover check).
pub fn hash_bytes(b: &[u8]) -> u128 {
    dwcp_kernels::xxh3_128(b)
}

/// Length and XXH3-128 of the file at `path`, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, u128), ImageError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.digest128()))
}

/// True if the file starts with the qcow2 magic `QFI\xfb`.
pub fn is_qcow2(path: &Path) -> Result<bool, ImageError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut m = [0u8; 4];
    match f.read_exact(&mut m) {
        Ok(()) => Ok(&m == b"QFI\xfb"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// `qemu-img convert -O raw src dst` (sparse output, so zero clusters cost nothing).
pub fn qcow2_to_raw(src: &Path, dst: &Path) -> Result<(), ImageError> {
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(src)
        .arg(dst)
        .output()
        .map_err(|e| ImageError::QemuImg {
            path: src.to_path_buf(),
            detail: format!("cannot run qemu-img ({e}); install qemu-utils"),
        })?;
    if !out.status.success() {
        return Err(ImageError::QemuImg {
            path: src.to_path_buf(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A source image as raw bytes: the file itself, or a raw conversion of a qcow2 file made
/// again for every round ([`RawView::refresh`]).
#[derive(Debug)]
pub struct RawView {
    src: PathBuf,
    raw: Option<PathBuf>,
}

impl RawView {
    /// Detects the format of `src`; a qcow2 image is converted into `scratch_dir`.
    pub fn open(src: &Path, scratch_dir: &Path) -> Result<Self, ImageError> {
        let raw = is_qcow2(src)?.then(|| {
            scratch_dir.join(format!(
                "{}.dwcp-raw",
                src.file_name()
                    .map_or("image".into(), |n| n.to_string_lossy())
            ))
        });
        Ok(RawView {
            src: src.to_path_buf(),
            raw,
        })
    }

    /// The raw file as last converted (or the source itself).
    pub fn path(&self) -> &Path {
        self.raw.as_deref().unwrap_or(&self.src)
    }

    /// True for a qcow2 source.
    pub fn is_qcow2(&self) -> bool {
        self.raw.is_some()
    }

    /// Re-converts a qcow2 source; returns the raw path to read.
    pub fn refresh(&self) -> Result<&Path, ImageError> {
        match &self.raw {
            Some(raw) => {
                qcow2_to_raw(&self.src, raw)?;
                Ok(raw)
            }
            None => Ok(&self.src),
        }
    }
}

impl Drop for RawView {
    fn drop(&mut self) {
        if let Some(raw) = &self.raw {
            let _ = std::fs::remove_file(raw);
        }
    }
}

/// Path of the working file of `image` when the destination had no image (fresh target).
pub fn working_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".dwcp-new");
    PathBuf::from(s)
}

/// The source's cache of the last version of an image it migrated, so that a later
/// migration to a destination still holding that version can send XOR deltas.
#[derive(Debug, Clone)]
pub struct BaseCache {
    dir: PathBuf,
}

impl BaseCache {
    /// A cache in `dir` (created if missing). Use one directory per image.
    pub fn new(dir: &Path) -> Result<Self, ImageError> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        Ok(BaseCache {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, hash: u128) -> PathBuf {
        self.dir.join(format!("{hash:032x}.img"))
    }

    /// The cached bytes of the version hashing to `hash`, if held (and still intact).
    pub fn get(&self, hash: u128) -> Result<Option<Vec<u8>>, ImageError> {
        let p = self.path(hash);
        match std::fs::read(&p) {
            Ok(b) if hash_bytes(&b) == hash => Ok(Some(b)),
            Ok(_) => {
                tracing::warn!(path = %p.display(), "cached version corrupt; ignored");
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    /// Stores the file at `src` (hashing to `hash`) as the cached version (a kernel copy).
    pub fn put_file(&self, hash: u128, src: &Path) -> Result<(), ImageError> {
        let p = self.path(hash);
        let tmp = self.dir.join(".incoming");
        std::fs::copy(src, &tmp).map_err(io_err("copying to", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &p))?;
        let entries = std::fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))?;
        for e in entries.flatten() {
            let ep = e.path();
            if ep != p && ep.extension().is_some_and(|x| x == "img") {
                let _ = std::fs::remove_file(ep);
            }
        }
        Ok(())
    }

    /// [`BaseCache::update`] from the sent blocks only: `blocks` (sorted) with their new
    /// bytes end to end in `bytes`, the new version `len` bytes long.
    #[allow(clippy::too_many_arguments)]
    pub fn update_blocks(
        &self,
        old: u128,
        new: u128,
        len: u64,
        min_len: u64,
        blocks: &[u64],
        bytes: &[u8],
        block_size: usize,
    ) -> Result<(), ImageError> {
        use std::os::unix::fs::FileExt;
        let op = self.path(old);
        let tmp = self.dir.join(".incoming");
        match std::fs::rename(&op, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("renaming", &op)(e)),
        }
        let f = File::options()
            .write(true)
            .open(&tmp)
            .map_err(io_err("opening", &tmp))?;
        let cur = f.metadata().map_err(io_err("stat", &tmp))?.len();
        if min_len < cur {
            f.set_len(min_len).map_err(io_err("truncating", &tmp))?;
        }
        f.set_len(len).map_err(io_err("resizing", &tmp))?;
        let bs = block_size as u64;
        let mut at = 0usize;
        for &b in blocks {
            let n = len.saturating_sub(b * bs).min(bs) as usize;
            f.write_all_at(&bytes[at..at + n], b * bs)
                .map_err(io_err("writing", &tmp))?;
            at += n;
        }
        drop(f);
        let p = self.path(new);
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &p))?;
        Ok(())
    }

    /// The cached file of the version hashing to `hash`, opened without reading it (its
    /// bytes serve as XOR baselines of the dirty blocks only; a corrupt file makes the
    /// destination's patch or final hash check fail, never a silent corruption).
    pub fn open(&self, hash: u128) -> Option<File> {
        File::open(self.path(hash)).ok()
    }

    /// Stores `bytes` (hashing to `hash`) as the cached version, replacing older ones.
    pub fn put(&self, hash: u128, bytes: &[u8]) -> Result<(), ImageError> {
        let p = self.path(hash);
        let tmp = self.dir.join(".incoming");
        std::fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &p))?;
        let entries = std::fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))?;
        for e in entries.flatten() {
            let ep = e.path();
            if ep != p && ep.extension().is_some_and(|x| x == "img") {
                let _ = std::fs::remove_file(ep);
            }
        }
        Ok(())
    }

    /// Turns the cached version `old` into `new` (whose bytes are `bytes`) by writing only
    /// the blocks in `changed` (every block that differs from `old` past truncation to
    /// `min_len`, the shortest length the image had since `old`). The file is renamed to a
    /// temporary name first, so a crash midway leaves no file named by either hash. Falls
    /// back to [`BaseCache::put`] when `old` is not cached.
    pub fn update(
        &self,
        old: u128,
        new: u128,
        bytes: &[u8],
        changed: &[u64],
        min_len: u64,
        block_size: usize,
    ) -> Result<(), ImageError> {
        use std::os::unix::fs::FileExt;
        let op = self.path(old);
        let tmp = self.dir.join(".incoming");
        match std::fs::rename(&op, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.put(new, bytes),
            Err(e) => return Err(io_err("renaming", &op)(e)),
        }
        let f = File::options()
            .write(true)
            .open(&tmp)
            .map_err(io_err("opening", &tmp))?;
        let cur = f.metadata().map_err(io_err("stat", &tmp))?.len();
        if min_len < cur {
            f.set_len(min_len).map_err(io_err("truncating", &tmp))?;
        }
        f.set_len(bytes.len() as u64)
            .map_err(io_err("resizing", &tmp))?;
        let bs = block_size as u64;
        let mut i = 0;
        while i < changed.len() {
            let mut j = i + 1;
            while j < changed.len() && changed[j] == changed[j - 1] + 1 {
                j += 1;
            }
            let s = (changed[i] * bs).min(bytes.len() as u64) as usize;
            let e = ((changed[j - 1] + 1) * bs).min(bytes.len() as u64) as usize;
            f.write_all_at(&bytes[s..e], s as u64)
                .map_err(io_err("writing", &tmp))?;
            i = j;
        }
        drop(f);
        let p = self.path(new);
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &p))?;
        Ok(())
    }
}

/// The source's cache of the manifests (per-block XXH3-64) of the versions it sent, by
/// XXH3-128: a destination reporting one of those hashes needs to send no manifest. 8 bytes
/// per block; the newest [`ManifestCache::KEEP`] are kept.
#[derive(Debug, Clone)]
pub struct ManifestCache {
    dir: PathBuf,
}

const MANIFEST_MAGIC: &[u8; 8] = b"DWCPMC01";

impl ManifestCache {
    /// Manifests kept.
    pub const KEEP: usize = 4;

    /// A cache in `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<Self, ImageError> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        Ok(ManifestCache {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, hash: u128, bs: usize) -> PathBuf {
        self.dir.join(format!("{hash:032x}-{bs}.manifest"))
    }

    /// The manifest of the version of `len` bytes hashing to `hash`, if held and intact.
    pub fn get(&self, hash: u128, bs: usize, len: u64) -> Option<Vec<u64>> {
        let b = std::fs::read(self.path(hash, bs)).ok()?;
        if b.len() < 32 || &b[..8] != MANIFEST_MAGIC {
            return None;
        }
        let (body, check) = b.split_at(b.len() - 8);
        if dwcp_kernels::xxh3_64(body).to_le_bytes() != check {
            return None;
        }
        let l = u64::from_le_bytes(body[8..16].try_into().ok()?);
        let hashes = &body[16..];
        if l != len || hashes.len() as u64 != len.div_ceil(bs as u64) * 8 {
            return None;
        }
        Some(
            hashes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        )
    }

    /// Stores the manifest of a version; drops the oldest beyond [`ManifestCache::KEEP`].
    pub fn put(&self, hash: u128, bs: usize, len: u64, hashes: &[u64]) -> Result<(), ImageError> {
        let mut b = Vec::with_capacity(24 + hashes.len() * 8);
        b.extend_from_slice(MANIFEST_MAGIC);
        b.extend_from_slice(&len.to_le_bytes());
        for h in hashes {
            b.extend_from_slice(&h.to_le_bytes());
        }
        let c = dwcp_kernels::xxh3_64(&b);
        b.extend_from_slice(&c.to_le_bytes());
        let p = self.path(hash, bs);
        let tmp = self.dir.join(".incoming-manifest");
        std::fs::write(&tmp, &b).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &p))?;
        let mut all: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(io_err("listing", &self.dir))?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "manifest"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        all.sort();
        let n = all.len().saturating_sub(Self::KEEP);
        for (_, old) in all.into_iter().take(n) {
            if old != p {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(())
    }
}
