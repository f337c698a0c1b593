//! The sender's timeline (`SenderStats::timeline`) and its HELLO retransmission schedule.

use std::time::{Duration, Instant};

use dwcp_transfer::sender::HELLO_FIRST_RETRY;
use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig, SenderState,
};

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

/// Drives a sender that never hears back; returns the send times of its HELLOs relative to
/// `epoch` and when it gave up.
fn unanswered_hellos(cfg: SenderConfig) -> (Vec<Duration>, Duration, Sender) {
    let epoch = Instant::now();
    let mut s = Sender::new(cfg, Box::new(MemSource::new(vec![7; 10_000])), epoch).unwrap();
    let mut now = epoch;
    let mut sent = Vec::new();
    for _ in 0..100 {
        while s.poll_transmit(now).is_some() {
            sent.push(now - epoch);
        }
        if s.state() == SenderState::Failed {
            return (sent, now - epoch, s);
        }
        now = s.poll_timeout().expect("a handshaking sender has a timer");
        s.handle_timeout(now);
    }
    panic!("sender never gave up: {sent:?}");
}

#[test]
fn first_hello_retry_is_early_when_the_rtt_is_unknown() {
    let (sent, failed_at, s) = unanswered_hellos(SenderConfig::default());
    let ms = Duration::from_millis;
    // 0, then 250 ms, then the 1 s initial RTO with backoff (capped at max_rto 2 s)
    assert_eq!(
        sent,
        vec![ms(0), HELLO_FIRST_RETRY, ms(1250), ms(3250), ms(5250)]
    );
    assert_eq!(failed_at, ms(7250));
    let t = s.stats().timeline;
    assert_eq!((t.hellos_sent, t.hello_retransmissions), (5, 4));
    assert!(t.source_hashed.is_some());
    assert_eq!(t.handshake_done, None);
    assert_eq!(t.verified_close, None);

    // a known RTT (short initial_rto) keeps the plain schedule
    let cfg = SenderConfig {
        initial_rto: ms(300),
        ..SenderConfig::default()
    };
    let (sent, _, _) = unanswered_hellos(cfg);
    assert_eq!(sent, vec![ms(0), ms(300), ms(900), ms(2100), ms(4100)]);
}

#[test]
fn timeline_is_ordered_and_complete_after_a_lossy_transfer() {
    let data = object(4_000_000, 3);
    let epoch = Instant::now();
    let sink = MemSink::new();
    let sender = Sender::new(
        SenderConfig::default(),
        Box::new(MemSource::new(data.clone())),
        epoch,
    )
    .unwrap();
    let receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink.clone()),
        Box::new(MemJournal::new()),
    );
    let link = LinkConfig {
        loss: 0.01,
        ..LinkConfig::clean(100e6, Duration::from_millis(20))
    };
    let mut sim = Sim::new(epoch, Link::new(link, 5), Link::new(link, 5 ^ 0xFFFF));
    sim.add_flow(sender, receiver, epoch);
    sim.run(Duration::from_secs(60));
    let s = &sim.flows[0].sender;
    assert_eq!(s.state(), SenderState::Complete, "{:?}", s.error());
    assert!(sink.contents() == data);
    let t = s.stats().timeline;
    eprintln!("{t:?}");
    let hs = t.handshake_done.expect("handshake");
    let last_new = t.last_new_chunk_sent.expect("last new chunk");
    let close = t.verified_close.expect("verified close");
    let exit = t.startup_exit.expect("startup exit on a 4 MB transfer");
    // the handshake takes one 20 ms round trip (virtual time) plus the real hashing time
    assert!(hs >= Duration::from_millis(20), "{t:?}");
    assert!(t.source_hashed.unwrap() <= hs);
    assert!(hs <= exit && exit <= last_new && last_new < close, "{t:?}");
    if let Some(p) = t.probe_bw {
        assert!(exit <= p && p <= close, "{t:?}");
    }
    if let Some(a) = t.all_acked {
        assert!(last_new < a && a <= close, "{t:?}");
    }
    assert_eq!(t.hellos_sent, 1 + t.hello_retransmissions);
}

#[test]
fn longest_silence_measures_a_receiver_stall() {
    let data = object(2_000_000, 9);
    let epoch = Instant::now();
    let mut sender = Sender::new(
        SenderConfig::default(),
        Box::new(MemSource::new(data.clone())),
        epoch,
    )
    .unwrap();
    let mut receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(MemSink::new()),
        Box::new(MemJournal::new()),
    );
    // a lossless zero-delay exchange driven by hand; the receiver is deaf from 5 ms to 605 ms
    // (the whole object takes about 10 ms of such an exchange)
    let ms = Duration::from_millis;
    let mut now = epoch;
    while now < epoch + ms(2000) && sender.state() != SenderState::Complete {
        let deaf = now >= epoch + ms(5) && now < epoch + ms(605);
        while let Some(d) = sender.poll_transmit(now) {
            if !deaf {
                receiver.handle_frame(now, &d);
            }
        }
        while let Some(d) = receiver.poll_transmit(now) {
            sender.handle_frame(now, &d);
        }
        receiver.handle_timeout(now);
        sender.handle_timeout(now);
        now += ms(1);
    }
    let t = sender.stats().timeline;
    assert!(
        t.longest_silence >= ms(550) && t.longest_silence <= ms(1500),
        "{t:?}"
    );
    let end = t.longest_silence_end.unwrap();
    assert!(end >= ms(605), "{t:?}");
}
