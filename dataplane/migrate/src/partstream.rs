//! A pipelined round's parts as one ordered byte stream: what a [`crate::Mover`] that
//! [streams](crate::Mover::streams) carries instead of one object per part, so the round
//! pays one transport start-up and one tail instead of one per part.
//!
//! Owns the framing and both ends of it:
//! - per part, a 24-byte header — magic `DWPT`, part number (u32 BE, 0, 1, 2, ... in order),
//!   patch length (u64 BE), end (u64 BE: the image byte where the part's stretch ends; the
//!   image before it is final once the part is applied) — then the part's patch bytes as
//!   they are; the stream ends after the last part;
//! - [`PartFeed`] (source): takes the parts' patch files as the encoder hands them over and
//!   keeps each until the destination applied it, so a failed stream can be resumed;
//! - [`PartReader`] (source): a `Read` over the feed's parts from a given part on, one after
//!   the other;
//! - [`PartWriter`] (destination): a `Write` that cuts the stream back into one file per
//!   part, from a given part on, and hands each file to a callback once it is complete.
//!
//! Does not: check patch contents (the destination's applier decodes and verifies each
//! part), decide when to resume (the session does: `Msg::StreamLost`/`Msg::Resume`), or know
//! the transport. A stream that ends inside a part leaves that part unannounced: it is sent
//! again by a resumed stream, or the job fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};

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

/// The source's store of a round's parts, between the encoder and the stream: it takes the
/// parts the encoder hands over on a channel (in order: 0, 1, 2, ...), keeps each part's
/// file until the destination applied it ([`PartFeed::applied`]), and serves them to
/// [`PartReader`]s. A stream that failed is resumed by a new reader from the first part the
/// destination did not receive whole ([`PartFeed::reader`]); the older reader then fails
/// instead of taking parts away from it. Files still kept when the feed is dropped, and
/// those of parts handed over but never taken, are deleted.
pub struct PartFeed<T: StreamPart> {
    /// The encoder's channel; whoever holds this lock is the one taking a part from it.
    parts: Mutex<Receiver<T>>,
    state: Mutex<FeedState<T>>,
    /// `FeedState::generation`, readable without the lock.
    current: AtomicU64,
}

struct FeedState<T> {
    /// Parts taken from the encoder and not yet applied: number → (file, end).
    kept: BTreeMap<u32, (PathBuf, u64)>,
    /// Parts taken from the encoder since the last [`PartFeed::take_new`].
    new: Vec<T>,
    /// The number the encoder's next part must carry.
    next_in: u32,
    /// The encoder's channel ended: no part after `next_in - 1`.
    ended: bool,
    /// The reader allowed to read; older ones fail.
    generation: u64,
}

