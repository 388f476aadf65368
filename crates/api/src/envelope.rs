//! Response envelopes and the API error type.
//!
//! Success: `{"ok":true,"data":...,"revision":"<sha256>"}`; error:
//! `{"ok":false,"error":{"code","message"},"request_id":N}` (never a revision).
//! Bodies are serialized straight into one buffer so large lists cost one allocation chain.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// The body type of every API response.
pub type ApiBody = Full<Bytes>;

/// Content type of every API response (docs/API.md "Protocol Contract").
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A request failure: HTTP status + machine code + short human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// The `Allow` header of a 405 (the users routes' methods unless set).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn route_not_found() -> Self {
        Self::not_found("Route not found")
    }

    pub fn user_not_found() -> Self {
        Self::not_found("User not found")
    }

    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    pub fn api_disabled() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_disabled",
            "API is disabled",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Source IP is not allowed",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid Authorization header",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed for this route",
        )
    }

    /// 405 on a route whose methods are `allow`.
    pub fn method_not_allowed_for(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::method_not_allowed()
        }
    }

    /// 400 `access_not_editable` / `section_not_editable` (`PATCH /v1/config`).
    pub fn not_editable(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "API is in read-only mode",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("Body exceeds {limit} bytes"),
        )
    }

    /// 503 `config_invalid_on_disk`: a hand edit left the file unloadable, so nothing can be
    /// edited through the API until it is fixed (docs/DECISIONS.md #29).
    pub fn config_invalid_on_disk(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "config_invalid_on_disk",
            message,
        )
    }

    pub fn revision_conflict() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "revision_conflict",
            "Config revision does not match If-Match",
        )
    }

    pub fn user_exists() -> Self {
        Self::new(StatusCode::CONFLICT, "user_exists", "User already exists")
    }

    pub fn last_user() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "last_user_forbidden",
            "Cannot delete the last configured user",
        )
    }
}

/// `error` member of the error envelope.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// `{"ok":false,"error":{..},"request_id":N}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorEnvelope<'a> {
    ok: bool,
    error: ErrorBody<'a>,
    request_id: u64,
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ApiBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    resp
}

/// Builds the error envelope; 405 also carries `Allow` (docs/DECISIONS.md #4).
pub fn error_response(request_id: u64, err: &ApiError) -> Response<ApiBody> {
    let env = ErrorEnvelope {
        ok: false,
        error: ErrorBody {
            code: err.code,
            message: &err.message,
        },
        request_id,
    };
    // Serializing plain strs and integers cannot fail; keep a static fallback anyway so a
    // response is always produced.
    let body = serde_json::to_vec(&env).unwrap_or_else(|_| {
        format!(
            "{{\"ok\":false,\"error\":{{\"code\":\"internal_error\",\"message\":\"serialization failed\"}},\"request_id\":{request_id}}}"
        )
        .into_bytes()
    });
    let mut resp = json_response(err.status, body);
    if err.status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static(err.allow.unwrap_or("GET, PATCH, DELETE")),
        );
    }
    resp
}

/// Builds a success envelope around `data`.
pub fn success_response<T: Serialize + ?Sized>(
    status: StatusCode,
    data: &T,
    revision: &str,
) -> Result<Response<ApiBody>, ApiError> {
    success_with(status, revision, 256, |buf| {
        serde_json::to_writer(buf, data)
    })
}

/// Builds a success envelope whose `data` member is written by `write_data` directly into the
/// response buffer (used by the user list to avoid an intermediate value tree).
pub fn success_with<F>(
    status: StatusCode,
    revision: &str,
    capacity_hint: usize,
    write_data: F,
) -> Result<Response<ApiBody>, ApiError>
where
    F: FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
{
    let mut buf = Vec::with_capacity(capacity_hint + 96);
    buf.extend_from_slice(b"{\"ok\":true,\"data\":");
    write_data(&mut buf).map_err(|e| ApiError::internal(format!("serialization failed: {e}")))?;
    buf.extend_from_slice(b",\"revision\":");
    serde_json::to_writer(&mut buf, revision)
        .map_err(|e| ApiError::internal(format!("serialization failed: {e}")))?;
    buf.push(b'}');
    Ok(json_response(status, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<ApiBody>) -> serde_json::Value {
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("valid json")
    }

    #[tokio::test]
    async fn error_envelope_shape() {
        let resp = error_response(7, &ApiError::method_not_allowed());
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[ALLOW], "GET, PATCH, DELETE");
        assert_eq!(resp.headers()[CONTENT_TYPE], JSON_CONTENT_TYPE);
        let v = body_json(resp).await;
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "method_not_allowed");
        assert_eq!(v["request_id"], 7);
        assert!(v.get("revision").is_none());
    }

    #[tokio::test]
    async fn success_envelope_shape() {
        let resp = success_response(StatusCode::CREATED, &"alice", "ab\"c").expect("ok");
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert!(resp.headers().get(ALLOW).is_none());
        let v = body_json(resp).await;
        assert_eq!(
            v,
            serde_json::json!({"ok": true, "data": "alice", "revision": "ab\"c"})
        );
    }
}
