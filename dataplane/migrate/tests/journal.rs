//! The destination's crash safety and its manifest sidecar: a destination process killed
//! (aborted, no destructors) right before the journal commit keeps the old image exactly; one
//! killed in the middle of the in-place apply yields the new image exactly after recovery.
//! Also: the sidecar spares the hello hash and is invalidated by a write; an in-place job
//! whose rounds shrink and regrow the image ends byte-exact.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use dwcp_migrate::store::{self, Recovery, Target};
use dwcp_migrate::{DestConfig, SourceConfig, TcpMover, run_dest, run_source};

const BS: usize = 4096;

fn image(blocks: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(blocks * BS);
    for b in 0..blocks {
        if b % 4 == 0 {
            v.resize(v.len() + BS, 0);
            continue;
        }
        for _ in 0..BS / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&(x % 1000).to_le_bytes());
        }
    }
    v
}

fn changed(v1: &[u8], every: usize) -> Vec<u8> {
    let mut v2 = v1.to_vec();
    for b in (3..v1.len() / BS).step_by(every) {
        v2[b * BS + 100..b * BS + 180].fill(0x5a);
    }
    v2
}

/// Child side: serves one destination job (plain-TCP mover) and prints its ports. Does
/// nothing unless `DWCP_TEST_CHILD_DEST` is set (run by the parent tests below).
#[test]
fn child_destination() {
    let Ok(spec) = std::env::var("DWCP_TEST_CHILD_DEST") else {
        return;
    };
    let (image, src_mover) = spec.split_once(',').unwrap();
    let src_mover: SocketAddr = src_mover.parse().unwrap();
    let ctl = TcpListener::bind("127.0.0.1:0").unwrap();
    let mv = TcpListener::bind("127.0.0.1:0").unwrap();
    println!(
        "PORTS {} {}",
        ctl.local_addr().unwrap(),
        mv.local_addr().unwrap()
    );
    let (c, _) = ctl.accept().unwrap();
    let image = PathBuf::from(image);
    let cfg = DestConfig {
        scratch: image.parent().unwrap().join("scratch-dst"),
        image,
    };
    let mut m = TcpMover::new(mv, src_mover);
    let r = run_dest(&cfg, c, &mut m, &AtomicBool::new(false));
    println!("DONE {}", r.is_ok());
}

/// Runs a job from `src_img` to a destination process with `failpoint`; returns whether the
/// source succeeded.
fn job_with_failpoint(src_img: &Path, dst_img: &Path, failpoint: &str) -> bool {
    job(
        src_img,
        dst_img,
        failpoint,
        dwcp_migrate::DEFAULT_PART_BYTES,
    )
    .is_some()
}

/// [`job_with_failpoint`] with rounds cut into parts of `part_bytes`; the source's report if
/// it succeeded.
fn job(
    src_img: &Path,
    dst_img: &Path,
    failpoint: &str,
    part_bytes: u64,
) -> Option<dwcp_migrate::SourceReport> {
    job_with(src_img, dst_img, failpoint, part_bytes, true)
}

/// [`job`] whose pipelined round moves as one stream (`part_stream`) or one object per part.
fn job_with(
    src_img: &Path,
    dst_img: &Path,
    failpoint: &str,
    part_bytes: u64,
    part_stream: bool,
) -> Option<dwcp_migrate::SourceReport> {
    let src_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let src_addr = src_l.local_addr().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_destination",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "DWCP_TEST_CHILD_DEST",
            format!("{},{src_addr}", dst_img.display()),
        )
        .env("DWCP_MIGRATE_FAILPOINT", failpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (ctl, mv) = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        // libtest prints "test child_destination ... " before the test's own output.
        if let Some(at) = line.find("PORTS ") {
            let rest = line[at + 6..].trim();
            let (a, b) = rest.split_once(' ').unwrap();
            break (
                a.parse::<SocketAddr>().unwrap(),
                b.parse::<SocketAddr>().unwrap(),
            );
        }
    };
    let c = TcpStream::connect(ctl).unwrap();
    let mut cfg = SourceConfig::new(src_img, 77);
    cfg.scratch = src_img.parent().unwrap().join("scratch-src");
    cfg.part_bytes = part_bytes;
    cfg.part_stream = part_stream;
    let mut m = TcpMover::new(src_l, mv);
    let r = run_source(&cfg, c, &mut m, &mut (), &AtomicBool::new(false));
    if let Err(e) = &r {
        eprintln!("source failed: {e}: {e:?}");
    }
    let st = child.wait().unwrap();
    if failpoint.is_empty() {
        assert!(st.success());
    } else {
        assert!(!st.success(), "the destination was killed at {failpoint}");
    }
    r.ok()
}

