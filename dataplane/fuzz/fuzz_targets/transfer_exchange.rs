//! Fuzz target: the transfer engine's receive paths (`Receiver::handle_frame` through the
//! borrowed DATA decoder, `Sender::handle_frame` through the ACK path) on a genuine exchange
//! that the input perturbs.
//!
//! A sender and a receiver move a small object; the input is a list of 4-byte operations:
//! deliver the next genuine frame in either direction unchanged, with one byte flipped and the
//! CRC32C repaired (so the change reaches the header rules, the stream and range bookkeeping
//! and the payload decoders), with one byte flipped and the CRC left as it is, or deliver raw
//! input bytes as a datagram. Checks that nothing panics and that a receiver that reports the
//! object complete holds exactly the sender's object. The first byte also decides whether the
//! sender hashes first or sends a late digest (LATE_DIGEST).
#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dwcp_proto::{HEADER_LEN, Trailer, frame_crc, parse_frame_unverified};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig,
};
use libfuzzer_sys::fuzz_target;

const OBJECT_LEN: usize = 20_000;

fn object() -> Vec<u8> {
    // zero, text and pseudo-random regions, so every codec path is reachable
    let mut v = vec![0u8; OBJECT_LEN];
    for (i, b) in v.iter_mut().enumerate().skip(OBJECT_LEN / 4) {
        *b = if i < OBJECT_LEN / 2 {
            b"the quick brown fox "[i % 20]
        } else {
            (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]
        };
    }
    v
}

/// Flips one byte of `d` and, with `repair`, recomputes the CRC32C trailer.
fn mutate(d: &mut [u8], at: usize, x: u8, repair: bool) {
    if d.is_empty() {
        return;
    }
    let i = at % d.len();
    d[i] ^= x.max(1);
    if repair
        && let Ok(f) = parse_frame_unverified(d)
        && let Trailer::Crc32c(_) = f.trailer
    {
        let end = HEADER_LEN + f.payload.len();
        let crc = frame_crc(&d[..HEADER_LEN], &d[HEADER_LEN..end]);
        d[end..end + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let epoch = Instant::now();
    let obj = object();
    let cfg = SenderConfig {
        mtu: Some(1500),
        ..SenderConfig::default()
    };
    // An odd first byte gives the source an identity: the sender offers LATE_DIGEST and the
    // digest travels in a KEEPALIVE (which the operations perturb like any frame).
    let mut source = MemSource::new(obj.clone());
    if data.first().is_some_and(|b| b & 1 == 1) {
        source = source.with_identity(0x1de1_7171);
    }
    let Ok(mut sender) = Sender::new(cfg, Box::new(source), epoch) else {
        return;
    };
    let sink = MemSink::new();
    let mut receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink.clone()),
        Box::new(MemJournal::new()),
    );
    let mut to_rx: VecDeque<Vec<u8>> = VecDeque::new();
    let mut to_tx: VecDeque<Vec<u8>> = VecDeque::new();
    let mut now = epoch;
    for op in data.chunks(4) {
        let [kind, a, b, c] = [
            op[0],
            *op.get(1).unwrap_or(&0),
            *op.get(2).unwrap_or(&0),
            *op.get(3).unwrap_or(&0),
        ];
        now += Duration::from_micros(u64::from(a) * 10);
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        if receiver.poll_timeout().is_some_and(|t| t <= now) {
            receiver.handle_timeout(now);
        }
        while let Some(d) = sender.poll_transmit(now) {
            to_rx.push_back(d);
        }
        while let Some(d) = receiver.poll_transmit(now) {
            to_tx.push_back(d);
        }
        let toward_rx = kind & 0x10 == 0;
        let queue = if toward_rx { &mut to_rx } else { &mut to_tx };
        let d = match kind % 4 {
            0 => queue.pop_front(),
            1 | 2 => queue.pop_front().map(|mut d| {
                mutate(
                    &mut d,
                    usize::from(b) << 8 | usize::from(c),
                    a,
                    kind % 4 == 1,
                );
                d
            }),
            _ => {
                let n = usize::from(a) % (data.len() + 1);
                Some(data[..n].to_vec())
            }
        };
        let Some(d) = d else { continue };
        if toward_rx {
            receiver.handle_frame(now, &d);
        } else {
            sender.handle_frame(now, &d);
        }
    }
    let _ = (sender.stats(), receiver.stats());
    if receiver.is_complete() {
        assert_eq!(
            sink.contents()[..OBJECT_LEN],
            obj[..],
            "completed with other bytes"
        );
    }
});
