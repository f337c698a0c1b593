//! The burst path: pacing releases a whole burst quantum back to back and then waits, frames
//! are written in place into the caller's buffer (and a buffer too small for the negotiated
//! frame fails the transfer with a typed error), and the receiver answers for every stream
//! with unacknowledged frames in one ACK round.

use std::time::{Duration, Instant};

use dwcp_transfer::sim::SimRng;
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig, SenderState,
    TransferError,
};

const MTU: usize = 1500;

fn pair(len: usize, max_burst_frames: u32) -> (Sender, Receiver, Instant) {
    pair_at(Instant::now(), len, max_burst_frames)
}

fn pair_at(epoch: Instant, len: usize, max_burst_frames: u32) -> (Sender, Receiver, Instant) {
    let cfg = SenderConfig {
        mtu: Some(MTU),
        max_burst_frames,
        initial_cwnd_frames: 1000,
        min_cwnd_frames: 1000,
        ..SenderConfig::default()
    };
    let data = SimRng::new(5).bytes(len);
    let s = Sender::new(cfg, Box::new(MemSource::new(data)), epoch).unwrap();
    let r = Receiver::new(
        ReceiverConfig::default(),
        Box::new(MemSink::new()),
        Box::new(MemJournal::new()),
    );
    (s, r, epoch)
}

/// HELLO / HELLO_ACK at `now` with a 100 us round trip.
fn handshake(s: &mut Sender, r: &mut Receiver, now: Instant) -> Instant {
    let hello = s.poll_transmit(now).expect("HELLO");
    r.handle_frame(now, &hello);
    let later = now + Duration::from_micros(100);
    while let Some(a) = r.poll_transmit(now) {
        s.handle_frame(later, &a);
    }
    assert_eq!(s.state(), SenderState::Transfer);
    later
}

fn drain(s: &mut Sender, now: Instant) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit(now)).collect()
}

#[test]
fn pacing_releases_one_burst_quantum_then_waits_for_the_next() {
    let (mut s, mut r, epoch) = pair(4_000_000, 16);
    let now = handshake(&mut s, &mut r, epoch);
    let first = drain(&mut s, now);
    let quantum = s.burst_quantum() as usize;
    let bytes: usize = first.iter().map(Vec::len).sum();
    assert!(first.len() >= 2, "a burst holds at least two frames");
    assert!(
        first.len() <= 16,
        "at most max_burst_frames: {}",
        first.len()
    );
    assert!(
        bytes >= quantum && bytes < quantum + MTU,
        "{bytes} B for a {quantum} B quantum"
    );
    assert!(
        first.iter().all(|f| f.len() <= MTU - 28),
        "frames fit the MTU"
    );
    // nothing more until the pacer's next send time, then another burst
    let next = s.poll_timeout().expect("a timer");
    assert!(next > now, "the next burst is in the future");
    assert!(drain(&mut s, next - Duration::from_nanos(1)).is_empty());
    let second = drain(&mut s, next);
    assert!(!second.is_empty(), "a burst at the next send time");
    assert!(second.len() <= 16);
}

#[test]
fn a_larger_burst_limit_sends_more_frames_per_burst() {
    let counts: Vec<usize> = [4, 32]
        .iter()
        .map(|&b| {
            let (mut s, mut r, epoch) = pair(4_000_000, b);
            let now = handshake(&mut s, &mut r, epoch);
            drain(&mut s, now).len()
        })
        .collect();
    assert!(counts[0] <= 4, "{counts:?}");
    assert!(counts[1] > counts[0], "{counts:?}");
}

#[test]
fn a_transmit_buffer_smaller_than_the_frame_fails_with_a_typed_error() {
    let (mut s, mut r, epoch) = pair(100_000, 16);
    let now = handshake(&mut s, &mut r, epoch);
    let mut small = vec![0u8; 600];
    // the data frame does not fit: the transfer fails, and what fits is its CLOSE
    if let Some(n) = s.poll_transmit_into(now, &mut small) {
        assert!(n < 200, "a {n}-byte frame is no data frame");
    }
    assert_eq!(s.state(), SenderState::Failed);
    assert!(
        matches!(s.error(), Some(TransferError::Encode { .. })),
        "{:?}",
        s.error()
    );
}

#[test]
fn frames_written_in_place_equal_the_allocated_ones() {
    // two identical senders: one writes into a caller's buffer, one allocates
    let epoch = Instant::now();
    let (mut a, mut ra, _) = pair_at(epoch, 300_000, 16);
    let (mut b, mut rb, _) = pair_at(epoch, 300_000, 16);
    let now = handshake(&mut a, &mut ra, epoch);
    handshake(&mut b, &mut rb, epoch);
    let mut buf = vec![0xAAu8; 9000];
    let mut n = 0;
    while let Some(len) = a.poll_transmit_into(now, &mut buf) {
        let want = b.poll_transmit(now).expect("the same schedule");
        assert_eq!(&buf[..len], &want[..]);
        n += 1;
    }
    assert!(b.poll_transmit(now).is_none());
    assert!(n >= 2);
}

#[test]
fn one_ack_round_answers_every_stream_with_unacknowledged_frames() {
    let (mut s, mut r, epoch) = pair(4_000_000, 16);
    let now = handshake(&mut s, &mut r, epoch);
    let frames = drain(&mut s, now);
    assert!(frames.len() >= 3);
    // the first three frames go round robin over the first two streams: 0, 1, 0
    for f in &frames[..3] {
        r.handle_frame(now, f);
    }
    let acks: Vec<_> = std::iter::from_fn(|| r.poll_transmit(now)).collect();
    // stream 0 reached ack_every (2) and answers at once; stream 1 (one frame) answers in
    // the same round instead of after max_ack_delay
    assert_eq!(acks.len(), 2, "one ACK per stream in the round");
    let st = r.stats();
    assert_eq!(st.acks_sent, 2);
}
