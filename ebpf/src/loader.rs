//! Loads the embedded XDP object with aya, attaches it to one interface, and gives typed
//! access to its maps: configuration, the XSKMAP of AF_XDP sockets, the relay DEVMAP and
//! the per-CPU counters.
//!
//! Owns: the lifetime of one attachment. Attachment uses a BPF link (aya's default on
//! kernels that have it), so the program detaches when the owning [`XdpProgram`] is dropped
//! *and* when the process dies without running destructors (the link's file descriptor is
//! the only reference). Does not: create AF_XDP sockets or UMEMs (the dataplane's AF_XDP
//! backend does), pin anything to bpffs, or rewrite frames.

use std::fmt;
use std::os::fd::BorrowedFd;

use aya::maps::{Array, DevMap, MapError, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError};

use crate::maps::{
    CFG_RELAY, CONFIG_SIZE, COUNTER_COUNT, Config, Counter, Counters, MAX_PORTS, MAX_QUEUES, names,
};

/// The compiled XDP object (built by build.rs from `xdp/dwcp_xdp.c`).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dwcp_xdp.o"));

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// In the driver (`xdpdrv`): fastest; needs driver support (veth, mlx5, ice, i40e...).
    Native,
    /// In the generic network stack (`xdpgeneric`): works on any interface, slower.
    Generic,
}

impl AttachMode {
    fn aya(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }

    /// The keyword `ip link` prints for a program attached in this mode.
    pub const fn ip_link_keyword(self) -> &'static str {
        match self {
            AttachMode::Native => "xdp",
            AttachMode::Generic => "xdpgeneric",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// What the program steers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramConfig {
    /// UDP destination ports carrying DWCP (1 to [`MAX_PORTS`], none of them 0).
    pub dwcp_ports: Vec<u16>,
    /// Relay mode: send valid DWCP frames out of this interface (by index, in the
    /// program's network namespace) instead of to AF_XDP sockets.
    pub relay_ifindex: Option<u32>,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        Self {
            dwcp_ports: vec![crate::maps::DEFAULT_PORT],
            relay_ifindex: None,
        }
    }
}

impl ProgramConfig {
    /// The kernel configuration record for this config, after validation.
    pub fn to_map_config(&self) -> Result<Config, ConfigError> {
        if self.dwcp_ports.is_empty() || self.dwcp_ports.len() > MAX_PORTS {
            return Err(ConfigError::PortCount {
                count: self.dwcp_ports.len(),
            });
        }
        if self.dwcp_ports.contains(&0) {
            return Err(ConfigError::ZeroPort);
        }
        if self.relay_ifindex == Some(0) {
            return Err(ConfigError::ZeroRelayIfindex);
        }
        let mut ports = [0u16; MAX_PORTS];
        ports[..self.dwcp_ports.len()].copy_from_slice(&self.dwcp_ports);
        Ok(Config {
            ports,
            flags: if self.relay_ifindex.is_some() {
                CFG_RELAY
            } else {
                0
            },
            reserved: 0,
        })
    }
}

/// An invalid [`ProgramConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Wrong number of ports.
    #[error("dwcp_ports must hold 1 to {MAX_PORTS} ports, got {count}")]
    PortCount {
        /// Ports given.
        count: usize,
    },
    /// Port 0 cannot be matched (it marks unused slots).
    #[error("dwcp_ports must not contain port 0")]
    ZeroPort,
    /// Interface index 0 does not exist.
    #[error("relay_ifindex must not be 0")]
    ZeroRelayIfindex,
}

