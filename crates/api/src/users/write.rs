//! The mutating users endpoints. The request future does the cheap, cancellable part (read_only
//! gate, body read); everything from decoding on runs in a spawned task that always finishes:
//! validation → `ConfigStore::apply` (blocking pool; the data plane applies the runtime effects
//! inside the publish) → event → response.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use config::{ConfigSnapshot, EditError, UserEdit, UserSecret};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::Body;

use super::dto::{self, CreateUserRequest, PatchUserRequest, RotateSecretRequest};
use super::render_written;
use crate::body::{decode_object, decode_optional_json, read_limited};
use crate::envelope::{success_response, ApiBody, ApiError};
use crate::gates::if_match;
use crate::state::ApiState;

/// A mutating users route with its path username.
pub(super) enum Op {
    Create,
    Patch(String),
    Delete(String),
    RotateSecret(String),
    /// `enable` (true) / `disable` (false): a patch of `access.user_enabled`.
    SetEnabled(String, bool),
    /// Not a config edit: the user's quota counter goes back to zero.
    ResetQuota(String),
}

impl Op {
    /// Event name segment (`api.user.<name>.{ok,failed}`).
    fn name(&self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Patch(_) => "patch",
            Op::Delete(_) => "delete",
            Op::RotateSecret(_) => "rotate_secret",
            Op::SetEnabled(_, true) => "enable",
            Op::SetEnabled(_, false) => "disable",
            Op::ResetQuota(_) => "reset_quota",
        }
    }

    /// The path username (empty for create, whose name comes from the body).
    fn user(&self) -> &str {
        match self {
            Op::Create => "",
            Op::Patch(u)
            | Op::Delete(u)
            | Op::RotateSecret(u)
            | Op::SetEnabled(u, _)
            | Op::ResetQuota(u) => u,
        }
    }
}

/// Pushes `api.user.<op>.{ok,failed}` with `username=<u>[ code=<code>]`.
fn record(state: &ApiState, op: &str, username: &str, err: Option<&ApiError>) {
    let events = state.runtime().stats().events();
    match err {
        None => {
            events.push(
                &format!("api.user.{op}.ok"),
                &format!("username={username}"),
            );
        }
        Some(e) => {
            events.push(
                &format!("api.user.{op}.failed"),
                &format!("username={username} code={}", e.code),
            );
        }
    }
}

pub(super) async fn mutate<B>(
    state: &ApiState,
    snapshot: &Arc<ConfigSnapshot>,
    op: Op,
    parts: &Parts,
    body: B,
    body_timeout: Duration,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body,
    B::Data: Buf,
{
    let prepared = async {
        if snapshot.config.server.api.read_only {
            return Err(ApiError::read_only());
        }
        match op {
            // These have no body contract: whatever was sent is not read.
            Op::Delete(_) | Op::SetEnabled(..) | Op::ResetQuota(_) => Ok(Bytes::new()),
            _ => read_body(snapshot, parts, body, body_timeout).await,
        }
    }
    .await;
    let bytes = match prepared {
        Ok(b) => b,
        Err(e) => {
            record(state, op.name(), op.user(), Some(&e));
            return Err(e);
        }
    };
    let expected = if_match(&parts.headers);
    let task_state = state.clone();
    tokio::spawn(async move { commit(task_state, op, bytes, expected).await })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "user write task failed");
            ApiError::internal("User write task failed")
        })?
}

/// Reads the body under the live limit and a time bound.
async fn read_body<B>(
    snapshot: &ConfigSnapshot,
    parts: &Parts,
    body: B,
    timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Data: Buf,
{
    let limit = snapshot.config.server.api.request_body_limit_bytes;
    match tokio::time::timeout(timeout, read_limited(&parts.headers, body, limit)).await {
        Ok(res) => res,
        Err(_) => Err(ApiError::bad_request("Invalid request body")),
    }
}

async fn commit(
    state: ApiState,
    op: Op,
    bytes: Bytes,
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    let name = op.name();
    let mut user = op.user().to_owned();
    let res = match op {
        Op::Create => create(&state, &bytes, expected, &mut user).await,
        Op::Patch(u) => patch(&state, &u, &bytes, expected).await,
        Op::Delete(u) => delete(&state, &u, expected).await,
        Op::RotateSecret(u) => rotate(&state, &u, &bytes, expected).await,
        Op::SetEnabled(u, on) => set_enabled(&state, &u, on, expected).await,
        Op::ResetQuota(u) => reset_quota(&state, &u, expected),
    };
    record(&state, name, &user, res.as_ref().err());
    res
}

fn map_edit_error(e: EditError) -> ApiError {
    match e {
        EditError::RevisionConflict => ApiError::revision_conflict(),
        EditError::UserExists => ApiError::user_exists(),
        EditError::UserNotFound => ApiError::user_not_found(),
        EditError::LastUser => ApiError::last_user(),
        EditError::Invalid(msg) => ApiError::bad_request(msg),
        e @ EditError::DiskInvalid(_) => ApiError::config_invalid_on_disk(e.to_string()),
        other => {
            tracing::error!(error = %other, "config write failed");
            ApiError::internal("Failed to write config")
        }
    }
}

/// Runs `store.apply` on the blocking pool (file I/O + fsync).
async fn apply(
    state: &ApiState,
    expected: Option<String>,
    edit: UserEdit,
) -> Result<Arc<ConfigSnapshot>, ApiError> {
    let store = state.store().clone();
    tokio::task::spawn_blocking(move || store.apply(expected.as_deref(), edit))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "config write task failed");
            ApiError::internal("Config write task failed")
        })?
        .map_err(map_edit_error)
}

