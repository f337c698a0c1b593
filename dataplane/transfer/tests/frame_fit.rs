//! Data frames fit the IP MTU exactly: at MTU 1500 an unsealed connection carries 1420-byte
//! chunks (48-byte header + 4-byte CRC32C = 1472 UDP bytes), a sealed one 1408-byte chunks
//! (16-byte AEAD tag), and no frame of either (new chunks, retransmissions, control frames)
//! is larger than 1472 bytes. Simulated lossy link, real keys for the sealed case.

use std::time::{Duration, Instant};

use dwcp_secure::{Secure, SecureConfig, generate_keypair};
use dwcp_transfer::sim::{Link, LinkConfig, Sim, SimRng};
use dwcp_transfer::{
    MemJournal, MemSink, MemSource, Receiver, ReceiverConfig, Sender, SenderConfig, SenderState,
};

const MTU: usize = 1500;
/// Largest UDP payload at MTU 1500 (20-byte IPv4 + 8-byte UDP header).
const MAX_UDP: usize = MTU - 28;

fn object(len: usize, seed: u64) -> Vec<u8> {
    SimRng::new(seed).bytes(len)
}

/// Runs one transfer at MTU 1500 over a 2 % lossy link (so retransmissions happen); returns
/// the sender (finished) and the largest datagram each direction carried.
fn run(sealed: bool) -> (Sender, usize, usize) {
    let data = object(3_000_000, 7);
    let epoch = Instant::now();
    let (s_sec, r_sec) = if sealed {
        let a = generate_keypair().expect("keygen");
        let b = generate_keypair().expect("keygen");
        (
            Some(SecureConfig {
                identity: Some(a.clone()),
                peers: vec![b.public],
                require_sealed: true,
                epoch: 1_000,
                ..Default::default()
            }),
            Some(SecureConfig {
                identity: Some(b),
                peers: vec![a.public],
                require_sealed: true,
                ..Default::default()
            }),
        )
    } else {
        (None, None)
    };
    let cfg = SenderConfig {
        mtu: Some(MTU),
        security: s_sec.map(|c| Secure::factory(c).expect("sender keys")),
        ..SenderConfig::default()
    };
    let sender = Sender::new(cfg, Box::new(MemSource::new(data.clone())), epoch).expect("sender");
    let sink = MemSink::new();
    let mut receiver = Receiver::new(
        ReceiverConfig::default(),
        Box::new(sink.clone()),
        Box::new(MemJournal::new()),
    );
    if let Some(c) = r_sec {
        receiver.set_security(Box::new(Secure::new(c).expect("receiver keys")));
    }
    let link = LinkConfig {
        loss: 0.02,
        ..LinkConfig::clean(100e6, Duration::from_millis(10))
    };
    let mut sim = Sim::new(epoch, Link::new(link, 3), Link::new(link, 4));
    sim.add_flow(sender, receiver, epoch);
    assert!(sim.run(Duration::from_secs(10)), "transfer did not finish");
    assert!(sink.contents() == data, "sink differs from source");
    let (fwd, rev) = (sim.fwd.stats.max_frame, sim.rev.stats.max_frame);
    let f = sim.flows.pop().expect("flow");
    assert_eq!(f.sender.state(), SenderState::Complete);
    (f.sender, fwd, rev)
}

#[test]
fn unsealed_data_frames_carry_1420_byte_chunks_in_exactly_the_mtu() {
    let (s, fwd, rev) = run(false);
    let st = s.stats();
    assert_eq!(st.sealed, None);
    assert_eq!(s.chunk_size(), 1420);
    assert!(
        st.data_frames_retransmitted > 0,
        "no retransmission: {st:#?}"
    );
    assert_eq!(fwd, MAX_UDP, "largest sender datagram");
    assert!(rev <= MAX_UDP, "largest receiver datagram {rev}");
}

#[test]
fn sealed_data_frames_keep_room_for_the_tag_and_fit_the_mtu() {
    let (s, fwd, rev) = run(true);
    let st = s.stats();
    assert!(st.sealed.is_some(), "the connection was not sealed");
    assert_eq!(s.chunk_size(), 1408);
    assert!(
        st.data_frames_retransmitted > 0,
        "no retransmission: {st:#?}"
    );
    assert_eq!(fwd, MAX_UDP, "largest sender datagram");
    assert!(rev <= MAX_UDP, "largest receiver datagram {rev}");
}

#[test]
fn keys_given_after_construction_shrink_the_chunk_for_the_tag() {
    let a = generate_keypair().expect("keygen");
    let b = generate_keypair().expect("keygen");
    let cfg = SenderConfig {
        mtu: Some(MTU),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(
        cfg,
        Box::new(MemSource::new(vec![1; 10_000])),
        Instant::now(),
    )
    .expect("sender");
    assert_eq!(s.chunk_size(), 1420);
    s.set_security(Box::new(
        Secure::new(SecureConfig {
            identity: Some(a),
            peers: vec![b.public],
            ..Default::default()
        })
        .expect("keys"),
    ));
    assert_eq!(s.chunk_size(), 1408);
}
