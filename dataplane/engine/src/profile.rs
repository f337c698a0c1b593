//! Applies a hardware profile (crate dwcp-hw-profiles) to the dataplane's settings.
//!
//! Owns the mapping from profile fields to [`IoConfig`] (backend, XDP mode, zero-copy, ring
//! size, UMEM frames, batch size, hugepages, multi-buffer, MTU) and to [`SenderConfig`] (streams,
//! chunk size). Does not: validate the profile (the profile crate does, and `dwcp` refuses a
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
}
