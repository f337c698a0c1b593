//! Batched UDP system calls for the fallback backend: `recvmmsg`/`sendmmsg` on a connected
//! socket, with UDP GRO (`UDP_GRO`) on receive and UDP GSO (`UDP_SEGMENT`) on send.
//!
//! Owns: the message headers, iovecs and control buffers, allocated once per socket and
//! reused for every batch (their heap addresses are stable, so the headers are built once);
//! coalescing equal-size datagrams into one GSO message, and splitting GRO buffers back into
//! datagrams. Does not: create or connect sockets (std does), or know about DWCP.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::XskError;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Largest UDP payload in one IPv4 datagram / GSO super-datagram.
pub const MAX_UDP: usize = 65507;
/// Kernel limit of segments per GSO send.
pub const MAX_GSO_SEGS: usize = 64;

fn cmsg_space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}

/// Enables or disables a `SOL_UDP` integer option; `false` when the kernel refuses it.
fn set_udp_opt(fd: BorrowedFd<'_>, opt: libc::c_int, val: libc::c_int) -> bool {
    // SAFETY: `val` outlives the call and its size is passed; the fd is borrowed, valid.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_UDP,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Turns UDP GRO on for a socket; returns whether the kernel accepted it.
pub fn enable_gro(fd: BorrowedFd<'_>) -> bool {
    set_udp_opt(fd, UDP_GRO, 1)
}

/// Whether the kernel supports `UDP_SEGMENT` on this socket (probed with setsockopt of 0).
pub fn gso_supported(fd: BorrowedFd<'_>) -> bool {
    set_udp_opt(fd, UDP_SEGMENT, 0)
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT` (so several workers can bind the same
/// port; the kernel spreads flows between them).
pub fn bind_udp_reuseport(addr: std::net::SocketAddrV4) -> std::io::Result<std::net::UdpSocket> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; OwnedFd closes it on error paths.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed; `fd` is open.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a complete sockaddr_in whose size is passed; `fd` is open.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::net::UdpSocket::from(owned))
}

/// Receive side: `batch` buffers of `slot` bytes each.
pub struct MmsgRx {
    buf: Box<[u8]>,
    slot: usize,
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    _ctl: Box<[u8]>,
    ctl_slot: usize,
    seg: Box<[usize]>,
    n: usize,
}

impl std::fmt::Debug for MmsgRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgRx")
            .field("batch", &self.hdr.len())
            .field("slot", &self.slot)
            .finish()
    }
}

impl MmsgRx {
    /// Buffers for `batch` messages of up to `slot` bytes (65535 with GRO).
    pub fn new(batch: usize, slot: usize) -> Self {
        let batch = batch.max(1);
        let mut buf = vec![0u8; batch * slot].into_boxed_slice();
        let ctl_slot = cmsg_space(std::mem::size_of::<libc::c_int>()) * 2;
        let mut ctl = vec![0u8; batch * ctl_slot].into_boxed_slice();
        let mut iov: Box<[libc::iovec]> = (0..batch)
            .map(|i| libc::iovec {
                // SAFETY (pointer arithmetic only): i * slot < buf.len().
                iov_base: buf[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            })
            .collect();
        let hdr: Box<[libc::mmsghdr]> = (0..batch)
            .map(|i| {
                // SAFETY: an all-zero mmsghdr is a valid (empty) value of this plain C struct.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iov[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = ctl[i * ctl_slot..].as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = ctl_slot;
                h
            })
            .collect();
        Self {
            buf,
            slot,
            iov,
            hdr,
            _ctl: ctl,
            ctl_slot,
            seg: vec![0; batch].into_boxed_slice(),
            n: 0,
        }
    }

    /// Receives up to a batch without blocking; `Ok(0)` when nothing is waiting.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> Result<usize, XskError> {
        for (i, h) in self.hdr.iter_mut().enumerate() {
            h.msg_hdr.msg_controllen = self.ctl_slot;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            self.iov[i].iov_len = self.slot;
        }
        // SAFETY: every header points at its own iovec and control slot inside buffers owned
        // by `self` (heap, stable addresses) with the lengths set just above; the kernel
        // writes at most those lengths. MSG_DONTWAIT: never blocks. No timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdr.as_mut_ptr(),
                self.hdr.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            self.n = 0;
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                // ICMP port unreachable from an earlier send: not a receive failure.
                std::io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(XskError::Udp {
                    op: "recvmmsg",
                    source: e,
                }),
            };
        }
        self.n = r as usize;
        for i in 0..self.n {
            self.seg[i] = self.gro_segment(i).unwrap_or(self.hdr[i].msg_len as usize);
        }
        Ok(self.n)
    }

    fn gro_segment(&self, i: usize) -> Option<usize> {
        let h = &self.hdr[i].msg_hdr;
        // SAFETY: `h` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR stay within
        // msg_control[..msg_controllen], which lies inside `self.ctl`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    return usize::try_from(v).ok().filter(|&s| s > 0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Messages from the last `recv`.
    pub fn len(&self) -> usize {
        self.n
    }

    /// No message.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Message `i`: its bytes and the GRO segment size (equal to the length when the kernel
    /// did not coalesce). Split with [`segments`].
    pub fn message(&self, i: usize) -> (&[u8], usize) {
        assert!(i < self.n);
        let len = self.hdr[i].msg_len as usize;
        (&self.buf[i * self.slot..i * self.slot + len], self.seg[i])
    }
}

/// Splits a (possibly GRO-coalesced) message into its datagrams.
pub fn segments(msg: &[u8], seg: usize) -> impl Iterator<Item = &[u8]> {
    msg.chunks(seg.max(1))
}

/// Send side: `batch` messages of up to 64 KiB, datagrams of equal size coalesced with GSO.
pub struct MmsgTx {
    buf: Box<[u8]>,
    slot: usize,
    iov: Box<[libc::iovec]>,
    hdr: Box<[libc::mmsghdr]>,
    _ctl: Box<[u8]>,
    ctl_slot: usize,
    /// Per message: total length, segment size, segment count, closed (last seg short).
    len: Box<[usize]>,
    seg: Box<[usize]>,
    count: Box<[usize]>,
    closed: Box<[bool]>,
    n: usize,
    gso: bool,
    datagrams: usize,
}

impl std::fmt::Debug for MmsgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgTx")
            .field("batch", &self.hdr.len())
            .field("gso", &self.gso)
            .finish()
    }
}

impl MmsgTx {
    /// Buffers for `batch` messages; with `gso`, each holds up to 64 segments / 64 KiB.
    pub fn new(batch: usize, gso: bool) -> Self {
        let batch = batch.max(1);
        let slot = if gso { MAX_UDP } else { 9216 };
        let mut buf = vec![0u8; batch * slot].into_boxed_slice();
        let ctl_slot = cmsg_space(std::mem::size_of::<u16>());
        let mut ctl = vec![0u8; batch * ctl_slot].into_boxed_slice();
        let mut iov: Box<[libc::iovec]> = (0..batch)
            .map(|i| libc::iovec {
                iov_base: buf[i * slot..].as_mut_ptr().cast(),
                iov_len: 0,
            })
            .collect();
        let hdr: Box<[libc::mmsghdr]> = (0..batch)
            .map(|i| {
                // SAFETY: an all-zero mmsghdr is a valid (empty) value of this plain C struct.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iov[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = ctl[i * ctl_slot..].as_mut_ptr().cast();
                h
            })
            .collect();
        Self {
            buf,
            slot,
            iov,
            hdr,
            _ctl: ctl,
            ctl_slot,
            len: vec![0; batch].into_boxed_slice(),
            seg: vec![0; batch].into_boxed_slice(),
            count: vec![0; batch].into_boxed_slice(),
            closed: vec![false; batch].into_boxed_slice(),
            n: 0,
            gso,
            datagrams: 0,
        }
    }

    /// Datagrams staged.
    pub fn staged(&self) -> usize {
        self.datagrams
    }

    /// Discards the staged datagrams.
    pub fn clear(&mut self) {
        self.n = 0;
        self.datagrams = 0;
    }

    /// Whether GSO coalescing is on.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Writes one datagram of at most `max_len` bytes: `write` fills the buffer and returns
    /// the length. Returns `false` (without calling `write`) when the batch is full.
    pub fn push_with(&mut self, max_len: usize, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let max_len = max_len.min(if self.gso { MAX_UDP } else { self.slot });
        // Try the tail of the current message first (GSO), else a fresh message.
        if self.gso && self.n > 0 {
            let m = self.n - 1;
            let tail = self.len[m];
            if !self.closed[m] && self.count[m] < MAX_GSO_SEGS && tail + max_len <= self.slot {
                let base = m * self.slot + tail;
                let len = write(&mut self.buf[base..base + max_len]).min(max_len);
                if len == self.seg[m] || (len < self.seg[m] && len > 0) {
                    self.len[m] += len;
                    self.count[m] += 1;
                    self.closed[m] = len < self.seg[m];
                    self.datagrams += 1;
                    return true;
                }
                // Longer than the segment size (or empty): move it to its own message.
                if self.n == self.hdr.len() {
                    return false;
                }
                let dst = self.n * self.slot;
                self.buf.copy_within(base..base + len, dst);
                self.open_message(len);
                return true;
            }
        }
        if self.n == self.hdr.len() {
            return false;
        }
        let base = self.n * self.slot;
        let len = write(&mut self.buf[base..base + max_len]).min(max_len);
        self.open_message(len);
        true
    }

    fn open_message(&mut self, len: usize) {
        let m = self.n;
        self.len[m] = len;
        self.seg[m] = len;
        self.count[m] = 1;
        self.closed[m] = len == 0;
        self.n += 1;
        self.datagrams += 1;
    }

    /// Sends the staged messages (non-blocking). Returns the datagrams the kernel took;
    /// the rest are discarded (the caller counts them as dropped). Clears the batch.
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> Result<usize, XskError> {
        let n = std::mem::take(&mut self.n);
        let total = std::mem::take(&mut self.datagrams);
        if n == 0 {
            return Ok(0);
        }
        for m in 0..n {
            self.iov[m].iov_len = self.len[m];
            let h = &mut self.hdr[m].msg_hdr;
            if self.gso && self.count[m] > 1 {
                h.msg_controllen = self.ctl_slot;
                // SAFETY: msg_control points at this message's `ctl_slot` bytes in `self.ctl`,
                // which CMSG_SPACE(size_of::<u16>()) sized; one cmsg with a u16 fits.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), self.seg[m] as u16);
                }
            } else {
                h.msg_controllen = 0;
            }
        }
        let mut sent_msgs = 0;
        while sent_msgs < n {
            // SAFETY: headers [sent_msgs, n) point at iovecs/control slots inside buffers
            // owned by `self`, lengths set above; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdr[sent_msgs..].as_mut_ptr(),
                    (n - sent_msgs) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused => break,
                    _ => {
                        return Err(XskError::Udp {
                            op: "sendmmsg",
                            source: e,
                        });
                    }
                }
            }
            if r == 0 {
                break;
            }
            sent_msgs += r as usize;
        }
        let sent: usize = self.count[..sent_msgs].iter().sum();
        debug_assert!(sent <= total);
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        (a, b)
    }

    fn roundtrip(gso: bool, gro: bool, sizes: &[usize]) {
        let (a, b) = pair();
        let gso = gso && gso_supported(a.as_fd());
        if gro {
            enable_gro(b.as_fd());
        }
        let mut tx = MmsgTx::new(8, gso);
        let mut sent_payloads = Vec::new();
        for (k, &s) in sizes.iter().enumerate() {
            let ok = tx.push_with(s, |buf| {
                for (i, b) in buf[..s].iter_mut().enumerate() {
                    *b = (i + k) as u8;
                }
                s
            });
            assert!(ok);
            sent_payloads.push((0..s).map(|i| (i + k) as u8).collect::<Vec<u8>>());
        }
        assert_eq!(tx.staged(), sizes.len());
        assert_eq!(tx.send(a.as_fd()).unwrap(), sizes.len());
        let mut rx = MmsgRx::new(16, 65536);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < sizes.len() && std::time::Instant::now() < deadline {
            let n = rx.recv(b.as_fd()).unwrap();
            for i in 0..n {
                let (m, seg) = rx.message(i);
                got.extend(segments(m, seg).map(|d| d.to_vec()));
            }
        }
        assert_eq!(got, sent_payloads);
    }

    #[test]
    fn plain_mmsg_roundtrip() {
        roundtrip(false, false, &[64, 1400, 1400, 7, 9000]);
    }

    #[test]
    fn gso_coalesces_equal_sizes_and_gro_splits() {
        roundtrip(true, true, &[1400, 1400, 1400, 100, 1400, 1400, 2000, 64]);
        let mut tx = MmsgTx::new(4, true);
        for _ in 0..10 {
            assert!(tx.push_with(1000, |_| 1000));
        }
        assert_eq!(tx.n, 1, "ten equal datagrams fit one GSO message");
        assert!(tx.push_with(1000, |_| 500));
        assert!(tx.push_with(1000, |_| 1000));
        assert_eq!(tx.n, 2, "a short segment closes the message");
    }

    #[test]
    fn full_batch_refuses() {
        let mut tx = MmsgTx::new(2, false);
        assert!(tx.push_with(10, |_| 10));
        assert!(tx.push_with(10, |_| 10));
        assert!(!tx.push_with(10, |_| 10));
    }
}
