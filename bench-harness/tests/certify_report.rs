//! The certification report writer, without privileges: the JSON schema (keys, types,
//! round trip, unknown keys refused), the SVG plots (well-formed XML with one line per
//! series and the series names as text), the Markdown, and the pass/fail rules with figures
//! that pass, figures that fail and figures that are missing.

use dwcp_bench::certify::report::{
    self, Outcome, PacketCase, PacketPeer, ProfileRef, Report, TransferCase, TransferPeer, Verdict,
};
use dwcp_bench::certify::run::host_info;
use dwcp_bench::certify::suite::{DataKind, LinkSpec};
use dwcp_bench::certify::{plot, report::SCHEMA};
use dwcp_bench::peers::Summary;
use dwcp_hw_profiles::Targets;

fn s(v: &[f64]) -> Option<Summary> {
    Summary::of(v.to_vec())
}

fn targets() -> Targets {
    Targets {
        min_pps_64b: 300_000,
        min_gbps_1400b: 3.0,
        min_wan_goodput_fraction: 0.8,
        source: Some("test".into()),
    }
}

fn packet(pps64: Option<f64>, gbps1400: f64) -> Vec<PacketCase> {
    let peer = |name: &str, pps: Option<f64>, gbps: f64| PacketPeer {
        peer: name.into(),
        pps: pps.and_then(|p| s(&[p * 0.9, p, p * 1.1])),
        gbps: s(&[gbps * 0.95, gbps, gbps * 1.05]),
        cpu_s_per_gb: s(&[2.0, 2.5, 3.0]),
        loss: s(&[0.0, 0.0, 0.01]),
        errors: if pps.is_none() {
            vec!["AF_XDP socket: EPERM".into()]
        } else {
            vec![]
        },
    };
    vec![
        PacketCase {
            id: "packet-64b".into(),
            payload: 64,
            mtu: 1500,
            secs: 1.0,
            peers: vec![
                peer(report::DWCP_FRAMES, pps64, 0.4),
                peer("bare-afxdp", Some(650_000.0), 0.6),
                peer("udp-mmsg", Some(400_000.0), 0.3),
            ],
        },
        PacketCase {
            id: "packet-1400b".into(),
            payload: 1400,
            mtu: 1500,
            secs: 1.0,
            peers: vec![
                peer(report::DWCP_FRAMES, Some(430_000.0), gbps1400),
                peer("udp-gso", Some(2_700_000.0), 31.0),
            ],
        },
    ]
}

fn transfer(dwcp_wan_mbit: f64) -> Vec<TransferCase> {
    let tp = |peer: &str, data: Option<DataKind>, mbit: f64| TransferPeer {
        peer: peer.into(),
        data,
        gbps: s(&[mbit * 0.9e-3, mbit * 1e-3, mbit * 1.1e-3]),
        cpu_s_per_gb: s(&[1.0, 1.5, 2.0]),
        errors: vec![],
    };
    let mut out = Vec::new();
    for streams in [1u16, 4] {
        out.push(TransferCase {
            id: format!("dc-mtu1500-s{streams}"),
            link: LinkSpec::datacenter(1500),
            streams,
            peers: vec![
                tp(
                    "dwcp",
                    Some(DataKind::Incompressible),
                    2000.0 * f64::from(streams),
                ),
                tp("iperf3-cubic", None, 20000.0),
            ],
        });
    }
    for loss in [0.0, 0.01] {
        for rtt in [10.0, 50.0] {
            out.push(TransferCase {
                id: format!("wan-rtt{rtt}-loss{}-s4", loss * 100.0),
                link: LinkSpec::wan(rtt, loss, 100.0),
                streams: 4,
                peers: vec![
                    tp("dwcp", Some(DataKind::Incompressible), dwcp_wan_mbit),
                    tp("dwcp", Some(DataKind::Compressible), dwcp_wan_mbit * 2.0),
                    tp("iperf3-cubic", None, if loss > 0.0 { 2.5 } else { 95.0 }),
                    tp("iperf3-bbr", None, 90.0),
                ],
            });
        }
    }
    out
}

