//! Test harness: the real `dwcp-control` binary on 127.0.0.1:0 with a temporary state dir,
//! a blocking HTTP client, and a fake dataplane thread that attaches to the same real
//! shared-memory region, consumes the command ring, and writes statistics and events.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwcp_shm::{AckStatus, Command, Event, JobOutcome, Region, ShmError, Stat, TransferMode};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub dir: PathBuf,
    pub http: Client,
}

pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.toml")
}

pub fn shm_path(dir: &Path) -> PathBuf {
    dir.join("region")
}

/// Writes a config for `dir` with extra TOML appended.
pub fn write_config(dir: &Path, extra: &str) {
    let cfg = format!(
        r#"listen = "127.0.0.1:0"
state_dir = "{state}"
shm_path = "{shm}"
node_id = "node-a"
controller_tick_ms = 50
heartbeat_stale_ms = 500
body_limit_bytes = 4096
shm_geometry = {{ cmd_slots = 256, evt_slots = 256, workers = 2, flag_entries = 16 }}
{extra}
"#,
        state = dir.join("state").display(),
        shm = shm_path(dir).display(),
    );
    std::fs::write(config_path(dir), cfg).unwrap();
}

impl Server {
    pub fn start(dir: &Path) -> Self {
        if !config_path(dir).exists() {
            write_config(dir, "");
        }
        let mut child = Proc::new(env!("CARGO_BIN_EXE_dwcp-control"))
            .arg("--config")
            .arg(config_path(dir))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let token = std::fs::read_to_string(dir.join("state/token")).unwrap();
        Self {
            child,
            base: format!("http://{addr}"),
            token,
            dir: dir.to_owned(),
            http: Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Kills the process (SIGKILL: no graceful shutdown) and starts it again on the same state.
    pub fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let fresh = Server::start(&self.dir);
        drop(std::mem::replace(self, fresh));
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    pub fn get(&self, p: &str) -> Response {
        self.http.get(self.url(p)).send().unwrap()
    }

    pub fn get_json(&self, p: &str) -> Value {
        let r = self.get(p);
        assert!(r.status().is_success(), "GET {p}: {}", r.status());
        r.json().unwrap()
    }

    pub fn authed(&self, rb: RequestBuilder) -> RequestBuilder {
        rb.bearer_auth(&self.token)
    }

    pub fn put(&self, p: &str, body: &Value) -> Response {
        self.authed(self.http.put(self.url(p)).json(body))
            .send()
            .unwrap()
    }

    pub fn post(&self, p: &str, body: &Value) -> Response {
        self.authed(self.http.post(self.url(p)).json(body))
            .send()
            .unwrap()
    }

    pub fn post_empty(&self, p: &str) -> Response {
        self.authed(self.http.post(self.url(p))).send().unwrap()
    }

    pub fn delete(&self, p: &str) -> Response {
        self.authed(self.http.delete(self.url(p))).send().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it returns Some, or panics after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Knobs and observations shared with the fake dataplane thread.
#[derive(Default)]
pub struct FakeState {
    /// Errors per 1000 frames the workers report.
    pub error_permille: AtomicU64,
    /// Commands received, with their ring sequence numbers.
    pub commands: Mutex<Vec<(u64, Command)>>,
    /// When set, every active job finishes (Completed) on the next step.
    pub finish_all: AtomicBool,
    pub stop: AtomicBool,
}

pub struct FakeDataplane {
    pub state: Arc<FakeState>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct FakeJob {
    id: u64,
    total: u64,
    done: u64,
    round: u32,
    step: u64,
}

impl FakeDataplane {
    /// Attaches to the region at `path` (waiting for it to exist) and runs until dropped.
    pub fn spawn(path: &Path) -> Self {
        let state = Arc::new(FakeState::default());
        let (st, path) = (state.clone(), path.to_owned());
        let handle = std::thread::spawn(move || {
            let region = wait_for(10, "region", || Region::open(&path).ok());
            let mut dp = wait_for(10, "dataplane role", || match region.attach_dataplane() {
                Ok(d) => Some(d),
                Err(ShmError::RoleBusy { .. }) => None,
                Err(e) => panic!("{e}"),
            });
            let w0 = dp.take_stats_writer(0).unwrap();
            let w1 = dp.take_stats_writer(1).unwrap();
            let mut jobs: Vec<FakeJob> = Vec::new();
            let mut expect_seq = dp.commands.next_seq();
            let mut i = 0u64;
            while !st.stop.load(Ordering::Relaxed) {
                dp.heartbeat.beat();
                for w in [&w0, &w1] {
                    w.heartbeat();
                    w.add(Stat::RxFrames, 100);
                    w.add(Stat::TxFrames, 100);
                    w.add(Stat::RxBytes, 100 * 1400);
                    w.add(
                        Stat::Errors,
                        200 * st.error_permille.load(Ordering::Relaxed) / 1000,
                    );
                    w.set(Stat::LatencyP99Us, 250);
                    w.set(Stat::CpuPermille, 300);
                    w.set(Stat::Mode, TransferMode::Datacenter as u64);
                }
                w1.add(Stat::DropChecksum, 1);
                w0.add(Stat::Retransmits, 2);
                while let Some(r) = dp.commands.pop() {
                    assert_eq!(r.seq, expect_seq, "command ring skipped or repeated");
                    expect_seq += 1;
                    let cmd = r.msg.expect("command decodes");
                    st.commands.lock().unwrap().push((r.seq, cmd));
                    let _ = dp.events.push(&Event::Ack {
                        cmd_seq: r.seq,
                        status: AckStatus::Ok,
                        detail: 0,
                    });
                    match cmd {
                        Command::CreateJob(spec) => jobs.push(FakeJob {
                            id: spec.job_id,
                            total: spec.total_bytes,
                            done: 0,
                            round: 0,
                            // Huge jobs crawl (for cancel tests), others finish in ~20 steps.
                            step: if spec.total_bytes >= 1 << 40 {
                                1 << 20
                            } else {
                                spec.total_bytes / 20 + 1
                            },
                        }),
                        Command::CancelJob { job_id } => {
                            if let Some(pos) = jobs.iter().position(|j| j.id == job_id) {
                                let j = jobs.remove(pos);
                                let _ = dp.events.push(&Event::JobFinished {
                                    job_id,
                                    outcome: JobOutcome::Cancelled,
                                    bytes_done: j.done,
                                    error_code: 0,
                                });
                            }
                        }
                        _ => {}
                    }
                }
                if st.finish_all.load(Ordering::Relaxed) {
                    for j in jobs.drain(..) {
                        let _ = dp.events.push(&Event::JobFinished {
                            job_id: j.id,
                            outcome: JobOutcome::Completed,
                            bytes_done: j.total,
                            error_code: 0,
                        });
                    }
                }
                if i.is_multiple_of(5) {
                    jobs.retain_mut(|j| {
                        j.done = (j.done + j.step).min(j.total);
                        j.round = j.round.max(1) + u32::from(j.done == j.total);
                        if j.done == j.total {
                            let _ = dp.events.push(&Event::JobFinished {
                                job_id: j.id,
                                outcome: JobOutcome::Completed,
                                bytes_done: j.done,
                                error_code: 0,
                            });
                            return false;
                        }
                        let _ = dp.events.push(&Event::JobProgress {
                            job_id: j.id,
                            bytes_done: j.done,
                            bytes_total: j.total,
                            rate_bps: j.step * 40,
                            round: j.round,
                            mode: TransferMode::Datacenter,
                            dirty_bytes: 0,
                        });
                        true
                    });
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            state,
            handle: Some(handle),
        }
    }

    pub fn commands(&self) -> Vec<(u64, Command)> {
        self.state.commands.lock().unwrap().clone()
    }
}

impl Drop for FakeDataplane {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let r = h.join();
            if !std::thread::panicking() {
                r.unwrap();
            }
        }
    }
}

/// Asserts a response is a JSON error with the given status and returns its code.
pub fn expect_error(r: Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status, "wrong status");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let v: Value = r.json().unwrap();
    let code = v["error"]["code"].as_str().expect("error.code").to_owned();
    let msg = v["error"]["message"].as_str().expect("error.message");
    assert!(!code.is_empty() && !msg.is_empty(), "{v}");
    code
}
