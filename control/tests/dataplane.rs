//! End to end with the real dataplane: `dwcp-control` (this crate's binary) and `dwcp daemon`
//! (the engine's binary, found in the same target dir) attached to one region.
//!
//! - `rollback_while_a_job_runs_fails_no_transfer`: a job starts on v3 (rollout at 100 %), a
//!   rollback fires while it runs, the job still completes on v3 with every byte; the next
//!   job starts on v1.
//! - `flag_and_rollback_reach_the_dataplane`: flag changes and rollbacks, each timed from just
//!   before the HTTP request to the moment the daemon first saw the new table generation
//!   (`observed_mono_ns` in its "table updated" log line; CLOCK_MONOTONIC is shared by both
//!   processes). A few samples with a loose bound here; the benchmark run of the same code
//!   (`DWCP_LATENCY_SAMPLES=N ... -- --ignored latency_benchmark`) prints
//!   min/median/p99/max for docs/perf-control.md.
//!
//! Without the `dwcp` binary (build it with `cargo build --release -p dwcp-engine`) the tests
//! print SKIPPED; under CI (`CI` set) they fail instead.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, shm_path};
use serde_json::{Value, json};

fn dwcp_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DWCP_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/dataplane-<hash>
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let target = profile_dir.parent()?;
    [
        profile_dir.join("dwcp"),
        target.join("release/dwcp"),
        target.join("debug/dwcp"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn need_dwcp(test: &str) -> Option<PathBuf> {
    let bin = dwcp_bin();
    if bin.is_none() {
        eprintln!(
            "SKIPPED {test}: the dwcp binary is not built in this target dir \
             (cargo build --release -p dwcp-engine) and DWCP_BIN is unset"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "dwcp binary missing under CI"
        );
    }
    bin
}

fn port_base(test: u16) -> u16 {
    30_000 + (std::process::id() % 1000) as u16 * 10 + test * 4
}

/// Table generations the daemon reported seeing, with the CLOCK_MONOTONIC time it first did.
type Seen = Arc<Mutex<HashMap<u64, u64>>>;

struct Daemon {
    child: Child,
    seen: Seen,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn spawn(bin: &Path, shm: &Path, objects: &Path, port: u16) -> Self {
        let mut child = Proc::new(bin)
            .arg("daemon")
            .arg("--shm")
            .arg(shm)
            .arg("--objects")
            .arg(objects)
            .args(["--iface", "lo", "--backend", "udp", "--core", "0"])
            .args(["--workers", "2", "--timeout", "60"])
            .arg("--local")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dwcp daemon");
        let seen: Seen = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr = child.stderr.take().expect("stderr");
        let (s2, l2) = (seen.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("table updated") {
                    let g = field(&line, "generation");
                    let t = field(&line, "observed_mono_ns");
                    if let (Some(g), Some(t)) = (g, t) {
                        s2.lock().unwrap().entry(g).or_insert(t);
                    }
                }
                l2.lock().unwrap().push(line);
            }
        });
        Self { child, seen, log }
    }

    /// Waits until the daemon reports generation `g` (or later); returns when it saw it.
    fn observed(&self, g: u64, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| **k >= g)
                .map(|(_, t)| *t)
                .min()
            {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM so running jobs end and the side is released; then reap.
        let _ = Proc::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=<u64>` from a tracing log line (ANSI escapes, if any, stripped).
fn field(line: &str, key: &str) -> Option<u64> {
    let clean: String = {
        let mut out = String::with_capacity(line.len());
        let mut esc = false;
        for c in line.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    let pat = format!("{key}=");
    let at = clean.find(&pat)? + pat.len();
    clean[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn wait_ready(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/readyz").status().as_u16() != 200 {
        assert!(Instant::now() < deadline, "/readyz not 200 with the daemon");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn object(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn spawn_recv(bin: &Path, dest: &Path, port: u16, peer: u16) -> Child {
    Proc::new(bin)
        .args(["--json", "recv", "--iface", "lo", "--backend", "udp"])
        .args(["--timeout", "60", "--core", "1"])
        .arg("--local")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--peer")
        .arg(format!("127.0.0.1:{peer}"))
        .arg(dest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp recv")
}

fn job(s: &Server, id: u64) -> Value {
    s.get_json(&format!("/v1/jobs/{id}"))
}

fn wait_job_end(s: &Server, id: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let j = job(s, id);
        if ["completed", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric_sum(s: &Server, name: &str) -> u64 {
    metric_sum_f64(s, name) as u64
}

fn metric_sum_f64(s: &Server, name: &str) -> f64 {
    let text = s.get("/metrics").text().unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
}

fn post_plan(s: &Server, stages: &[f64]) {
    let r = s.post(
        "/v1/rollout/plan",
        &json!({"stages": stages, "hold_ms": 3_600_000, "breach_window_ms": 3_600_000}),
    );
    assert_eq!(r.status().as_u16(), 200, "plan: {}", r.text().unwrap());
}

#[test]
fn rollback_while_a_job_runs_fails_no_transfer() {
    let Some(bin) = need_dwcp("rollback_while_a_job_runs_fails_no_transfer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir(&objects).unwrap();
    let s = Server::start(dir.path());
    let port = port_base(0);
    let d = Daemon::spawn(&bin, &shm_path(dir.path()), &objects, port);
    wait_ready(&s);

    // Every flow on v3.
    post_plan(&s, &[100.0]);
    assert_eq!(s.get_json("/v1/rollout")["pct_bp"], 10_000);

    let data = object(128 << 20);
    std::fs::write(objects.join("7"), &data).unwrap();
    let dest = dir.path().join("received");
    let recv = spawn_recv(&bin, &dest, port + 2, port);
    std::thread::sleep(Duration::from_millis(200));
    let r = s.post(
        "/v1/jobs",
        &json!({"kind": "object", "size_bytes": data.len(), "object_id": 7,
                "peer": format!("127.0.0.1:{}", port + 2)}),
    );
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().unwrap()["id"].as_u64().unwrap();

    // Roll back as soon as the dataplane reports the job running (it chose v3 and started
    // sending); the status read right after the rollback must still be "running".
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = job(&s, id);
        if j["status"] == "running" {
            break;
        }
        assert!(
            j["status"] != "completed",
            "job ended before the rollback: {j}"
        );
        assert!(Instant::now() < deadline, "job never ran: {j}");
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = s.post_empty("/v1/rollout/rollback");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let gen_after = s.get_json("/v1/rollout")["generation"].as_u64().unwrap();
    let at_rollback = job(&s, id);
    assert!(
        d.observed(gen_after, Duration::from_secs(5)).is_some(),
        "daemon never saw the rollback table"
    );
    let still_running = at_rollback["status"] == "running";

    let j = wait_job_end(&s, id, Duration::from_secs(60));
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["progress"]["bytes_done"], data.len() as u64, "{j}");
    let out = recv.wait_with_output().unwrap();
    assert!(out.status.success(), "dwcp recv: {}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).expect("recv JSON");
    assert_eq!(
        report["version"], 3,
        "the job kept v3 through the rollback: {report}"
    );
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "received object differs"
    );
    assert!(
        still_running,
        "the rollback must fire while the job runs (status then: {at_rollback})"
    );
    let rollout = s.get_json("/v1/rollout");
    assert_eq!(rollout["state"], "rolled_back");
    assert_eq!(rollout["pct_bp"], 0);

    // After the rollback a new flow starts on v1.
    std::fs::write(objects.join("8"), &data[..1 << 20]).unwrap();
    let dest2 = dir.path().join("received2");
    let recv2 = spawn_recv(&bin, &dest2, port + 3, port);
    std::thread::sleep(Duration::from_millis(200));
    let r = s.post(
        "/v1/jobs",
        &json!({"kind": "object", "size_bytes": 1 << 20, "object_id": 8,
                "peer": format!("127.0.0.1:{}", port + 3)}),
    );
    assert_eq!(r.status().as_u16(), 201);
    let id2 = r.json::<Value>().unwrap()["id"].as_u64().unwrap();
    let j2 = wait_job_end(&s, id2, Duration::from_secs(30));
    assert_eq!(j2["status"], "completed", "{j2}");
    let out2 = recv2.wait_with_output().unwrap();
    let report2: Value = serde_json::from_slice(&out2.stdout).expect("recv JSON");
    assert_eq!(report2["version"], 1, "new flow after rollback: {report2}");
    assert_eq!(metric_sum(&s, "dwcp_worker_flows_v3_total"), 1);
    assert_eq!(metric_sum(&s, "dwcp_worker_flows_v1_total"), 1);
    // the sending workers' CPU reached /metrics: time, and time per object byte
    let cpu = metric_sum_f64(&s, "dwcp_worker_cpu_seconds_total");
    let per_byte = metric_sum_f64(&s, "dwcp_worker_cpu_seconds_per_byte");
    assert!(cpu > 0.0 && cpu < 60.0, "cpu seconds {cpu}");
    assert!(
        per_byte > 0.0 && per_byte < 1e-6,
        "cpu seconds per byte {per_byte}"
    );
    let starts = d.log_lines("job starting");
    assert_eq!(starts.len(), 2, "{starts:?}");
}

/// Samples of (flag change, rollback) latency in µs: HTTP request start -> the daemon saw
/// the generation, and HTTP request start -> response received.
struct Samples {
    /// Table published by the control process -> the daemon saw it (the shm path alone).
    flag_shm: Vec<f64>,
    rollback_shm: Vec<f64>,
    flag_observed: Vec<f64>,
    flag_http: Vec<f64>,
    rollback_observed: Vec<f64>,
    rollback_http: Vec<f64>,
}

/// A `Server` whose debug log ("table published ... published_mono_ns") is collected.
fn start_logged(dir: &Path) -> (Server, Seen) {
    common::write_config(dir, "");
    let mut child = Proc::new(env!("CARGO_BIN_EXE_dwcp-control"))
        .arg("--config")
        .arg(common::config_path(dir))
        .env("RUST_LOG", "warn,dwcp_control::core=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let published: Seen = Arc::default();
    let p2 = published.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("table published")
                && let (Some(g), Some(t)) = (
                    field(&line, "generation"),
                    field(&line, "published_mono_ns"),
                )
            {
                p2.lock().unwrap().entry(g).or_insert(t);
            }
        }
    });
    let token = std::fs::read_to_string(dir.join("state/token")).unwrap();
    let server = Server {
        child,
        base: format!("http://{addr}"),
        token,
        dir: dir.to_owned(),
        http: reqwest::blocking::Client::new(),
    };
    (server, published)
}

fn measure(flags: usize, rollbacks: usize) -> Samples {
    let bin = dwcp_bin().expect("dwcp binary");
    let dir = tempfile::tempdir().unwrap();
    let (s, published) = start_logged(dir.path());
    let d = Daemon::spawn(&bin, &shm_path(dir.path()), dir.path(), port_base(1));
    wait_ready(&s);
    let mut out = Samples {
        flag_shm: vec![],
        rollback_shm: vec![],
        flag_observed: vec![],
        flag_http: vec![],
        rollback_observed: vec![],
        rollback_http: vec![],
    };
    let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
    for i in 0..flags {
        let body = json!({"kind": "percent", "enabled": true, "percent": (i % 100) as f64});
        let t0 = dwcp_shm::monotonic_ns();
        let r = s.put("/v1/flags/latency.probe", &body);
        let t1 = dwcp_shm::monotonic_ns();
        assert_eq!(r.status().as_u16(), 200);
        let g = r.json::<Value>().unwrap()["generation"].as_u64().unwrap();
        let seen = d
            .observed(g, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("daemon never saw flag generation {g}"));
        out.flag_observed.push(us(t0, seen));
        let pubd = wait_published(&published, g);
        out.flag_shm.push(us(pubd, seen));
        out.flag_http.push(us(t0, t1));
        // Let the idle daemon fall back asleep, as between real operator actions.
        std::thread::sleep(Duration::from_millis(7));
    }
    for _ in 0..rollbacks {
        post_plan(&s, &[10.0, 100.0]);
        std::thread::sleep(Duration::from_millis(7));
        let t0 = dwcp_shm::monotonic_ns();
        let r = s.post_empty("/v1/rollout/rollback");
        let t1 = dwcp_shm::monotonic_ns();
        assert_eq!(r.status().as_u16(), 200);
        let g = s.get_json("/v1/rollout")["generation"].as_u64().unwrap();
        let seen = d
            .observed(g, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("daemon never saw rollback generation {g}"));
        out.rollback_observed.push(us(t0, seen));
        let pubd = wait_published(&published, g);
        out.rollback_shm.push(us(pubd, seen));
        out.rollback_http.push(us(t0, t1));
        std::thread::sleep(Duration::from_millis(7));
    }
    out
}

fn wait_published(published: &Seen, g: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(t) = published.lock().unwrap().get(&g) {
            return *t;
        }
        assert!(
            Instant::now() < deadline,
            "no 'table published' line for {g}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn summary(name: &str, v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "{name:<34} n={:<5} min {:>8.1} µs  median {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        v.len(),
        v[0],
        q(0.5),
        q(0.99),
        v[v.len() - 1]
    )
}

#[test]
fn flag_and_rollback_reach_the_dataplane() {
    if need_dwcp("flag_and_rollback_reach_the_dataplane").is_none() {
        return;
    }
    let mut s = measure(20, 5);
    for (name, v) in [
        ("flag PUT -> daemon saw it", &mut s.flag_observed),
        ("rollback POST -> daemon saw it", &mut s.rollback_observed),
        ("flag: table published -> daemon", &mut s.flag_shm),
        ("rollback: table published -> daemon", &mut s.rollback_shm),
    ] {
        let line = summary(name, v);
        eprintln!("{line}");
        // Loose bound (the machine may be busy): the daemon is woken by the command ring's
        // doorbell, not by its 5 ms poll; a lost wake-up would still show up within 5 ms.
        let median = v[v.len() / 2];
        assert!(median < 50_000.0, "{line}");
    }
}

#[test]
#[ignore = "benchmark: DWCP_LATENCY_SAMPLES=N cargo test --release -p dwcp-control --test dataplane -- --ignored --nocapture"]
fn latency_benchmark() {
    let n: usize = std::env::var("DWCP_LATENCY_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut s = measure(n, n / 2);
    println!(
        "{}",
        summary("flag PUT -> daemon saw it", &mut s.flag_observed)
    );
    println!("{}", summary("flag PUT -> HTTP response", &mut s.flag_http));
    println!(
        "{}",
        summary("flag: table published -> daemon", &mut s.flag_shm)
    );
    println!(
        "{}",
        summary("rollback POST -> daemon saw it", &mut s.rollback_observed)
    );
    println!(
        "{}",
        summary("rollback POST -> HTTP response", &mut s.rollback_http)
    );
    println!(
        "{}",
        summary("rollback: table published -> daemon", &mut s.rollback_shm)
    );
}
