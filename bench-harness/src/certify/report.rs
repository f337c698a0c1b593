//! The certification report: its serde type tree (the JSON schema, `dwcp-certify/1`), the
//! pass/fail rules against a hardware profile's targets, and the Markdown rendering.
//!
//! Owns: [`Report`] and its parts, [`evaluate`] (targets -> [`Check`]s), [`overall`],
//! [`Report::to_json`], [`Report::to_markdown`] and [`Report::write_all`] (JSON + Markdown +
//! SVG plots into one directory).
//!
//! Does not: measure anything ([`super::run`]) or draw ([`super::plot`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dwcp_hw_profiles::Targets;
use serde::{Deserialize, Serialize};

use super::suite::{DataKind, LinkKind, LinkSpec};
use crate::peers::Summary;

/// Schema identifier written in every report; bump on incompatible changes.
pub const SCHEMA: &str = "dwcp-certify/1";

/// Peer name of the dataplane's framed AF_XDP loop (the packet-rate figure of the targets).
pub const DWCP_FRAMES: &str = "dwcp-frames";
/// Peer name of a dwcp transfer.
pub const DWCP_TRANSFER: &str = "dwcp";

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Measured and at or above the floor.
    Pass,
    /// Measured and below the floor.
    Fail,
    /// Not measured (case not in the suite, or every repetition failed).
    NotMeasured,
}

/// Outcome of the whole certification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every check passed.
    Pass,
    /// At least one check failed.
    Fail,
    /// No check failed, but at least one target was not measured.
    Incomplete,
}

/// The machine the report was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// Load averages (1, 5, 15 min) when the run started.
    pub load_start: [f64; 3],
    /// Load averages when it ended.
    pub load_end: [f64; 3],
}

/// The hardware profile the report was judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRef {
    /// Profile name.
    pub name: String,
    /// File it was loaded from (`None`: the embedded default).
    pub path: Option<String>,
    /// The profile is an example for hardware the project has not measured.
    pub example: bool,
    /// Its targets.
    pub targets: Targets,
}

/// One peer in a packet-rate case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketPeer {
    /// Peer name (`dwcp-frames`, `bare-afxdp`, `udp-mmsg`, `udp-gso`).
    pub peer: String,
    /// Received frames/s.
    pub pps: Option<Summary>,
    /// Received UDP payload, Gbit/s.
    pub gbps: Option<Summary>,
    /// CPU seconds (both sides) per GB received.
    pub cpu_s_per_gb: Option<Summary>,
    /// Fraction of sent frames not received.
    pub loss: Option<Summary>,
    /// Errors of failed repetitions.
    pub errors: Vec<String>,
}

/// A packet-rate case: the peers' loops with one payload size on the datacenter link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketCase {
    /// Stable identifier, e.g. `packet-64b`.
    pub id: String,
    /// DWCP payload bytes per frame.
    pub payload: usize,
    /// Link MTU.
    pub mtu: u32,
    /// Seconds per repetition.
    pub secs: f64,
    /// Peers side by side.
    pub peers: Vec<PacketPeer>,
}

/// One peer in a transfer case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferPeer {
    /// Peer name (`dwcp`, `iperf3-cubic`, `iperf3-bbr`).
    pub peer: String,
    /// Data sent (dwcp only; iperf3 sends its own buffer, and TCP does not compress).
    pub data: Option<DataKind>,
    /// Goodput, Gbit/s of object (or TCP payload) bytes delivered.
    pub gbps: Option<Summary>,
    /// CPU seconds (both ends) per GB delivered.
    pub cpu_s_per_gb: Option<Summary>,
    /// Errors of failed repetitions.
    pub errors: Vec<String>,
}

impl TransferPeer {
    /// Label used in tables and plots: peer name, plus the data kind for dwcp.
    pub fn label(&self) -> String {
        match self.data {
            Some(d) => format!("{} ({})", self.peer, d.name()),
            None => self.peer.clone(),
        }
    }
}

/// A transfer case: one link and one stream count, every peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferCase {
    /// Stable identifier, e.g. `wan-rtt50-loss1-s4`.
    pub id: String,
    /// The link.
    pub link: LinkSpec,
    /// Streams (dwcp streams, iperf3 `-P`).
    pub streams: u16,
    /// Peers side by side.
    pub peers: Vec<TransferPeer>,
}

