//! Peer runners: iperf3 between the lab's namespaces, as the named peer of every benchmark.
//!
//! Owns: starting an iperf3 server in B and a client in A (TCP with a chosen congestion
//! control, or UDP at a chosen offered rate), parsing the client's JSON report (`-J`),
//! checking/loading TCP congestion controls (`modprobe tcp_<cc>`), and summarising
//! repetitions (min / median / max).
//!
//! Does not: build the lab ([`crate::lab`]) or judge results; servers are killed when their
//! guard drops, and `dwcp-lab cleanup` kills any left by an interrupted run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::PeerError;
use crate::lab::Lab;

/// Default iperf3 port used by the runners.
pub const IPERF3_PORT: u16 = 5201;

const CC_AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// The TCP congestion controls the kernel offers.
pub fn available_congestion_controls() -> Result<Vec<String>, PeerError> {
    let s = std::fs::read_to_string(CC_AVAILABLE).map_err(|source| PeerError::Io {
        what: format!("read {CC_AVAILABLE}"),
        source,
    })?;
    Ok(s.split_whitespace().map(str::to_string).collect())
}

/// Makes sure congestion control `cc` is available, loading `tcp_<cc>` with modprobe if not.
pub fn ensure_congestion_control(cc: &str) -> Result<(), PeerError> {
    if available_congestion_controls()?.iter().any(|c| c == cc) {
        return Ok(());
    }
    let _ = Command::new("modprobe").arg(format!("tcp_{cc}")).output();
    let now = available_congestion_controls()?;
    if now.iter().any(|c| c == cc) {
        Ok(())
    } else {
        Err(PeerError::CongestionControlUnavailable {
            cc: cc.to_string(),
            available: now.join(" "),
        })
    }
}

/// What an iperf3 client run measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Iperf3Mode {
    /// TCP with congestion control `cc` (`-C`).
    Tcp {
        /// Congestion control name (cubic, bbr, reno...).
        cc: String,
    },
    /// UDP at an offered rate (`-u -b`) with datagrams of `len` bytes (`-l`).
    Udp {
        /// Offered rate, bit/s of UDP payload.
        bitrate_bps: u64,
        /// UDP payload length.
        len: u32,
    },
}

/// One iperf3 run, client in A, server in B.
#[derive(Debug, Clone, Serialize)]
pub struct Iperf3Run {
    /// TCP or UDP.
    pub mode: Iperf3Mode,
    /// Test duration (`-t`).
    pub secs: u32,
    /// Parallel streams (`-P`).
    pub streams: u32,
    /// Server port.
    pub port: u16,
    /// Socket buffer size (`-w`, e.g. "4M"); `None` = iperf3's default.
    pub window: Option<String>,
    /// Ask for the server's per-second report (`--get-server-output`).
    pub server_output: bool,
}

impl Iperf3Run {
    /// A TCP run with `cc` for `secs` seconds, one stream.
    pub fn tcp(cc: &str, secs: u32) -> Self {
        Self {
            mode: Iperf3Mode::Tcp { cc: cc.into() },
            secs,
            streams: 1,
            port: IPERF3_PORT,
            window: None,
            server_output: false,
        }
    }

    /// A UDP run at `bitrate_bps` with `len`-byte datagrams for `secs` seconds.
    pub fn udp(bitrate_bps: u64, len: u32, secs: u32) -> Self {
        Self {
            mode: Iperf3Mode::Udp { bitrate_bps, len },
            secs,
            streams: 1,
            port: IPERF3_PORT,
            window: None,
            server_output: false,
        }
    }

    /// The client's arguments (after `iperf3`).
    pub fn client_args(&self, server: std::net::Ipv4Addr) -> Vec<String> {
        let mut a = vec![
            "-c".to_string(),
            server.to_string(),
            "-p".into(),
            self.port.to_string(),
            "-t".into(),
            self.secs.to_string(),
            "-P".into(),
            self.streams.to_string(),
            "-J".into(),
        ];
        if let Some(w) = &self.window {
            a.extend(["-w".into(), w.clone()]);
        }
        if self.server_output {
            a.push("--get-server-output".into());
        }
        match &self.mode {
            Iperf3Mode::Tcp { cc } => a.extend(["-C".into(), cc.clone()]),
            Iperf3Mode::Udp { bitrate_bps, len } => {
                a.extend(["-u".into(), "-b".into(), bitrate_bps.to_string()]);
                a.extend(["-l".into(), len.to_string()]);
            }
        }
        a
    }
}

/// Parsed result of one iperf3 run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Iperf3Result {
    /// Payload bit/s the sender pushed.
    pub sent_bps: f64,
    /// Payload bit/s the receiver got (the goodput).
    pub received_bps: f64,
    /// Payload bytes the receiver got.
    pub received_bytes: u64,
    /// Receiver's measurement interval, s.
    pub received_secs: f64,
    /// TCP retransmissions (TCP only).
    pub retransmits: Option<u64>,
    /// UDP datagrams lost, percent (UDP only).
    pub lost_percent: Option<f64>,
    /// The server's report intervals (with `server_output`), in order.
    pub server_intervals: Vec<Interval>,
    /// CPU use of the client process (user + system) in percent of the test's wall time
    /// (`end.cpu_utilization_percent.host_total`).
    pub cpu_client_percent: Option<f64>,
    /// The same for the server process (`remote_total`).
    pub cpu_server_percent: Option<f64>,
}

