//! DWCP's XDP program and its userspace side.
//!
//! Owns: the C XDP program (`xdp/dwcp_xdp.c`, compiled by build.rs with clang and embedded
//! in this crate), the `#[repr(C)]` mirrors of its maps ([`maps`]), and the aya-based
//! loader that attaches it to an interface and drives its maps ([`loader`]). The program
//! steers valid DWCP frames to AF_XDP sockets (or, in relay mode, out of another
//! interface), drops malformed DWCP frames with a per-reason counter, and passes all other
//! traffic to the kernel stack. See docs/xdp.md.
//!
//! Does not: create AF_XDP sockets or UMEMs (dataplane/xsk does), check CRCs or AEAD tags
//! (userspace does), or export metrics (the control plane reads [`Counters`]).
#![forbid(unsafe_code)]

pub mod loader;
pub mod maps;

pub use loader::{AttachMode, ConfigError, LoadError, ProgramConfig, XDP_OBJECT, XdpProgram};
pub use maps::{Counter, Counters};
