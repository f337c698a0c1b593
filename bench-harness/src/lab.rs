//! The lab: namespaces A and B joined either directly (datacenter profile) or through a
//! router namespace R running the WAN emulator (WAN profile).
//!
//! ```text
//! direct:  [A veth-a] <=========================> [veth-b B]
//! wan:     [A veth-a] <=> [wan-r1  R  wan-r2] <=> [veth-b B]
//!                          emulator threads (AF_PACKET), no IP addresses
//! ```
//!
//! Owns: building and deleting those namespaces and veths, disabling offloads so the
//! emulator sees wire-sized frames, static neighbour entries so no ARP crosses the emulator,
//! starting/stopping the emulator, and cleaning up what an interrupted run left behind
//! (namespaces of dead processes and the processes still running inside them).
//!
//! Does not: run peers or measurements ([`crate::peers`], [`crate::validate`]), or touch
//! anything outside namespaces it created (the root namespace is never changed).

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dwcp_netns::{IF_A, IF_B, Netns, Pair, VethOptions};
use serde::Serialize;

use crate::emulator::{Counters, Direction, Impairment, WanEmulator};
use crate::error::LabError;

/// Router-side interface facing A.
pub const IF_R1: &str = "wan-r1";
/// Router-side interface facing B.
pub const IF_R2: &str = "wan-r2";
/// Address of A (with prefix).
pub const ADDR_A: &str = "10.78.0.1/24";
/// Address of B (with prefix).
pub const ADDR_B: &str = "10.78.0.2/24";

/// Default `SCHED_FIFO` priority of the emulator threads: above every ordinary task, below
/// the kernel's own RT threads (which use 50 and up).
pub const DEFAULT_RT_PRIORITY: i32 = 10;

/// Offload features switched off by [`Offloads::Off`] (`ethtool -K <dev> ... off`).
pub const OFFLOAD_FEATURES: &[&str] = &["gro", "gso", "tso", "tx", "rx"];

/// What to do with the veths' segmentation and checksum offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Offloads {
    /// Leave the kernel defaults (64 KiB GSO/GRO segments on veth).
    Keep,
    /// Turn them off so every frame is at most MTU-sized, as on a real wire.
    Off,
}

/// Options common to both profiles.
#[derive(Debug, Clone, Serialize)]
pub struct LabOptions {
    /// Tag in the namespace names (`dwcp-<pid>-<n>-<tag>-{a,r,b}`).
    pub tag: String,
    /// MTU of every veth.
    pub mtu: u32,
    /// Offload handling. The WAN profile always turns them off.
    pub offloads: Offloads,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            tag: "lab".into(),
            mtu: 1500,
            offloads: Offloads::Keep,
        }
    }
}

/// Options of the WAN profile.
#[derive(Debug, Clone, Serialize)]
pub struct WanOptions {
    /// Common options.
    pub lab: LabOptions,
    /// Impairment of frames from A to B.
    pub a_to_b: Impairment,
    /// Impairment of frames from B to A.
    pub b_to_a: Impairment,
    /// Seed of the emulator's random choices (each direction derives its own).
    pub seed: u64,
    /// `SCHED_FIFO` priority of the emulator threads (`None` = ordinary scheduling).
    pub realtime_priority: Option<i32>,
}

impl WanOptions {
    /// The same impairment in both directions.
    pub fn symmetric(imp: Impairment) -> Self {
        Self {
            lab: LabOptions::default(),
            a_to_b: imp.clone(),
            b_to_a: imp,
            seed: 1,
            realtime_priority: Some(DEFAULT_RT_PRIORITY),
        }
    }

    /// Round-trip propagation delay (without queueing or jitter).
    pub fn rtt(&self) -> Duration {
        self.a_to_b.delay + self.b_to_a.delay
    }
}

/// Which profile a lab was built with.
#[derive(Debug, Clone, Serialize)]
pub enum Profile {
    /// Plain veth pair.
    Direct,
    /// Through the emulator.
    Wan(Box<WanOptions>),
}

/// A running lab. Dropping it stops the emulator and deletes every namespace (and with
/// them every veth).
#[derive(Debug)]
pub struct Lab {
    // Field order matters: the emulator (whose sockets live in R) is dropped first.
    emulator: Option<WanEmulator>,
    a: Netns,
    r: Option<Netns>,
    b: Netns,
    profile: Profile,
    opts: LabOptions,
}

fn step(step: &'static str) -> impl FnOnce(dwcp_netns::LabError) -> LabError {
    move |source| LabError::Netns { step, source }
}