impl<T: StreamPart> PartFeed<T> {
    /// A feed over the parts the encoder sends on `parts`.
    pub fn new(parts: Receiver<T>) -> Arc<Self> {
        Arc::new(PartFeed {
            parts: Mutex::new(parts),
            state: Mutex::new(FeedState {
                kept: BTreeMap::new(),
                new: Vec::new(),
                next_in: 0,
                ended: false,
                generation: 0,
            }),
            current: AtomicU64::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FeedState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader of the stream from part `from` on (0 for the first stream of a round; a
    /// resumed stream starts where the destination's last complete part ended). Every
    /// reader made before it fails from now on.
    pub fn reader(self: &Arc<Self>, from: u32) -> PartReader<T> {
        let mut st = self.state();
        st.generation += 1;
        self.current.store(st.generation, Ordering::Release);
        PartReader {
            feed: self.clone(),
            generation: st.generation,
            head: [0; HEADER_LEN],
            head_pos: HEADER_LEN,
            cur: None,
            next: from,
        }
    }

    /// The parts taken from the encoder since the last call, in order (for the caller's
    /// accounting: each part is returned once, however often it is streamed).
    pub fn take_new(&self) -> Vec<T> {
        std::mem::take(&mut self.state().new)
    }

    /// The destination applied `part`: its file is deleted (no resumed stream needs it).
    pub fn applied(&self, part: u32) {
        if let Some((path, _)) = self.state().kept.remove(&part) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Parts whose files are still kept.
    pub fn kept(&self) -> usize {
        self.state().kept.len()
    }

    /// Part `n` for the reader of `generation`: `Ok(None)` after the last part.
    fn part(&self, generation: u64, n: u32) -> std::io::Result<Option<(PathBuf, u64)>> {
        loop {
            // One taker at a time; the state lock is held only briefly, so `applied` and
            // `take_new` never wait for the encoder.
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            {
                let st = self.state();
                if st.generation != generation {
                    return Err(superseded());
                }
                if let Some(k) = st.kept.get(&n) {
                    return Ok(Some(k.clone()));
                }
                if n < st.next_in {
                    return Err(std::io::Error::other(format!(
                        "part {n} is no longer held (applied)"
                    )));
                }
                if st.ended {
                    return Ok(None);
                }
            }
            match parts.recv_timeout(std::time::Duration::from_millis(20)) {
                Ok(p) => {
                    let mut st = self.state();
                    if p.part() != st.next_in {
                        return Err(std::io::Error::other(format!(
                            "part {} handed over where part {} belongs",
                            p.part(),
                            st.next_in
                        )));
                    }
                    st.next_in += 1;
                    st.kept.insert(p.part(), (p.path().to_path_buf(), p.end()));
                    st.new.push(p);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.state().ended = true,
            }
        }
    }
}

fn superseded() -> std::io::Error {
    std::io::Error::other("this stream of parts was superseded by a resumed one")
}

impl<T: StreamPart> Drop for PartFeed<T> {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (path, _) in std::mem::take(&mut st.kept).into_values() {
            let _ = std::fs::remove_file(path);
        }
        // Parts the encoder handed over that no reader took (a failed job).
        let parts = self.parts.get_mut().unwrap_or_else(|p| p.into_inner());
        for p in parts.try_iter() {
            let _ = std::fs::remove_file(p.path());
        }
    }
}

impl<T: StreamPart> std::fmt::Debug for PartFeed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state();
        f.debug_struct("PartFeed")
            .field("kept", &st.kept.len())
            .field("next_in", &st.next_in)
            .field("ended", &st.ended)
            .finish_non_exhaustive()
    }
}

/// The source's end of one stream: reads the feed's parts from its first part on, in
/// order, header first; the stream ends after the encoder's last part.
pub struct PartReader<T: StreamPart> {
    feed: Arc<PartFeed<T>>,
    generation: u64,
    head: [u8; HEADER_LEN],
    head_pos: usize,
    cur: Option<(File, PathBuf, u64)>,
    next: u32,
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
        if self.feed.current.load(Ordering::Acquire) != self.generation {
            return Err(superseded());
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
                self.cur = None;
            }
            // Blocks until the encoder hands over the next part, or ends.
            let Some((path, end)) = self.feed.part(self.generation, self.next)? else {
                return Ok(0);
            };
            let f = File::open(&path)?;
            let len = f.metadata()?.len();
            self.head = header(self.next, len, end);
            self.head_pos = 0;
            self.cur = Some((f, path, len));
            self.next += 1;
        }
    }
}

/// Called by [`PartWriter`] with each complete part.
pub type OnPart = Box<dyn FnMut(Received) -> std::io::Result<()> + Send>;

/// The destination's end: writes part `n` to `path_of(n)` and calls `on_part` once the file
/// holds all of it. Parts must come in order from the first one (0, or where a resumed
/// stream starts); anything else is an error that fails the stream.
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
    /// A writer that puts part `n` into `path_of(n)`; the stream starts with part 0.
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

