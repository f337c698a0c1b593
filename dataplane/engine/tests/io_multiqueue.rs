//! Several pinned workers, one AF_XDP socket per NIC queue: a 2-queue veth spreads many
//! flows over both queues, and each queue's frames must reach that queue's worker, each
//! exactly once, with valid DWCP (CRC checked by the worker).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use dwcp_ebpf::AttachMode;
use dwcp_engine::io::{BackendChoice, BackendKind, IoConfig, TxBatch};
use dwcp_engine::worker::{Handler, RxFrame, RxFrames, WorkerConfig, Workers};
use dwcp_netns::{IF_B, Pair, VethOptions};
use dwcp_proto::{FrameType, Header, Version, build_frame};

const PORT: u16 = 7470;
const FLOWS: u64 = 32;
const PER_FLOW: u64 = 50;

/// Records the (flow, index) of every valid frame it sees.
#[derive(Debug, Default)]
struct Collect {
    seen: Vec<(u64, u64)>,
}

impl Handler for Collect {
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, _tx: &mut TxBatch<'_>) {
        frames.for_each(|f| {
            if let RxFrame::Checked(f) = f {
                self.seen.push((f.header.object_id, f.header.seq));
            }
        });
    }
}

fn frame(flow: u64, seq: u64) -> Vec<u8> {
    let mut h = Header::new(Version::V3, FrameType::Data);
    h.stream_id = 0;
    h.conn_id = 1;
    h.object_id = flow;
    h.seq = seq;
    let payload = [flow as u8; 64];
    let mut out = vec![0u8; 256];
    let n = build_frame(&h, &payload, &mut out).expect("build frame");
    out.truncate(n);
    out
}

#[test]
fn two_workers_each_take_their_queue() {
    if !dwcp_netns::privileged_test_guard("two_workers_each_take_their_queue") {
        return;
    }
    let pair = Pair::new(
        "mq",
        VethOptions {
            queues: 2,
            ..VethOptions::default()
        },
    )
    .expect("lab");
    let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
    let mut io = IoConfig::new(
        IF_B,
        SocketAddrV4::new(ip_b, PORT),
        SocketAddrV4::new(ip_a, PORT),
    );
    io.choice = BackendChoice::AfXdp;
    io.attach = AttachMode::Native;
    io.hugepages = false;
    io.frames = 4096;
    io.ring_size = 2048;
    io.batch = 32;
    let cfg = WorkerConfig {
        cores: vec![0, 1],
        io,
        idle_yield: true,
    };
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let rx = pair
        .b
        .spawn_in(move || {
            let w = Workers::spawn(&cfg, |_| Collect::default()).expect("workers");
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let ok: u64 = w.stats().iter().map(|s| s.frames_ok).sum();
                if ok >= FLOWS * PER_FLOW {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            let counters = w.program_counters();
            (w.stop().expect("stop"), counters)
        })
        .unwrap();
    started_rx.recv().unwrap();
    pair.a
        .run_in(move || {
            // One socket per flow: the veth hashes each 4-tuple onto one of its 2 queues.
            let socks: Vec<UdpSocket> = (0..FLOWS)
                .map(|_| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap())
                .collect();
            for seq in 0..PER_FLOW {
                for (flow, s) in socks.iter().enumerate() {
                    s.send_to(&frame(flow as u64, seq), (ip_b, PORT)).unwrap();
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .unwrap();
    go_tx.send(()).unwrap();
    let (stopped, counters) = rx.join().unwrap();
    assert_eq!(stopped.len(), 2);
    let mut all = Vec::new();
    for (h, snap) in &stopped {
        let sel = snap.selection.as_ref().expect("selection");
        assert_eq!(sel.kind, BackendKind::AfXdp, "{sel:?}");
        assert!(snap.pinned, "worker {} not pinned", snap.index);
        assert!(
            !h.seen.is_empty(),
            "worker {} (queue {}) got nothing; counters {counters:?}",
            snap.index,
            snap.index
        );
        all.extend(h.seen.iter().copied());
    }
    // Each flow stays on one queue, so it is seen by exactly one worker.
    for flow in 0..FLOWS {
        let owners = stopped
            .iter()
            .filter(|(h, _)| h.seen.iter().any(|&(f, _)| f == flow))
            .count();
        assert_eq!(owners, 1, "flow {flow} seen by {owners} workers");
    }
    all.sort_unstable();
    let expect: Vec<(u64, u64)> = (0..FLOWS)
        .flat_map(|f| (0..PER_FLOW).map(move |s| (f, s)))
        .collect();
    assert_eq!(all.len(), expect.len(), "frames lost or duplicated");
    assert_eq!(all, expect);
}