/// A path username that fails validation names no user: answer as the store would for a
/// missing user, keeping docs/DECISIONS.md #12's order (If-Match 409 before existence 404). Nothing is
/// written either way, so comparing against the current snapshot outside the lock suffices.
fn refuse_invalid_username(
    state: &ApiState,
    expected: Option<&str>,
    u: &str,
) -> Result<(), ApiError> {
    if config::validate_username(u).is_ok() {
        return Ok(());
    }
    if let Some(expected) = expected {
        if expected != state.store().on_disk().revision {
            return Err(ApiError::revision_conflict());
        }
    }
    Err(ApiError::user_not_found())
}

async fn create(
    state: &ApiState,
    bytes: &[u8],
    expected: Option<String>,
    username_out: &mut String,
) -> Result<Response<ApiBody>, ApiError> {
    let req: CreateUserRequest = decode_object(bytes)?;
    username_out.clone_from(&req.username);
    let new_user = req.into_new_user()?;
    let username = new_user.username.clone();
    let snap = apply(state, expected, UserEdit::Create(new_user)).await?;
    render_written(state, &snap, &username, StatusCode::CREATED, true)
}

async fn patch(
    state: &ApiState,
    u: &str,
    bytes: &[u8],
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    let req: PatchUserRequest = decode_object(bytes)?;
    let patch = req.into_patch()?;
    refuse_invalid_username(state, expected.as_deref(), u)?;
    let edit = UserEdit::Patch {
        username: u.to_owned(),
        patch,
    };
    let snap = apply(state, expected, edit).await?;
    render_written(state, &snap, u, StatusCode::OK, false)
}

async fn delete(
    state: &ApiState,
    u: &str,
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    refuse_invalid_username(state, expected.as_deref(), u)?;
    let edit = UserEdit::Delete {
        username: u.to_owned(),
    };
    let snap = apply(state, expected, edit).await?;
    success_response(StatusCode::OK, u, &snap.revision)
}

async fn rotate(
    state: &ApiState,
    u: &str,
    bytes: &[u8],
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    let req: Option<RotateSecretRequest> = decode_optional_json(bytes)?;
    let secret = match req.and_then(|r| r.secret) {
        Some(s) => dto::parse_secret(&s)?,
        None => UserSecret::random(),
    };
    refuse_invalid_username(state, expected.as_deref(), u)?;
    let edit = UserEdit::RotateSecret {
        username: u.to_owned(),
        secret,
    };
    let snap = apply(state, expected, edit).await?;
    render_written(state, &snap, u, StatusCode::OK, true)
}

async fn set_enabled(
    state: &ApiState,
    u: &str,
    on: bool,
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    refuse_invalid_username(state, expected.as_deref(), u)?;
    let patch = config::UserPatch {
        enabled: Some(on),
        ..Default::default()
    };
    let edit = UserEdit::Patch {
        username: u.to_owned(),
        patch,
    };
    let snap = apply(state, expected, edit).await?;
    render_written(state, &snap, u, StatusCode::OK, false)
}

/// `ResetUserQuotaResponse` (telemt 3.4).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ResetQuotaResponse<'a> {
    username: &'a str,
    used_bytes: u64,
    last_reset_epoch_secs: u64,
}

fn reset_quota(
    state: &ApiState,
    u: &str,
    expected: Option<String>,
) -> Result<Response<ApiBody>, ApiError> {
    let on_disk = state.store().on_disk();
    if let Some(want) = expected.as_deref() {
        if want.trim().trim_matches('"') != on_disk.revision {
            return Err(ApiError::revision_conflict());
        }
    }
    if !state.store().current().config.access.users.contains_key(u) {
        return Err(ApiError::user_not_found());
    }
    let at = state.runtime().reset_user_quota(u);
    let body = ResetQuotaResponse {
        username: u,
        used_bytes: 0,
        last_reset_epoch_secs: at,
    };
    success_response(StatusCode::OK, &body, &on_disk.revision)
}