fn setup(blocks: usize) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("a")).unwrap();
    std::fs::create_dir_all(d.path().join("b")).unwrap();
    let src = d.path().join("a/img");
    let dst = d.path().join("b/img");
    let v1 = image(blocks, 9);
    let v2 = changed(&v1, 7);
    std::fs::write(&src, &v2).unwrap();
    std::fs::write(&dst, &v1).unwrap();
    (d, src, dst, v1, v2)
}

#[test]
fn killed_before_the_journal_commit_keeps_the_old_image_exactly() {
    let (_d, src, dst, v1, _v2) = setup(2048);
    assert!(!job_with_failpoint(&src, &dst, "before-journal-commit"));
    assert!(
        std::fs::read(&dst).unwrap() == v1,
        "old image untouched by the crash"
    );
    assert!(
        store::journal_part_path(&dst).exists(),
        "crash left the part"
    );
    assert!(!store::journal_path(&dst).exists(), "not committed");
    assert_eq!(store::recover(&dst).unwrap(), Recovery::Discarded);
    assert!(std::fs::read(&dst).unwrap() == v1, "old image exactly");
    assert!(!store::journal_part_path(&dst).exists());
}

#[test]
fn killed_in_the_middle_of_the_apply_recovers_the_new_image_exactly() {
    let (_d, src, dst, v1, v2) = setup(2048);
    assert!(!job_with_failpoint(&src, &dst, "mid-apply"));
    let torn = std::fs::read(&dst).unwrap();
    assert!(torn != v1 && torn != v2, "the crash hit mid-apply");
    assert!(store::journal_path(&dst).exists(), "committed journal left");
    assert_eq!(store::recover(&dst).unwrap(), Recovery::Replayed);
    assert!(std::fs::read(&dst).unwrap() == v2, "new image exactly");
    assert!(!store::journal_path(&dst).exists());
    // The replay wrote a valid sidecar: the next hello does not hash the image.
    let h = store::held(&dst, BS).unwrap().unwrap();
    assert!(h.from_sidecar);
    assert_eq!(h.hash, dwcp_kernels::xxh3_128(&v2));
    // And a next job completes normally (no failpoint).
    let v3 = changed(&v2, 5);
    std::fs::write(&src, &v3).unwrap();
    assert!(job_with_failpoint(&src, &dst, ""));
    assert!(std::fs::read(&dst).unwrap() == v3);
}

#[test]
fn a_round_cut_into_parts_yields_the_image_exactly() {
    round_in_parts(true);
}

#[test]
fn a_round_cut_into_part_objects_yields_the_image_exactly() {
    round_in_parts(false);
}

fn round_in_parts(part_stream: bool) {
    // 8 MiB images, 3/4 of the blocks non-zero: parts of 1 MiB of dirty data (the first a
    // sixteenth of that, doubling), so about a dozen parts, applied while the next ones arrive; as one stream
    // or one object per part.
    let job = |src: &Path, dst: &Path, fp: &str, pb: u64| job_with(src, dst, fp, pb, part_stream);
    let (_d, src, dst, _v1, v2) = setup(2048);
    let r = job(&src, &dst, "", 1 << 20).expect("in-place job");
    assert!(
        std::fs::read(&dst).unwrap() == v2,
        "in place: new image exactly"
    );
    let p = r.pipeline.as_ref().unwrap();
    assert!(p.parts > 1 && p.parts == r.rounds[0].parts, "{p:?}");
    assert_eq!(p.stream, part_stream, "{p:?}");
    // Streamed parts are one zstd stream at the policy's level; part objects carry zstd
    // frames per container.
    assert_eq!(
        p.stream_zstd_level,
        if part_stream { 3 } else { 0 },
        "{p:?}"
    );
    assert_eq!(p.zstd_levels.len(), p.parts as usize, "{p:?}");
    assert_eq!(r.hash, dwcp_kernels::xxh3_128(&v2));
    assert_eq!(r.rounds[0].data_bytes, r.data_bytes);
    assert!(!store::journal_part_path(&dst).exists());
    // Fresh destination (nothing held): every non-zero block crosses, in parts.
    std::fs::remove_file(&dst).unwrap();
    let _ = std::fs::remove_file(store::sidecar_path(&dst));
    let r = job(&src, &dst, "", 1 << 20).expect("fresh job");
    assert!(
        std::fs::read(&dst).unwrap() == v2,
        "fresh: new image exactly"
    );
    let parts = r.pipeline.as_ref().unwrap().parts;
    assert!(parts >= 6, "{parts} parts");
    let nonzero = v2.chunks(BS).filter(|b| b.iter().any(|&x| x != 0)).count();
    assert_eq!(r.data_bytes, (nonzero * BS) as u64);
    assert!(
        r.rounds[0].patch_bytes < r.data_bytes,
        "containers compressed"
    );
}

