//! The serde type tree shared by the config file and the HTTP API (`deny_unknown_fields`
//! everywhere input is accepted), plus the response types.
//!
//! Owns input validation rules (names, percentages, plans, job requests). Does not touch
//! storage or shared memory.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Longest flag name (the shared-memory table stores 32 bytes).
pub const FLAG_NAME_MAX: usize = 32;

/// Kind of flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// On or off.
    Bool,
    /// On for a share of flows (consistent hashing of the flow id).
    Percent,
}

/// Which nodes a flag applies to. `deny` wins over `allow`; an empty `allow` means all nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTargeting {
    /// Node ids the flag is limited to (empty: every node).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Node ids the flag is off for.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl NodeTargeting {
    /// Whether the flag applies on `node`.
    pub fn applies_to(&self, node: &str) -> bool {
        !self.deny.iter().any(|n| n == node)
            && (self.allow.is_empty() || self.allow.iter().any(|n| n == node))
    }
}

/// A flag as set through the API or seeded from the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    /// Kind.
    pub kind: FlagKind,
    /// Master switch.
    pub enabled: bool,
    /// Share of flows, percent 0..=100 with 0.01 resolution; required for `percent` flags,
    /// refused for `bool` flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Node targeting.
    #[serde(default)]
    pub nodes: NodeTargeting,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

fn valid_node_id(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Percent (0..=100, finite) to basis points.
pub fn percent_to_bp(field: &str, p: f64) -> Result<u32, ApiError> {
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        return Err(ApiError::invalid(format!(
            "{field}: {p} is not a percentage in 0..=100"
        )));
    }
    let bp = p * 100.0;
    if (bp - bp.round()).abs() > 1e-6 {
        return Err(ApiError::invalid(format!(
            "{field}: {p} has more than two decimals (resolution 0.01 %)"
        )));
    }
    Ok(bp.round() as u32)
}

/// Checks a flag name: 1..=32 bytes of `[A-Za-z0-9._-]`.
pub fn validate_flag_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > FLAG_NAME_MAX
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::invalid(format!(
            "flag name {name:?} must be 1..=32 characters of [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

impl FlagSpec {
    /// Checks the spec; returns the share in basis points.
    pub fn validate(&self) -> Result<u32, ApiError> {
        let bp = match (self.kind, self.percent) {
            (FlagKind::Bool, None) => 10_000,
            (FlagKind::Bool, Some(_)) => {
                return Err(ApiError::invalid(
                    "percent is only allowed on percent flags",
                ));
            }
            (FlagKind::Percent, None) => {
                return Err(ApiError::invalid("percent flags need a percent"));
            }
            (FlagKind::Percent, Some(p)) => percent_to_bp("percent", p)?,
        };
        for n in self.nodes.allow.iter().chain(&self.nodes.deny) {
            if !valid_node_id(n) {
                return Err(ApiError::invalid(format!(
                    "node id {n:?} must be 1..=64 characters of [A-Za-z0-9._-]"
                )));
            }
        }
        if self.nodes.allow.len() + self.nodes.deny.len() > 256 {
            return Err(ApiError::invalid("at most 256 node ids per flag"));
        }
        if self.description.len() > 1024 {
            return Err(ApiError::invalid("description longer than 1024 bytes"));
        }
        Ok(bp)
    }
}

/// A flag as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Name.
    pub name: String,
    /// What was set.
    pub spec: FlagSpec,
    /// Shared-memory table generation that carried the last change.
    pub generation: u64,
    /// Unix ms of the last change.
    pub updated_at_ms: u64,
    /// Who made the last change.
    pub updated_by: String,
    /// Value on this node after targeting.
    pub effective: EffectiveFlag,
}

/// A flag's value on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveFlag {
    /// On for this node.
    pub enabled: bool,
    /// Share of flows, basis points.
    pub pct_bp: u32,
}

/// Rollback thresholds; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Errors per frame over a controller tick (0..=1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Highest worker p99 latency, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_latency_us: Option<u64>,
    /// Highest worker CPU busy share, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_percent: Option<f64>,
}

