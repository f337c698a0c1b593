//! Reading this machine: online cores and their NUMA nodes, CPU model and SIMD level,
//! hugepages ([`Host`]), one network interface ([`IfaceInfo`]), and a profile built from
//! them ([`detect_profile`]).
//!
//! Cores, nodes and hugepages come from sysfs and procfs (no hwloc, see
//! docs/decisions/hw-profiles.md). Interfaces come from `ip -j -d link show` and
//! `ethtool -i`, which answer for the caller's network namespace; `/sys/class/net` answers
//! for the namespace sysfs was mounted in, so it is used only as a fallback and only when its
//! ifindex agrees with `ip`'s. This module does not judge a profile ([`crate::validate`]
//! does) and does not measure performance ([`crate::tune`] drives a caller's measurement).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::DetectError;
use crate::schema::{Cpu, Nic, Profile, Rings, SimdLevel, Targets, Transfer, XdpMode};
use crate::validate::FRAME_OVERHEAD;

/// Where sysfs and procfs are mounted (tests point these at a fake tree).
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// sysfs root, normally `/sys`.
    pub sys: PathBuf,
    /// procfs root, normally `/proc`.
    pub proc: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
            proc: PathBuf::from("/proc"),
        }
    }
}

/// Hugepage state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hugepages {
    /// Default hugepage size in KiB (`Hugepagesize`), 0 if unknown.
    pub default_size_kib: u64,
    /// Reserved pages of the default size (`HugePages_Total`).
    pub total: u64,
    /// Free pages of the default size (`HugePages_Free`).
    pub free: u64,
    /// Page sizes the kernel supports (from `/sys/kernel/mm/hugepages/hugepages-*kB`).
    pub sizes_kib: Vec<u64>,
}

impl Hugepages {
    /// Free hugepage memory of the default size, in KiB.
    pub fn free_kib(&self) -> u64 {
        self.free * self.default_size_kib
    }
}

/// What the host is.
#[derive(Debug, Clone)]
pub struct Host {
    /// CPU model name (`model name` in /proc/cpuinfo), `unknown` if absent.
    pub cpu_model: String,
    /// Best SIMD level the CPU supports.
    pub simd: SimdLevel,
    /// Online logical CPUs, ascending.
    pub online_cpus: Vec<u32>,
    /// NUMA node of each CPU that sysfs lists under a node.
    pub cpu_nodes: BTreeMap<u32, u32>,
    /// Hugepages.
    pub hugepages: Hugepages,
    /// The interface a profile names, as seen from this namespace (`None`: none was asked for).
    pub interface: Option<InterfaceState>,
}

/// Result of looking an interface up.
#[derive(Debug, Clone)]
pub enum InterfaceState {
    /// It exists.
    Found(IfaceInfo),
    /// It does not exist (or could not be read) in this namespace.
    Missing {
        /// Name looked up.
        name: String,
        /// Why.
        detail: String,
    },
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Name.
    pub name: String,
    /// Interface index in its namespace.
    pub ifindex: u32,
    /// Kernel driver (`ethtool -i`), or the link kind (`veth`), or `unknown`.
    pub driver: String,
    /// Link kind from `ip -d` (`veth`, `bond`, ...), `None` for plain devices.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Largest MTU the device accepts, if reported.
    pub max_mtu: Option<u32>,
    /// Receive queues.
    pub rx_queues: u32,
    /// Transmit queues.
    pub tx_queues: u32,
    /// NUMA node of the device, when sysfs describes this same device and knows it.
    pub numa_node: Option<u32>,
    /// Channels in use and their maximums (`ethtool -l`, ETHTOOL_MSG_CHANNELS_GET over the
    /// ethtool netlink family), when the driver reports them.
    pub channels: Option<Channels>,
    /// Where the facts came from (`ip+ethtool`, `ip`, `sysfs`).
    pub source: &'static str,
}

/// A device's channels (`ethtool -l`): what is configured now and the most it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Channels {
    /// Receive-only channels now.
    pub rx: u32,
    /// Transmit-only channels now.
    pub tx: u32,
    /// Combined (rx + tx) channels now.
    pub combined: u32,
    /// Most receive-only channels.
    pub max_rx: u32,
    /// Most transmit-only channels.
    pub max_tx: u32,
    /// Most combined channels.
    pub max_combined: u32,
}

impl Channels {
    /// Queue pairs an AF_XDP socket each can bind to now: combined channels plus paired
    /// rx/tx channels.
    pub fn queue_pairs(&self) -> u32 {
        self.combined + self.rx.min(self.tx)
    }
}

