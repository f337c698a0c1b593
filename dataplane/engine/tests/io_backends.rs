//! Privileged end-to-end tests of the io layer and workers across a veth pair:
//! AF_XDP <-> AF_XDP (native and generic XDP), UDP <-> UDP, AF_XDP -> UDP, jumbo frames
//! with multi-buffer, malformed frames counted; plus the automatic UDP fallback.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dwcp_ebpf::{AttachMode, Counter};
use dwcp_engine::io::{self, BackendChoice, BackendKind, IoConfig, SharedProgram, TxBatch};
use dwcp_engine::worker::{Handler, RxFrame, RxFrames, WorkerConfig, WorkerSnapshot, Workers};
use dwcp_netns::{IF_A, IF_B, Pair, VethOptions, privileged_test_guard};
use dwcp_proto::{DropReason, FrameType, Header, Version, build_frame};

const PORT: u16 = 7470;

/// Pattern bytes: payload of frame `seq` is `PATTERN[seq % 251..][..len]`, so checking a
/// frame is a memcmp (the receiver must keep up with the sender).
static PATTERN: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| (0..251 + 9000).map(|i| (i * 7 + i / 251) as u8).collect());

fn payload(seq: u64, len: usize) -> &'static [u8] {
    let o = (seq % 251) as usize;
    &PATTERN[o..o + len]
}

/// Sends `sizes.len() * rounds` valid frames (seq 0..), `bad_crc` frames with a broken
/// CRC and `bad_magic` frames with a broken magic, paced.
struct Sender {
    sizes: Vec<usize>,
    total: u64,
    next: u64,
    bad_crc: u64,
    bad_magic: u64,
    start: Option<Instant>,
    per_ms: u64,
}

impl Handler for Sender {
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, _tx: &mut TxBatch<'_>) {
        frames.for_each(|_| {});
    }

    fn poll_tx(&mut self, tx: &mut TxBatch<'_>) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let allowed = (start.elapsed().as_micros() as u64 * self.per_ms / 1000).max(1);
        while self.next < self.total && self.next < allowed {
            let seq = self.next;
            let len = self.sizes[seq as usize % self.sizes.len()];
            let mut h = Header::new(Version::V3, FrameType::Data);
            h.seq = seq;
            h.stream_id = 1;
            let p = payload(seq, len);
            if !tx.push_with(48 + len + 4, |buf| build_frame(&h, p, buf).unwrap()) {
                return;
            }
            self.next += 1;
        }
        if self.next == self.total {
            while self.bad_crc > 0 {
                let h = Header::new(Version::V3, FrameType::Data);
                let ok = tx.push_with(48 + 10 + 4, |buf| {
                    let n = build_frame(&h, &[1; 10], buf).unwrap();
                    buf[n - 1] ^= 0xff;
                    n
                });
                if !ok {
                    return;
                }
                self.bad_crc -= 1;
            }
            while self.bad_magic > 0 {
                let h = Header::new(Version::V3, FrameType::Data);
                let ok = tx.push_with(48 + 10 + 4, |buf| {
                    let n = build_frame(&h, &[2; 10], buf).unwrap();
                    buf[0] = 0x00;
                    n
                });
                if !ok {
                    return;
                }
                self.bad_magic -= 1;
            }
        }
    }
}

/// Checks every frame against the pattern and remembers what it saw.
#[derive(Default)]
struct Receiver {
    sizes: Vec<usize>,
    seen: HashSet<u64>,
    bytes: u64,
    wrong: u64,
    dup: u64,
}

impl Handler for Receiver {
    fn on_rx(&mut self, frames: RxFrames<'_, '_>, _tx: &mut TxBatch<'_>) {
        frames.for_each(|f| {
            let RxFrame::Checked(f) = f else {
                self.wrong += 1;
                return;
            };
            let seq = f.header.seq;
            let len = self.sizes[seq as usize % self.sizes.len()];
            if f.payload != payload(seq, len) {
                self.wrong += 1;
            }
            if !self.seen.insert(seq) {
                self.dup += 1;
            }
            self.bytes += f.payload.len() as u64;
        });
    }
}

