//! Port logic (pools, fill/completion management, batches, need_wakeup, multi-buffer, tx
//! runs of contiguous frames for jumbo packets) against the plain-memory fake kernel: no
//! privileges needed.

use dwcp_xsk::fake::{FakeConfig, FakeKernel};
use dwcp_xsk::rings::whole_packets;
use dwcp_xsk::{XDP_PKT_CONTD, XdpDesc};

fn pattern(k: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + k * 13) as u8).collect()
}

#[test]
fn rx_delivers_bytes_and_recycles_frames_to_fill_ring() {
    let cfg = FakeConfig::default();
    let (mut port, k) = FakeKernel::port(cfg).unwrap();
    // 32 rx frames, fill ring of 32: all of them were posted at start.
    assert_eq!(k.fill.borrow().len(), 32);
    for round in 0..50 {
        for j in 0..10 {
            assert!(k.deliver(port.area(), &pattern(round * 10 + j, 64 + j * 100)));
        }
        let batch = port.rx_batch(64);
        assert_eq!(batch.descriptors(), 10);
        for (j, p) in batch.packets().enumerate() {
            assert_eq!(p.fragments(), 1);
            assert_eq!(p.first(), &pattern(round * 10 + j, 64 + j * 100)[..]);
        }
        batch.release();
        assert_eq!(
            k.fill.borrow().len(),
            32,
            "released frames went back to the fill ring"
        );
    }
    let s = port.stats();
    assert_eq!(s.rx_packets, 500);
    assert_eq!(s.bad_frames, 0);
}

#[test]
fn rx_batch_is_bounded_and_dropping_it_recycles() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    for j in 0..20 {
        assert!(k.deliver(port.area(), &pattern(j, 100)));
    }
    {
        let b = port.rx_batch(8);
        assert_eq!(b.descriptors(), 8);
        // dropped without release(): frames must still come back
    }
    let b = port.rx_batch(100);
    assert_eq!(b.descriptors(), 12, "batch size 16 caps, 12 left");
    drop(b);
    assert_eq!(k.fill.borrow().len(), 32);
}

#[test]
fn fill_ring_exhaustion_drops_and_wakeup_is_issued_only_when_asked() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    for j in 0..32 {
        assert!(k.deliver(port.area(), &pattern(j, 10)));
    }
    // No fill frames left: the kernel drops and asks for a wakeup.
    assert!(!k.deliver(port.area(), &pattern(99, 10)));
    assert!(k.fill.borrow().need_wakeup);
    let b = port.rx_batch(16);
    assert_eq!(b.descriptors(), 16);
    b.release();
    assert_eq!(
        k.fill.borrow().wakeups,
        0,
        "packets were received: no wakeup needed"
    );
    let b = port.rx_batch(16);
    b.release();
    let b = port.rx_batch(16);
    assert!(b.is_empty());
    b.release();
    assert_eq!(
        k.fill.borrow().wakeups,
        1,
        "empty receive with the flag set wakes once"
    );
    k.fill.borrow_mut().need_wakeup = false;
    let b = port.rx_batch(16);
    b.release();
    assert_eq!(k.fill.borrow().wakeups, 1);
}

#[test]
fn tx_commit_completion_and_pool_accounting() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    assert_eq!(port.tx_free(), 32);
    let mut tx = port.tx_batch();
    for j in 0..10 {
        let p = pattern(j, 1400);
        assert!(tx.push_with(1400, |buf| {
            buf[..1400].copy_from_slice(&p);
            1400
        }));
    }
    assert_eq!(tx.commit(), 10);
    assert_eq!(port.tx_free(), 22);
    assert_eq!(port.tx_in_flight(), 10);
    let out = k.drain_tx(port.area());
    assert_eq!(out.len(), 10);
    for (j, p) in out.iter().enumerate() {
        assert_eq!(p, &pattern(j, 1400));
    }
    // Completions are reaped when the next batch opens (or on poll).
    port.poll();
    assert_eq!(port.tx_free(), 32);
    let s = port.stats();
    assert_eq!((s.tx_packets, s.tx_bytes), (10, 14000));
}

