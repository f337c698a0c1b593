//! The AEAD of SEALED frames: AES-128-GCM or ChaCha20-Poly1305 (`ring`'s implementations:
//! VAES/VPCLMULQDQ AES-GCM where the CPU has it, 4-5x the RustCrypto crates used before on
//! this lab's CPU, docs/perf.md section 7), one key per direction, and the suite choice.
//!
//! Owns: [`Suite`] (ids carried in the handshake), [`local_prefers_aes`] (AES-NI + PCLMULQDQ
//! detection), [`DirectionalKeys`] which implements `dwcp_transfer::wire::FrameKeys` (seal with
//! the sending key, open with the receiving key; nonce and associated data come from the
//! caller, docs/protocol.md 13). Does not: derive keys (module `handshake`), track replay
//! (the transfer layer's `SealedConn` does, after verification), or pick nonces.

use dwcp_proto::{HEADER_LEN, TAG_LEN};
use dwcp_transfer::wire::TagMismatch;
use ring::aead::{AES_128_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};

/// AEAD suite of a SEALED connection, chosen by the responder from the initiator's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// ChaCha20-Poly1305 (RFC 8439), 256-bit key. Fast everywhere in software.
    ChaCha20Poly1305,
    /// AES-128-GCM, 128-bit key. Fastest where AES-NI and carry-less multiply exist.
    Aes128Gcm,
}

impl Suite {
    /// Wire id in the handshake payload.
    #[must_use]
    pub const fn id(self) -> u8 {
        match self {
            Suite::ChaCha20Poly1305 => 1,
            Suite::Aes128Gcm => 2,
        }
    }

    /// Suite of a wire id.
    #[must_use]
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Suite::ChaCha20Poly1305),
            2 => Some(Suite::Aes128Gcm),
            _ => None,
        }
    }

    /// Key length in bytes.
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Suite::ChaCha20Poly1305 => 32,
            Suite::Aes128Gcm => 16,
        }
    }

    /// Stable name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
            Suite::Aes128Gcm => "aes-128-gcm",
        }
    }
}

/// Which suite an endpoint asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuitePref {
    /// AES-128-GCM when both ends have AES-NI (+ PCLMULQDQ), else ChaCha20-Poly1305.
    #[default]
    Auto,
    /// Always this suite (both ends support both; the responder's preference wins).
    Force(Suite),
}

/// True when this CPU runs AES-GCM in hardware (x86-64 AES-NI and PCLMULQDQ; AArch64 AES and
/// PMULL).
#[must_use]
pub fn local_prefers_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// One keyed AEAD instance.
#[derive(Clone)]
pub struct Cipher {
    suite: Suite,
    key: LessSafeKey,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print key material
        write!(f, "Cipher({})", self.suite.name())
    }
}

impl Cipher {
    /// A cipher of `suite` with `key` (at least [`Suite::key_len`] bytes; the first ones are
    /// used); `None` for a shorter key.
    #[must_use]
    pub fn new(suite: Suite, key: &[u8]) -> Option<Self> {
        let k = key.get(..suite.key_len())?;
        let alg = match suite {
            Suite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Suite::Aes128Gcm => &AES_128_GCM,
        };
        Some(Self {
            suite,
            key: LessSafeKey::new(UnboundKey::new(alg, k).ok()?),
        })
    }

    /// Encrypts `buf` in place; returns the tag.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let n = Nonce::assume_unique_for_key(*nonce);
        // Only fails for buffers above the AEAD's length limit (2^36 bytes), far above a frame.
        match self.key.seal_in_place_separate_tag(n, Aad::from(aad), buf) {
            Ok(tag) => {
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag.as_ref());
                t
            }
            Err(_) => [0; TAG_LEN],
        }
    }

    /// Verifies `tag` and decrypts `buf` in place.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), TagMismatch> {
        let n = Nonce::assume_unique_for_key(*nonce);
        self.key
            .open_in_place_separate_tag(n, Aad::from(aad), Tag::from(*tag), buf, 0..)
            .map(|_| ())
            .map_err(|_| TagMismatch)
    }
}

/// The two keys of one connection as seen by one endpoint.
#[derive(Debug, Clone)]
pub struct DirectionalKeys {
    suite: Suite,
    send: Cipher,
    recv: Cipher,
}

impl DirectionalKeys {
    /// Keys from the key schedule.
    #[must_use]
    pub fn new(suite: Suite, send: Cipher, recv: Cipher) -> Self {
        Self { suite, send, recv }
    }

    /// The suite.
    #[must_use]
    pub fn suite(&self) -> Suite {
        self.suite
    }
}

impl dwcp_transfer::wire::FrameKeys for DirectionalKeys {
    fn seal(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8; HEADER_LEN],
        payload: &mut [u8],
    ) -> [u8; TAG_LEN] {
        self.send.seal(nonce, aad, payload)
    }

    fn open(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8; HEADER_LEN],
        payload: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), TagMismatch> {
        self.recv.open(nonce, aad, payload, tag)
    }

    fn suite(&self) -> &'static str {
        self.suite.name()
    }
}
