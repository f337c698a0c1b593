//! Key files: X25519 static key pairs and pre-shared keys, as hex text files.
//!
//! Owns: generating a key pair ([`generate_keypair`], [`write_keypair`]: the private key file
//! is created with mode 0600 and never overwritten, the public key goes to `PATH.pub` with
//! mode 0644), and loading ([`load_private_key`], [`load_public_key`], [`load_psk`]). A private
//! key or PSK file that the group or others may read or write is refused with
//! [`KeyError::InsecurePermissions`] (like ssh). Keys never come from code or command lines.
//!
//! Does not: hold keys in locked memory or zero them on drop (the process is trusted; see
//! docs/security.md), rotate keys, or talk to a KMS.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of keys (X25519 scalars and points, PSKs).
pub const KEY_LEN: usize = 32;

/// Errors of key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {op} failed")]
    Io {
        /// File.
        path: PathBuf,
        /// Operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret key file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:04o}: secret keys must not be accessible by group or others (chmod 600 {path})"
    )]
    InsecurePermissions {
        /// File.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold one key of 64 hex digits.
    #[error("key file {path}: expected 64 hex digits (32 bytes), {what}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// Key generation failed.
    #[error("generating a key pair failed")]
    Generate(#[source] snow::Error),
}

/// A 32-byte public key (X25519).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex(&self.0))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// A static key pair. `Debug` never prints the private half.
#[derive(Clone)]
pub struct StaticKeypair {
    /// Private X25519 scalar.
    pub(crate) private: [u8; KEY_LEN],
    /// Public key.
    pub public: PublicKey,
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A 32-byte pre-shared key. `Debug` never prints it.
#[derive(Clone)]
pub struct Psk(pub(crate) [u8; KEY_LEN]);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// A PSK from bytes (e.g. read from a secret store by the caller).
    #[must_use]
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(path: &Path, text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let t = text.trim();
    let fmt = |what| KeyError::Format {
        path: path.to_path_buf(),
        what,
    };
    if t.len() != 2 * KEY_LEN {
        return Err(fmt("wrong length"));
    }
    let mut out = [0u8; KEY_LEN];
    for (o, pair) in out.iter_mut().zip(t.as_bytes().chunks_exact(2)) {
        let s = std::str::from_utf8(pair).map_err(|_| fmt("not hex"))?;
        *o = u8::from_str_radix(s, 16).map_err(|_| fmt("not hex"))?;
    }
    Ok(out)
}

/// A fresh X25519 key pair from the OS random source.
pub fn generate_keypair() -> Result<StaticKeypair, KeyError> {
    let kp = snow::Builder::new(crate::handshake::pattern_ik())
        .generate_keypair()
        .map_err(KeyError::Generate)?;
    let mut private = [0u8; KEY_LEN];
    let mut public = [0u8; KEY_LEN];
    private.copy_from_slice(kp.private.get(..KEY_LEN).unwrap_or(&[0; KEY_LEN]));
    public.copy_from_slice(kp.public.get(..KEY_LEN).unwrap_or(&[0; KEY_LEN]));
    Ok(StaticKeypair {
        private,
        public: PublicKey(public),
    })
}

/// Path of the public half of the key file `path`: `path` + `.pub`.
#[must_use]
pub fn public_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), KeyError> {
    let io = |op, source| KeyError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("create (refusing to overwrite)", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    Ok(())
}

/// Writes `kp` as `path` (private, mode 0600, created new) and `path.pub` (public, 0644).
pub fn write_keypair(path: &Path, kp: &StaticKeypair) -> Result<(), KeyError> {
    write_new(path, 0o600, &format!("{}\n", hex(&kp.private)))?;
    write_new(&public_path(path), 0o644, &format!("{}\n", kp.public))
}

/// Writes a fresh random PSK to `path` (mode 0600, created new).
pub fn write_psk(path: &Path) -> Result<(), KeyError> {
    let kp = generate_keypair()?;
    write_new(path, 0o600, &format!("{}\n", hex(&kp.private)))
}

fn read_secret(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    let io = |op, source| KeyError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| io("stat", e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| io("read", e))?;
    unhex(path, &text)
}

/// Loads a private key file (written by [`write_keypair`]) and derives its public key.
pub fn load_private_key(path: &Path) -> Result<StaticKeypair, KeyError> {
    let private = read_secret(path)?;
    Ok(StaticKeypair {
        private,
        public: PublicKey(crate::handshake::x25519_public(&private)),
    })
}

/// Loads a PSK file (64 hex digits, mode 0600 or stricter).
pub fn load_psk(path: &Path) -> Result<Psk, KeyError> {
    read_secret(path).map(Psk)
}

/// Loads a public key file (64 hex digits; any permissions).
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    unhex(path, &text).map(PublicKey)
}