impl IfaceInfo {
    /// Queues usable with one AF_XDP socket each (rx and tx paired): the channels in use
    /// when ethtool reports them (a multi-queue NIC allocates more queues than it runs),
    /// else the queues the device has.
    pub fn queues(&self) -> u32 {
        match self.channels.map(|c| c.queue_pairs()) {
            Some(n) if n > 0 => n.min(self.rx_queues.min(self.tx_queues).max(1)),
            _ => self.rx_queues.min(self.tx_queues).max(1),
        }
    }
}

impl Host {
    /// Reads this machine (no interface).
    pub fn detect() -> Result<Self, DetectError> {
        Self::detect_at(&HostPaths::default())
    }

    /// Reads this machine and the interface `profile` names, if any.
    pub fn detect_for(profile: &Profile) -> Result<Self, DetectError> {
        let mut h = Self::detect()?;
        if let Some(name) = &profile.nic.interface {
            h.interface = Some(match interface_info(name) {
                Ok(info) => InterfaceState::Found(info),
                Err(e) => InterfaceState::Missing {
                    name: name.clone(),
                    detail: e.to_string(),
                },
            });
        }
        Ok(h)
    }

    /// Reads the machine whose sysfs and procfs are at `paths`. SIMD comes from the running
    /// CPU whatever the paths say.
    pub fn detect_at(paths: &HostPaths) -> Result<Self, DetectError> {
        let online_path = paths.sys.join("devices/system/cpu/online");
        let online = read(&online_path)?;
        let online_cpus = parse_cpulist(&online).map_err(|what| DetectError::Format {
            path: online_path.clone(),
            what,
        })?;
        let cpu_nodes = read_cpu_nodes(&paths.sys.join("devices/system/node"))?;
        let cpu_model = read_cpu_model(&paths.proc.join("cpuinfo"))?;
        let hugepages = read_hugepages(paths)?;
        Ok(Self {
            cpu_model,
            simd: simd_level(),
            online_cpus,
            cpu_nodes,
            hugepages,
            interface: None,
        })
    }

    /// NUMA node of `cpu` (0 on machines without NUMA information).
    pub fn node_of(&self, cpu: u32) -> u32 {
        self.cpu_nodes.get(&cpu).copied().unwrap_or(0)
    }
}

