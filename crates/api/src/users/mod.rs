//! Users endpoints: list/get (read) and create/patch/delete/rotate-secret, enable/disable and
//! reset-quota (write).
//!
//! Write path (docs/DECISIONS.md #12, #18): read_only gate → body (limit, JSON) → validation (400) →
//! `ConfigStore::apply` on a blocking thread (If-Match → existence → last-user → surgical write
//! → publish to the runtime) → session/IP cleanup → response rendered from the new snapshot.
//! Every write outcome is recorded in the events ring (docs/DECISIONS.md #26). The commit phase runs in
//! its own task, so a client that disconnects mid-write cannot skip the runtime side effects.

pub mod dto;
pub mod info;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use config::ConfigSnapshot;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::Body;

use crate::envelope::{success_with, ApiBody, ApiError};
use crate::routes::{UserAction, UserRoute};
use crate::state::ApiState;

use info::UserRenderer;
pub use write::ResetQuotaResponse;

/// Dispatches a matched users route. `snapshot` is the request's config snapshot (gates).
pub async fn handle<B>(
    state: &ApiState,
    snapshot: &Arc<ConfigSnapshot>,
    route: UserRoute<'_>,
    parts: &Parts,
    body: B,
    body_timeout: Duration,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body,
    B::Data: Buf,
{
    let op = match route {
        UserRoute::List => return list(state, snapshot),
        UserRoute::Get(u) => return get(state, snapshot, u),
        UserRoute::Create => write::Op::Create,
        UserRoute::Patch(u) => write::Op::Patch(u.to_owned()),
        UserRoute::Delete(u) => write::Op::Delete(u.to_owned()),
        UserRoute::RotateSecret(u) => write::Op::RotateSecret(u.to_owned()),
        UserRoute::Action(u, UserAction::Enable) => write::Op::SetEnabled(u.to_owned(), true),
        UserRoute::Action(u, UserAction::Disable) => write::Op::SetEnabled(u.to_owned(), false),
        UserRoute::Action(u, UserAction::ResetQuota) => write::Op::ResetQuota(u.to_owned()),
    };
    write::mutate(state, snapshot, op, parts, body, body_timeout).await
}

fn list(state: &ApiState, snapshot: &ConfigSnapshot) -> Result<Response<ApiBody>, ApiError> {
    let renderer = UserRenderer::new(&snapshot.config, state.runtime());
    success_with(
        StatusCode::OK,
        &state.store().on_disk().revision,
        renderer.size_hint(),
        |buf| renderer.write_list(buf),
    )
}

fn get(
    state: &ApiState,
    snapshot: &ConfigSnapshot,
    u: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let revision = &state.store().on_disk().revision;
    render_one(state, snapshot, revision, u, StatusCode::OK, false)
        .and_then(|found| found.ok_or_else(ApiError::user_not_found))
}

/// Renders `UserInfo` (or `{user, secret}` when `with_secret`) for `u` from `snap`;
/// `Ok(None)` when `u` is not configured there.
fn render_one(
    state: &ApiState,
    snap: &ConfigSnapshot,
    revision: &str,
    u: &str,
    status: StatusCode,
    with_secret: bool,
) -> Result<Option<Response<ApiBody>>, ApiError> {
    let renderer = UserRenderer::new(&snap.config, state.runtime());
    let mut found = false;
    let resp = success_with(status, revision, 1024, |buf| {
        found = if with_secret {
            renderer.write_with_secret(buf, u)?
        } else {
            renderer.write_one(buf, u)?
        };
        Ok(())
    })?;
    Ok(found.then_some(resp))
}

/// Renders the user just written; its absence from the new snapshot is an internal error.
fn render_written(
    state: &ApiState,
    snap: &ConfigSnapshot,
    u: &str,
    status: StatusCode,
    with_secret: bool,
) -> Result<Response<ApiBody>, ApiError> {
    render_one(state, snap, &snap.revision, u, status, with_secret)?
        .ok_or_else(|| ApiError::internal("Written user missing from the new config"))
}
