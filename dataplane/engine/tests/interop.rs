//! v1/v3 interop over a real veth pair: the same mixed object (zero regions, duplicated
//! regions, compressible text, random bytes) sent v3→v3 (codec auto and hde), v3→v1 (a
//! v1-only receiver) and v1→v3 (a v1-only sender). Each run must negotiate the expected
//! version and deliver a byte-identical file; v3 must put fewer bytes on the wire than v1.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dwcp_engine::codec::CodecChoice;
use dwcp_engine::demo::hash_file;
use dwcp_engine::io::{BackendChoice, IoConfig};
use dwcp_engine::runner::{RecvReport, RunOptions, SendReport, recv_file, send_file_with_codec};
use dwcp_transfer::{ReceiverConfig, SenderConfig};

/// Per 64 KiB region: zeros, a copy of an earlier region, text, or random bytes.
fn write_mixed(path: &Path, len: usize) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words = [
        "page ",
        "dirty ",
        "round ",
        "block ",
        "vm-7 ",
        "switchover ",
        "0x7ffd ",
        "\n",
    ];
    let region = 64 * 1024;
    let mut v: Vec<u8> = Vec::with_capacity(len + region);
    while v.len() < len {
        let start = v.len();
        match next() % 4 {
            0 => v.resize(start + region, 0),
            1 if start > 0 => {
                let from = (next() as usize % (start / region)) * region;
                v.extend_from_within(from..from + region);
            }
            1 | 2 => {
                while v.len() < start + region {
                    v.extend_from_slice(words[next() as usize % words.len()].as_bytes());
                }
                v.truncate(start + region);
            }
            _ => {
                while v.len() < start + region {
                    v.extend_from_slice(&next().to_le_bytes());
                }
            }
        }
    }
    v.truncate(len);
    std::fs::write(path, v).expect("write object");
}

struct Case {
    name: &'static str,
    send_version: u8,
    recv_version: u8,
    codec: CodecChoice,
    expect: u8,
}

fn run_case(
    pair: &dwcp_netns::Pair,
    case: &Case,
    src: &Path,
    dst: PathBuf,
    port: u16,
    backend: BackendChoice,
) -> (SendReport, RecvReport) {
    let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
    let mk = |ifname: &str, local: Ipv4Addr, peer: Ipv4Addr, core: usize| {
        let mut io = IoConfig::new(
            ifname,
            SocketAddrV4::new(local, port),
            SocketAddrV4::new(peer, port),
        );
        io.choice = backend;
        io.max_datagram = 1500 - 28;
        RunOptions {
            io,
            core,
            timeout: Duration::from_secs(60),
            idle_yield: true,
        }
    };
    let ropts = mk(dwcp_netns::IF_B, ip_b, ip_a, 1);
    let sopts = mk(dwcp_netns::IF_A, ip_a, ip_b, 0);
    let rcfg = ReceiverConfig {
        max_version: case.recv_version,
        ..ReceiverConfig::default()
    };
    let rx = pair
        .b
        .spawn_in(move || recv_file(&dst, rcfg, &ropts, Duration::from_millis(300), &mut |_| {}))
        .expect("spawn receiver");
    std::thread::sleep(Duration::from_millis(300));
    let scfg = SenderConfig {
        object_id: u64::from(port),
        max_version: case.send_version,
        mtu: Some(1500),
        ..SenderConfig::default()
    };
    let codec = case.codec;
    let src = src.to_path_buf();
    let send = pair
        .a
        .run_in(move || send_file_with_codec(&src, scfg, &sopts, codec, None, &mut |_| {}))
        .expect("run sender");
    let recv = rx.join().expect("receiver thread");
    let send = send.unwrap_or_else(|e| panic!("{}: send failed: {e:?}", case.name));
    let recv = recv.unwrap_or_else(|e| panic!("{}: receive failed: {e:?}", case.name));
    (send, recv)
}

