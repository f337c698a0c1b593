//! The appliance as a peer: one `dwcp recv` in B and one `dwcp send` in A moving a file
//! through the lab, measured like the iperf3 runs of [`crate::peers`].
//!
//! Owns: finding the `dwcp` binary ([`dwcp_binary`]), writing an incompressible source object
//! ([`write_source`]), running one transfer ([`dwcp_transfer`]) and parsing both processes'
//! `--json` reports into a [`DwcpResult`] (goodput, elapsed time, bytes on the wire,
//! retransmissions, congestion-control state at the end, link mode, CPU seconds of each
//! process, emulator counters of the run), and repetitions ([`dwcp_repeated`]).
//!
//! Does not: implement anything of DWCP (the processes do), judge results, or build the lab.
//! CPU time is read from `/proc/<pid>/stat` of each child once it has exited and before it is
//! reaped (utime + stime of all its threads, in USER_HZ = 100 ticks per second), so no unsafe
//! `getrusage` call is needed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use serde::Serialize;

use crate::emulator::Counters;
use crate::error::PeerError;
use crate::lab::Lab;
use crate::peers::Summary;

/// Default DWCP UDP port.
pub const DWCP_PORT: u16 = 7470;

/// Environment variable naming the `dwcp` binary (overrides the search).
pub const DWCP_BIN_ENV: &str = "DWCP_BIN";

/// Kernel USER_HZ: the unit of utime/stime in `/proc/<pid>/stat` (100 on every Linux ABI
/// this project targets).
const USER_HZ: f64 = 100.0;

