//! Peer authentication and frame sealing for DWCP (Noise handshake, AEAD, replay window).
#![forbid(unsafe_code)]