fn read(path: &Path) -> Result<String, DetectError> {
    std::fs::read_to_string(path).map_err(|source| DetectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a kernel CPU list such as `0-3,8,10-11` into ascending ids.
pub fn parse_cpulist(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|e| format!("bad cpu id {t:?} in {s:?}: {e}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("descending range {part:?} in {s:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Formats ids as a kernel CPU list (`0-3,8`).
pub fn format_cpulist(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn read_cpu_nodes(node_dir: &Path) -> Result<BTreeMap<u32, u32>, DetectError> {
    let mut map = BTreeMap::new();
    let entries = match std::fs::read_dir(node_dir) {
        Ok(e) => e,
        // No NUMA support compiled in: every CPU is on node 0 (see `Host::node_of`).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(source) => {
            return Err(DetectError::Read {
                path: node_dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| DetectError::Read {
            path: node_dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(node) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path().join("cpulist");
        let cpus =
            parse_cpulist(&read(&path)?).map_err(|what| DetectError::Format { path, what })?;
        for c in cpus {
            map.insert(c, node);
        }
    }
    Ok(map)
}

fn read_cpu_model(path: &Path) -> Result<String, DetectError> {
    let text = read(path)?;
    Ok(text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".to_string()))
}

fn read_hugepages(paths: &HostPaths) -> Result<Hugepages, DetectError> {
    let meminfo = read(&paths.proc.join("meminfo"))?;
    let mut h = Hugepages::default();
    for line in meminfo.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let n = v
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        match (k.trim(), n) {
            ("HugePages_Total", Some(n)) => h.total = n,
            ("HugePages_Free", Some(n)) => h.free = n,
            ("Hugepagesize", Some(n)) => h.default_size_kib = n,
            _ => {}
        }
    }
    if let Ok(dir) = std::fs::read_dir(paths.sys.join("kernel/mm/hugepages")) {
        for e in dir.flatten() {
            if let Some(kib) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("hugepages-"))
                .and_then(|n| n.strip_suffix("kB"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                h.sizes_kib.push(kib);
            }
        }
        h.sizes_kib.sort_unstable();
    }
    Ok(h)
}

/// Best SIMD level of the running CPU.
pub fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Scalar
}

/// Drivers whose AF_XDP sockets bind in copy mode only.
pub fn copy_only_driver(driver: &str) -> bool {
    matches!(driver, "veth" | "tun" | "bridge" | "bonding" | "loopback")
}

/// Drivers known to support AF_XDP zero-copy (kernel `ndo_xsk_wakeup` implementers).
pub fn zero_copy_driver(driver: &str) -> bool {
    matches!(
        driver,
        "mlx5_core" | "ice" | "i40e" | "ixgbe" | "igc" | "igb" | "stmmac" | "idpf" | "mlx4_en"
    ) || driver.starts_with("bnxt")
}

/// Drivers known to run XDP programs in driver (native) mode.
pub fn native_xdp_driver(driver: &str) -> bool {
    zero_copy_driver(driver)
        || matches!(
            driver,
            "veth" | "virtio_net" | "tun" | "ena" | "nfp" | "qede" | "mvneta" | "hv_netvsc"
        )
}

/// Looks an interface up in the caller's network namespace.
pub fn interface_info(name: &str) -> Result<IfaceInfo, DetectError> {
    if !crate::validate::valid_ifname(name) {
        return Err(DetectError::NoInterface {
            name: name.to_string(),
            detail: "not a valid interface name".into(),
        });
    }
    match Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", name])
        .output()
    {
        Ok(out) if out.status.success() => {
            let mut info = parse_ip_link_json(name, &String::from_utf8_lossy(&out.stdout))?;
            if let Some(driver) = ethtool_driver(name) {
                info.driver = driver;
                info.source = "ip+ethtool";
            }
            info.channels = ethtool_channels(name);
            info.numa_node = sysfs_numa_node(name, info.ifindex);
            Ok(info)
        }
        Ok(out) => Err(DetectError::NoInterface {
            name: name.to_string(),
            detail: format!(
                "ip link show: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        // No `ip` binary: sysfs is all there is.
        Err(_) => sysfs_interface(name),
    }
}

/// Parses `ip -j -d link show dev NAME` output.
pub fn parse_ip_link_json(name: &str, json: &str) -> Result<IfaceInfo, DetectError> {
    let bad = |what: String| DetectError::Format {
        path: PathBuf::from(format!("ip -j -d link show dev {name}")),
        what,
    };
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let link = v
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| bad("empty answer".into()))?;
    let num = |k: &str| link.get(k).and_then(|x| x.as_u64()).map(|x| x as u32);
    let kind = link
        .get("linkinfo")
        .and_then(|l| l.get("info_kind"))
        .and_then(|k| k.as_str())
        .map(str::to_string);
    Ok(IfaceInfo {
        name: link
            .get("ifname")
            .and_then(|n| n.as_str())
            .unwrap_or(name)
            .to_string(),
        ifindex: num("ifindex").ok_or_else(|| bad("no ifindex".into()))?,
        driver: kind.clone().unwrap_or_else(|| "unknown".into()),
        kind,
        mtu: num("mtu").ok_or_else(|| bad("no mtu".into()))?,
        max_mtu: num("max_mtu").filter(|&m| m > 0),
        rx_queues: num("num_rx_queues").unwrap_or(1),
        tx_queues: num("num_tx_queues").unwrap_or(1),
        numa_node: None,
        channels: None,
        source: "ip",
    })
}

/// Parses `ethtool -l` text: the "Pre-set maximums" and "Current hardware settings"
/// blocks (`n/a` counts as 0). `None` when neither block is there.
pub fn parse_ethtool_channels(text: &str) -> Option<Channels> {
    let mut c = Channels::default();
    let mut block = 0; // 1 = maximums, 2 = current
    let mut seen = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Pre-set maximums") {
            block = 1;
            continue;
        }
        if l.starts_with("Current hardware settings") {
            block = 2;
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v: u32 = v.trim().parse().unwrap_or(0);
        let slot = match (block, k.trim()) {
            (1, "RX") => &mut c.max_rx,
            (1, "TX") => &mut c.max_tx,
            (1, "Combined") => &mut c.max_combined,
            (2, "RX") => &mut c.rx,
            (2, "TX") => &mut c.tx,
            (2, "Combined") => &mut c.combined,
            _ => continue,
        };
        *slot = v;
        seen = true;
    }
    seen.then_some(c)
}

fn ethtool_channels(name: &str) -> Option<Channels> {
    let out = Command::new("ethtool").args(["-l", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_ethtool_channels(&String::from_utf8_lossy(&out.stdout))
}

/// Parses the `driver:` line of `ethtool -i`.
pub fn parse_ethtool_driver(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("driver:"))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
}

fn ethtool_driver(name: &str) -> Option<String> {
    let out = Command::new("ethtool").args(["-i", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_ethtool_driver(&String::from_utf8_lossy(&out.stdout))
}

fn sysfs_numa_node(name: &str, ifindex: u32) -> Option<u32> {
    let dir = Path::new("/sys/class/net").join(name);
    // sysfs may show another namespace's device of the same name: trust it only when the
    // ifindex agrees.
    let idx: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if idx != ifindex {
        return None;
    }
    let n: i64 = std::fs::read_to_string(dir.join("device/numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    u32::try_from(n).ok()
}

fn sysfs_interface(name: &str) -> Result<IfaceInfo, DetectError> {
    let dir = Path::new("/sys/class/net").join(name);
    let read_u32 = |f: &str| -> Result<u32, DetectError> {
        let p = dir.join(f);
        read(&p)?.trim().parse().map_err(|e| DetectError::Format {
            path: p.clone(),
            what: format!("{e}"),
        })
    };
    let ifindex = read_u32("ifindex").map_err(|e| DetectError::NoInterface {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    let count = |prefix: &str| {
        std::fs::read_dir(dir.join("queues"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1)
    };
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    Ok(IfaceInfo {
        name: name.to_string(),
        ifindex,
        driver,
        kind: None,
        mtu: read_u32("mtu")?,
        max_mtu: None,
        rx_queues: count("rx-"),
        tx_queues: count("tx-"),
        numa_node: sysfs_numa_node(name, ifindex),
        channels: None,
        source: "sysfs",
    })
}

/// Builds a profile for this machine and, if given, the interface `iface` (looked up in the
/// caller's network namespace).
pub fn detect_profile(iface: Option<&str>) -> Result<Profile, DetectError> {
    let host = Host::detect()?;
    let info = iface.map(interface_info).transpose()?;
    Ok(profile_from(&host, info.as_ref()))
}

/// The profile [`detect_profile`] builds from already-read facts.
pub fn profile_from(host: &Host, info: Option<&IfaceInfo>) -> Profile {
    let defaults = Profile::embedded_default();
    // One worker per queue; without an interface, one per online core.
    let wanted = info
        .map(|i| i.queues() as usize)
        .unwrap_or(host.online_cpus.len())
        .clamp(1, host.online_cpus.len().max(1));
    // Prefer cores on the NIC's node, then the others in id order.
    let mut cores = host.online_cpus.clone();
    if let Some(node) = info.and_then(|i| i.numa_node) {
        cores.sort_by_key(|&c| (host.node_of(c) != node, c));
    }
    cores.truncate(wanted);
    if cores.is_empty() {
        cores.push(0);
    }
    let numa_nodes = cores.iter().map(|&c| host.node_of(c)).collect();

    let driver = info
        .map(|i| i.driver.clone())
        .unwrap_or_else(|| "any".into());
    let mtu = info.map(|i| i.mtu).unwrap_or(defaults.nic.mtu);
    let native = info.is_some() && native_xdp_driver(&driver);
    let frame_size = 4096;
    let queues = cores.len() as u32;
    let mut rings = Rings {
        frame_size,
        multi_buffer: mtu + FRAME_OVERHEAD > frame_size,
        ..defaults.rings.clone()
    };
    let umem = u64::from(queues) * u64::from(rings.umem_frames) * u64::from(frame_size);
    rings.hugepages = host.hugepages.free_kib() >= umem / 1024 && host.hugepages.free > 0;

    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .unwrap_or_default();
    let mut name = format!("detected-{host_name}");
    name.truncate(64);
    let name = name.trim_end_matches('-').to_string();

    Profile {
        name,
        description: format!(
            "Detected by `dwcp-hw detect{}`: {} online cores, interface {}. Targets are the \
             embedded default's floors, not measured on this host.",
            iface_arg(info),
            host.online_cpus.len(),
            info.map(|i| format!("{} ({}, via {})", i.name, i.driver, i.source))
                .unwrap_or_else(|| "not given".into()),
        ),
        example: false,
        cpu: Cpu {
            model: host.cpu_model.clone(),
            simd: host.simd,
            worker_cores: cores,
            numa_nodes,
        },
        nic: Nic {
            interface: info.map(|i| i.name.clone()),
            driver,
            queues,
            mtu,
            xdp_mode: if native {
                XdpMode::Native
            } else {
                XdpMode::Generic
            },
            zero_copy: native && zero_copy_driver(info.map(|i| i.driver.as_str()).unwrap_or("")),
        },
        rings,
        transfer: Transfer {
            ..defaults.transfer.clone()
        },
        targets: Targets {
            source: Some("embedded default profile: conservative floors (a quarter of the lab's measured veth copy-mode rates), not measured on this machine; certify it and set its own".into()),
            ..defaults.targets.clone()
        },
        tuning: None,
        measurements: Vec::new(),
    }
}

fn iface_arg(info: Option<&IfaceInfo>) -> String {
    info.map(|i| format!(" --iface {}", i.name))
        .unwrap_or_default()
}
