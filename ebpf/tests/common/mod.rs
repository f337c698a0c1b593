//! Shared pieces of the privileged XDP tests: DWCP frame builders (per the wire layout in
//! docs/protocol.md; the CRC is filler because the kernel does not check it), raw Ethernet
//! frame builders, a minimal AF_XDP receive socket (xdpilone, copy mode, need_wakeup), an
//! AF_PACKET sender, UDP collectors, and polling helpers.
//!
//! Deliberately simple and slow: these are test fixtures, not the dataplane.
#![allow(dead_code)]

use std::net::{IpAddr, UdpSocket};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dwcp_ebpf::{Counter, Counters, XdpProgram};
use dwcp_netns::Netns;
use xdpilone::{BufIdx, IfInfo, Socket, SocketConfig, Umem, UmemConfig};

pub const PORT: u16 = 7470;
pub const OTHER_PORT: u16 = 7471;

pub const HELLO: u8 = 0x01;
pub const DATA: u8 = 0x10;
pub const ACK: u8 = 0x11;
pub const ALL_TYPES: [u8; 9] = [0x01, 0x02, 0x10, 0x11, 0x12, 0x20, 0x21, 0x30, 0x3F];
pub const SEALED: u16 = 1;
pub const LAST: u16 = 2;
pub const RETRANSMIT: u16 = 4;

/// A DWCP frame (UDP payload) with a consistent length: 48-byte header, `payload_len`
/// payload bytes, and a 4-byte CRC or a 16-byte tag when SEALED (filler bytes).
pub fn dwcp(version: u8, ftype: u8, flags: u16, payload_len: usize) -> Vec<u8> {
    let trailer = if flags & SEALED != 0 { 16 } else { 4 };
    let mut f = vec![0u8; 48 + payload_len + trailer];
    f[0..2].copy_from_slice(&0xDC57u16.to_be_bytes());
    f[2] = version;
    f[3] = ftype;
    f[4..6].copy_from_slice(&flags.to_be_bytes());
    f[6..8].copy_from_slice(&3u16.to_be_bytes()); // stream id
    f[8..12].copy_from_slice(&0xC0FFEEu32.to_be_bytes()); // connection id
    f[12..16].copy_from_slice(&(payload_len as u32).to_be_bytes());
    f[16..24].copy_from_slice(&42u64.to_be_bytes()); // sequence
    f[24..32].copy_from_slice(&7u64.to_be_bytes()); // object id
    f[32..40].copy_from_slice(&(payload_len as u64 * 3).to_be_bytes()); // chunk offset
    for (i, b) in f[48..48 + payload_len].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    let n = f.len();
    f[n - trailer..].fill(0xA5);
    f
}

/// One malformed DWCP frame per drop reason (several for some), with the counter each
/// must land in.
pub fn malformed() -> Vec<(Vec<u8>, Counter)> {
    let base = || dwcp(3, DATA, 0, 100);
    let mut v = Vec::new();
    v.push((base()[..47].to_vec(), Counter::DropTooShort));
    v.push((Vec::new(), Counter::DropTooShort));
    v.push((b"hello, not dwcp".to_vec(), Counter::DropTooShort));
    let mut f = base();
    f[1] = 0x58;
    v.push((f, Counter::DropBadMagic));
    v.push((vec![b'x'; 200], Counter::DropBadMagic)); // ordinary content to the DWCP port
    for ver in [0u8, 2, 4, 0xFF] {
        let mut f = base();
        f[2] = ver;
        v.push((f, Counter::DropBadVersion));
    }
    for t in [0x00u8, 0x03, 0x13, 0x3E, 0x40, 0xFF] {
        let mut f = base();
        f[3] = t;
        v.push((f, Counter::DropBadType));
    }
    for (idx, val) in [(5usize, 0x08u8), (4, 0x80), (41, 1), (42, 1), (43, 0x80)] {
        let mut f = base();
        f[idx] = val;
        v.push((f, Counter::DropReservedBits));
    }
    let mut f = base();
    f[12..16].copy_from_slice(&101u32.to_be_bytes()); // claims one byte more
    v.push((f, Counter::DropBadLength));
    let mut f = base();
    f[12..16].copy_from_slice(&99u32.to_be_bytes()); // claims one byte less
    v.push((f, Counter::DropBadLength));
    let mut f = base();
    f[5] = SEALED as u8; // sealed needs a 16-byte tag, this one has a 4-byte CRC
    v.push((f, Counter::DropBadLength));
    let mut f = base();
    f[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    v.push((f, Counter::DropBadLength));
    v
}

/// Valid frames covering both versions, every type and the flag combinations.
pub fn valid_set() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (i, t) in ALL_TYPES.iter().enumerate() {
        v.push(dwcp(3, *t, 0, i * 37));
    }
    v.push(dwcp(1, HELLO, 0, 0));
    v.push(dwcp(1, DATA, LAST, 1200));
    v.push(dwcp(3, DATA, SEALED, 1000));
    v.push(dwcp(3, ACK, SEALED | LAST | RETRANSMIT, 16));
    v.push(dwcp(3, DATA, RETRANSMIT, 1400));
    v
}

