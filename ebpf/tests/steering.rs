//! Privileged end-to-end tests of the DWCP XDP program on a veth pair between two fresh
//! network namespaces, in native and generic mode: valid DWCP frames land in an AF_XDP
//! socket, malformed ones are dropped with the right counter and never reach a UDP socket,
//! ordinary traffic reaches the kernel stack; plus L2/L3 parsing (VLAN, QinQ, IPv4
//! options and fragments, IPv6 extension headers) with hand-built raw frames, and jumbo
//! multi-buffer frames.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use dwcp_ebpf::{AttachMode, Counter, ProgramConfig, XdpProgram};
use dwcp_netns::{IF_B, Pair, VethOptions};

fn steering(mode: AttachMode, tag: &str) {
    let pair = Pair::new(tag, VethOptions::default()).expect("lab");
    let ip_b = IpAddr::V4(pair.ip_b());

    let mut prog = pair
        .b
        .run_in(move || XdpProgram::attach(IF_B, mode, &ProgramConfig::default()))
        .unwrap()
        .expect("attach");
    assert_eq!(prog.mode(), mode);
    let shown = link_show(&pair.b, IF_B);
    assert!(
        shown.contains(&format!("{} ", mode.ip_link_keyword())) && shown.contains("prog/xdp"),
        "ip link does not show a {mode} program: {shown}"
    );

    let xsk = XskRx::open(&pair.b, IF_B, 0, false);
    prog.register_socket(0, xsk.fd()).expect("register socket");
    let dwcp_sock = UdpCollector::bind(&pair.b, ip_b, PORT);
    let other_sock = UdpCollector::bind(&pair.b, ip_b, OTHER_PORT);

    // ICMP goes through the kernel stack (and resolves ARP before the UDP traffic).
    let ping = pair
        .a
        .command("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "2", &ip_b.to_string()])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "ping through the XDP program failed: {ping:?}"
    );

    let before = prog.counters().unwrap();
    let valid = valid_set();
    let bad = malformed();
    let plain: Vec<Vec<u8>> = vec![
        b"ordinary datagram".to_vec(),
        dwcp(3, DATA, 0, 10), // DWCP-shaped, but to a port that is not configured
        vec![0u8; 1000],
    ];
    send_udp(&pair.a, ip_b, PORT, valid.clone());
    send_udp(
        &pair.a,
        ip_b,
        PORT,
        bad.iter().map(|(f, _)| f.clone()).collect(),
    );
    send_udp(&pair.a, ip_b, OTHER_PORT, plain.clone());

    let n_valid = valid.len() as u64;
    let n_bad = bad.len() as u64;
    let c = wait_counters(&prog, |c| {
        let d = c.since(&before);
        d[Counter::RedirectedPackets] >= n_valid && d.dropped() >= n_bad
    })
    .since(&before);
    let frames = xsk.finish(Duration::from_millis(100));
    let dwcp_udp = dwcp_sock.finish(Duration::from_millis(50));
    let other_udp = other_sock.finish(Duration::ZERO);

    assert_eq!(c[Counter::RedirectedPackets], n_valid, "{c:?}");
    let bytes: u64 = valid.iter().map(|f| (14 + 20 + 8 + f.len()) as u64).sum();
    assert_eq!(c[Counter::RedirectedBytes], bytes);
    for (counter, n) in expected_drops(&bad) {
        assert_eq!(c[counter], n, "{counter}: {c:?}");
    }
    assert_eq!(c[Counter::NoSocket], 0);
    assert_eq!(c[Counter::RelayedPackets], 0);
    assert!(c[Counter::Pass] >= plain.len() as u64, "{c:?}");

    let got: Vec<&[u8]> = frames.iter().map(|f| udp_payload_v4(f)).collect();
    let want: Vec<&[u8]> = valid.iter().map(|f| f.as_slice()).collect();
    assert_eq!(
        got, want,
        "AF_XDP socket must get exactly the valid frames, in order"
    );
    assert!(
        dwcp_udp.is_empty(),
        "{} datagrams reached the UDP socket on the DWCP port",
        dwcp_udp.len()
    );
    assert_eq!(other_udp, plain, "ordinary UDP must reach the kernel stack");

    // Without a socket on the queue, valid frames fall back to the kernel stack.
    prog.unregister_socket(0).unwrap();
    prog.unregister_socket(0)
        .expect("removing an empty slot is fine");
    let dwcp_sock = UdpCollector::bind(&pair.b, ip_b, PORT);
    let before = prog.counters().unwrap();
    let fallback = vec![dwcp(3, DATA, 0, 64), dwcp(1, HELLO, 0, 0)];
    send_udp(&pair.a, ip_b, PORT, fallback.clone());
    let c = wait_counters(&prog, |c| c.since(&before)[Counter::NoSocket] >= 2).since(&before);
    assert_eq!(c[Counter::NoSocket], 2, "{c:?}");
    assert_eq!(c[Counter::RedirectedPackets], 0);
    assert_eq!(dwcp_sock.finish(Duration::from_millis(100)), fallback);

    drop(prog);
    assert!(!has_xdp(&pair.b, IF_B), "dropping XdpProgram must detach");
}