fn default_window_ms() -> u64 {
    5_000
}

/// A staged rollout plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    /// Percent of flows on v3 at each stage, strictly increasing, each in (0, 100].
    pub stages: Vec<f64>,
    /// Hold time per stage before advancing, ms (>= 1).
    pub hold_ms: u64,
    /// Per-stage hold times, ms, overriding `hold_ms` (same length as `stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_hold_ms: Option<Vec<u64>>,
    /// Rollback thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// A threshold must stay crossed this long before rolling back, ms.
    #[serde(default = "default_window_ms")]
    pub breach_window_ms: u64,
}

impl RolloutPlan {
    /// Hold time of a stage, ms.
    pub fn hold_for(&self, stage: usize) -> u64 {
        self.stage_hold_ms
            .as_ref()
            .and_then(|v| v.get(stage).copied())
            .unwrap_or(self.hold_ms)
    }

    /// Checks the plan; returns the stages in basis points.
    pub fn validate(&self) -> Result<Vec<u32>, ApiError> {
        if self.stages.is_empty() || self.stages.len() > 32 {
            return Err(ApiError::invalid("stages must hold 1..=32 percentages"));
        }
        let mut out = Vec::with_capacity(self.stages.len());
        for (i, p) in self.stages.iter().enumerate() {
            let bp = percent_to_bp(&format!("stages[{i}]"), *p)?;
            if bp == 0 {
                return Err(ApiError::invalid(format!("stages[{i}] must be above 0")));
            }
            if out.last().is_some_and(|&last| bp <= last) {
                return Err(ApiError::invalid(format!(
                    "stages must be strictly increasing (stages[{i}] = {p})"
                )));
            }
            out.push(bp);
        }
        let hold_ok = |h: u64| (1..=30 * 24 * 3_600_000).contains(&h);
        if !hold_ok(self.hold_ms) {
            return Err(ApiError::invalid("hold_ms must be in 1..=2592000000"));
        }
        if let Some(per) = &self.stage_hold_ms {
            if per.len() != self.stages.len() {
                return Err(ApiError::invalid(format!(
                    "stage_hold_ms has {} entries for {} stages",
                    per.len(),
                    self.stages.len()
                )));
            }
            if let Some(i) = per.iter().position(|h| !hold_ok(*h)) {
                return Err(ApiError::invalid(format!(
                    "stage_hold_ms[{i}] must be in 1..=2592000000"
                )));
            }
        }
        if self.breach_window_ms > 24 * 3_600_000 {
            return Err(ApiError::invalid(
                "breach_window_ms must be at most 86400000",
            ));
        }
        let t = &self.thresholds;
        if let Some(e) = t.max_error_rate
            && (!e.is_finite() || !(0.0..=1.0).contains(&e))
        {
            return Err(ApiError::invalid(
                "thresholds.max_error_rate must be in 0..=1",
            ));
        }
        if let Some(c) = t.max_cpu_percent
            && (!c.is_finite() || !(0.0..=100.0).contains(&c))
        {
            return Err(ApiError::invalid(
                "thresholds.max_cpu_percent must be in 0..=100",
            ));
        }
        Ok(out)
    }
}

/// What a migration job moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Guest memory (iterative pre-copy).
    Memory,
    /// Disk image (iterative pre-copy of dirty blocks).
    Disk,
    /// Plain object (one pass).
    Object,
}

/// A request to start a migration job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// What is moved.
    pub kind: JobKind,
    /// Image size in bytes (>= 1).
    pub size_bytes: u64,
    /// Destination appliance, IPv4 `a.b.c.d:port`.
    pub peer: String,
    /// Object id on the wire (default: the job id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u64>,
    /// Pre-copy round limit (default 30, 1..=1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u16>,
}