/// One target check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Identifier, e.g. `min_pps_64b` or `min_wan_goodput_fraction/wan-rtt50-loss1-s4/incompressible`.
    pub id: String,
    /// Target field of the profile.
    pub target: String,
    /// The floor.
    pub threshold: f64,
    /// Unit of `threshold` and `measured`.
    pub unit: String,
    /// Median measured (None: not measured).
    pub measured: Option<f64>,
    /// Outcome.
    pub verdict: Verdict,
    /// Which figure was compared.
    pub basis: String,
}

/// A certification report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// Suite name (`quick`, `full`).
    pub suite: String,
    /// Command line that produced the report.
    pub command: String,
    /// Start, RFC 3339 UTC.
    pub started_utc: String,
    /// End, RFC 3339 UTC.
    pub finished_utc: String,
    /// Repetitions per peer and case.
    pub reps: u32,
    /// Machine.
    pub host: HostInfo,
    /// Figures taken on a busy machine (load average above the number of CPUs / 2): they
    /// are noisy and must be re-measured at a quiet time before they certify anything.
    pub preliminary: bool,
    /// Profile judged against.
    pub profile: ProfileRef,
    /// Packet-rate cases.
    pub packet: Vec<PacketCase>,
    /// Transfer cases.
    pub transfer: Vec<TransferCase>,
    /// Checks against the profile's targets.
    pub checks: Vec<Check>,
    /// Overall outcome.
    pub outcome: Outcome,
    /// SVG plots written next to the report (file names).
    pub plots: Vec<String>,
}

fn check(
    id: String,
    target: &str,
    threshold: f64,
    unit: &str,
    measured: Option<f64>,
    basis: String,
) -> Check {
    let verdict = match measured {
        None => Verdict::NotMeasured,
        Some(m) if m >= threshold => Verdict::Pass,
        Some(_) => Verdict::Fail,
    };
    Check {
        id,
        target: target.into(),
        threshold,
        unit: unit.into(),
        measured,
        verdict,
        basis,
    }
}

fn packet_median(
    packet: &[PacketCase],
    payload: usize,
    f: impl Fn(&PacketPeer) -> Option<&Summary>,
) -> Option<(f64, String)> {
    packet
        .iter()
        .filter(|c| c.payload == payload)
        .flat_map(|c| c.peers.iter().map(move |p| (c, p)))
        .filter(|(_, p)| p.peer == DWCP_FRAMES)
        .find_map(|(c, p)| f(p).map(|s| (s.median, c.id.clone())))
}

/// The checks of `targets` against measured cases:
/// - `min_pps_64b`: median received frames/s of `dwcp-frames` with 64-byte payloads;
/// - `min_gbps_1400b`: median Gbit/s of `dwcp-frames` with 1400-byte payloads;
/// - `min_wan_goodput_fraction`: for every WAN case with a rate limit and every dwcp data
///   kind, median dwcp goodput / link rate (Ethernet-frame bit/s the emulator passes).
///
/// A target with no figure is `NotMeasured` (never a pass).
pub fn evaluate(targets: &Targets, packet: &[PacketCase], transfer: &[TransferCase]) -> Vec<Check> {
    let mut out = Vec::new();
    let pps = packet_median(packet, 64, |p| p.pps.as_ref());
    out.push(check(
        "min_pps_64b".into(),
        "targets.min_pps_64b",
        targets.min_pps_64b as f64,
        "frames/s",
        pps.as_ref().map(|x| x.0),
        match &pps {
            Some((_, id)) => format!("{DWCP_FRAMES} median rx frames/s in {id}"),
            None => format!("no {DWCP_FRAMES} figure with 64-byte payloads"),
        },
    ));
    let g = packet_median(packet, 1400, |p| p.gbps.as_ref());
    out.push(check(
        "min_gbps_1400b".into(),
        "targets.min_gbps_1400b",
        targets.min_gbps_1400b,
        "Gbit/s",
        g.as_ref().map(|x| x.0),
        match &g {
            Some((_, id)) => format!("{DWCP_FRAMES} median rx Gbit/s in {id}"),
            None => format!("no {DWCP_FRAMES} figure with 1400-byte payloads"),
        },
    ));
    let mut any_wan = false;
    for c in transfer {
        let (LinkKind::Wan, Some(rate)) = (c.link.kind, c.link.rate_mbit) else {
            continue;
        };
        for p in c.peers.iter().filter(|p| p.peer == DWCP_TRANSFER) {
            any_wan = true;
            let data = p.data.map(|d| d.name()).unwrap_or("-");
            out.push(check(
                format!("min_wan_goodput_fraction/{}/{data}", c.id),
                "targets.min_wan_goodput_fraction",
                targets.min_wan_goodput_fraction,
                "fraction of link rate",
                p.gbps.as_ref().map(|s| s.median * 1e3 / rate),
                format!("dwcp median goodput / {rate} Mbit/s in {}", c.id),
            ));
        }
    }
    if !any_wan {
        out.push(check(
            "min_wan_goodput_fraction".into(),
            "targets.min_wan_goodput_fraction",
            targets.min_wan_goodput_fraction,
            "fraction of link rate",
            None,
            "no WAN case with a rate limit and a dwcp peer".into(),
        ));
    }
    out
}

