//! `POST /v1/system/reload` and `GET /v1/system/reload/{id}` (telemt 3.4 shapes).
//!
//! Our reload is the store's: the file on disk is loaded, validated and published, and the
//! publish hook applies it to the running proxy before the request returns. So an accepted
//! reload has already succeeded by the time the 202 is sent; a file that does not load is
//! refused with 400 before anything is recorded. Both `instant` and `drain` behave the same:
//! sessions of users whose entry did not change keep running, the others are closed
//! (docs/DECISIONS.md #30). The last 32 outcomes are kept for `GET .../{id}`.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::decode_optional_json;
use crate::envelope::{success_response, ApiBody, ApiError};
use crate::state::ApiState;

/// Route paths.
pub const PATH: &str = "/v1/system/reload";
const STATUS_PREFIX: &str = "/v1/system/reload/";
/// Outcomes kept for `GET /v1/system/reload/{id}`.
const KEEP: usize = 32;

/// `ReloadRequest`; an empty body means `{"mode":"instant","failure_policy":"keep_new"}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ReloadRequest {
    #[serde(default)]
    #[schema(pattern = "^(instant|drain)$")]
    mode: Option<String>,
    /// Only with `mode: drain`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    #[schema(pattern = "^(keep_new|rollback)$")]
    failure_policy: Option<String>,
}

/// One recorded reload (`ReloadAccepted` when returned by POST, `ReloadStatus` by GET).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadRecord {
    pub reload_id: u64,
    pub target_generation: u64,
    pub config_revision: String,
    #[schema(schema_with = crate::views::schema::reload_state)]
    pub state: &'static str,
    #[schema(schema_with = crate::views::schema::reload_mode)]
    pub mode: &'static str,
    #[schema(schema_with = crate::views::schema::reload_failure_policy)]
    pub failure_policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub timeout_secs: Option<u64>,
    pub accepted_at_epoch_secs: u64,
    pub finished_at_epoch_secs: u64,
    pub warnings: Vec<String>,
    pub deferred_process_fields: Vec<String>,
}

/// The retained outcomes.
#[derive(Debug, Default)]
pub struct ReloadLog {
    inner: Mutex<(u64, VecDeque<ReloadRecord>)>,
}

impl ReloadLog {
    fn push(&self, mut rec: ReloadRecord) -> ReloadRecord {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.0 += 1;
        rec.reload_id = g.0;
        if g.1.len() == KEEP {
            g.1.pop_front();
        }
        g.1.push_back(rec.clone());
        rec
    }

    fn get(&self, id: u64) -> Option<ReloadRecord> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .iter()
            .find(|r| r.reload_id == id)
            .cloned()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const INSTANT: &str = "instant";
const DRAIN: &str = "drain";
/// `mode` values.
pub(crate) const MODES: [&str; 2] = [INSTANT, DRAIN];
const KEEP_NEW: &str = "keep_new";
const ROLLBACK: &str = "rollback";
/// `failure_policy` values.
pub(crate) const FAILURE_POLICIES: [&str; 2] = [KEEP_NEW, ROLLBACK];
const ACCEPTED: &str = "accepted";
const SUCCEEDED: &str = "succeeded";
/// `state` values: the POST answers `accepted`, the status route the outcome.
pub(crate) const STATES: [&str; 2] = [ACCEPTED, SUCCEEDED];

fn parse(bytes: &[u8]) -> Result<(&'static str, &'static str, Option<u64>), ApiError> {
    let req: ReloadRequest = decode_optional_json(bytes)?.unwrap_or_default();
    let mode = match req.mode.as_deref() {
        None | Some(INSTANT) => INSTANT,
        Some(DRAIN) => DRAIN,
        Some(_) => return Err(ApiError::bad_request("mode must be instant or drain")),
    };
    let failure_policy = match req.failure_policy.as_deref() {
        None | Some(KEEP_NEW) => KEEP_NEW,
        Some(ROLLBACK) => ROLLBACK,
        Some(_) => {
            return Err(ApiError::bad_request(
                "failure_policy must be keep_new or rollback",
            ))
        }
    };
    match (mode, req.timeout_secs) {
        (DRAIN, Some(1..=3600)) | (INSTANT, None) => {}
        (DRAIN, None) => {}
        (DRAIN, Some(_)) => {
            return Err(ApiError::bad_request(
                "timeout_secs must be within 1..=3600",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "timeout_secs is only valid with mode drain",
            ))
        }
    }
    Ok((mode, failure_policy, req.timeout_secs))
}

/// `POST /v1/system/reload` (the read_only gate and body limit already passed).
pub async fn post(
    state: &ApiState,
    bytes: Bytes,
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    let (mode, failure_policy, timeout_secs) = parse(&bytes)?;
    let store = state.store().clone();
    let accepted_at = now_secs();
    let outcome = tokio::task::spawn_blocking(move || {
        if let Some(want) = expected.as_deref() {
            if want.trim().trim_matches('"') != store.on_disk().revision {
                return Err(ApiError::revision_conflict());
            }
        }
        store
            .reload_from_disk()
            .map_err(|e| ApiError::bad_request(format!("config reload refused: {e}")))?;
        let rev = store.on_disk().revision.clone();
        // A file changed by hand since the read above is picked up by the watcher next.
        Ok((rev, store.reload_stats().reload_count))
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "reload task failed");
        ApiError::internal("Reload task failed")
    })?;
    let events = state.runtime().stats().events();
    let (revision, generation) = match outcome {
        Ok(v) => v,
        Err(e) => {
            events.push("api.system.reload.failed", &format!("code={}", e.code));
            return Err(e);
        }
    };
    let rec = state.reloads().push(ReloadRecord {
        reload_id: 0,
        target_generation: generation,
        config_revision: revision.clone(),
        state: SUCCEEDED,
        mode,
        failure_policy,
        timeout_secs,
        accepted_at_epoch_secs: accepted_at,
        finished_at_epoch_secs: now_secs(),
        warnings: Vec::new(),
        deferred_process_fields: Vec::new(),
    });
    events.push(
        "api.system.reload.ok",
        &format!("reload_id={} mode={mode}", rec.reload_id),
    );
    let accepted = ReloadRecord {
        state: ACCEPTED,
        ..rec
    };
    success_response(StatusCode::ACCEPTED, &accepted, &revision)
}

/// `GET /v1/system/reload/{id}`: `None` when `path` is not that route.
pub fn status(state: &ApiState, path: &str) -> Option<Result<Response<ApiBody>, ApiError>> {
    let id = path.strip_prefix(STATUS_PREFIX)?;
    Some(
        id.parse::<u64>()
            .ok()
            .and_then(|id| state.reloads().get(id))
            .ok_or_else(ApiError::route_not_found)
            .and_then(|rec| {
                success_response(StatusCode::OK, &rec, &state.store().on_disk().revision)
            }),
    )
}
