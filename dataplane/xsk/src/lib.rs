//! AF_XDP sockets, UMEM and frame pools: the dataplane's unsafe I/O core.
//!
//! Owns: the UMEM memory mapping (NUMA-local, hugepages when available), the frame pools
//! that hand UMEM frames out without locks or heap allocation on the packet path (singly,
//! or for jumbo packets in runs of contiguous frames written in place), the
//! fill/rx/tx/completion ring management around `xdpilone`'s rings, `#[must_use]` rx and tx
//! batches that commit explicitly, `need_wakeup` handling, and a plain-memory fake kernel so
//! all of that is testable without privileges. It also holds the small `recvmmsg`/`sendmmsg`
//! wrapper ([`mmsg`]) used by the UDP fallback backend, because this crate is where the
//! dataplane's unsafe system-call code lives.
//!
//! Does not: load or attach XDP programs or fill the XSKMAP (that is `dwcp-ebpf`), build or
//! parse Ethernet/IP/UDP/DWCP headers (the engine's io layer does), or pin threads.
//!
//! Unsafe code sits in three small modules: [`umem`] (mmap, `mbind`, raw frame access),
//! [`numa`] (`set_mempolicy`-style system calls) and [`mmsg`]. Everything else is safe code
//! built on their safe owner types.

pub mod error;
pub mod fake;
pub mod mmsg;
pub mod numa;
pub mod pool;
pub mod port;
pub mod rings;
pub mod socket;
pub mod umem;

pub use error::XskError;
pub use pool::FramePool;
pub use port::{PortStats, RxBatch, RxPacket, TxBatch, XskPort};
pub use rings::{RxRings, TxRings};
pub use socket::{BindMode, XskConfig, XskSocket};
pub use umem::{UmemArea, UmemOptions};
pub use xdpilone::xdp::XdpDesc;

/// Size of one UMEM frame. The kernel refuses chunks larger than a page, and 4096 keeps
/// frame addresses aligned so an rx address can be masked back to its frame base.
pub const FRAME_SIZE: u32 = 4096;

/// `options` bit in an rx/tx descriptor: more fragments of this packet follow
/// (multi-buffer, `XDP_PKT_CONTD`).
pub const XDP_PKT_CONTD: u32 = 1;
