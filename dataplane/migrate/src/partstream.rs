//! A pipelined round's parts as one ordered byte stream: what a [`crate::Mover`] that
//! [streams](crate::Mover::streams) carries instead of one object per part, so the round
//! pays one transport start-up and one tail instead of one per part.
//!
//! Owns the framing and both ends of it:
//! - per part, a 24-byte header — magic `DWPT`, part number (u32 BE, 0, 1, 2, ... in order),
//!   patch length (u64 BE), end (u64 BE: the image byte where the part's stretch ends; the
//!   image before it is final once the part is applied) — then the part's patch bytes as
//!   they are; the stream ends after the last part;
//! - [`PartReader`] (source): a `Read` over the parts' patch files as the encoder hands them
//!   over, one after the other; each file is deleted once read;
//! - [`PartWriter`] (destination): a `Write` that cuts the stream back into one file per
//!   part and hands each file to a callback once it is complete.
//!
//! Does not: check patch contents (the destination's applier decodes and verifies each
//! part), retry, or know the transport. A stream that ends inside a part leaves that part
//! unannounced; the job then fails at commit, whose whole-image hash check reads every byte.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};

/// Part header magic.
pub const PART_MAGIC: [u8; 4] = *b"DWPT";
/// Part header length.
pub const HEADER_LEN: usize = 24;

/// Header of part `part` whose patch is `len` bytes and whose stretch of the image ends at
/// byte `end`.
pub fn header(part: u32, len: u64, end: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&PART_MAGIC);
    h[4..8].copy_from_slice(&part.to_be_bytes());
    h[8..16].copy_from_slice(&len.to_be_bytes());
    h[16..].copy_from_slice(&end.to_be_bytes());
    h
}

/// A complete part on the destination: number, file, patch length, end of its stretch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Part number.
    pub part: u32,
    /// Its patch file.
    pub path: PathBuf,
    /// Patch length.
    pub len: u64,
    /// Image byte where its stretch ends.
    pub end: u64,
}

/// An encoded part the reader can stream: its number and its patch file.
pub trait StreamPart: Send {
    /// Part number.
    fn part(&self) -> u32;
    /// Its patch file.
    fn path(&self) -> &Path;
    /// Image byte where its stretch ends.
    fn end(&self) -> u64;
}

/// The source's end: reads the parts that arrive on `parts`, in that order, header first;
/// the end of the stream is the channel's end. Each part is sent on `started` when its
/// header is read (the caller's accounting), and its file is deleted once read.
pub struct PartReader<T: StreamPart> {
    parts: Receiver<T>,
    started: Sender<T>,
    head: [u8; HEADER_LEN],
    head_pos: usize,
    cur: Option<(File, PathBuf, u64)>,
    next: u32,
}

impl<T: StreamPart> PartReader<T> {
    /// A reader over the parts that arrive on `parts`.
    pub fn new(parts: Receiver<T>, started: Sender<T>) -> Self {
        PartReader {
            parts,
            started,
            head: [0; HEADER_LEN],
            head_pos: HEADER_LEN,
            cur: None,
            next: 0,
        }
    }
}

impl<T: StreamPart> std::fmt::Debug for PartReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartReader")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<T: StreamPart> Read for PartReader<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.head_pos < HEADER_LEN {
                let n = (HEADER_LEN - self.head_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
                self.head_pos += n;
                return Ok(n);
            }
            if let Some((f, path, left)) = &mut self.cur {
                if *left > 0 {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("{} ended early", path.display()),
                        ));
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
                let _ = std::fs::remove_file(&*path);
                self.cur = None;
            }
            // Blocks until the encoder hands over the next part, or ends.
            let Ok(p) = self.parts.recv() else {
                return Ok(0);
            };
            if p.part() != self.next {
                return Err(std::io::Error::other(format!(
                    "part {} handed over where part {} belongs",
                    p.part(),
                    self.next
                )));
            }
            self.next += 1;
            let f = File::open(p.path())?;
            let len = f.metadata()?.len();
            self.head = header(p.part(), len, p.end());
            self.head_pos = 0;
            self.cur = Some((f, p.path().to_path_buf(), len));
            // The caller may have stopped listening (it failed); the stream then ends anyway.
            let _ = self.started.send(p);
        }
    }
}

/// Called by [`PartWriter`] with each complete part.
pub type OnPart = Box<dyn FnMut(Received) -> std::io::Result<()> + Send>;

/// The destination's end: writes part `n` to `path_of(n)` and calls `on_part` once the file
/// holds all of it. Parts must come in order from 0; anything else is an error that fails
/// the stream.
pub struct PartWriter {
    path_of: Box<dyn Fn(u32) -> PathBuf + Send>,
    on_part: OnPart,
    head: [u8; HEADER_LEN],
    head_len: usize,
    cur: Option<(BufWriter<File>, u32, PathBuf, u64, u64)>,
    next: u32,
    bytes: u64,
}

impl PartWriter {
    /// A writer that puts part `n` into `path_of(n)`.
    pub fn new(path_of: Box<dyn Fn(u32) -> PathBuf + Send>, on_part: OnPart) -> Self {
        PartWriter {
            path_of,
            on_part,
            head: [0; HEADER_LEN],
            head_len: 0,
            cur: None,
            next: 0,
            bytes: 0,
        }
    }

