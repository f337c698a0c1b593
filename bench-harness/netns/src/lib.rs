//! Network-namespace lab primitives for tests, benchmarks and the demo.
//!
//! Owns: creating and deleting named network namespaces, joining two of them with a veth
//! pair (addresses, MTU, queue count), running a command or a closure inside a namespace,
//! and cleaning up namespaces left behind by an interrupted run (every namespace this crate
//! makes is named `dwcp-<pid>-<n>-<tag>`, so [`cleanup_stale`] can find the ones whose
//! process is gone).
//!
//! Does not: emulate WAN impairments (that is the bench-harness WAN emulator), attach XDP
//! programs, or know anything about DWCP. It shells out to `ip` (iproute2) on purpose:
//! that is what an operator would type, and it keeps this crate free of netlink code.
#![forbid(unsafe_code)]

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors from lab set-up.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces).
    #[error("the network-namespace lab needs root (running as uid {uid})")]
    NotRoot {
        /// Effective uid of this process.
        uid: u32,
    },
    /// A command could not be started.
    #[error("could not run `{cmd}`")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed with {status}: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote on stderr.
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("could not enter network namespace {ns}")]
    Setns {
        /// Namespace name.
        ns: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Returns `Ok(())` when the process may build a lab, or [`LabError::NotRoot`].
pub fn require_root() -> Result<(), LabError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { uid })
    }
}

/// For tests that need root: returns `true` when they can run. When they cannot, prints a
/// loud banner on stderr and returns `false`; under CI (`CI` set) it panics instead, because
/// CI runs as root and a privileged test that silently skips there would be a lie.
pub fn privileged_test_guard(test: &str) -> bool {
    match require_root() {
        Ok(()) => true,
        Err(e) => {
            let msg = format!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! PRIVILEGED TEST `{test}` NOT RUN: {e}\n\
                 !!! run the tests as root (CI does) to exercise it\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("{msg}");
            false
        }
    }
}

/// Runs a command and returns its output, or an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, LabError> {
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output, LabError> {
    run(Command::new("ip").args(args))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace named `dwcp-<pid>-<n>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> Result<Self, LabError> {
        require_root()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("dwcp-{}-{}-{}", std::process::id(), n, tag);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// Sockets made inside `f` belong to the namespace for their whole life.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LabError> {
        let handle = self.spawn_in(f)?;
        Ok(handle.join().expect("thread inside namespace panicked"))
    }

    /// Spawns a thread that enters this namespace, then runs `f`.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, LabError> {
        let file = self.open()?;
        let ns = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            match nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                Ok(()) => {
                    let _ = tx.send(Ok(()));
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::from(e)));
                    panic!("setns failed");
                }
            }
            f()
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(source)) => Err(LabError::Setns { ns, source }),
            Err(_) => Err(LabError::Setns {
                ns,
                source: std::io::Error::other("namespace thread died"),
            }),
        }
    }

    fn open(&self) -> Result<File, LabError> {
        File::open(Path::new("/run/netns").join(&self.name)).map_err(|source| LabError::Setns {
            ns: self.name.clone(),
            source,
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Options for a veth pair between two namespaces.
#[derive(Debug, Clone)]
pub struct VethOptions {
    /// MTU on both ends.
    pub mtu: u32,
    /// Number of rx and tx queues on each end.
    pub queues: u32,
    /// IPv4 address with prefix of end A.
    pub addr_a: String,
    /// IPv4 address with prefix of end B.
    pub addr_b: String,
}

impl Default for VethOptions {
    fn default() -> Self {
        Self {
            mtu: 1500,
            queues: 1,
            addr_a: "10.77.0.1/24".into(),
            addr_b: "10.77.0.2/24".into(),
        }
    }
}

/// Two namespaces joined by a veth pair: `a` holds interface `veth-a`, `b` holds `veth-b`.
/// Dropping it deletes both namespaces (and with them the pair and anything attached).
#[derive(Debug)]
pub struct Pair {
    /// Namespace of end A.
    pub a: Netns,
    /// Namespace of end B.
    pub b: Netns,
    /// Options used to build the pair.
    pub opts: VethOptions,
}

/// Name of the interface in namespace A.
pub const IF_A: &str = "veth-a";
/// Name of the interface in namespace B.
pub const IF_B: &str = "veth-b";

impl Pair {
    /// Builds two namespaces and a veth pair between them, addressed and up.
    pub fn new(tag: &str, opts: VethOptions) -> Result<Self, LabError> {
        let a = Netns::new(&format!("{tag}-a"))?;
        let b = Netns::new(&format!("{tag}-b"))?;
        let q = opts.queues.to_string();
        let mtu = opts.mtu.to_string();
        a.ip(&[
            "link",
            "add",
            IF_A,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            IF_B,
            "netns",
            b.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        for (ns, ifname, addr) in [(&a, IF_A, &opts.addr_a), (&b, IF_B, &opts.addr_b)] {
            ns.ip(&["link", "set", ifname, "mtu", &mtu])?;
            ns.ip(&["addr", "add", addr, "dev", ifname])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(Self { a, b, opts })
    }

    /// Address of end A without the prefix length.
    pub fn ip_a(&self) -> std::net::Ipv4Addr {
        strip_prefix(&self.opts.addr_a)
    }

    /// Address of end B without the prefix length.
    pub fn ip_b(&self) -> std::net::Ipv4Addr {
        strip_prefix(&self.opts.addr_b)
    }
}

fn strip_prefix(s: &str) -> std::net::Ipv4Addr {
    s.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("VethOptions addresses are IPv4 with a prefix")
}

/// Deletes namespaces made by this crate whose owning process no longer exists.
/// Returns the names it deleted.
pub fn cleanup_stale() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    let mut deleted = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("dwcp-") else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            ip(&["netns", "del", name])?;
            deleted.push(name.to_string());
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn pair_carries_udp_between_namespaces() {
        if !privileged_test_guard("pair_carries_udp_between_namespaces") {
            return;
        }
        let pair = Pair::new("t", VethOptions::default()).unwrap();
        let ip_b = pair.ip_b();
        let rx = pair
            .b
            .spawn_in(move || {
                let s = UdpSocket::bind((ip_b, 9999)).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 64];
                let (n, _) = s.recv_from(&mut buf).unwrap();
                buf[..n].to_vec()
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        pair.a
            .run_in(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.send_to(b"hello lab", (ip_b, 9999)).unwrap();
            })
            .unwrap();
        assert_eq!(rx.join().unwrap(), b"hello lab");
        let name = pair.a.name().to_string();
        drop(pair);
        let list = ip(&["netns", "list"]).unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }
}
