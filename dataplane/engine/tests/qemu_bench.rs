//! Benchmark (ignored by default): a QEMU live migration carried by two appliances against
//! QEMU's own TCP migration (with multifd + zstd, and plain), side by side in one run, over the
//! namespace lab built by `dwcp-lab up` (direct veth, and the WAN emulator at 50 ms RTT,
//! 1 % loss, 200 Mbit/s). Prints a Markdown table (min / median / max of QEMU's `total-time`).
//!
//! ```text
//! cargo build --release -p dwcp-bench --bin dwcp-lab
//! DWCP_LAB=target/release/dwcp-lab QEMU_BENCH_REPS=3 \
//!   cargo test -p dwcp-engine --release --test qemu_bench -- --ignored --nocapture
//! ```
//! Environment: `QEMU_BENCH_REPS` (3), `QEMU_BENCH_PROFILES` (`direct,wan`),
//! `QEMU_BENCH_METHODS` (`dwcp,qemu-multifd-zstd,qemu-tcp`), `QEMU_BENCH_DATA_MIB` (32),
//! `QEMU_BENCH_CHANNELS` (multifd channels, 4), `QEMU_BENCH_SEGMENT_KIB` and
//! `QEMU_BENCH_IN_FLIGHT` (carrier defaults), `QEMU_BENCH_CARRIER_ARGS` (more `stream-send`
//! options, e.g. `--in-flight 4`), `QEMU_BENCH_KEEP` (see `keep_logs`).

mod qemu_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwcp_netns::{IF_A, IF_B};
use qemu_support::*;
use serde_json::{Value, json};

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

struct LabProc {
    child: Child,
    a: String,
    b: String,
    ip_a: String,
    ip_b: String,
}

impl Drop for LabProc {
    fn drop(&mut self) {
        // SIGINT lets dwcp-lab tear its namespaces down.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn lab_up(profile: &str) -> LabProc {
    let bin = env_or("DWCP_LAB", "target/release/dwcp-lab");
    let mut c = Command::new(&bin);
    c.args([
        "up",
        "--profile",
        profile,
        "--tag",
        "qb",
        "--stats-secs",
        "0",
    ]);
    if profile == "wan" {
        c.args(["--delay-ms", "25", "--loss", "0.01", "--rate-mbit", "200"]);
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (set DWCP_LAB)"));
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let (mut a, mut b) = (None, None);
    let mut line = String::new();
    while a.is_none() || b.is_none() {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "dwcp-lab ended early");
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["A:", n, ip, ..] => a = Some((n.to_string(), ip.to_string())),
            ["B:", n, ip, ..] => b = Some((n.to_string(), ip.to_string())),
            _ => {}
        }
    }
    std::thread::spawn(move || for _ in r.lines() {});
    let ((a, ip_a), (b, ip_b)) = (a.unwrap(), b.unwrap());
    LabProc {
        child,
        a,
        b,
        ip_a,
        ip_b,
    }
}

struct Run {
    /// From `migrate` to the destination seen running.
    e2e_ms: f64,
    /// From the source seen stopped to the destination seen running.
    pause_ms: f64,
    total_ms: f64,
    downtime_ms: f64,
    transferred: u64,
    wire: Option<u64>,
}

