//! Applies a hardware profile (crate dwcp-hw-profiles) to the dataplane's settings.
//!
//! Owns the mapping from profile fields to [`IoConfig`] (backend, XDP mode, zero-copy, ring
//! size, UMEM frames, batch size, hugepages, multi-buffer, MTU), to [`SenderConfig`] (streams,
//! chunk size) and to the worker count of one transfer ([`workers`]). Does not: validate the profile (the profile crate does, and `dwcp` refuses a
//! profile with problems before applying it), detect hardware, or choose cores.

use dwcp_ebpf::AttachMode;
use dwcp_hw_profiles::{BackendKind, Profile, XdpMode};
use dwcp_transfer::SenderConfig;

use crate::io::{BackendChoice, IoConfig};

/// Sets the port settings the profile decides.
pub fn apply_io(p: &Profile, io: &mut IoConfig) {
    io.choice = match p.transfer.backend {
        BackendKind::Auto => BackendChoice::Auto,
        BackendKind::Afxdp => BackendChoice::AfXdp,
        BackendKind::Udp => BackendChoice::Udp,
    };
    io.attach = match p.nic.xdp_mode {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
    };
    io.zero_copy = p.nic.zero_copy;
    io.ring_size = p.rings.ring_size;
    io.frames = p.rings.umem_frames;
    io.batch = p.rings.batch_size as usize;
    io.hugepages = p.rings.hugepages;
    io.multi_buffer = p.rings.multi_buffer;
    io.max_datagram = (p.nic.mtu as usize).saturating_sub(28);
}

/// Sets the sender settings the profile decides.
pub fn apply_sender(p: &Profile, cfg: &mut SenderConfig) {
    cfg.initial_streams = p.transfer.streams_initial;
    cfg.max_streams = p.transfer.streams_max;
    cfg.chunk_size = p.transfer.chunk_size;
    cfg.mtu = Some(p.nic.mtu as usize);
}

/// How many workers one transfer uses, and why (for the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCount {
    /// Workers (parts of the object), at least 1.
    pub count: u16,
    /// Where the count came from.
    pub from: &'static str,
}

/// The worker count of one transfer: `--workers` when given; else one per core of the
/// profile's `cpu.worker_cores` (one part, port and connection each); else 1. A profile whose
/// backend is AF_XDP gets one worker: parts run on UDP sockets (the XDP program steers one
/// port), so the profile's choice of backend wins over its core count.
pub fn workers(flag: Option<u16>, p: Option<&Profile>) -> WorkerCount {
    match (flag, p) {
        (Some(n), _) => WorkerCount {
            count: n.max(1),
            from: "--workers",
        },
        (None, Some(p)) if p.transfer.backend == BackendKind::Afxdp => WorkerCount {
            count: 1,
            from: "profile: backend afxdp (parts need UDP sockets)",
        },
        (None, Some(p)) => WorkerCount {
            count: u16::try_from(p.cpu.worker_cores.len())
                .unwrap_or(u16::MAX)
                .clamp(1, 64),
            from: "profile: one per cpu.worker_cores",
        },
        (None, None) => WorkerCount {
            count: 1,
            from: "default (no profile, no --workers)",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    #[test]
    fn embedded_default_profile_drives_the_port_settings() {
        let p = Profile::embedded_default();
        let addr: SocketAddrV4 = "127.0.0.1:7470".parse().unwrap();
        let mut io = IoConfig::new("lo", addr, addr);
        apply_io(&p, &mut io);
        assert_eq!(io.batch, p.rings.batch_size as usize);
        assert_eq!(io.ring_size, p.rings.ring_size);
        assert_eq!(io.frames, p.rings.umem_frames);
        assert_eq!(io.max_datagram, p.nic.mtu as usize - 28);
        let mut s = SenderConfig::default();
        apply_sender(&p, &mut s);
        assert_eq!(s.max_streams, p.transfer.streams_max);
    }

    #[test]
    fn profile_backend_selects_the_port_backend() {
        let addr: SocketAddrV4 = "127.0.0.1:7470".parse().unwrap();
        for (kind, want) in [
            (BackendKind::Auto, BackendChoice::Auto),
            (BackendKind::Afxdp, BackendChoice::AfXdp),
            (BackendKind::Udp, BackendChoice::Udp),
        ] {
            let mut p = Profile::embedded_default();
            p.transfer.backend = kind;
            let mut io = IoConfig::new("lo", addr, addr);
            apply_io(&p, &mut io);
            assert_eq!(io.choice, want, "{kind:?}");
        }
    }

    #[test]
    fn worker_count_comes_from_the_flag_then_the_profile_cores() {
        let mut p = Profile::embedded_default();
        p.cpu.worker_cores = vec![2, 3, 4];
        p.cpu.numa_nodes = vec![0, 0, 0];
        assert_eq!(workers(Some(2), Some(&p)).count, 2);
        assert_eq!(workers(Some(2), Some(&p)).from, "--workers");
        assert_eq!(workers(None, Some(&p)).count, 3);
        assert_eq!(workers(None, None).count, 1);
        assert_eq!(
            workers(None, Some(&Profile::embedded_default())).count,
            1,
            "the portable profile has one worker core"
        );
        p.transfer.backend = BackendKind::Afxdp;
        assert_eq!(workers(None, Some(&p)).count, 1);
        assert_eq!(workers(Some(0), None).count, 1);
    }
}