#[test]
fn killed_in_the_middle_of_a_round_in_parts_keeps_the_old_image_exactly() {
    let (_d, src, dst, v1, v2) = setup(2048);
    // The destination dies once it applied the second part (more parts were to come).
    assert!(job(&src, &dst, "mid-round", 1 << 20).is_none());
    assert!(std::fs::read(&dst).unwrap() == v1, "old image untouched");
    assert!(!store::journal_path(&dst).exists(), "not committed");
    assert_eq!(store::recover(&dst).unwrap(), Recovery::Discarded);
    assert!(std::fs::read(&dst).unwrap() == v1, "old image exactly");
    // The next job completes.
    assert!(job(&src, &dst, "", 1 << 20).is_some());
    assert!(std::fs::read(&dst).unwrap() == v2);
}

#[test]
fn sidecar_is_used_and_a_write_invalidates_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("img");
    let v = image(300, 4);
    std::fs::write(&p, &v).unwrap();
    let h = store::held(&p, BS).unwrap().unwrap();
    assert!(!h.from_sidecar, "first look hashes");
    assert_eq!(h.hash, dwcp_kernels::xxh3_128(&v));
    let h2 = store::held(&p, BS).unwrap().unwrap();
    assert!(h2.from_sidecar);
    assert_eq!(h2.manifest, h.manifest);
    // Another block size is not served from the sidecar.
    assert!(!store::held(&p, 8192).unwrap().unwrap().from_sidecar);
    assert!(store::held(&p, 8192).unwrap().unwrap().from_sidecar);
    // An in-place write (same length) changes mtime/ctime: hashed again, new content.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"changed", 5000).unwrap();
    }
    let h3 = store::held(&p, 8192).unwrap().unwrap();
    assert!(!h3.from_sidecar);
    let mut v2 = v.clone();
    v2[5000..5007].copy_from_slice(b"changed");
    assert_eq!(h3.hash, dwcp_kernels::xxh3_128(&v2));
}

#[test]
fn in_place_rounds_that_shrink_and_regrow_end_byte_exact() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("img");
    let old = image(64, 2); // 256 KiB
    std::fs::write(&p, &old).unwrap();
    let mut t = Target::begin(&p, BS).unwrap();
    assert!(t.in_place());
    // Round 1: shrink to 20.5 blocks, rewrite block 3 and the short last block 20.
    let len1 = 20 * BS as u64 + 2048;
    let mut b3 = vec![7u8; BS];
    b3.extend_from_slice(&[9u8; 2048]);
    t.write_round(len1, &[(3, 0..BS), (20, BS..BS + 2048)], &b3)
        .unwrap();
    let mut cur = vec![0u8; len1 as usize];
    t.read_current(0, &mut cur).unwrap();
    let mut want = old[..len1 as usize].to_vec();
    want[3 * BS..4 * BS].fill(7);
    want[20 * BS..].fill(9);
    assert!(cur == want, "baseline view after round 1");
    // Round 2: regrow to 40 blocks; only block 30 written; blocks 21..40 otherwise zero
    // (the old image's bytes there must not come back), block 20's tail zero.
    let len2 = 40 * BS as u64;
    t.write_round(len2, &[(30, 0..BS)], &[1u8; BS]).unwrap();
    want.resize(len2 as usize, 0);
    want[30 * BS..31 * BS].fill(1);
    let mut phases = Vec::new();
    let wrong = t.commit(len2, dwcp_kernels::xxh3_128(&old), &mut phases);
    assert!(wrong.is_err(), "hash mismatch refused");
    assert!(
        std::fs::read(&p).unwrap() == old,
        "refused commit left the image"
    );
    assert!(!store::journal_part_path(&p).exists());

    // Again, with the right hash.
    let mut t = Target::begin(&p, BS).unwrap();
    t.write_round(len1, &[(3, 0..BS), (20, BS..BS + 2048)], &b3)
        .unwrap();
    t.write_round(len2, &[(30, 0..BS)], &[1u8; BS]).unwrap();
    t.commit(len2, dwcp_kernels::xxh3_128(&want), &mut phases)
        .unwrap();
    assert!(std::fs::read(&p).unwrap() == want);
    assert!(!store::journal_path(&p).exists());
    assert!(phases.iter().any(|(n, _)| n == "journal"));
    assert!(store::held(&p, BS).unwrap().unwrap().from_sidecar);
}