#[test]
fn uncommitted_tx_batch_returns_frames() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    let mut tx = port.tx_batch();
    for _ in 0..5 {
        assert!(tx.push_with(64, |_| 64));
    }
    drop(tx);
    assert_eq!(port.tx_free(), 32);
    assert!(k.tx.borrow().is_empty());
    assert!(
        !port.tx_batch().push_with(5000, |_| 1),
        "more than a frame needs push_gather"
    );
}

#[test]
fn tx_ring_full_keeps_frames_for_the_next_commit() {
    let cfg = FakeConfig {
        frames: 128,
        ring_size: 8,
        batch: 32,
        ..Default::default()
    };
    let (mut port, k) = FakeKernel::port(cfg).unwrap();
    let mut tx = port.tx_batch();
    for j in 0..20 {
        assert!(tx.push_with(64, |b| {
            b[..64].copy_from_slice(&pattern(j, 64));
            64
        }));
    }
    assert_eq!(tx.commit(), 8);
    assert_eq!(port.stats().tx_ring_full, 12);
    assert_eq!(port.tx_kept(), 12);
    // 8 in the ring, 12 kept staged: none back in the pool, none lost.
    assert_eq!(port.tx_in_flight(), 20);
    let mut out = k.drain_tx(port.area());
    assert_eq!(out.len(), 8);
    port.poll();
    assert_eq!(port.tx_in_flight(), 12);

    // A batch dropped without commit gives back only what was pushed into it.
    let mut tx = port.tx_batch();
    assert_eq!((tx.staged(), tx.kept()), (12, 12));
    assert!(tx.push_with(64, |_| 64));
    drop(tx);
    assert_eq!(port.tx_in_flight(), 12);

    // The kept frames go first; the still-full ring keeps the rest again.
    let mut tx = port.tx_batch();
    assert!(tx.push_with(64, |b| {
        b[..64].copy_from_slice(&pattern(20, 64));
        64
    }));
    assert_eq!(tx.commit(), 8);
    assert_eq!(port.tx_kept(), 5);
    out.extend(k.drain_tx(port.area()));
    port.poll();
    let tx = port.tx_batch();
    assert_eq!(tx.commit(), 5);
    out.extend(k.drain_tx(port.area()));
    port.poll();
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(port.tx_kept(), 0);
    assert_eq!(out.len(), 21);
    for (j, p) in out.iter().enumerate() {
        assert_eq!(p, &pattern(j, 64), "packet {j} in order, once");
    }
    let s = port.stats();
    assert_eq!((s.tx_packets, s.tx_ring_full, s.bad_frames), (21, 17, 0));
}

#[test]
fn try_push_declined_returns_the_frame() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    let mut tx = port.tx_batch();
    assert_eq!(tx.try_push_with(64, |_| None), Some(false));
    assert_eq!(tx.staged(), 0);
    assert_eq!(
        tx.try_push_with(64, |b| {
            b[..64].copy_from_slice(&pattern(1, 64));
            Some(64)
        }),
        Some(true)
    );
    assert_eq!(tx.try_push_with(5000, |_| unreachable!()), None);
    assert_eq!(tx.commit(), 1);
    assert_eq!(port.tx_in_flight(), 1);
    assert_eq!(k.drain_tx(port.area()), vec![pattern(1, 64)]);
}

#[test]
fn tx_wakeup_only_when_flag_set() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    let mut tx = port.tx_batch();
    assert!(tx.push_with(64, |_| 64));
    tx.commit();
    assert_eq!(k.tx.borrow().wakeups, 0);
    k.tx.borrow_mut().need_wakeup = true;
    let mut tx = port.tx_batch();
    assert!(tx.push_with(64, |_| 64));
    tx.commit();
    assert_eq!(k.tx.borrow().wakeups, 1);
    port.poll(); // frames in flight and flag set: kick again
    assert_eq!(k.tx.borrow().wakeups, 2);
    let s = port.stats();
    assert_eq!(s.tx_wakeups, 2);
}

