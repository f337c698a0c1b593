//! Ethernet/IPv4/UDP headers for the AF_XDP path, and finding the MAC addresses they need.
//!
//! Owns: a prebuilt 42-byte header template per peer (lengths and the IPv4 header checksum
//! are filled in per packet; the UDP checksum is 0, which IPv4 allows), parsing received
//! frames down to the UDP payload, reading an interface's MAC from sysfs and the peer's
//! from the neighbour table (`/proc/thread-self/net/arp`), resolving it by sending one datagram through
//! the kernel when it is missing.
//! Does not: handle IPv6, VLANs or IP options on transmit (received IPv4 options are
//! skipped), or route: the peer must be on the link.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// Ethernet + IPv4 (no options) + UDP header length.
pub const HDR_LEN: usize = 14 + 20 + 8;

/// A 6-byte MAC address.
pub type Mac = [u8; 6];

/// Errors finding addresses.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Reading sysfs failed.
    #[error("cannot read the MAC address of {ifname}")]
    OwnMac {
        /// Interface.
        ifname: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The peer did not show up in the neighbour table.
    #[error("no neighbour entry for {peer} on {ifname} after {waited:?}")]
    NoNeighbour {
        /// Peer address.
        peer: Ipv4Addr,
        /// Interface.
        ifname: String,
        /// How long we waited.
        waited: Duration,
    },
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// MAC address of a local interface in the calling *thread's* network namespace (netlink
/// via `getifaddrs`; sysfs would show the namespace sysfs was mounted in).
pub fn own_mac(ifname: &str) -> Result<Mac, NetError> {
    let err = |source| NetError::OwnMac {
        ifname: ifname.into(),
        source,
    };
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| err(e.into()))?;
    for a in addrs {
        if a.interface_name != ifname {
            continue;
        }
        if let Some(mac) = a
            .address
            .as_ref()
            .and_then(|s| s.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(mac);
        }
    }
    Err(err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no link-layer address",
    )))
}

/// Looks `peer` up in an `/proc/net/arp`-formatted table (complete entries only).
pub fn lookup_arp(table: &str, peer: Ipv4Addr, ifname: &str) -> Option<Mac> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device
        if f.len() >= 6 && f[0] == peer.to_string() && f[5] == ifname && f[2] != "0x0" {
            parse_mac(f[3]).filter(|m| *m != [0; 6])
        } else {
            None
        }
    })
}

