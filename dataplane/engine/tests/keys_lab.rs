//! Keys on every path, over a real veth pair between two network namespaces (needs root):
//! a keyed `dwcp daemon` job to a keyed `dwcp recv` completes SEALED; a receiver that does
//! not trust the daemon's key, and a receiver without keys, each fail their job with
//! error code 9 (authentication) and leave nothing at the destination; a keyed
//! `dwcp migrate send|recv` (with a manifest fetched destination -> source) completes
//! SEALED, and a migration with a key the destination does not trust fails and leaves the
//! destination's image as it was.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwcp_shm::{Event, Geometry, JobKind, JobOutcome, JobSpec, Region};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_dwcp");
const PORT: u16 = 7470;

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let out = Command::new(BIN)
        .arg("keygen")
        .arg("--out")
        .arg(&p)
        .output()
        .expect("run dwcp keygen");
    assert!(out.status.success(), "{out:?}");
    p
}

fn pub_of(key: &Path) -> PathBuf {
    dwcp_secure::public_path(key)
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            if (i / 4096) % 4 == 0 {
                0
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn stop(mut c: Child) -> std::process::Output {
    let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    c.wait_with_output().expect("collect output")
}

/// `dwcp recv` in `ns` on 10.77.0.2 with `keys`, writing `dest`.
fn spawn_recv(ns: &dwcp_netns::Netns, dest: &Path, peer: Ipv4Addr, keys: &[&Path]) -> Child {
    let mut c = ns.command(BIN);
    c.args([
        "--json",
        "recv",
        "--iface",
        dwcp_netns::IF_B,
        "--backend",
        "udp",
    ])
    .args(["--core", "1", "--timeout", "20"])
    .arg("--local")
    .arg(format!("10.77.0.2:{PORT}"))
    .arg("--peer")
    .arg(format!("{peer}:{PORT}"));
    key_args(&mut c, keys);
    c.arg(dest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp recv")
}

/// `[key, peer-pub...]` as flags (empty: no keys).
fn key_args(c: &mut Command, keys: &[&Path]) {
    if let Some((k, peers)) = keys.split_first() {
        c.arg("--key").arg(k);
        for p in peers {
            c.arg("--peer-pub").arg(p);
        }
    }
}

fn wait_finished(ctl: &mut dwcp_shm::ControlSide, job: u64, seen: &mut Vec<Event>) -> Event {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(r) = ctl.events.pop() {
            let ev = r.msg.expect("event decodes");
            seen.push(ev);
            if matches!(ev, Event::JobFinished { job_id, .. } if job_id == job) {
                return ev;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {job}: no JobFinished; events: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn job(id: u64, object: u64, len: usize) -> JobSpec {
    JobSpec {
        job_id: id,
        kind: JobKind::Object,
        object_id: object,
        total_bytes: len as u64,
        peer_ipv4: u32::from(Ipv4Addr::new(10, 77, 0, 2)),
        peer_port: PORT,
        max_rounds: 0,
    }
}

/// Nothing of the object reached `dest`: no file, and no part file with data.
fn assert_nothing_written(dest: &Path) {
    assert!(!dest.exists(), "{} exists", dest.display());
    let mut part = dest.as_os_str().to_owned();
    part.push(".dwcp-part");
    let len = std::fs::metadata(PathBuf::from(part)).map_or(0, |m| m.len());
    assert_eq!(len, 0, "part file of {} holds data", dest.display());
}

#[test]
fn keyed_daemon_jobs_are_sealed_and_a_key_mismatch_fails_with_code_9() {
    if !dwcp_netns::privileged_test_guard("keyed_daemon_jobs_are_sealed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (dk, rk, rogue) = (
        keygen(&keys, "daemon.key"),
        keygen(&keys, "recv.key"),
        keygen(&keys, "rogue.key"),
    );
    let objects = dir.path().join("objects");
    std::fs::create_dir(&objects).unwrap();
    let obj = data(3 << 20, 7);
    std::fs::write(objects.join("5"), &obj).unwrap();
    let shm = dir.path().join("region");
    let region = Region::create_or_open(&shm, Geometry::default()).unwrap();
    let mut ctl = region.attach_control().unwrap();
    let pair = dwcp_netns::Pair::new("keysd", dwcp_netns::VethOptions::default()).unwrap();

    let mut d = pair.a.command(BIN);
    d.args([
        "--json",
        "daemon",
        "--iface",
        dwcp_netns::IF_A,
        "--backend",
        "udp",
    ])
    .args(["--core", "0", "--timeout", "20"])
    .arg("--shm")
    .arg(&shm)
    .arg("--objects")
    .arg(&objects)
    .arg("--local")
    .arg(format!("10.77.0.1:{PORT}"));
    key_args(&mut d, &[&dk, &pub_of(&rk)]);
    let daemon = d
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp daemon");
    let mut seen = Vec::new();

    // 1. Both keyed, each trusting the other: completes, SEALED at the receiver.
    let dest = dir.path().join("ok.bin");
    let recv = spawn_recv(&pair.b, &dest, pair.ip_a(), &[&rk, &pub_of(&dk)]);
    std::thread::sleep(Duration::from_millis(300));
    ctl.commands
        .push(&dwcp_shm::Command::CreateJob(job(1, 5, obj.len())))
        .unwrap();
    let ev = wait_finished(&mut ctl, 1, &mut seen);
    assert!(
        matches!(
            ev,
            Event::JobFinished {
                outcome: JobOutcome::Completed,
                error_code: 0,
                ..
            }
        ),
        "{seen:?}"
    );
    let out = recv.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let suite = r["security"]["sealed"].as_str().unwrap_or_default();
    assert!(
        suite == "aes-128-gcm" || suite == "chacha20-poly1305",
        "receiver not sealed: {r}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), obj);

    // 2. The receiver trusts another key: the handshake is refused (CLOSE 5), code 9.
    let dest2 = dir.path().join("mismatch.bin");
    let recv = spawn_recv(&pair.b, &dest2, pair.ip_a(), &[&rk, &pub_of(&rogue)]);
    std::thread::sleep(Duration::from_millis(300));
    ctl.commands
        .push(&dwcp_shm::Command::CreateJob(job(2, 5, obj.len())))
        .unwrap();
    let ev = wait_finished(&mut ctl, 2, &mut seen);
    assert!(
        matches!(
            ev,
            Event::JobFinished {
                outcome: JobOutcome::Failed,
                error_code: dwcp_engine::daemon::error_code::AUTH,
                bytes_done: 0,
                ..
            }
        ),
        "{ev:?}"
    );
    stop(recv);
    assert_nothing_written(&dest2);

    // 3. A receiver without keys: the keyed daemon refuses to go unsealed, code 9.
    let dest3 = dir.path().join("plain.bin");
    let recv = spawn_recv(&pair.b, &dest3, pair.ip_a(), &[]);
    std::thread::sleep(Duration::from_millis(300));
    ctl.commands
        .push(&dwcp_shm::Command::CreateJob(job(3, 5, obj.len())))
        .unwrap();
    let ev = wait_finished(&mut ctl, 3, &mut seen);
    assert!(
        matches!(
            ev,
            Event::JobFinished {
                outcome: JobOutcome::Failed,
                error_code: dwcp_engine::daemon::error_code::AUTH,
                ..
            }
        ),
        "{ev:?}"
    );
    stop(recv);
    assert_nothing_written(&dest3);

    let out = stop(daemon);
    assert!(out.status.success(), "{out:?}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(s["jobs_sealed"], 1, "{s}");
    assert_eq!(s["jobs_auth_failed"], 2, "{s}");
}

fn migrate(ns: &dwcp_netns::Netns, side: &str, local: &str, peer: &str, keys: &[&Path]) -> Command {
    let mut c = ns.command(BIN);
    c.args([
        "--json",
        "migrate",
        side,
        "--backend",
        "udp",
        "--timeout",
        "20",
    ])
    .args([
        "--iface",
        if side == "send" {
            dwcp_netns::IF_A
        } else {
            dwcp_netns::IF_B
        },
    ])
    .args(["--core", if side == "send" { "0" } else { "1" }])
    .arg("--local")
    .arg(format!("{local}:{PORT}"))
    .arg("--peer")
    .arg(format!("{peer}:{PORT}"))
    .env("RUST_LOG", "info");
    key_args(&mut c, keys);
    c
}

#[test]
fn keyed_migration_is_sealed_both_ways_and_an_untrusted_source_changes_nothing() {
    if !dwcp_netns::privileged_test_guard("keyed_migration_is_sealed_both_ways") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (sk, dk, rogue) = (
        keygen(&keys, "src.key"),
        keygen(&keys, "dst.key"),
        keygen(&keys, "rogue.key"),
    );
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst").join("vm.img");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let new = data(4 << 20, 11);
    // The destination holds an older version: the source fetches its manifest (a DWCP
    // transfer destination -> source, so the source's receive side is keyed too).
    let mut old = new.clone();
    for b in old.iter_mut().step_by(65_536) {
        *b ^= 0x5a;
    }
    std::fs::write(&src, &new).unwrap();
    std::fs::write(&dst, &old).unwrap();
    let pair = dwcp_netns::Pair::new("keysm", dwcp_netns::VethOptions::default()).unwrap();
    let (a, b) = (pair.ip_a().to_string(), pair.ip_b().to_string());

    // An untrusted source key: the destination refuses the handshake; its image stays.
    let recv = migrate(&pair.b, "recv", &b, &a, &[&dk, &pub_of(&sk)])
        .arg(&dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = migrate(&pair.a, "send", &a, &b, &[&rogue, &pub_of(&dk)])
        .arg(&src)
        .output()
        .unwrap();
    assert!(!out.status.success(), "untrusted source migrated: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("authentication") || err.contains("code 5"),
        "no clear authentication error: {err}"
    );
    stop(recv);
    assert_eq!(
        std::fs::read(&dst).unwrap(),
        old,
        "destination image changed"
    );

    // Trusted keys both ways: completes, every move SEALED.
    let recv = migrate(&pair.b, "recv", &b, &a, &[&dk, &pub_of(&sk)])
        .arg(&dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = migrate(&pair.a, "send", &a, &b, &[&sk, &pub_of(&dk)])
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sealed migration failed: {err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("source JSON");
    assert!(
        r["manifest_bytes"].as_u64().unwrap_or(0) > 0,
        "no manifest moved: {r}"
    );
    assert!(
        !err.contains("unsealed") && (err.contains("aes-128-gcm") || err.contains("chacha20")),
        "round moves not reported SEALED: {err}"
    );
    let rout = recv.wait_with_output().unwrap();
    assert!(rout.status.success(), "{rout:?}");
    assert_eq!(std::fs::read(&dst).unwrap(), new);
}