/// One report interval of the server (receiver).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Start, seconds from the test start.
    pub start: f64,
    /// Length, seconds.
    pub seconds: f64,
    /// Payload bytes received in it.
    pub bytes: u64,
}

impl Iperf3Result {
    /// Receiver payload rate over the server intervals after the first (start-up: connect,
    /// one-way delay, slow start) and without a last partial one (< 0.5 s). `None` when
    /// fewer than one such interval was reported.
    pub fn steady_state_bps(&self) -> Option<f64> {
        let mid: Vec<&Interval> = self
            .server_intervals
            .iter()
            .skip(1)
            .filter(|i| i.seconds >= 0.5)
            .collect();
        let secs: f64 = mid.iter().map(|i| i.seconds).sum();
        let bytes: u64 = mid.iter().map(|i| i.bytes).sum();
        (secs > 0.0).then(|| bytes as f64 * 8.0 / secs)
    }
}

impl Iperf3Result {
    /// Goodput in Gbit/s.
    pub fn received_gbps(&self) -> f64 {
        self.received_bps / 1e9
    }

    /// CPU seconds of client and server together per GB (1e9 bytes) received; `None`
    /// when iperf3 did not report CPU use or nothing was received.
    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        let pct = self.cpu_client_percent? + self.cpu_server_percent?;
        (self.received_bytes > 0)
            .then(|| pct / 100.0 * self.received_secs / (self.received_bytes as f64 / 1e9))
    }
}

