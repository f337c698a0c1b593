//! Tamper test on a real link: two `dwcp` processes in two network namespaces joined by a
//! veth pair run a SEALED transfer (keys from `dwcp keygen`) through an on-path relay in the
//! receiver's namespace. The relay (this test process, a third party) forwards every frame
//! and injects forged, replayed, truncated and bit-flipped copies of captured frames in both
//! directions. The output must be byte-identical, and the receiver must report the drops by
//! reason. A second run with the wrong peer key must fail the handshake with a clear error.
//!
//! Needs root (network namespaces); says so and returns otherwise (panics under CI).

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dwcp_netns::{IF_A, IF_B, Pair, VethOptions};

fn dwcp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dwcp"))
}

fn keygen(path: &Path) {
    let out = dwcp()
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .expect("run dwcp keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[allow(clippy::too_many_arguments)]
fn start(
    ns: &dwcp_netns::Netns,
    cmd: &str,
    iface: &str,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    key: &Path,
    peer_pub: &Path,
    file: &Path,
    core: &str,
) -> Child {
    ns.command(env!("CARGO_BIN_EXE_dwcp"))
        .args([
            "--json",
            cmd,
            "--iface",
            iface,
            "--backend",
            "udp",
            "--timeout",
            "30",
        ])
        .arg("--local")
        .arg(local.to_string())
        .arg("--peer")
        .arg(peer.to_string())
        .arg("--core")
        .arg(core)
        .arg("--key")
        .arg(key)
        .arg("--peer-pub")
        .arg(peer_pub)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dwcp")
}

fn finish(child: Child) -> (bool, serde_json::Value, String) {
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), v, stderr)
}

/// SplitMix64: deterministic choices for the adversary.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Default)]
struct Injected {
    replayed: AtomicU64,
    flipped: AtomicU64,
    truncated: AtomicU64,
    forged: AtomicU64,
}

/// Copies of `d` to inject: replays (this frame, an older one), a bit flip, a truncation,
/// a forged SEALED frame (plausible header, random payload and tag).
fn tampered(d: &[u8], history: &mut Vec<Vec<u8>>, rng: &mut Rng, n: &Injected) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if rng.chance(10) {
        out.push(d.to_vec());
        n.replayed.fetch_add(1, Ordering::Relaxed);
    }
    if !history.is_empty() && rng.chance(10) {
        out.push(history[(rng.next() % history.len() as u64) as usize].clone());
        n.replayed.fetch_add(1, Ordering::Relaxed);
    }
    if rng.chance(10) {
        let mut c = d.to_vec();
        let bit = (rng.next() % (c.len() as u64 * 8)) as usize;
        c[bit / 8] ^= 1 << (bit % 8);
        out.push(c);
        n.flipped.fetch_add(1, Ordering::Relaxed);
    }
    if rng.chance(5) {
        out.push(d[..(rng.next() % d.len() as u64) as usize].to_vec());
        n.truncated.fetch_add(1, Ordering::Relaxed);
    }
    if rng.chance(5)
        && let Ok(h) = dwcp_proto::Header::parse(d)
        && h.flags.contains(dwcp_proto::Flags::SEALED)
    {
        let mut f = h;
        f.seq += 1 + rng.next() % 4;
        let len = (rng.next() % 1000) as usize;
        f.payload_len = len as u32;
        let mut v = f.to_bytes().to_vec();
        v.extend((0..len + dwcp_proto::TAG_LEN).map(|_| rng.next() as u8));
        out.push(v);
        n.forged.fetch_add(1, Ordering::Relaxed);
    }
    if history.len() < 2048 {
        history.push(d.to_vec());
    } else {
        let i = (rng.next() % history.len() as u64) as usize;
        history[i] = d.to_vec();
    }
    out
}

#[allow(clippy::too_many_arguments)]
/// One direction of the relay: everything from `from` goes to `to_addr` via `to`, with
/// tampered copies after it.
fn pump(
    from: UdpSocket,
    to: UdpSocket,
    to_addr: Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    learn: Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    n: Arc<Injected>,
    attack: bool,
) {
    let mut rng = Rng(seed);
    let mut history = Vec::new();
    let mut buf = vec![0u8; 65_536];
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, src)) = from.recv_from(&mut buf) else {
            continue;
        };
        *learn.lock().expect("lock") = Some(src);
        let Some(dst) = *to_addr.lock().expect("lock") else {
            continue;
        };
        let d = &buf[..len];
        let _ = to.send_to(d, dst);
        if attack {
            for x in tampered(d, &mut history, &mut rng, &n) {
                let _ = to.send_to(&x, dst);
            }
        }
    }
}

struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    injected: Arc<Injected>,
}

/// A relay in namespace `ns`: the sender talks to `front`, the receiver to `back`.
fn relay(
    ns: &dwcp_netns::Netns,
    front: SocketAddrV4,
    back: SocketAddrV4,
    receiver: SocketAddrV4,
    attack: bool,
) -> Relay {
    let stop = Arc::new(AtomicBool::new(false));
    let injected = Arc::new(Injected::default());
    let (f, b) = ns
        .run_in(move || {
            let f = UdpSocket::bind(front)?;
            let b = UdpSocket::bind(back)?;
            Ok::<_, std::io::Error>((f, b))
        })
        .expect("enter namespace")
        .expect("bind relay sockets");
    let sender_addr = Arc::new(std::sync::Mutex::new(None));
    let receiver_addr = Arc::new(std::sync::Mutex::new(Some(receiver.into())));
    let mut threads = Vec::new();
    for (from, to, to_addr, learn, seed) in [
        (
            f.try_clone().expect("clone"),
            b.try_clone().expect("clone"),
            receiver_addr.clone(),
            sender_addr.clone(),
            1u64,
        ),
        (
            b,
            f,
            sender_addr,
            Arc::new(std::sync::Mutex::new(None)),
            2u64,
        ),
    ] {
        let (stop, n) = (stop.clone(), injected.clone());
        threads.push(std::thread::spawn(move || {
            pump(from, to, to_addr, learn, stop, seed, n, attack)
        }));
    }
    Relay {
        stop,
        threads,
        injected,
    }
}