/// Errors from loading, attaching and driving the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration was rejected before touching the kernel.
    #[error("invalid XDP program config for {ifname}")]
    Config {
        /// Interface.
        ifname: String,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
    /// The interface does not exist in this network namespace.
    #[error("no interface named {ifname:?} in this network namespace")]
    UnknownInterface {
        /// Interface.
        ifname: String,
        /// From if_nametoindex.
        #[source]
        source: nix::Error,
    },
    /// aya could not parse the object or create its maps.
    #[error("loading the DWCP XDP object for {ifname} failed")]
    Object {
        /// Interface.
        ifname: String,
        /// From aya.
        #[source]
        source: Box<EbpfError>,
    },
    /// The object lacks a program or map this crate expects (build mismatch).
    #[error("the DWCP XDP object has no {what} named {name:?}")]
    Missing {
        /// "program" or "map".
        what: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The verifier rejected the program, or the kernel refused to attach it.
    #[error("{op} of the DWCP XDP program on {ifname} ({mode} mode) failed")]
    Program {
        /// "load", "attach" or "detach".
        op: &'static str,
        /// Interface.
        ifname: String,
        /// Attach mode.
        mode: AttachMode,
        /// From aya (the verifier log is in it for a load failure).
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("{op} on map {map} of the DWCP XDP program on {ifname} ({mode} mode) failed")]
    Map {
        /// What was being done.
        op: &'static str,
        /// Map name.
        map: &'static str,
        /// Interface.
        ifname: String,
        /// Attach mode.
        mode: AttachMode,
        /// From aya.
        #[source]
        source: Box<MapError>,
    },
    /// Setting the relay DEVMAP entry failed.
    #[error("setting relay interface {relay_ifindex} for the DWCP XDP program on {ifname} failed")]
    Relay {
        /// Interface.
        ifname: String,
        /// Relay target.
        relay_ifindex: u32,
        /// From aya.
        #[source]
        source: Box<aya::maps::xdp::XdpMapError>,
    },
    /// The queue has no XSKMAP slot.
    #[error("queue {queue} on {ifname} is outside the XSKMAP (0..{max})")]
    QueueOutOfRange {
        /// Queue requested.
        queue: u32,
        /// Interface.
        ifname: String,
        /// Number of XSKMAP slots.
        max: u32,
    },
}

/// The DWCP XDP program attached to one interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct XdpProgram {
    // Field order matters only for clarity: `Drop` detaches explicitly before `ebpf` goes.
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    ifname: String,
    ifindex: u32,
    mode: AttachMode,
    config: ProgramConfig,
}

