//! Tamper tests over a deterministic in-process link (virtual time, fixed seeds): an
//! adversary on the path injects forged, replayed, truncated and bit-flipped frames in both
//! directions at every phase (handshake, transfer, close), or rewrites handshake frames.
//! Every drop is counted by reason, the sink only ever receives correct bytes, and the
//! transfer completes with the right hash; wrong keys fail the handshake with a clear error.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_proto::{DropReason, Flags, FrameType, HEADER_LEN, Header, TAG_LEN, build_frame};
use dwcp_secure::{Psk, PublicKey, Secure, SecureConfig, Suite, SuitePref, generate_keypair};
use dwcp_transfer::sim::SimRng;
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, ReceiverState, Sender, SenderConfig,
    SenderState, Sink, TransferError,
};

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

/// A sink that checks every write against the source and counts wrong ones.
#[derive(Debug, Clone)]
struct CheckingSink {
    inner: MemSink,
    expect: Arc<Vec<u8>>,
    bad: Arc<Mutex<u64>>,
}

impl Sink for CheckingSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let o = offset as usize;
        if self.expect.get(o..o + data.len()) != Some(data) {
            *self.bad.lock().expect("lock") += 1;
        }
        self.inner.write_at(offset, data)
    }
    fn flush_durable(&mut self) -> io::Result<()> {
        self.inner.flush_durable()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Dir {
    ToReceiver,
    ToSender,
}

/// What the adversary does with a frame going `dir`: returns the datagrams to deliver
/// instead (the original first, unless it is dropped or replaced).
type Adversary = dyn FnMut(Dir, &[u8], &mut SimRng) -> Vec<Vec<u8>>;

/// A datagram on the path: arrival time, tie-breaker, direction, bytes.
type InFlight = (Instant, u64, Dir, Vec<u8>);

struct Run {
    sender: Sender,
    receiver: Receiver,
    bad_writes: u64,
    sink: MemSink,
}

fn run(
    data: &[u8],
    s_sec: Option<SecureConfig>,
    r_sec: Option<SecureConfig>,
    adversary: &mut Adversary,
    seed: u64,
    limit: Duration,
) -> Run {
    let epoch = Instant::now();
    // the sender's keys come through its configuration, the receiver's through set_security
    let scfg = SenderConfig {
        chunk_size: 1200,
        max_streams: 4,
        initial_streams: 2,
        security: s_sec.map(|c| Secure::factory(c).expect("sender config")),
        ..Default::default()
    };
    let mut sender =
        Sender::new(scfg, Box::new(MemSource::new(data.to_vec())), epoch).expect("sender");
    let sink = CheckingSink {
        inner: MemSink::new(),
        expect: Arc::new(data.to_vec()),
        bad: Arc::new(Mutex::new(0)),
    };
    let mut receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink.clone()),
        Box::new(MemJournal::new()),
    );
    if let Some(c) = r_sec {
        receiver.set_security(Box::new(Secure::new(c).expect("receiver config")));
    }
    let mut rng = SimRng::new(seed);
    let delay = Duration::from_millis(2);
    let mut q: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut n = 0u64;
    let mut now = epoch;
    let end = epoch + limit;
    let mut linger_until: Option<Instant> = None;
    while now < end {
        for (dir, out) in [
            (
                Dir::ToReceiver,
                std::iter::from_fn(|| sender.poll_transmit(now)).collect::<Vec<_>>(),
            ),
            (
                Dir::ToSender,
                std::iter::from_fn(|| receiver.poll_transmit(now)).collect::<Vec<_>>(),
            ),
        ] {
            for d in out {
                for (i, x) in adversary(dir, &d, &mut rng).into_iter().enumerate() {
                    n += 1;
                    let at = now + delay + Duration::from_micros(i as u64 * 150);
                    q.push(Reverse((at, n, dir, x)));
                }
            }
        }
        let finished =
            |s: &Sender| matches!(s.state(), SenderState::Complete | SenderState::Failed);
        if finished(&sender) {
            let l = *linger_until.get_or_insert(now + Duration::from_millis(50));
            if now >= l {
                break;
            }
        }
        let mut next = end;
        if let Some(Reverse((t, ..))) = q.peek() {
            next = next.min(*t);
        }
        for t in [sender.poll_timeout(), receiver.poll_timeout()]
            .into_iter()
            .flatten()
        {
            next = next.min(t.max(now));
        }
        if let Some(l) = linger_until {
            next = next.min(l);
        }
        now = next.max(now + Duration::from_micros(1));
        while q.peek().is_some_and(|Reverse((t, ..))| *t <= now) {
            let Some(Reverse((_, _, dir, d))) = q.pop() else {
                break;
            };
            match dir {
                Dir::ToReceiver => receiver.handle_frame(now, &d),
                Dir::ToSender => sender.handle_frame(now, &d),
            }
        }
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        if receiver.poll_timeout().is_some_and(|t| t <= now) {
            receiver.handle_timeout(now);
        }
    }
    let bad_writes = *sink.bad.lock().expect("lock");
    Run {
        sender,
        receiver,
        bad_writes,
        sink: sink.inner,
    }
}

