//! The control process's state hub: flags, rollout, jobs and the audit log in memory and in
//! the store, and the bridge to the shared-memory region (table writes, commands, events,
//! statistics).
//!
//! Every change follows one order under one lock: validate, compute the new state, commit it
//! (with its audit line) to the store, then write the table / push the command. A refused or
//! failed request therefore changes nothing. Event-driven updates are committed to the store
//! together with the last applied event sequence number before the event ring is advanced, so
//! a restart neither loses nor re-applies an event. Does not speak HTTP (see `http`).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dwcp_shm::{
    AckStatus, Command, ControlSide, Event, FlagEntry, JobOutcome, Region, Role, RolloutEntry,
    Stat, TableContent, WorkerStats,
};
use serde::Serialize;

use crate::api::{
    AuditEntry, Decision, EffectiveFlag, Figures, Flag, FlagKind, FlagSpec, Job, JobKind,
    JobProgress, JobRequest, JobStatus, RolloutPlan, RolloutView, validate_flag_name,
};
use crate::config::Config;
use crate::error::{ApiError, ControlError};
use crate::rollout::{Action, Rollout};
use crate::store::{Op, Store, json};

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Counters about the bridge itself, exported as metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct BridgeCounters {
    /// Commands that found the command ring full (the table still carries the change).
    pub commands_ring_full: u64,
    /// Commands pushed.
    pub commands_sent: u64,
    /// Events applied.
    pub events_applied: u64,
    /// Events skipped as already applied (redelivered after a restart).
    pub events_duplicate: u64,
    /// Events that did not decode.
    pub events_bad: u64,
    /// Dataplane restarts seen (epoch changes).
    pub dataplane_restarts: u64,
}

struct Inner {
    flags: BTreeMap<String, Flag>,
    rollout: Rollout,
    rollout_generation: u64,
    jobs: BTreeMap<u64, Job>,
    next_job_id: u64,
    next_decision_id: u64,
    next_audit_id: u64,
    last_event_seq: Option<u64>,
    side: ControlSide,
    cmd_jobs: HashMap<u64, u64>,
    prev_stats: Option<(Instant, Vec<WorkerStats>)>,
    last_figures: Option<Figures>,
    dp_epoch: u64,
    counters: BridgeCounters,
}

/// Shared state of the control process.
pub struct Core {
    /// Configuration in force.
    pub cfg: Config,
    token: String,
    store: Store,
    region: Region,
    inner: Mutex<Inner>,
    /// Last command-ring tail seen by a readiness check and when: its own small lock, so
    /// `/readyz` never waits on the store, the event bridge or the controller.
    cmd_tail_seen: Mutex<(u64, Instant)>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("node_id", &self.cfg.node_id)
            .field("shm", &self.region.path())
            .finish_non_exhaustive()
    }
}

/// Result of the readiness checks.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// All checks pass.
    pub ready: bool,
    /// Check name -> problem (absent when passing).
    pub failing: BTreeMap<&'static str, String>,
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ControlError + 'a {
    move |source| ControlError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn load_or_create_token(cfg: &Config) -> Result<String, ControlError> {
    if let Some(t) = &cfg.token {
        return Ok(t.clone());
    }
    let path = cfg.state_dir.join("token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("read", &path)(e)),
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("create", &path))?;
    f.write_all(token.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err("write", &path))?;
    Ok(token)
}

fn shm_kind(k: FlagKind) -> dwcp_shm::FlagKind {
    match k {
        FlagKind::Bool => dwcp_shm::FlagKind::Bool,
        FlagKind::Percent => dwcp_shm::FlagKind::Percent,
    }
}

fn effective(spec: &FlagSpec, node: &str) -> EffectiveFlag {
    let bp = spec.validate().unwrap_or(0);
    EffectiveFlag {
        enabled: spec.enabled && spec.nodes.applies_to(node),
        pct_bp: bp,
    }
}