#[test]
fn v1_and_v3_endpoints_interoperate_and_deliver_identical_objects() {
    if !dwcp_netns::privileged_test_guard("v1_and_v3_endpoints_interoperate") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("object");
    let len = 8 << 20;
    write_mixed(&src, len);
    let want = hash_file(&src).expect("hash source");
    let pair =
        dwcp_netns::Pair::new("interop", dwcp_netns::VethOptions::default()).expect("veth lab");
    let cases = [
        Case {
            name: "v3->v3 auto",
            send_version: 3,
            recv_version: 3,
            codec: CodecChoice::Auto,
            expect: 3,
        },
        Case {
            name: "v3->v3 hde",
            send_version: 3,
            recv_version: 3,
            codec: CodecChoice::Hde,
            expect: 3,
        },
        Case {
            name: "v3->v1",
            send_version: 3,
            recv_version: 1,
            codec: CodecChoice::Auto,
            expect: 1,
        },
        Case {
            name: "v1->v3",
            send_version: 1,
            recv_version: 3,
            codec: CodecChoice::Auto,
            expect: 1,
        },
    ];
    let mut wire = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dst = dir.path().join(format!("out-{i}"));
        let (s, r) = run_case(&pair, case, &src, dst, 7480 + i as u16, BackendChoice::Auto);
        let got = hash_file(&r.path).expect("hash output");
        eprintln!(
            "{}: v{}/v{}, {} wire bytes for {} ({:.3}), codec {} {:?}, mode {} ({}), {:.2} s",
            case.name,
            s.stats.version,
            r.stats.version,
            s.stats.bytes_sent,
            len,
            s.stats.bytes_sent as f64 / len as f64,
            s.codec.policy,
            s.codec.chunks,
            s.stats.mode,
            s.stats.mode_reason,
            s.elapsed.as_secs_f64()
        );
        assert_eq!(s.stats.version, case.expect, "{}", case.name);
        assert_eq!(r.stats.version, case.expect, "{}", case.name);
        assert_eq!(got, want, "{}: output differs from the source", case.name);
        assert_eq!(r.object_len, len as u64);
        assert_eq!(r.codec.decode_errors, 0, "{}", case.name);
        if case.expect == 1 {
            // a v1 session carries raw chunks only
            assert_eq!(r.codec.chunks[1..], [0; 5], "{}: {:?}", case.name, r.codec);
        }
        wire.push(s.stats.bytes_sent);
    }
    let (v3_auto, v3_hde, v3_to_v1, v1_to_v3) = (wire[0], wire[1], wire[2], wire[3]);
    // A quarter of the object is zero regions: even datacenter-mode v3 elides them.
    assert!(v3_auto * 10 < v3_to_v1 * 9, "v3 {v3_auto} vs v1 {v3_to_v1}");
    assert!(v3_auto * 10 < v1_to_v3 * 9, "v3 {v3_auto} vs v1 {v1_to_v3}");
    // HDE + zstd also compresses the text regions.
    assert!(v3_hde * 10 < v3_to_v1 * 6, "hde {v3_hde} vs v1 {v3_to_v1}");
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Goodput and wire bytes of codec raw / hde / auto for compressible (text) and
/// incompressible (random) objects over veth. Figures in docs/perf-codec-transfer.md.
/// `DWCP_CODEC_BENCH_MIB` (64), `DWCP_CODEC_BENCH_REPS` (3), `DWCP_CODEC_BENCH_TBF` (e.g.
/// `400mbit`: a tbf rate limit on veth-a, UDP backend, since AF_XDP transmit bypasses qdiscs).
#[test]
#[ignore = "measurement: cargo test --release -p dwcp-engine --test interop -- --ignored --nocapture"]
fn measure_codec_goodput_on_veth() {
    if !dwcp_netns::privileged_test_guard("measure_codec_goodput_on_veth") {
        return;
    }
    let mib: usize = env_or("DWCP_CODEC_BENCH_MIB", 64);
    let reps: usize = env_or("DWCP_CODEC_BENCH_REPS", 3);
    let tbf = std::env::var("DWCP_CODEC_BENCH_TBF").ok();
    let len = mib << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("text");
    let random = dir.path().join("random");
    {
        let words = [
            "page ", "dirty ", "round ", "block ", "vm-7 ", "0x7ffd ", "\n",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = Vec::with_capacity(len + 16);
        while t.len() < len {
            t.extend_from_slice(words[next() as usize % words.len()].as_bytes());
        }
        t.truncate(len);
        std::fs::write(&text, &t).expect("write");
        let mut r = Vec::with_capacity(len + 8);
        while r.len() < len {
            r.extend_from_slice(&next().to_le_bytes());
        }
        r.truncate(len);
        std::fs::write(&random, &r).expect("write");
    }
    let pair = dwcp_netns::Pair::new("codecperf", dwcp_netns::VethOptions::default()).expect("lab");
    let backend = if let Some(rate) = &tbf {
        let st = pair
            .a
            .command("tc")
            .args([
                "qdisc",
                "add",
                "dev",
                dwcp_netns::IF_A,
                "root",
                "tbf",
                "rate",
                rate,
            ])
            .args(["burst", "256kb", "latency", "20ms"])
            .status()
            .expect("tc");
        assert!(st.success(), "tc tbf");
        BackendChoice::Udp
    } else {
        BackendChoice::Auto
    };
    eprintln!(
        "object {mib} MiB, {reps} runs each, backend {backend:?}, rate limit {}",
        tbf.as_deref().unwrap_or("none")
    );
    eprintln!(
        "| data | codec | goodput Gbit/s min / median / max | wire bytes / object bytes (median) | mode at end | codec policy at end |"
    );
    eprintln!("|---|---|---|---|---|---|");
    let mut port = 7500;
    for (dname, path) in [("text", &text), ("random", &random)] {
        for codec in [CodecChoice::Raw, CodecChoice::Hde, CodecChoice::Auto] {
            let mut g = Vec::new();
            let mut w = Vec::new();
            let mut last = None;
            for _ in 0..reps {
                port += 1;
                let case = Case {
                    name: "measure",
                    send_version: 3,
                    recv_version: 3,
                    codec,
                    expect: 3,
                };
                let dst = dir.path().join(format!("out-{port}"));
                let (s, r) = run_case(&pair, &case, path, dst.clone(), port, backend);
                assert_eq!(r.object_len, len as u64);
                g.push(len as f64 * 8.0 / s.elapsed.as_secs_f64() / 1e9);
                w.push(s.stats.bytes_sent as f64 / len as f64);
                last = Some(s);
                let _ = std::fs::remove_file(&dst);
            }
            g.sort_by(f64::total_cmp);
            w.sort_by(f64::total_cmp);
            let s = last.expect("a run");
            eprintln!(
                "| {dname} | {codec} | {:.2} / {:.2} / {:.2} | {:.3} | {} ({}) | {}; {} |",
                g[0],
                g[g.len() / 2],
                g[g.len() - 1],
                w[w.len() / 2],
                s.stats.mode,
                s.stats.mode_reason.rule,
                s.codec.policy,
                s.codec_reason
            );
        }
    }
}
