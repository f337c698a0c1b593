//! One object over several workers ([`dwcp_engine::parts`]) over a real veth pair: parts of
//! whole MiB with a short last one, parts left empty by a small object, a part file that
//! appears under its name only once every part verified, per-part journals removed after,
//! and a typed refusal of AF_XDP for a split transfer.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dwcp_engine::codec::CodecChoice;
use dwcp_engine::demo::hash_file;
use dwcp_engine::io::{BackendChoice, IoConfig};
use dwcp_engine::parts::{PartsReport, recv_file_parts, send_file_parts};
use dwcp_engine::runner::{RunError, RunOptions};
use dwcp_transfer::{ReceiverConfig, ReceiverStats, SenderConfig, SenderStats};

fn opts(ifname: &str, local: Ipv4Addr, peer: Ipv4Addr, port: u16, core: usize) -> RunOptions {
    let mut io = IoConfig::new(
        ifname,
        SocketAddrV4::new(local, port),
        SocketAddrV4::new(peer, port),
    );
    io.choice = BackendChoice::Auto;
    RunOptions {
        io,
        core,
        timeout: Duration::from_secs(60),
        idle_yield: true,
    }
}

type Reports = (
    Result<PartsReport<SenderStats>, RunError>,
    Result<PartsReport<ReceiverStats>, RunError>,
);

fn run(pair: &dwcp_netns::Pair, src: &Path, dst: PathBuf, n: usize, port: u16) -> Reports {
    let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
    let ropts = opts(dwcp_netns::IF_B, ip_b, ip_a, port, 1);
    let sopts = opts(dwcp_netns::IF_A, ip_a, ip_b, port, 0);
    let rx = pair
        .b
        .spawn_in(move || {
            recv_file_parts(
                &dst,
                ReceiverConfig::default(),
                &ropts,
                n,
                Duration::from_millis(200),
                None,
            )
        })
        .expect("spawn receiver");
    std::thread::sleep(Duration::from_millis(300));
    let src = src.to_path_buf();
    let send = pair
        .a
        .run_in(move || {
            send_file_parts(
                &src,
                SenderConfig::default(),
                &sopts,
                CodecChoice::Auto,
                n,
                None,
            )
        })
        .expect("run sender");
    (send, rx.join().expect("receiver thread"))
}

#[test]
fn an_object_in_parts_on_several_workers_arrives_whole_and_verified() {
    if !dwcp_netns::privileged_test_guard("an_object_in_parts_on_several_workers") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = dwcp_netns::Pair::new("parts", dwcp_netns::VethOptions::default()).expect("lab");
    let mib = 1usize << 20;
    // (object length, parts): three parts of 2, 2 and 1 MiB + 7; one part of 1 MiB and
    // three empty ones; a single part
    for (i, (len, n)) in [(5 * mib + 7, 3usize), (mib, 4), (3 * mib + 1, 1)]
        .into_iter()
        .enumerate()
    {
        let src = dir.path().join(format!("object-{i}"));
        let data: Vec<u8> = (0..len).map(|j| (j * 31 + j / 4093) as u8).collect();
        std::fs::write(&src, &data).expect("write source");
        let dst = dir.path().join(format!("received-{i}"));
        let (send, recv) = run(&pair, &src, dst.clone(), n, 7600 + 10 * i as u16);
        let send = send.unwrap_or_else(|e| panic!("case {i}: send: {e:?}"));
        let recv = recv.unwrap_or_else(|e| panic!("case {i}: receive: {e:?}"));
        assert_eq!(send.parts.len(), n);
        assert_eq!(recv.parts.len(), n);
        assert_eq!(recv.object_len, len as u64);
        assert_eq!(recv.path.as_deref(), Some(dst.as_path()));
        assert_eq!(
            hash_file(&dst).expect("hash output"),
            hash_file(&src).expect("hash source"),
            "case {i}: output differs"
        );
        // every part went over its own connection and worker and covered its range; the
        // ranges tile the object
        let covered: u64 = send.parts.iter().map(|p| p.range.end - p.range.start).sum();
        assert_eq!(covered, len as u64, "case {i}");
        for (k, p) in recv.parts.iter().enumerate() {
            assert_eq!(p.range, send.parts[k].range, "case {i} part {k}");
            assert!(p.stats.frames_received > 0, "case {i} part {k}: no frames");
            let sent = send.parts[k].stats.data_frames_sent;
            assert_eq!(sent > 0, !p.range.is_empty(), "case {i} part {k}");
            assert_eq!(
                p.stats.data_frames > 0,
                !p.range.is_empty(),
                "case {i} part {k}"
            );
        }
        // nothing left behind: no part file, no journals
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".dwcp-"))
            .collect();
        assert!(left.is_empty(), "case {i}: left behind {left:?}");
    }
}

#[test]
fn a_split_transfer_refuses_af_xdp_with_a_typed_error() {
    if !dwcp_netns::privileged_test_guard("a_split_transfer_refuses_af_xdp") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("object");
    std::fs::write(&src, [7u8; 4096]).expect("write");
    let pair = dwcp_netns::Pair::new("partsx", dwcp_netns::VethOptions::default()).expect("lab");
    let mut o = opts(dwcp_netns::IF_A, pair.ip_a(), pair.ip_b(), 7690, 0);
    o.io.choice = BackendChoice::AfXdp;
    let r = pair
        .a
        .run_in(move || {
            send_file_parts(
                &src,
                SenderConfig::default(),
                &o,
                CodecChoice::Auto,
                2,
                None,
            )
        })
        .expect("run");
    assert!(matches!(r, Err(RunError::PartsNeedUdp)), "{r:?}");
}
