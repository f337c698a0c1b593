//! The real `dwcp daemon` process against a region in a temporary directory, with this test
//! acting as the control process (`attach_control`): ping, table acknowledgements, a real job
//! sent to a real `dwcp recv` over loopback (UDP backend), cancellation, clean SIGTERM
//! shutdown, and SIGKILL + restart with a command queued while the daemon was down.
//!
//! Needs no privileges.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use dwcp_shm::{
    AckStatus, Command, ControlSide, Event, FlagEntry, FlagKind, Geometry, JobKind, JobOutcome,
    JobSpec, Region, Role, RolloutEntry, RolloutState, Stat, TableContent, TransferMode,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn dwcp() -> Proc {
    Proc::new(env!("CARGO_BIN_EXE_dwcp"))
}

/// A per-test port base (tests in this file run in parallel).
fn port_base(test: u16) -> u16 {
    20_000 + (std::process::id() % 2000) as u16 * 10 + test * 3
}

fn spawn_daemon(shm: &Path, objects: &Path, port: u16) -> Child {
    dwcp()
        .arg("daemon")
        .arg("--shm")
        .arg(shm)
        .arg("--objects")
        .arg(objects)
        .args(["--iface", "lo", "--backend", "udp", "--core", "0"])
        .arg("--local")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--timeout")
        .arg("30")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp daemon")
}

