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
///
/// Messages the kernel did not take (its socket buffer was full) stay staged, moved to the
/// front of the batch, and go out first on the next [`MmsgTx::send`]; pushing refuses new
/// datagrams while the batch is still full of them. Datagrams pushed since the last send can
/// be discarded with [`MmsgTx::discard_unsent_pushes`], which keeps the ones a send left.
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
    /// Messages a push may open; the one slot past it only takes a datagram moved off the
    /// GSO tail (written there, then found longer than the segment size), so a push never
    /// fails after its `write` ran.
    cap: usize,
    gso: bool,
    datagrams: usize,
    /// Messages (and their datagrams) at the front that the last send left.
    kept_msgs: usize,
    kept_datagrams: usize,
    blocked: bool,
}

impl std::fmt::Debug for MmsgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgTx")
            .field("batch", &self.cap)
            .field("gso", &self.gso)
            .field("staged", &self.datagrams)
            .field("kept", &self.kept_datagrams)
            .finish()
    }
}

/// What one [`MmsgTx::send`] did with the staged datagrams.
#[derive(Debug, Default)]
pub struct SendOutcome {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// UDP payload bytes of those.
    pub sent_bytes: usize,
    /// Datagrams still staged because the socket buffer was full: they go first on the
    /// next send.
    pub kept: usize,
    /// Datagrams discarded because the kernel refused them with an error (not a full
    /// buffer): retrying would fail the same way.
    pub dropped: usize,
    /// The send stopped on `EAGAIN`: wait for `POLLOUT` before sending again.
    pub would_block: bool,
    /// The last error that discarded datagrams.
    pub error: Option<XskError>,
}

