//! NUMA placement: which node a CPU belongs to, and binding a memory range to a node.
//!
//! Owns: reading `/sys/devices/system/cpu/cpuN/node*`, `sched_getcpu`, and the `mbind`
//! system call (there is no libc wrapper without libnuma). Does not: pin threads (the
//! engine's workers do, with `core_affinity`) or allocate memory (see [`crate::umem`]).

use std::path::Path;

/// How strictly a memory range is bound to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumaPolicy {
    /// `MPOL_PREFERRED`: use the node, fall back to others when it is full.
    Preferred,
    /// `MPOL_BIND`: only the node; allocation fails (SIGBUS on touch) when it is full.
    Bind,
}

/// The NUMA node of `cpu`, read from sysfs; `None` when the kernel exposes no node link.
pub fn node_of_cpu(cpu: usize) -> Option<u32> {
    node_of_cpu_in(Path::new("/sys/devices/system/cpu"), cpu)
}

fn node_of_cpu_in(root: &Path, cpu: usize) -> Option<u32> {
    let dir = std::fs::read_dir(root.join(format!("cpu{cpu}"))).ok()?;
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse().ok())
        })
        .next()
}

/// The CPU the calling thread runs on now (meaningful after pinning).
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions; it only reads the calling thread's state.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).ok()
}

const MPOL_PREFERRED: libc::c_long = 1;
const MPOL_BIND: libc::c_long = 2;

/// Binds the pages of `[addr, addr+len)` to `node` with `mbind(2)`. Pages already touched are
/// not moved (no `MPOL_MF_MOVE`): call this before first touch.
///
/// # Safety
///
/// `addr` must be the page-aligned start of a mapping of at least `len` bytes owned by the
/// caller; `mbind` changes only the placement policy of that range, not its contents.
pub(crate) unsafe fn mbind(
    addr: *mut u8,
    len: usize,
    node: u32,
    policy: NumaPolicy,
) -> std::io::Result<()> {
    if node >= 64 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mask: libc::c_ulong = 1 << node;
    let mode = match policy {
        NumaPolicy::Preferred => MPOL_PREFERRED,
        NumaPolicy::Bind => MPOL_BIND,
    };
    // SAFETY: the caller guarantees the range is a mapping it owns; `mask` lives across the
    // call and maxnode (65) covers the 64 bits of one c_ulong.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr as libc::c_ulong,
            len as libc::c_ulong,
            mode,
            &mask as *const libc::c_ulong,
            65 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_node_link_from_sysfs_layout() {
        let dir = std::env::temp_dir().join(format!("dwcp-numa-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cpu3/node1")).unwrap();
        std::fs::create_dir_all(dir.join("cpu4")).unwrap();
        assert_eq!(node_of_cpu_in(&dir, 3), Some(1));
        assert_eq!(node_of_cpu_in(&dir, 4), None);
        assert_eq!(node_of_cpu_in(&dir, 5), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_machine_cpu0_has_a_node_or_none() {
        // Every Linux with NUMA support exposes node0 for cpu0; a kernel without it gives None.
        let n = node_of_cpu(0);
        assert!(n.is_none() || n == Some(0) || n.unwrap() < 1024);
        assert!(current_cpu().is_some());
    }
}