struct Keys {
    s: SecureConfig,
    r: SecureConfig,
}

fn static_keys() -> Keys {
    let a = generate_keypair().expect("keygen");
    let b = generate_keypair().expect("keygen");
    Keys {
        s: SecureConfig {
            identity: Some(a.clone()),
            peers: vec![b.public],
            require_sealed: true,
            epoch: 1_000,
            ..Default::default()
        },
        r: SecureConfig {
            identity: Some(b),
            peers: vec![a.public],
            require_sealed: true,
            ..Default::default()
        },
    }
}

fn flip_bit(d: &[u8], rng: &mut SimRng) -> Vec<u8> {
    let mut c = d.to_vec();
    let bit = (rng.next_u64() % (c.len() as u64 * 8)) as usize;
    c[bit / 8] ^= 1 << (bit % 8);
    c
}

/// The full menu of per-frame attacks, on every frame in both directions.
fn hostile_path() -> impl FnMut(Dir, &[u8], &mut SimRng) -> Vec<Vec<u8>> {
    let mut seen: Vec<(Dir, Vec<u8>)> = Vec::new();
    move |dir, d, rng| {
        let mut out = vec![d.to_vec()];
        // replay: the same frame again, and an older captured frame of this direction
        if rng.chance(0.3) {
            out.push(d.to_vec());
        }
        let old: Vec<&Vec<u8>> = seen
            .iter()
            .filter(|(x, _)| *x == dir)
            .map(|(_, f)| f)
            .collect();
        if !old.is_empty() && rng.chance(0.3) {
            out.push(old[(rng.next_u64() % old.len() as u64) as usize].clone());
        }
        // bit flips anywhere (header, payload, tag)
        if rng.chance(0.3) {
            out.push(flip_bit(d, rng));
        }
        // truncation
        if rng.chance(0.2) && d.len() > 1 {
            out.push(d[..(rng.next_u64() % d.len() as u64) as usize].to_vec());
        }
        // forged SEALED frame: a plausible header (this frame's, next sequence numbers) with a
        // random payload and tag
        if rng.chance(0.2)
            && let Ok(h) = Header::parse(d)
            && !matches!(h.frame_type, FrameType::Hello | FrameType::HelloAck)
        {
            let mut f = h;
            f.flags.insert(Flags::SEALED);
            f.seq = h.seq + 1 + rng.next_u64() % 8;
            let plen = (rng.next_u64() % 1300) as usize;
            f.payload_len = plen as u32;
            let mut v = f.to_bytes().to_vec();
            v.extend((0..plen + TAG_LEN).map(|_| rng.next_u64() as u8));
            out.push(v);
        }
        // forged unsealed frame with a valid CRC on the sealed connection
        if rng.chance(0.2)
            && let Ok(h) = Header::parse(d)
            && h.frame_type == FrameType::Data
        {
            let mut f = h;
            f.flags.remove(Flags::SEALED);
            f.seq = h.seq + 100;
            let payload = vec![0xEE; 64];
            let mut buf = vec![0u8; HEADER_LEN + 64 + 4];
            if let Ok(n) = build_frame(&f, &payload, &mut buf) {
                buf.truncate(n);
                out.push(buf);
            }
        }
        seen.push((dir, d.to_vec()));
        if seen.len() > 4096 {
            seen.remove(0);
        }
        out
    }
}

#[test]
fn sealed_transfer_survives_a_hostile_path_and_counts_every_drop() {
    let data = object(600_000, 7);
    let k = static_keys();
    let mut adv = hostile_path();
    let r = run(
        &data,
        Some(k.s),
        Some(k.r),
        &mut adv,
        42,
        Duration::from_secs(30),
    );
    assert_eq!(
        r.sender.state(),
        SenderState::Complete,
        "sender error {:?}",
        r.sender.error()
    );
    assert_eq!(
        r.receiver.state(),
        ReceiverState::Complete,
        "receiver error {:?}",
        r.receiver.error()
    );
    assert_eq!(r.bad_writes, 0, "a tampered frame reached the sink");
    assert!(r.sink.contents() == data, "sink differs from source");
    let rs = r.receiver.stats();
    let ss = r.sender.stats();
    assert!(
        rs.sealed.is_some() && ss.sealed.is_some(),
        "not sealed: {:?} {:?}",
        rs.sealed,
        ss.sealed
    );
    for reason in [
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::Truncated,
        DropReason::Unauthenticated,
    ] {
        assert!(
            rs.drops.get(reason) > 0,
            "receiver {reason}: {:?}",
            rs.drops.nonzero().collect::<Vec<_>>()
        );
    }
    for reason in [DropReason::AuthFailed, DropReason::Replay] {
        assert!(
            ss.drops.get(reason) > 0,
            "sender {reason}: {:?}",
            ss.drops.nonzero().collect::<Vec<_>>()
        );
    }
    eprintln!(
        "receiver drops {:?}\nsender drops {:?}",
        rs.drops.nonzero().collect::<Vec<_>>(),
        ss.drops.nonzero().collect::<Vec<_>>()
    );
}

