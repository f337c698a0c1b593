//! The demo transfer: two appliances in a lab of network namespaces, one object between them.
//!
//! Owns: building the lab (two namespaces joined by a veth pair, via dwcp-netns), making a
//! demo object (a deterministic mix of zero, random and text blocks, so every block kind
//! shows up), running a receiving appliance in one namespace and a sending appliance in the
//! other (each a pinned worker with automatic AF_XDP/UDP selection), checking the received
//! file against the source byte for byte and by hash, and reporting what was measured.
//! Without root there can be no namespaces: the demo then says so and runs both appliances
//! on the loopback interface with the UDP backend. With [`DemoOptions::sealed`] it makes a
//! throwaway static key pair per appliance (mode 0600, in a temporary directory removed
//! afterwards), each trusting only the other's public key, so every frame is SEALED.
//!
//! Does not: tune anything (embedded defaults only) or keep the lab: everything it makes is
//! removed when it returns, also on error.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dwcp_transfer::{ReceiverConfig, SenderConfig};

use crate::io::{BackendChoice, IoConfig};
use crate::runner::{RecvReport, RunError, RunOptions, SendReport, recv_file, send_file};

/// Demo errors.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Building the lab failed.
    #[error("lab set-up")]
    Lab(#[from] dwcp_netns::LabError),
    /// Writing or reading the demo files failed.
    #[error("demo file {path}")]
    File {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sending appliance failed.
    #[error("sending appliance")]
    Send(#[source] RunError),
    /// The receiving appliance failed.
    #[error("receiving appliance")]
    Recv(#[source] RunError),
    /// Making or loading the throwaway demo keys failed.
    #[error("demo keys")]
    Keys(#[from] dwcp_secure::cli::CliError),
    /// The received object differs from the source.
    #[error("received object differs from the source (hash {got:032x}, expected {want:032x})")]
    Mismatch {
        /// Hash of the received file.
        got: u128,
        /// Hash of the source.
        want: u128,
    },
}

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Object size in bytes.
    pub size: u64,
    /// Backend choice for both appliances.
    pub backend: BackendChoice,
    /// Highest protocol version the sender offers (1 or 3).
    pub version: u8,
    /// Link MTU in the lab.
    pub mtu: u32,
    /// Directory for the demo files (a temporary one when None).
    pub dir: Option<PathBuf>,
    /// SEALED transfer with throwaway keys (see the module docs).
    pub sealed: bool,
    /// Workers per appliance: 1, or the object in that many parts, one worker each
    /// ([`crate::parts`]).
    pub workers: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            size: 256 << 20,
            backend: BackendChoice::Auto,
            version: 3,
            mtu: 1500,
            dir: None,
            sealed: false,
            workers: 1,
        }
    }
}

/// What the demo measured.
#[derive(Debug)]
pub struct DemoReport {
    /// Where the appliances ran.
    pub lab: String,
    /// Sender side.
    pub send: SendReport,
    /// Receiver side.
    pub recv: RecvReport,
    /// XXH3-128 of source and destination (equal).
    pub hash: u128,
}

/// Writes the demo object: per 64 KiB region, a deterministic choice of zeros, random bytes or
/// text, so the object is neither trivially compressible nor incompressible.
pub fn write_demo_object(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let text = b"DWCP demo object: zero blocks, random blocks and text blocks. ";
    let region = 64 * 1024;
    let mut buf = vec![0u8; region];
    let mut left = size;
    while left > 0 {
        let n = left.min(region as u64) as usize;
        match next() % 4 {
            0 => buf[..n].fill(0),
            1 | 2 => {
                for c in buf[..n].chunks_mut(8) {
                    let v = next().to_le_bytes();
                    c.copy_from_slice(&v[..c.len()]);
                }
            }
            _ => {
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = text[i % text.len()];
                }
            }
        }
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// XXH3-128 of a file, read in 1 MiB pieces.
pub fn hash_file(path: &Path) -> std::io::Result<u128> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.digest128());
        }
        h.update(&buf[..n]);
    }
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::File {
        path: path.to_path_buf(),
        source,
    }
}

const PORT: u16 = 7470;

/// Throwaway keys for a sealed demo: a key pair per appliance in a fresh temporary
/// directory (removed with the returned guard), each side trusting only the other's public
/// key. Returns (sender security, receiver security, guard).
fn demo_keys() -> Result<
    (
        dwcp_transfer::wire::SecurityFactory,
        dwcp_transfer::wire::SecurityFactory,
        tempfile::TempDir,
    ),
    DemoError,
> {
    use dwcp_secure::cli::{CliError, KeyArgs};
    let dir = tempfile::Builder::new()
        .prefix("dwcp-demo-keys")
        .tempdir()
        .map_err(file_err(Path::new("/tmp")))?;
    let (a, b) = (
        dir.path().join("sender.key"),
        dir.path().join("receiver.key"),
    );
    for k in [&a, &b] {
        dwcp_secure::cli::keygen(k, false).map_err(CliError::from)?;
    }
    let side = |own: &Path, peer: &Path| -> Result<_, DemoError> {
        KeyArgs {
            key: Some(own.to_path_buf()),
            peer_pub: vec![dwcp_secure::public_path(peer)],
            ..KeyArgs::default()
        }
        .factory()?
        .ok_or_else(|| DemoError::Keys(CliError::Config(dwcp_secure::ConfigError::NoKey)))
    };
    Ok((side(&a, &b)?, side(&b, &a)?, dir))
}

