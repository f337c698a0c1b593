//! Sweep engine tests with deterministic measurement closures: every point is recorded with
//! all its samples, the median is the figure, the best value per axis is chosen and kept.

use std::cell::RefCell;

use dwcp_hw_profiles::tune::median;
use dwcp_hw_profiles::{
    BackendKind, Figure, Param, ParamValue, Profile, Sample, TuneError, Tuner, Tuning,
};

#[derive(Debug, thiserror::Error)]
#[error("bench failed")]
struct BenchFailed;

/// A smooth figure of merit with a single maximum at batch 128, ring 1024, 4 streams.
fn figure(p: &Profile) -> f64 {
    let b = f64::from(p.rings.batch_size).log2() - 7.0;
    let r = f64::from(p.rings.ring_size).log2() - 10.0;
    let s = f64::from(p.transfer.streams_initial) - 4.0;
    1_000_000.0 - 10_000.0 * b * b - 5_000.0 * r * r - 2_000.0 * s * s
}

#[test]
fn records_every_point_and_picks_the_max() {
    let base = Profile::embedded_default();
    let tuner = Tuner::new("pps", "deterministic test figure")
        .axis(Param::BatchSize, [16, 32, 64, 128, 256, 512])
        .axis(Param::RingSize, [256, 512, 1024, 2048, 4096])
        .axis(Param::Streams, [1, 2, 4, 8, 16])
        .repeats(3);
    let calls = RefCell::new(Vec::new());
    let out = tuner
        .run(&base, |p| {
            calls.borrow_mut().push(p.clone());
            Ok::<_, BenchFailed>(figure(p))
        })
        .unwrap();
    let m = &out.profile.measurements;
    assert_eq!(m.len(), tuner.points(), "every point recorded");
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert_eq!(
        calls.borrow().len(),
        tuner.points() * 3,
        "3 repeats per point"
    );
    for rec in m {
        assert_eq!(rec.samples.len(), 3);
        assert_eq!(rec.figure, median(&rec.samples));
        assert_eq!(rec.unit, "pps");
        assert_eq!(rec.command, "deterministic test figure");
    }
    // One chosen value per axis, and it is the axis maximum.
    for param in [
        "rings.batch_size",
        "rings.ring_size",
        "transfer.streams_initial",
    ] {
        let axis: Vec<_> = m.iter().filter(|r| r.parameter == param).collect();
        let chosen: Vec<_> = axis.iter().filter(|r| r.chosen).collect();
        assert_eq!(chosen.len(), 1, "{param}");
        let max = axis.iter().map(|r| r.figure).fold(f64::MIN, f64::max);
        assert_eq!(chosen[0].figure, max, "{param}");
    }
    let p = &out.profile;
    assert_eq!(p.rings.batch_size, 128);
    assert_eq!(p.rings.ring_size, 1024);
    assert_eq!(p.transfer.streams_initial, 4);
    assert_eq!(out.best_figure, 1_000_000.0);
    assert_eq!(figure(p), out.best_figure);
    // The tuned profile is valid and survives a TOML round trip with its measurements.
    let text = p.to_toml().unwrap();
    assert_eq!(&Profile::from_str(&text).unwrap(), p);
    // Untouched settings stay as in the base.
    assert_eq!(p.nic, base.nic);
    assert_eq!(p.rings.frame_size, base.rings.frame_size);
}

#[test]
fn median_rejects_outliers_and_invalid_points_are_skipped() {
    // Every third sample is a wild outlier; the median must ignore it.
    let n = RefCell::new(0u32);
    let base = Profile::embedded_default();
    let out = Tuner::new("pps", "outlier test")
        .axis(Param::BatchSize, [32, 64, 4096]) // 4096 > ring_size 2048: invalid
        .repeats(3)
        .run(&base, |p| {
            let mut k = n.borrow_mut();
            *k += 1;
            let x = f64::from(p.rings.batch_size);
            Ok::<_, BenchFailed>(if (*k).is_multiple_of(3) { 1e12 } else { x })
        })
        .unwrap();
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(out.skipped[0].value, 4096);
    assert_eq!(out.skipped[0].problems[0].field(), "rings.batch_size");
    let m = &out.profile.measurements;
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].figure, 32.0);
    assert_eq!(m[1].figure, 64.0);
    assert!(m[1].chosen && !m[0].chosen);
    assert_eq!(out.profile.rings.batch_size, 64);
}

#[test]
fn ring_axis_keeps_the_profile_valid() {
    let base = Profile::embedded_default();
    let out = Tuner::new("pps", "t")
        .axis(Param::RingSize, [8192])
        .repeats(1)
        .run(&base, |_| Ok::<_, BenchFailed>(1.0))
        .unwrap();
    assert_eq!(out.profile.rings.ring_size, 8192);
    assert!(out.profile.rings.umem_frames >= 16384);
    assert!(out.profile.problems().is_empty());
}

