//! The 1-RTT handshake carried in HELLO / HELLO_ACK `key_exchange`, and the key schedule.
//!
//! Noise patterns (via `snow`, X25519 / ChaChaPoly / BLAKE2s):
//! - static keys: `Noise_IK` — the initiator knows the responder's public key; the responder
//!   learns the initiator's from message 1 and checks it against its allow-list;
//! - static keys + PSK: `Noise_IKpsk2` (both must hold the PSK too);
//! - PSK only: `Noise_NNpsk0` (anyone holding the PSK is a peer).
//!
//! Binding (docs/protocol.md 9.2): the Noise prologue is `"DWCP-SEALED-1"` ‖ conn id ‖ the
//! HELLO transcript; message 1's payload is format 1, the initiator's suite flags and a
//! handshake counter; message 2's payload is format 1, the chosen suite and BLAKE2s of the
//! HELLO_ACK transcript. So a changed HELLO or HELLO_ACK offer fails the handshake, and
//! everything is in the Noise handshake hash `h`.
//!
//! Key schedule: Noise `Split()` gives `k1` (initiator → responder) and `k2`; the frame keys
//! are `BLAKE2s-MAC(k1, "dwcp i2r" ‖ suite ‖ h)` and `BLAKE2s-MAC(k2, "dwcp r2i" ‖ suite ‖ h)`,
//! truncated to the suite's key length.
//!
//! Replay of message 1: the counter starts at the caller's `epoch` (e.g. Unix time in ns)
//! and grows per handshake; a responder refuses a counter not above the last one it accepted
//! from the same peer (`replay`), so a HELLO captured from an earlier connection cannot
//! re-open it. Memory is per [`Secure`] instance (per process).
//!
//! Does not: do I/O or read clocks (randomness for ephemeral keys comes from the OS through
//! `snow`), carry certificates, or rotate keys within a connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use blake2::digest::{KeyInit, Mac};
use dwcp_proto::DropReason;
use dwcp_transfer::wire::{
    AuthError, FrameKeys, PendingHandshake, PendingResponse, Security, SecurityFactory,
};

use crate::aead::{Cipher, DirectionalKeys, Suite, SuitePref, local_prefers_aes};
use crate::keys::{KEY_LEN, Psk, PublicKey, StaticKeypair};

const PROLOGUE_LABEL: &[u8] = b"DWCP-SEALED-1";
const FORMAT: u8 = 1;
const FLAG_CHACHA: u8 = 1 << 0;
const FLAG_AES: u8 = 1 << 1;
const FLAG_PREFERS_AES: u8 = 1 << 7;
const MSG1_PAYLOAD_LEN: usize = 10;
const MSG2_PAYLOAD_LEN: usize = 34;
const MAX_MSG: usize = 1024;

pub(crate) fn pattern_ik() -> snow::params::NoiseParams {
    // A constant, known-valid pattern name.
    "Noise_IK_25519_ChaChaPoly_BLAKE2s"
        .parse()
        .unwrap_or_else(|_| unreachable_params())
}

fn unreachable_params() -> snow::params::NoiseParams {
    // "Noise_NN_25519_ChaChaPoly_BLAKE2s" parses in every snow version with the default
    // resolver; this path is never taken for the constant names above.
    #[allow(clippy::expect_used)]
    "Noise_NN_25519_ChaChaPoly_BLAKE2s"
        .parse()
        .expect("constant Noise pattern")
}

/// X25519 public key of a private scalar.
pub(crate) fn x25519_public(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    curve25519_dalek::MontgomeryPoint::mul_base_clamped(*private).to_bytes()
}

/// Errors of a [`SecureConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither a static key nor a PSK.
    #[error("no key configured: give a static key (--key) with peer public keys, or a PSK")]
    NoKey,
    /// A static key without any peer public key.
    #[error("a static key needs at least one peer public key (--peer-pub)")]
    NoPeer,
    /// Peer keys without a static key of our own.
    #[error("peer public keys need our own static key (--key)")]
    NoIdentity,
}