/// Runs the demo and returns what it measured.
pub fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().map_err(file_err(Path::new("/tmp")))?;
            tmp.path().to_path_buf()
        }
    };
    let src = dir.join("object.src");
    let dst = dir.join("object.dst");
    let _ = std::fs::remove_file(&dst);
    write_demo_object(&src, opts.size).map_err(file_err(&src))?;
    let want = hash_file(&src).map_err(file_err(&src))?;

    let mut sender_cfg = SenderConfig {
        max_version: opts.version,
        mtu: Some(opts.mtu as usize),
        ..SenderConfig::default()
    };
    let mut recv_cfg = ReceiverConfig::default();
    let _keys = if opts.sealed {
        let (s, r, guard) = demo_keys()?;
        sender_cfg.security = Some(s);
        recv_cfg.security = Some(r);
        Some(guard)
    } else {
        None
    };
    let timeout = Duration::from_secs(600);

    let (lab, send, recv) = if dwcp_netns::require_root().is_ok() {
        let pair = dwcp_netns::Pair::new(
            "demo",
            dwcp_netns::VethOptions {
                mtu: opts.mtu,
                ..Default::default()
            },
        )?;
        let (ip_a, ip_b) = (pair.ip_a(), pair.ip_b());
        // busy-polling workers need a core each; more than the machine has must yield
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let idle_yield = 2 * opts.workers.max(1) > cores;
        let mk = |ifname: &str, local: Ipv4Addr, peer: Ipv4Addr, core: usize| {
            let mut io = IoConfig::new(
                ifname,
                SocketAddrV4::new(local, PORT),
                SocketAddrV4::new(peer, PORT),
            );
            io.choice = opts.backend;
            io.max_datagram = opts.mtu as usize - 28;
            RunOptions {
                io,
                core,
                timeout,
                idle_yield,
            }
        };
        // one worker: the sender on core 0, the receiver on core 1; n workers: the
        // receiver's parts from core n on, the sender's from core 0
        let n = opts.workers.max(1);
        let ropts = mk(dwcp_netns::IF_B, ip_b, ip_a, if n == 1 { 1 } else { n });
        let sopts = mk(dwcp_netns::IF_A, ip_a, ip_b, 0);
        let dst2 = dst.clone();
        let rx = pair.b.spawn_in(move || {
            if n > 1 {
                crate::parts::recv_file_parts(
                    &dst2,
                    recv_cfg,
                    &ropts,
                    n,
                    Duration::from_millis(300),
                    None,
                )
                .map(crate::parts::PartsReport::into_recv_report)
            } else {
                recv_file(
                    &dst2,
                    recv_cfg,
                    &ropts,
                    Duration::from_millis(300),
                    &mut |_| {},
                )
            }
        })?;
        std::thread::sleep(Duration::from_millis(300));
        let src2 = src.clone();
        let send = pair.a.run_in(move || {
            if n > 1 {
                crate::parts::send_file_parts(
                    &src2,
                    sender_cfg,
                    &sopts,
                    crate::codec::CodecChoice::Auto,
                    n,
                    None,
                )
                .map(crate::parts::PartsReport::into_send_report)
            } else {
                send_file(&src2, sender_cfg, &sopts, &mut |_| {})
            }
        })?;
        let recv = rx.join().expect("receiver thread panicked");
        let lab = format!(
            "namespaces {} and {} joined by a veth pair (MTU {})",
            pair.a.name(),
            pair.b.name(),
            opts.mtu
        );
        (lab, send, recv)
    } else {
        eprintln!(
            "dwcp demo: not root, so no network namespaces and no AF_XDP: running both \
             appliances on the loopback interface with the UDP backend"
        );
        let lo = Ipv4Addr::LOCALHOST;
        let mk = |local: u16, peer: u16, core: usize| {
            let mut io = IoConfig::new(
                "lo",
                SocketAddrV4::new(lo, local),
                SocketAddrV4::new(lo, peer),
            );
            io.choice = BackendChoice::Udp;
            RunOptions {
                io,
                core,
                timeout,
                idle_yield: true,
            }
        };
        let ropts = mk(PORT + 1, PORT, 1);
        let sopts = mk(PORT, PORT + 1, 0);
        let dst2 = dst.clone();
        let rx = std::thread::spawn(move || {
            recv_file(
                &dst2,
                recv_cfg,
                &ropts,
                Duration::from_millis(300),
                &mut |_| {},
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let send = send_file(&src, sender_cfg, &sopts, &mut |_| {});
        let recv = rx.join().expect("receiver thread panicked");
        ("loopback (127.0.0.1), UDP backend".to_string(), send, recv)
    };
    let send = send.map_err(DemoError::Send)?;
    let recv = recv.map_err(DemoError::Recv)?;
    let got = hash_file(&recv.path).map_err(file_err(&recv.path))?;
    if got != want {
        return Err(DemoError::Mismatch { got, want });
    }
    Ok(DemoReport {
        lab,
        send,
        recv,
        hash: got,
    })
}
