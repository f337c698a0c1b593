//! Privileged: every packet-loop path of the certification suite moves frames between the
//! lab's namespaces (receiver counts > 0, the framed path parses every frame it counts), and
//! a payload that does not fit the MTU is refused before anything runs.

use dwcp_bench::loops::{LoopConfig, LoopPath, run_loop};
use dwcp_bench::{Lab, LabOptions};

#[test]
fn every_loop_path_moves_frames() {
    if !dwcp_netns::privileged_test_guard("every_loop_path_moves_frames") {
        return;
    }
    let lab = Lab::direct(LabOptions {
        tag: "loops".into(),
        ..LabOptions::default()
    })
    .unwrap();
    for path in LoopPath::ALL {
        let r = run_loop(&lab, &LoopConfig::new(path, 1400, 0.3))
            .unwrap_or_else(|e| panic!("{}: {e}", path.name()));
        assert!(r.tx.packets > 0, "{}: nothing sent", path.name());
        assert!(r.rx.packets > 0, "{}: nothing received: {r:?}", path.name());
        assert!(r.rx.packets <= r.tx.packets, "{}: {r:?}", path.name());
        assert_eq!(r.rx.errors, 0, "{}: unparsable frames", path.name());
        assert!(
            r.cpu_s_per_gb().is_some_and(|c| c > 0.0),
            "{}: {r:?}",
            path.name()
        );
    }
    let err = run_loop(&lab, &LoopConfig::new(LoopPath::UdpMmsg, 8000, 0.3)).unwrap_err();
    assert!(err.to_string().contains("MTU"), "{err}");
}
