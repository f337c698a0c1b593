//! File-backed storage for transfers: [`FileSource`] (what a sender reads), [`FileSink`]
//! (where a receiver writes) and [`FileJournal`] (which ranges of the object are durable).
//!
//! Owns the on-disk contract of a receive: the object is written into `<dest>.dwcp-part`,
//! durable ranges are appended to `<dest>.dwcp-journal` only after `fsync` of the part file,
//! and [`FileSink::finish`] renames the part file onto `<dest>` only after the transfer engine
//! has verified the whole-object hash. So a partial object is never visible under its final
//! name, and a receiver killed at any point resumes from what the journal says is durable.
//!
//! Does not: decide what is durable (the transfer engine calls `flush_durable` and then
//! `record_durable`), verify hashes, or handle block devices specially (a block device path
//! works as a source; as a destination it is written through a part file like any file).
#![allow(clippy::module_name_repetitions)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dwcp_transfer::{Journal, Sink, Source};

/// Bytes a [`FileSource`] reads ahead with one `pread`, and a [`FileSink`] gathers into one
/// `pwrite`: a chunk is 1-8 KB, so a system call per chunk would cost more than its copy.
pub const IO_BLOCK: usize = 1 << 20;

/// A file (or block device) read at arbitrary offsets. Reads go through a read-ahead block
/// ([`IO_BLOCK`]): the sender reads chunks in offset order, so one `pread` serves about 700
/// chunks of 1420 bytes.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    block: Vec<u8>,
    block_off: u64,
    identity: Option<u128>,
}

impl FileSource {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file_len(&file)?;
        let identity = file_identity(&file.metadata()?);
        Ok(Self {
            file,
            len,
            block: Vec::new(),
            block_off: 0,
            identity,
        })
    }

    /// Reads `buf.len()` bytes at `offset` (fewer at the end of the file), straight from the
    /// file.
    fn pread(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        read_full_at(&self.file, offset, buf)
    }
}

/// A regular file's identity ([`Source::identity`]): device, inode, length, modification
/// and change times (nanoseconds), hashed. Any write through the file system changes the
/// change time, and a rename or copy changes the inode. A block device has none: its
/// content changes without any of these.
fn file_identity(meta: &std::fs::Metadata) -> Option<u128> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return None;
    }
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(b"dwcp file identity 1");
    for v in [meta.dev(), meta.ino(), meta.len()] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    Some(xxhash_rust::xxh3::xxh3_128(&b))
}

/// Reads `buf.len()` bytes at `offset`, fewer only at the end of the file.
fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

fn file_len(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok(meta.len())
    } else {
        // Block devices report 0 in metadata; seeking to the end gives their size.
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::End(0))
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(self.len.saturating_sub(offset) as usize);
        if want >= IO_BLOCK / 2 {
            // a large read (the sender's hash pass) gains nothing from the block
            return self.pread(offset, &mut buf[..want]);
        }
        let end = offset + want as u64;
        let block_end = self.block_off + self.block.len() as u64;
        if offset < self.block_off || end > block_end {
            self.block.resize(IO_BLOCK, 0);
            let mut block = std::mem::take(&mut self.block);
            let n = self.pread(offset, &mut block);
            self.block = block;
            let n = n?;
            self.block.truncate(n);
            self.block_off = offset;
        }
        let from = (offset - self.block_off) as usize;
        let n = want.min(self.block.len().saturating_sub(from));
        buf[..n].copy_from_slice(&self.block[from..from + n]);
        Ok(n)
    }

    fn identity(&self) -> Option<u128> {
        self.identity
    }
}

/// Paths used for one destination.
#[derive(Debug, Clone)]
pub struct DestPaths {
    /// Final name, present only after verification.
    pub dest: PathBuf,
    /// Object bytes while receiving.
    pub part: PathBuf,
    /// Durable-range journal.
    pub journal: PathBuf,
}

impl DestPaths {
    /// Derives the part and journal paths from the destination.
    pub fn new(dest: &Path) -> Self {
        let with = |ext: &str| {
            let mut s = dest.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        Self {
            dest: dest.to_path_buf(),
            part: with(".dwcp-part"),
            journal: with(".dwcp-journal"),
        }
    }
}

/// The part file a receiver writes into. Writes that continue one another are gathered in
/// memory ([`IO_BLOCK`]) and written with one `pwrite` when a write does not continue the
/// run, the block is full, or before a flush or a read; so an in-order receive costs one
/// system call per MiB, not one per chunk.
#[derive(Debug)]
pub struct FileSink {
    file: File,
    paths: DestPaths,
    run: Vec<u8>,
    run_off: u64,
}

impl FileSink {
    /// Opens (creating if needed, keeping existing bytes for resume) the part file of `dest`.
    pub fn open(dest: &Path) -> io::Result<Self> {
        let paths = DestPaths::new(dest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&paths.part)?;
        Ok(Self {
            file,
            paths,
            run: Vec::with_capacity(IO_BLOCK),
            run_off: 0,
        })
    }

    /// Writes the gathered run.
    fn write_run(&mut self) -> io::Result<()> {
        if !self.run.is_empty() {
            self.file.write_all_at(&self.run, self.run_off)?;
            self.run.clear();
        }
        Ok(())
    }

