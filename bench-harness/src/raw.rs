//! Raw AF_PACKET sockets and a precise wait: the only module of this crate with unsafe code.
//!
//! Owns: opening a packet socket bound to one interface (receive side with
//! `PACKET_IGNORE_OUTGOING`, or transmit-only with protocol 0 so it never queues received
//! frames), non-blocking receive and send of whole Ethernet frames, waiting for readability
//! with nanosecond timeout (`ppoll`, hrtimer based), and lowering the thread's timer slack.
//!
//! Does not: parse or change frames, keep time, or decide anything about impairments (that is
//! [`crate::emulator`]). Every `unsafe` block is a single libc call on an fd this module owns.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `PACKET_IGNORE_OUTGOING` from `linux/if_packet.h` (Linux >= 4.20); not in every libc crate.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Socket buffer asked for on both sides (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, root only).
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// A packet socket bound to one interface of the current thread's network namespace.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

/// Index of interface `ifname` in the calling thread's network namespace.
pub fn if_index(ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket we own; the option value points to a live c_int whose
    // size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl PacketSocket {
    /// Opens a non-blocking `AF_PACKET`/`SOCK_RAW` socket on `ifname`.
    ///
    /// With `receive`, it is bound with `ETH_P_ALL` and ignores frames this host sends on the
    /// interface (so it sees only frames arriving from the wire). Without, it is bound with
    /// protocol 0: it can send but the kernel never queues received frames on it.
    pub fn open(ifname: &str, receive: bool) -> io::Result<Self> {
        let ifindex = if_index(ifname)?;
        // Created with protocol 0 so nothing is queued before the bind below restricts the
        // socket to one interface.
        // SAFETY: plain syscall with constant arguments; returns a new fd or -1.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let proto: u16 = if receive { libc::ETH_P_ALL as u16 } else { 0 };
        if receive {
            setsockopt_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
            setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER)?;
        } else {
            setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER)?;
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a fully initialised sockaddr_ll and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            ifname: ifname.to_string(),
        })
    }

    /// Interface this socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Receives one frame into `buf` without blocking. `Ok(None)` when nothing is queued.
    /// The returned length is the frame's real length (`MSG_TRUNC`), which may exceed
    /// `buf.len()`: the caller must treat that as an oversize frame.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the whole call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }

    /// Sends one whole Ethernet frame out of the bound interface without blocking.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is a live buffer of `frame.len()` readable bytes for the whole call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Frames the kernel dropped on this socket's receive queue since the last call
    /// (`PACKET_STATISTICS`, which resets on read).
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a live tpacket_stats and `len` holds its exact size; the kernel
        // writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(u64::from(st.tp_drops))
        }
    }

    /// Waits until a frame is readable or `timeout` passes (hrtimer precision, not jiffies).
    /// Returns whether the socket is readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `pfd` and `ts` are live, initialised values; one pollfd is passed; a null
        // signal mask leaves the mask unchanged.
        let rc = unsafe { libc::ppoll(&raw mut pfd, 1, &raw const ts, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
    }
}

/// Sets the calling thread's timer slack to 1 ns so timed waits end when asked, not up to
/// 50 us later (the default slack).
pub fn set_min_timer_slack() -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long value and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling thread to `SCHED_FIFO` at `priority` (1-99), so its timed releases are
/// not delayed by ordinary (CFS) work such as compilers sharing the cores. The kernel's RT
/// throttling (`sched_rt_runtime_us`) still leaves other tasks 5 % of each CPU.
pub fn set_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a live, initialised sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
