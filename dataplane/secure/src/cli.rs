//! Command-line pieces shared by the `dwcp` commands that run transfers: the key flags
//! ([`KeyArgs`] → a `SecurityFactory` for `SenderConfig::security` /
//! `ReceiverConfig::security`), `dwcp keygen` ([`keygen`]) and the JSON of the security
//! counters ([`stats_json`]).
//!
//! Policy: configuring keys turns SEALED on and makes it mandatory (an unsealed HELLO is not
//! authenticated, so a peer that merely *looks* keyless could be an on-path downgrade);
//! `--allow-unsealed` lets a keyed endpoint fall back to plain transfers with keyless peers.
//! Does not: read keys from anywhere but files.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use dwcp_transfer::wire::{DropCounts, SecurityFactory};

use crate::{
    ConfigError, KeyError, Secure, SecureConfig, Suite, SuitePref, generate_keypair,
    load_private_key, load_psk, load_public_key, public_path, write_keypair, write_psk,
};

/// AEAD suite flag.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum SuiteArg {
    /// AES-128-GCM when both ends have AES-NI, else ChaCha20-Poly1305.
    #[default]
    Auto,
    /// AES-128-GCM.
    Aes128gcm,
    /// ChaCha20-Poly1305.
    Chacha20poly1305,
}

/// Key and policy flags of `dwcp send` / `dwcp recv`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Our static private key file (from `dwcp keygen`; mode 0600 or stricter). Enables
    /// SEALED frames.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Peer public key file (repeatable): for send, the receiver's key; for recv, the
    /// senders allowed to connect.
    #[arg(long = "peer-pub")]
    pub peer_pub: Vec<PathBuf>,
    /// Pre-shared key file (mode 0600; `dwcp keygen --psk`). Alone: every holder of the PSK
    /// is a peer; with --key: the peer needs both.
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Refuse unsealed transfers (the default whenever keys are given; an error without keys).
    #[arg(long)]
    pub require_sealed: bool,
    /// With keys, still accept a peer that has none (plain, unauthenticated transfer).
    #[arg(long, conflicts_with = "require_sealed")]
    pub allow_unsealed: bool,
    /// AEAD suite of SEALED frames.
    #[arg(long, value_enum, default_value_t = SuiteArg::Auto)]
    pub suite: SuiteArg,
}

/// Errors of the key flags.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The combination of keys is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// --require-sealed without any key.
    #[error("--require-sealed needs keys (--key with --peer-pub, or --psk-file)")]
    RequireWithoutKeys,
}

impl KeyArgs {
    /// The security configuration these flags ask for; `None` when no key is given.
    pub fn config(&self) -> Result<Option<SecureConfig>, CliError> {
        if self.key.is_none() && self.psk_file.is_none() && self.peer_pub.is_empty() {
            if self.require_sealed {
                return Err(CliError::RequireWithoutKeys);
            }
            return Ok(None);
        }
        let identity = self.key.as_deref().map(load_private_key).transpose()?;
        let peers = self
            .peer_pub
            .iter()
            .map(|p| load_public_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        let psk = self.psk_file.as_deref().map(load_psk).transpose()?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ok(Some(SecureConfig {
            identity,
            peers,
            psk,
            require_sealed: !self.allow_unsealed,
            suite: match self.suite {
                SuiteArg::Auto => SuitePref::Auto,
                SuiteArg::Aes128gcm => SuitePref::Force(Suite::Aes128Gcm),
                SuiteArg::Chacha20poly1305 => SuitePref::Force(Suite::ChaCha20Poly1305),
            },
            epoch,
        }))
    }

    /// [`KeyArgs::config`] as a factory for the transfer configurations.
    pub fn factory(&self) -> Result<Option<SecurityFactory>, CliError> {
        self.config()?
            .map(|c| Secure::factory(c).map_err(CliError::from))
            .transpose()
    }
}

/// `dwcp keygen --out PATH`: writes a static key pair (`PATH` mode 0600, `PATH.pub`), or with
/// `psk` a pre-shared key (`PATH` mode 0600). Returns a line for people.
pub fn keygen(out: &Path, psk: bool) -> Result<String, KeyError> {
    if psk {
        write_psk(out)?;
        return Ok(format!(
            "wrote pre-shared key {} (mode 0600)",
            out.display()
        ));
    }
    let kp = generate_keypair()?;
    write_keypair(out, &kp)?;
    Ok(format!(
        "wrote private key {} (mode 0600) and public key {}: {}",
        out.display(),
        public_path(out).display(),
        kp.public
    ))
}

/// `{"sealed": suite or null, "drops": {reason: count, ...}}` for JSON reports.
#[must_use]
pub fn stats_json(sealed: Option<&str>, drops: &DropCounts) -> serde_json::Value {
    let d: serde_json::Map<String, serde_json::Value> = drops
        .nonzero()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    serde_json::json!({ "sealed": sealed, "drops": d })
}