fn report_of(packet: Vec<PacketCase>, transfer: Vec<TransferCase>) -> Report {
    let checks = report::evaluate(&targets(), &packet, &transfer);
    let outcome = report::overall(&checks);
    Report {
        schema: SCHEMA.into(),
        suite: "quick".into(),
        command: "dwcp-certify --quick".into(),
        started_utc: "2026-11-25T16:00:00Z".into(),
        finished_utc: "2026-11-25T16:02:00Z".into(),
        reps: 3,
        host: host_info(),
        preliminary: true,
        profile: ProfileRef {
            name: "veth-lab".into(),
            path: Some("hw-profiles/profiles/veth-lab.toml".into()),
            example: false,
            targets: targets(),
        },
        packet,
        transfer,
        checks,
        outcome,
        plots: vec![],
    }
}

#[test]
fn passing_figures_pass() {
    let r = report_of(packet(Some(500_000.0), 4.0), transfer(90.0));
    assert!(
        r.checks.iter().all(|c| c.verdict == Verdict::Pass),
        "{:#?}",
        r.checks
    );
    assert_eq!(r.outcome, Outcome::Pass);
    // One WAN check per WAN case and dwcp data kind, each against 100 Mbit/s.
    let wan: Vec<_> = r
        .checks
        .iter()
        .filter(|c| c.target == "targets.min_wan_goodput_fraction")
        .collect();
    assert_eq!(wan.len(), 8);
    let inc = wan
        .iter()
        .find(|c| c.id.ends_with("/incompressible"))
        .unwrap();
    assert!((inc.measured.unwrap() - 0.9).abs() < 1e-9);
}

#[test]
fn figures_below_a_floor_fail() {
    // 64 B rate under 300 kpps, 1400 B under 3 Gbit/s, WAN incompressible at 70 % (< 80 %)
    // while compressible (140 %) passes.
    let r = report_of(packet(Some(250_000.0), 2.9), transfer(70.0));
    let v = |id: &str| r.checks.iter().find(|c| c.id == id).unwrap().verdict;
    assert_eq!(v("min_pps_64b"), Verdict::Fail);
    assert_eq!(v("min_gbps_1400b"), Verdict::Fail);
    assert_eq!(
        v("min_wan_goodput_fraction/wan-rtt50-loss1-s4/incompressible"),
        Verdict::Fail
    );
    assert_eq!(
        v("min_wan_goodput_fraction/wan-rtt50-loss1-s4/compressible"),
        Verdict::Pass
    );
    assert_eq!(r.outcome, Outcome::Fail);
    let md = r.to_markdown();
    assert!(md.starts_with("# DWCP certification report: FAIL"), "{md}");
    assert!(md.contains("| **FAIL** |"));
    // Exactly at the floor passes.
    let r = report_of(packet(Some(300_000.0), 3.0), transfer(80.0));
    assert_eq!(r.outcome, Outcome::Pass, "{:#?}", r.checks);
}

#[test]
fn missing_figures_make_the_run_incomplete_never_a_pass() {
    let r = report_of(packet(None, 4.0), transfer(90.0));
    let c = r.checks.iter().find(|c| c.id == "min_pps_64b").unwrap();
    assert_eq!(c.verdict, Verdict::NotMeasured);
    assert_eq!(c.measured, None);
    assert_eq!(r.outcome, Outcome::Incomplete);
    // No WAN case at all: the WAN target is reported as not measured.
    let r = report_of(packet(Some(500_000.0), 4.0), transfer(90.0)[..2].to_vec());
    let c = r
        .checks
        .iter()
        .find(|c| c.target == "targets.min_wan_goodput_fraction")
        .unwrap();
    assert_eq!(c.verdict, Verdict::NotMeasured);
    assert_eq!(r.outcome, Outcome::Incomplete);
    // A failure outranks a missing figure.
    let r = report_of(packet(None, 1.0), transfer(90.0));
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(report::overall(&[]), Outcome::Incomplete);
}

