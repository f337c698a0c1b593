//! Privileged test of relay mode: three namespaces A - B - C. The program on B's ingress
//! interface sends valid DWCP frames out of B's second interface through the DEVMAP, with
//! no userspace in B; C receives them in an AF_XDP socket. Malformed frames are dropped in
//! B, ordinary traffic still reaches B's kernel stack.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use dwcp_ebpf::{AttachMode, Counter, ProgramConfig, XdpProgram};
use dwcp_netns::{IF_B, Netns, Pair, VethOptions};

const IF_R: &str = "veth-r"; // in B, towards C
const IF_C: &str = "veth-c"; // in C

#[test]
fn relay_mode_forwards_dwcp_frames_without_userspace() {
    if !dwcp_netns::privileged_test_guard("relay_mode_forwards_dwcp_frames_without_userspace") {
        return;
    }
    let pair = Pair::new("xrly", VethOptions::default()).expect("lab");
    let c_ns = Netns::new("xrly-c").expect("namespace C");
    pair.b
        .ip(&[
            "link",
            "add",
            IF_R,
            "type",
            "veth",
            "peer",
            "name",
            IF_C,
            "netns",
            c_ns.name(),
        ])
        .expect("second veth pair");
    pair.b
        .ip(&["addr", "add", "10.79.0.1/24", "dev", IF_R])
        .unwrap();
    pair.b.ip(&["link", "set", IF_R, "up"]).unwrap();
    c_ns.ip(&["addr", "add", "10.79.0.2/24", "dev", IF_C])
        .unwrap();
    c_ns.ip(&["link", "set", IF_C, "up"]).unwrap();

    // C: the ordinary program with an AF_XDP socket. It also makes C's veth accept native
    // redirects from B (a veth only delivers XDP-redirected frames when its peer runs XDP).
    let mut prog_c = c_ns
        .run_in(|| XdpProgram::attach(IF_C, AttachMode::Native, &ProgramConfig::default()))
        .unwrap()
        .expect("attach C");
    let xsk_c = XskRx::open(&c_ns, IF_C, 0, false);
    prog_c.register_socket(0, xsk_c.fd()).unwrap();

    // B: relay mode towards veth-r.
    let prog_b = pair
        .b
        .run_in(|| {
            let relay = nix::net::if_::if_nametoindex(IF_R).expect("veth-r index");
            XdpProgram::attach(
                IF_B,
                AttachMode::Native,
                &ProgramConfig {
                    relay_ifindex: Some(relay),
                    ..ProgramConfig::default()
                },
            )
        })
        .unwrap()
        .expect("attach B in relay mode");

    let ip_b = IpAddr::V4(pair.ip_b());
    let b_dwcp = UdpCollector::bind(&pair.b, ip_b, PORT);
    let b_other = UdpCollector::bind(&pair.b, ip_b, OTHER_PORT);
    let ping = pair
        .a
        .command("ping")
        .args(["-c", "1", "-W", "2", &ip_b.to_string()])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");

    let before_b = prog_b.counters().unwrap();
    let before_c = prog_c.counters().unwrap();
    let valid = valid_set();
    let bad = malformed();
    send_udp(&pair.a, ip_b, PORT, valid.clone());
    send_udp(
        &pair.a,
        ip_b,
        PORT,
        bad.iter().map(|(f, _)| f.clone()).collect(),
    );
    send_udp(&pair.a, ip_b, OTHER_PORT, vec![b"to B's stack".to_vec()]);

    let n = valid.len() as u64;
    let cb = wait_counters(&prog_b, |c| {
        let d = c.since(&before_b);
        d[Counter::RelayedPackets] >= n && d.dropped() >= bad.len() as u64
    })
    .since(&before_b);
    let cc = wait_counters(&prog_c, |c| {
        c.since(&before_c)[Counter::RedirectedPackets] >= n
    })
    .since(&before_c);
    let frames = xsk_c.finish(Duration::from_millis(100));

    let bytes: u64 = valid.iter().map(|f| (42 + f.len()) as u64).sum();
    assert_eq!(cb[Counter::RelayedPackets], n, "B: {cb:?}");
    assert_eq!(cb[Counter::RelayedBytes], bytes, "B: {cb:?}");
    assert_eq!(cb[Counter::RedirectedPackets], 0, "B: {cb:?}");
    assert_eq!(cb[Counter::RelayNoTarget], 0, "B: {cb:?}");
    for (counter, k) in expected_drops(&bad) {
        assert_eq!(cb[counter], k, "B {counter}: {cb:?}");
    }
    assert_eq!(cc[Counter::RedirectedPackets], n, "C: {cc:?}");
    assert_eq!(cc[Counter::RedirectedBytes], bytes, "C: {cc:?}");
    let got: Vec<&[u8]> = frames.iter().map(|f| udp_payload_v4(f)).collect();
    let want: Vec<&[u8]> = valid.iter().map(|f| f.as_slice()).collect();
    assert_eq!(
        got, want,
        "C must receive the relayed frames unchanged, in order"
    );
    assert!(b_dwcp.finish(Duration::from_millis(50)).is_empty());
    assert_eq!(
        b_other.finish(Duration::ZERO),
        vec![b"to B's stack".to_vec()]
    );
}