#[test]
fn every_suite_and_key_mode_transfers_sealed() {
    let data = object(200_000, 9);
    let psk = Psk::from_bytes([0x42; 32]);
    for suite in [Suite::Aes128Gcm, Suite::ChaCha20Poly1305] {
        for mode in ["ik", "ikpsk2", "nnpsk0"] {
            let mut k = static_keys();
            match mode {
                "ikpsk2" => {
                    k.s.psk = Some(psk.clone());
                    k.r.psk = Some(psk.clone());
                }
                "nnpsk0" => {
                    for c in [&mut k.s, &mut k.r] {
                        c.identity = None;
                        c.peers.clear();
                        c.psk = Some(psk.clone());
                    }
                }
                _ => {}
            }
            k.s.suite = SuitePref::Force(suite);
            k.r.suite = SuitePref::Force(suite);
            let mut adv = |_: Dir, d: &[u8], _: &mut SimRng| vec![d.to_vec()];
            let r = run(
                &data,
                Some(k.s),
                Some(k.r),
                &mut adv,
                1,
                Duration::from_secs(10),
            );
            assert_eq!(
                r.sender.state(),
                SenderState::Complete,
                "{mode} {suite:?}: {:?}",
                r.sender.error()
            );
            assert!(r.sink.contents() == data);
            assert_eq!(r.receiver.stats().sealed, Some(suite.name()), "{mode}");
            assert_eq!(r.sender.stats().sealed, Some(suite.name()), "{mode}");
        }
    }
}

fn close_message(e: Option<&TransferError>) -> (u16, String) {
    match e {
        Some(TransferError::PeerClosed { code, message }) => (*code, message.clone()),
        other => panic!("expected a CLOSE from the peer, got {other:?}"),
    }
}

