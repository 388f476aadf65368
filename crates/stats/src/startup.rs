//! Startup progress: components (the binary, the data plane, the upstream manager and later the
//! middle-proxy pool) report their stages to one shared `StartupTracker`; the API reads
//! snapshots (`/v1/runtime/initialization`, `/v1/runtime/gates`). Time is always passed in.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Overall (and ME) startup status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartupStatus {
    #[default]
    Pending,
    Initializing,
    Ready,
    Failed,
    Skipped,
}

impl StartupStatus {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[
        StartupStatus::Pending,
        StartupStatus::Initializing,
        StartupStatus::Ready,
        StartupStatus::Failed,
        StartupStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StartupStatus::Pending => "pending",
            StartupStatus::Initializing => "initializing",
            StartupStatus::Ready => "ready",
            StartupStatus::Failed => "failed",
            StartupStatus::Skipped => "skipped",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            StartupStatus::Ready | StartupStatus::Failed | StartupStatus::Skipped
        )
    }
}

/// Status of one startup component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComponentStatus {
    #[default]
    Pending,
    Running,
    Ready,
    Failed,
    Skipped,
}

impl ComponentStatus {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[
        ComponentStatus::Pending,
        ComponentStatus::Running,
        ComponentStatus::Ready,
        ComponentStatus::Failed,
        ComponentStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComponentStatus::Pending => "pending",
            ComponentStatus::Running => "running",
            ComponentStatus::Ready => "ready",
            ComponentStatus::Failed => "failed",
            ComponentStatus::Skipped => "skipped",
        }
    }

    fn is_done(self) -> bool {
        matches!(
            self,
            ComponentStatus::Ready | ComponentStatus::Failed | ComponentStatus::Skipped
        )
    }
}

/// Transport chosen at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
    MiddleProxy,
    Direct,
}

impl TransportMode {
    /// Every variant, in declaration order (the schema's value list).
    pub const ALL: &'static [Self] = &[TransportMode::MiddleProxy, TransportMode::Direct];

    pub fn as_str(self) -> &'static str {
        match self {
            TransportMode::MiddleProxy => "middle_proxy",
            TransportMode::Direct => "direct",
        }
    }
}

/// One component row of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupComponentSnapshot {
    pub id: String,
    pub title: String,
    pub status: ComponentStatus,
    pub started_at_epoch_ms: Option<u64>,
    pub finished_at_epoch_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    pub details: Option<String>,
}

/// ME startup substate.
#[derive(Debug, Clone, PartialEq)]
pub struct MeStartupSnapshot {
    pub status: StartupStatus,
    pub current_stage: String,
    pub progress_pct: f64,
    pub init_attempt: u32,
    /// `None` = unlimited retries.
    pub retry_limit: Option<u32>,
    pub last_error: Option<String>,
}

/// Point-in-time copy of the tracker.
#[derive(Debug, Clone, PartialEq)]
pub struct StartupSnapshot {
    pub status: StartupStatus,
    pub degraded: bool,
    pub current_stage: String,
    pub progress_pct: f64,
    pub started_at: SystemTime,
    pub ready_at: Option<SystemTime>,
    pub transport_mode: TransportMode,
    pub me: MeStartupSnapshot,
    pub components: Vec<StartupComponentSnapshot>,
}

#[derive(Debug)]
struct Component {
    row: StartupComponentSnapshot,
    me: bool,
}

#[derive(Debug)]
struct State {
    status: StartupStatus,
    degraded: bool,
    stage: String,
    started_at: SystemTime,
    ready_at: Option<SystemTime>,
    transport_mode: TransportMode,
    me_status: StartupStatus,
    me_stage: String,
    me_init_attempt: u32,
    me_retry_limit: Option<u32>,
    me_last_error: Option<String>,
    components: Vec<Component>,
}