/// What an endpoint knows about keys and its policy.
#[derive(Debug, Clone, Default)]
pub struct SecureConfig {
    /// Our static key pair (patterns IK / IKpsk2).
    pub identity: Option<StaticKeypair>,
    /// Peer public keys. Initiator: the first is the responder's key. Responder: the
    /// allow-list of initiators.
    pub peers: Vec<PublicKey>,
    /// Pre-shared key (IKpsk2 with static keys, NNpsk0 alone).
    pub psk: Option<Psk>,
    /// Refuse to run a transfer unsealed.
    pub require_sealed: bool,
    /// AEAD suite preference.
    pub suite: SuitePref,
    /// Start of the handshake counter (e.g. Unix time in ns at start-up; must grow across
    /// restarts of an initiator for replay protection of HELLOs).
    pub epoch: u64,
}

impl SecureConfig {
    fn check(&self) -> Result<(), ConfigError> {
        match (&self.identity, self.peers.is_empty(), &self.psk) {
            (None, true, None) => Err(ConfigError::NoKey),
            (Some(_), true, _) => Err(ConfigError::NoPeer),
            (None, false, _) => Err(ConfigError::NoIdentity),
            _ => Ok(()),
        }
    }

    fn params(&self) -> &'static str {
        match (&self.identity, &self.psk) {
            (Some(_), None) => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            (Some(_), Some(_)) => "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s",
            (None, _) => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
        }
    }
}

/// Peer authentication and key agreement for one endpoint (implements
/// `dwcp_transfer::wire::Security`). Give it to `Sender::set_security` /
/// `Receiver::set_security`.
#[derive(Debug, Clone)]
pub struct Secure {
    cfg: Arc<SecureConfig>,
    shared: Arc<Mutex<Shared>>,
}

/// State shared by the endpoints of one configuration: the initiator's handshake counter and
/// the responder's replay memory (last accepted counter per peer key).
#[derive(Debug)]
struct Shared {
    counter: u64,
    last_seen: HashMap<[u8; KEY_LEN], u64>,
}

impl Secure {
    /// Checks the configuration.
    pub fn new(cfg: SecureConfig) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Self {
            shared: Arc::new(Mutex::new(Shared {
                counter: cfg.epoch,
                last_seen: HashMap::new(),
            })),
            cfg: Arc::new(cfg),
        })
    }

    /// A factory for `SenderConfig::security` / `ReceiverConfig::security`: every endpoint
    /// gets a handle on the same configuration, counter and replay memory.
    pub fn factory(cfg: SecureConfig) -> Result<SecurityFactory, ConfigError> {
        let s = Self::new(cfg)?;
        Ok(SecurityFactory::new(move || Box::new(s.clone())))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn builder<'a>(
        &'a self,
        prologue: &'a [u8],
        initiator: bool,
    ) -> Result<snow::Builder<'a>, snow::Error> {
        let params: snow::params::NoiseParams = self.cfg.params().parse()?;
        let mut b = snow::Builder::new(params).prologue(prologue)?;
        if let Some(id) = &self.cfg.identity {
            b = b.local_private_key(&id.private)?;
            if initiator && let Some(peer) = self.cfg.peers.first() {
                b = b.remote_public_key(&peer.0)?;
            }
        }
        if let Some(psk) = &self.cfg.psk {
            let loc = if self.cfg.identity.is_some() { 2 } else { 0 };
            b = b.psk(loc, &psk.0)?;
        }
        Ok(b)
    }
}

fn prologue(conn_id: u32, transcript: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + 4 + transcript.len());
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(&conn_id.to_be_bytes());
    p.extend_from_slice(transcript);
    p
}