fn carrier(ns: &str, args: Vec<String>, log: &std::path::Path) -> Proc {
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_dwcp")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn wait_exit(p: &mut Proc, t: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < t {
        if let Some(st) = p.0.try_wait().unwrap() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn one(lab: &LabProc, method: &str, data_end: u32, mem: u32, channels: u32) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let guest = write_guest(dir.path(), data_end);
    let port = 4500;
    // The carrier's own defaults unless these are set.
    let mut tuning: Vec<String> = Vec::new();
    for (var, flag) in [
        ("QEMU_BENCH_SEGMENT_KIB", "--segment-kib"),
        ("QEMU_BENCH_IN_FLIGHT", "--in-flight"),
    ] {
        if let Ok(v) = std::env::var(var) {
            tuning.extend([flag.to_string(), v]);
        }
    }
    let unlimited = json!({"max-bandwidth": 100u64 << 30});
    let (dst, mut procs, uri) = match method {
        "dwcp" => {
            let dst = Vm::start(
                &lab.b,
                dir.path(),
                "dst",
                &guest,
                mem,
                &["-incoming", &format!("tcp:127.0.0.1:{port}")],
            );
            let port_args = |iface: &str, l: &str, p: &str, core: &str| -> Vec<String> {
                [
                    "--iface",
                    iface,
                    "--local",
                    &format!("{l}:7470"),
                    "--peer",
                    &format!("{p}:7470"),
                    "--core",
                    core,
                ]
                .iter()
                .map(|s| s.to_string())
                .chain(tuning.iter().cloned())
                .collect()
            };
            let extra: Vec<String> = env_or("QEMU_BENCH_CARRIER_ARGS", "")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let mut r = vec!["stream-recv".to_string()];
            r.extend(port_args(IF_B, &lab.ip_b, &lab.ip_a, "1"));
            r.extend(["--connect".into(), format!("127.0.0.1:{port}")]);
            let recv = carrier(&lab.b, r, &dir.path().join("recv.log"));
            let mut s = vec!["stream-send".to_string()];
            s.extend(port_args(IF_A, &lab.ip_a, &lab.ip_b, "0"));
            s.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
            s.extend(extra);
            let send = carrier(&lab.a, s, &dir.path().join("send.log"));
            (dst, vec![send, recv], format!("tcp:127.0.0.1:{port}"))
        }
        _ => {
            let dst = Vm::start(
                &lab.b,
                dir.path(),
                "dst",
                &guest,
                mem,
                &["-incoming", "defer"],
            );
            let mut q = dst.qmp();
            if method == "qemu-multifd-zstd" {
                q.cmd(
                    "migrate-set-capabilities",
                    json!({"capabilities": [{"capability": "multifd", "state": true}]}),
                );
                q.cmd(
                    "migrate-set-parameters",
                    json!({"multifd-compression": "zstd", "multifd-channels": channels}),
                );
            }
            q.cmd(
                "migrate-incoming",
                json!({"uri": format!("tcp:{}:{port}", lab.ip_b)}),
            );
            (dst, vec![], format!("tcp:{}:{port}", lab.ip_b))
        }
    };
    let src = Vm::start(&lab.a, dir.path(), "src", &guest, mem, &[]);
    let mut q = src.qmp();
    wait_guest_ready(&mut q, Duration::from_secs(60));
    q.cmd("migrate-set-parameters", unlimited);
    if method == "qemu-multifd-zstd" {
        q.cmd(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "multifd", "state": true}]}),
        );
        q.cmd(
            "migrate-set-parameters",
            json!({"multifd-compression": "zstd", "multifd-channels": channels}),
        );
    }
    let mut d = dst.qmp();
    let t0 = Instant::now();
    q.cmd("migrate", json!({"uri": uri}));
    // Watch both sides: the source stopping and the destination running (2 ms apart at
    // most, plus a QMP round trip each).
    let mut stopped = None;
    let running = loop {
        let now = Instant::now();
        if stopped.is_none() && q.status() != "running" {
            stopped = Some(now);
        }
        if d.status() == "running" {
            break Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{method}: dst not running"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let stopped = stopped.unwrap_or(running);
    let m = q.wait_migration(Duration::from_secs(60));
    keep_logs(dir.path(), method, t0, stopped, running);
    assert_eq!(m["status"], "completed", "{method}: {m}");
    let c1 = d.word(COUNTER_ADDR);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        d.word(COUNTER_ADDR) > c1,
        "{method}: guest not running on the destination"
    );
    let mut wire = None;
    if method == "dwcp" {
        for p in &mut procs {
            assert!(
                wait_exit(p, Duration::from_secs(30)),
                "{method}: carrier failed"
            );
        }
        let log = std::fs::read_to_string(dir.path().join("send.log")).unwrap_or_default();
        wire = log
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v["bytes_on_wire"].as_u64());
    }
    Run {
        e2e_ms: (running - t0).as_secs_f64() * 1e3,
        pause_ms: (running - stopped).as_secs_f64() * 1e3,
        total_ms: m["total-time"].as_f64().unwrap_or(f64::NAN),
        downtime_ms: m["downtime"].as_f64().unwrap_or(f64::NAN),
        transferred: m["ram"]["transferred"].as_u64().unwrap_or(0),
        wire,
    }
}

