//! The built-in admin page (`GET /admin`) and the QR codes it shows
//! (`GET /v1/users/{u}/qr`, an SVG of the user's first link).
//!
//! The page is a static asset compiled into the binary (nothing is loaded from the net); all
//! it shows comes from `/v1` calls the page makes with the operator's `Authorization` value,
//! so the page itself passes the `enabled` and whitelist gates only (a browser cannot attach
//! the header to a navigation; docs/DECISIONS.md #38). The QR route goes through every gate
//! like any other user route (it reveals the secret).
//! Must not: hold state or serve anything but these two resources.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::envelope::{ApiBody, ApiError};
use crate::state::ApiState;

/// Path of the page (also served with a trailing slash).
pub const PAGE: &str = "/admin";
const HTML: &str = include_str!("../assets/admin.html");

fn with_type(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<ApiBody> {
    let mut r = Response::new(ApiBody::from(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page runs only its own inline script and talks only to this origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        ),
    );
    r
}

/// The page.
pub fn page() -> Response<ApiBody> {
    with_type(StatusCode::OK, "text/html; charset=utf-8", HTML)
}

/// `/v1/users/{u}/qr` → the user name, or `None` when the path is not that route.
pub fn qr_user(path: &str) -> Option<&str> {
    let u = path.strip_prefix("/v1/users/")?.strip_suffix("/qr")?;
    (!u.is_empty() && !u.contains('/')).then_some(u)
}

/// An SVG QR code of the first link of `user` (tls, else secure, else classic).
pub fn qr(state: &ApiState, user: &str) -> Result<Response<ApiBody>, ApiError> {
    let snap = state.store().current();
    let renderer = crate::users::info::UserRenderer::new(&snap.config, state.runtime());
    let mut buf = Vec::new();
    let found = renderer
        .write_one(&mut buf, user)
        .map_err(|_| ApiError::internal("Failed to render the user"))?;
    if !found {
        return Err(ApiError::user_not_found());
    }
    let info: serde_json::Value = serde_json::from_slice(&buf)
        .map_err(|_| ApiError::internal("Failed to render the user"))?;
    let link = ["tls", "secure", "classic"]
        .iter()
        .find_map(|m| info["links"][m][0].as_str())
        .ok_or_else(|| ApiError::bad_request("the user has no link (no mode enabled)"))?;
    let code = qrcode::QrCode::new(link.as_bytes())
        .map_err(|_| ApiError::internal("Failed to encode the QR code"))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(with_type(StatusCode::OK, "image/svg+xml", svg))
}