fn auth(what: impl Into<String>, source: Option<snow::Error>) -> AuthError {
    AuthError {
        fatal: true,
        what: what.into(),
        reason: DropReason::AuthFailed,
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

fn blake2s(data: &[u8]) -> [u8; 32] {
    use blake2::Digest;
    blake2::Blake2s256::digest(data).into()
}

fn derive(suite: Suite, split_key: &[u8; 32], label: &[u8], h: &[u8]) -> Option<Cipher> {
    let mut mac = <blake2::Blake2sMac256 as KeyInit>::new_from_slice(split_key).ok()?;
    mac.update(label);
    mac.update(&[suite.id()]);
    mac.update(h);
    let k = mac.finalize().into_bytes();
    Cipher::new(suite, &k)
}

fn frame_keys(
    hs: &mut snow::HandshakeState,
    suite: Suite,
    initiator: bool,
) -> Result<DirectionalKeys, AuthError> {
    let h = hs.get_handshake_hash().to_vec();
    let (k1, k2) = hs.dangerously_get_raw_split();
    let i2r = derive(suite, &k1, b"dwcp i2r", &h);
    let r2i = derive(suite, &k2, b"dwcp r2i", &h);
    let (Some(i2r), Some(r2i)) = (i2r, r2i) else {
        return Err(auth("key derivation failed", None));
    };
    Ok(if initiator {
        DirectionalKeys::new(suite, i2r, r2i)
    } else {
        DirectionalKeys::new(suite, r2i, i2r)
    })
}

fn choose_suite(pref: SuitePref, flags: u8) -> Option<Suite> {
    let offered = |s: Suite| match s {
        Suite::ChaCha20Poly1305 => flags & FLAG_CHACHA != 0,
        Suite::Aes128Gcm => flags & FLAG_AES != 0,
    };
    let want = match pref {
        SuitePref::Force(s) => s,
        SuitePref::Auto if flags & FLAG_PREFERS_AES != 0 && local_prefers_aes() => Suite::Aes128Gcm,
        SuitePref::Auto => Suite::ChaCha20Poly1305,
    };
    if offered(want) {
        Some(want)
    } else {
        [Suite::ChaCha20Poly1305, Suite::Aes128Gcm]
            .into_iter()
            .find(|s| offered(*s))
    }
}

/// An initiator waiting for the HELLO_ACK.
struct Pending {
    hs: snow::HandshakeState,
    /// After message 2 verified: its bytes, the HELLO_ACK transcript hash it carries, keys.
    verified: Option<(Vec<u8>, [u8; 32], DirectionalKeys)>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending(noise handshake)")
    }
}

impl PendingHandshake for Pending {
    fn finish(
        &mut self,
        ack_transcript: &[u8],
        key_exchange: &[u8],
    ) -> Result<Box<dyn FrameKeys>, AuthError> {
        if self.verified.is_none() {
            let mut payload = [0u8; MAX_MSG];
            let n = self
                .hs
                .read_message(key_exchange, &mut payload)
                .map_err(|e| {
                    auth(
                        "HELLO_ACK key exchange does not verify (wrong responder key or PSK)",
                        Some(e),
                    )
                })?;
            let p = payload.get(..n).unwrap_or_default();
            if p.len() != MSG2_PAYLOAD_LEN || p.first() != Some(&FORMAT) {
                return Err(auth(
                    "HELLO_ACK handshake payload has an unknown format",
                    None,
                ));
            }
            let suite = p
                .get(1)
                .and_then(|id| Suite::from_id(*id))
                .ok_or_else(|| auth("responder chose an unknown AEAD suite", None))?;
            if !self.hs.is_handshake_finished() {
                return Err(auth("handshake not finished after HELLO_ACK", None));
            }
            let mut hash = [0u8; 32];
            hash.copy_from_slice(p.get(2..).unwrap_or(&[0; 32]));
            let keys = frame_keys(&mut self.hs, suite, true)?;
            self.verified = Some((key_exchange.to_vec(), hash, keys));
        }
        // The Noise message verified once; the HELLO_ACK around it must match the transcript
        // the responder authenticated. A rewritten one is refused without ending the
        // handshake: the responder re-sends the genuine HELLO_ACK on the next HELLO.
        match &self.verified {
            Some((kex, hash, keys)) if kex == key_exchange && *hash == blake2s(ack_transcript) => {
                Ok(Box::new(keys.clone()))
            }
            _ => Err(AuthError {
                fatal: false,
                what:
                    "HELLO_ACK does not match its authenticated transcript (rewritten on the path)"
                        .into(),
                reason: DropReason::AuthFailed,
                source: None,
            }),
        }
    }
}

impl Security for Secure {
    fn require_sealed(&self) -> bool {
        self.cfg.require_sealed
    }

    fn initiate(
        &mut self,
        conn_id: u32,
        transcript: &[u8],
    ) -> Result<(Vec<u8>, Box<dyn PendingHandshake>), AuthError> {
        let pro = prologue(conn_id, transcript);
        let mut hs = self
            .builder(&pro, true)
            .and_then(snow::Builder::build_initiator)
            .map_err(|e| auth("cannot start the handshake", Some(e)))?;
        let counter = {
            let mut sh = self.shared();
            sh.counter = sh.counter.wrapping_add(1);
            sh.counter
        };
        let mut flags = FLAG_CHACHA | FLAG_AES;
        match self.cfg.suite {
            SuitePref::Auto if local_prefers_aes() => flags |= FLAG_PREFERS_AES,
            SuitePref::Force(Suite::Aes128Gcm) => flags = FLAG_AES | FLAG_PREFERS_AES,
            SuitePref::Force(Suite::ChaCha20Poly1305) => flags = FLAG_CHACHA,
            SuitePref::Auto => {}
        }
        let mut payload = [0u8; MSG1_PAYLOAD_LEN];
        payload[0] = FORMAT;
        payload[1] = flags;
        payload[2..].copy_from_slice(&counter.to_be_bytes());
        let mut msg = vec![0u8; MAX_MSG];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|e| auth("cannot write handshake message 1", Some(e)))?;
        msg.truncate(n);
        Ok((msg, Box::new(Pending { hs, verified: None })))
    }

    fn accept(
        &mut self,
        conn_id: u32,
        hello_transcript: &[u8],
        key_exchange: &[u8],
    ) -> Result<Box<dyn PendingResponse>, AuthError> {
        let pro = prologue(conn_id, hello_transcript);
        let mut hs = self
            .builder(&pro, false)
            .and_then(snow::Builder::build_responder)
            .map_err(|e| auth("cannot start the handshake", Some(e)))?;
        let mut payload = [0u8; MAX_MSG];
        let n = hs.read_message(key_exchange, &mut payload).map_err(|e| {
            auth(
                "HELLO key exchange does not verify (initiator uses another responder key or PSK, or the HELLO was tampered with)",
                Some(e),
            )
        })?;
        let p = payload.get(..n).unwrap_or_default();
        if p.len() != MSG1_PAYLOAD_LEN || p.first() != Some(&FORMAT) {
            return Err(auth("HELLO handshake payload has an unknown format", None));
        }
        let peer = match hs.get_remote_static() {
            Some(rs) => {
                let mut k = [0u8; KEY_LEN];
                k.copy_from_slice(rs.get(..KEY_LEN).unwrap_or(&[0; KEY_LEN]));
                if !self.cfg.peers.iter().any(|p| p.0 == k) {
                    return Err(auth(
                        format!("initiator key {} is not in the allow-list", PublicKey(k)),
                        None,
                    ));
                }
                k
            }
            None => [0; KEY_LEN],
        };
        let mut c = [0u8; 8];
        c.copy_from_slice(p.get(2..10).unwrap_or(&[0; 8]));
        let counter = u64::from_be_bytes(c);
        let mut sh = self.shared();
        if sh.last_seen.get(&peer).is_some_and(|last| counter <= *last) {
            return Err(AuthError {
                fatal: true,
                what: "HELLO key exchange replayed (handshake counter not above the last accepted)"
                    .into(),
                reason: DropReason::Replay,
                source: None,
            });
        }
        let flags = p.get(1).copied().unwrap_or(0);
        let suite = choose_suite(self.cfg.suite, flags)
            .ok_or_else(|| auth("no common AEAD suite", None))?;
        sh.last_seen.insert(peer, counter);
        Ok(Box::new(Accepted { hs, suite }))
    }
}

/// A responder after an accepted message 1.
struct Accepted {
    hs: snow::HandshakeState,
    suite: Suite,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Accepted({})", self.suite.name())
    }
}

impl PendingResponse for Accepted {
    fn finish(
        mut self: Box<Self>,
        ack_transcript: &[u8],
    ) -> Result<(Vec<u8>, Box<dyn FrameKeys>), AuthError> {
        let mut out_payload = [0u8; MSG2_PAYLOAD_LEN];
        out_payload[0] = FORMAT;
        out_payload[1] = self.suite.id();
        out_payload[2..].copy_from_slice(&blake2s(ack_transcript));
        let mut msg = vec![0u8; MAX_MSG];
        let n = self
            .hs
            .write_message(&out_payload, &mut msg)
            .map_err(|e| auth("cannot write handshake message 2", Some(e)))?;
        msg.truncate(n);
        let keys = frame_keys(&mut self.hs, self.suite, false)?;
        Ok((msg, Box::new(keys)))
    }
}