/// The commit's hash advanced over a final prefix while parts arrive gives the same result
/// as hashing at commit; a write below the hashed prefix drops it, so the commit checks the
/// bytes as they finally are (never the stale ones).
#[test]
fn verify_ahead_matches_a_full_hash_and_a_write_below_it_is_not_missed() {
    let d = tempfile::tempdir().unwrap();
    let v = image(256, 3); // 1 MiB
    let len = v.len() as u64;
    let blocks = v.len() / BS;
    // Four parts of 64 blocks each, written in order, with the prefix hashed after each.
    let write = |t: &mut store::Target, from: usize, to: usize, src: &[u8]| {
        t.write_round(
            len,
            &[(from as u64, 0..(to - from) * BS)],
            &src[from * BS..to * BS],
        )
        .unwrap();
    };
    for (case, fresh) in [("fresh", true), ("in-place", false)] {
        let img = d.path().join(case);
        if !fresh {
            std::fs::write(&img, image(256, 11)).unwrap();
        }
        let mut t = store::Target::begin(&img, BS).unwrap();
        for p in 0..4 {
            write(&mut t, p * blocks / 4, (p + 1) * blocks / 4, &v);
            t.verify_ahead(((p + 1) * blocks / 4 * BS) as u64, len)
                .unwrap();
        }
        let mut phases = Vec::new();
        t.commit(len, dwcp_kernels::xxh3_128(&v), &mut phases)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(std::fs::read(&img).unwrap() == v, "{case}");
        let h = store::held(&img, BS).unwrap().unwrap();
        assert!(h.from_sidecar, "{case}: sidecar written from the hashes");
        assert_eq!(h.hash, dwcp_kernels::xxh3_128(&v), "{case}");
        assert_eq!(
            h.manifest,
            v.chunks(BS)
                .map(dwcp_migrate::scan::block_hash)
                .collect::<Vec<_>>()
        );

        // A part that (wrongly) rewrites a block below the hashed prefix.
        let img2 = d.path().join(format!("{case}-2"));
        if !fresh {
            std::fs::write(&img2, image(256, 11)).unwrap();
        }
        let mut t = store::Target::begin(&img2, BS).unwrap();
        write(&mut t, 0, blocks / 2, &v);
        t.verify_ahead((blocks / 2 * BS) as u64, len).unwrap();
        let mut v2 = v.clone();
        v2[5 * BS..6 * BS].fill(0x77);
        write(&mut t, 5, 6, &v2);
        write(&mut t, blocks / 2, blocks, &v2);
        // The stale prefix's hash must not pass.
        let mut phases = Vec::new();
        assert!(
            t.commit(len, dwcp_kernels::xxh3_128(&v), &mut phases)
                .is_err(),
            "{case}: stale prefix accepted"
        );
        let mut t = store::Target::begin(&img2, BS).unwrap();
        write(&mut t, 0, blocks / 2, &v);
        t.verify_ahead((blocks / 2 * BS) as u64, len).unwrap();
        write(&mut t, 5, 6, &v2);
        write(&mut t, blocks / 2, blocks, &v2);
        t.commit(len, dwcp_kernels::xxh3_128(&v2), &mut phases)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(std::fs::read(&img2).unwrap() == v2, "{case}");
    }
}