/// Parses iperf3's `-J` client report.
pub fn parse_iperf3_json(cmd: &str, json: &str) -> Result<Iperf3Result, PeerError> {
    let perr = |detail: String| PeerError::Parse {
        cmd: cmd.to_string(),
        detail,
    };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| perr(e.to_string()))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(perr(format!("iperf3 error: {e}")));
    }
    let end = v
        .get("end")
        .ok_or_else(|| perr("no `end` section".into()))?;
    let f = |sec: &str, key: &str| -> Result<f64, PeerError> {
        end.get(sec)
            .and_then(|s| s.get(key))
            .and_then(|x| x.as_f64())
            .ok_or_else(|| perr(format!("missing end.{sec}.{key}")))
    };
    let is_udp = v
        .pointer("/start/test_start/protocol")
        .and_then(|p| p.as_str())
        .is_some_and(|p| p == "UDP");
    Ok(Iperf3Result {
        sent_bps: f("sum_sent", "bits_per_second")?,
        received_bps: f("sum_received", "bits_per_second")?,
        received_bytes: f("sum_received", "bytes")? as u64,
        received_secs: f("sum_received", "seconds")?,
        retransmits: if is_udp {
            None
        } else {
            end.pointer("/sum_sent/retransmits")
                .and_then(|x| x.as_u64())
        },
        lost_percent: if is_udp {
            end.pointer("/sum_received/lost_percent")
                .or_else(|| end.pointer("/sum/lost_percent"))
                .and_then(|x| x.as_f64())
        } else {
            None
        },
        server_intervals: v
            .pointer("/server_output_json/intervals")
            .and_then(|i| i.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        let s = i.get("sum")?;
                        Some(Interval {
                            start: s.get("start")?.as_f64()?,
                            seconds: s.get("seconds")?.as_f64()?,
                            bytes: s.get("bytes")?.as_f64()? as u64,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        cpu_client_percent: end
            .pointer("/cpu_utilization_percent/host_total")
            .and_then(|x| x.as_f64()),
        cpu_server_percent: end
            .pointer("/cpu_utilization_percent/remote_total")
            .and_then(|x| x.as_f64()),
    })
}

/// An iperf3 server running in B; killed and reaped on drop.
#[derive(Debug)]
pub struct Iperf3Server {
    child: Child,
}

impl Iperf3Server {
    /// Starts `iperf3 -s` in the lab's B namespace and waits until it listens on `port`.
    pub fn start(lab: &Lab, port: u16) -> Result<Self, PeerError> {
        let cmd = format!("iperf3 -s -p {port} (in {})", lab.b().name());
        let child = lab
            .b()
            .command("iperf3")
            .args(["-s", "-J", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| PeerError::Spawn { cmd, source })?;
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = lab
                .b()
                .command("ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .map_err(|source| PeerError::Spawn {
                    cmd: "ss -Hltn".into(),
                    source,
                })?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(PeerError::Timeout {
                    what: format!("iperf3 server on port {port}"),
                    secs: 5,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one iperf3 client in A against a server in B (which must be running).
pub fn iperf3_client(lab: &Lab, run: &Iperf3Run) -> Result<Iperf3Result, PeerError> {
    if let Iperf3Mode::Tcp { cc } = &run.mode {
        ensure_congestion_control(cc)?;
    }
    let args = run.client_args(lab.ip_b());
    let cmd = format!("iperf3 {}", args.join(" "));
    let out = lab
        .a()
        .command("iperf3")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PeerError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let json_err = serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        return Err(PeerError::Failed {
            cmd,
            status: out.status,
            stderr: json_err.unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    parse_iperf3_json(&cmd, &stdout)
}

/// Starts a server, runs one client, stops the server.
pub fn iperf3(lab: &Lab, run: &Iperf3Run) -> Result<Iperf3Result, PeerError> {
    let _server = Iperf3Server::start(lab, run.port)?;
    iperf3_client(lab, run)
}

/// Min / median / max of repeated measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// The samples in run order.
    pub samples: Vec<f64>,
    /// Smallest sample.
    pub min: f64,
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when empty.
    pub fn of(samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Self {
            samples,
            min: s[0],
            median,
            max: s[n - 1],
        })
    }
}

/// Runs `run` `reps` times (one server for all) and summarises the goodput in Gbit/s.
pub fn iperf3_repeated(lab: &Lab, run: &Iperf3Run, reps: u32) -> Result<Summary, PeerError> {
    let _server = Iperf3Server::start(lab, run.port)?;
    let mut samples = Vec::new();
    for _ in 0..reps {
        samples.push(iperf3_client(lab, run)?.received_gbps());
    }
    Ok(Summary::of(samples).expect("reps > 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_min_max() {
        let s = Summary::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Summary::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(vec![]).is_none());
    }

    #[test]
    fn parses_tcp_and_udp_reports_and_errors() {
        let tcp = r#"{"start":{"test_start":{"protocol":"TCP"}},"end":{
            "sum_sent":{"bits_per_second":2.0e9,"bytes":100,"seconds":1.0,"retransmits":7},
            "sum_received":{"bits_per_second":1.9e9,"bytes":95,"seconds":1.0}}}"#;
        let r = parse_iperf3_json("x", tcp).unwrap();
        assert_eq!(r.retransmits, Some(7));
        assert_eq!(r.cpu_s_per_gb(), None);
        let tcp_cpu = r#"{"start":{"test_start":{"protocol":"TCP"}},"end":{
            "sum_sent":{"bits_per_second":8.0e9,"bytes":2000000000,"seconds":2.0},
            "sum_received":{"bits_per_second":8.0e9,"bytes":2000000000,"seconds":2.0},
            "cpu_utilization_percent":{"host_total":60.0,"remote_total":40.0}}}"#;
        let c = parse_iperf3_json("x", tcp_cpu).unwrap();
        // 100 % of 2 s = 2 CPU s for 2 GB.
        assert_eq!(c.cpu_s_per_gb(), Some(1.0));
        assert_eq!(r.received_gbps(), 1.9);
        assert_eq!(r.lost_percent, None);
        let udp = r#"{"start":{"test_start":{"protocol":"UDP"}},"end":{
            "sum_sent":{"bits_per_second":3e8,"bytes":100,"seconds":3.0},
            "sum_received":{"bits_per_second":2e8,"bytes":75000000,"seconds":3.0,"lost_percent":33.3}}}"#;
        let r = parse_iperf3_json("x", udp).unwrap();
        assert_eq!(r.lost_percent, Some(33.3));
        assert_eq!(r.retransmits, None);
        assert!(parse_iperf3_json("x", r#"{"error":"unable to connect"}"#).is_err());
        let with_server = r#"{"start":{"test_start":{"protocol":"UDP"}},"end":{
            "sum_sent":{"bits_per_second":3e8,"bytes":100,"seconds":3.0},
            "sum_received":{"bits_per_second":2e8,"bytes":75000000,"seconds":3.0}},
            "server_output_json":{"intervals":[
              {"sum":{"start":0,"seconds":1.0,"bytes":100}},
              {"sum":{"start":1,"seconds":1.0,"bytes":1000}},
              {"sum":{"start":2,"seconds":1.0,"bytes":3000}},
              {"sum":{"start":3,"seconds":0.1,"bytes":7}}]}}"#;
        let r = parse_iperf3_json("x", with_server).unwrap();
        assert_eq!(r.server_intervals.len(), 4);
        assert_eq!(r.steady_state_bps(), Some(4000.0 * 8.0 / 2.0));
        assert!(parse_iperf3_json("x", r#"{"end":{}}"#).is_err());
    }

    #[test]
    fn client_args_carry_mode() {
        let a = Iperf3Run::tcp("bbr", 3).client_args("10.78.0.2".parse().unwrap());
        assert!(a.windows(2).any(|w| w == ["-C", "bbr"]));
        let a = Iperf3Run::udp(300_000_000, 1400, 3).client_args("10.78.0.2".parse().unwrap());
        assert!(a.windows(2).any(|w| w == ["-b", "300000000"]));
        assert!(a.contains(&"-u".to_string()));
    }
}
