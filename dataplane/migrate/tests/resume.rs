//! A pipelined round whose stream breaks is resumed from the first part the destination
//! does not hold whole: the stream is cut by the source's side or by the destination's,
//! once or twice, over loopback with the plain-TCP mover; three cuts fail the job and leave
//! the destination's previous image exactly as it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

mod common;

use dwcp_migrate::fault::CutStreams;
use dwcp_migrate::{
    DestConfig, DestReport, MigrateError, SourceConfig, SourceReport, run_dest, run_source,
};
use dwcp_transfer::sim::SimRng;

const BS: usize = 4096;

struct Outcome {
    src: Result<SourceReport, MigrateError>,
    dst: Result<DestReport, MigrateError>,
    src_carried: Vec<u64>,
    dst_carried: Vec<u64>,
}

/// One job from `src_img` to `dst_img`, its round cut into parts of 1 MiB of dirty data,
/// with the source's and the destination's streams cut as given.
fn job(
    src_img: &Path,
    dst_img: &Path,
    src_cuts: &[Option<u64>],
    dst_cuts: &[Option<u64>],
) -> Outcome {
    let p = common::pair();
    let mut sm = CutStreams::new(p.src_mover, src_cuts);
    let mut dm = CutStreams::new(p.dst_mover, dst_cuts);
    let (ctl_src, ctl_dst) = (p.ctl_src, p.ctl_dst);
    let mut cfg = SourceConfig::new(src_img, 31);
    cfg.scratch = src_img.parent().unwrap().join("scratch-src");
    cfg.part_bytes = 1 << 20;
    let dst_cfg = DestConfig {
        image: dst_img.to_path_buf(),
        scratch: dst_img.parent().unwrap().join("scratch-dst"),
    };
    let (src, dst) = std::thread::scope(|s| {
        let d = s.spawn(|| run_dest(&dst_cfg, ctl_dst, &mut dm, &AtomicBool::new(false)));
        let r = run_source(&cfg, ctl_src, &mut sm, &mut (), &AtomicBool::new(false));
        (r, d.join().unwrap())
    });
    let src_carried = sm.carried();
    let dst_carried = dm.carried();
    Outcome {
        src,
        dst,
        src_carried,
        dst_carried,
    }
}

/// An 8 MiB image: a quarter zero, the rest random (about a dozen parts).
fn image(seed: u64) -> Vec<u8> {
    let mut v = SimRng::new(seed).bytes(8 << 20);
    for b in v.chunks_mut(BS).step_by(4) {
        b.fill(0);
    }
    v
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    for s in ["src", "dst"] {
        std::fs::create_dir_all(d.path().join(s)).unwrap();
    }
    let (a, b) = (d.path().join("src/disk.img"), d.path().join("dst/disk.img"));
    (d, a, b)
}

/// Files left in a scratch directory (patch parts of a finished job must all be gone).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("patch-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a fresh-destination job with the given cuts and checks the resumed result: the
/// exact image, `resumes` resumed streams, each resumed stream starting at a part boundary
/// after what the destination held (it carries less than the whole stream, and the streams
/// together carry at least all of it), and no part file left on either side.
fn resumed(src_cuts: &[Option<u64>], dst_cuts: &[Option<u64>], resumes: u32) {
    let (d, src, dst) = dirs();
    let v = image(3);
    std::fs::write(&src, &v).unwrap();
    let o = job(&src, &dst, src_cuts, dst_cuts);
    let r = o.src.unwrap_or_else(|e| panic!("source: {e}: {e:?}"));
    o.dst.unwrap_or_else(|e| panic!("destination: {e}: {e:?}"));
    assert!(std::fs::read(&dst).unwrap() == v, "the image exactly");
    let p = r.pipeline.as_ref().unwrap();
    assert!(p.stream && p.parts >= 8, "{p:?}");
    assert_eq!(p.stream_resumes, resumes, "{p:?}");
    let round = &r.rounds[0];
    assert_eq!(round.parts, p.parts, "every part counted once");
    let whole = round.patch_bytes + u64::from(p.parts) * 24;
    for carried in [&o.src_carried, &o.dst_carried] {
        assert_eq!(carried.len(), resumes as usize + 1, "{carried:?}");
        let last = *carried.last().unwrap();
        assert!(
            carried.iter().sum::<u64>() >= whole,
            "{carried:?} < {whole}"
        );
        if resumes > 0 {
            assert!(last < whole, "the resumed stream started over: {carried:?}");
        } else {
            assert_eq!(last, whole);
        }
    }
    assert_eq!(
        leftovers(&d.path().join("src/scratch-src")),
        Vec::<String>::new()
    );
    assert_eq!(
        leftovers(&d.path().join("dst/scratch-dst")),
        Vec::<String>::new()
    );
}

#[test]
fn an_uncut_stream_is_not_resumed() {
    resumed(&[], &[], 0);
}

#[test]
fn a_stream_the_source_loses_is_resumed() {
    // Cut inside a part, a little past 3 MB of about 6.3 MB of stream.
    resumed(&[Some(3_000_017)], &[], 1);
}

#[test]
fn a_stream_the_destination_loses_is_resumed() {
    resumed(&[], &[Some(2_500_003)], 1);
}

#[test]
fn a_stream_lost_twice_is_resumed_twice() {
    // The second cut comes early in the resumed stream: inside its first part.
    resumed(&[Some(1_000_001), Some(100_003)], &[], 2);
    resumed(&[Some(4_000_000)], &[None, Some(1_000_000)], 2);
}

#[test]
fn a_stream_lost_three_times_fails_the_job_and_keeps_the_old_image() {
    let (d, src, dst) = dirs();
    let v1 = image(5);
    std::fs::write(&src, &v1).unwrap();
    let o = job(&src, &dst, &[], &[]);
    o.src.unwrap();
    assert!(std::fs::read(&dst).unwrap() == v1);
    // Every other block changes: the round moves about 4 MiB in several parts.
    let mut v2 = v1.clone();
    let mut rng = SimRng::new(6);
    for b in v2.chunks_mut(BS).step_by(2) {
        b.copy_from_slice(&rng.bytes(BS));
    }
    std::fs::write(&src, &v2).unwrap();
    let cuts = [Some(1_500_000), Some(200_000), Some(300_000)];
    let o = job(&src, &dst, &cuts, &[]);
    assert!(o.src.is_err(), "three lost streams fail the job");
    assert!(o.dst.is_err());
    assert_eq!(o.src_carried.len(), 3, "{:?}", o.src_carried);
    assert!(
        std::fs::read(&dst).unwrap() == v1,
        "the previous image exactly"
    );
    assert!(!d.path().join("dst/disk.img.dwcp-new").exists());
    assert!(!d.path().join("dst/disk.img.dwcp-journal").exists());
    for side in ["src/scratch-src", "dst/scratch-dst"] {
        assert_eq!(
            leftovers(&d.path().join(side)),
            Vec::<String>::new(),
            "{side}"
        );
    }
    // The next job completes.
    let o = job(&src, &dst, &[], &[]);
    o.src.unwrap();
    assert!(std::fs::read(&dst).unwrap() == v2);
}
