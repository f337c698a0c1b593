//! dwcp-bench: the network-namespace lab, the WAN emulator and the peer runners used by
//! certification and benchmarks.
//!
//! Owns: [`lab`] (A - R - B namespaces or a direct veth pair, leak-free, with cleanup of
//! interrupted runs), [`emulator`] (userspace delay line with loss, duplication, corruption,
//! bottleneck rate and queue, delay, jitter and reordering; this kernel has no netem),
//! [`peers`] (iperf3 runners and min/median/max summaries), [`validate`] (measured RTT, loss
//! and rate against configuration), [`loops`] (packet-rate loops: framed and bare AF_XDP,
//! UDP with and without GSO/GRO), [`certify`] (the certification suite, report and plots),
//! and the `dwcp-lab` CLI.
//!
//! Does not: implement DWCP or drive the appliance (later benchmarks run it inside the lab's
//! namespaces via [`lab::Lab::a`] / [`lab::Lab::b`]). Unsafe code is confined to [`raw`]
//! (AF_PACKET sockets, `ppoll`, `prctl`).
#![deny(unsafe_code)]

pub mod certify;
pub mod dwcp_peer;
pub mod emulator;
pub mod error;
pub mod lab;
pub mod loops;
pub mod peers;
pub mod raw;
pub mod validate;

pub use emulator::{Counters, Impairment, WanEmulator};
pub use error::{LabError, PeerError};
pub use lab::{Lab, LabOptions, Offloads, Profile, WanOptions, cleanup_stale};