    /// A second handle on the same part file (the engine owns one, the caller keeps one to
    /// call [`FileSink::finish`]).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            paths: self.paths.clone(),
            run: Vec::new(),
            run_off: 0,
        })
    }

    /// After the engine verified the object: trims the part file to `len`, syncs it, renames
    /// it onto the destination, syncs the directory and removes the journal.
    pub fn finish(mut self, len: u64) -> io::Result<PathBuf> {
        self.write_run()?;
        self.file.set_len(len)?;
        self.file.sync_all()?;
        std::fs::rename(&self.paths.part, &self.paths.dest)?;
        if let Some(dir) = self.paths.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        match std::fs::remove_file(&self.paths.journal) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(self.paths.dest.clone())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // best effort: bytes not yet journaled are sent again after a restart anyway
        let _ = self.write_run();
    }
}

impl Sink for FileSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let continues = offset == self.run_off + self.run.len() as u64;
        if !continues || self.run.len() + data.len() > IO_BLOCK {
            self.write_run()?;
            self.run_off = offset;
        }
        if data.len() >= IO_BLOCK {
            self.run_off = offset + data.len() as u64;
            return self.file.write_all_at(data, offset);
        }
        self.run.extend_from_slice(data);
        Ok(())
    }

    fn flush_durable(&mut self) -> io::Result<()> {
        self.write_run()?;
        self.file.sync_data()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.write_run()?;
        read_full_at(&self.file, offset, buf)
    }
}

/// Append-only journal of durable ranges.
///
/// Format (text, one record per line, every line ends in `\n`):
/// `dwcp-journal 1 <object_id> <len> <hash as 32 hex digits>` then `<start> <end>` per
/// durable range. A torn last line (no `\n`) is ignored; a header for another object, length
/// or hash discards the journal, since the part file then holds another version.
/// Lines are appended without `fsync` (see [`Journal::record_durable`] below): they only ever
/// name bytes that were already synced, so a lost line means a chunk is sent again.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    file: Option<File>,
}

impl FileJournal {
    /// Journal of `dest`.
    pub fn open(dest: &Path) -> Self {
        Self {
            path: DestPaths::new(dest).journal,
            file: None,
        }
    }

    /// Journal of part `k` of `dest` received over several workers
    /// (`<dest>.dwcp-journal.<k>`, see [`crate::parts`]).
    pub fn open_part(dest: &Path, k: usize) -> Self {
        let mut p = DestPaths::new(dest).journal.into_os_string();
        p.push(format!(".{k}"));
        Self {
            path: PathBuf::from(p),
            file: None,
        }
    }

    /// Removes this journal's file (after the object was verified and renamed).
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn header(object_id: u64, len: u64, hash: u128) -> String {
        format!("dwcp-journal 1 {object_id} {len} {hash:032x}\n")
    }

    fn read_ranges(&self, header: &str) -> io::Result<Option<Vec<Range<u64>>>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut r = BufReader::new(f);
        let mut line = String::new();
        r.read_line(&mut line)?;
        if line != header {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || !line.ends_with('\n') {
                break;
            }
            let mut it = line.split_whitespace().map(str::parse::<u64>);
            match (it.next(), it.next(), it.next()) {
                (Some(Ok(s)), Some(Ok(e)), None) if s < e => out.push(s..e),
                _ => break,
            }
        }
        Ok(Some(out))
    }
}

impl Journal for FileJournal {
    fn begin(&mut self, object_id: u64, len: u64, hash: u128) -> io::Result<Vec<Range<u64>>> {
        let header = Self::header(object_id, len, hash);
        let ranges = self.read_ranges(&header)?;
        let file = match &ranges {
            Some(_) => OpenOptions::new().append(true).open(&self.path)?,
            None => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&self.path)?;
                f.write_all(header.as_bytes())?;
                f.sync_data()?;
                f
            }
        };
        self.file = Some(file);
        Ok(ranges.unwrap_or_default())
    }

    fn record_durable(&mut self, _object_id: u64, range: Range<u64>) -> io::Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("journal used before begin()"))?;
        // No fsync here: the engine calls this only after the part file was synced, so a
        // line can only name durable bytes. Losing the newest lines in a crash costs a
        // retransmission, never correctness; a torn or zero-filled tail is ignored on read.
        f.write_all(format!("{} {}\n", range.start, range.end).as_bytes())
    }

    fn forget(&mut self, _object_id: u64) -> io::Result<()> {
        self.file = None;
        self.remove()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_resumes_only_the_same_object_and_ignores_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("obj");
        let mut j = FileJournal::open(&dest);
        assert!(j.begin(7, 1000, 42).unwrap().is_empty());
        j.record_durable(7, 0..100).unwrap();
        j.record_durable(7, 200..300).unwrap();
        // A torn append (crash mid-write).
        let mut f = OpenOptions::new().append(true).open(&j.path).unwrap();
        f.write_all(b"300 4").unwrap();
        drop(f);
        let mut j2 = FileJournal::open(&dest);
        assert_eq!(j2.begin(7, 1000, 42).unwrap(), vec![0..100, 200..300]);
        // Another version of the object: forget.
        let mut j3 = FileJournal::open(&dest);
        assert!(j3.begin(7, 1000, 43).unwrap().is_empty());
    }

    #[test]
    fn sink_is_visible_under_its_name_only_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("obj");
        let mut s = FileSink::open(&dest).unwrap();
        s.write_at(4, b"tail").unwrap();
        s.write_at(0, b"head").unwrap();
        s.flush_durable().unwrap();
        assert!(!dest.exists());
        let path = s.finish(8).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"headtail");
        let mut src = FileSource::open(&dest).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(src.read_at(6, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"il");
    }
}