#[test]
fn multi_buffer_rx_and_tx_jumbo() {
    let (mut port, k) = FakeKernel::port(FakeConfig::default()).unwrap();
    let big = pattern(5, 8000);
    assert!(k.deliver(port.area(), &big));
    assert!(k.deliver(port.area(), &pattern(6, 100)));
    let b = port.rx_batch(16);
    // 3840 bytes of room per frame after the 256-byte headroom: 3 fragments + 1.
    assert_eq!(b.descriptors(), 4);
    let pk: Vec<_> = b.packets().collect();
    assert_eq!(pk.len(), 2);
    assert_eq!(pk[0].fragments(), 3);
    assert!(!pk[0].truncated());
    assert_eq!(pk[0].len(), 8000);
    let mut out = vec![0u8; 9000];
    assert_eq!(pk[0].copy_to(&mut out), Some(8000));
    assert_eq!(&out[..8000], &big[..]);
    assert_eq!(pk[0].copy_to(&mut out[..100]), None);
    assert_eq!(pk[1].first(), &pattern(6, 100)[..]);
    b.release();
    assert_eq!(port.stats().rx_packets, 2);

    let mut tx = port.tx_batch();
    assert!(tx.push_gather(&[&big[..42], &big[42..]]));
    assert_eq!(tx.staged(), 2);
    tx.commit();
    let out = k.drain_tx(port.area());
    assert_eq!(out, vec![big]);
}

#[test]
fn whole_packets_never_splits_a_chain() {
    let d = |c: bool| XdpDesc {
        addr: 0,
        len: 1,
        options: if c { XDP_PKT_CONTD } else { 0 },
    };
    let descs = [d(false), d(true), d(true), d(false), d(false)];
    assert_eq!(whole_packets(&descs, 5), 5);
    assert_eq!(whole_packets(&descs, 4), 4);
    assert_eq!(whole_packets(&descs, 3), 1);
    assert_eq!(whole_packets(&descs, 1), 1);
    assert_eq!(whole_packets(&descs[1..], 2), 0);
}

#[test]
fn ring_indices_wrap_without_losing_frames() {
    let cfg = FakeConfig {
        start: u32::MAX - 20,
        ..Default::default()
    };
    let (mut port, k) = FakeKernel::port(cfg).unwrap();
    for round in 0..200usize {
        let n = 1 + round % 13;
        for j in 0..n {
            assert!(k.deliver(port.area(), &pattern(round + j, 60 + j)));
        }
        let b = port.rx_batch(16);
        assert_eq!(b.packets().count(), n);
        for (j, p) in b.packets().enumerate() {
            assert_eq!(p.first(), &pattern(round + j, 60 + j)[..]);
        }
        b.release();
        let mut tx = port.tx_batch();
        for j in 0..n {
            let p = pattern(round * 3 + j, 200);
            assert!(tx.push_with(200, |buf| {
                buf[..200].copy_from_slice(&p);
                200
            }));
        }
        assert_eq!(tx.commit(), n);
        let out = k.drain_tx(port.area());
        assert_eq!(out.len(), n);
        assert_eq!(out[n - 1], pattern(round * 3 + n - 1, 200));
    }
    port.poll();
    assert_eq!(port.tx_free(), 32);
    assert_eq!(k.fill.borrow().len(), 32);
    assert_eq!(port.stats().bad_frames, 0);
}

#[test]
fn multi_buffer_packets_straddling_batches_stay_whole() {
    let cfg = FakeConfig {
        frames: 256,
        ring_size: 128,
        batch: 8,
        ..Default::default()
    };
    let (mut port, k) = FakeKernel::port(cfg).unwrap();
    let mut want = Vec::new();
    for j in 0..10 {
        // 3 fragments each (3840 bytes of room per frame): batches of 8 split them.
        let p = pattern(j, 8000 + j);
        assert!(k.deliver(port.area(), &p));
        want.push(p);
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        let b = port.rx_batch(8);
        for p in b.packets() {
            assert!(!p.truncated());
            let mut out = vec![0u8; p.len()];
            p.copy_to(&mut out).unwrap();
            got.push(out);
        }
        b.release();
    }
    assert_eq!(got, want);
    assert_eq!(port.stats().rx_packets, 10);
    assert_eq!(
        k.fill.borrow().len(),
        128,
        "every frame went back to the fill ring"
    );
}

