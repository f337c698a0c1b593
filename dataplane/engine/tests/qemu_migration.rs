//! A real QEMU live migration carried by two appliances (`dwcp stream-send` in namespace A,
//! `dwcp stream-recv` in namespace B, joined by a veth pair): the source QEMU migrates to
//! `tcp:` on A's loopback, the destination QEMU listens with `-incoming tcp:` on B's loopback.
//! Needs root (namespaces) and `qemu-system-x86_64` (Debian package qemu-system-x86).

mod qemu_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dwcp_netns::{IF_A, IF_B, Pair, VethOptions};
use qemu_support::*;
use serde_json::{Value, json};

const MEM_MIB: u32 = 64;
const DATA_END: u32 = 0x0200_0000; // 16 MiB of data at 16..32 MiB
const SRC_PORT: u16 = 4445;
const DST_PORT: u16 = 4446;

/// The QEMU tests run one at a time: two TCG guests and four carriers on a small machine
/// would make their timing depend on each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn guard(name: &str) -> bool {
    if !dwcp_netns::privileged_test_guard(name) {
        return false;
    }
    if qemu_binary().is_none() {
        let msg =
            format!("test {name}: qemu-system-x86_64 missing (apt-get install qemu-system-x86)");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("{msg}; NOT RUN");
        return false;
    }
    true
}

fn carrier(ns: &str, args: &[String], log: &std::path::Path) -> Proc {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_dwcp")])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("CARRIER_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("starting dwcp");
    Proc(child)
}

struct Setup {
    _pair: Pair,
    dir: tempfile::TempDir,
    src: Vm,
    dst: Vm,
    send: Proc,
    recv: Proc,
}

fn setup(tag: &str, peer_idle_secs: u64) -> Setup {
    let pair = Pair::new(tag, VethOptions::default()).expect("veth pair");
    let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
    let dir = tempfile::tempdir().unwrap();
    let guest = write_guest(dir.path(), DATA_END);
    let dst = Vm::start(
        pair.b.name(),
        dir.path(),
        "dst",
        &guest,
        MEM_MIB,
        &["-incoming", &format!("tcp:127.0.0.1:{DST_PORT}")],
    );
    let common = |iface: &str, local, peer, core: &str| -> Vec<String> {
        vec![
            "--iface".into(),
            iface.into(),
            "--local".into(),
            format!("{local}:7470"),
            "--peer".into(),
            format!("{peer}:7470"),
            "--core".into(),
            core.into(),
            "--segment-kib".into(),
            "1024".into(),
            "--peer-idle-secs".into(),
            peer_idle_secs.to_string(),
        ]
    };
    let mut rargs = vec!["stream-recv".to_string()];
    rargs.extend(common(IF_B, ip_b, ip_a, "1"));
    rargs.extend(["--connect".into(), format!("127.0.0.1:{DST_PORT}")]);
    let recv = carrier(pair.b.name(), &rargs, &dir.path().join("recv.log"));
    let mut sargs = vec!["stream-send".to_string()];
    sargs.extend(common(IF_A, ip_a, ip_b, "0"));
    sargs.extend(["--listen".into(), format!("127.0.0.1:{SRC_PORT}")]);
    let send = carrier(pair.a.name(), &sargs, &dir.path().join("send.log"));
    let src = Vm::start(pair.a.name(), dir.path(), "src", &guest, MEM_MIB, &[]);
    Setup {
        _pair: pair,
        dir,
        src,
        dst,
        send,
        recv,
    }
}

fn log(s: &Setup, name: &str) -> String {
    std::fs::read_to_string(s.dir.path().join(name)).unwrap_or_default()
}