impl MmsgTx {
    /// Buffers for `batch` messages; with `gso`, each holds up to 64 segments / 64 KiB.
    pub fn new(batch: usize, gso: bool) -> Self {
        let cap = batch.max(1);
        let slots = cap + 1;
        let slot = if gso { MAX_UDP } else { 9216 };
        let mut buf = vec![0u8; slots * slot].into_boxed_slice();
        let ctl_slot = cmsg_space(std::mem::size_of::<u16>());
        let mut ctl = vec![0u8; slots * ctl_slot].into_boxed_slice();
        let mut iov: Box<[libc::iovec]> = (0..slots)
            .map(|i| libc::iovec {
                iov_base: buf[i * slot..].as_mut_ptr().cast(),
                iov_len: 0,
            })
            .collect();
        let hdr: Box<[libc::mmsghdr]> = (0..slots)
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
            len: vec![0; slots].into_boxed_slice(),
            seg: vec![0; slots].into_boxed_slice(),
            count: vec![0; slots].into_boxed_slice(),
            closed: vec![false; slots].into_boxed_slice(),
            n: 0,
            cap,
            gso,
            datagrams: 0,
            kept_msgs: 0,
            kept_datagrams: 0,
            blocked: false,
        }
    }

    /// Datagrams staged (pushed since the last send plus those it kept).
    pub fn staged(&self) -> usize {
        self.datagrams
    }

    /// Datagrams the last send kept because the socket buffer was full.
    pub fn kept(&self) -> usize {
        self.kept_datagrams
    }

    /// The last send stopped on `EAGAIN` (its kept datagrams wait for `POLLOUT`).
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Discards every staged datagram, kept ones included.
    pub fn clear(&mut self) {
        self.n = 0;
        self.datagrams = 0;
        self.kept_msgs = 0;
        self.kept_datagrams = 0;
        self.blocked = false;
    }

    /// Discards the datagrams pushed since the last send; the ones it kept stay staged.
    pub fn discard_unsent_pushes(&mut self) {
        self.n = self.kept_msgs;
        self.datagrams = self.kept_datagrams;
    }

    /// Whether GSO coalescing is on.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Writes one datagram of at most `max_len` bytes: `write` fills the buffer and returns
    /// the length. Returns `false` (without calling `write`) when the batch is full.
    pub fn push_with(&mut self, max_len: usize, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.try_push_with(max_len, |b| Some(write(b))) == Some(true)
    }

    /// Like [`MmsgTx::push_with`], but `write` may decline: `None` when the batch is full
    /// (`write` not called), `Some(true)` when `write` returned a length (the datagram is
    /// staged), `Some(false)` when it returned `None` (nothing staged, no message opened).
    pub fn try_push_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        let max_len = max_len.min(self.slot);
        // Try the tail of the current message first (GSO), else a fresh message. The tail
        // path is open while the spare slot is free, so a datagram found too long for the
        // tail's segment size always has a message to move to.
        if self.gso && self.n > 0 && self.n <= self.cap {
            let m = self.n - 1;
            let tail = self.len[m];
            if !self.closed[m] && self.count[m] < MAX_GSO_SEGS && tail + max_len <= self.slot {
                let base = m * self.slot + tail;
                let Some(len) = write(&mut self.buf[base..base + max_len]) else {
                    return Some(false);
                };
                let len = len.min(max_len);
                if len > 0 && len <= self.seg[m] {
                    self.len[m] += len;
                    self.count[m] += 1;
                    self.closed[m] = len < self.seg[m];
                    self.datagrams += 1;
                    return Some(true);
                }
                // Longer than the segment size (or empty): move it to its own message.
                let dst = self.n * self.slot;
                self.buf.copy_within(base..base + len, dst);
                self.open_message(len);
                return Some(true);
            }
        }
        if self.n >= self.cap {
            return None;
        }
        let base = self.n * self.slot;
        let Some(len) = write(&mut self.buf[base..base + max_len]) else {
            return Some(false);
        };
        self.open_message(len.min(max_len));
        Some(true)
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

    /// Sends the staged messages (non-blocking). Messages the kernel did not take because
    /// the socket buffer was full stay staged at the front of the batch (see
    /// [`SendOutcome::kept`]); a message the kernel refuses with another error is discarded
    /// and the send goes on with the next.
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> SendOutcome {
        let n = self.n;
        let total = self.datagrams;
        let mut out = SendOutcome::default();
        self.blocked = false;
        if n == 0 {
            self.kept_msgs = 0;
            self.kept_datagrams = 0;
            return out;
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
        // Messages [0, done) are sent or discarded.
        let mut done = 0;
        let mut refused = 0;
        while done < n {
            // SAFETY: headers [done, n) point at iovecs/control slots inside buffers owned by
            // `self`, lengths set above; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdr[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => {
                        out.would_block = true;
                        break;
                    }
                    // An ICMP port unreachable for an earlier datagram, reported (and
                    // cleared) on this call: nothing of this call was sent, go again.
                    std::io::ErrorKind::ConnectionRefused if refused < n => {
                        refused += 1;
                        continue;
                    }
                    _ => {
                        out.dropped += self.count[done];
                        done += 1;
                        out.error = Some(XskError::Udp {
                            op: "sendmmsg",
                            source: e,
                        });
                        continue;
                    }
                }
            }
            if r == 0 {
                break;
            }
            let r = r as usize;
            out.sent += self.count[done..done + r].iter().sum::<usize>();
            out.sent_bytes += self.len[done..done + r].iter().sum::<usize>();
            done += r;
        }
        self.keep_from(done);
        self.blocked = out.would_block;
        out.kept = self.kept_datagrams;
        debug_assert_eq!(out.sent + out.dropped + out.kept, total);
        out
    }

    /// Moves messages [from, n) to the front and marks them kept.
    fn keep_from(&mut self, from: usize) {
        let left = self.n - from;
        if from > 0 {
            for m in from..self.n {
                let (src, dst) = (m * self.slot, (m - from) * self.slot);
                self.buf.copy_within(src..src + self.len[m], dst);
            }
            self.len.copy_within(from..self.n, 0);
            self.seg.copy_within(from..self.n, 0);
            self.count.copy_within(from..self.n, 0);
            self.closed.copy_within(from..self.n, 0);
        }
        self.n = left;
        if left > 0 {
            // Nothing is appended to a kept message: discarding later pushes stays exact.
            self.closed[left - 1] = true;
        }
        self.kept_msgs = left;
        self.kept_datagrams = self.count[..left].iter().sum();
        self.datagrams = self.kept_datagrams;
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
        let out = tx.send(a.as_fd());
        assert_eq!((out.sent, out.kept, out.dropped), (sizes.len(), 0, 0));
        assert_eq!(out.sent_bytes, sizes.iter().sum::<usize>());
        assert_eq!(tx.staged(), 0);
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
        assert!(!tx.push_with(10, |_| unreachable!("no room, not called")));
        assert_eq!(tx.try_push_with(10, |_| unreachable!()), None);
    }

    #[test]
    fn gso_tail_datagram_too_long_moves_to_the_spare_slot() {
        let mut tx = MmsgTx::new(2, true);
        assert!(tx.push_with(1000, |_| 1000));
        assert!(tx.push_with(1000, |_| 500), "short: closes message 0");
        assert!(
            tx.push_with(1000, |_| 1000),
            "opens message 1 (the last one)"
        );
        assert!(tx.push_with(1000, |_| 1000), "appended to message 1");
        // Written on message 1's tail, found longer than its segments: its own message.
        assert!(tx.push_with(2000, |_| 1500));
        assert_eq!((tx.n, tx.staged()), (3, 5));
        assert!(!tx.push_with(10, |_| unreachable!("spare slot used: full")));
    }

    #[test]
    fn try_push_declined_stages_nothing() {
        for gso in [false, true] {
            let (a, b) = pair();
            let gso = gso && gso_supported(a.as_fd());
            let mut tx = MmsgTx::new(4, gso);
            assert_eq!(tx.try_push_with(100, |b| Some(fill(b, 0, 100))), Some(true));
            let mut called = false;
            assert_eq!(
                tx.try_push_with(100, |_| {
                    called = true;
                    None
                }),
                Some(false)
            );
            assert!(called);
            assert_eq!(tx.staged(), 1);
            assert_eq!(tx.try_push_with(100, |b| Some(fill(b, 1, 100))), Some(true));
            assert_eq!(
                tx.n,
                if gso { 1 } else { 2 },
                "the declined push opened nothing"
            );
            // Declined on an empty batch, then on a fresh message slot.
            let mut empty = MmsgTx::new(1, gso);
            assert_eq!(empty.try_push_with(100, |_| None), Some(false));
            assert_eq!((empty.n, empty.staged()), (0, 0));
            let out = tx.send(a.as_fd());
            assert_eq!(out.sent, 2);
            let got = receive(&b, 2, None);
            assert_eq!(
                got,
                vec![pattern(0, 100), pattern(1, 100)],
                "no empty datagram"
            );
        }
    }

    fn fill(buf: &mut [u8], k: usize, len: usize) -> usize {
        buf[..len].copy_from_slice(&pattern(k, len));
        len
    }

    /// Datagram `k`: its index in the first 4 bytes, then a pattern.
    fn pattern(k: usize, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i * 31 + k) as u8).collect();
        v[..4].copy_from_slice(&(k as u32).to_le_bytes());
        v
    }

    /// Receives until `want` datagrams arrived, splitting messages at `seg` when given (a
    /// GSO message on a Unix socket arrives whole).
    fn receive(fd: &impl AsFd, want: usize, seg: Option<usize>) -> Vec<Vec<u8>> {
        let mut rx = MmsgRx::new(16, 65536);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < want && std::time::Instant::now() < deadline {
            let n = rx.recv(fd.as_fd()).unwrap();
            for i in 0..n {
                let (m, s) = rx.message(i);
                got.extend(segments(m, seg.unwrap_or(s)).map(|d| d.to_vec()));
            }
        }
        got
    }

    fn set_sndbuf(fd: BorrowedFd<'_>, size: libc::c_int) {
        // SAFETY: `size` outlives the call and its size is passed; the fd is borrowed, valid.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
    }

    /// A send into a full socket buffer keeps what the kernel did not take; the next sends
    /// deliver it first, every datagram exactly once and in order. A loopback UDP socket
    /// never fills (loopback releases the sender's buffer at once and drops at the
    /// receiver), so a Unix datagram pair stands in: its sender's buffer holds what the
    /// receiver has not read, and a non-blocking send gets `EAGAIN` like UDP's.
    fn full_socket_keeps(gso: bool) {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        set_sndbuf(a.as_fd(), 16 << 10);
        const SEG: usize = 1000;
        // With GSO: runs of equal datagrams, a short one closing each message.
        let size = |k: usize| {
            if gso {
                if k % 7 == 6 { 300 } else { SEG }
            } else {
                200 + k * 37 % 1200
            }
        };
        let total = 400;
        let mut tx = MmsgTx::new(32, gso);
        let (mut next, mut got) = (0, Vec::new());
        let (mut kept_sends, mut refused) = (0, 0);
        while got.len() < total {
            while next < total && tx.push_with(size(next), |b| fill(b, next, size(next))) {
                next += 1;
            }
            if next < total {
                refused += 1;
            }
            let before = tx.staged();
            let out = tx.send(a.as_fd());
            assert_eq!(out.dropped, 0);
            assert_eq!(out.sent + out.kept, before);
            assert_eq!(tx.staged(), out.kept);
            if out.kept > 0 {
                assert!(out.would_block && tx.blocked());
                kept_sends += 1;
                // Still full of kept messages: nothing new fits until a send makes room.
                if tx.n >= tx.cap {
                    assert!(!tx.push_with(10, |_| unreachable!()));
                }
            }
            let mut rx = MmsgRx::new(64, 65536);
            loop {
                let n = rx.recv(b.as_fd()).unwrap();
                if n == 0 {
                    break;
                }
                for i in 0..n {
                    let (m, s) = rx.message(i);
                    got.extend(segments(m, if gso { SEG } else { s }).map(|d| d.to_vec()));
                }
            }
        }
        assert!(kept_sends > 0, "the socket buffer never filled");
        assert!(refused > 0, "the batch never filled");
        assert_eq!(got.len(), total);
        for (k, d) in got.iter().enumerate() {
            assert_eq!(d, &pattern(k, size(k)), "datagram {k}");
        }
    }

    #[test]
    fn full_socket_keeps_the_rest_plain() {
        full_socket_keeps(false);
    }

    #[test]
    fn full_socket_keeps_the_rest_gso() {
        full_socket_keeps(true);
    }

    #[test]
    fn discarding_unsent_pushes_keeps_the_kept() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        set_sndbuf(a.as_fd(), 4 << 10);
        let mut tx = MmsgTx::new(64, false);
        let mut k = 0;
        while k < 64 && tx.push_with(1000, |b| fill(b, k, 1000)) {
            k += 1;
        }
        let out = tx.send(a.as_fd());
        assert!(out.kept > 0 && out.sent > 0, "{out:?}");
        let sent = out.sent;
        assert!(tx.push_with(1000, |b| fill(b, 999, 1000)));
        assert_eq!(tx.staged(), out.kept + 1);
        tx.discard_unsent_pushes();
        assert_eq!(tx.staged(), out.kept);
        let mut got = receive(&b, sent, None);
        let mut left = out.kept;
        while left > 0 {
            let o = tx.send(a.as_fd());
            left = o.kept;
            got.extend(receive(&b, o.sent, None));
        }
        assert_eq!(got.len(), 64);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &pattern(i, 1000));
        }
    }
}