fn ns_run(
    ns: &Netns,
    step_name: &'static str,
    program: &str,
    args: &[&str],
) -> Result<String, LabError> {
    let out = dwcp_netns::run(ns.command(program).args(args)).map_err(step(step_name))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn disable_ipv6(ns: &Netns) -> Result<(), LabError> {
    ns_run(
        ns,
        "disable IPv6",
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )
    .map(drop)
}

fn offloads_off(ns: &Netns, dev: &str) -> Result<(), LabError> {
    let mut args = vec!["-K", dev];
    for f in OFFLOAD_FEATURES {
        args.push(f);
        args.push("off");
    }
    ns_run(ns, "ethtool -K (offloads off)", "ethtool", &args).map(drop)
}

fn mac_of(ns: &Netns, dev: &str) -> Result<String, LabError> {
    let out = ns
        .ip(&["-j", "link", "show", dev])
        .map_err(step("read MAC"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| LabError::Parse {
            cmd: format!("ip -j link show {dev}"),
            detail: e.to_string(),
        })?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| LabError::Parse {
            cmd: format!("ip -j link show {dev}"),
            detail: "no address field".into(),
        })
}

fn strip_prefix(s: &str) -> Ipv4Addr {
    s.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("lab addresses are IPv4 with a prefix")
}

impl Lab {
    /// Datacenter profile: a plain veth pair A <-> B, no emulator.
    pub fn direct(opts: LabOptions) -> Result<Self, LabError> {
        let pair = Pair::new(
            &opts.tag,
            VethOptions {
                mtu: opts.mtu,
                queues: 1,
                addr_a: ADDR_A.into(),
                addr_b: ADDR_B.into(),
            },
        )
        .map_err(step("veth pair"))?;
        let Pair { a, b, .. } = pair;
        let lab = Self {
            emulator: None,
            a,
            r: None,
            b,
            profile: Profile::Direct,
            opts,
        };
        if lab.opts.offloads == Offloads::Off {
            offloads_off(&lab.a, IF_A)?;
            offloads_off(&lab.b, IF_B)?;
        }
        Ok(lab)
    }

    /// WAN profile: A <-> R <-> B with the emulator bridging R's two veths.
    pub fn wan(opts: WanOptions) -> Result<Self, LabError> {
        opts.a_to_b.validate()?;
        opts.b_to_a.validate()?;
        let tag = &opts.lab.tag;
        let a = Netns::new(&format!("{tag}-a")).map_err(step("namespace A"))?;
        let r = Netns::new(&format!("{tag}-r")).map_err(step("namespace R"))?;
        let b = Netns::new(&format!("{tag}-b")).map_err(step("namespace B"))?;
        let mut lab = Self {
            emulator: None,
            a,
            r: Some(r),
            b,
            profile: Profile::Wan(Box::new(opts.clone())),
            opts: LabOptions {
                offloads: Offloads::Off,
                ..opts.lab.clone()
            },
        };
        let r = lab.r.as_ref().expect("just set");
        for ns in [&lab.a, r, &lab.b] {
            disable_ipv6(ns)?;
        }
        lab.a
            .ip(&[
                "link",
                "add",
                IF_A,
                "type",
                "veth",
                "peer",
                "name",
                IF_R1,
                "netns",
                r.name(),
            ])
            .map_err(step("veth A-R"))?;
        r.ip(&[
            "link",
            "add",
            IF_R2,
            "type",
            "veth",
            "peer",
            "name",
            IF_B,
            "netns",
            lab.b.name(),
        ])
        .map_err(step("veth R-B"))?;
        let mtu = lab.opts.mtu.to_string();
        for (ns, dev) in [(&lab.a, IF_A), (r, IF_R1), (r, IF_R2), (&lab.b, IF_B)] {
            ns.ip(&["link", "set", dev, "mtu", &mtu])
                .map_err(step("set MTU"))?;
            offloads_off(ns, dev)?;
        }
        for dev in [IF_R1, IF_R2] {
            r.ip(&["link", "set", dev, "promisc", "on", "up"])
                .map_err(step("router link up"))?;
        }
        for (ns, dev, addr) in [(&lab.a, IF_A, ADDR_A), (&lab.b, IF_B, ADDR_B)] {
            ns.ip(&["addr", "add", addr, "dev", dev])
                .map_err(step("address"))?;
            ns.ip(&["link", "set", dev, "up"])
                .map_err(step("link up"))?;
        }
        // Static neighbours: ARP would otherwise cross the emulator and could be lost.
        let mac_a = mac_of(&lab.a, IF_A)?;
        let mac_b = mac_of(&lab.b, IF_B)?;
        let ip_a = strip_prefix(ADDR_A).to_string();
        let ip_b = strip_prefix(ADDR_B).to_string();
        lab.a
            .ip(&[
                "neigh",
                "replace",
                &ip_b,
                "lladdr",
                &mac_b,
                "dev",
                IF_A,
                "nud",
                "permanent",
            ])
            .map_err(step("static neighbour in A"))?;
        lab.b
            .ip(&[
                "neigh",
                "replace",
                &ip_a,
                "lladdr",
                &mac_a,
                "dev",
                IF_B,
                "nud",
                "permanent",
            ])
            .map_err(step("static neighbour in B"))?;

        let max_frame = u64::from(lab.opts.mtu) + 14;
        let rtt = opts.rtt();
        let dirs = vec![
            Direction {
                from_if: IF_R1.into(),
                to_if: IF_R2.into(),
                queue_bytes: opts.a_to_b.resolved_queue_bytes(rtt, max_frame),
                impairment: opts.a_to_b.clone(),
                seed: opts.seed.wrapping_mul(2).wrapping_add(1),
                realtime_priority: opts.realtime_priority,
            },
            Direction {
                from_if: IF_R2.into(),
                to_if: IF_R1.into(),
                queue_bytes: opts.b_to_a.resolved_queue_bytes(rtt, max_frame),
                impairment: opts.b_to_a.clone(),
                seed: opts.seed.wrapping_mul(2).wrapping_add(2),
                realtime_priority: opts.realtime_priority,
            },
        ];
        lab.emulator = Some(WanEmulator::start(r, dirs)?);
        Ok(lab)
    }

    /// Namespace A (the sending side by convention).
    pub fn a(&self) -> &Netns {
        &self.a
    }

    /// Namespace B.
    pub fn b(&self) -> &Netns {
        &self.b
    }

    /// The router namespace (WAN profile only).
    pub fn r(&self) -> Option<&Netns> {
        self.r.as_ref()
    }

    /// Address of A.
    pub fn ip_a(&self) -> Ipv4Addr {
        strip_prefix(ADDR_A)
    }

    /// Address of B.
    pub fn ip_b(&self) -> Ipv4Addr {
        strip_prefix(ADDR_B)
    }

    /// The profile the lab was built with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Common options in effect.
    pub fn options(&self) -> &LabOptions {
        &self.opts
    }

    /// The running emulator (WAN profile only).
    pub fn emulator(&self) -> Option<&WanEmulator> {
        self.emulator.as_ref()
    }

    /// Emulator counters `(a_to_b, b_to_a)` (WAN profile only).
    pub fn counters(&self) -> Option<(Counters, Counters)> {
        let c = self.emulator.as_ref()?.counters();
        Some((c[0], c[1]))
    }
}

/// What [`cleanup_stale`] removed.
#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    /// Processes killed because they still ran inside a stale namespace: (pid, command).
    pub killed: Vec<(u32, String)>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
}