#[test]
fn json_has_the_documented_schema_and_round_trips() {
    let r = report_of(packet(Some(500_000.0), 4.0), transfer(90.0));
    let json = r.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: std::collections::BTreeSet<&str> =
        v.as_object().unwrap().keys().map(String::as_str).collect();
    let want: std::collections::BTreeSet<&str> = [
        "schema",
        "suite",
        "command",
        "started_utc",
        "finished_utc",
        "reps",
        "host",
        "preliminary",
        "profile",
        "packet",
        "transfer",
        "checks",
        "outcome",
        "plots",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want);
    assert_eq!(v["schema"], "dwcp-certify/1");
    assert_eq!(v["outcome"], "pass");
    assert!(v["host"]["cpus"].as_u64().unwrap() >= 1);
    assert!(v["host"]["load_start"].as_array().unwrap().len() == 3);
    assert!(v["profile"]["targets"]["min_pps_64b"].is_u64());
    let p0 = &v["packet"][0]["peers"][0];
    assert_eq!(p0["peer"], "dwcp-frames");
    for k in ["min", "median", "max", "samples"] {
        assert!(p0["pps"].get(k).is_some(), "pps.{k}");
    }
    let c0 = &v["checks"][0];
    for k in [
        "id",
        "target",
        "threshold",
        "unit",
        "measured",
        "verdict",
        "basis",
    ] {
        assert!(c0.get(k).is_some(), "checks[0].{k}");
    }
    assert_eq!(c0["verdict"], "pass");
    let wan = v["transfer"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["link"]["kind"] == "wan")
        .unwrap();
    assert!(wan["link"]["rtt_ms"].is_f64());
    assert_eq!(wan["peers"][0]["data"], "incompressible");
    // Round trip (floats compare through the JSON text: serde_json's default float parsing
    // may differ from the original in the last bit).
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), v);
    assert_eq!(back.checks, r.checks);
    assert_eq!(back.outcome, r.outcome);
    // Unknown keys are refused, so a report from a different schema is not misread.
    let mut bad = v.clone();
    bad["surprise"] = serde_json::json!(1);
    assert!(serde_json::from_value::<Report>(bad).is_err());
}

#[test]
fn svg_plots_parse_as_xml_with_every_series() {
    let mut r = report_of(packet(Some(500_000.0), 4.0), transfer(90.0));
    let dir = tempfile::tempdir().unwrap();
    let written = r.write_all(dir.path()).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in [
        "report.json",
        "report.md",
        "throughput-vs-loss.svg",
        "throughput-vs-rtt.svg",
        "throughput-vs-streams.svg",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} not in {names:?}");
    }
    assert_eq!(r.plots.len(), 3);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("![throughput-vs-loss.svg](throughput-vs-loss.svg)"));
    let on_disk: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk.plots, r.plots);

    for (file, chart) in [
        ("throughput-vs-loss.svg", plot::loss_chart(&r)),
        ("throughput-vs-rtt.svg", plot::rtt_chart(&r)),
        ("throughput-vs-streams.svg", plot::streams_chart(&r)),
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{file}");
        let texts: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!chart.series.is_empty(), "{file}");
        for s in &chart.series {
            assert!(texts.contains(&s.name), "{file}: legend lacks {}", s.name);
        }
        let lines = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "polyline" || n.tag_name().name() == "path")
            .count();
        assert!(lines >= chart.series.len(), "{file}: {lines} lines");
        assert!(texts.contains(&chart.title), "{file}: no title");
    }
    // Loss plot: WAN only (4 peers x 2 RTTs), x categories 0 % and 1 %.
    let lc = plot::loss_chart(&r);
    assert_eq!(lc.series.len(), 8);
    match &lc.x_axis {
        plot::XAxis::Categories(c) => assert_eq!(c, &["0", "1"]),
        other => panic!("{other:?}"),
    }
    // Streams plot: datacenter dwcp and iperf3, x = 1 and 4.
    let sc = plot::streams_chart(&r);
    assert_eq!(sc.series.len(), 2);
    assert!(sc.series.iter().all(|s| s.points.len() == 2));
}

#[test]
fn empty_report_writes_no_plots_and_is_incomplete() {
    let mut r = report_of(vec![], vec![]);
    assert_eq!(r.outcome, Outcome::Incomplete);
    let dir = tempfile::tempdir().unwrap();
    let written = r.write_all(dir.path()).unwrap();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(r.plots.is_empty());
}