impl Core {
    /// Opens the state, attaches the region as the control side and republishes the table.
    pub fn open(cfg: Config) -> Result<Arc<Self>, ControlError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.state_dir)
            .map_err(io_err("mkdir", &cfg.state_dir))?;
        let token = load_or_create_token(&cfg)?;
        let store = Store::open(&cfg.state_dir.join("state.redb"))?;
        let region = Region::create_or_open(&cfg.shm_path, cfg.shm_geometry.into())?;
        let side = region.attach_control()?;
        let mut flags: BTreeMap<String, Flag> = store.flags()?;
        for f in flags.values_mut() {
            f.effective = effective(&f.spec, &cfg.node_id);
        }
        let rollout: Rollout = store.meta("rollout")?.unwrap_or_default();
        let jobs: BTreeMap<u64, Job> = store.jobs()?;
        let seeded: Option<bool> = store.meta("seeded")?;
        let dp_epoch = region.side_status(Role::Dataplane).epoch;
        let inner = Inner {
            flags,
            rollout,
            rollout_generation: 0,
            next_job_id: jobs.keys().next_back().copied().unwrap_or(0) + 1,
            jobs,
            next_decision_id: store.last_id("decisions")? + 1,
            next_audit_id: store.last_id("audit")? + 1,
            last_event_seq: store.meta("last_event_seq")?,
            side,
            cmd_jobs: HashMap::new(),
            prev_stats: None,
            last_figures: None,
            dp_epoch,
            counters: BridgeCounters::default(),
        };
        let cmd_tail_seen = Mutex::new((region.command_positions().1, Instant::now()));
        let core = Arc::new(Self {
            cfg,
            token,
            store,
            region,
            inner: Mutex::new(inner),
            cmd_tail_seen,
        });
        if seeded != Some(true) {
            let seeds = core.cfg.flags.clone();
            for (name, spec) in seeds {
                core.set_flag(&name, spec, "config seed")
                    .map_err(ControlError::Seed)?;
            }
            core.store.commit(&[Op::PutMeta("seeded", "true".into())])?;
        }
        {
            // Resynchronise: the table in the region may be older than the store (control was
            // down) or from another control instance; rewrite it whole.
            let mut g = core.lock();
            let generation = g.side.table.generation() + 1;
            core.publish(&mut g, generation)
                .map_err(ControlError::Seed)?;
            g.rollout_generation = generation;
        }
        Ok(core)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    fn table_content(&self, g: &Inner) -> TableContent {
        TableContent {
            rollout: RolloutEntry {
                state: g.rollout.state.shm(),
                stage: g.rollout.stage as u32,
                pct_bp: g.rollout.pct_bp(),
            },
            flags: g
                .flags
                .values()
                .map(|f| FlagEntry {
                    name: f.name.clone(),
                    kind: shm_kind(f.spec.kind),
                    enabled: f.effective.enabled,
                    pct_bp: f.effective.pct_bp as u16,
                    changed_generation: f.generation,
                })
                .collect(),
        }
    }

    /// Writes the whole table; `expected` is the generation the caller already recorded.
    fn publish(&self, g: &mut Inner, expected: u64) -> Result<(), ApiError> {
        let content = self.table_content(g);
        let got = g
            .side
            .table
            .publish(&content)
            .map_err(|e| ApiError::internal(format!("flag table: {e}")))?;
        // When the table became readable (CLOCK_MONOTONIC, comparable with the dataplane's
        // `observed_mono_ns`): splits control-to-dataplane latency into the API part (request,
        // redb commit) and the shared-memory part (docs/perf-control.md).
        tracing::debug!(
            generation = got,
            published_mono_ns = dwcp_shm::monotonic_ns(),
            "table published"
        );
        if got != expected {
            tracing::warn!(
                got,
                expected,
                "table generation differs from the recorded one"
            );
        }
        Ok(())
    }

    fn push(&self, g: &mut Inner, cmd: Command) -> Option<u64> {
        match g.side.commands.push(&cmd) {
            Ok(seq) => {
                g.counters.commands_sent += 1;
                Some(seq)
            }
            Err(e) => {
                g.counters.commands_ring_full += 1;
                tracing::warn!(error = %e, ?cmd, "command not sent");
                None
            }
        }
    }

    fn audit_op(
        g: &mut Inner,
        actor: &str,
        action: &str,
        target: &str,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Op {
        let e = AuditEntry {
            id: g.next_audit_id,
            at_ms: now_ms(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            before,
            after,
        };
        g.next_audit_id += 1;
        Op::PutAudit(e.id, json(&e))
    }

    // ---- flags ----

    /// All flags.
    pub fn list_flags(&self) -> Vec<Flag> {
        self.lock().flags.values().cloned().collect()
    }

    /// One flag.
    pub fn get_flag(&self, name: &str) -> Result<Flag, ApiError> {
        self.lock()
            .flags
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no flag named {name:?}")))
    }

    /// Creates or replaces a flag; returns it with the table generation that carries it.
    pub fn set_flag(&self, name: &str, spec: FlagSpec, actor: &str) -> Result<Flag, ApiError> {
        validate_flag_name(name)?;
        spec.validate()?;
        let mut g = self.lock();
        if !g.flags.contains_key(name) && g.flags.len() >= self.region.flag_capacity() {
            return Err(ApiError::new(
                axum::http::StatusCode::INSUFFICIENT_STORAGE,
                "flag_table_full",
                format!(
                    "the shared flag table holds {} flags",
                    self.region.flag_capacity()
                ),
            ));
        }
        let generation = g.side.table.generation() + 1;
        let flag = Flag {
            name: name.into(),
            effective: effective(&spec, &self.cfg.node_id),
            spec,
            generation,
            updated_at_ms: now_ms(),
            updated_by: actor.into(),
        };
        let before = g.flags.get(name).map(json_value).unwrap_or_default();
        let audit = Self::audit_op(&mut g, actor, "flag.set", name, before, json_value(&flag));
        self.store
            .commit(&[Op::PutFlag(name.into(), json(&flag)), audit])?;
        g.flags.insert(name.into(), flag.clone());
        self.publish(&mut g, generation)?;
        let index = g.flags.keys().position(|k| k == name).unwrap_or(0) as u32;
        self.push(
            &mut g,
            Command::SetFlag {
                index,
                generation,
                enabled: flag.effective.enabled,
                pct_bp: flag.effective.pct_bp as u16,
            },
        );
        Ok(flag)
    }

    /// Deletes a flag.
    pub fn delete_flag(&self, name: &str, actor: &str) -> Result<(), ApiError> {
        let mut g = self.lock();
        let Some(old) = g.flags.get(name).cloned() else {
            return Err(ApiError::not_found(format!("no flag named {name:?}")));
        };
        let generation = g.side.table.generation() + 1;
        let audit = Self::audit_op(
            &mut g,
            actor,
            "flag.delete",
            name,
            json_value(&old),
            serde_json::Value::Null,
        );
        self.store.commit(&[Op::DelFlag(name.into()), audit])?;
        g.flags.remove(name);
        self.publish(&mut g, generation)?;
        Ok(())
    }

    // ---- rollout ----

    /// Current rollout view.
    pub fn rollout_view(&self) -> Result<RolloutView, ApiError> {
        let g = self.lock();
        Ok(RolloutView {
            state: g.rollout.state.as_str().into(),
            plan: g.rollout.plan.clone(),
            stage: g.rollout.stage,
            pct_bp: g.rollout.pct_bp(),
            stage_started_at_ms: g.rollout.stage_started_ms,
            generation: g.rollout_generation,
            breach_since_ms: g.rollout.breach_since_ms,
            last_figures: g.last_figures.clone(),
            recent_decisions: self.store.decisions(20)?,
        })
    }

    /// Decision history, newest first.
    pub fn decisions(&self, limit: usize) -> Result<Vec<Decision>, ApiError> {
        Ok(self.store.decisions(limit)?)
    }

    /// Commits a rollout change made on a copy, then publishes it.
    fn commit_rollout(
        &self,
        g: &mut Inner,
        next: Rollout,
        mut d: Decision,
        actor: &str,
        audit: bool,
    ) -> Result<Decision, ApiError> {
        d.id = g.next_decision_id;
        d.actor = actor.into();
        let mut ops = vec![
            Op::PutMeta("rollout", json(&next)),
            Op::PutDecision(d.id, json(&d)),
        ];
        if audit {
            let before = json_value(&g.rollout);
            ops.push(Self::audit_op(
                g,
                actor,
                &format!("rollout.{}", d.action),
                "rollout",
                before,
                json_value(&next),
            ));
        }
        self.store.commit(&ops)?;
        g.next_decision_id += 1;
        g.rollout = next;
        let generation = g.side.table.generation() + 1;
        self.publish(g, generation)?;
        g.rollout_generation = generation;
        let cmd = Command::RolloutStage {
            state: g.rollout.state.shm(),
            stage: g.rollout.stage as u32,
            pct_bp: g.rollout.pct_bp(),
            generation,
        };
        self.push(g, cmd);
        tracing::info!(action = %d.action, reason = %d.reason, to_pct_bp = d.to_pct_bp, "rollout decision");
        Ok(d)
    }

    /// Installs a plan.
    pub fn post_plan(&self, plan: RolloutPlan, actor: &str) -> Result<Decision, ApiError> {
        let mut g = self.lock();
        let mut next = g.rollout.clone();
        let d = next.start(plan, now_ms())?;
        g.prev_stats = None;
        self.commit_rollout(&mut g, next, d, actor, true)
    }

    /// Operator action.
    pub fn rollout_action(&self, action: Action, actor: &str) -> Result<Decision, ApiError> {
        let mut g = self.lock();
        let mut next = g.rollout.clone();
        let d = next.act(action, now_ms())?;
        self.commit_rollout(&mut g, next, d, actor, true)
    }

    fn figures(g: &mut Inner, now: Instant, stats: Vec<WorkerStats>) -> Figures {
        let sum = |v: &[WorkerStats], s: Stat| v.iter().map(|w| w.get(s)).sum::<u64>();
        let (frames, errors, window) = match &g.prev_stats {
            Some((t, prev)) => (
                (sum(&stats, Stat::RxFrames) + sum(&stats, Stat::TxFrames))
                    .saturating_sub(sum(prev, Stat::RxFrames) + sum(prev, Stat::TxFrames)),
                sum(&stats, Stat::Errors).saturating_sub(sum(prev, Stat::Errors)),
                now.duration_since(*t),
            ),
            None => (0, 0, Duration::ZERO),
        };
        let f = Figures {
            frames,
            errors,
            error_rate: if frames == 0 {
                0.0
            } else {
                errors as f64 / frames as f64
            },
            p99_latency_us: stats
                .iter()
                .map(|w| w.get(Stat::LatencyP99Us))
                .max()
                .unwrap_or(0),
            cpu_percent: stats
                .iter()
                .map(|w| w.get(Stat::CpuPermille))
                .max()
                .unwrap_or(0) as f64
                / 10.0,
            window_ms: window.as_millis() as u64,
        };
        g.prev_stats = Some((now, stats));
        g.last_figures = Some(f.clone());
        f
    }

    /// One rollout controller step: read the statistics blocks, maybe advance or roll back.
    pub fn controller_tick(&self) -> Result<Option<Decision>, ApiError> {
        let stats = self.region.stats_reader().all();
        let mut g = self.lock();
        let f = Self::figures(&mut g, Instant::now(), stats);
        let mut next = g.rollout.clone();
        let Some(d) = next.tick(now_ms(), &f) else {
            if next != g.rollout {
                // breach_since changed: persist it so a restart keeps the window.
                self.store.commit(&[Op::PutMeta("rollout", json(&next))])?;
                g.rollout = next;
            }
            return Ok(None);
        };
        self.commit_rollout(&mut g, next, d, "controller", false)
            .map(Some)
    }

    // ---- jobs ----

    /// Starts a migration job: sends the create command, then records the job.
    pub fn create_job(&self, req: JobRequest, actor: &str) -> Result<Job, ApiError> {
        let peer = req.validate()?;
        let mut g = self.lock();
        let id = g.next_job_id;
        let spec = dwcp_shm::JobSpec {
            job_id: id,
            kind: match req.kind {
                JobKind::Memory => dwcp_shm::JobKind::Memory,
                JobKind::Disk => dwcp_shm::JobKind::Disk,
                JobKind::Object => dwcp_shm::JobKind::Object,
            },
            object_id: req.object_id.unwrap_or(id),
            total_bytes: req.size_bytes,
            peer_ipv4: u32::from(*peer.ip()),
            peer_port: peer.port(),
            max_rounds: req.max_rounds.unwrap_or(30),
        };
        let now = now_ms();
        let job = Job {
            id,
            progress: JobProgress {
                bytes_total: req.size_bytes,
                mode: "unknown".into(),
                ..JobProgress::default()
            },
            request: req,
            status: JobStatus::Queued,
            command_seq: g.side.commands.next_seq(),
            acked: false,
            error_code: 0,
            error: None,
            created_at_ms: now,
            updated_at_ms: now,
            created_by: actor.into(),
        };
        let audit = Self::audit_op(
            &mut g,
            actor,
            "job.create",
            &id.to_string(),
            serde_json::Value::Null,
            json_value(&job),
        );
        // Persist first: if the ring is full afterwards the job is marked failed, never lost.
        self.store.commit(&[Op::PutJob(id, json(&job)), audit])?;
        g.next_job_id += 1;
        g.jobs.insert(id, job);
        match g.side.commands.push(&Command::CreateJob(spec)) {
            Ok(seq) => {
                g.counters.commands_sent += 1;
                g.cmd_jobs.insert(seq, id);
            }
            Err(e) => {
                g.counters.commands_ring_full += 1;
                let mut failed = g.jobs[&id].clone();
                failed.status = JobStatus::Failed;
                failed.error = Some(e.to_string());
                self.store.commit(&[Op::PutJob(id, json(&failed))])?;
                g.jobs.insert(id, failed);
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "command_ring_full",
                    format!("job {id} recorded as failed: {e}"),
                ));
            }
        }
        Ok(g.jobs[&id].clone())
    }

    /// All jobs, newest first.
    pub fn list_jobs(&self) -> Vec<Job> {
        self.lock().jobs.values().rev().cloned().collect()
    }

    /// One job.
    pub fn get_job(&self, id: u64) -> Result<Job, ApiError> {
        self.lock()
            .jobs
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
    }

    /// Asks the dataplane to cancel a job.
    pub fn cancel_job(&self, id: u64, actor: &str) -> Result<Job, ApiError> {
        let mut g = self.lock();
        let Some(job) = g.jobs.get(&id).cloned() else {
            return Err(ApiError::not_found(format!("no job {id}")));
        };
        if job.status.is_final() {
            return Err(ApiError::conflict(format!(
                "job {id} is already {:?}",
                job.status
            )));
        }
        let mut next = job.clone();
        next.status = JobStatus::Cancelling;
        next.updated_at_ms = now_ms();
        let audit = Self::audit_op(
            &mut g,
            actor,
            "job.cancel",
            &id.to_string(),
            json_value(&job),
            json_value(&next),
        );
        if g.side
            .commands
            .push(&Command::CancelJob { job_id: id })
            .is_err()
        {
            g.counters.commands_ring_full += 1;
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "command_ring_full",
                "the command ring is full; retry",
            ));
        }
        g.counters.commands_sent += 1;
        self.store.commit(&[Op::PutJob(id, json(&next)), audit])?;
        g.jobs.insert(id, next.clone());
        Ok(next)
    }

    // ---- audit ----

    /// Audit log, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, ApiError> {
        Ok(self.store.audit(limit)?)
    }

    // ---- event bridge ----

    /// Stamps the control heartbeat, detects dataplane restarts, and applies up to 4096
    /// events. Returns how many were applied.
    pub fn poll_events(&self) -> Result<usize, ApiError> {
        let mut g = self.lock();
        g.side.heartbeat.beat();
        let mut ops = Vec::new();
        let now = now_ms();
        let epoch = self.region.side_status(Role::Dataplane).epoch;
        if epoch != g.dp_epoch {
            if g.dp_epoch != 0 {
                g.counters.dataplane_restarts += 1;
                // Jobs the old instance was running are gone with it; queued ones whose
                // command is still in the ring will be picked up by the new instance.
                let (_, cmd_tail) = self.region.command_positions();
                for job in g.jobs.values_mut() {
                    let started = job.status == JobStatus::Running
                        || (job.status == JobStatus::Queued && job.command_seq < cmd_tail)
                        || job.status == JobStatus::Cancelling;
                    if started {
                        job.status = JobStatus::Failed;
                        job.error = Some("dataplane restarted during the job".into());
                        job.updated_at_ms = now;
                        ops.push(Op::PutJob(job.id, json(&*job)));
                    }
                }
            }
            g.dp_epoch = epoch;
        }
        let mut applied = 0;
        let mut last = g.last_event_seq;
        while applied < 4096 {
            let Some(r) = g.side.events.next() else { break };
            if last.is_some_and(|l| r.seq <= l) {
                g.counters.events_duplicate += 1;
                continue;
            }
            last = Some(r.seq);
            applied += 1;
            match r.msg {
                Ok(ev) => {
                    g.counters.events_applied += 1;
                    if let Some(job) = Self::apply_event(&mut g, ev, now) {
                        ops.push(Op::PutJob(job.id, json(&job)));
                    }
                }
                Err(e) => {
                    g.counters.events_bad += 1;
                    tracing::warn!(seq = r.seq, error = %e, "undecodable event");
                }
            }
        }
        if last != g.last_event_seq {
            ops.push(Op::PutMeta("last_event_seq", json(&last)));
        }
        self.store.commit(&ops)?;
        g.last_event_seq = last;
        g.side.events.commit();
        Ok(applied)
    }

    fn apply_event(g: &mut Inner, ev: Event, now: u64) -> Option<Job> {
        let job_id = match ev {
            Event::Ack {
                cmd_seq, status, ..
            } => {
                let id = g.cmd_jobs.remove(&cmd_seq)?;
                let job = g.jobs.get_mut(&id)?;
                job.acked = true;
                if status != AckStatus::Ok && !job.status.is_final() {
                    job.status = JobStatus::Failed;
                    job.error = Some(format!("dataplane refused the job: {status:?}"));
                }
                id
            }
            Event::JobProgress {
                job_id,
                bytes_done,
                bytes_total,
                rate_bps,
                round,
                mode,
                dirty_bytes,
            } => {
                let job = g.jobs.get_mut(&job_id)?;
                if job.status.is_final() {
                    return None;
                }
                if job.status == JobStatus::Queued {
                    job.status = JobStatus::Running;
                }
                job.progress = JobProgress {
                    bytes_done,
                    bytes_total,
                    rate_bps,
                    round,
                    mode: mode.as_str().into(),
                    dirty_bytes,
                    eta_secs: (rate_bps > 0).then(|| {
                        (bytes_total.saturating_sub(bytes_done) + dirty_bytes) as f64
                            / rate_bps as f64
                    }),
                };
                job_id
            }
            Event::JobFinished {
                job_id,
                outcome,
                bytes_done,
                error_code,
            } => {
                let job = g.jobs.get_mut(&job_id)?;
                job.status = match outcome {
                    JobOutcome::Completed => JobStatus::Completed,
                    JobOutcome::Failed => JobStatus::Failed,
                    JobOutcome::Cancelled => JobStatus::Cancelled,
                };
                job.progress.bytes_done = bytes_done;
                job.progress.eta_secs = None;
                job.error_code = error_code;
                if outcome == JobOutcome::Failed {
                    job.error = Some(format!("dataplane error code {error_code}"));
                }
                job_id
            }
            Event::Pong { .. } | Event::WorkerMode { .. } => return None,
        };
        let job = g.jobs.get_mut(&job_id)?;
        job.updated_at_ms = now;
        Some(job.clone())
    }

    // ---- health ----

    /// Readiness: region attached, dataplane heartbeat fresh, command ring moving.
    pub fn readiness(&self) -> Readiness {
        let mut failing = BTreeMap::new();
        let stale = Duration::from_millis(self.cfg.heartbeat_stale_ms);
        let dp = self.region.side_status(Role::Dataplane);
        if !dp.alive {
            failing.insert(
                "dataplane_attached",
                "no live dataplane process attached".into(),
            );
        }
        match dp.heartbeat_age {
            Some(age) if age <= stale => {}
            Some(age) => {
                failing.insert(
                    "dataplane_heartbeat",
                    format!("last heartbeat {} ms ago", age.as_millis()),
                );
            }
            None => {
                failing.insert("dataplane_heartbeat", "never".into());
            }
        }
        if let Some(stuck) = self.command_ring_stuck() {
            failing.insert("command_ring", stuck);
        }
        let (eh, et) = self.region.event_positions();
        if eh - et >= u64::from(self.region.geometry().evt_slots) {
            failing.insert("event_ring", format!("full ({} unconsumed)", eh - et));
        }
        Readiness {
            ready: failing.is_empty(),
            failing,
        }
    }

    /// Why the command ring counts as stuck: messages waiting and the tail not moving for the
    /// heartbeat staleness period.
    fn command_ring_stuck(&self) -> Option<String> {
        let (head, tail) = self.region.command_positions();
        let mut seen = self.cmd_tail_seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if tail != seen.0 || head == tail {
            *seen = (tail, now);
            return None;
        }
        let still = now.duration_since(seen.1);
        (still > Duration::from_millis(self.cfg.heartbeat_stale_ms)).then(|| {
            format!(
                "{} commands waiting, tail unchanged for {} ms",
                head - tail,
                still.as_millis()
            )
        })
    }

    /// Bridge counters.
    pub fn counters(&self) -> BridgeCounters {
        self.lock().counters
    }

    /// Rollout share and state for metrics.
    pub fn rollout_brief(&self) -> (u32, usize, &'static str) {
        let g = self.lock();
        (
            g.rollout.pct_bp(),
            g.rollout.stage,
            g.rollout.state.as_str(),
        )
    }
}

fn json_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