/// Overall outcome of `checks`: any fail -> Fail, else any not measured -> Incomplete.
pub fn overall(checks: &[Check]) -> Outcome {
    if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Outcome::Fail
    } else if checks.is_empty() || checks.iter().any(|c| c.verdict == Verdict::NotMeasured) {
        Outcome::Incomplete
    } else {
        Outcome::Pass
    }
}

fn fmt_sum(s: Option<&Summary>, scale: f64, prec: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.p$} / {:.p$} / {:.p$}",
            s.min * scale,
            s.median * scale,
            s.max * scale,
            p = prec
        ),
        None => "-".into(),
    }
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The report as Markdown: outcome, checks, then every case's table with min / median /
    /// max and the ratio of dwcp's median to each peer's.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let outcome = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Incomplete => "INCOMPLETE",
        };
        let _ = writeln!(m, "# DWCP certification report: {outcome}\n");
        if self.preliminary {
            let _ = writeln!(
                m,
                "**Preliminary**: measured on a busy machine (load average {:.1} at start, \
                 {:.1} at end, {} CPUs); figures are noisy and must be re-measured at a quiet \
                 time before they certify anything.\n",
                self.host.load_start[0], self.host.load_end[0], self.host.cpus
            );
        }
        if self.profile.example {
            let _ = writeln!(
                m,
                "**Example profile**: `{}` describes hardware the project has not measured; \
                 its targets are a starting point, not a certified floor.\n",
                self.profile.name
            );
        }
        let _ = writeln!(m, "| | |\n|---|---|");
        let _ = writeln!(
            m,
            "| suite | `{}` ({} repetitions per peer) |",
            self.suite, self.reps
        );
        let _ = writeln!(m, "| command | `{}` |", self.command);
        let _ = writeln!(
            m,
            "| started / finished (UTC) | {} / {} |",
            self.started_utc, self.finished_utc
        );
        let _ = writeln!(
            m,
            "| host | {} CPUs, {}, kernel {} |",
            self.host.cpus, self.host.cpu_model, self.host.kernel
        );
        let _ = writeln!(
            m,
            "| load average (1/5/15 min) | start {:.2} {:.2} {:.2}, end {:.2} {:.2} {:.2} |",
            self.host.load_start[0],
            self.host.load_start[1],
            self.host.load_start[2],
            self.host.load_end[0],
            self.host.load_end[1],
            self.host.load_end[2]
        );
        let _ = writeln!(
            m,
            "| profile | `{}` ({}) |",
            self.profile.name,
            self.profile.path.as_deref().unwrap_or("embedded default")
        );
        if let Some(src) = &self.profile.targets.source {
            let _ = writeln!(m, "| targets' source | {src} |");
        }
        let _ = writeln!(m, "\n## Checks against the profile's targets\n");
        let _ = writeln!(m, "| check | floor | measured (median) | verdict | basis |");
        let _ = writeln!(m, "|---|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                m,
                "| `{}` | {} {} | {} | **{}** | {} |",
                c.id,
                fmt_num(c.threshold),
                c.unit,
                c.measured.map(fmt_num).unwrap_or_else(|| "-".into()),
                match c.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                    Verdict::NotMeasured => "not measured",
                },
                c.basis
            );
        }
        if !self.packet.is_empty() {
            let _ = writeln!(
                m,
                "\n## Packet rate (datacenter link, sender core 0 -> receiver core 1)\n\n\
                 min / median / max over the repetitions. `dwcp-frames`: the dataplane's AF_XDP \
                 port with DWCP framing and CRC32C per frame; `bare-afxdp`: AF_XDP sockets with \
                 no protocol work; `udp-mmsg`: sendmmsg/recvmmsg; `udp-gso`: with GSO/GRO.\n"
            );
            for c in &self.packet {
                let _ = writeln!(
                    m,
                    "### {} ({} B payload, MTU {}, {} s per run)\n",
                    c.id, c.payload, c.mtu, c.secs
                );
                let _ = writeln!(
                    m,
                    "| peer | rx kpps | Gbit/s | CPU s/GB | loss % | dwcp-frames / peer (median pps) |"
                );
                let _ = writeln!(m, "|---|---|---|---|---|---|");
                let dw = c
                    .peers
                    .iter()
                    .find(|p| p.peer == DWCP_FRAMES)
                    .and_then(|p| p.pps.as_ref())
                    .map(|s| s.median);
                for p in &c.peers {
                    let ratio = match (dw, p.pps.as_ref()) {
                        (Some(d), Some(s)) if s.median > 0.0 => format!("{:.2}", d / s.median),
                        _ => "-".into(),
                    };
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} | {} | {} |",
                        p.peer,
                        fmt_sum(p.pps.as_ref(), 1e-3, 0),
                        fmt_sum(p.gbps.as_ref(), 1.0, 2),
                        fmt_sum(p.cpu_s_per_gb.as_ref(), 1.0, 2),
                        fmt_sum(p.loss.as_ref(), 100.0, 1),
                        ratio
                    );
                    for e in &p.errors {
                        let _ = writeln!(m, "| | error: {e} | | | | |");
                    }
                }
                let _ = writeln!(m);
            }
        }
        if !self.transfer.is_empty() {
            let _ = writeln!(
                m,
                "\n## Transfers\n\nGoodput in Mbit/s (min / median / max) of object bytes (dwcp) \
                 or TCP payload (iperf3) delivered; CPU seconds of both ends per GB delivered.\n"
            );
            for c in &self.transfer {
                let _ = writeln!(
                    m,
                    "### {}: {}, {} stream(s)\n",
                    c.id,
                    c.link.describe(),
                    c.streams
                );
                let _ = writeln!(
                    m,
                    "| peer | goodput Mbit/s | CPU s/GB | dwcp (same data) / peer |"
                );
                let _ = writeln!(m, "|---|---|---|---|");
                for p in &c.peers {
                    let ratio = dwcp_ratio(c, p);
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} |",
                        p.label(),
                        fmt_sum(p.gbps.as_ref(), 1e3, 1),
                        fmt_sum(p.cpu_s_per_gb.as_ref(), 1.0, 2),
                        ratio
                    );
                    for e in &p.errors {
                        let _ = writeln!(m, "| | error: {e} | | |");
                    }
                }
                let _ = writeln!(m);
            }
        }
        if !self.plots.is_empty() {
            let _ = writeln!(m, "## Plots\n");
            for p in &self.plots {
                let _ = writeln!(m, "![{p}]({p})\n");
            }
        }
        m
    }

    /// Writes `report.json`, `report.md` and the SVG plots into `dir` (created if missing);
    /// returns the paths written.
    pub fn write_all(&mut self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let plots = super::plot::write_plots(self, dir)?;
        self.plots = plots
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let json = dir.join("report.json");
        std::fs::write(&json, self.to_json())?;
        written.push(json);
        let md = dir.join("report.md");
        std::fs::write(&md, self.to_markdown())?;
        written.push(md);
        written.extend(plots);
        Ok(written)
    }
}

