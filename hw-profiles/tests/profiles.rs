//! Schema tests: every shipped profile parses and validates, bad profiles give the typed
//! problem naming the field, and TOML round trips are exact.

use std::path::PathBuf;

use dwcp_hw_profiles::schema::EMBEDDED_DEFAULT_TOML;
use dwcp_hw_profiles::{Measurement, Problem, Profile, ProfileError, SimdLevel, XdpMode};

fn profiles_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

fn shipped() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(profiles_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// The default profile with `from` replaced by `to` (which must occur exactly once).
fn mutated(from: &str, to: &str) -> String {
    assert_eq!(
        EMBEDDED_DEFAULT_TOML.matches(from).count(),
        1,
        "{from:?} must occur once in default.toml"
    );
    EMBEDDED_DEFAULT_TOML.replace(from, to)
}

fn problems_of(text: &str) -> Vec<Problem> {
    match Profile::from_str(text) {
        Err(ProfileError::Invalid { problems, .. }) => problems,
        other => panic!("expected ProfileError::Invalid, got {other:?}"),
    }
}

#[test]
fn every_shipped_profile_parses_and_validates() {
    let files = shipped();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["default.toml", "veth-lab.toml", "mlx5-100g.toml"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let p = Profile::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            p.problems().is_empty(),
            "{}: {:?}",
            f.display(),
            p.problems()
        );
        let stem = f.file_stem().unwrap().to_string_lossy();
        assert_eq!(p.name, stem, "profile name should match the file name");
    }
}

#[test]
fn shipped_profiles_say_what_they_are() {
    let veth = Profile::load(profiles_dir().join("veth-lab.toml")).unwrap();
    assert_eq!(veth.nic.driver, "veth");
    assert_eq!(veth.nic.xdp_mode, XdpMode::Native);
    assert!(!veth.nic.zero_copy, "veth is copy mode only");
    assert_eq!(veth.cpu.worker_cores, vec![0, 1]);
    let mlx = Profile::load(profiles_dir().join("mlx5-100g.toml")).unwrap();
    assert!(mlx.example);
    assert!(mlx.nic.zero_copy);
    assert!(mlx.targets.source.as_deref().unwrap().contains("published"));
    let d = Profile::embedded_default();
    assert!(!d.example);
    assert_eq!(d.cpu.worker_cores, vec![0]);
    assert_eq!(d.nic.xdp_mode, XdpMode::Generic);
    assert_eq!(d.cpu.simd, SimdLevel::Scalar);
    assert_eq!(d.nic.interface, None);
    assert_eq!(Profile::load_or_default(None).unwrap(), d);
}

