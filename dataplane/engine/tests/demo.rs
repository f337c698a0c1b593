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

/// `dwcp demo --mtu 9000` over AF_XDP: datagrams longer than one 4096-byte UMEM frame are
/// written in place across a run of contiguous frames and sent as multi-buffer packets; the
/// received object must still be the source, byte for byte (the demo checks its hash).
#[test]
fn demo_moves_a_verified_object_over_af_xdp_with_jumbo_frames() {
    if !dwcp_netns::privileged_test_guard("demo_moves_a_verified_object_over_af_xdp_jumbo") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dwcp"))
        .args(["--json", "demo", "--size-mib", "32", "--backend", "afxdp"])
        .args(["--mtu", "9000"])
        .output()
        .expect("run dwcp demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for side in ["send", "recv"] {
        let sel = &r[side]["selection"];
        assert_eq!(sel["backend"], "af_xdp", "{r}");
        let detail = sel["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("multi-buffer true"), "{side}: {detail}");
    }
    assert_eq!(r["send"]["object_bytes"], 32u64 << 20);
    assert_eq!(r["recv"]["object_bytes"], 32u64 << 20);
    assert_eq!(r["recv"]["frames_corrupt"], 0, "{r}");
    assert_eq!(r["recv"]["frames_malformed"], 0, "{r}");
    // Jumbo datagrams were really sent: more than one UMEM frame per packet on average.
    let io = &r["send"]["io"];
    let (bytes, packets) = (
        io["tx_bytes"].as_u64().unwrap(),
        io["tx_packets"].as_u64().unwrap(),
    );
    assert!(bytes > 4096 * packets, "{bytes} bytes in {packets} packets");
    assert_eq!(io["tx_dropped"], 0, "{r}");
}

/// `dwcp demo --sealed`: throwaway keys, every frame SEALED on both sides, object verified,
/// and the key directory is gone afterwards.
#[test]
fn sealed_demo_authenticates_and_encrypts_with_throwaway_keys() {
    if !dwcp_netns::privileged_test_guard("sealed_demo_authenticates_and_encrypts") {
        return;
    }
    let keys_before = key_dirs();
    let out = Command::new(env!("CARGO_BIN_EXE_dwcp"))
        .args([
            "--json",
            "demo",
            "--size-mib",
            "8",
            "--backend",
            "udp",
            "--sealed",
        ])
        .output()
        .expect("run dwcp demo --sealed");
    assert!(
        out.status.success(),
        "sealed demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for side in ["send", "recv"] {
        let suite = r[side]["security"]["sealed"].as_str().unwrap_or_default();
        assert!(
            suite == "aes-128-gcm" || suite == "chacha20-poly1305",
            "{side} not sealed: {r}"
        );
        assert_eq!(r[side]["security"]["drops"], serde_json::json!({}), "{r}");
    }
    assert_eq!(r["send"]["object_bytes"], 8u64 << 20);
    assert_eq!(
        key_dirs(),
        keys_before,
        "throwaway key directory left behind"
    );
}

fn key_dirs() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("dwcp-demo-keys"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