#[test]
fn multi_buffer_tx_keeps_flowing_when_the_ring_reservation_is_stale() {
    // A 32-entry tx ring and 3-fragment packets: after ten packets the producer's cached view
    // of the ring (xdpilone's, modelled by the fake) shows 2 free slots, less than the next
    // packet. Those slots must not be taken for "ring full" once the kernel has drained the
    // ring, or the port keeps every packet and its frames forever. 300 jumbo packets go
    // through 64 tx frames (the tx half of the UMEM) about 14 times over.
    let cfg = FakeConfig {
        frames: 128,
        ring_size: 32,
        batch: 16,
        start: u32::MAX - 40,
        tx_max_len: 0,
    };
    let (mut port, k) = FakeKernel::port(cfg).unwrap();
    let sizes = [8900, 100, 5000, 12000, 8300];
    let want: Vec<Vec<u8>> = (0..300)
        .map(|j| pattern(j, sizes[j % sizes.len()]))
        .collect();
    let mut got = Vec::new();
    let mut next = 0;
    for round in 0..400 {
        if got.len() == want.len() {
            break;
        }
        let mut tx = port.tx_batch();
        while next < want.len() && tx.push_gather(&[&want[next][..42], &want[next][42..]]) {
            next += 1;
        }
        tx.commit();
        let out = k.drain_tx(port.area());
        assert!(
            !out.is_empty() || got.len() == want.len(),
            "round {round}: the kernel drained the tx ring, yet the port put nothing on it \
             ({} packets sent, {} kept, {} frames free)",
            got.len(),
            port.tx_kept(),
            port.tx_free()
        );
        got.extend(out);
        port.poll();
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every packet once, whole and in order");
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(port.tx_free(), 64);
    let s = port.stats();
    assert_eq!((s.tx_packets, s.bad_frames), (300, 0));
}

/// A port whose tx frames come in runs of 3 (packets up to 9014 bytes: MTU 9000 plus the
/// Ethernet header): 64 tx frames make 21 runs, one frame is left over.
fn run_port(ring_size: u32, batch: usize) -> (dwcp_xsk::fake::FakePort, FakeKernel) {
    FakeKernel::port(FakeConfig {
        frames: 128,
        ring_size,
        batch,
        start: u32::MAX - 5,
        tx_max_len: 9014,
    })
    .unwrap()
}

/// Writes `p` with `try_push_with_run`, as the engine does: into the run, in place.
fn push_run(tx: &mut dwcp_xsk::TxBatch<'_, dwcp_xsk::fake::FakeTx>, p: &[u8]) -> Option<bool> {
    tx.try_push_with_run(9014, |buf| {
        assert_eq!(buf.len(), 9014, "the writer sees the whole run");
        buf[..p.len()].copy_from_slice(p);
        Some(p.len())
    })
}

#[test]
fn tx_run_writes_jumbo_packets_in_place_one_descriptor_per_frame() {
    let (mut port, k) = run_port(64, 32);
    assert_eq!(port.tx_run_frames(), 3);
    assert_eq!(port.tx_free(), 63);
    let sizes = [9014usize, 4097, 4096, 8192, 100, 0, 8193];
    let want: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(j, &n)| pattern(j, n))
        .collect();
    let mut tx = port.tx_batch();
    for p in &want {
        assert_eq!(push_run(&mut tx, p), Some(true));
    }
    // One descriptor per frame used: 3 + 2 + 1 + 2 + 1 + 1 + 3.
    assert_eq!(tx.staged(), 13);
    assert_eq!(tx.commit(), sizes.len());
    // The descriptors of a packet are consecutive frames of one run, CONTD on all but the last.
    let mut descs = vec![XdpDesc::default(); 13];
    assert_eq!(k.tx.borrow_mut().consume(&mut descs), 13);
    let mut at = 0;
    for (p, &n) in want.iter().zip(&sizes) {
        let frags = n.div_ceil(4096).max(1);
        let d = &descs[at..at + frags];
        let mut bytes = Vec::new();
        for (i, f) in d.iter().enumerate() {
            assert_eq!(f.addr, d[0].addr + 4096 * i as u64, "contiguous frames");
            assert_eq!(f.options & XDP_PKT_CONTD != 0, i + 1 < frags);
            assert_eq!(f.len as usize, (n - 4096 * i).min(4096));
            // SAFETY: the frame is on the (fake) tx ring, which this test plays the kernel of;
            // the port does not touch it until it comes back on the completion ring.
            bytes.extend_from_slice(unsafe { port.area().frame(f.addr, f.len as usize) });
        }
        assert_eq!(&bytes, p);
        at += frags;
    }
    // Seven runs out, whatever the number of frames each packet used.
    assert_eq!((port.tx_free(), port.tx_in_flight()), (42, 21));
    // Complete in reverse order: a run comes back only with its last frame.
    let addrs: Vec<u64> = descs.iter().rev().map(|d| d.addr).collect();
    for (i, a) in addrs.iter().enumerate() {
        assert_eq!(k.comp.borrow_mut().produce(&[*a]), 1);
        port.poll();
        let back = 13 - (i + 1);
        // Runs whose every descriptor index is >= back are complete.
        let mut done = 0;
        let mut at = 0;
        for &n in &sizes {
            let frags = n.div_ceil(4096).max(1);
            if at >= back {
                done += 1;
            }
            at += frags;
        }
        assert_eq!(port.tx_free(), 42 + 3 * done, "after {} completions", i + 1);
    }
    assert_eq!((port.tx_free(), port.tx_in_flight()), (63, 0));
    let s = port.stats();
    assert_eq!((s.tx_packets, s.bad_frames), (7, 0));
}

