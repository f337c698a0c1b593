//! Image files: hashing, qcow2 sources, the destination's working copy with its atomic
//! switchover, and the source's cache of the last version it migrated.
//!
//! Owns the on-disk contract of the destination: the image `<path>` is never written while a
//! job runs. Rounds are applied to `<path>.dwcp-new` (a copy of the image at job start);
//! [`Working::commit`] syncs it, checks its XXH3-128 against the source's, renames it onto
//! `<path>` and syncs the directory. A cancelled, failed or killed job leaves `<path>` as it
//! was; a stale working file is removed by the next job.
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

/// Path of the working copy of `image`.
pub fn working_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".dwcp-new");
    PathBuf::from(s)
}

/// The destination's working copy of one job.
#[derive(Debug)]
pub struct Working {
    image: PathBuf,
    path: PathBuf,
    file: Option<File>,
}

impl Working {
    /// Starts a job on `image`: removes a stale working file, copies the image (if any) to
    /// the working path and opens it.
    pub fn begin(image: &Path) -> Result<Self, ImageError> {
        let path = working_path(image);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale working file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &path)(e)),
        }
        if image.exists() {
            std::fs::copy(image, &path).map_err(io_err("copying the image to", &path))?;
        }
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        Ok(Working {
            image: image.to_path_buf(),
            path,
            file: Some(file),
        })
    }

    /// The open working file.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("working file open until commit")
    }

    /// Working file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the working file, checks its hash against `expected`, renames it onto the image
    /// and syncs the directory. On a mismatch the working file is removed and the image is
    /// left as it was.
    pub fn commit(mut self, expected: u128) -> Result<u64, ImageError> {
        let file = self.file.take().expect("working file open until commit");
        file.sync_all().map_err(io_err("syncing", &self.path))?;
        drop(file);
        let (len, got) = hash_file(&self.path)?;
        if got != expected {
            return Err(ImageError::HashMismatch { expected, got });
        }
        std::fs::rename(&self.path, &self.image).map_err(io_err("renaming onto", &self.image))?;
        let dir = self
            .image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the directory", dir))?;
        Ok(len)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        // Not committed: the job was cancelled or failed; the image stays as it was.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
}
