//! Image migration jobs over the DWCP transfer engine (`dwcp-migrate` rounds moved by
//! `mover::RunnerMover`): live rounds with a writer thread, a destination killed mid-round,
//! incremental re-migration wire bounds, a qcow2 source, and a real veth lab (privileged).
//!
//! Unprivileged tests use the UDP backend on loopback; each test has its own ports.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dwcp_engine::io::{BackendChoice, IoConfig};
use dwcp_engine::mover::RunnerMover;
use dwcp_engine::runner::RunOptions;
use dwcp_migrate::fault::CutStreams;
use dwcp_migrate::session::Base;
use dwcp_migrate::{
    DestConfig, DestReport, MigrateError, Phase, Progress, SourceConfig, SourceHooks, SourceReport,
    run_dest, run_source,
};
use dwcp_transfer::SenderConfig;

const BS: usize = 4096;

fn port_base(test: u16) -> u16 {
    // Distinct per process and per test (tests of one binary run in parallel).
    20000 + (std::process::id() % 2000) as u16 * 16 + test * 2
}

fn mover(
    ifname: &str,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    choice: BackendChoice,
    core: usize,
) -> RunnerMover {
    let mut io = IoConfig::new(ifname, local, peer);
    io.choice = choice;
    RunnerMover {
        opts: RunOptions {
            io,
            core,
            timeout: Duration::from_secs(20),
            idle_yield: true,
        },
        sender: SenderConfig {
            mtu: Some(1500),
            ..SenderConfig::default()
        },
        linger: Duration::from_millis(100),
        tally: Default::default(),
    }
}

fn loopback_movers(test: u16) -> (RunnerMover, RunnerMover) {
    let p = port_base(test);
    let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
    let b = SocketAddrV4::new(Ipv4Addr::LOCALHOST, p + 1);
    (
        mover("lo", a, b, BackendChoice::Udp, 0),
        mover("lo", b, a, BackendChoice::Udp, 1),
    )
}