/// Thread-safe startup tracker, shared as `Arc<StartupTracker>` between the binary and the API.
#[derive(Debug)]
pub struct StartupTracker {
    state: Mutex<State>,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl StartupTracker {
    /// A tracker for a process started at `started_at` using `transport_mode`. In direct mode
    /// the ME substate starts (and stays) `skipped`.
    pub fn new(started_at: SystemTime, transport_mode: TransportMode) -> Self {
        let me_status = match transport_mode {
            TransportMode::Direct => StartupStatus::Skipped,
            TransportMode::MiddleProxy => StartupStatus::Pending,
        };
        Self {
            state: Mutex::new(State {
                status: StartupStatus::Pending,
                degraded: false,
                stage: "pending".to_string(),
                started_at,
                ready_at: None,
                transport_mode,
                me_status,
                me_stage: me_status.as_str().to_string(),
                me_init_attempt: 0,
                me_retry_limit: None,
                me_last_error: None,
                components: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the plain-data state inconsistent in a
        // way that matters for reporting, so a poisoned lock is simply reused.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares a component (in display order). `me` marks it as part of the ME substate.
    /// Registering an existing id is a no-op.
    pub fn register(&self, id: &str, title: &str, me: bool) {
        let mut st = self.lock();
        if st.components.iter().any(|c| c.row.id == id) {
            return;
        }
        st.components.push(Component {
            row: StartupComponentSnapshot {
                id: id.to_string(),
                title: title.to_string(),
                status: ComponentStatus::Pending,
                started_at_epoch_ms: None,
                finished_at_epoch_ms: None,
                duration_ms: None,
                attempts: 0,
                details: None,
            },
            me,
        });
    }

    /// Marks a component running (one more attempt) and makes it the current stage.
    pub fn begin(&self, id: &str, now: SystemTime) {
        let mut st = self.lock();
        let Some(idx) = st.components.iter().position(|c| c.row.id == id) else {
            return;
        };
        let me = st.components[idx].me;
        let row = &mut st.components[idx].row;
        row.status = ComponentStatus::Running;
        row.attempts = row.attempts.saturating_add(1);
        row.started_at_epoch_ms = Some(epoch_ms(now));
        row.finished_at_epoch_ms = None;
        row.duration_ms = None;
        st.stage = id.to_string();
        if st.status == StartupStatus::Pending {
            st.status = StartupStatus::Initializing;
        }
        if me {
            st.me_stage = id.to_string();
            if st.me_status == StartupStatus::Pending {
                st.me_status = StartupStatus::Initializing;
            }
        }
    }

    /// Records the outcome of a component.
    pub fn finish(
        &self,
        id: &str,
        status: ComponentStatus,
        details: Option<String>,
        now: SystemTime,
    ) {
        let mut st = self.lock();
        let Some(c) = st.components.iter_mut().find(|c| c.row.id == id) else {
            return;
        };
        let end = epoch_ms(now);
        c.row.status = status;
        c.row.finished_at_epoch_ms = Some(end);
        c.row.duration_ms = c.row.started_at_epoch_ms.map(|s| end.saturating_sub(s));
        c.row.details = details;
    }

    /// Sets the overall status; the first transition to `ready` records `ready_at`.
    pub fn set_status(&self, status: StartupStatus, now: SystemTime) {
        let mut st = self.lock();
        st.status = status;
        if status == StartupStatus::Ready && st.ready_at.is_none() {
            st.ready_at = Some(now);
        }
    }

    pub fn set_stage(&self, stage: &str) {
        self.lock().stage = stage.to_string();
    }

    pub fn set_degraded(&self, degraded: bool) {
        self.lock().degraded = degraded;
    }

    pub fn set_transport_mode(&self, mode: TransportMode) {
        self.lock().transport_mode = mode;
    }

    pub fn set_me_status(&self, status: StartupStatus) {
        self.lock().me_status = status;
    }

    /// Current ME stage identifier (e.g. `background_init`).
    pub fn set_me_stage(&self, stage: &str) {
        self.lock().me_stage = stage.to_string();
    }

    /// Counts one more ME initialization attempt.
    pub fn begin_me_attempt(&self) {
        let mut st = self.lock();
        st.me_init_attempt = st.me_init_attempt.saturating_add(1);
    }

    /// `None` = unlimited.
    pub fn set_me_retry_limit(&self, limit: Option<u32>) {
        self.lock().me_retry_limit = limit;
    }

    pub fn set_me_error(&self, error: Option<String>) {
        self.lock().me_last_error = error;
    }

    /// Copies the current state and computes progress percentages.
    pub fn snapshot(&self) -> StartupSnapshot {
        let st = self.lock();
        let progress = |filter: &dyn Fn(&Component) -> bool| -> f64 {
            let rows: Vec<&Component> = st.components.iter().filter(|c| filter(c)).collect();
            if rows.is_empty() {
                return 0.0;
            }
            let done = rows.iter().filter(|c| c.row.status.is_done()).count();
            (done as f64 / rows.len() as f64 * 100.0).clamp(0.0, 100.0)
        };
        let progress_pct = if st.status.is_terminal() {
            100.0
        } else {
            progress(&|_| true)
        };
        let me_progress_pct = match st.me_status {
            StartupStatus::Pending => 0.0,
            StartupStatus::Initializing => progress(&|c| c.me),
            StartupStatus::Ready | StartupStatus::Failed | StartupStatus::Skipped => 100.0,
        };
        StartupSnapshot {
            status: st.status,
            degraded: st.degraded,
            current_stage: st.stage.clone(),
            progress_pct,
            started_at: st.started_at,
            ready_at: st.ready_at,
            transport_mode: st.transport_mode,
            me: MeStartupSnapshot {
                status: st.me_status,
                current_stage: st.me_stage.clone(),
                progress_pct: me_progress_pct,
                init_attempt: st.me_init_attempt,
                retry_limit: st.me_retry_limit,
                last_error: st.me_last_error.clone(),
            },
            components: st.components.iter().map(|c| c.row.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn component_lifecycle_and_progress() {
        let tr = StartupTracker::new(t(0), TransportMode::MiddleProxy);
        tr.register("config", "Load config", false);
        tr.register("me_pool", "ME pool", true);
        tr.register("config", "dup ignored", false);
        let s = tr.snapshot();
        assert_eq!(s.status, StartupStatus::Pending);
        assert_eq!(s.components.len(), 2);
        assert_eq!(s.progress_pct, 0.0);
        assert_eq!(s.me.status, StartupStatus::Pending);

        tr.begin("config", t(10));
        tr.finish("config", ComponentStatus::Ready, None, t(35));
        tr.begin("me_pool", t(40));
        tr.begin("me_pool", t(50));
        let s = tr.snapshot();
        assert_eq!(s.status, StartupStatus::Initializing);
        assert_eq!(s.current_stage, "me_pool");
        assert_eq!(s.progress_pct, 50.0);
        assert_eq!(s.me.status, StartupStatus::Initializing);
        assert_eq!(s.me.progress_pct, 0.0);
        let c0 = &s.components[0];
        assert_eq!(c0.duration_ms, Some(25));
        assert_eq!(c0.attempts, 1);
        assert_eq!(s.components[1].attempts, 2);
        assert_eq!(s.components[1].status, ComponentStatus::Running);

        tr.finish("me_pool", ComponentStatus::Failed, Some("x".into()), t(60));
        tr.set_status(StartupStatus::Ready, t(70));
        tr.set_status(StartupStatus::Ready, t(90));
        let s = tr.snapshot();
        assert_eq!(s.ready_at, Some(t(70)));
        assert_eq!(s.progress_pct, 100.0);
        assert_eq!(s.components[1].details.as_deref(), Some("x"));
    }

    #[test]
    fn direct_mode_me_is_skipped() {
        let tr = StartupTracker::new(t(0), TransportMode::Direct);
        let s = tr.snapshot();
        assert_eq!(s.me.status, StartupStatus::Skipped);
        assert_eq!(s.me.progress_pct, 100.0);
        assert_eq!(s.transport_mode.as_str(), "direct");
    }
}