impl Relay {
    fn stop(self) -> Arc<Injected> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("relay thread");
        }
        self.injected
    }
}

fn object(len: usize) -> Vec<u8> {
    let mut r = Rng(99);
    (0..len)
        .map(|i| {
            if (i / 65_536) % 4 == 0 {
                0
            } else {
                r.next() as u8
            }
        })
        .collect()
}

#[test]
fn sealed_transfer_over_veth_drops_injected_frames_and_arrives_identical() {
    if !dwcp_netns::privileged_test_guard("sealed_transfer_over_veth_drops_injected_frames") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (skey, rkey) = (
        dir.path().join("sender.key"),
        dir.path().join("receiver.key"),
    );
    keygen(&skey);
    keygen(&rkey);
    let pub_of = |p: &Path| dwcp_secure::public_path(p);
    let src = dir.path().join("object");
    let data = object(8 << 20);
    std::fs::write(&src, &data).expect("write object");
    let dest = dir.path().join("received");

    let pair = Pair::new("tamper", VethOptions::default()).expect("lab");
    let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
    let recv_addr = SocketAddrV4::new(ip_b, 7470);
    let relay_back = SocketAddrV4::new(ip_b, 7471);
    let relay_front = SocketAddrV4::new(ip_b, 7472);
    let send_addr = SocketAddrV4::new(ip_a, 7470);
    let r = relay(&pair.b, relay_front, relay_back, recv_addr, true);
    let rx = start(
        &pair.b,
        "recv",
        IF_B,
        recv_addr,
        relay_back,
        &rkey,
        &pub_of(&skey),
        &dest,
        "1",
    );
    std::thread::sleep(Duration::from_millis(300));
    let tx = start(
        &pair.a,
        "send",
        IF_A,
        send_addr,
        relay_front,
        &skey,
        &pub_of(&rkey),
        &src,
        "0",
    );
    let (tx_ok, tx_json, tx_err) = finish(tx);
    let (rx_ok, rx_json, rx_err) = finish(rx);
    let n = r.stop();
    assert!(tx_ok, "send failed: {tx_err}");
    assert!(rx_ok, "recv failed: {rx_err}");
    let got = std::fs::read(&dest).expect("received object");
    assert!(got == data, "received object differs");
    let sec = &rx_json["security"];
    assert_ne!(sec["sealed"], serde_json::Value::Null, "{rx_json}");
    assert_eq!(tx_json["security"]["sealed"], sec["sealed"], "{tx_json}");
    let drops = |v: &serde_json::Value, k: &str| v["drops"][k].as_u64().unwrap_or(0);
    eprintln!(
        "injected: replayed {} flipped {} truncated {} forged {}; receiver {}; sender {}",
        n.replayed.load(Ordering::Relaxed),
        n.flipped.load(Ordering::Relaxed),
        n.truncated.load(Ordering::Relaxed),
        n.forged.load(Ordering::Relaxed),
        sec,
        tx_json["security"]
    );
    assert!(n.replayed.load(Ordering::Relaxed) > 0 && n.forged.load(Ordering::Relaxed) > 0);
    for k in ["auth_failed", "replay"] {
        assert!(drops(sec, k) > 0, "receiver {k}: {sec}");
        assert!(
            drops(&tx_json["security"], k) > 0,
            "sender {k}: {}",
            tx_json["security"]
        );
    }
    assert!(drops(sec, "truncated") > 0, "{sec}");
}

#[test]
fn wrong_peer_key_over_veth_fails_the_handshake_clearly() {
    if !dwcp_netns::privileged_test_guard("wrong_peer_key_over_veth_fails_the_handshake") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (skey, rkey, other) = (
        dir.path().join("sender.key"),
        dir.path().join("receiver.key"),
        dir.path().join("other.key"),
    );
    for k in [&skey, &rkey, &other] {
        keygen(k);
    }
    let src = dir.path().join("object");
    std::fs::write(&src, object(1 << 20)).expect("write object");
    let dest = dir.path().join("received");
    let pair = Pair::new("tamperkey", VethOptions::default()).expect("lab");
    let recv_addr = SocketAddrV4::new(pair.ip_b(), 7470);
    let send_addr = SocketAddrV4::new(pair.ip_a(), 7470);
    // the receiver only allows `other`
    let rx = start(
        &pair.b,
        "recv",
        IF_B,
        recv_addr,
        send_addr,
        &rkey,
        &dwcp_secure::public_path(&other),
        &dest,
        "1",
    );
    std::thread::sleep(Duration::from_millis(300));
    let tx = start(
        &pair.a,
        "send",
        IF_A,
        send_addr,
        recv_addr,
        &skey,
        &dwcp_secure::public_path(&rkey),
        &src,
        "0",
    );
    let (tx_ok, _, tx_err) = finish(tx);
    assert!(!tx_ok, "send with an unknown key succeeded");
    assert!(
        tx_err.contains("not in the allow-list"),
        "unclear error: {tx_err}"
    );
    let _ = Command::new("kill").arg(rx.id().to_string()).status();
    let (_, _, _) = finish(rx);
    assert!(
        !dest.exists(),
        "an object appeared without an authenticated peer"
    );
}