#[test]
fn native_mode_steers_drops_and_passes() {
    if !dwcp_netns::privileged_test_guard("native_mode_steers_drops_and_passes") {
        return;
    }
    steering(AttachMode::Native, "xnat");
}

#[test]
fn generic_mode_steers_drops_and_passes() {
    if !dwcp_netns::privileged_test_guard("generic_mode_steers_drops_and_passes") {
        return;
    }
    steering(AttachMode::Generic, "xgen");
}

#[test]
fn config_changes_ports_while_attached() {
    if !dwcp_netns::privileged_test_guard("config_changes_ports_while_attached") {
        return;
    }
    let pair = Pair::new("xcfg", VethOptions::default()).expect("lab");
    let ip_b = IpAddr::V4(pair.ip_b());
    let mut prog = pair
        .b
        .run_in(|| XdpProgram::attach(IF_B, AttachMode::Native, &ProgramConfig::default()))
        .unwrap()
        .expect("attach");
    let xsk = XskRx::open(&pair.b, IF_B, 0, false);
    prog.register_socket(0, xsk.fd()).unwrap();
    // Warm up ARP so later counts are exact.
    send_udp(&pair.a, ip_b, 9, vec![b"arp".to_vec()]);
    std::thread::sleep(Duration::from_millis(50));

    prog.set_config(&ProgramConfig {
        dwcp_ports: vec![9000, OTHER_PORT],
        relay_ifindex: None,
    })
    .unwrap();
    let before = prog.counters().unwrap();
    send_udp(&pair.a, ip_b, PORT, vec![dwcp(3, DATA, 0, 8)]); // no longer DWCP: passes
    send_udp(&pair.a, ip_b, OTHER_PORT, vec![dwcp(3, DATA, 0, 9)]);
    send_udp(
        &pair.a,
        ip_b,
        9000,
        vec![dwcp(3, ACK, 0, 0), b"junk".to_vec()],
    );
    let c = wait_counters(&prog, |c| {
        c.since(&before)[Counter::RedirectedPackets] >= 2
            && c.since(&before)[Counter::DropTooShort] >= 1
    })
    .since(&before);
    assert_eq!(c[Counter::RedirectedPackets], 2, "{c:?}");
    assert_eq!(c[Counter::DropTooShort], 1, "{c:?}");
    assert!(c[Counter::Pass] >= 1);
    let frames = xsk.finish(Duration::from_millis(50));
    assert_eq!(frames.len(), 2);
    // The link cannot be removed or replaced behind the owner's back.
    assert!(
        pair.b
            .ip(&["link", "set", "dev", IF_B, "xdp", "off"])
            .is_err(),
        "netlink detach must be refused while the BPF link holds the program"
    );
    assert!(has_xdp(&pair.b, IF_B));
    assert!(
        prog.set_config(&ProgramConfig {
            dwcp_ports: vec![],
            relay_ifindex: None
        })
        .is_err()
    );
}

