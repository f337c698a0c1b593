//! A sender that misses every copy of the receiver's final CLOSE must still complete: the
//! completed receiver has to be there to answer its keepalives. Virtual time, a 50 ms-RTT
//! link, and a blackout of receiver -> sender CLOSE frames after completion (all copies
//! lost, or the sender's host stalled while they arrived). The receiver's owner keeps it
//! running as [`CloseLinger`] says; the same scenario with the fixed linger the runner used
//! before (500 ms, `dwcp recv`'s) ends with the sender failing exactly as seen on a loaded
//! host: its keepalives go unanswered, it reconnects, and gets "no HELLO_ACK after 5
//! HELLOs" (or, with other timings, "peer silent for longer than the idle timeout").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dwcp_transfer::receiver::CloseLinger;
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, ReceiverState, Sender, SenderConfig,
    SenderState, TransferError,
};

const ONE_WAY: Duration = Duration::from_millis(25);
const FRAME_CLOSE: u8 = 0x3F;

enum Policy {
    Fixed(Duration),
    Adaptive { min: Duration, cap: Duration },
}

struct Outcome {
    sender: SenderState,
    error: Option<String>,
    receiver_left_after: Option<Duration>,
    closes_dropped: u32,
}

/// Runs one 64 KiB transfer; receiver -> sender CLOSEs are dropped from completion until
/// `blackout` later. The owner samples the receiver's stats every 50 ms (the runner's
/// progress period) and stops it when `policy` says so.
fn run(policy: Policy, blackout: Duration) -> Outcome {
    let epoch = Instant::now();
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sender = Sender::new(
        SenderConfig::default(),
        Box::new(MemSource::new(data.clone())),
        epoch,
    )
    .expect("sender");
    let sink = MemSink::new();
    let mut receiver: Option<Receiver> = Some(Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink.clone()),
        Box::new(MemJournal::new()),
    ));
    let mut to_rx: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut to_tx: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut completed: Option<Instant> = None;
    let mut linger: Option<CloseLinger> = None;
    let mut left = None;
    let mut closes_dropped = 0;
    let step = Duration::from_millis(1);
    let mut now = epoch;
    while now < epoch + Duration::from_secs(15) {
        if matches!(sender.state(), SenderState::Complete | SenderState::Failed)
            && receiver.is_none()
        {
            break;
        }
        while to_rx.front().is_some_and(|(t, _)| *t <= now) {
            let (_, f) = to_rx.pop_front().unwrap();
            if let Some(r) = receiver.as_mut() {
                r.handle_frame(now, &f);
            }
        }
        while to_tx.front().is_some_and(|(t, _)| *t <= now) {
            let (_, f) = to_tx.pop_front().unwrap();
            sender.handle_frame(now, &f);
        }
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        while let Some(f) = sender.poll_transmit(now) {
            to_rx.push_back((now + ONE_WAY, f));
        }
        if let Some(r) = receiver.as_mut() {
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
            if completed.is_none() && r.state() == ReceiverState::Complete {
                completed = Some(now);
            }
            while let Some(f) = r.poll_transmit(now) {
                let in_blackout = completed.is_some_and(|c| now < c + blackout);
                if in_blackout && f.get(3) == Some(&FRAME_CLOSE) {
                    closes_dropped += 1;
                    continue;
                }
                to_tx.push_back((now + ONE_WAY, f));
            }
            // The owner's view: every 50 ms.
            if let Some(c) = completed
                && (now - epoch).as_millis().is_multiple_of(50)
            {
                let frames = r.stats().frames_received;
                let done = match &policy {
                    Policy::Fixed(d) => now - c >= *d,
                    Policy::Adaptive { min, cap } => {
                        let l =
                            linger.get_or_insert_with(|| CloseLinger::new(c, frames, *min, *cap));
                        l.observe(now, frames);
                        l.done(now)
                    }
                };
                if done {
                    left = Some(now - c);
                    receiver = None;
                }
            }
        }
        now += step;
    }
    assert_eq!(sink.contents(), data, "the receiver got the whole object");
    Outcome {
        sender: sender.state(),
        error: sender.error().map(|e: &TransferError| e.to_string()),
        receiver_left_after: left,
        closes_dropped,
    }
}

#[test]
fn a_sender_that_missed_every_close_completes_when_the_receiver_lingers_adaptively() {
    let blackout = Duration::from_millis(1500);
    let o = run(
        Policy::Adaptive {
            min: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        },
        blackout,
    );
    assert!(o.closes_dropped >= 3, "every first CLOSE copy dropped");
    assert_eq!(
        o.sender,
        SenderState::Complete,
        "error {:?} left {:?}",
        o.error,
        o.receiver_left_after
    );
    let left = o.receiver_left_after.expect("the receiver left");
    assert!(left > blackout, "left after {left:?}");
    assert!(left < Duration::from_secs(5), "lingered {left:?}");
}

#[test]
fn the_fixed_linger_loses_that_sender() {
    let o = run(
        Policy::Fixed(Duration::from_millis(500)),
        Duration::from_millis(1500),
    );
    assert_eq!(o.sender, SenderState::Failed, "{:?}", o.error);
    assert!(
        o.error
            .as_deref()
            .is_some_and(|e| e.contains("no HELLO_ACK") || e.contains("idle timeout")),
        "{:?}",
        o.error
    );
}

#[test]
fn without_loss_the_adaptive_linger_costs_what_the_fixed_one_did() {
    let o = run(
        Policy::Adaptive {
            min: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        },
        Duration::ZERO,
    );
    assert_eq!(o.sender, SenderState::Complete, "{:?}", o.error);
    let left = o.receiver_left_after.expect("the receiver left");
    assert!(left <= Duration::from_millis(550), "lingered {left:?}");
}