/// Content with zero regions, text-like and random blocks (what a disk image holds).
fn make_image(blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let words: [&[u8]; 6] = [
        b"inode ",
        b"extent ",
        b"journal ",
        b"block ",
        b"page ",
        b"\n",
    ];
    let mut v = Vec::with_capacity(blocks * BS);
    for b in 0..blocks {
        match b % 10 {
            0 | 1 => v.resize(v.len() + BS, 0),
            2 => v.extend((0..BS).map(|_| rng.next() as u8)),
            _ => {
                let end = v.len() + BS;
                while v.len() < end {
                    let w = words[(rng.next() % 6) as usize];
                    v.extend_from_slice(&w[..w.len().min(end - v.len())]);
                }
            }
        }
    }
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Changes `n` distinct blocks (even ones: a 64-byte edit; odd ones: rewritten with text
/// from another part of the image); returns them sorted.
fn change_blocks(img: &mut [u8], n: usize, seed: u64) -> Vec<usize> {
    let blocks = img.len() / BS;
    let mut rng = Rng(seed | 1);
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < n {
        chosen.insert((rng.next() % blocks as u64) as usize);
    }
    for (k, &b) in chosen.iter().enumerate() {
        if k % 2 == 0 {
            let off = b * BS + (rng.next() % 4000) as usize;
            for byte in &mut img[off..off + 64] {
                *byte = rng.next() as u8;
            }
        } else {
            let from = (rng.next() % blocks as u64) as usize;
            let src: Vec<u8> = img[from * BS..(from + 1) * BS]
                .iter()
                .map(|x| x.wrapping_add(1))
                .collect();
            img[b * BS..(b + 1) * BS].copy_from_slice(&src);
        }
    }
    chosen.into_iter().collect()
}

fn control_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (d, _) = l.accept().unwrap();
    (s, d)
}

type OnSending = Box<dyn FnMut(&Progress) + Send>;

#[derive(Default)]
struct Hooks {
    paused: Option<Arc<AtomicBool>>,
    progress: Vec<Progress>,
    on_sending: Option<OnSending>,
}

impl SourceHooks for Hooks {
    fn pause(&mut self) -> Result<(), String> {
        if let Some(p) = &self.paused {
            p.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
    fn progress(&mut self, p: &Progress) {
        if p.phase == Phase::Sending
            && let Some(f) = &mut self.on_sending
        {
            f(p);
        }
        self.progress.push(p.clone());
    }
}

fn migrate_in_process(
    test: u16,
    cfg: &SourceConfig,
    dst_image: &Path,
    hooks: &mut Hooks,
) -> (
    Result<SourceReport, MigrateError>,
    Result<DestReport, MigrateError>,
) {
    let (mut sm, mut dm) = loopback_movers(test);
    let (cs, cd) = control_pair();
    let dcfg = DestConfig {
        image: dst_image.to_path_buf(),
        scratch: dst_image.parent().unwrap().join("scratch"),
    };
    std::thread::scope(|s| {
        let d = s.spawn(move || run_dest(&dcfg, cd, &mut dm, &AtomicBool::new(false)));
        let r = run_source(cfg, cs, &mut sm, hooks, &AtomicBool::new(false));
        (r, d.join().unwrap())
    })
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let dst = d.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    (d, src, dst)
}

#[test]
fn live_rounds_over_dwcp_converge_and_verify() {
    let (_d, src, dst) = dirs();
    let img = src.join("vm.img");
    let blocks = 2048; // 8 MiB
    std::fs::write(&img, make_image(blocks, 1)).unwrap();
    let paused = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (paused, writes, img) = (paused.clone(), writes.clone(), img.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            let mut rng = Rng(77);
            while !paused.load(Ordering::SeqCst) {
                let x = rng.next();
                let b = if x.is_multiple_of(8) {
                    x % blocks as u64
                } else {
                    x % 32
                };
                f.write_all_at(&x.to_le_bytes(), b * BS as u64 + (x >> 40) % 4000)
                    .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let mut cfg = SourceConfig::new(&img, 101);
    cfg.live = true;
    cfg.max_rounds = 8;
    cfg.converge_bytes = 256 * 1024;
    cfg.scratch = src.join("scratch");
    let mut hooks = Hooks {
        paused: Some(paused.clone()),
        ..Hooks::default()
    };
    let (s, d) = migrate_in_process(0, &cfg, &dst.join("vm.img"), &mut hooks);
    paused.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let (s, d) = (s.unwrap(), d.unwrap());
    for r in &s.rounds {
        eprintln!(
            "round {}{}: {} blocks, data {} B, patch {} B, wire {} B",
            r.round,
            if r.last { " (final)" } else { "" },
            r.blocks,
            r.data_bytes,
            r.patch_bytes,
            r.wire_bytes
        );
    }
    assert!(writes.load(Ordering::Relaxed) > 10);
    assert!(s.rounds.len() >= 2, "pre-copy then final round");
    assert!(s.rounds.last().unwrap().last);
    for r in &s.rounds[1..] {
        assert!(
            r.data_bytes < 2 << 20,
            "round {} sent {} B",
            r.round,
            r.data_bytes
        );
    }
    // Bytes on the wire follow the patches (frame headers, acks excluded, retransmissions
    // included): at least the patch, at most ~10 % more on loopback, plus a few frames sent
    // again when the tests of this binary run in parallel on a busy machine (a 22 KB round
    // once had 10 KB of retransmissions and tail probes).
    for r in &s.rounds {
        assert!(r.wire_bytes >= r.patch_bytes, "{r:?}");
        assert!(r.wire_bytes <= r.patch_bytes * 11 / 10 + 24 * 1024, "{r:?}");
    }
    assert_eq!(
        std::fs::read(&img).unwrap(),
        std::fs::read(dst.join("vm.img")).unwrap()
    );
    assert_eq!(d.hash, s.hash);
    assert!(hooks.progress.iter().any(|p| p.round >= 2));
    assert!(hooks.progress.iter().any(|p| p.wire_bytes > 0));
}

/// A DWCP round stream that breaks is resumed: the source's input fails a third of the way
/// in (the stream carrier sends an ABORT segment, the destination's receive fails), then the
/// destination's output fails early in the resumed stream (the carrier's sender then runs
/// into a destination that stopped receiving). The third stream completes the round from
/// the destination's first missing part, and the image arrives exactly.
#[test]
fn a_broken_round_stream_over_dwcp_is_resumed() {
    let (_d, src, dst) = dirs();
    let img = src.join("vm.img");
    let dst_img = dst.join("vm.img");
    let v = make_image(2048, 11);
    std::fs::write(&img, &v).unwrap();
    let mut cfg = SourceConfig::new(&img, 610);
    cfg.scratch = src.join("scratch");
    cfg.part_bytes = 1 << 20;
    let (sm, dm) = loopback_movers(10);
    let mut sm = CutStreams::new(sm, &[Some(1_000_003)]);
    let mut dm = CutStreams::new(dm, &[None, Some(300_007)]);
    let (cs, cd) = control_pair();
    let dcfg = DestConfig {
        image: dst_img.clone(),
        scratch: dst.join("scratch"),
    };
    let (s, d) = std::thread::scope(|sc| {
        let d = sc.spawn(|| run_dest(&dcfg, cd, &mut dm, &AtomicBool::new(false)));
        let r = run_source(&cfg, cs, &mut sm, &mut (), &AtomicBool::new(false));
        (r, d.join().unwrap())
    });
    let s = s.unwrap_or_else(|e| panic!("source: {e}: {e:?}"));
    d.unwrap_or_else(|e| panic!("destination: {e}: {e:?}"));
    assert!(std::fs::read(&dst_img).unwrap() == v, "the image exactly");
    let p = s.pipeline.as_ref().unwrap();
    assert!(p.stream && p.parts >= 4, "{p:?}");
    assert_eq!(p.stream_resumes, 2, "{p:?}");
    let (sc, dc) = (sm.carried(), dm.carried());
    assert_eq!((sc.len(), dc.len()), (3, 3), "{sc:?} {dc:?}");
    let whole = s.rounds[0].patch_bytes + u64::from(p.parts) * 24;
    assert!(
        sc[2] < whole,
        "the last stream resumed, not restarted: {sc:?}"
    );
    assert_eq!(dc[2], sc[2], "the last stream arrived whole: {sc:?} {dc:?}");
}

fn dwcp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dwcp"))
}

fn spawn_recv(image: &Path, local: SocketAddrV4, peer: SocketAddrV4) -> Child {
    Command::new(dwcp_bin())
        .args([
            "migrate",
            "recv",
            "--iface",
            "lo",
            "--backend",
            "udp",
            "--core",
            "1",
        ])
        .arg("--local")
        .arg(local.to_string())
        .arg("--peer")
        .arg(peer.to_string())
        .arg("--timeout")
        .arg("20")
        .arg(image)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dwcp binary")
}

#[test]
fn destination_killed_mid_round_keeps_its_previous_image_and_the_next_job_completes() {
    let (_d, src, dst) = dirs();
    let img = src.join("vm.img");
    let dst_img = dst.join("vm.img");
    let v1 = make_image(1024, 2);
    std::fs::write(&dst_img, &v1).unwrap();
    let mut v2 = make_image(6144, 3); // 24 MiB, mostly new
    change_blocks(&mut v2, 100, 4);
    std::fs::write(&img, &v2).unwrap();
    let p = port_base(1);
    let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
    let b = SocketAddrV4::new(Ipv4Addr::LOCALHOST, p + 1);

    let child = Arc::new(std::sync::Mutex::new(spawn_recv(&dst_img, b, a)));
    let mut sm = mover("lo", a, b, BackendChoice::Udp, 0);
    // Slow the sender down; the destination is killed as round 1's patch starts moving.
    sm.opts.io.batch = 1;
    let killed = Arc::new(AtomicBool::new(false));
    let mut hooks = Hooks::default();
    {
        let (child, killed) = (child.clone(), killed.clone());
        hooks.on_sending = Some(Box::new(move |_: &Progress| {
            if !killed.swap(true, Ordering::SeqCst) {
                let mut c = child.lock().unwrap();
                c.kill().unwrap();
                c.wait().unwrap();
            }
        }));
    }
    let mut cfg = SourceConfig::new(&img, 201);
    cfg.scratch = src.join("scratch");
    let ctl = connect_retry(b);
    let cancel = AtomicBool::new(false);
    let t = Instant::now();
    let r = run_source(&cfg, ctl, &mut sm, &mut hooks, &cancel);
    assert!(killed.load(Ordering::SeqCst), "killed mid-round");
    assert!(r.is_err(), "source fails when the destination dies");
    eprintln!("source failed after {:?}: {:?}", t.elapsed(), r.err());
    assert_eq!(
        std::fs::read(&dst_img).unwrap(),
        v1,
        "previous image intact"
    );

    // A new destination process removes the stale working copy and completes the job.
    let mut c2 = spawn_recv(&dst_img, b, a);
    let mut sm = mover("lo", a, b, BackendChoice::Udp, 0);
    cfg.job_id = 202;
    let ctl = connect_retry(b);
    let s = run_source(&cfg, ctl, &mut sm, &mut (), &cancel).unwrap();
    assert!(c2.wait().unwrap().success());
    assert_eq!(s.base, Base::Manifest);
    assert_eq!(std::fs::read(&dst_img).unwrap(), v2);
    assert!(!dst.join("vm.img.dwcp-new").exists());
}

fn connect_retry(addr: SocketAddrV4) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn incremental_remigration_over_dwcp_sends_only_changed_blocks() {
    for (i, pct) in [1usize, 5, 20].into_iter().enumerate() {
        for cached in [true, false] {
            let (_d, src, dst) = dirs();
            let img = src.join("vm.img");
            let dst_img = dst.join("vm.img");
            let blocks = 2048;
            let v1 = make_image(blocks, 5);
            std::fs::write(&img, &v1).unwrap();
            let mut cfg = SourceConfig::new(&img, 300 + i as u64);
            cfg.scratch = src.join("scratch");
            if cached {
                cfg.base_cache = Some(src.join("cache"));
            }
            let test = 2 + (i as u16) * 2 + u16::from(cached);
            let (s, d) = migrate_in_process(test, &cfg, &dst_img, &mut Hooks::default());
            s.unwrap();
            d.unwrap();
            let mut v2 = v1.clone();
            let changed = change_blocks(&mut v2, blocks * pct / 100, 9 + pct as u64);
            std::fs::write(&img, &v2).unwrap();
            let mut changed_bytes = Vec::new();
            for &b in &changed {
                changed_bytes.extend_from_slice(&v2[b * BS..(b + 1) * BS]);
            }
            let zref = zstd::bulk::compress(&changed_bytes, 3).unwrap().len() as u64;
            cfg.job_id += 100;
            let (s, d) = migrate_in_process(test, &cfg, &dst_img, &mut Hooks::default());
            let (s, _d) = (s.unwrap(), d.unwrap());
            assert_eq!(std::fs::read(&dst_img).unwrap(), v2);
            assert_eq!(s.rounds.len(), 1);
            assert_eq!(s.rounds[0].blocks, changed.len() as u64);
            let wire = s.wire_bytes;
            eprintln!(
                "{pct:2} % changed, base {:?}: wire {wire} B (manifest {} B), patch {} B, \
                 zstd of changed blocks {zref} B, wire/zstd {:.2}",
                s.base,
                s.manifest_bytes,
                s.rounds[0].patch_bytes,
                wire as f64 / zref as f64
            );
            // Frame headers add ~1 % (52 bytes per ~1400-byte chunk at MTU 1500).
            if cached {
                assert_eq!(s.base, Base::Cached);
                assert!(wire <= zref, "wire {wire} > zstd {zref}");
            } else {
                assert_eq!(s.base, Base::Manifest);
                // Per-block zstd of the changed blocks is within 1.3x of zstd over all of
                // them; the manifest (8 bytes per image block) comes on top.
                let patch = s.rounds[0].patch_bytes;
                assert!(
                    patch as f64 <= 1.3 * zref as f64,
                    "patch {patch} > 1.3 x {zref}"
                );
                if pct >= 5 {
                    assert!(
                        wire as f64 <= 1.45 * zref as f64,
                        "wire {wire} > 1.45 x {zref}"
                    );
                }
            }
        }
    }
}

fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "qemu-img missing (apt-get install qemu-utils): qcow2 test not run";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("!!! {msg}");
    }
    ok
}

#[test]
fn qcow2_source_arrives_as_the_same_raw_image() {
    if !have_qemu_img() {
        return;
    }
    let (_d, src, dst) = dirs();
    let raw = src.join("vm.raw");
    let qcow = src.join("vm.qcow2");
    let data = make_image(2048, 6);
    std::fs::write(&raw, &data).unwrap();
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    let mut cfg = SourceConfig::new(&qcow, 401);
    cfg.scratch = src.join("scratch");
    let dst_img = dst.join("vm.img");
    let (s, d) = migrate_in_process(9, &cfg, &dst_img, &mut Hooks::default());
    let (s, _) = (s.unwrap(), d.unwrap());
    assert_eq!(std::fs::read(&dst_img).unwrap(), data);
    assert_eq!(s.image_len, data.len() as u64);
    assert!(
        !cfg.scratch.join("vm.qcow2.dwcp-raw").exists(),
        "scratch conversion removed"
    );
}

#[test]
fn migration_over_a_real_veth_pair() {
    if !dwcp_netns::privileged_test_guard("migration_over_a_real_veth_pair") {
        return;
    }
    let pair = dwcp_netns::Pair::new("mig", dwcp_netns::VethOptions::default()).unwrap();
    let (_d, src, dst) = dirs();
    let img = src.join("vm.img");
    let dst_img = dst.join("vm.img");
    let v1 = make_image(4096, 7);
    std::fs::write(&img, &v1).unwrap();
    let a = SocketAddrV4::new(pair.ip_a(), 7470);
    let b = SocketAddrV4::new(pair.ip_b(), 7470);
    // A job; its streams cut as given (`CutStreams`): source's cuts, destination's cuts.
    let run = |job: u64, cache: &Path, cuts: [Vec<Option<u64>>; 2]| {
        let [src_cuts, dst_cuts] = cuts;
        let dst_img = dst_img.clone();
        let dscratch = dst.join("scratch");
        let d = pair
            .b
            .spawn_in(move || {
                let l = TcpListener::bind(b).unwrap();
                let (ctl, _) = l.accept().unwrap();
                let m = mover(dwcp_netns::IF_B, b, a, BackendChoice::Auto, 1);
                let mut m = CutStreams::new(m, &dst_cuts);
                run_dest(
                    &DestConfig {
                        image: dst_img,
                        scratch: dscratch,
                    },
                    ctl,
                    &mut m,
                    &AtomicBool::new(false),
                )
            })
            .unwrap();
        let mut cfg = SourceConfig::new(&img, job);
        cfg.scratch = src.join("scratch");
        cfg.base_cache = Some(cache.to_path_buf());
        // Parts of 1 MiB of dirty data: the full copy is a dozen parts in one DWCP stream.
        cfg.part_bytes = 1 << 20;
        let s = pair
            .a
            .run_in(move || {
                let ctl = connect_retry(b);
                let m = mover(dwcp_netns::IF_A, a, b, BackendChoice::Auto, 0);
                let mut m = CutStreams::new(m, &src_cuts);
                run_source(&cfg, ctl, &mut m, &mut (), &AtomicBool::new(false))
            })
            .unwrap();
        (s.unwrap(), d.join().unwrap().unwrap())
    };
    let cache = src.join("cache");
    let (s1, _) = run(501, &cache, [vec![], vec![]]);
    assert_eq!(std::fs::read(&dst_img).unwrap(), v1);
    let p = s1.pipeline.as_ref().expect("the only round is pipelined");
    assert!(p.stream, "the parts moved as one stream: {p:?}");
    assert!(p.parts >= 8, "{p:?}");
    assert!(
        s1.wire_bytes >= s1.rounds[0].patch_bytes,
        "every patch byte crossed"
    );
    let mut v2 = v1.clone();
    let changed = change_blocks(&mut v2, 200, 8);
    std::fs::write(&img, &v2).unwrap();
    let (s2, _) = run(502, &cache, [vec![], vec![]]);
    assert_eq!(std::fs::read(&dst_img).unwrap(), v2);
    assert_eq!(s2.base, Base::Cached);
    assert_eq!(s2.rounds[0].blocks, changed.len() as u64);
    assert_eq!(s2.pipeline.as_ref().unwrap().stream_resumes, 0);
    // A fresh destination, and the full copy's stream breaks at the source 3 MB in: it is
    // resumed over AF_XDP from the destination's first missing part.
    std::fs::remove_file(&dst_img).unwrap();
    let _ = std::fs::remove_file(dwcp_migrate::store::sidecar_path(&dst_img));
    let (s3, _) = run(503, &cache, [vec![Some(3_000_000)], vec![]]);
    assert!(
        std::fs::read(&dst_img).unwrap() == v2,
        "resumed: the image exactly"
    );
    let p3 = s3.pipeline.as_ref().unwrap();
    assert_eq!(p3.stream_resumes, 1, "{p3:?}");
    eprintln!(
        "veth: full {} B data -> {} B wire in {:?}; 200 changed blocks -> {} B wire in {:?}",
        s1.data_bytes, s1.wire_bytes, s1.elapsed, s2.wire_bytes, s2.elapsed
    );
    assert!(s2.wire_bytes < s1.wire_bytes / 10);
}
