//! The rollout state machine: plan, stage advancement after the hold time, operator actions,
//! and automatic rollback when a threshold stays crossed for the breach window.
//!
//! Pure and deterministic: time (unix ms) and figures are passed in, decisions come out; the
//! caller persists them and writes the table. Does no I/O and reads no clock.

use serde::{Deserialize, Serialize};

use crate::api::{Decision, Figures, RolloutPlan};
use crate::error::ApiError;

/// Rollout states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No plan.
    #[default]
    Idle,
    /// Advancing.
    Running,
    /// Held by an operator.
    Paused,
    /// At the last stage, done.
    Completed,
    /// Back to v1 after a threshold breach or an operator rollback.
    RolledBack,
    /// Stopped by an operator, v1 everywhere.
    Aborted,
}

impl State {
    /// API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::RolledBack => "rolled_back",
            Self::Aborted => "aborted",
        }
    }
    /// Shared-memory code.
    pub fn shm(self) -> dwcp_shm::RolloutState {
        match self {
            Self::Idle => dwcp_shm::RolloutState::Idle,
            Self::Running => dwcp_shm::RolloutState::Running,
            Self::Paused => dwcp_shm::RolloutState::Paused,
            Self::Completed => dwcp_shm::RolloutState::Completed,
            Self::RolledBack => dwcp_shm::RolloutState::RolledBack,
            Self::Aborted => dwcp_shm::RolloutState::Aborted,
        }
    }
}

/// Operator actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Hold the current stage.
    Pause,
    /// Continue; the hold time already spent counts.
    Resume,
    /// Advance one stage now.
    Promote,
    /// Stop, v1 everywhere.
    Abort,
    /// Back to v1, as an automatic rollback would.
    Rollback,
}

impl Action {
    /// API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
            Self::Rollback => "rollback",
        }
    }
}

/// Persisted rollout state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Plan.
    pub plan: Option<RolloutPlan>,
    /// Stages in basis points (validated from the plan).
    pub stages_bp: Vec<u32>,
    /// State.
    pub state: State,
    /// Current stage index.
    pub stage: usize,
    /// Unix ms the current stage started (adjusted on resume).
    pub stage_started_ms: u64,
    /// Hold time already spent when paused, ms.
    pub paused_elapsed_ms: u64,
    /// Since when a threshold has been crossed.
    pub breach_since_ms: Option<u64>,
}

/// A decision before it gets an id and actor.
fn decision(
    r: &Rollout,
    now: u64,
    action: &str,
    from: (usize, u32),
    reason: String,
    figures: Option<Figures>,
) -> Decision {
    Decision {
        id: 0,
        at_ms: now,
        action: action.into(),
        state: r.state.as_str().into(),
        from_stage: from.0,
        to_stage: r.stage,
        from_pct_bp: from.1,
        to_pct_bp: r.pct_bp(),
        reason,
        figures,
        actor: String::new(),
    }
}

impl Rollout {
    /// Share of flows on v3 now, basis points.
    pub fn pct_bp(&self) -> u32 {
        match self.state {
            State::Running | State::Paused | State::Completed => {
                self.stages_bp.get(self.stage).copied().unwrap_or(0)
            }
            State::Idle | State::RolledBack | State::Aborted => 0,
        }
    }

    fn here(&self) -> (usize, u32) {
        (self.stage, self.pct_bp())
    }

    /// Installs a new plan and starts at stage 0. Refused while a plan is running or paused.
    pub fn start(&mut self, plan: RolloutPlan, now: u64) -> Result<Decision, ApiError> {
        if matches!(self.state, State::Running | State::Paused) {
            return Err(ApiError::conflict(format!(
                "a rollout is {}; abort or roll it back before posting a new plan",
                self.state.as_str()
            )));
        }
        let stages_bp = plan.validate()?;
        let from = self.here();
        let reason = format!("new plan with {} stages", stages_bp.len());
        *self = Rollout {
            plan: Some(plan),
            stages_bp,
            state: State::Running,
            stage: 0,
            stage_started_ms: now,
            paused_elapsed_ms: 0,
            breach_since_ms: None,
        };
        Ok(decision(self, now, "plan", from, reason, None))
    }

