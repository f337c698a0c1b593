//! The stream carrier over loopback with the UDP backend (unprivileged): byte-identical
//! delivery in order, partial segments flushed while the input is idle, an input failure
//! on the sending side failing the receiving side without the end of the stream, and SEALED
//! carries (every segment authenticated and encrypted; a key the receiver does not allow fails
//! the carry and delivers nothing).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_engine::io::{BackendChoice, IoConfig};
use dwcp_engine::runner::RunOptions;
use dwcp_engine::stream::{
    OutputOpener, StreamConfig, StreamError, StreamInput, recv_stream, send_stream,
};
use dwcp_secure::{Secure, SecureConfig, StaticKeypair, generate_keypair};

fn opts(local: u16, peer: u16, core: usize) -> RunOptions {
    let lo = Ipv4Addr::LOCALHOST;
    let mut io = IoConfig::new(
        "lo",
        SocketAddrV4::new(lo, local),
        SocketAddrV4::new(lo, peer),
    );
    io.choice = BackendChoice::Udp;
    RunOptions {
        io,
        core,
        timeout: Duration::from_secs(30),
        idle_yield: true,
    }
}

/// A shared in-memory output.
#[derive(Clone, Default)]
struct Out(Arc<Mutex<Vec<u8>>>);

impl Write for Out {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn opener(out: &Out) -> OutputOpener {
    let o = out.clone();
    Box::new(move || Ok(Box::new(o) as Box<dyn Write + Send>))
}

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            if (i / 65536) % 3 == 0 {
                return 0;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A reader fed by a channel: each message is returned by one read; `Err` fails the read.
struct ChanReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    cur: Vec<u8>,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cur.is_empty() {
            match self.rx.recv() {
                Ok(Ok(v)) => self.cur = v,
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.drain(..n);
        Ok(n)
    }
}

#[test]
fn stream_arrives_byte_identical_in_order() {
    let cfg = StreamConfig {
        segment_bytes: 1 << 20,
        ..StreamConfig::default()
    };
    let input = data(12 << 20, 7);
    let out = Out::default();
    let (rcfg, ropts, open) = (cfg.clone(), opts(7711, 7710, 1), opener(&out));
    let rx = std::thread::spawn(move || recv_stream(open, &rcfg, &ropts, None));
    let src = std::io::Cursor::new(input.clone());
    let sent = send_stream(
        StreamInput::Reader(Box::new(src)),
        &cfg,
        &opts(7710, 7711, 0),
        None,
    )
    .expect("send");
    let got = rx.join().unwrap().expect("recv");
    assert_eq!(sent.bytes, input.len() as u64);
    assert_eq!(got.bytes, input.len() as u64);
    assert!(sent.segments >= 12, "segments {}", sent.segments);
    assert_eq!(got.segments, sent.segments);
    assert!(sent.max_in_flight >= 2, "pipelined: {sent:?}");
    let g = out.0.lock().unwrap();
    assert!(*g == input, "output differs from the input");
}

#[test]
fn idle_input_is_flushed_without_waiting_for_a_full_segment() {
    let cfg = StreamConfig {
        segment_bytes: 8 << 20,
        idle_flush: Duration::from_millis(5),
        ..StreamConfig::default()
    };
    let out = Out::default();
    let (rcfg, ropts, open) = (cfg.clone(), opts(7721, 7720, 1), opener(&out));
    let rx = std::thread::spawn(move || recv_stream(open, &rcfg, &ropts, None));
    let (tx, crx) = mpsc::channel();
    let reader = ChanReader {
        rx: crx,
        cur: Vec::new(),
    };
    let s = std::thread::spawn(move || {
        send_stream(
            StreamInput::Reader(Box::new(reader)),
            &cfg,
            &opts(7720, 7721, 0),
            None,
        )
    });
    // 3 small writes with pauses: each must reach the output long before the stream ends.
    let mut written = 0;
    for i in 0..3u8 {
        tx.send(Ok(vec![i; 1000])).unwrap();
        written += 1000;
        let start = Instant::now();
        loop {
            if out.0.lock().unwrap().len() >= written {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "write {i} not delivered while the stream stays open"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(tx);
    let sent = s.join().unwrap().expect("send");
    let got = rx.join().unwrap().expect("recv");
    assert_eq!(sent.bytes, 3000);
    assert_eq!(got.bytes, 3000);
    assert!(sent.segments >= 4, "3 idle flushes + the end: {sent:?}");
}

#[test]
fn input_failure_fails_the_receiver_without_the_end() {
    let cfg = StreamConfig {
        segment_bytes: 1 << 20,
        ..StreamConfig::default()
    };
    let out = Out::default();
    let (rcfg, ropts, open) = (cfg.clone(), opts(7731, 7730, 1), opener(&out));
    let rx = std::thread::spawn(move || recv_stream(open, &rcfg, &ropts, None));
    let (tx, crx) = mpsc::channel();
    tx.send(Ok(data(3 << 20, 3))).unwrap();
    tx.send(Err("source connection reset".to_string())).unwrap();
    let reader = ChanReader {
        rx: crx,
        cur: Vec::new(),
    };
    let sent = send_stream(
        StreamInput::Reader(Box::new(reader)),
        &cfg,
        &opts(7730, 7731, 0),
        None,
    );
    assert!(
        matches!(sent, Err(StreamError::Aborted(ref m)) if m.contains("reset")),
        "{sent:?}"
    );
    let got = rx.join().unwrap();
    assert!(
        matches!(got, Err(StreamError::Aborted(ref m)) if m.contains("reset")),
        "{got:?}"
    );
    // What was delivered is an in-order prefix of the input, never more.
    let g = out.0.lock().unwrap();
    assert!(g.len() <= 3 << 20);
    assert!(g[..] == data(3 << 20, 3)[..g.len()]);
}

fn keys(me: &StaticKeypair, peer: &StaticKeypair) -> SecureConfig {
    SecureConfig {
        identity: Some(me.clone()),
        peers: vec![peer.public],
        require_sealed: true,
        epoch: 1,
        ..SecureConfig::default()
    }
}

#[test]
fn sealed_carry_arrives_byte_identical() {
    let (a, b) = (generate_keypair().unwrap(), generate_keypair().unwrap());
    let base = StreamConfig {
        segment_bytes: 1 << 20,
        ..StreamConfig::default()
    };
    let scfg = StreamConfig {
        security: Some(Secure::factory(keys(&a, &b)).unwrap()),
        ..base.clone()
    };
    let rcfg = StreamConfig {
        security: Some(Secure::factory(keys(&b, &a)).unwrap()),
        ..base
    };
    let input = data(5 << 20, 11);
    let out = Out::default();
    let (ropts, open) = (opts(7741, 7740, 1), opener(&out));
    let rx = std::thread::spawn(move || recv_stream(open, &rcfg, &ropts, None));
    let src = std::io::Cursor::new(input.clone());
    let sent = send_stream(
        StreamInput::Reader(Box::new(src)),
        &scfg,
        &opts(7740, 7741, 0),
        None,
    )
    .expect("send");
    let got = rx.join().unwrap().expect("recv");
    assert!(sent.sealed.is_some(), "segments sealed: {sent:?}");
    assert_eq!(got.sealed, sent.sealed, "{got:?}");
    assert!(sent.segments >= 5, "{sent:?}");
    assert_eq!(got.bytes, input.len() as u64);
    assert!(
        *out.0.lock().unwrap() == input,
        "output differs from the input"
    );
}

#[test]
fn a_key_the_receiver_does_not_allow_fails_the_carry() {
    let (a, b, c) = (
        generate_keypair().unwrap(),
        generate_keypair().unwrap(),
        generate_keypair().unwrap(),
    );
    let base = StreamConfig {
        segment_bytes: 1 << 20,
        idle_timeout: Duration::from_secs(3),
        ..StreamConfig::default()
    };
    // The sender uses key a; the receiver only allows c.
    let scfg = StreamConfig {
        security: Some(Secure::factory(keys(&a, &b)).unwrap()),
        ..base.clone()
    };
    let rcfg = StreamConfig {
        security: Some(Secure::factory(keys(&b, &c)).unwrap()),
        ..base
    };
    let out = Out::default();
    let (ropts, open) = (opts(7751, 7750, 1), opener(&out));
    let rx = std::thread::spawn(move || recv_stream(open, &rcfg, &ropts, None));
    let src = std::io::Cursor::new(data(2 << 20, 5));
    let start = Instant::now();
    let sent = send_stream(
        StreamInput::Reader(Box::new(src)),
        &scfg,
        &opts(7750, 7751, 0),
        None,
    );
    assert!(
        matches!(sent, Err(StreamError::Segment { seq: 0, .. })),
        "{sent:?}"
    );
    let got = rx.join().unwrap();
    assert!(got.is_err(), "the receiver must fail: {got:?}");
    assert!(out.0.lock().unwrap().is_empty(), "nothing is delivered");
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// Whether a UDP socket is bound to 127.0.0.1:`port` (read from /proc, without binding).
fn udp_bound(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(&want))
        })
        .unwrap_or(false)
}

#[test]
fn foreign_and_malformed_datagrams_are_counted_and_dropped_alone() {
    use dwcp_proto::{FrameType, Header, Version, build_frame};
    let cfg = StreamConfig {
        segment_bytes: 1 << 20,
        ..StreamConfig::default()
    };
    let input = data(4 << 20, 11);
    let out = Out::default();
    let (rcfg, ropts, open) = (cfg.clone(), opts(7731, 7730, 1), opener(&out));
    let rx = std::thread::spawn(move || recv_stream(open, &rcfg, &ropts, None));
    let t0 = Instant::now();
    while !udp_bound(7731) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "receiver never bound"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // From the sender's address (the receiver's socket is connected to it), before the
    // sender starts: bytes that are not DWCP, a DATA frame of a connection nobody opened,
    // and a HELLO far outside the segments the receiver accepts.
    let mut junk: Vec<Vec<u8>> = vec![b"not a dwcp frame".to_vec(), vec![0xD0; 1400]];
    for (ft, conn) in [
        (FrameType::Data, 0xDEAD_0001),
        (FrameType::Hello, 0x00F0_0000),
    ] {
        let mut h = Header::new(Version::V3, ft);
        h.conn_id = conn;
        let mut f = vec![0u8; 256];
        let n = build_frame(&h, b"", &mut f).unwrap();
        f.truncate(n);
        junk.push(f);
    }
    {
        let s = std::net::UdpSocket::bind("127.0.0.1:7730").unwrap();
        for j in &junk {
            s.send_to(j, "127.0.0.1:7731").unwrap();
        }
    }
    let sent = send_stream(
        StreamInput::Reader(Box::new(std::io::Cursor::new(input.clone()))),
        &cfg,
        &opts(7730, 7731, 0),
        None,
    )
    .expect("send");
    let got = rx.join().unwrap().expect("recv");
    assert_eq!(sent.bytes, input.len() as u64);
    assert!(
        got.frames_unroutable >= junk.len() as u64,
        "each foreign datagram counted: {got:?}"
    );
    assert_eq!(got.frames_corrupt, 0, "no segment saw them: {got:?}");
    let g = out.0.lock().unwrap();
    assert!(*g == input, "output differs from the input");
}