struct Case {
    tag: &'static str,
    a: BackendChoice,
    b: BackendChoice,
    attach: AttachMode,
    mtu: u32,
    sizes: Vec<usize>,
    frames: u64,
    bad_crc: u64,
    bad_magic: u64,
    per_ms: u64,
}

struct Outcome {
    recv: Receiver,
    rx_stats: WorkerSnapshot,
    tx_stats: WorkerSnapshot,
    rx_xdp: Option<dwcp_ebpf::Counters>,
}

fn io_cfg(
    c: &Case,
    ifname: &str,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    choice: BackendChoice,
) -> IoConfig {
    let mut cfg = IoConfig::new(
        ifname,
        SocketAddrV4::new(local, PORT),
        SocketAddrV4::new(peer, PORT),
    );
    cfg.choice = choice;
    cfg.attach = c.attach;
    // 4096 rx frames: at the test's pace that is >= 160 ms of buffer, enough to ride out a
    // receiver descheduled on a busy 2-core machine.
    cfg.frames = 8192;
    cfg.ring_size = 4096;
    cfg.batch = 32;
    cfg.hugepages = false;
    let max = c.sizes.iter().max().copied().unwrap_or(0) + 48 + 4;
    cfg.max_datagram = max.max(1472);
    cfg.multi_buffer = c.mtu > 3000;
    cfg
}

/// The veth tests share two cores: running them one at a time keeps a receiver from being
/// starved long enough to overflow its rings.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(c: Case) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pair = Pair::new(
        c.tag,
        VethOptions {
            mtu: c.mtu,
            ..Default::default()
        },
    )
    .unwrap();
    let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
    // Resolve the neighbours first: the kernel queues only a few datagrams while ARP is
    // pending and silently drops the rest of a first burst.
    let ping = pair
        .a
        .command("ping")
        .args(["-c", "1", "-W", "2", &ip_b.to_string()])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping across the pair");
    let rcfg = WorkerConfig {
        cores: vec![1],
        io: io_cfg(&c, IF_B, ip_b, ip_a, c.b),
        idle_yield: true,
    };
    let scfg = WorkerConfig {
        cores: vec![0],
        io: io_cfg(&c, IF_A, ip_a, ip_b, c.a),
        idle_yield: true,
    };
    let expect = c.frames;
    let sizes = c.sizes.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let rx_thread = pair
        .b
        .spawn_in(move || {
            let w = Workers::spawn(&rcfg, |_| Receiver {
                sizes: sizes.clone(),
                ..Default::default()
            })
            .unwrap();
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                let s = &w.stats()[0];
                if s.frames_ok >= expect && done_rx.try_recv().is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Let the malformed tail arrive.
            std::thread::sleep(Duration::from_millis(100));
            let xdp = w.program_counters();
            let mut out = w.stop().unwrap();
            let (recv, st) = out.pop().unwrap();
            (recv, st, xdp)
        })
        .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (sizes, total, bad_crc, bad_magic, per_ms) =
        (c.sizes.clone(), c.frames, c.bad_crc, c.bad_magic, c.per_ms);
    let tx_stats = pair
        .a
        .run_in(move || {
            let w = Workers::spawn(&scfg, |_| Sender {
                sizes: sizes.clone(),
                total,
                next: 0,
                bad_crc,
                bad_magic,
                start: None,
                per_ms,
            })
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                let s = &w.stats()[0];
                if s.io.tx_packets + s.io.tx_dropped >= total + bad_crc + bad_magic {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(50));
            let mut out = w.stop().unwrap();
            out.pop().unwrap().1
        })
        .unwrap();
    // The receiver may have given up already (nothing arrived before its deadline): then
    // `check` reports what went missing.
    let _ = done_tx.send(());
    let (recv, rx_stats, rx_xdp) = rx_thread.join().unwrap();
    Outcome {
        recv,
        rx_stats,
        tx_stats,
        rx_xdp,
    }
}