/// With `QEMU_BENCH_KEEP=DIR`, copies the carriers' logs (run with
/// `RUST_LOG=dwcp_engine::stream=debug` for the per-segment timeline) to DIR/N-METHOD.*.log and
/// appends the run's wall-clock marks (migrate, source stopped, destination running; UTC
/// seconds) to DIR/marks.txt, so the carrier's timeline can be laid against the pause.
fn keep_logs(dir: &std::path::Path, method: &str, t0: Instant, stopped: Instant, running: Instant) {
    let Ok(keep) = std::env::var("QEMU_BENCH_KEEP") else {
        return;
    };
    let keep = std::path::PathBuf::from(keep);
    let _ = std::fs::create_dir_all(&keep);
    let now_i = Instant::now();
    let now_w = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let wall = |t: Instant| now_w - (now_i - t).as_secs_f64();
    let n = std::fs::read_dir(&keep).map(|d| d.count()).unwrap_or(0);
    for f in ["send.log", "recv.log"] {
        let _ = std::fs::copy(dir.join(f), keep.join(format!("{n}-{method}.{f}")));
    }
    let line = format!(
        "{n} {method} migrate {:.6} stopped {:.6} running {:.6}\n",
        wall(t0),
        wall(stopped),
        wall(running)
    );
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(keep.join("marks.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

#[test]
#[ignore = "benchmark: needs root, qemu-system-x86_64 and dwcp-lab; minutes of run time"]
fn qemu_migration_benchmark() {
    if !dwcp_netns::privileged_test_guard("qemu_migration_benchmark") || qemu_binary().is_none() {
        panic!("needs root and qemu-system-x86_64");
    }
    let reps: usize = env_or("QEMU_BENCH_REPS", "3").parse().unwrap();
    let data_mib: u32 = env_or("QEMU_BENCH_DATA_MIB", "32").parse().unwrap();
    let channels: u32 = env_or("QEMU_BENCH_CHANNELS", "4").parse().unwrap();
    let data_end = DATA_START + (data_mib << 20);
    let mem = ((data_end >> 20) + 32).next_power_of_two();
    let profiles = env_or("QEMU_BENCH_PROFILES", "direct,wan");
    let methods = env_or("QEMU_BENCH_METHODS", "dwcp,qemu-multifd-zstd,qemu-tcp");
    println!(
        "guest: {mem} MiB RAM, {data_mib} MiB data region (1/4 zero, 1/2 xorshift, 1/4 address words), 1 MiB hot region; {reps} reps; multifd channels {channels}"
    );
    println!(
        "\n| profile | method | migrate -> destination running, ms: min / median / max | source stopped -> destination running, ms: median (max) | QEMU total-time ms (median) | QEMU downtime ms (median) | QEMU ram.transferred (median) | DWCP bytes on wire (median) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for profile in profiles.split(',') {
        let lab = lab_up(profile);
        let mut rows: Vec<(String, Vec<Run>)> = methods
            .split(',')
            .map(|m| (m.to_string(), Vec::new()))
            .collect();
        for rep in 0..reps {
            // Interleaved: every method once per round, so drift hits all alike.
            for (m, runs) in &mut rows {
                let r = one(&lab, m, data_end, mem, channels);
                eprintln!(
                    "{profile} rep {rep} {m}: migrate->dst running {:.0} ms, src stopped->dst running {:.0} ms, QEMU total-time {} ms, downtime {} ms, transferred {}, wire {:?}",
                    r.e2e_ms, r.pause_ms, r.total_ms, r.downtime_ms, r.transferred, r.wire
                );
                runs.push(r);
            }
        }
        for (m, runs) in &rows {
            let col = |f: &dyn Fn(&Run) -> f64| stats(&runs.iter().map(f).collect::<Vec<_>>());
            let (lo, med, hi) = col(&|r| r.e2e_ms);
            let (_, pause, pause_hi) = col(&|r| r.pause_ms);
            let total = col(&|r| r.total_ms).1;
            let dt = col(&|r| r.downtime_ms).1;
            let tr = col(&|r| r.transferred as f64).1;
            let wire = runs
                .iter()
                .filter_map(|r| r.wire.map(|w| w as f64))
                .collect::<Vec<_>>();
            let wire = if wire.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", stats(&wire).1)
            };
            println!(
                "| {profile} | {m} | {lo:.0} / {med:.0} / {hi:.0} | {pause:.0} ({pause_hi:.0}) | {total:.0} | {dt:.0} | {tr:.0} | {wire} |"
            );
        }
    }
}
