//! The receiver hashes the object as its held prefix grows, so completion reads back only the
//! last stretch: the final ACK and the verified CLOSE are not held up by a read of the whole
//! object (on the lab's WAN path that read took ~90 ms and the sender's RTO fired during it).
//! Every byte is still read back from the sink exactly once, in offset order, and a sink whose
//! content differs from what was sent still fails verification.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, ReceiverState, Sender, SenderConfig,
    SenderState, Sink,
};

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

#[derive(Debug, Default)]
struct Counts {
    written: u64,
    /// (offset, len, bytes written before the read)
    reads: Vec<(u64, usize, u64)>,
}

/// A memory sink that records its reads; `flip` corrupts one byte of a write at that offset.
#[derive(Debug, Clone)]
struct CountingSink {
    inner: MemSink,
    flip: Option<u64>,
    counts: Arc<Mutex<Counts>>,
}

impl Sink for CountingSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.counts.lock().expect("lock").written += data.len() as u64;
        match self.flip {
            Some(f) if (offset..offset + data.len() as u64).contains(&f) => {
                let mut d = data.to_vec();
                d[(f - offset) as usize] ^= 1;
                self.inner.write_at(offset, &d)
            }
            _ => self.inner.write_at(offset, data),
        }
    }
    fn flush_durable(&mut self) -> io::Result<()> {
        self.inner.flush_durable()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        let mut c = self.counts.lock().expect("lock");
        let w = c.written;
        c.reads.push((offset, n, w));
        Ok(n)
    }
}

fn run(len: usize, flip: Option<u64>) -> (Sim, Arc<Mutex<Counts>>) {
    let data = object(len, 11);
    let epoch = Instant::now();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let sink = CountingSink {
        inner: MemSink::new(),
        flip,
        counts: counts.clone(),
    };
    let cfg = SenderConfig {
        mtu: Some(1500),
        ..SenderConfig::default()
    };
    let sender = Sender::new(cfg, Box::new(MemSource::new(data)), epoch).expect("sender");
    let receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink),
        Box::new(MemJournal::new()),
    );
    let link = LinkConfig {
        loss: 0.01,
        ..LinkConfig::clean(200e6, Duration::from_millis(20))
    };
    let mut sim = Sim::new(epoch, Link::new(link, 1), Link::new(link, 2));
    sim.add_flow(sender, receiver, epoch);
    sim.run(Duration::from_secs(20));
    (sim, counts)
}

#[test]
fn the_object_hash_is_read_back_during_the_transfer_not_after_it() {
    let len = 30_000_000;
    let (sim, counts) = run(len, None);
    let f = &sim.flows[0];
    assert_eq!(
        f.sender.state(),
        SenderState::Complete,
        "{:?}",
        f.sender.error()
    );
    assert_eq!(f.receiver.state(), ReceiverState::Complete);
    let c = counts.lock().expect("lock");
    // every byte read back once, in offset order
    let mut next = 0u64;
    for &(off, n, _) in &c.reads {
        assert_eq!(off, next, "reads out of order");
        next += n as u64;
    }
    assert_eq!(next, len as u64);
    // what is left for completion: the last stretch of the held prefix, not the object
    let at_end: u64 = c
        .reads
        .iter()
        .filter(|r| r.2 == c.written)
        .map(|r| r.1 as u64)
        .sum();
    let first_read_at = c.reads.first().map(|r| r.2).unwrap_or(0);
    eprintln!(
        "{} reads; first after {first_read_at} B written; {at_end} B read after the last write",
        c.reads.len()
    );
    assert!(at_end <= 4 << 20, "{at_end} B read back at completion");
    assert!(
        first_read_at < len as u64 / 4,
        "first read after {first_read_at} B"
    );
}

#[test]
fn a_sink_that_differs_from_the_object_still_fails_verification() {
    let (sim, _) = run(5_000_000, Some(123_457));
    let f = &sim.flows[0];
    assert_eq!(f.receiver.state(), ReceiverState::Failed);
    assert_ne!(f.sender.state(), SenderState::Complete);
}