#[test]
fn tx_run_backpressure_never_loses_a_packet() {
    let (mut port, k) = run_port(128, 16);
    // 16 descriptor slots: five jumbo packets (15), then no room for a sixth. The writer is
    // not called, and a one-frame packet still fits the last slot.
    let mut tx = port.tx_batch();
    for j in 0..5 {
        assert_eq!(push_run(&mut tx, &pattern(j, 9000)), Some(true));
    }
    assert_eq!(tx.try_push_with_run(9014, |_| unreachable!()), None);
    let small = pattern(5, 60);
    assert_eq!(
        tx.try_push_with_run(60, |b| {
            b.copy_from_slice(&small);
            Some(60)
        }),
        Some(true)
    );
    assert_eq!(tx.try_push_with_run(100, |_| unreachable!()), None);
    // A declined write gives its run back.
    tx.commit();
    let mut tx = port.tx_batch();
    assert_eq!(tx.try_push_with_run(9014, |_| None), Some(false));
    assert_eq!(tx.staged(), 0);
    // Longer than a run: refused, not truncated.
    assert_eq!(tx.try_push_with_run(3 * 4096 + 1, |_| unreachable!()), None);
    drop(tx);
    assert_eq!(port.tx_free(), 63 - 6 * 3);
    // Exhaustion: 21 runs in all, 6 in flight; 15 more fit, then None (counted as
    // back-pressure), writer untouched.
    let mut sent = 6;
    while port.tx_free() > 0 {
        let mut tx = port.tx_batch();
        while push_run(&mut tx, &pattern(sent, 8000 + sent)).is_some() {
            sent += 1;
        }
        tx.commit();
    }
    assert_eq!(sent, 21);
    let before = port.stats().tx_no_frame;
    let mut tx = port.tx_batch();
    assert_eq!(tx.try_push_with_run(9014, |_| unreachable!()), None);
    assert_eq!(tx.try_push_with_run(64, |_| unreachable!()), None);
    drop(tx);
    assert_eq!(port.stats().tx_no_frame, before + 2);
    let out = k.drain_tx(port.area());
    assert_eq!(out.len(), 21);
    for (j, p) in out.iter().enumerate() {
        let want = match j {
            0..5 => pattern(j, 9000),
            5 => pattern(5, 60),
            _ => pattern(j, 8000 + j),
        };
        assert_eq!(p, &want, "packet {j}");
    }
    port.poll();
    assert_eq!((port.tx_free(), port.tx_in_flight()), (63, 0));
    assert_eq!(port.stats().bad_frames, 0);
}