#[test]
fn wrong_keys_fail_the_handshake_with_a_clear_error() {
    let data = object(50_000, 3);
    let mut pass = |_: Dir, d: &[u8], _: &mut SimRng| vec![d.to_vec()];
    // sender expects another responder key
    let mut k = static_keys();
    k.s.peers = vec![generate_keypair().expect("keygen").public];
    let r = run(
        &data,
        Some(k.s),
        Some(k.r),
        &mut pass,
        1,
        Duration::from_secs(5),
    );
    assert_eq!(r.sender.state(), SenderState::Failed);
    let (code, msg) = close_message(r.sender.error());
    assert_eq!(code, 5, "{msg}");
    assert!(msg.contains("HELLO key exchange does not verify"), "{msg}");
    assert_eq!(r.receiver.state(), ReceiverState::Listening);
    assert_eq!(r.receiver.stats().drops.get(DropReason::AuthFailed), 1);
    assert_eq!(r.sink.contents().len(), 0);

    // receiver does not allow the sender's key
    let mut k = static_keys();
    k.r.peers = vec![PublicKey([9; 32])];
    let r = run(
        &data,
        Some(k.s),
        Some(k.r),
        &mut pass,
        1,
        Duration::from_secs(5),
    );
    let (code, msg) = close_message(r.sender.error());
    assert_eq!(code, 5);
    assert!(msg.contains("not in the allow-list"), "{msg}");

    // different PSKs (IKpsk2 mixes the PSK after message 1: the initiator finds out)
    let mut k = static_keys();
    k.s.psk = Some(Psk::from_bytes([1; 32]));
    k.r.psk = Some(Psk::from_bytes([2; 32]));
    let r = run(
        &data,
        Some(k.s),
        Some(k.r),
        &mut pass,
        1,
        Duration::from_secs(5),
    );
    match r.sender.error() {
        Some(TransferError::Authentication(e)) => {
            assert!(
                e.to_string()
                    .contains("HELLO_ACK key exchange does not verify"),
                "{e}"
            );
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    assert_eq!(r.sender.stats().drops.get(DropReason::AuthFailed), 1);
    assert_eq!(
        r.sink.contents().len(),
        0,
        "nothing written without a verified peer"
    );
}

#[test]
fn sealed_policy_refuses_unsealed_peers_and_plain_peers_still_interoperate() {
    let data = object(50_000, 4);
    let mut pass = |_: Dir, d: &[u8], _: &mut SimRng| vec![d.to_vec()];
    // receiver requires SEALED, sender has no keys: CLOSE code 3
    let k = static_keys();
    let r = run(&data, None, Some(k.r), &mut pass, 1, Duration::from_secs(5));
    assert_eq!(close_message(r.sender.error()).0, 3);
    // sender requires SEALED, receiver has no keys: the sender refuses
    let k = static_keys();
    let r = run(&data, Some(k.s), None, &mut pass, 1, Duration::from_secs(5));
    assert!(
        matches!(r.sender.error(), Some(TransferError::SealedRequired)),
        "{:?}",
        r.sender.error()
    );
    assert!(
        r.sender
            .error()
            .is_some_and(TransferError::is_authentication)
    );
    // keys without the policy: a plain peer gets an unsealed transfer
    let mut k = static_keys();
    k.s.require_sealed = false;
    let r = run(&data, Some(k.s), None, &mut pass, 1, Duration::from_secs(5));
    assert_eq!(r.sender.state(), SenderState::Complete);
    assert_eq!(r.sender.stats().sealed, None);
    assert!(r.sink.contents() == data);
}

/// Rewrites the HELLO's offer (a downgrade: only one stream, no codecs) with a valid CRC.
fn downgrade_hello(d: &[u8]) -> Option<Vec<u8>> {
    let f = dwcp_proto::parse_frame(d).ok()?;
    if f.header.frame_type != FrameType::Hello {
        return None;
    }
    let mut p = f.payload.to_vec();
    p[4..6].copy_from_slice(&1u16.to_be_bytes()); // max_streams = 1
    let mut out = vec![0u8; d.len()];
    let n = build_frame(&f.header, &p, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

#[test]
fn a_rewritten_handshake_offer_is_detected() {
    let data = object(50_000, 5);
    // HELLO rewritten on the path: the responder's Noise check fails on the transcript
    let k = static_keys();
    let mut adv = |dir: Dir, d: &[u8], _: &mut SimRng| match dir {
        Dir::ToReceiver => vec![downgrade_hello(d).unwrap_or_else(|| d.to_vec())],
        Dir::ToSender => vec![d.to_vec()],
    };
    let r = run(
        &data,
        Some(k.s),
        Some(k.r),
        &mut adv,
        1,
        Duration::from_secs(5),
    );
    assert_eq!(close_message(r.sender.error()).0, 5);
    assert_eq!(r.receiver.state(), ReceiverState::Listening);

    // first HELLO_ACK rewritten (window changed): the initiator counts it and completes
    // with the genuine HELLO_ACK answering its HELLO retransmission
    let k = static_keys();
    let mut first = true;
    let mut adv = move |dir: Dir, d: &[u8], _: &mut SimRng| {
        if dir == Dir::ToSender
            && first
            && let Ok(f) = dwcp_proto::parse_frame(d)
            && f.header.frame_type == FrameType::HelloAck
        {
            first = false;
            let mut p = f.payload.to_vec();
            let kex_len = usize::from(u16::from_be_bytes([p[6], p[7]]));
            let w = 48 + kex_len;
            p[w..w + 4].copy_from_slice(&1u32.to_be_bytes()); // window_chunks = 1
            let mut out = vec![0u8; d.len()];
            let n = build_frame(&f.header, &p, &mut out).expect("build");
            out.truncate(n);
            return vec![out];
        }
        vec![d.to_vec()]
    };
    let r = run(
        &data,
        Some(k.s),
        Some(k.r),
        &mut adv,
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        r.sender.state(),
        SenderState::Complete,
        "{:?}",
        r.sender.error()
    );
    assert_eq!(r.sender.stats().drops.get(DropReason::AuthFailed), 1);
    assert!(r.sink.contents() == data);
}

#[test]
fn a_replayed_hello_cannot_reopen_a_connection() {
    use dwcp_transfer::wire::Security;
    let k = static_keys();
    let mut init = Secure::new(k.s).expect("config");
    let mut resp = Secure::new(k.r).expect("config");
    let (m1, _) = init.initiate(7, b"transcript").expect("initiate");
    resp.accept(7, b"transcript", &m1).expect("first accept");
    let e = resp
        .accept(7, b"transcript", &m1)
        .expect_err("replay accepted");
    assert_eq!(e.reason, DropReason::Replay);
    // a later handshake of the same initiator is accepted
    let (m2, _) = init.initiate(8, b"transcript").expect("initiate");
    resp.accept(8, b"transcript", &m2).expect("fresh handshake");
    // the HELLO bound to another connection id does not verify
    let (m3, _) = init.initiate(9, b"transcript").expect("initiate");
    let e = resp
        .accept(10, b"transcript", &m3)
        .expect_err("conn id not bound");
    assert_eq!(e.reason, DropReason::AuthFailed);
}