/// "dwcp median / peer median" for a non-dwcp peer; for iperf3 the ratios of every dwcp
/// data kind, e.g. `0.95 (incompressible), 3.1 (compressible)`.
fn dwcp_ratio(c: &TransferCase, p: &TransferPeer) -> String {
    if p.peer == DWCP_TRANSFER {
        return "-".into();
    }
    let Some(base) = p.gbps.as_ref().map(|s| s.median).filter(|b| *b > 0.0) else {
        return "-".into();
    };
    let parts: Vec<String> = c
        .peers
        .iter()
        .filter(|d| d.peer == DWCP_TRANSFER)
        .filter_map(|d| {
            let v = d.gbps.as_ref()?.median;
            Some(format!(
                "{:.2} ({})",
                v / base,
                d.data.map(|k| k.name()).unwrap_or("-")
            ))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

impl LinkSpec {
    /// One-line description for reports.
    pub fn describe(&self) -> String {
        match self.kind {
            LinkKind::Datacenter => format!("datacenter (direct veth, MTU {})", self.mtu),
            LinkKind::Wan => format!(
                "WAN (RTT {} ms, loss {}% each way, {}, MTU {})",
                self.rtt_ms,
                self.loss * 100.0,
                self.rate_mbit
                    .map(|r| format!("{r} Mbit/s"))
                    .unwrap_or_else(|| "no rate limit".into()),
                self.mtu
            ),
        }
    }
}