fn owner_alive(name: &str) -> bool {
    let pid: Option<u32> = name
        .strip_prefix("dwcp-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse().ok());
    // A zombie (exited, not yet reaped) counts as gone.
    pid.is_some_and(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    })
}

/// Removes leftovers of interrupted runs: first kills processes (iperf3 servers, shells)
/// still running inside a `dwcp-*` namespace whose creating process is gone (they would keep
/// the namespace and its veths alive after `ip netns del`), then deletes those namespaces
/// with [`dwcp_netns::cleanup_stale`].
pub fn cleanup_stale() -> Result<CleanupReport, LabError> {
    let mut report = CleanupReport::default();
    let list = dwcp_netns::run(Command::new("ip").args(["netns", "list"]))
        .map_err(step("ip netns list"))?;
    let mut stale = Vec::new();
    let mut stale_names = Vec::new();
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with("dwcp-")
            && !owner_alive(name)
            && let Ok(m) = std::fs::metadata(Path::new("/run/netns").join(name))
        {
            stale.push((m.dev(), m.ino()));
            stale_names.push(name.to_string());
        }
    }
    if !stale.is_empty() {
        let me = std::process::id();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                    continue;
                };
                if stale.contains(&(m.dev(), m.ino())) {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    let target = nix::unistd::Pid::from_raw(pid as i32);
                    if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
                        report.killed.push((pid, comm));
                    }
                }
            }
        }
        // Give the killed processes a moment to exit and release the namespaces.
        if !report.killed.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    report.namespaces = dwcp_netns::cleanup_stale().map_err(step("delete stale namespaces"))?;
    // Namespaces whose owner is a zombie are still "alive" to dwcp_netns: delete them here.
    for name in stale_names {
        if !report.namespaces.contains(&name) {
            dwcp_netns::run(Command::new("ip").args(["netns", "del", &name]))
                .map_err(step("delete stale namespace"))?;
            report.namespaces.push(name);
        }
    }
    Ok(report)
}