fn check(c_frames: u64, sizes: &[usize], o: &Outcome, a: BackendKind, b: BackendKind) {
    let sel_a = o.tx_stats.selection.as_ref().unwrap();
    let sel_b = o.rx_stats.selection.as_ref().unwrap();
    assert_eq!(sel_a.kind, a, "sender backend: {sel_a:?}");
    assert_eq!(sel_b.kind, b, "receiver backend: {sel_b:?}");
    assert_eq!(o.recv.wrong, 0, "frames with wrong bytes");
    assert_eq!(o.recv.dup, 0, "duplicates");
    assert_eq!(
        o.recv.seen.len() as u64,
        c_frames,
        "every frame arrives: rx {:?} tx {:?}",
        o.rx_stats,
        o.tx_stats
    );
    let want_bytes: u64 = (0..c_frames)
        .map(|s| sizes[s as usize % sizes.len()] as u64)
        .sum();
    assert_eq!(o.recv.bytes, want_bytes);
    assert_eq!(o.tx_stats.io.tx_dropped, 0);
}

fn std_case(tag: &'static str, a: BackendChoice, b: BackendChoice, attach: AttachMode) -> Case {
    Case {
        tag,
        a,
        b,
        attach,
        mtu: 1500,
        sizes: vec![64, 1400],
        frames: 3000,
        bad_crc: 7,
        bad_magic: 5,
        per_ms: 25,
    }
}

fn check_malformed(o: &Outcome, xdp_receiver: bool) {
    assert_eq!(
        o.rx_stats.dropped(DropReason::ChecksumMismatch),
        7,
        "{:?}",
        o.rx_stats
    );
    if xdp_receiver {
        let c = o.rx_xdp.as_ref().expect("XDP counters");
        assert_eq!(
            c.get(Counter::DropBadMagic),
            5,
            "the XDP program drops bad magic"
        );
        assert_eq!(o.rx_stats.dropped(DropReason::BadMagic), 0);
    } else {
        assert_eq!(o.rx_stats.dropped(DropReason::BadMagic), 5);
    }
}

#[test]
fn io_afxdp_native_to_afxdp() {
    if !privileged_test_guard("io_afxdp_native_to_afxdp") {
        return;
    }
    let c = std_case(
        "xn",
        BackendChoice::AfXdp,
        BackendChoice::AfXdp,
        AttachMode::Native,
    );
    let o = run(c);
    check(
        3000,
        &[64, 1400],
        &o,
        BackendKind::AfXdp,
        BackendKind::AfXdp,
    );
    check_malformed(&o, true);
}

#[test]
fn io_afxdp_generic_to_afxdp() {
    if !privileged_test_guard("io_afxdp_generic_to_afxdp") {
        return;
    }
    let c = std_case(
        "xg",
        BackendChoice::AfXdp,
        BackendChoice::AfXdp,
        AttachMode::Generic,
    );
    let o = run(c);
    check(
        3000,
        &[64, 1400],
        &o,
        BackendKind::AfXdp,
        BackendKind::AfXdp,
    );
    check_malformed(&o, true);
}

#[test]
fn io_udp_to_udp() {
    if !privileged_test_guard("io_udp_to_udp") {
        return;
    }
    let c = std_case(
        "uu",
        BackendChoice::Udp,
        BackendChoice::Udp,
        AttachMode::Native,
    );
    let o = run(c);
    check(3000, &[64, 1400], &o, BackendKind::Udp, BackendKind::Udp);
    check_malformed(&o, false);
}

#[test]
fn io_afxdp_to_udp() {
    if !privileged_test_guard("io_afxdp_to_udp") {
        return;
    }
    let c = std_case(
        "xu",
        BackendChoice::AfXdp,
        BackendChoice::Udp,
        AttachMode::Native,
    );
    let o = run(c);
    check(3000, &[64, 1400], &o, BackendKind::AfXdp, BackendKind::Udp);
    check_malformed(&o, false);
}