#[test]
fn vlan_qinq_ipv4_options_ipv6_extensions_and_fragments() {
    if !dwcp_netns::privileged_test_guard("vlan_qinq_ipv4_options_ipv6_extensions_and_fragments") {
        return;
    }
    let pair = Pair::new("xraw", VethOptions::default()).expect("lab");
    let mut prog = pair
        .b
        .run_in(|| XdpProgram::attach(IF_B, AttachMode::Native, &ProgramConfig::default()))
        .unwrap()
        .expect("attach");
    let xsk = XskRx::open(&pair.b, IF_B, 0, false);
    prog.register_socket(0, xsk.fd()).unwrap();

    let (s4, d4) = ([10, 77, 0, 1], [10, 77, 0, 2]);
    let s6 = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let d6 = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let raw = |vlans: Vec<(u16, u16)>| Raw {
        dst: mac_of(&pair.b, IF_B),
        src: mac_of(&pair.a, dwcp_netns::IF_A),
        vlans,
        ip4: (s4, d4),
        ip6: (s6, d6),
    };
    let f = dwcp(3, DATA, 0, 200);
    let pad6 = vec![1u8, 4, 0, 0, 0, 0]; // PadN option filling a 8-byte extension header
    let opts = [1u8, 1, 1, 0]; // NOP NOP NOP EOL

    let redirected = vec![
        raw(vec![]).v4(&[], 0, PORT, &f, None),
        raw(vec![(0x8100, 10)]).v4(&[], 0, PORT, &f, None),
        raw(vec![(0x88A8, 100), (0x8100, 20)]).v4(&[], 0, PORT, &f, None),
        raw(vec![(0x8100, 100), (0x8100, 20)]).v6(&[], PORT, &f),
        raw(vec![]).v4(&opts, 0, PORT, &f, None),
        raw(vec![]).v4(&[opts, opts, opts, opts].concat(), 0x4000, PORT, &f, None), // DF
        raw(vec![]).v6(&[], PORT, &f),
        raw(vec![]).v6(&[(0, pad6.clone()), (60, pad6.clone())], PORT, &f),
        raw(vec![(0x8100, 7)]).v6(&[(43, pad6.clone())], PORT, &f),
        // Hop-by-hop, AH (4-byte length units), destination options.
        raw(vec![]).v6(
            &[(0, pad6.clone()), (51, vec![0u8; 14]), (60, pad6.clone())],
            PORT,
            &f,
        ),
    ];
    let dropped = vec![
        (
            raw(vec![(0x8100, 10)]).v4(&[], 0, PORT, &f[..40], None),
            Counter::DropTooShort,
        ),
        (
            raw(vec![]).v6(&[(60, pad6.clone())], PORT, &{
                let mut g = f.clone();
                g[0] = 0;
                g
            }),
            Counter::DropBadMagic,
        ),
        (
            raw(vec![(0x88A8, 1), (0x8100, 2)]).v4(&opts, 0, PORT, &dwcp(2, DATA, 0, 5), None),
            Counter::DropBadVersion,
        ),
        // UDP length claims more than was received.
        (
            raw(vec![]).v4(&[], 0, PORT, &f, Some((8 + f.len() + 8) as u16)),
            Counter::DropBadLength,
        ),
    ];
    let passed = vec![
        // Fragments are the kernel's business: first (MF), later (offset), IPv6 fragment.
        raw(vec![]).v4(&[], 0x2000, PORT, &f, None),
        raw(vec![]).v4(&[], 0x0010, PORT, &f, None),
        raw(vec![]).v6(&[(44, vec![0, 0, 0, 0, 0, 1])], PORT, &f),
        // Three VLAN tags is deeper than the program looks.
        raw(vec![(0x88A8, 1), (0x8100, 2), (0x8100, 3)]).v4(&[], 0, PORT, &f, None),
        // Other port, over VLAN and IPv6.
        raw(vec![(0x8100, 10)]).v4(&[], 0, OTHER_PORT, &f, None),
        raw(vec![]).v6(&[(0, pad6.clone())], OTHER_PORT, &f),
    ];

    let before = prog.counters().unwrap();
    send_raw(&pair.a, dwcp_netns::IF_A, redirected.clone());
    send_raw(
        &pair.a,
        dwcp_netns::IF_A,
        dropped.iter().map(|(f, _)| f.clone()).collect(),
    );
    send_raw(&pair.a, dwcp_netns::IF_A, passed.clone());
    let c = wait_counters(&prog, |c| {
        let d = c.since(&before);
        d[Counter::RedirectedPackets] >= redirected.len() as u64
            && d.dropped() >= dropped.len() as u64
            && d[Counter::Pass] >= passed.len() as u64
    })
    .since(&before);
    let frames = xsk.finish(Duration::from_millis(100));
    assert_eq!(
        c[Counter::RedirectedPackets],
        redirected.len() as u64,
        "{c:?}"
    );
    assert_eq!(
        c[Counter::RedirectedBytes],
        redirected.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    for (counter, n) in expected_drops(&dropped) {
        assert_eq!(c[counter], n, "{counter}: {c:?}");
    }
    assert!(c[Counter::Pass] >= passed.len() as u64, "{c:?}");
    assert_eq!(
        frames, redirected,
        "AF_XDP socket gets the raw frames unchanged"
    );
}

#[test]
fn jumbo_multi_buffer_frames() {
    if !dwcp_netns::privileged_test_guard("jumbo_multi_buffer_frames") {
        return;
    }
    let pair = Pair::new(
        "xjum",
        VethOptions {
            mtu: 9000,
            ..VethOptions::default()
        },
    )
    .expect("lab");
    let ip_b = IpAddr::V4(pair.ip_b());
    let mut prog = pair
        .b
        .run_in(|| XdpProgram::attach(IF_B, AttachMode::Native, &ProgramConfig::default()))
        .unwrap()
        .expect("attach with MTU 9000 needs the xdp.frags program");
    let xsk = XskRx::open(&pair.b, IF_B, 0, true);
    prog.register_socket(0, xsk.fd()).unwrap();
    let ok = pair
        .a
        .command("ping")
        .args(["-c", "1", "-W", "2", &ip_b.to_string()])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");

    let valid = vec![
        dwcp(3, DATA, 0, 8000),
        dwcp(3, DATA, SEALED, 8900 - 48 - 16 - 28),
    ];
    let mut bad = dwcp(3, DATA, 0, 8000);
    bad[12..16].copy_from_slice(&7999u32.to_be_bytes());
    let before = prog.counters().unwrap();
    send_udp(&pair.a, ip_b, PORT, valid.clone());
    send_udp(&pair.a, ip_b, PORT, vec![bad]);
    let c = wait_counters(&prog, |c| {
        let d = c.since(&before);
        d[Counter::RedirectedPackets] >= 2 && d[Counter::DropBadLength] >= 1
    })
    .since(&before);
    let frames = xsk.finish(Duration::from_millis(100));
    assert_eq!(c[Counter::RedirectedPackets], 2, "{c:?}");
    assert_eq!(c[Counter::DropBadLength], 1, "{c:?}");
    // Byte count covers every fragment of the multi-buffer frame.
    let bytes: u64 = valid.iter().map(|f| (42 + f.len()) as u64).sum();
    assert_eq!(c[Counter::RedirectedBytes], bytes);
    let got: Vec<&[u8]> = frames.iter().map(|f| udp_payload_v4(f)).collect();
    let want: Vec<&[u8]> = valid.iter().map(|f| f.as_slice()).collect();
    assert_eq!(got, want);
}

#[test]
fn one_socket_per_queue_and_no_socket_fallback() {
    if !dwcp_netns::privileged_test_guard("one_socket_per_queue_and_no_socket_fallback") {
        return;
    }
    let pair = Pair::new(
        "xmq",
        VethOptions {
            queues: 2,
            ..VethOptions::default()
        },
    )
    .expect("lab");
    let ip_b = IpAddr::V4(pair.ip_b());
    let mut prog = pair
        .b
        .run_in(|| XdpProgram::attach(IF_B, AttachMode::Native, &ProgramConfig::default()))
        .unwrap()
        .expect("attach");
    let q0 = XskRx::open(&pair.b, IF_B, 0, false);
    let q1 = XskRx::open(&pair.b, IF_B, 1, false);
    prog.register_socket(0, q0.fd()).unwrap();
    prog.register_socket(1, q1.fd()).unwrap();
    assert!(matches!(
        prog.register_socket(64, q0.fd()),
        Err(dwcp_ebpf::LoadError::QueueOutOfRange { queue: 64, .. })
    ));
    send_udp(&pair.a, ip_b, 9, vec![b"arp".to_vec()]);
    std::thread::sleep(Duration::from_millis(50));

    // Many flows (one sender socket each) so the veth spreads them over both queues.
    let before = prog.counters().unwrap();
    let mut sent = Vec::new();
    for i in 0..32u32 {
        let mut f = dwcp(3, DATA, 0, 64);
        f[16..24].copy_from_slice(&u64::from(i).to_be_bytes()); // sequence = flow number
        send_udp(&pair.a, ip_b, PORT, vec![f.clone()]);
        sent.push(f);
    }
    let c = wait_counters(&prog, |c| {
        c.since(&before)[Counter::RedirectedPackets] >= 32
    })
    .since(&before);
    // The XSKMAP holds a reference to each socket: remove them so closing really closes
    // and queue 0 can be bound again below.
    prog.unregister_socket(0).unwrap();
    prog.unregister_socket(1).unwrap();
    let mut got: Vec<Vec<u8>> = q0
        .finish(Duration::from_millis(100))
        .into_iter()
        .chain(q1.finish(Duration::ZERO))
        .map(|f| udp_payload_v4(&f).to_vec())
        .collect();
    assert_eq!(c[Counter::RedirectedPackets], 32, "{c:?}");
    assert_eq!(c[Counter::NoSocket], 0, "{c:?}");
    got.sort();
    sent.sort();
    assert_eq!(
        got, sent,
        "every frame reaches the socket of the queue it arrived on"
    );

    // Only queue 0 served: frames arriving on queue 1 fall back to the stack.
    let q0 = XskRx::open(&pair.b, IF_B, 0, false);
    prog.register_socket(0, q0.fd()).unwrap();
    let before = prog.counters().unwrap();
    for _ in 0..32 {
        send_udp(&pair.a, ip_b, PORT, vec![dwcp(3, ACK, 0, 0)]);
    }
    let c = wait_counters(&prog, |c| {
        let d = c.since(&before);
        d[Counter::RedirectedPackets] + d[Counter::NoSocket] >= 32
    })
    .since(&before);
    let on_q0 = q0.finish(Duration::from_millis(100)).len() as u64;
    assert_eq!(
        c[Counter::RedirectedPackets] + c[Counter::NoSocket],
        32,
        "{c:?}"
    );
    assert_eq!(on_q0, c[Counter::RedirectedPackets]);
    assert!(
        c[Counter::NoSocket] > 0 && c[Counter::RedirectedPackets] > 0,
        "32 flows should use both queues: {c:?}"
    );
}
