//! The README's main job, end to end: `dwcp demo` builds the namespace lab, moves an object
//! between two appliances over AF_XDP, verifies it, and removes the lab.

use std::process::Command;

#[test]
fn demo_moves_a_verified_object_over_af_xdp_between_namespaces() {
    if !dwcp_netns::privileged_test_guard("demo_moves_a_verified_object_over_af_xdp") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dwcp"))
        .args(["--json", "demo", "--size-mib", "32", "--backend", "afxdp"])
        .output()
        .expect("run dwcp demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["send"]["selection"]["backend"], "af_xdp", "{r}");
    assert_eq!(r["recv"]["selection"]["backend"], "af_xdp", "{r}");
    assert_eq!(r["send"]["object_bytes"], 32u64 << 20);
    assert_eq!(r["recv"]["frames_corrupt"], 0);
    // The demo object is a quarter zero regions: v3 must put fewer bytes on the wire than
    // the object holds.
    assert!(
        r["send"]["bytes_on_wire"].as_u64().unwrap() < 32u64 << 20,
        "{r}"
    );
    // The lab is gone: no namespace of the (now exited) demo process is left.
    let leaked = dwcp_netns::cleanup_stale().expect("list namespaces");
    assert!(
        !leaked.iter().any(|n| n.contains("demo")),
        "lab namespaces left behind: {leaked:?}"
    );
}