/// The peer's MAC from the neighbour table; if absent, sends one UDP datagram to it through
/// the kernel (which makes the kernel resolve it) and polls the table for up to `wait`.
pub fn resolve_peer_mac(ifname: &str, peer: SocketAddrV4, wait: Duration) -> Result<Mac, NetError> {
    // thread-self: /proc/net follows the process's first thread, not this thread's netns.
    let read = || std::fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default();
    if let Some(m) = lookup_arp(&read(), *peer.ip(), ifname) {
        return Ok(m);
    }
    let start = Instant::now();
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        // Any port will do: the kernel resolves the neighbour before sending. Port 9
        // (discard), not the DWCP port, so the peer's DWCP counters stay clean.
        let _ = s.send_to(&[], SocketAddrV4::new(*peer.ip(), 9));
    }
    while start.elapsed() < wait {
        if let Some(m) = lookup_arp(&read(), *peer.ip(), ifname) {
            return Ok(m);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(NetError::NoNeighbour {
        peer: *peer.ip(),
        ifname: ifname.into(),
        waited: wait,
    })
}

/// A prebuilt Ethernet/IPv4/UDP header from one local address to one peer.
#[derive(Debug, Clone, Copy)]
pub struct HeaderTemplate {
    bytes: [u8; HDR_LEN],
    /// Checksum of the IPv4 header with total length 0, not yet folded.
    partial: u32,
}

impl HeaderTemplate {
    /// Template for datagrams `local -> peer` between the given MACs.
    pub fn new(src_mac: Mac, dst_mac: Mac, local: SocketAddrV4, peer: SocketAddrV4) -> Self {
        let mut b = [0u8; HDR_LEN];
        b[0..6].copy_from_slice(&dst_mac);
        b[6..12].copy_from_slice(&src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, id 0
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&local.ip().octets());
        ip[16..20].copy_from_slice(&peer.ip().octets());
        let mut partial = 0u32;
        for w in ip.chunks(2) {
            partial += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        b[34..36].copy_from_slice(&local.port().to_be_bytes());
        b[36..38].copy_from_slice(&peer.port().to_be_bytes());
        Self { bytes: b, partial }
    }

    /// Writes the header for a UDP payload of `payload_len` bytes into `out[..HDR_LEN]`.
    #[inline]
    pub fn write(&self, out: &mut [u8], payload_len: usize) {
        let h = &mut out[..HDR_LEN];
        h.copy_from_slice(&self.bytes);
        let tot = (20 + 8 + payload_len) as u16;
        h[16..18].copy_from_slice(&tot.to_be_bytes());
        let mut s = self.partial + u32::from(tot);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        h[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
        h[38..40].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    }
}

/// Why a received frame is not a UDP datagram for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotOurs {
    /// Not IPv4 (or too short for Ethernet + IPv4).
    NotIpv4,
    /// IPv4 but not UDP, a fragment, or bad lengths.
    NotUdp,
    /// UDP to another port.
    OtherPort,
}

/// The UDP payload of an Ethernet frame carrying IPv4/UDP to `port`.
#[inline]
pub fn udp_payload(frame: &[u8], port: u16) -> Result<&[u8], NotOurs> {
    if frame.len() < HDR_LEN || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
        return Err(NotOurs::NotIpv4);
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let frag = u16::from_be_bytes([frame[20], frame[21]]) & 0x3fff;
    if frame[23] != 17 || ihl < 20 || frag != 0 || 14 + tot > frame.len() || tot < ihl + 8 {
        return Err(NotOurs::NotUdp);
    }
    let u = 14 + ihl;
    if u16::from_be_bytes([frame[u + 2], frame[u + 3]]) != port {
        return Err(NotOurs::OtherPort);
    }
    let ulen = usize::from(u16::from_be_bytes([frame[u + 4], frame[u + 5]]));
    if ulen < 8 || ulen > tot - ihl {
        return Err(NotOurs::NotUdp);
    }
    Ok(&frame[u + 8..u + ulen])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_checksum_ok(h: &[u8]) -> bool {
        let mut s = 0u32;
        for w in h.chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s == 0xffff
    }

    #[test]
    fn template_roundtrips_through_parser() {
        let local = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 40000);
        let peer = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 7470);
        let t = HeaderTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], local, peer);
        for len in [0usize, 1, 116, 1452, 8052] {
            let mut f = vec![0u8; HDR_LEN + len];
            t.write(&mut f, len);
            for (i, b) in f[HDR_LEN..].iter_mut().enumerate() {
                *b = i as u8;
            }
            assert!(ip_checksum_ok(&f[14..34]), "len {len}");
            let p = udp_payload(&f, 7470).unwrap();
            assert_eq!(p.len(), len);
            assert_eq!(udp_payload(&f, 7471), Err(NotOurs::OtherPort));
        }
        let mut f = vec![0u8; 60];
        t.write(&mut f, 18);
        f[23] = 6;
        assert_eq!(udp_payload(&f, 7470), Err(NotOurs::NotUdp));
        f[12] = 0x86;
        assert_eq!(udp_payload(&f, 7470), Err(NotOurs::NotIpv4));
    }

    #[test]
    fn arp_table_lookup() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.77.0.2        0x1         0x2         aa:bb:cc:00:11:22     *        veth-a\n\
                 10.77.0.3        0x1         0x0         00:00:00:00:00:00     *        veth-a\n";
        let p = Ipv4Addr::new(10, 77, 0, 2);
        assert_eq!(
            lookup_arp(t, p, "veth-a"),
            Some([0xaa, 0xbb, 0xcc, 0, 0x11, 0x22])
        );
        assert_eq!(lookup_arp(t, p, "veth-b"), None);
        assert_eq!(lookup_arp(t, Ipv4Addr::new(10, 77, 0, 3), "veth-a"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }
}