#[test]
fn unknown_field_is_a_parse_error_naming_it() {
    let text = mutated("batch_size = 64", "batch_size = 64\nbatch_sise = 32");
    match Profile::from_str(&text) {
        Err(ProfileError::Parse { source, path: None }) => {
            let msg = source.to_string();
            assert!(msg.contains("unknown field `batch_sise`"), "{msg}");
            assert!(source.span().is_some(), "error should carry the position");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    // Also at top level and in a section that has optional fields.
    let text = format!("colour = \"red\"\n{EMBEDDED_DEFAULT_TOML}");
    let err = Profile::from_str(&text).unwrap_err();
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
}

#[test]
fn wrong_enum_value_is_a_parse_error() {
    let err = Profile::from_str(&mutated("simd = \"scalar\"", "simd = \"sse9\"")).unwrap_err();
    assert!(matches!(err, ProfileError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("sse9"), "{err}");
}

#[test]
fn ring_size_not_power_of_two() {
    let p = problems_of(&mutated("ring_size = 2048", "ring_size = 3000"));
    assert!(
        p.contains(&Problem::NotPowerOfTwo {
            field: "rings.ring_size",
            value: 3000
        }),
        "{p:?}"
    );
    assert_eq!(p[0].field(), "rings.ring_size");
    assert!(
        p[0].to_string().starts_with("rings.ring_size: 3000"),
        "{}",
        p[0]
    );
}

#[test]
fn batch_larger_than_ring() {
    let text = mutated("batch_size = 64", "batch_size = 4096");
    let p = problems_of(&text);
    assert_eq!(
        p,
        vec![Problem::Exceeds {
            field: "rings.batch_size",
            value: 4096,
            limit_field: "rings.ring_size",
            limit: 2048
        }]
    );
}

#[test]
fn mtu_out_of_range_and_mtu_that_does_not_fit_a_frame() {
    let p = problems_of(&mutated("mtu = 1500", "mtu = 576"));
    assert_eq!(
        p,
        vec![Problem::OutOfRange {
            field: "nic.mtu",
            value: 576,
            min: 1280,
            max: 9000
        }]
    );
    let p = problems_of(&mutated("mtu = 1500", "mtu = 9600"));
    assert!(p.iter().all(|x| x.field() == "nic.mtu"), "{p:?}");
    assert!(matches!(p[0], Problem::OutOfRange { value: 9600, .. }));
    // 9000 is in range but needs multi-buffer with 4096-byte frames.
    let p = problems_of(&mutated("mtu = 1500", "mtu = 9000"));
    assert!(
        matches!(&p[..], [Problem::Conflict { field: "nic.mtu", reason }] if reason.contains("multi_buffer")),
        "{p:?}"
    );
    let ok =
        mutated("mtu = 1500", "mtu = 9000").replace("multi_buffer = false", "multi_buffer = true");
    Profile::from_str(&ok).unwrap();
}

#[test]
fn frame_size_cores_streams_and_targets() {
    let p = problems_of(&mutated("frame_size = 4096", "frame_size = 8192"));
    assert_eq!(
        p,
        vec![Problem::FrameSize {
            field: "rings.frame_size",
            value: 8192
        }]
    );

    let p = problems_of(
        &mutated("worker_cores = [0]", "worker_cores = [1, 1]")
            .replace("numa_nodes = [0]", "numa_nodes = [0, 0]")
            .replace("queues = 1", "queues = 2"),
    );
    assert_eq!(
        p,
        vec![Problem::DuplicateCore {
            field: "cpu.worker_cores",
            core: 1
        }]
    );

    let p = problems_of(&mutated("numa_nodes = [0]", "numa_nodes = [0, 0]"));
    assert!(
        matches!(
            p[..],
            [Problem::LengthMismatch {
                field: "cpu.numa_nodes",
                len: 2,
                expected: 1,
                ..
            }]
        ),
        "{p:?}"
    );

    let p = problems_of(&mutated("streams_initial = 2", "streams_initial = 9"));
    assert!(
        matches!(
            p[..],
            [Problem::Exceeds {
                field: "transfer.streams_initial",
                value: 9,
                limit: 8,
                ..
            }]
        ),
        "{p:?}"
    );

    let p = problems_of(&mutated(
        "min_wan_goodput_fraction = 0.7",
        "min_wan_goodput_fraction = 1.5",
    ));
    assert_eq!(p[0].field(), "targets.min_wan_goodput_fraction");

    let p = problems_of(&mutated("zero_copy = false", "zero_copy = true"));
    assert_eq!(
        p[0].field(),
        "nic.zero_copy",
        "zero-copy with generic XDP: {p:?}"
    );

    let p = problems_of(&mutated("umem_frames = 4096", "umem_frames = 1024"));
    assert_eq!(p[0].field(), "rings.umem_frames");

    let p = problems_of(&mutated(
        "driver = \"any\"",
        "driver = \"any\"\ninterface = \"a/b\"",
    ));
    assert_eq!(p[0].field(), "nic.interface");
}

#[test]
fn all_problems_are_reported_not_only_the_first() {
    let text = mutated("ring_size = 2048", "ring_size = 1000")
        .replace("mtu = 1500", "mtu = 100")
        .replace("chunk_size = 8000", "chunk_size = 70000");
    let fields: Vec<_> = problems_of(&text).iter().map(Problem::field).collect();
    for f in ["rings.ring_size", "nic.mtu", "transfer.chunk_size"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn example_profile_must_cite_its_targets() {
    let text = EMBEDDED_DEFAULT_TOML
        .replace("name = \"default\"", "name = \"x\"\nexample = true")
        .lines()
        .filter(|l| !l.starts_with("source ="))
        .collect::<Vec<_>>()
        .join("\n");
    let p = problems_of(&text);
    assert_eq!(p[0].field(), "targets.source");
}

#[test]
fn round_trip_is_identity() {
    for f in shipped() {
        let p = Profile::load(&f).unwrap();
        let text = p.to_toml().unwrap();
        let q = Profile::from_str(&text).unwrap();
        assert_eq!(p, q, "{}", f.display());
        assert_eq!(q.to_toml().unwrap(), text, "serialization is stable");
    }
    // With a measurements table and awkward floats.
    let mut p = Profile::embedded_default();
    p.targets.min_gbps_1400b = 0.1 + 0.2;
    p.measurements = vec![
        Measurement {
            parameter: "rings.batch_size".into(),
            value: 128.into(),
            figure: 612_345.5,
            unit: "pps".into(),
            samples: vec![600_000.25, 612_345.5, 1e-3],
            chosen: true,
            command: "dwcp-bench xsk --batch 128".into(),
        },
        Measurement {
            parameter: "transfer.streams_initial".into(),
            value: "udp".into(),
            figure: 3.25,
            unit: String::new(),
            samples: vec![],
            chosen: false,
            command: "x".into(),
        },
    ];
    let text = p.to_toml().unwrap();
    assert!(text.contains("[[measurements]]"), "{text}");
    assert_eq!(Profile::from_str(&text).unwrap(), p);
}

#[test]
fn load_reports_path_and_io_errors() {
    let err = Profile::load("/nonexistent/profile.toml").unwrap_err();
    assert!(matches!(err, ProfileError::Read { .. }), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, mutated("batch_size = 64", "batch_size = 64\nbogus = 1")).unwrap();
    match Profile::load(&f).unwrap_err() {
        ProfileError::Parse { path, .. } => assert_eq!(path.as_deref(), Some(f.as_path())),
        e => panic!("{e:?}"),
    }
}
