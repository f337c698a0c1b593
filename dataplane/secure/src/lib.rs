//! Peer authentication and frame sealing for DWCP: a 1-RTT Noise handshake carried in
//! HELLO / HELLO_ACK, per-direction AEAD keys for SEALED frames, and key files.
//!
//! Owns: [`Secure`] (implements `dwcp_transfer::wire::Security`: Noise IK / IKpsk2 / NNpsk0
//! with `snow`, allow-list of peer public keys, handshake replay counter, suite choice, key
//! schedule), the AEAD ([`aead`]: AES-128-GCM or ChaCha20-Poly1305, RustCrypto), and key files
//! ([`keys`]: generation with mode 0600, loading that refuses group/world-accessible secrets).
//!
//! Does not: touch sockets or clocks (randomness for ephemeral keys comes from the OS through
//! `snow`; key files are read only by the functions of [`keys`]), decide the receive order or
//! keep replay windows (`dwcp_transfer::wire::decode_with` does, calling into the keys made
//! here), or count drops (the transfer endpoints do, by `DropReason`). docs/security.md is
//! the specification.
#![forbid(unsafe_code)]

pub mod aead;
pub mod cli;
pub mod handshake;
pub mod keys;

pub use aead::{Suite, SuitePref, local_prefers_aes};
pub use handshake::{ConfigError, Secure, SecureConfig};
pub use keys::{
    KeyError, Psk, PublicKey, StaticKeypair, generate_keypair, load_private_key, load_psk,
    load_public_key, public_path, write_keypair, write_psk,
};
