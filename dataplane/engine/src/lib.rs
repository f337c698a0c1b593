//! The DWCP dataplane: everything between a NIC queue and a file.
//!
//! Owns: the transfer codec policy and its measured datacenter signal ([`codec`]), datagram
//! ports ([`io`]: AF_XDP with the XDP program, or UDP sockets, chosen
//! automatically), pinned per-core workers ([`worker`]), transfer sessions that drive the
//! I/O-free AMST engine on a worker ([`session`]), file-backed sources, sinks and resume
//! journals ([`files`]), one-shot sends and receives ([`runner`]), the migration jobs' mover
//! ([`mover`]), byte streams carried as
//! ordered segments ([`stream`], QEMU live migration), the lab demo ([`demo`]) and
//! the `dwcp` binary.
//!
//! Does not: define the wire format (dwcp-proto), the protocol logic (dwcp-transfer), the
//! codecs (dwcp-hde, dwcp-kernels) or the unsafe AF_XDP/UMEM code (dwcp-xsk); this crate
//! forbids `unsafe`.
#![forbid(unsafe_code)]

pub mod codec;
pub mod conns;
pub mod daemon;
pub mod demo;
pub mod files;
pub mod io;
pub mod mover;
pub mod parts;
pub mod profile;
pub mod runner;
pub mod session;
pub mod stream;
pub mod worker;