    /// Applies an operator action.
    pub fn act(&mut self, action: Action, now: u64) -> Result<Decision, ApiError> {
        let from = self.here();
        let bad = |s: State| {
            ApiError::conflict(format!(
                "cannot {} a rollout that is {}",
                action.as_str(),
                s.as_str()
            ))
        };
        match (action, self.state) {
            (Action::Pause, State::Running) => {
                self.paused_elapsed_ms = now.saturating_sub(self.stage_started_ms);
                self.state = State::Paused;
            }
            (Action::Resume, State::Paused) => {
                self.stage_started_ms = now.saturating_sub(self.paused_elapsed_ms);
                self.paused_elapsed_ms = 0;
                self.state = State::Running;
            }
            (Action::Promote, State::Running | State::Paused) => {
                if self.stage + 1 >= self.stages_bp.len() {
                    self.state = State::Completed;
                } else {
                    self.stage += 1;
                    self.stage_started_ms = now;
                    self.paused_elapsed_ms = 0;
                }
            }
            (Action::Abort, State::Running | State::Paused | State::Completed) => {
                self.state = State::Aborted;
            }
            (Action::Rollback, State::Running | State::Paused | State::Completed) => {
                self.state = State::RolledBack;
            }
            (_, s) => return Err(bad(s)),
        }
        self.breach_since_ms = None;
        Ok(decision(
            self,
            now,
            action.as_str(),
            from,
            format!("operator {}", action.as_str()),
            None,
        ))
    }

    /// Which threshold the figures cross, if any.
    pub fn breach(&self, f: &Figures) -> Option<String> {
        let t = &self.plan.as_ref()?.thresholds;
        if let Some(max) = t.max_error_rate
            && f.frames > 0
            && f.error_rate > max
        {
            return Some(format!("error rate {:.5} > {max}", f.error_rate));
        }
        if let Some(max) = t.max_p99_latency_us
            && f.p99_latency_us > max
        {
            return Some(format!("p99 latency {} us > {max} us", f.p99_latency_us));
        }
        if let Some(max) = t.max_cpu_percent
            && f.cpu_percent > max
        {
            return Some(format!("cpu {:.1} % > {max} %", f.cpu_percent));
        }
        None
    }