impl XdpProgram {
    /// Loads the program, writes `cfg` into its maps, and attaches it to `ifname` (in the
    /// calling thread's network namespace) in `mode`.
    pub fn attach(ifname: &str, mode: AttachMode, cfg: &ProgramConfig) -> Result<Self, LoadError> {
        let map_cfg = cfg.to_map_config().map_err(|source| LoadError::Config {
            ifname: ifname.to_string(),
            source,
        })?;
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|source| {
            LoadError::UnknownInterface {
                ifname: ifname.to_string(),
                source,
            }
        })?;
        raise_memlock_rlimit();
        let ebpf = Ebpf::load(XDP_OBJECT).map_err(|source| LoadError::Object {
            ifname: ifname.to_string(),
            source: Box::new(source),
        })?;
        let mut this = Self {
            ebpf,
            link: None,
            ifname: ifname.to_string(),
            ifindex,
            mode,
            config: cfg.clone(),
        };
        // Configure before attaching, so the first frame already sees the right ports.
        this.write_config(&map_cfg, cfg.relay_ifindex)?;
        let prog = this.xdp_mut()?;
        prog.load().map_err(|source| LoadError::Program {
            op: "load",
            ifname: ifname.to_string(),
            mode,
            source: Box::new(source),
        })?;
        let link = prog
            .attach_to_if_index(ifindex, mode.aya())
            .map_err(|source| LoadError::Program {
                op: "attach",
                ifname: ifname.to_string(),
                mode,
                source: Box::new(source),
            })?;
        this.link = Some(link);
        Ok(this)
    }

    /// Puts the AF_XDP socket `fd` (bound to `queue` of this interface) into the XSKMAP, so
    /// valid DWCP frames received on that queue go to it.
    pub fn register_socket(&mut self, queue: u32, fd: BorrowedFd<'_>) -> Result<(), LoadError> {
        self.check_queue(queue)?;
        let (ifname, mode) = (self.ifname.clone(), self.mode);
        let mut map = self.xsk_map()?;
        map.set(queue, fd, 0).map_err(|source| LoadError::Map {
            op: "register socket",
            map: names::XSKS,
            ifname,
            mode,
            source: Box::new(source),
        })
    }

    /// Removes the socket of `queue` from the XSKMAP; frames on that queue then pass to the
    /// kernel stack (counted as `no_socket`). Removing an empty slot is not an error.
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), LoadError> {
        self.check_queue(queue)?;
        let (ifname, mode) = (self.ifname.clone(), self.mode);
        let mut map = self.xsk_map()?;
        match map.unset(queue) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc_enoent()) => {
                Ok(())
            }
            Err(source) => Err(LoadError::Map {
                op: "unregister socket",
                map: names::XSKS,
                ifname,
                mode,
                source: Box::new(source),
            }),
        }
    }

    /// All counters, each summed over CPUs.
    pub fn counters(&self) -> Result<Counters, LoadError> {
        let map = self.ebpf.map(names::COUNTERS).ok_or(LoadError::Missing {
            what: "map",
            name: names::COUNTERS,
        })?;
        let arr = PerCpuArray::<_, u64>::try_from(map)
            .map_err(|e| self.map_err("open", names::COUNTERS, e))?;
        let mut values = [0u64; COUNTER_COUNT];
        for c in Counter::ALL {
            let per_cpu = arr
                .get(&c.index(), 0)
                .map_err(|e| self.map_err("read", names::COUNTERS, e))?;
            values[c as usize] = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(Counters::from_values(values))
    }

    /// How the program is attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Interface name given to [`XdpProgram::attach`].
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Interface index the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProgramConfig {
        &self.config
    }

    /// Replaces the configuration (ports, relay) while attached. The port set and relay
    /// flag change with one map write; frames in flight see either the old or new record.
    pub fn set_config(&mut self, cfg: &ProgramConfig) -> Result<(), LoadError> {
        let map_cfg = cfg.to_map_config().map_err(|source| LoadError::Config {
            ifname: self.ifname.clone(),
            source,
        })?;
        self.write_config(&map_cfg, cfg.relay_ifindex)?;
        self.config = cfg.clone();
        Ok(())
    }

    /// The kernel's id of the loaded program (as `ip link` and `bpftool` show it).
    pub fn program_id(&self) -> Result<u32, LoadError> {
        let prog: &Xdp = self
            .ebpf
            .program(names::PROGRAM)
            .ok_or(LoadError::Missing {
                what: "program",
                name: names::PROGRAM,
            })?
            .try_into()
            .map_err(|source| self.prog_err("info", source))?;
        prog.info()
            .map(|i| i.id())
            .map_err(|source| self.prog_err("info", source))
    }

    fn write_config(&mut self, cfg: &Config, relay: Option<u32>) -> Result<(), LoadError> {
        let (ifname, mode) = (self.ifname.clone(), self.mode);
        // Relay target first, then the flag that makes the program use it.
        if let Some(relay_ifindex) = relay {
            let map = self.ebpf.map_mut(names::RELAY).ok_or(LoadError::Missing {
                what: "map",
                name: names::RELAY,
            })?;
            let mut devmap = DevMap::try_from(map).map_err(|source| LoadError::Map {
                op: "open",
                map: names::RELAY,
                ifname: ifname.clone(),
                mode,
                source: Box::new(source),
            })?;
            devmap
                .set(0, relay_ifindex, None, 0)
                .map_err(|source| LoadError::Relay {
                    ifname: ifname.clone(),
                    relay_ifindex,
                    source: Box::new(source),
                })?;
        }
        let map = self.ebpf.map_mut(names::CONFIG).ok_or(LoadError::Missing {
            what: "map",
            name: names::CONFIG,
        })?;
        let mut arr =
            Array::<_, [u8; CONFIG_SIZE]>::try_from(map).map_err(|source| LoadError::Map {
                op: "open",
                map: names::CONFIG,
                ifname: ifname.clone(),
                mode,
                source: Box::new(source),
            })?;
        arr.set(0, cfg.to_bytes(), 0)
            .map_err(|source| LoadError::Map {
                op: "write config",
                map: names::CONFIG,
                ifname,
                mode,
                source: Box::new(source),
            })
    }

    fn xdp_mut(&mut self) -> Result<&mut Xdp, LoadError> {
        let (ifname, mode) = (self.ifname.clone(), self.mode);
        self.ebpf
            .program_mut(names::PROGRAM)
            .ok_or(LoadError::Missing {
                what: "program",
                name: names::PROGRAM,
            })?
            .try_into()
            .map_err(|source| LoadError::Program {
                op: "load",
                ifname,
                mode,
                source: Box::new(source),
            })
    }

    fn xsk_map(&mut self) -> Result<XskMap<&mut aya::maps::MapData>, LoadError> {
        let (ifname, mode) = (self.ifname.clone(), self.mode);
        let map = self.ebpf.map_mut(names::XSKS).ok_or(LoadError::Missing {
            what: "map",
            name: names::XSKS,
        })?;
        XskMap::try_from(map).map_err(|source| LoadError::Map {
            op: "open",
            map: names::XSKS,
            ifname,
            mode,
            source: Box::new(source),
        })
    }

    fn check_queue(&self, queue: u32) -> Result<(), LoadError> {
        if queue >= MAX_QUEUES {
            return Err(LoadError::QueueOutOfRange {
                queue,
                ifname: self.ifname.clone(),
                max: MAX_QUEUES,
            });
        }
        Ok(())
    }

    fn map_err(&self, op: &'static str, map: &'static str, source: MapError) -> LoadError {
        LoadError::Map {
            op,
            map,
            ifname: self.ifname.clone(),
            mode: self.mode,
            source: Box::new(source),
        }
    }

    fn prog_err(&self, op: &'static str, source: ProgramError) -> LoadError {
        LoadError::Program {
            op,
            ifname: self.ifname.clone(),
            mode: self.mode,
            source: Box::new(source),
        }
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Some(link) = self.link.take()
            && let Ok(prog) = self.xdp_mut()
        {
            // Dropping `ebpf` would detach too; doing it here keeps the order explicit.
            let _ = prog.detach(link);
        }
    }
}

const fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps against it (before 5.11;
/// newer kernels charge the memory cgroup and ignore it). Best effort: if it fails, map
/// creation reports the real error.
fn raise_memlock_rlimit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_MEMLOCK)
        && soft != RLIM_INFINITY
    {
        let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let ok = ProgramConfig {
            dwcp_ports: vec![7470, 7471],
            relay_ifindex: None,
        };
        let c = ok.to_map_config().unwrap();
        assert_eq!(c.ports, [7470, 7471, 0, 0]);
        assert_eq!(c.flags, 0);
        let relay = ProgramConfig {
            relay_ifindex: Some(3),
            ..ProgramConfig::default()
        };
        assert_eq!(relay.to_map_config().unwrap().flags, CFG_RELAY);
        for (ports, err) in [
            (vec![], ConfigError::PortCount { count: 0 }),
            (vec![1, 2, 3, 4, 5], ConfigError::PortCount { count: 5 }),
            (vec![7470, 0], ConfigError::ZeroPort),
        ] {
            let cfg = ProgramConfig {
                dwcp_ports: ports,
                relay_ifindex: None,
            };
            assert_eq!(cfg.to_map_config(), Err(err));
        }
    }

    #[test]
    fn embedded_object_is_a_bpf_elf_with_the_expected_names() {
        assert_eq!(&XDP_OBJECT[..4], b"\x7fELF");
        // e_machine at offset 18: EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([XDP_OBJECT[18], XDP_OBJECT[19]]), 247);
        let has = |s: &str| XDP_OBJECT.windows(s.len()).any(|w| w == s.as_bytes());
        for name in [
            names::PROGRAM,
            names::CONFIG,
            names::XSKS,
            names::RELAY,
            names::COUNTERS,
            "xdp.frags",
        ] {
            assert!(has(name), "object lacks {name}");
        }
    }

    #[test]
    fn attach_to_missing_interface_names_it() {
        let err = XdpProgram::attach("no-such-if0", AttachMode::Native, &ProgramConfig::default())
            .unwrap_err();
        assert!(matches!(err, LoadError::UnknownInterface { .. }));
        assert!(err.to_string().contains("no-such-if0"));
    }
}