pub fn expected_drops(frames: &[(Vec<u8>, Counter)]) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .filter(|c| c.is_drop())
        .map(|c| (*c, frames.iter().filter(|(_, r)| r == c).count() as u64))
        .collect()
}

/// Polls `prog`'s counters until `done` holds (true) or 3 s pass (false).
pub fn wait_counters(prog: &XdpProgram, done: impl Fn(&Counters) -> bool) -> Counters {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let c = prog.counters().expect("read counters");
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends each payload as one UDP datagram from a socket inside `ns`.
pub fn send_udp(ns: &Netns, dst: IpAddr, port: u16, payloads: Vec<Vec<u8>>) {
    ns.run_in(move || {
        let bind: IpAddr = if dst.is_ipv4() {
            "0.0.0.0".parse().unwrap()
        } else {
            "::".parse().unwrap()
        };
        let s = UdpSocket::bind((bind, 0)).expect("bind sender");
        for p in &payloads {
            s.send_to(p, (dst, port)).expect("send_to");
            // Keep the unresolved-neighbour queue and the rx rings shallow.
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .expect("enter namespace");
}

/// A UDP socket inside a namespace collecting datagrams until stopped.
pub struct UdpCollector {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl UdpCollector {
    pub fn bind(ns: &Netns, addr: IpAddr, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let join = ns
            .spawn_in(move || {
                let s = UdpSocket::bind((addr, port)).expect("bind collector");
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                tx.send(()).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        got.push(buf[..n].to_vec());
                    }
                }
                got
            })
            .expect("enter namespace");
        rx.recv().expect("collector bound");
        Self {
            stop,
            join: Some(join),
        }
    }

    /// Waits `linger` for stragglers, then returns what arrived.
    pub fn finish(mut self, linger: Duration) -> Vec<Vec<u8>> {
        std::thread::sleep(linger);
        self.stop.store(true, Ordering::Relaxed);
        self.join.take().unwrap().join().expect("collector thread")
    }
}

impl Drop for UdpCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[repr(C, align(4096))]
#[derive(Clone)]
struct Page([u8; 4096]);

const XSK_FRAMES: usize = 512;

/// A minimal AF_XDP receive socket (copy mode, need_wakeup, optionally multi-buffer) on
/// one queue of an interface inside a namespace, collecting whole frames until stopped.
pub struct XskRx {
    fd: OwnedFd,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl XskRx {
    pub fn open(ns: &Netns, ifname: &str, queue: u32, multi_buffer: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let ifname = ifname.to_string();
        let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
        let join = ns
            .spawn_in(move || xsk_rx_thread(&ifname, queue, multi_buffer, &stop2, tx))
            .expect("enter namespace");
        let fd = rx.recv().expect("AF_XDP socket set up");
        Self {
            fd,
            stop,
            join: Some(join),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    pub fn finish(mut self, linger: Duration) -> Vec<Vec<u8>> {
        std::thread::sleep(linger);
        self.stop.store(true, Ordering::Relaxed);
        self.join.take().unwrap().join().expect("xsk thread")
    }
}

impl Drop for XskRx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const XDP_USE_SG: u16 = 1 << 4;
const XDP_PKT_CONTD: u32 = 1;

fn xsk_rx_thread(
    ifname: &str,
    queue: u32,
    multi_buffer: bool,
    stop: &AtomicBool,
    fd_out: std::sync::mpsc::Sender<OwnedFd>,
) -> Vec<Vec<u8>> {
    // Declared first so it is dropped last, after the socket and UMEM that point into it.
    let mut pages = vec![Page([0u8; 4096]); XSK_FRAMES];
    let base: *mut u8 = pages.as_mut_ptr().cast();
    let area_len = XSK_FRAMES * 4096;
    let area = NonNull::slice_from_raw_parts(NonNull::new(base).unwrap(), area_len);
    let cfg = UmemConfig {
        fill_size: XSK_FRAMES as u32,
        complete_size: XSK_FRAMES as u32,
        frame_size: 4096,
        headroom: 0,
        flags: 0,
    };
    // SAFETY: `area` is page aligned (Page is align(4096)), spans exactly the `pages`
    // allocation, and `pages` outlives the Umem and every socket made from it (it is
    // declared before them in this function, so it is dropped after them).
    let umem = unsafe { Umem::new(cfg, area) }.expect("umem");
    let mut info = IfInfo::invalid();
    let cname = std::ffi::CString::new(ifname).unwrap();
    info.from_name(&cname).expect("interface");
    info.set_queue(queue);
    let sock = Socket::with_shared(&info, &umem).expect("socket");
    let mut fq = umem.fq_cq(&sock).expect("fill/completion rings");
    let mut bind_flags = SocketConfig::XDP_BIND_NEED_WAKEUP | SocketConfig::XDP_BIND_COPY;
    if multi_buffer {
        bind_flags |= XDP_USE_SG;
    }
    let user = umem
        .rx_tx(
            &sock,
            &SocketConfig {
                rx_size: NonZeroU32::new(XSK_FRAMES as u32),
                tx_size: None,
                bind_flags,
            },
        )
        .expect("rx ring");
    let mut rx = user.map_rx().expect("map rx");
    // A queue whose previous socket was just closed stays busy until the kernel's deferred
    // buffer-pool release has run: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match umem.bind(&user) {
            Ok(()) => break,
            Err(e) if e.get_raw() == libc::EBUSY && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("bind {ifname} queue {queue}: {e:?}"),
        }
    }
    {
        let mut w = fq.fill(XSK_FRAMES as u32);
        w.insert((0..XSK_FRAMES as u32).map(|i| umem.frame(BufIdx(i)).unwrap().offset));
        w.commit();
    }
    // SAFETY: `user.as_raw_fd()` is the open AF_XDP socket owned by `user`, alive for the
    // duration of this borrow; it is only duplicated here.
    let dup = unsafe { BorrowedFd::borrow_raw(user.as_raw_fd()) }
        .try_clone_to_owned()
        .expect("dup socket fd");
    fd_out.send(dup).expect("send fd");

    let mut frames = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        let mut returned = Vec::new();
        {
            let mut r = rx.receive(64);
            while let Some(desc) = r.read() {
                got += 1;
                let addr = desc.addr as usize;
                let len = desc.len as usize;
                assert!(addr + len <= area_len, "descriptor outside the UMEM");
                // SAFETY: the descriptor came off the rx ring, so the kernel has finished
                // writing this chunk and will not touch it again until we put it back on
                // the fill ring below; the range lies inside `pages` (checked above).
                let bytes = unsafe { std::slice::from_raw_parts(base.add(addr), len) };
                partial.extend_from_slice(bytes);
                if desc.options & XDP_PKT_CONTD == 0 {
                    frames.push(std::mem::take(&mut partial));
                }
                returned.push((desc.addr / 4096) * 4096);
            }
            r.release();
        }
        if !returned.is_empty() {
            let mut w = fq.fill(returned.len() as u32);
            w.insert(returned.into_iter());
            w.commit();
        }
        if fq.needs_wakeup() {
            fq.wake();
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(rx);
    drop(user);
    drop(fq);
    drop(sock);
    drop(umem);
    drop(pages);
    frames
}

/// The UDP payload of an Ethernet/IPv4/UDP frame (no VLAN, no IP options).
pub fn udp_payload_v4(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "not IPv4");
    let ihl = usize::from(frame[14] & 0x0F) * 4;
    &frame[14 + ihl + 8..]
}

/// MAC address of `ifname` inside `ns`.
pub fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = ns
        .command("cat")
        .arg(format!("/sys/class/net/{ifname}/address"))
        .output()
        .expect("cat");
    let s = String::from_utf8(out.stdout).unwrap();
    let mut mac = [0u8; 6];
    for (i, p) in s.trim().split(':').enumerate() {
        mac[i] = u8::from_str_radix(p, 16).unwrap();
    }
    mac
}

/// `ip link show dev ifname` inside `ns`.
pub fn link_show(ns: &Netns, ifname: &str) -> String {
    let out = ns
        .ip(&["link", "show", "dev", ifname])
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `ip link` shows any XDP program on `ifname`.
pub fn has_xdp(ns: &Netns, ifname: &str) -> bool {
    let s = link_show(ns, ifname);
    s.contains("prog/xdp") || s.contains(" xdp") || s.contains("xdpgeneric")
}

/// Sends raw Ethernet frames out of `ifname` inside `ns` through an AF_PACKET socket.
pub fn send_raw(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>) {
    let ifname = ifname.to_string();
    ns.run_in(move || {
        let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).expect("ifindex");
        // SAFETY: socket(2) with constant arguments; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data for which all-zero bytes are valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        for f in &frames {
            // SAFETY: `f` is a live buffer of `f.len()` bytes, `sll` a live sockaddr_ll of
            // the size passed, and `fd` an open socket.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .expect("enter namespace");
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s >> 16 != 0 {
        s = (s & 0xFFFF) + (s >> 16);
    }
    !(s as u16)
}

/// Builder for raw Ethernet frames carrying UDP.
pub struct Raw {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// IPv4 source and destination.
    pub ip4: ([u8; 4], [u8; 4]),
    /// IPv6 source and destination.
    pub ip6: ([u8; 16], [u8; 16]),
}

impl Raw {
    fn l2(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        for (tpid, id) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn udp(dport: u16, payload: &[u8], udp_len_override: Option<u16>) -> Vec<u8> {
        let len = udp_len_override.unwrap_or((8 + payload.len()) as u16);
        let mut u = Vec::new();
        u.extend_from_slice(&40000u16.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&0u16.to_be_bytes()); // no checksum (IPv4)
        u.extend_from_slice(payload);
        u
    }

    /// IPv4/UDP; `options` are appended to the IP header (multiple of 4 bytes);
    /// `frag_off` is the raw flags+offset field.
    pub fn v4(
        &self,
        options: &[u8],
        frag_off: u16,
        dport: u16,
        payload: &[u8],
        udp_len_override: Option<u16>,
    ) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let udp = Self::udp(dport, payload, udp_len_override);
        let ihl = 20 + options.len();
        let mut ip = vec![0u8; 20];
        ip[0] = 0x40 | (ihl / 4) as u8;
        ip[2..4].copy_from_slice(&((ihl + udp.len()) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&self.ip4.0);
        ip[16..20].copy_from_slice(&self.ip4.1);
        ip.extend_from_slice(options);
        let c = csum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = self.l2(0x0800);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    /// IPv6 with the given extension headers (next-header value, body without the first
    /// two bytes) then UDP.
    pub fn v6(&self, exts: &[(u8, Vec<u8>)], dport: u16, payload: &[u8]) -> Vec<u8> {
        let udp = Self::udp(dport, payload, None);
        let mut ext_bytes = Vec::new();
        let first_next = exts.first().map(|e| e.0).unwrap_or(17);
        for (i, (_, body)) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map(|e| e.0).unwrap_or(17);
            ext_bytes.push(next);
            if exts[i].0 == 44 {
                // Fragment header: fixed 8 bytes, second byte reserved.
                ext_bytes.push(0);
                ext_bytes.extend_from_slice(&body[..6]);
            } else if exts[i].0 == 51 {
                // AH: length in 4-byte units, minus 2.
                assert_eq!((body.len() + 2) % 8, 0);
                ext_bytes.push(((body.len() + 2) / 4 - 2) as u8);
                ext_bytes.extend_from_slice(body);
            } else {
                assert_eq!((body.len() + 2) % 8, 0);
                ext_bytes.push(((body.len() + 2) / 8 - 1) as u8);
                ext_bytes.extend_from_slice(body);
            }
        }
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((ext_bytes.len() + udp.len()) as u16).to_be_bytes());
        ip[6] = first_next;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&self.ip6.0);
        ip[24..40].copy_from_slice(&self.ip6.1);
        let mut f = self.l2(0x86DD);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&ext_bytes);
        f.extend_from_slice(&udp);
        f
    }
}