fn spawn_recv(dest: &Path, port: u16, peer: u16) -> Child {
    dwcp()
        .args([
            "--json",
            "recv",
            "--iface",
            "lo",
            "--backend",
            "udp",
            "--timeout",
            "30",
            "--core",
            "1",
        ])
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

struct Lab {
    _dir: tempfile::TempDir,
    shm: PathBuf,
    objects: PathBuf,
    region: Region,
    ctl: ControlSide,
    seen: Vec<Event>,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let shm = dir.path().join("region");
        let objects = dir.path().join("objects");
        std::fs::create_dir(&objects).expect("objects dir");
        let region = Region::create_or_open(&shm, Geometry::default()).expect("region");
        let ctl = region.attach_control().expect("control side");
        Self {
            _dir: dir,
            shm,
            objects,
            region,
            ctl,
            seen: Vec::new(),
        }
    }

    fn push(&mut self, c: Command) -> u64 {
        self.ctl.commands.push(&c).expect("command ring full")
    }

    /// Reads events until one matches `pred` (every event read is kept in `seen`).
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(r) = self.ctl.events.pop() {
                let ev = r.msg.expect("event decodes");
                self.seen.push(ev);
                if pred(&ev) {
                    return ev;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; events so far: {:?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn ack(&mut self, seq: u64) -> (AckStatus, u32) {
        match self.wait_for(
            "ack",
            Duration::from_secs(10),
            |e| matches!(e, Event::Ack { cmd_seq, .. } if *cmd_seq == seq),
        ) {
            Event::Ack { status, detail, .. } => (status, detail),
            _ => unreachable!(),
        }
    }

    fn ping(&mut self, nonce: u64, timeout: Duration) {
        self.push(Command::Ping { nonce });
        self.wait_for("pong", timeout, |e| *e == Event::Pong { nonce });
    }
}

fn stop(mut child: Child, sig: Signal) -> std::process::ExitStatus {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit after {sig}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn object(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half compressible, half random.
            if (i / 4096) % 2 == 0 {
                (i / 4096) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

#[test]
fn ping_table_job_cancel_and_clean_shutdown() {
    let mut lab = Lab::new();
    let port = port_base(0);
    let daemon = spawn_daemon(&lab.shm, &lab.objects, port);
    lab.ping(1, Duration::from_secs(10));
    let dp = lab.region.side_status(Role::Dataplane);
    assert!(dp.alive, "dataplane side claimed: {dp:?}");
    assert_eq!(dp.pid, u64::from(daemon.id()));

    // Table: all flows on v3, one flag.
    let generation = lab
        .ctl
        .table
        .publish(&TableContent {
            rollout: RolloutEntry {
                state: RolloutState::Running,
                stage: 2,
                pct_bp: 10_000,
            },
            flags: vec![FlagEntry {
                name: "hde".into(),
                kind: FlagKind::Bool,
                enabled: true,
                pct_bp: 10_000,
                changed_generation: 0,
            }],
        })
        .expect("publish");
    let s1 = lab.push(Command::SetFlag {
        index: 0,
        generation,
        enabled: true,
        pct_bp: 10_000,
    });
    let s2 = lab.push(Command::RolloutStage {
        state: RolloutState::Running,
        stage: 2,
        pct_bp: 10_000,
        generation,
    });
    // A notification ahead of the table is refused.
    let s3 = lab.push(Command::SetFlag {
        index: 0,
        generation: generation + 5,
        enabled: true,
        pct_bp: 10_000,
    });
    assert_eq!(lab.ack(s1), (AckStatus::Ok, generation as u32));
    assert_eq!(lab.ack(s2), (AckStatus::Ok, generation as u32));
    assert_eq!(lab.ack(s3).0, AckStatus::Rejected);

    // A real job to a real receiver.
    let data = object(3 << 20);
    std::fs::write(lab.objects.join("42"), &data).expect("write object");
    let dest = lab.objects.join("received");
    let recv = spawn_recv(&dest, port + 1, port);
    std::thread::sleep(Duration::from_millis(200));
    let spec = JobSpec {
        job_id: 7,
        kind: JobKind::Object,
        object_id: 42,
        total_bytes: data.len() as u64,
        peer_ipv4: u32::from(Ipv4Addr::LOCALHOST),
        peer_port: port + 1,
        max_rounds: 1,
    };
    let s = lab.push(Command::CreateJob(spec));
    // Detail = protocol version offered: the rollout puts every flow on v3.
    assert_eq!(lab.ack(s), (AckStatus::Ok, 3));
    let fin = lab.wait_for("job 7 finished", Duration::from_secs(30), |e| {
        matches!(e, Event::JobFinished { job_id: 7, .. })
    });
    assert_eq!(
        fin,
        Event::JobFinished {
            job_id: 7,
            outcome: JobOutcome::Completed,
            bytes_done: data.len() as u64,
            error_code: 0,
        }
    );
    let progress: Vec<_> = lab
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::JobProgress {
                job_id: 7,
                bytes_done,
                bytes_total,
                round,
                mode,
                ..
            } => Some((*bytes_done, *bytes_total, *round, *mode)),
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty(), "JobProgress before JobFinished");
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "{progress:?}"
    );
    let last = progress.last().copied().expect("progress");
    assert_eq!(last.0, data.len() as u64);
    assert_eq!(last.1, data.len() as u64);
    assert_eq!(last.2, 1);
    assert_ne!(last.3, TransferMode::Unknown);
    let modes: Vec<_> = lab
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::WorkerMode { worker: 0, mode } => Some(*mode),
            _ => None,
        })
        .collect();
    assert_eq!(
        modes.last(),
        Some(&last.3),
        "WorkerMode follows the job's mode"
    );
    let out = recv.wait_with_output().expect("recv");
    assert!(out.status.success(), "dwcp recv exited with {}", out.status);
    assert!(
        std::fs::read(&dest).expect("received file") == data,
        "received file differs"
    );

    // The worker statistics block shows the job.
    let w0 = lab
        .region
        .stats_reader()
        .snapshot(0)
        .expect("worker 0 stats");
    assert!(w0.get(Stat::TxFrames) > 0, "{w0:?}");
    assert!(w0.get(Stat::TxBytes) >= data.len() as u64 / 2, "{w0:?}");
    assert!(w0.get(Stat::RxFrames) > 0, "{w0:?}");
    assert_eq!(w0.get(Stat::FlowsV3), 1);
    assert_eq!(w0.get(Stat::FlowsV1), 0);
    assert_ne!(w0.get(Stat::Mode), 0);

    // A duplicate job id is refused.
    let s = lab.push(Command::CreateJob(spec));
    assert_eq!(lab.ack(s).0, AckStatus::Rejected);

    // Cancel: a job to a peer that never answers, then cancelled.
    let s = lab.push(Command::CreateJob(JobSpec {
        job_id: 8,
        peer_port: port + 2,
        ..spec
    }));
    assert_eq!(lab.ack(s).0, AckStatus::Ok);
    std::thread::sleep(Duration::from_millis(300));
    let s = lab.push(Command::CancelJob { job_id: 8 });
    assert_eq!(lab.ack(s).0, AckStatus::Ok);
    let fin = lab.wait_for("job 8 finished", Duration::from_secs(10), |e| {
        matches!(e, Event::JobFinished { job_id: 8, .. })
    });
    assert!(
        matches!(
            fin,
            Event::JobFinished {
                outcome: JobOutcome::Cancelled,
                ..
            }
        ),
        "{fin:?}"
    );
    let s = lab.push(Command::CancelJob { job_id: 999 });
    assert_eq!(lab.ack(s).0, AckStatus::Rejected);

    // A job for a missing object fails with the file error code.
    let s = lab.push(Command::CreateJob(JobSpec {
        job_id: 9,
        object_id: 4242,
        ..spec
    }));
    assert_eq!(lab.ack(s).0, AckStatus::Ok);
    let fin = lab.wait_for("job 9 finished", Duration::from_secs(10), |e| {
        matches!(e, Event::JobFinished { job_id: 9, .. })
    });
    assert_eq!(
        fin,
        Event::JobFinished {
            job_id: 9,
            outcome: JobOutcome::Failed,
            bytes_done: 0,
            error_code: dwcp_engine::daemon::error_code::FILE,
        }
    );

    // SIGTERM: clean exit, side released.
    let st = stop(daemon, Signal::SIGTERM);
    assert!(st.success(), "daemon exited with {st}");
    let dp = lab.region.side_status(Role::Dataplane);
    assert_eq!(dp.pid, 0, "side released: {dp:?}");
    assert_eq!(
        lab.region.command_positions().0,
        lab.region.command_positions().1
    );
}

#[test]
fn sigkill_and_restart_answers_queued_ping_exactly_once() {
    let mut lab = Lab::new();
    let port = port_base(1);
    let daemon = spawn_daemon(&lab.shm, &lab.objects, port);
    lab.ping(1, Duration::from_secs(10));
    let epoch1 = lab.region.side_status(Role::Dataplane).epoch;
    let st = stop(daemon, Signal::SIGKILL);
    assert!(!st.success());

    // Queued while no dataplane runs.
    lab.push(Command::Ping { nonce: 77 });
    std::thread::sleep(Duration::from_millis(300));
    assert!(lab.ctl.events.pop().is_none(), "nobody answers while down");

    let daemon = spawn_daemon(&lab.shm, &lab.objects, port);
    lab.wait_for("pong 77", Duration::from_secs(10), |e| {
        *e == Event::Pong { nonce: 77 }
    });
    let dp = lab.region.side_status(Role::Dataplane);
    assert!(dp.epoch > epoch1, "epoch moved on restart: {dp:?}");
    assert_eq!(dp.pid, u64::from(daemon.id()));
    // Later traffic still flows, and 77 was answered once.
    lab.ping(2, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    while let Some(r) = lab.ctl.events.pop() {
        lab.seen.push(r.msg.expect("event decodes"));
    }
    let n77 = lab
        .seen
        .iter()
        .filter(|e| **e == Event::Pong { nonce: 77 })
        .count();
    assert_eq!(n77, 1, "events: {:?}", lab.seen);
    let (head, tail) = lab.region.command_positions();
    assert_eq!(head, tail, "every command consumed");
    // Heartbeat keeps moving.
    let age = lab
        .region
        .side_status(Role::Dataplane)
        .heartbeat_age
        .expect("heartbeat");
    assert!(age < Duration::from_secs(1), "heartbeat age {age:?}");

    // SIGINT with a job running (to a peer that never answers): the job ends cancelled.
    std::fs::write(lab.objects.join("5"), object(1 << 20)).expect("write object");
    let s = lab.push(Command::CreateJob(JobSpec {
        job_id: 11,
        kind: JobKind::Object,
        object_id: 5,
        total_bytes: 1 << 20,
        peer_ipv4: u32::from(Ipv4Addr::LOCALHOST),
        peer_port: port + 2,
        max_rounds: 1,
    }));
    assert_eq!(lab.ack(s).0, AckStatus::Ok);
    std::thread::sleep(Duration::from_millis(200));
    let st = stop(daemon, Signal::SIGINT);
    assert!(st.success(), "daemon exited with {st}");
    let fin = lab.wait_for("job 11 finished", Duration::from_secs(2), |e| {
        matches!(e, Event::JobFinished { job_id: 11, .. })
    });
    assert!(
        matches!(
            fin,
            Event::JobFinished {
                outcome: JobOutcome::Cancelled,
                ..
            }
        ),
        "{fin:?}"
    );
    assert_eq!(lab.region.side_status(Role::Dataplane).pid, 0);
}

/// `dwcp-control` from the same target directory as this test (integration tests only get
/// `CARGO_BIN_EXE_` for their own crate), or `DWCP_CONTROL_BIN`.
fn control_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DWCP_CONTROL_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/daemon-<hash>
    let profile_dir = exe.parent()?.parent()?;
    let target = profile_dir.parent()?;
    [
        profile_dir.join("dwcp-control"),
        target.join("release/dwcp-control"),
        target.join("debug/dwcp-control"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// One plain HTTP/1.1 request (no client library needed): status code and body.
fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Some((code, body.to_string()))
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    http(addr, "GET", path, "", "").map(|r| r.0)
}

#[test]
fn control_readyz_turns_ready_with_the_daemon() {
    use std::io::BufRead;
    let Some(bin) = control_bin() else {
        eprintln!(
            "SKIPPED control_readyz_turns_ready_with_the_daemon: dwcp-control is not built in \
             this target dir (cargo build -p dwcp-control --release) and DWCP_CONTROL_BIN is unset"
        );
        // `cargo test --workspace` (the README's test command, and CI) builds every binary.
        assert!(
            std::env::var_os("CI").is_none(),
            "dwcp-control binary missing under CI"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = dir.path().join("region");
    let objects = dir.path().join("objects");
    std::fs::create_dir(&objects).expect("objects dir");
    let mut control = Proc::new(&bin)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--shm-path")
        .arg(&shm)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dwcp-control");
    let mut line = String::new();
    std::io::BufReader::new(control.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let before = http_status(&addr, "/readyz");
    assert_eq!(before, Some(503), "not ready without a dataplane");

    let port = port_base(2);
    let daemon = spawn_daemon(&shm, &objects, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        last = http_status(&addr, "/readyz");
        if last == Some(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last, Some(200), "/readyz with the daemon running");

    // A job through the HTTP API, moved by the daemon to a real receiver.
    let token = std::fs::read_to_string(dir.path().join("state/token")).expect("token file");
    let data = object(1 << 20);
    std::fs::write(objects.join("31"), &data).expect("write object");
    let dest = objects.join("received");
    let recv = spawn_recv(&dest, port + 1, port);
    std::thread::sleep(Duration::from_millis(200));
    let req = format!(
        r#"{{"kind":"object","size_bytes":{},"peer":"127.0.0.1:{}","object_id":31}}"#,
        data.len(),
        port + 1
    );
    let (code, body) = http(&addr, "POST", "/v1/jobs", token.trim(), &req).expect("POST");
    assert_eq!(code, 201, "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
    let id = job["id"].as_u64().expect("job id");
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let (_, body) = http(&addr, "GET", &format!("/v1/jobs/{id}"), "", "").expect("GET job");
        let job: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
        if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or("")) {
            break job;
        }
        assert!(Instant::now() < deadline, "job did not finish: {job}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"]["bytes_done"], data.len() as u64, "{job}");
    let out = recv.wait_with_output().expect("recv");
    assert!(out.status.success(), "dwcp recv exited with {}", out.status);
    assert!(
        std::fs::read(&dest).expect("received") == data,
        "received file differs"
    );

    let daemon_exit = stop(daemon, Signal::SIGTERM);
    let control_exit = stop(control, Signal::SIGTERM);
    assert!(daemon_exit.success(), "daemon exited with {daemon_exit}");
    assert!(control_exit.success(), "control exited with {control_exit}");
}