    /// The same writer for a resumed stream, which starts with part `first`.
    pub fn from_part(mut self, first: u32) -> Self {
        self.next = first;
        self
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
            let r = (self.on_part)(Received {
                part,
                path: path.clone(),
                len,
                end,
            });
            if r.is_err() {
                // Not taken: nobody else deletes it.
                let _ = std::fs::remove_file(&path);
            }
            r?;
        }
        Ok(())
    }

    /// Stream bytes written so far (headers included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for PartWriter {
    /// A part cut short is never announced: its file goes (a resumed stream writes it anew).
    fn drop(&mut self) {
        if let Some((f, _, path, _, _)) = self.cur.take() {
            drop(f);
            let _ = std::fs::remove_file(path);
        }
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

    fn read_all(mut r: impl Read, piece: usize) -> std::io::Result<Vec<u8>> {
        let mut stream = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(stream);
            }
            stream.extend_from_slice(&buf[..n]);
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
            for (i, body) in want.iter().enumerate() {
                let p = d.join(format!("src-{piece}-{i}"));
                std::fs::write(&p, body).unwrap();
                tx.send(P(i as u32, p)).unwrap();
            }
            drop(tx);
            let feed = PartFeed::new(rx);
            let stream = read_all(feed.reader(0), piece).unwrap();
            let total: usize = want.iter().map(|b| b.len() + HEADER_LEN).sum();
            assert_eq!(stream.len(), total);
            assert_eq!(feed.take_new().len(), want.len());
            assert!(feed.take_new().is_empty(), "each part is new once");
            // Kept until applied, then deleted.
            assert_eq!(feed.kept(), want.len());
            for i in 0..want.len() {
                assert!(d.join(format!("src-{piece}-{i}")).exists());
                feed.applied(i as u32);
                assert!(
                    !d.join(format!("src-{piece}-{i}")).exists(),
                    "an applied part's file is deleted"
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
        assert!(d.join("cut-1").exists());
        drop(w);
        assert!(!d.join("cut-1").exists(), "the cut part's file is deleted");
        assert!(d.join("cut-0").exists(), "the whole part's file stays");

        // The reader refuses parts handed over out of order.
        let (tx, rx) = mpsc::channel();
        let p = d.join("ooo");
        std::fs::write(&p, b"x").unwrap();
        tx.send(P(1, p)).unwrap();
        let mut r = PartFeed::new(rx).reader(0);
        assert!(r.read(&mut [0u8; 64]).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A stream cut inside part 2 is resumed from part 2: the destination ends up with every
    /// part exactly once and in order, the cut part never announced; the superseded reader
    /// fails; a resume from an applied part is refused; dropping the feed deletes its files.
    #[test]
    fn a_cut_stream_resumes_from_the_first_incomplete_part() {
        let d = dir("resume");
        let (tx, rx) = mpsc::sync_channel(1);
        let bodies: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let dd = d.clone();
        let b2 = bodies.clone();
        let encoder = std::thread::spawn(move || {
            for (i, b) in b2.iter().enumerate() {
                let p = dd.join(format!("src-{i}"));
                std::fs::write(&p, b).unwrap();
                tx.send(P(i as u32, p)).unwrap();
            }
        });
        let feed = PartFeed::new(rx);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = |first: u32| {
            let g = got.clone();
            let dd = d.clone();
            PartWriter::new(
                Box::new(move |n| dd.join(format!("dst-{n}"))),
                Box::new(move |r: Received| {
                    g.lock().unwrap().push((r.part, std::fs::read(&r.path)?));
                    Ok(())
                }),
            )
            .from_part(first)
        };
        // First stream: cut in the middle of part 2.
        let mut first = feed.reader(0);
        let mut w = writer(0);
        let cut = 2 * (HEADER_LEN + 1000) + 1 + HEADER_LEN + 500;
        let mut buf = vec![0u8; 7];
        let mut sent = 0;
        while sent < cut {
            let n = first.read(&mut buf[..7.min(cut - sent)]).unwrap();
            w.write_all(&buf[..n]).unwrap();
            sent += n;
        }
        drop(w);
        assert_eq!(got.lock().unwrap().len(), 2, "parts 0 and 1 are whole");
        feed.applied(0);
        // The destination asks for part 2 on: a resumed reader.
        let second = feed.reader(2);
        assert!(
            first.read(&mut buf).is_err(),
            "the superseded reader no longer reads"
        );
        let rest = read_all(second, 4096).unwrap();
        let mut w = writer(2);
        w.write_all(&rest).unwrap();
        encoder.join().unwrap();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), bodies.len());
        for (i, (n, body)) in got.iter().enumerate() {
            assert_eq!(*n, i as u32);
            assert_eq!(body, &bodies[i]);
        }
        assert_eq!(
            feed.take_new().len(),
            bodies.len(),
            "each part counted once"
        );
        let mut stale = feed.reader(0);
        assert!(
            stale.read(&mut buf).is_err(),
            "part 0 was applied: it cannot be sent again"
        );
        assert_eq!(feed.kept(), bodies.len() - 1);
        drop((stale, first, feed));
        for i in 0..bodies.len() {
            assert!(
                !d.join(format!("src-{i}")).exists(),
                "the feed's files are deleted"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