fn last_json(text: &str) -> Value {
    text.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .unwrap_or(Value::Null)
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            return Some(st);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn qemu_live_migration_through_the_appliance() {
    if !guard("qemu_live_migration_through_the_appliance") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let mut s = setup("qemu", 20);
    let mut src = s.src.qmp();
    wait_guest_ready(&mut src, Duration::from_secs(15));
    let before = src.word(COUNTER_ADDR);
    assert_eq!(src.status(), "running");

    src.cmd(
        "migrate",
        json!({"uri": format!("tcp:127.0.0.1:{SRC_PORT}")}),
    );
    let m = src.wait_migration(Duration::from_secs(20));
    assert_eq!(
        m["status"],
        "completed",
        "source QEMU: {m}\nsend log:\n{}\nrecv log:\n{}",
        log(&s, "send.log"),
        log(&s, "recv.log")
    );
    assert_eq!(
        src.status(),
        "postmigrate",
        "the source VM stops after switching over"
    );
    let src_total = m["ram"]["total"].as_u64().unwrap_or(0);
    assert!(src_total >= u64::from(MEM_MIB) << 20, "RAM migrated: {m}");

    // The destination resumes and keeps running the guest from where it stopped.
    let mut dst = s.dst.qmp();
    let start = Instant::now();
    while dst.status() != "running" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "destination not running: {}\n{}",
            dst.status(),
            log(&s, "dst.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c1 = dst.word(COUNTER_ADDR);
    std::thread::sleep(Duration::from_millis(300));
    let c2 = dst.word(COUNTER_ADDR);
    assert!(
        c1 >= before,
        "destination counter {c1} behind the source's {before}"
    );
    assert!(
        c2 > c1,
        "guest not running on the destination: {c1} -> {c2}"
    );
    assert_eq!(dst.word(MARK_ADDR), FILL_DONE);

    // Every byte of the data region arrived intact.
    let dump = s.dir.path().join("data.bin");
    dst.cmd(
        "pmemsave",
        json!({"val": DATA_START, "size": DATA_END - DATA_START, "filename": dump}),
    );
    let got = std::fs::read(&dump).unwrap();
    assert!(
        got == expected_data(DATA_END),
        "destination data region differs from what the guest wrote"
    );

    // Both carriers finish on their own, having carried the same bytes.
    let st = wait_exit(&mut s.send, Duration::from_secs(10)).expect("stream-send exits");
    assert!(st.success(), "stream-send: {st}\n{}", log(&s, "send.log"));
    let st = wait_exit(&mut s.recv, Duration::from_secs(10)).expect("stream-recv exits");
    assert!(st.success(), "stream-recv: {st}\n{}", log(&s, "recv.log"));
    let sj = last_json(&log(&s, "send.log"));
    let rj = last_json(&log(&s, "recv.log"));
    let carried = sj["stream_bytes"].as_u64().unwrap_or(0);
    assert!(carried > 8 << 20, "stream bytes {sj}");
    assert_eq!(rj["stream_bytes"].as_u64(), Some(carried), "{sj} vs {rj}");
    assert!(sj["segments"].as_u64().unwrap_or(0) >= 2, "{sj}");
    eprintln!(
        "migrated {carried} stream bytes in {} segments (max {} in flight), QEMU total {} ms, downtime {} ms; test {:.1} s",
        sj["segments"],
        sj["max_in_flight"],
        m["total-time"],
        m["downtime"],
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_failed_carry_fails_the_migration_and_the_source_keeps_running() {
    if !guard("a_failed_carry_fails_the_migration_and_the_source_keeps_running") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut s = setup("qemufail", 2);
    let mut src = s.src.qmp();
    wait_guest_ready(&mut src, Duration::from_secs(15));
    // Slow the migration down so the carrier can be killed in the middle of it.
    src.cmd(
        "migrate-set-parameters",
        json!({"max-bandwidth": 4u64 << 20}),
    );
    src.cmd(
        "migrate",
        json!({"uri": format!("tcp:127.0.0.1:{SRC_PORT}")}),
    );
    // Wait until the destination QEMU is loading the stream (the carrier delivered bytes).
    let mut dst = s.dst.qmp();
    let start = Instant::now();
    loop {
        let m = dst.cmd("query-migrate", json!({}));
        if m["status"] == "active" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "incoming not active: {m}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    // The source appliance dies mid-stream.
    s.send.0.kill().unwrap();
    let _ = s.send.0.wait();

    let m = src.wait_migration(Duration::from_secs(10));
    assert_eq!(m["status"], "failed", "source QEMU: {m}");
    assert_eq!(src.status(), "running", "the source VM keeps running");
    let c1 = src.word(COUNTER_ADDR);
    std::thread::sleep(Duration::from_millis(200));
    assert!(src.word(COUNTER_ADDR) > c1, "source guest still advancing");

    // The destination appliance gives up (peer silent), closes QEMU's incoming connection
    // without the end of the stream, and the destination QEMU never runs the guest.
    let st = wait_exit(&mut s.recv, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "stream-recv still running:\n{}\nsend:\n{}",
            log(&s, "recv.log"),
            log(&s, "send.log")
        )
    });
    assert!(
        !st.success(),
        "stream-recv must fail: {}",
        log(&s, "recv.log")
    );
    let start = Instant::now();
    let st = loop {
        if let Some(st) = s.dst.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "destination QEMU still up: {}\nrecv log:\n{}",
            dst.status(),
            log(&s, "recv.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !st.success(),
        "destination QEMU must fail the incoming migration"
    );
    let dlog = log(&s, "dst.log");
    assert!(
        dlog.contains("load of migration failed") || dlog.contains("rror"),
        "destination log: {dlog}"
    );
}
