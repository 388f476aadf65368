//! `GET` and `PATCH /v1/config` (telemt 3.4 shapes): the editable config sections as JSON, and
//! a sparse deep-merge patch of them, written surgically and atomically by the store and
//! applied to the running proxy before the reply — like user edits, with the same gates,
//! `If-Match` and events (`api.config.patch.{ok,failed}`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use config::{ConfigSnapshot, EditError};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::Body;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::body::{decode_object, read_limited};
use crate::envelope::{success_response, ApiBody, ApiError};
use crate::gates::if_match;
use crate::state::ApiState;

/// The route's path.
pub const PATH: &str = "/v1/config";

/// `PatchConfigResponse`. Every editable key is applied in-process at once, so nothing is
/// ever deferred to a restart or a runtime reload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PatchConfigResponse {
    revision: String,
    restart_required: bool,
    runtime_reload_required: bool,
    process_restart_required: bool,
    deferred_process_fields: Vec<String>,
    changed: Vec<String>,
}

/// `GET /v1/config` data, described for the OpenAPI document only: the handler renders the
/// sections straight from the file (`config::sections::editable_sections`), each present only
/// when the file has it, as free-form JSON, plus the revision.
#[derive(utoipa::ToSchema)]
pub struct ConfigSectionsData {
    #[schema(nullable = false)]
    pub general: Option<Value>,
    #[schema(nullable = false)]
    pub timeouts: Option<Value>,
    #[schema(nullable = false)]
    pub censorship: Option<Value>,
    /// Upstreams without their credentials (`password`, `url`).
    #[schema(nullable = false)]
    pub upstreams: Option<Value>,
    #[schema(nullable = false)]
    pub show_link: Option<Value>,
    #[schema(nullable = false)]
    pub dc_overrides: Option<Value>,
    /// Same as the envelope's `revision`.
    pub revision: String,
}

/// Handles `/v1/config` (any method; only GET and PATCH are allowed).
pub async fn handle<B>(
    state: &ApiState,
    snapshot: &Arc<ConfigSnapshot>,
    parts: &Parts,
    body: B,
    body_timeout: Duration,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body,
    B::Data: Buf,
{
    match parts.method {
        Method::GET => get(state),
        Method::PATCH => {
            let res = patch(state, snapshot, parts, body, body_timeout).await;
            let events = state.runtime().stats().events();
            match &res {
                Ok(_) => {
                    events.push("api.config.patch.ok", "");
                }
                Err(e) => {
                    events.push("api.config.patch.failed", &format!("code={}", e.code));
                }
            }
            res
        }
        _ => Err(ApiError::method_not_allowed_for("GET, PATCH")),
    }
}

fn get(state: &ApiState) -> Result<Response<ApiBody>, ApiError> {
    let store = Arc::clone(state.store());
    let mut sections = store.editable_sections().map_err(map_error)?;
    let revision = store.on_disk().revision.clone();
    // telemt documents the revision both in the envelope and (in its example) in `data`.
    sections.insert("revision".to_owned(), Value::String(revision.clone()));
    success_response(StatusCode::OK, &sections, &revision)
}

async fn patch<B>(
    state: &ApiState,
    snapshot: &ConfigSnapshot,
    parts: &Parts,
    body: B,
    body_timeout: Duration,
) -> Result<Response<ApiBody>, ApiError>
where
    B: Body,
    B::Data: Buf,
{
    if snapshot.config.server.api.read_only {
        return Err(ApiError::read_only());
    }
    let limit = snapshot.config.server.api.request_body_limit_bytes;
    let bytes = tokio::time::timeout(body_timeout, read_limited(&parts.headers, body, limit))
        .await
        .map_err(|_| ApiError::bad_request("Invalid request body"))??;
    let patch: Map<String, Value> = decode_object(&bytes)?;
    let expected = if_match(&parts.headers);
    let store = Arc::clone(state.store());
    // The write finishes even if the client goes away (same rule as user edits).
    let task =
        tokio::task::spawn_blocking(move || store.apply_sections(expected.as_deref(), &patch));
    let (snap, changed) = task
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "config write task failed");
            ApiError::internal("Config write task failed")
        })?
        .map_err(map_error)?;
    let resp = PatchConfigResponse {
        revision: snap.revision.clone(),
        restart_required: false,
        runtime_reload_required: false,
        process_restart_required: false,
        deferred_process_fields: Vec::new(),
        changed,
    };
    success_response(StatusCode::OK, &resp, &snap.revision)
}

fn map_error(e: EditError) -> ApiError {
    match e {
        EditError::AccessNotEditable => {
            ApiError::not_editable("access_not_editable", e.to_string())
        }
        EditError::SectionNotEditable(_) => {
            ApiError::not_editable("section_not_editable", e.to_string())
        }
        EditError::RevisionConflict => ApiError::revision_conflict(),
        EditError::Invalid(msg) => ApiError::bad_request(msg),
        e @ EditError::DiskInvalid(_) => ApiError::config_invalid_on_disk(e.to_string()),
        other => {
            tracing::error!(error = %other, "config write failed");
            ApiError::internal("Failed to write config")
        }
    }
}