#[test]
fn tx_run_uncommitted_batch_and_kept_packets_return_whole_runs() {
    // A 4-entry tx ring: a commit hands over one 3-frame packet and keeps the rest.
    let (mut port, k) = run_port(4, 32);
    let mut tx = port.tx_batch();
    for j in 0..3 {
        assert_eq!(push_run(&mut tx, &pattern(j, 9014)), Some(true));
    }
    assert_eq!(tx.commit(), 1);
    assert_eq!(port.tx_kept(), 2);
    // Pushed and dropped without commit: its run (and only it) comes back.
    let mut tx = port.tx_batch();
    assert_eq!(push_run(&mut tx, &pattern(99, 5000)), Some(true));
    drop(tx);
    assert_eq!(port.tx_in_flight(), 9);
    let mut out = Vec::new();
    for _ in 0..4 {
        out.extend(k.drain_tx(port.area()));
        let tx = port.tx_batch();
        tx.commit();
    }
    out.extend(k.drain_tx(port.area()));
    port.poll();
    assert_eq!(out, (0..3).map(|j| pattern(j, 9014)).collect::<Vec<_>>());
    assert_eq!(
        (port.tx_free(), port.tx_in_flight(), port.tx_kept()),
        (63, 0, 0)
    );
    assert_eq!(port.stats().bad_frames, 0);
}

#[test]
fn tx_runs_keep_flowing_through_stale_reservations_with_mixed_sizes() {
    // As multi_buffer_tx_keeps_flowing_when_the_ring_reservation_is_stale, written in
    // place: 400 packets of 1-3 frames (single-frame pushes mixed in) through 21 runs and
    // a 32-entry ring whose cached reservations fall short of a 3-frame packet.
    let (mut port, k) = run_port(32, 16);
    let sizes = [8900, 100, 5000, 9014, 8300, 4096, 4097];
    let want: Vec<Vec<u8>> = (0..400)
        .map(|j| pattern(j, sizes[j % sizes.len()]))
        .collect();
    let mut got = Vec::new();
    let mut next = 0;
    for round in 0..1000 {
        if got.len() == want.len() {
            break;
        }
        let mut tx = port.tx_batch();
        while let Some(p) = want.get(next) {
            let ok = if p.len() <= 4096 && next % 2 == 0 {
                tx.push_with(p.len(), |b| {
                    b[..p.len()].copy_from_slice(p);
                    p.len()
                })
            } else {
                push_run(&mut tx, p) == Some(true)
            };
            if !ok {
                break;
            }
            next += 1;
        }
        tx.commit();
        let out = k.drain_tx(port.area());
        assert!(
            !out.is_empty() || got.len() == want.len(),
            "round {round}: stalled ({} sent, {} kept, {} frames free)",
            got.len(),
            port.tx_kept(),
            port.tx_free()
        );
        got.extend(out);
        port.poll();
    }
    assert!(got == want, "every packet once, whole and in order");
    assert_eq!((port.tx_free(), port.tx_in_flight()), (63, 0));
    let s = port.stats();
    assert_eq!((s.tx_packets, s.bad_frames), (400, 0));
}

#[test]
fn push_gather_with_runs_spans_several_runs() {
    let (mut port, k) = run_port(64, 32);
    let big = pattern(7, 20000); // 5 frames: one run and two frames of another
    let mut tx = port.tx_batch();
    assert!(tx.push_gather(&[&big[..42], &big[42..]]));
    assert_eq!(tx.staged(), 5);
    tx.commit();
    assert_eq!(port.tx_in_flight(), 6);
    assert_eq!(k.drain_tx(port.area()), vec![big]);
    port.poll();
    assert_eq!((port.tx_free(), port.stats().bad_frames), (63, 0));
}

#[test]
fn without_runs_a_jumbo_run_push_is_refused() {
    let (mut port, _k) = FakeKernel::port(FakeConfig::default()).unwrap();
    assert_eq!(port.tx_run_frames(), 1);
    let mut tx = port.tx_batch();
    assert_eq!(tx.try_push_with_run(5000, |_| unreachable!()), None);
    // At most a frame it is the single-frame path.
    assert_eq!(tx.try_push_with_run(4096, |_| Some(4096)), Some(true));
    assert_eq!(tx.staged(), 1);
}