    /// One controller step with fresh figures. Returns a decision when the state changed.
    pub fn tick(&mut self, now: u64, f: &Figures) -> Option<Decision> {
        if self.state != State::Running {
            return None;
        }
        let plan = self.plan.as_ref()?;
        let from = self.here();
        if let Some(why) = self.breach(f) {
            let since = *self.breach_since_ms.get_or_insert(now);
            if now.saturating_sub(since) >= plan.breach_window_ms {
                self.state = State::RolledBack;
                self.breach_since_ms = None;
                let reason = format!(
                    "{why} for {} ms (window {} ms)",
                    now - since,
                    plan.breach_window_ms
                );
                return Some(decision(
                    self,
                    now,
                    "rollback",
                    from,
                    reason,
                    Some(f.clone()),
                ));
            }
            return None;
        }
        self.breach_since_ms = None;
        let held = now.saturating_sub(self.stage_started_ms);
        let hold = plan.hold_for(self.stage);
        if held < hold {
            return None;
        }
        let reason = format!("held {held} ms >= {hold} ms with no threshold crossed");
        if self.stage + 1 >= self.stages_bp.len() {
            self.state = State::Completed;
            return Some(decision(
                self,
                now,
                "complete",
                from,
                reason,
                Some(f.clone()),
            ));
        }
        self.stage += 1;
        self.stage_started_ms = now;
        Some(decision(
            self,
            now,
            "advance",
            from,
            reason,
            Some(f.clone()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Thresholds;

    fn plan() -> RolloutPlan {
        RolloutPlan {
            stages: vec![1.0, 5.0, 10.0, 50.0, 100.0],
            hold_ms: 1000,
            stage_hold_ms: None,
            thresholds: Thresholds {
                max_error_rate: Some(0.01),
                max_p99_latency_us: Some(5000),
                max_cpu_percent: Some(90.0),
            },
            breach_window_ms: 500,
        }
    }

    fn ok() -> Figures {
        Figures {
            frames: 1000,
            errors: 1,
            error_rate: 0.001,
            p99_latency_us: 100,
            cpu_percent: 20.0,
            window_ms: 100,
        }
    }

    #[test]
    fn advances_after_hold_and_completes() {
        let mut r = Rollout::default();
        r.start(plan(), 0).unwrap();
        assert_eq!(r.pct_bp(), 100);
        assert!(r.tick(999, &ok()).is_none());
        let d = r.tick(1000, &ok()).unwrap();
        assert_eq!(
            (d.action.as_str(), d.from_pct_bp, d.to_pct_bp),
            ("advance", 100, 500)
        );
        for t in [2000, 3000, 4000] {
            r.tick(t, &ok()).unwrap();
        }
        assert_eq!(r.pct_bp(), 10_000);
        let d = r.tick(5000, &ok()).unwrap();
        assert_eq!(d.action, "complete");
        assert_eq!(r.state, State::Completed);
        assert!(r.tick(9000, &ok()).is_none());
    }

    #[test]
    fn rolls_back_only_after_a_sustained_breach() {
        let mut r = Rollout::default();
        r.start(plan(), 0).unwrap();
        let bad = Figures {
            errors: 50,
            error_rate: 0.05,
            ..ok()
        };
        assert!(r.tick(100, &bad).is_none());
        assert!(r.tick(300, &ok()).is_none(), "breach cleared");
        assert!(r.tick(400, &bad).is_none());
        assert!(r.tick(800, &bad).is_none());
        let d = r.tick(900, &bad).unwrap();
        assert_eq!(d.action, "rollback");
        assert!(d.reason.contains("error rate"), "{}", d.reason);
        assert_eq!(d.figures.unwrap().errors, 50);
        assert_eq!(r.pct_bp(), 0);
        // Latency and CPU thresholds too.
        let mut r = Rollout::default();
        r.start(plan(), 0).unwrap();
        let hot = Figures {
            cpu_percent: 95.0,
            ..ok()
        };
        r.tick(0, &hot);
        assert!(r.tick(600, &hot).unwrap().reason.contains("cpu"));
    }

    #[test]
    fn per_stage_hold_times_apply() {
        let mut r = Rollout::default();
        let p = RolloutPlan {
            stages: vec![1.0, 50.0],
            stage_hold_ms: Some(vec![100, 5000]),
            ..plan()
        };
        r.start(p.clone(), 0).unwrap();
        assert_eq!(r.tick(100, &ok()).unwrap().action, "advance");
        assert!(r.tick(5099, &ok()).is_none());
        assert_eq!(r.tick(5100, &ok()).unwrap().action, "complete");
        let bad = RolloutPlan {
            stage_hold_ms: Some(vec![100]),
            ..p
        };
        assert!(Rollout::default().start(bad, 0).is_err());
    }

    #[test]
    fn operator_actions_follow_the_state() {
        let mut r = Rollout::default();
        assert!(r.act(Action::Pause, 0).is_err());
        r.start(plan(), 0).unwrap();
        assert!(r.start(plan(), 1).is_err());
        r.act(Action::Pause, 600).unwrap();
        assert!(
            r.tick(5000, &ok()).is_none(),
            "paused rollouts do not advance"
        );
        r.act(Action::Resume, 10_000).unwrap();
        assert!(r.tick(10_399, &ok()).is_none());
        assert!(
            r.tick(10_400, &ok()).is_some(),
            "hold time spent before the pause counts"
        );
        r.act(Action::Promote, 10_500).unwrap();
        assert_eq!(r.stage, 2);
        r.act(Action::Rollback, 10_600).unwrap();
        assert_eq!((r.state, r.pct_bp()), (State::RolledBack, 0));
        assert!(r.act(Action::Resume, 10_700).is_err());
        r.start(plan(), 11_000).unwrap();
        r.act(Action::Abort, 11_001).unwrap();
        assert_eq!(r.pct_bp(), 0);
    }
}