#[test]
fn measurement_errors_and_bad_sweeps_are_typed() {
    let base = Profile::embedded_default();
    let err = Tuner::new("pps", "t")
        .axis(Param::Streams, [1, 2])
        .run(&base, |p| {
            if p.transfer.streams_initial == 2 {
                Err(BenchFailed)
            } else {
                Ok(1.0)
            }
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            TuneError::Measure {
                parameter: "transfer.streams_initial",
                value: ParamValue::Int(2),
                repeat: 0,
                ..
            }
        ),
        "{err:?}"
    );
    let err = Tuner::new("pps", "t")
        .axis(Param::Streams, [1])
        .run(&base, |_| Ok::<_, BenchFailed>(f64::NAN))
        .unwrap_err();
    assert!(matches!(err, TuneError::NotFinite { .. }), "{err:?}");
    let err = Tuner::new("pps", "t")
        .run(&base, |_| Ok::<_, BenchFailed>(1.0))
        .unwrap_err();
    assert!(matches!(err, TuneError::BadSweep(_)));
    let err = Tuner::new("pps", "t")
        .axis(Param::BatchSize, [0, 100_000])
        .run(&base, |_| Ok::<_, BenchFailed>(1.0))
        .unwrap_err();
    assert!(
        matches!(err, TuneError::NothingMeasured { skipped: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn median_of_even_and_odd() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert!(median(&[]).is_nan());
}

#[test]
fn mixed_axes_with_own_units_commands_and_a_named_backend() {
    let mut base = Profile::embedded_default();
    base.rings.ring_size = 1024;
    base.rings.umem_frames = 2048;
    let tuner = Tuner::new("pps", "loop")
        .axis(Param::UmemFrames, [2048, 4096, 1024]) // 1024 < 2 x ring: invalid
        .axis_with(
            Param::Backend,
            ["afxdp", "udp"].map(ParamValue::from),
            Figure {
                unit: "Gbit/s".into(),
                command: "transfer".into(),
            },
        )
        .repeats(2);
    let mut seen = Vec::new();
    let out = tuner
        .run_with(&base, |param, p| {
            seen.push((param, p.rings.umem_frames, p.transfer.backend));
            Ok::<_, BenchFailed>(match param {
                // More UMEM is better here; the udp backend beats afxdp.
                Param::UmemFrames => Sample::from(f64::from(p.rings.umem_frames)),
                Param::Backend => Sample {
                    figure: if p.transfer.backend == BackendKind::Udp {
                        3.0
                    } else {
                        2.0
                    },
                    command: Some(format!("dwcp --backend {}", p.transfer.backend)),
                },
                _ => unreachable!("{param:?}"),
            })
        })
        .unwrap();
    assert_eq!(out.profile.rings.umem_frames, 4096);
    assert_eq!(out.profile.transfer.backend, BackendKind::Udp);
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(out.skipped[0].value, ParamValue::Int(1024));
    // The backend axis ran with the UMEM axis's winner.
    assert!(
        seen.iter()
            .filter(|(p, ..)| *p == Param::Backend)
            .all(|(_, u, _)| *u == 4096)
    );
    let m = &out.profile.measurements;
    let udp = m
        .iter()
        .find(|r| r.value == ParamValue::from("udp"))
        .unwrap();
    assert!(udp.chosen);
    assert_eq!(udp.unit, "Gbit/s");
    assert_eq!(udp.command, "dwcp --backend udp");
    let umem = m.iter().find(|r| r.value == 4096).unwrap();
    assert_eq!((umem.unit.as_str(), umem.command.as_str()), ("pps", "loop"));
    // A name on a numeric axis is a bad sweep, not a silent skip.
    let err = Tuner::new("pps", "t")
        .axis_with(
            Param::BatchSize,
            [ParamValue::from("big")],
            Figure {
                unit: "pps".into(),
                command: "t".into(),
            },
        )
        .run(&base, |_| Ok::<_, BenchFailed>(1.0))
        .unwrap_err();
    assert!(matches!(err, TuneError::BadSweep(_)), "{err:?}");

    // The tuned profile, with its provenance, survives TOML.
    let mut p = out.profile;
    p.tuning = Some(Tuning {
        date: "2026-11-25T16:00:00Z".into(),
        command: "dwcp-hw tune".into(),
        host: "test".into(),
        load: "1.0".into(),
        repeats: 2,
        note: String::new(),
    });
    let text = p.to_toml().unwrap();
    assert!(
        text.contains("[tuning]") && text.contains("backend = \"udp\""),
        "{text}"
    );
    assert!(text.contains("value = \"udp\""), "{text}");
    assert_eq!(Profile::from_str(&text).unwrap(), p);
}