    fn bad(what: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what)
    }

    /// Parses a complete header and opens the part's file.
    fn open_part(&mut self) -> std::io::Result<()> {
        let h = &self.head;
        if h[..4] != PART_MAGIC {
            return Err(Self::bad(format!(
                "part header expected, got {:02x?}",
                &h[..4]
            )));
        }
        let part = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let (len, end) = (word(8), word(16));
        if part != self.next {
            return Err(Self::bad(format!(
                "part {part} arrived where part {} belongs",
                self.next
            )));
        }
        self.next += 1;
        self.head_len = 0;
        let path = (self.path_of)(part);
        let f = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        self.cur = Some((f, part, path, len, end));
        self.finish_part_if_done()
    }

    fn finish_part_if_done(&mut self) -> std::io::Result<()> {
        if self.cur.as_ref().is_some_and(|c| c.3 == 0)
            && let Some((mut f, part, path, _, end)) = self.cur.take()
        {
            f.flush()?;
            drop(f);
            let len = std::fs::metadata(&path)?.len();
            (self.on_part)(Received {
                part,
                path,
                len,
                end,
            })?;
        }
        Ok(())
    }

    /// Stream bytes written so far (headers included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("next", &self.next)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if let Some((f, _, _, left, _)) = &mut self.cur {
                let n = (*left).min(rest.len() as u64) as usize;
                f.write_all(&rest[..n])?;
                *left -= n as u64;
                rest = &rest[n..];
                self.finish_part_if_done()?;
            } else {
                let n = (HEADER_LEN - self.head_len).min(rest.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&rest[..n]);
                self.head_len += n;
                rest = &rest[n..];
                if self.head_len == HEADER_LEN {
                    self.open_part()?;
                }
            }
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some((f, ..)) = &mut self.cur {
            f.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct P(u32, PathBuf);
    impl StreamPart for P {
        fn part(&self) -> u32 {
            self.0
        }
        fn path(&self) -> &Path {
            &self.1
        }
        fn end(&self) -> u64 {
            u64::from(self.0) * 1000 + 7
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dwcp-partstream-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Parts of assorted sizes (empty included) cross in any write/read granularity and come
    /// out as the same files, in order; the source's files are deleted once read.
    #[test]
    fn parts_round_trip_in_any_piece_size() {
        let d = dir("rt");
        let sizes = [0usize, 1, 15, 16, 17, 4096, 100_000, 3];
        let mut want = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..n).map(|k| (k * 7 + i * 13) as u8).collect();
            want.push(body);
        }
        for piece in [1usize, 5, 16, 333, 1 << 20] {
            let (tx, rx) = mpsc::channel();
            let (stx, srx) = mpsc::channel();
            for (i, body) in want.iter().enumerate() {
                let p = d.join(format!("src-{piece}-{i}"));
                std::fs::write(&p, body).unwrap();
                tx.send(P(i as u32, p)).unwrap();
            }
            drop(tx);
            let mut r = PartReader::new(rx, stx);
            let mut stream = Vec::new();
            let mut buf = vec![0u8; piece];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                stream.extend_from_slice(&buf[..n]);
            }
            let total: usize = want.iter().map(|b| b.len() + HEADER_LEN).sum();
            assert_eq!(stream.len(), total);
            assert_eq!(srx.try_iter().count(), want.len());
            for i in 0..want.len() {
                assert!(
                    !d.join(format!("src-{piece}-{i}")).exists(),
                    "source part kept"
                );
            }
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let g = got.clone();
            let dd = d.clone();
            let mut w = PartWriter::new(
                Box::new(move |n| dd.join(format!("dst-{piece}-{n}"))),
                Box::new(move |r: Received| {
                    g.lock()
                        .unwrap()
                        .push((r.part, std::fs::read(&r.path)?, r.len, r.end));
                    Ok(())
                }),
            );
            for c in stream.chunks(piece) {
                w.write_all(c).unwrap();
            }
            w.flush().unwrap();
            assert_eq!(w.bytes(), total as u64);
            let got = got.lock().unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (n, body, len, end)) in got.iter().enumerate() {
                assert_eq!(*n, i as u32);
                assert_eq!(body, &want[i]);
                assert_eq!(*len, want[i].len() as u64);
                assert_eq!(*end, i as u64 * 1000 + 7);
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A wrong magic, a part out of order or a stream cut inside a part never yields a part
    /// that was not whole.
    #[test]
    fn bad_streams_are_refused() {
        let d = dir("bad");
        let writer = |tag: &'static str, seen: std::sync::Arc<std::sync::Mutex<Vec<u32>>>| {
            let dd = d.clone();
            PartWriter::new(
                Box::new(move |n| dd.join(format!("{tag}-{n}"))),
                Box::new(move |r: Received| {
                    seen.lock().unwrap().push(r.part);
                    Ok(())
                }),
            )
        };
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut w = writer("magic", seen.clone());
        let mut h = header(0, 4, 4);
        h[0] = b'X';
        assert!(w.write_all(&h).is_err());

        let mut w = writer("order", seen.clone());
        assert!(w.write_all(&header(1, 0, 0)).is_err());

        let mut w = writer("cut", seen.clone());
        w.write_all(&header(0, 2, 2)).unwrap();
        w.write_all(b"ab").unwrap();
        w.write_all(&header(1, 10, 12)).unwrap();
        w.write_all(b"short").unwrap();
        w.flush().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![0],
            "only the whole part is announced"
        );

        // The reader refuses parts handed over out of order.
        let (tx, rx) = mpsc::channel();
        let (stx, _srx) = mpsc::channel();
        let p = d.join("ooo");
        std::fs::write(&p, b"x").unwrap();
        tx.send(P(1, p)).unwrap();
        let mut r = PartReader::new(rx, stx);
        assert!(r.read(&mut [0u8; 64]).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