/// Finds the `dwcp` binary: `$DWCP_BIN`, else next to the running executable (same target
/// directory, also from `deps/` of a test), else `$CARGO_TARGET_DIR/release`, else
/// `target/release` and `target/debug` under the current directory.
pub fn dwcp_binary() -> Result<PathBuf, PeerError> {
    if let Some(p) = std::env::var_os(DWCP_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("dwcp"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("dwcp"));
            if let Some(target) = up.parent() {
                candidates.push(target.join("release/dwcp"));
            }
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/dwcp"));
    }
    candidates.push(PathBuf::from("target/release/dwcp"));
    candidates.push(PathBuf::from("target/debug/dwcp"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| PeerError::Io {
            what: format!(
                "no `dwcp` binary found (set {DWCP_BIN_ENV}; looked at {candidates:?}); \
                 build it with `cargo build --release -p dwcp-engine --bin dwcp`"
            ),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// Writes `len` pseudo-random (incompressible) bytes to `path`, seeded, so the transfer
/// engine's codecs cannot make the object smaller than what iperf3 moves.
pub fn write_source(path: &Path, len: u64, seed: u64) -> Result<(), PeerError> {
    let io = |source| PeerError::Io {
        what: format!("write source object {}", path.display()),
        source,
    };
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).map_err(io)?;
        left -= n as u64;
    }
    f.flush().map_err(io)
}

/// One dwcp transfer's settings.
#[derive(Debug, Clone, Serialize)]
pub struct DwcpRun {
    /// The `dwcp` binary.
    pub bin: PathBuf,
    /// The object to send (see [`write_source`]).
    pub source: PathBuf,
    /// Destination path in B's view (the file system is shared); removed after the run.
    pub dest: PathBuf,
    /// Backend for both ends: "udp", "afxdp" or "auto".
    pub backend: String,
    /// Link MTU passed to both ends.
    pub mtu: u32,
    /// Most streams (`dwcp send --streams`).
    pub streams: u16,
    /// Highest protocol version offered (1 or 3).
    pub version: u8,
    /// UDP port of both ends.
    pub port: u16,
    /// Core of the sender's worker.
    pub send_core: usize,
    /// Core of the receiver's worker.
    pub recv_core: usize,
    /// Give up after this long (both processes get it as `--timeout`).
    pub timeout: Duration,
    /// Extra environment for both processes (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// When set, [`compare`] writes each dwcp run's JSON reports here as
    /// `rep-N-send.json` and `rep-N-recv.json` (N from 1).
    pub keep_reports: Option<PathBuf>,
}

impl DwcpRun {
    /// Defaults for `lab`: UDP backend, the lab's MTU, 8 streams, v3, sender on core 0 and
    /// receiver on core 1, 120 s timeout.
    pub fn new(lab: &Lab, bin: PathBuf, source: PathBuf, dest: PathBuf) -> Self {
        Self {
            bin,
            source,
            dest,
            backend: "udp".into(),
            mtu: lab.options().mtu,
            streams: 8,
            version: 3,
            port: DWCP_PORT,
            send_core: 0,
            recv_core: 1,
            timeout: Duration::from_secs(120),
            env: Vec::new(),
            keep_reports: None,
        }
    }
}

/// What one dwcp transfer measured.
#[derive(Debug, Clone, Serialize)]
pub struct DwcpResult {
    /// Object bytes delivered (verified by the receiver's XXH3-128 check).
    pub object_bytes: u64,
    /// Sender's wall time from start to verified completion (handshake included).
    pub elapsed: Duration,
    /// Goodput: object bytes per second of `elapsed`.
    pub goodput_bytes_per_sec: f64,
    /// Datagram bytes the sender put on the wire (UDP payloads, retransmissions included).
    pub wire_bytes: u64,
    /// Object bytes sent again.
    pub bytes_retransmitted: u64,
    /// Data frames sent again (`None` when the binary does not report it).
    pub frames_retransmitted: Option<u64>,
    /// Packets the sender declared lost.
    pub losses: u64,
    /// Retransmission timeouts.
    pub rto_count: u64,
    /// Link mode at the end (Datacenter / Internet / Hybrid).
    pub mode: String,
    /// Streams in use at the end.
    pub streams: u64,
    /// CPU seconds (user + system) of the sending process.
    pub cpu_send_secs: f64,
    /// CPU seconds (user + system) of the receiving process.
    pub cpu_recv_secs: f64,
    /// Emulator counters of this run (A->B, B->A), when the lab has an emulator.
    pub emulator: Option<(Counters, Counters)>,
    /// The sender's full JSON report.
    pub send_report: serde_json::Value,
    /// The receiver's full JSON report.
    pub recv_report: serde_json::Value,
}

impl DwcpResult {
    /// Goodput in Gbit/s (object bytes).
    pub fn goodput_gbps(&self) -> f64 {
        self.goodput_bytes_per_sec * 8.0 / 1e9
    }
}

/// A spawned child killed and reaped on drop unless it was collected.
struct Kid {
    child: Option<Child>,
    cmd: String,
}

impl Kid {
    /// Waits for exit without reaping (the process stays a zombie), reads its CPU time from
    /// `/proc/<pid>/stat`, then reaps it and returns (stdout, stderr, exit status, cpu secs).
    fn finish(
        mut self,
        deadline: Instant,
    ) -> Result<(String, String, std::process::ExitStatus, f64), PeerError> {
        let mut child = self.child.take().expect("present until finished");
        let pid = child.id();
        let stat_path = format!("/proc/{pid}/stat");
        let mut cpu = 0.0;
        while let Ok(stat) = std::fs::read_to_string(&stat_path) {
            if let Some((state, secs)) = parse_stat(&stat) {
                cpu = secs;
                if state == 'Z' || state == 'X' {
                    break;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PeerError::Timeout {
                    what: self.cmd.clone(),
                    secs: 0,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().map_err(|source| PeerError::Io {
            what: format!("collect `{}`", self.cmd),
            source,
        })?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status,
            cpu,
        ))
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// State letter and utime + stime in seconds from a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(char, f64)> {
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let state = f.first()?.chars().next()?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((state, (utime + stime) / USER_HZ))
}

fn spawn(lab_ns: &dwcp_netns::Netns, run: &DwcpRun, args: Vec<String>) -> Result<Kid, PeerError> {
    let cmd = format!(
        "{} {} (in {})",
        run.bin.display(),
        args.join(" "),
        lab_ns.name()
    );
    let mut c = lab_ns.command(&run.bin.to_string_lossy());
    c.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &run.env {
        c.env(k, v);
    }
    let child = c.spawn().map_err(|source| PeerError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    Ok(Kid {
        child: Some(child),
        cmd,
    })
}

fn common_args(
    run: &DwcpRun,
    iface: &str,
    local: String,
    peer: String,
    core: usize,
) -> Vec<String> {
    vec![
        "--json".into(),
        String::new(), // sub-command, filled by the caller
        "--iface".into(),
        iface.into(),
        "--local".into(),
        local,
        "--peer".into(),
        peer,
        "--backend".into(),
        run.backend.clone(),
        "--mtu".into(),
        run.mtu.to_string(),
        "--core".into(),
        core.to_string(),
        "--timeout".into(),
        run.timeout.as_secs().max(1).to_string(),
    ]
}

/// Removes `dest` and every file next to it whose name starts with its name (the receiver's
/// part file and journal), so no run resumes from an earlier one.
fn remove_dest(dest: &Path) {
    let _ = std::fs::remove_file(dest);
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn udp_listening(lab: &Lab, port: u16) -> bool {
    lab.b()
        .command("ss")
        .args(["-Hlun", &format!("sport = :{port}")])
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
        .unwrap_or(false)
}

fn delta(after: Counters, before: Counters) -> Counters {
    Counters {
        in_frames: after.in_frames - before.in_frames,
        in_bytes: after.in_bytes - before.in_bytes,
        out_frames: after.out_frames - before.out_frames,
        out_bytes: after.out_bytes - before.out_bytes,
        dropped_loss: after.dropped_loss - before.dropped_loss,
        dropped_queue: after.dropped_queue - before.dropped_queue,
        dropped_overflow: after.dropped_overflow - before.dropped_overflow,
        dropped_oversize: after.dropped_oversize - before.dropped_oversize,
        dropped_socket: after.dropped_socket - before.dropped_socket,
        tx_errors: after.tx_errors - before.tx_errors,
        duplicated: after.duplicated - before.duplicated,
        corrupted: after.corrupted - before.corrupted,
        reordered: after.reordered - before.reordered,
        late_sum_ns: after.late_sum_ns - before.late_sum_ns,
        late_max_ns: after.late_max_ns,
    }
}

/// Runs one transfer: `dwcp recv` in B (waits until its UDP port is bound, or 300 ms for a
/// backend without a socket), then `dwcp send` in A; both must exit successfully. The
/// destination file is removed afterwards.
pub fn dwcp_transfer(lab: &Lab, run: &DwcpRun) -> Result<DwcpResult, PeerError> {
    let (a, b) = (lab.ip_a(), lab.ip_b());
    remove_dest(&run.dest);
    let mut rargs = common_args(
        run,
        dwcp_netns::IF_B,
        format!("{b}:{}", run.port),
        format!("{a}:{}", run.port),
        run.recv_core,
    );
    rargs[1] = "recv".into();
    rargs.push(run.dest.to_string_lossy().into_owned());
    let recv = spawn(lab.b(), run, rargs)?;
    let ready =
        Instant::now() + Duration::from_millis(if run.backend == "udp" { 3000 } else { 300 });
    while Instant::now() < ready && !udp_listening(lab, run.port) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = lab.counters();
    let mut sargs = common_args(
        run,
        dwcp_netns::IF_A,
        format!("{a}:{}", run.port),
        format!("{b}:{}", run.port),
        run.send_core,
    );
    sargs[1] = "send".into();
    sargs.extend([
        "--streams".into(),
        run.streams.to_string(),
        "--version".into(),
        run.version.to_string(),
    ]);
    sargs.push(run.source.to_string_lossy().into_owned());
    let send = spawn(lab.a(), run, sargs)?;
    let deadline = Instant::now() + run.timeout + Duration::from_secs(10);
    let send_cmd = send.cmd.clone();
    let recv_cmd = recv.cmd.clone();
    let (sout, serr, sok, cpu_send) = send.finish(deadline)?;
    if !sok.success() {
        // the receiver would wait out its whole timeout for a sender that gave up: drop
        // (kill) it now
        drop(recv);
        remove_dest(&run.dest);
        // what crossed the emulator tells a dead path from a deaf receiver
        let emu = match (before, lab.counters()) {
            (Some(b0), Some(a0)) => {
                let (ab, ba) = (delta(a0.0, b0.0), delta(a0.1, b0.1));
                format!(
                    "\nemulator during the run: A->B in {} out {} loss {} / B->A in {} out {} loss {}",
                    ab.in_frames,
                    ab.out_frames,
                    ab.dropped_loss,
                    ba.in_frames,
                    ba.out_frames,
                    ba.dropped_loss
                )
            }
            _ => String::new(),
        };
        return Err(PeerError::Failed {
            cmd: send_cmd,
            status: sok,
            stderr: serr + &emu,
        });
    }
    let (rout, rerr, rok, cpu_recv) = recv.finish(deadline)?;
    let after = lab.counters();
    remove_dest(&run.dest);
    if !rok.success() {
        return Err(PeerError::Failed {
            cmd: recv_cmd,
            status: rok,
            stderr: rerr,
        });
    }
    let parse = |cmd: &str, s: &str| -> Result<serde_json::Value, PeerError> {
        serde_json::from_str(s.trim()).map_err(|e| PeerError::Parse {
            cmd: cmd.to_string(),
            detail: format!("{e}: {s}"),
        })
    };
    let sj = parse(&send_cmd, &sout)?;
    let rj = parse(&recv_cmd, &rout)?;
    let u = |k: &str| sj.get(k).and_then(|v| v.as_u64());
    let object_bytes = u("object_bytes").ok_or_else(|| PeerError::Parse {
        cmd: send_cmd.clone(),
        detail: "no object_bytes".into(),
    })?;
    let secs = sj
        .get("seconds")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| PeerError::Parse {
            cmd: send_cmd.clone(),
            detail: "no seconds".into(),
        })?;
    let emulator = match (before, after) {
        (Some(b0), Some(a0)) => Some((delta(a0.0, b0.0), delta(a0.1, b0.1))),
        _ => None,
    };
    Ok(DwcpResult {
        object_bytes,
        elapsed: Duration::from_secs_f64(secs),
        goodput_bytes_per_sec: object_bytes as f64 / secs.max(1e-9),
        wire_bytes: u("bytes_on_wire").unwrap_or(0),
        bytes_retransmitted: u("bytes_retransmitted").unwrap_or(0),
        frames_retransmitted: u("data_frames_retransmitted"),
        losses: u("losses").unwrap_or(0),
        rto_count: u("rto_count").unwrap_or(0),
        mode: sj
            .get("mode")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string(),
        streams: u("streams").unwrap_or(0),
        cpu_send_secs: cpu_send,
        cpu_recv_secs: cpu_recv,
        emulator,
        send_report: sj,
        recv_report: rj,
    })
}

/// Runs `run` `reps` times; the summary is goodput in Gbit/s (as
/// [`crate::peers::iperf3_repeated`]), the results are per run.
pub fn dwcp_repeated(
    lab: &Lab,
    run: &DwcpRun,
    reps: u32,
) -> Result<(Summary, Vec<DwcpResult>), PeerError> {
    let mut results = Vec::new();
    for _ in 0..reps {
        results.push(dwcp_transfer(lab, run)?);
    }
    let s =
        Summary::of(results.iter().map(DwcpResult::goodput_gbps).collect()).ok_or_else(|| {
            PeerError::Io {
                what: "dwcp_repeated with 0 repetitions".into(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            }
        })?;
    Ok((s, results))
}

/// A peer of a side-by-side benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PeerKind {
    /// The appliance (`dwcp send` / `dwcp recv`).
    Dwcp,
    /// iperf3 TCP, one stream, with this congestion control.
    Tcp(String),
}

impl PeerKind {
    /// `dwcp` is the appliance; any other name is a TCP congestion control.
    pub fn parse(name: &str) -> Self {
        match name {
            "dwcp" => Self::Dwcp,
            cc => Self::Tcp(cc.to_string()),
        }
    }

    /// Display name.
    pub fn name(&self) -> &str {
        match self {
            Self::Dwcp => "dwcp",
            Self::Tcp(cc) => cc,
        }
    }
}

/// One peer's repetitions in a [`Comparison`].
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// Which peer.
    pub peer: PeerKind,
    /// Goodput, Gbit/s.
    pub summary: Summary,
    /// One line of detail per run.
    pub details: Vec<String>,
}

/// Side-by-side results of [`compare`].
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// One row per peer, in the order asked for.
    pub rows: Vec<PeerRow>,
    /// The bottleneck's rate, bit/s of Ethernet frames (WAN profile with a rate limit).
    pub bottleneck_bps: Option<f64>,
    /// Every dwcp run, in order.
    pub dwcp_runs: Vec<DwcpResult>,
}

fn dwcp_detail(r: &DwcpResult) -> String {
    let f = |k: &str| r.send_report.get(k).cloned().unwrap_or_default();
    let e = r
        .emulator
        .map(|(ab, ba)| {
            format!(
                " emu A->B loss {} queue {} socket {} / B->A loss {} queue {}",
                ab.dropped_loss,
                ab.dropped_queue,
                ab.dropped_socket,
                ba.dropped_loss,
                ba.dropped_queue
            )
        })
        .unwrap_or_default();
    format!(
        "{:.4} Gbit/s {} B in {:.2} s, wire {:.3}x, retx {} B, losses {}, RTOs {}, mode {}, streams {}, cpu send {:.2} s recv {:.2} s, cc {} pacing {} Gbit/s cwnd {} B srtt {} us min_rtt {} us loss_rate {} cong {}{e}",
        r.goodput_gbps(),
        r.object_bytes,
        r.elapsed.as_secs_f64(),
        r.wire_bytes as f64 / r.object_bytes.max(1) as f64,
        r.bytes_retransmitted,
        r.losses,
        r.rto_count,
        r.mode,
        r.streams,
        r.cpu_send_secs,
        r.cpu_recv_secs,
        f("cc_state"),
        f("pacing_gbit_s"),
        f("cwnd_bytes"),
        f("srtt_us"),
        f("min_rtt_us"),
        f("loss_rate"),
        f("congestion_events"),
    )
}

/// Writes `r`'s send and receive reports as `dir/rep-{rep}-send.json` and
/// `dir/rep-{rep}-recv.json` (pretty JSON), creating `dir` if needed.
pub fn keep_reports(dir: &Path, rep: u32, r: &DwcpResult) -> Result<(), PeerError> {
    let io = |what: String| move |source| PeerError::Io { what, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    for (side, v) in [("send", &r.send_report), ("recv", &r.recv_report)] {
        let path = dir.join(format!("rep-{rep}-{side}.json"));
        let text = serde_json::to_string_pretty(v).expect("a JSON value serialises");
        std::fs::write(&path, text + "\n").map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// Runs every peer `reps` times, interleaved (rep 1 of each peer, then rep 2 of each...) so
/// all peers see the same conditions; iperf3 runs last `secs` seconds, dwcp moves
/// `run.source` (a failed dwcp transfer counts as goodput 0, its error in the details).
/// `log` gets one line per run as it finishes.
pub fn compare(
    lab: &Lab,
    peers: &[PeerKind],
    reps: u32,
    secs: u32,
    run: &DwcpRun,
    log: &mut dyn FnMut(&str),
) -> Result<Comparison, PeerError> {
    for p in peers {
        if let PeerKind::Tcp(cc) = p {
            crate::peers::ensure_congestion_control(cc)?;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    let mut details: Vec<Vec<String>> = vec![Vec::new(); peers.len()];
    let mut dwcp_runs = Vec::new();
    for rep in 1..=reps {
        for (i, p) in peers.iter().enumerate() {
            let (gbps, detail) = match p {
                // A failed transfer counts as goodput 0 (and says why) instead of ending the
                // comparison: a benchmark that hides its failures would overstate the median.
                PeerKind::Dwcp => match dwcp_transfer(lab, run) {
                    Ok(r) => {
                        if let Some(dir) = &run.keep_reports {
                            keep_reports(dir, rep, &r)?;
                        }
                        let d = dwcp_detail(&r);
                        let g = r.goodput_gbps();
                        dwcp_runs.push(r);
                        (g, d)
                    }
                    Err(e) => (0.0, format!("FAILED (counted as 0): {e}")),
                },
                PeerKind::Tcp(cc) => {
                    let r = crate::peers::iperf3(lab, &crate::peers::Iperf3Run::tcp(cc, secs))?;
                    let d = format!(
                        "{:.4} Gbit/s {} B in {:.2} s, retransmits {}",
                        r.received_gbps(),
                        r.received_bytes,
                        r.received_secs,
                        r.retransmits.unwrap_or(0)
                    );
                    (r.received_gbps(), d)
                }
            };
            log(&format!("rep {rep} {:>6}: {detail}", p.name()));
            samples[i].push(gbps);
            details[i].push(detail);
        }
    }
    let bottleneck_bps = match lab.profile() {
        crate::lab::Profile::Wan(o) => o.a_to_b.rate_bps.map(|r| r as f64),
        crate::lab::Profile::Direct => None,
    };
    let rows = peers
        .iter()
        .zip(samples)
        .zip(details)
        .map(|((p, s), d)| PeerRow {
            peer: p.clone(),
            summary: Summary::of(s).expect("reps > 0"),
            details: d,
        })
        .collect();
    Ok(Comparison {
        rows,
        bottleneck_bps,
        dwcp_runs,
    })
}

impl Comparison {
    /// The min / median / max table and the ratios of dwcp's median to each other peer's
    /// median and to the bottleneck rate.
    pub fn report(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>8}  {:>10} {:>10} {:>10}   (goodput Gbit/s, min / median / max)",
            "peer", "min", "median", "max"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:>8}  {:>10.4} {:>10.4} {:>10.4}",
                r.peer.name(),
                r.summary.min,
                r.summary.median,
                r.summary.max
            );
        }
        if let Some(d) = self.rows.iter().find(|r| r.peer == PeerKind::Dwcp) {
            for r in self.rows.iter().filter(|r| r.peer != PeerKind::Dwcp) {
                let _ = writeln!(
                    out,
                    "ratio dwcp/{:<6} median {:>9.2}x   (min/max {:.2}x)",
                    r.peer.name(),
                    d.summary.median / r.summary.median.max(1e-12),
                    d.summary.min / r.summary.min.max(1e-12),
                );
            }
            if let Some(b) = self.bottleneck_bps {
                let _ = writeln!(
                    out,
                    "ratio dwcp/bottleneck ({:.1} Mbit/s frames) median {:.3}   (min {:.3}, max {:.3})",
                    b / 1e6,
                    d.summary.median * 1e9 / b,
                    d.summary.min * 1e9 / b,
                    d.summary.max * 1e9 / b,
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_and_report_ratios() {
        assert_eq!(PeerKind::parse("dwcp"), PeerKind::Dwcp);
        assert_eq!(PeerKind::parse("bbr"), PeerKind::Tcp("bbr".into()));
        let row = |p: &str, v: Vec<f64>| PeerRow {
            peer: PeerKind::parse(p),
            summary: Summary::of(v).unwrap(),
            details: vec![],
        };
        let c = Comparison {
            rows: vec![
                row("dwcp", vec![0.18, 0.19, 0.185]),
                row("cubic", vec![0.002, 0.0025, 0.003]),
            ],
            bottleneck_bps: Some(200e6),
            dwcp_runs: vec![],
        };
        let r = c.report();
        assert!(r.contains("ratio dwcp/cubic  median     74.00x"), "{r}");
        assert!(r.contains("median 0.925"), "{r}");
    }

    #[test]
    fn parses_proc_stat_with_spaces_in_name() {
        let s = "1234 (dwcp worker 0) Z 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let (state, cpu) = parse_stat(s).unwrap();
        assert_eq!(state, 'Z');
        assert!((cpu - 3.0).abs() < 1e-9, "{cpu}");
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn source_is_seeded_and_sized() {
        let dir = std::env::temp_dir().join(format!("dwcp-peer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (p1, p2) = (dir.join("a"), dir.join("b"));
        write_source(&p1, 3 << 20 | 17, 5).unwrap();
        write_source(&p2, 3 << 20 | 17, 5).unwrap();
        let (a, b) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
        assert_eq!(a.len(), 3 << 20 | 17);
        assert_eq!(a, b);
        assert!(a.iter().filter(|&&x| x == 0).count() < a.len() / 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