#[test]
fn io_afxdp_jumbo_multibuffer() {
    if !privileged_test_guard("io_afxdp_jumbo_multibuffer") {
        return;
    }
    // Datagrams of 2 and 3 UMEM frames (8000 and 8900 B of payload), 6000 of them: about
    // 15000 tx frames through a 4096-frame tx half and a 4096-entry tx ring, so both go
    // round several times and the ring's reservations meet packets they cannot hold whole
    // (a stale reservation of 1 or 2 slots once stalled the sender for good).
    let sizes = vec![8000, 8900];
    let c = Case {
        tag: "xj",
        a: BackendChoice::AfXdp,
        b: BackendChoice::AfXdp,
        attach: AttachMode::Native,
        mtu: 9000,
        sizes: sizes.clone(),
        frames: 6000,
        bad_crc: 7,
        bad_magic: 5,
        per_ms: 10,
    };
    let o = run(c);
    check(6000, &sizes, &o, BackendKind::AfXdp, BackendKind::AfXdp);
    check_malformed(&o, true);
}

#[test]
fn io_udp_jumbo() {
    if !privileged_test_guard("io_udp_jumbo") {
        return;
    }
    let c = Case {
        tag: "uj",
        a: BackendChoice::Udp,
        b: BackendChoice::Udp,
        attach: AttachMode::Native,
        mtu: 9000,
        sizes: vec![8000],
        frames: 1000,
        bad_crc: 7,
        bad_magic: 5,
        per_ms: 10,
    };
    let o = run(c);
    check(1000, &[8000], &o, BackendKind::Udp, BackendKind::Udp);
    check_malformed(&o, false);
}

/// Runs unprivileged too: a missing interface makes AF_XDP fail, UDP is chosen, and the
/// reason is reported.
#[test]
fn io_fallback_to_udp_reports_reason() {
    let mut cfg = IoConfig::new(
        "dwcp-nosuch0",
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
    );
    cfg.local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 47391);
    let program = SharedProgram::new();
    let (port, sel) = io::open_port(&cfg, 0, &program).unwrap();
    use dwcp_engine::io::Backend;
    assert_eq!(port.kind(), BackendKind::Udp);
    assert_eq!(sel.kind, BackendKind::Udp);
    let reason = sel.fallback_reason.expect("a reason is reported");
    assert!(
        reason.contains("dwcp-nosuch0"),
        "reason names the interface: {reason}"
    );
    assert!(sel.detail.contains("UDP socket"), "{}", sel.detail);

    // Asking for AF_XDP only is an error, not a silent fallback.
    cfg.choice = BackendChoice::AfXdp;
    assert!(io::open_port(&cfg, 0, &program).is_err());
    // Asking for UDP gives no fallback reason.
    cfg.choice = BackendChoice::Udp;
    drop(port);
    let (_, sel) = io::open_port(&cfg, 0, &program).unwrap();
    assert_eq!(sel.fallback_reason, None);
}

/// Body run in a child process without privileges (see the next test); a no-op otherwise.
#[test]
fn io_fallback_child_body() {
    if std::env::var_os("DWCP_FALLBACK_CHILD").is_none() {
        return;
    }
    let mut cfg = IoConfig::new(
        "lo",
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 47392),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
    );
    cfg.hugepages = false;
    let (_port, sel) = io::open_port(&cfg, 0, &SharedProgram::new()).unwrap();
    println!(
        "SELECTION kind={} reason={}",
        sel.kind,
        sel.fallback_reason.unwrap_or_default()
    );
}

/// Drops root and every capability (`setpriv`), then opens a port on `lo`: attaching XDP
/// needs CAP_NET_ADMIN + CAP_BPF, so the port must fall back to UDP and say why.
#[test]
fn io_fallback_without_capabilities() {
    if !privileged_test_guard("io_fallback_without_capabilities") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "io_fallback_child_body",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DWCP_FALLBACK_CHILD", "1")
        .output()
        .expect("setpriv (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("SELECTION").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no selection line in {stdout}"));
    assert!(line.contains("kind=udp"), "{line}");
    let reason = line.split("reason=").nth(1).unwrap_or("");
    assert!(!reason.is_empty(), "a reason is reported: {line}");
    assert!(
        reason.contains("lo") && (reason.contains("ermitted") || reason.contains("EPERM")),
        "the reason names the interface and the permission error: {line}"
    );
}
