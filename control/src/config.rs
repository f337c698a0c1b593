//! The control process's configuration file (TOML), built from the same serde types as the
//! API (`crate::api`), with `deny_unknown_fields`.
//!
//! Owns defaults and loading. Does not create directories or files (see `crate::core`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::FlagSeeds;
use crate::error::ControlError;

/// Shared-memory region sizes (see dwcp_shm::Geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShmGeometry {
    /// Command ring slots (power of two).
    pub cmd_slots: u32,
    /// Event ring slots (power of two).
    pub evt_slots: u32,
    /// Worker statistics blocks.
    pub workers: u32,
    /// Flag table capacity.
    pub flag_entries: u32,
}

impl Default for ShmGeometry {
    fn default() -> Self {
        let g = dwcp_shm::Geometry::default();
        Self {
            cmd_slots: g.cmd_slots,
            evt_slots: g.evt_slots,
            workers: g.workers,
            flag_entries: g.flag_entries,
        }
    }
}

impl From<ShmGeometry> for dwcp_shm::Geometry {
    fn from(g: ShmGeometry) -> Self {
        Self {
            cmd_slots: g.cmd_slots,
            evt_slots: g.evt_slots,
            workers: g.workers,
            flag_entries: g.flag_entries,
        }
    }
}

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listen address (default 127.0.0.1:7480; loopback only unless changed).
    pub listen: SocketAddr,
    /// Directory for the state database and the generated token.
    pub state_dir: PathBuf,
    /// Shared-memory region file.
    pub shm_path: PathBuf,
    /// Region sizes, used when the region is created.
    pub shm_geometry: ShmGeometry,
    /// This node's id, matched against flag node targeting.
    pub node_id: String,
    /// Bearer token for mutating requests; when absent one is generated at first start into
    /// `<state_dir>/token` (mode 0600).
    pub token: Option<String>,
    /// Largest accepted request body, bytes.
    pub body_limit_bytes: usize,
    /// Rollout controller period, ms.
    pub controller_tick_ms: u64,
    /// Event ring poll period, ms.
    pub event_poll_ms: u64,
    /// The dataplane heartbeat is stale after this long, ms.
    pub heartbeat_stale_ms: u64,
    /// Flags created at first start (never overwrite stored flags).
    pub flags: FlagSeeds,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            state_dir: PathBuf::from("/var/lib/dwcp-control"),
            shm_path: PathBuf::from("/dev/shm/dwcp"),
            shm_geometry: ShmGeometry::default(),
            node_id: "node-0".into(),
            token: None,
            body_limit_bytes: 64 * 1024,
            controller_tick_ms: 250,
            event_poll_ms: 2,
            heartbeat_stale_ms: 2_000,
            flags: FlagSeeds::new(),
        }
    }
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ControlError> {
        let text = std::fs::read_to_string(path).map_err(|source| ControlError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ControlError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_and_flags_use_api_types() {
        let ok: Config = toml::from_str(
            r#"
            node_id = "a1"
            [flags."hde.zstd"]
            kind = "percent"
            enabled = true
            percent = 12.5
            nodes = { deny = ["b2"] }
            "#,
        )
        .unwrap();
        assert_eq!(ok.flags["hde.zstd"].percent, Some(12.5));
        assert_eq!(ok.listen.ip().to_string(), "127.0.0.1");
        assert!(toml::from_str::<Config>("listne = \"0.0.0.0:1\"").is_err());
        assert!(
            toml::from_str::<Config>("[flags.x]\nkind = \"bool\"\nenabled = true\nbogus = 1")
                .is_err()
        );
    }
}