impl JobRequest {
    /// Checks the request; returns the peer address.
    pub fn validate(&self) -> Result<SocketAddrV4, ApiError> {
        let peer: SocketAddrV4 = self.peer.parse().map_err(|_| {
            ApiError::invalid(format!("peer {:?} is not an IPv4 address:port", self.peer))
        })?;
        if peer.port() == 0 {
            return Err(ApiError::invalid("peer port must not be 0"));
        }
        if self.size_bytes == 0 {
            return Err(ApiError::invalid("size_bytes must be at least 1"));
        }
        if let Some(r) = self.max_rounds
            && !(1..=1000).contains(&r)
        {
            return Err(ApiError::invalid("max_rounds must be in 1..=1000"));
        }
        Ok(peer)
    }
}

/// Job lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Sent to the dataplane, no progress yet.
    Queued,
    /// Progress events arriving.
    Running,
    /// Cancel sent, not yet confirmed.
    Cancelling,
    /// Done and verified.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// No further change expected.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Job progress, from dataplane events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Bytes sent (all rounds).
    pub bytes_done: u64,
    /// Image size.
    pub bytes_total: u64,
    /// Send rate, bytes/s.
    pub rate_bps: u64,
    /// Pre-copy round.
    pub round: u32,
    /// Transfer mode.
    pub mode: String,
    /// Bytes dirtied in the current round.
    pub dirty_bytes: u64,
    /// Estimated seconds left (remaining bytes / rate), when a rate is known.
    pub eta_secs: Option<f64>,
}

/// A migration job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Id.
    pub id: u64,
    /// The request.
    pub request: JobRequest,
    /// Status.
    pub status: JobStatus,
    /// Progress.
    pub progress: JobProgress,
    /// Command ring sequence number of the create command.
    pub command_seq: u64,
    /// Whether the dataplane acknowledged the create command.
    pub acked: bool,
    /// Dataplane error code when failed.
    pub error_code: u32,
    /// Why it failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms.
    pub updated_at_ms: u64,
    /// Who created it.
    pub created_by: String,
}

/// One audit log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Id, increasing.
    pub id: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// Who (the `X-DWCP-Actor` header, else "token"), with the client address.
    pub actor: String,
    /// What, e.g. `flag.set`.
    pub action: String,
    /// Object, e.g. the flag name.
    pub target: String,
    /// State before (null when created).
    pub before: serde_json::Value,
    /// State after (null when deleted).
    pub after: serde_json::Value,
}

/// Figures the rollout controller decided on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Frames (rx + tx) in the window.
    pub frames: u64,
    /// Errors in the window.
    pub errors: u64,
    /// errors / frames (0 when no frames).
    pub error_rate: f64,
    /// Highest worker p99 latency, microseconds.
    pub p99_latency_us: u64,
    /// Highest worker CPU busy share, percent.
    pub cpu_percent: f64,
    /// Window length, ms.
    pub window_ms: u64,
}

/// One rollout decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Id, increasing.
    pub id: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// `plan`, `advance`, `complete`, `rollback`, `pause`, `resume`, `promote`, `abort`.
    pub action: String,
    /// State after.
    pub state: String,
    /// Stage index before.
    pub from_stage: usize,
    /// Stage index after.
    pub to_stage: usize,
    /// v3 share before, basis points.
    pub from_pct_bp: u32,
    /// v3 share after, basis points.
    pub to_pct_bp: u32,
    /// Why.
    pub reason: String,
    /// The figures read from the shared-memory statistics, when the controller decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    /// `controller` or the API actor.
    pub actor: String,
}

/// Rollout state as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    /// `idle`, `running`, `paused`, `completed`, `rolled_back`, `aborted`.
    pub state: String,
    /// The plan, if any.
    pub plan: Option<RolloutPlan>,
    /// Current stage index.
    pub stage: usize,
    /// Current v3 share, basis points.
    pub pct_bp: u32,
    /// Unix ms the current stage started.
    pub stage_started_at_ms: u64,
    /// Table generation that carries the current share.
    pub generation: u64,
    /// Unix ms since when a threshold has been crossed, if it is.
    pub breach_since_ms: Option<u64>,
    /// Last figures read.
    pub last_figures: Option<Figures>,
    /// Most recent decisions, newest first (up to 20).
    pub recent_decisions: Vec<Decision>,
}

/// Flags seeded at first start, keyed by name.
pub type FlagSeeds = BTreeMap<String, FlagSpec>;
