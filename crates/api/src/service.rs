//! The per-request service: the gate pipeline in docs/API.md's order, then dispatch to the users
//! handlers or the read-only views. Usable without a socket through `tower::ServiceExt::oneshot`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Buf;
use http::{Method, Request, Response};
use http_body::Body;

use crate::envelope::{error_response, success_response, ApiBody, ApiError};
use crate::gates::{authorized, whitelist_allows};
use crate::routes::{match_users, Matched};
use crate::server::PeerAddr;
use crate::state::ApiState;
use crate::users;
use crate::views::{read_route, render, ViewContext};

/// Default bound on reading one request body (a client trickling a body is cut off).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The API as a request → response function. Clone per connection/request.
#[derive(Clone)]
pub struct ApiService {
    state: ApiState,
    body_timeout: Duration,
}

/// Builds the request service for `state` (see [`ApiService`]).
pub fn router(state: ApiState) -> ApiService {
    ApiService::new(state)
}

impl ApiService {
    pub fn new(state: ApiState) -> Self {
        Self {
            state,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }

    /// Overrides the body read timeout.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    pub fn state(&self) -> &ApiState {
        &self.state
    }

    /// Handles one request; every outcome, including failures, is a JSON response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ApiBody>
    where
        B: Body,
        B::Data: Buf,
    {
        let request_id = self.state.next_request_id();
        match self.dispatch(req).await {
            Ok(resp) => resp,
            Err(err) => error_response(request_id, &err),
        }
    }

    async fn dispatch<B>(&self, req: Request<B>) -> Result<Response<ApiBody>, ApiError>
    where
        B: Body,
        B::Data: Buf,
    {
        // One snapshot per request: every gate and the handler see the same config, and
        // server.api changes apply to the next request without restart (docs/DECISIONS.md #25).
        let snapshot = self.state.store().current();
        let api = &snapshot.config.server.api;
        if !api.enabled {
            return Err(ApiError::api_disabled());
        }
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        if !whitelist_allows(&api.whitelist, peer) {
            return Err(ApiError::forbidden());
        }
        let path = req.uri().path();
        if (path == crate::admin::PAGE || path == "/admin/") && req.method() == Method::GET {
            // The page carries no data: its API calls pass the Authorization gate themselves.
            return Ok(crate::admin::page());
        }
        if !authorized(&api.auth_header, req.headers()) {
            return Err(ApiError::unauthorized());
        }
        if req.method() == Method::GET {
            if let Some(user) = crate::admin::qr_user(req.uri().path()) {
                return crate::admin::qr(&self.state, user);
            }
        }
        let (parts, body) = req.into_parts();
        if parts.uri.path() == crate::reload::PATH {
            if parts.method != Method::POST {
                return Err(ApiError::method_not_allowed_for("POST"));
            }
            let api = &snapshot.config.server.api;
            if api.read_only {
                return Err(ApiError::read_only());
            }
            let read =
                crate::body::read_limited(&parts.headers, body, api.request_body_limit_bytes);
            let bytes = tokio::time::timeout(self.body_timeout, read)
                .await
                .map_err(|_| ApiError::bad_request("Invalid request body"))??;
            let expected = crate::gates::if_match(&parts.headers);
            return crate::reload::post(&self.state, bytes, expected).await;
        }
        if parts.uri.path() == crate::config_routes::PATH {
            return crate::config_routes::handle(
                &self.state,
                &snapshot,
                &parts,
                body,
                self.body_timeout,
            )
            .await;
        }
        match match_users(&parts.method, parts.uri.path()) {
            Matched::Route(route) => {
                users::handle(
                    &self.state,
                    &snapshot,
                    route,
                    &parts,
                    body,
                    self.body_timeout,
                )
                .await
            }
            Matched::Refused(err) => Err(err),
            Matched::NotUsers => {
                if parts.method != Method::GET {
                    return Err(ApiError::route_not_found());
                }
                if parts.uri.path() == crate::openapi::PATH {
                    return crate::openapi::response();
                }
                if let Some(res) = crate::reload::status(&self.state, parts.uri.path()) {
                    return res;
                }
                let Some(route) = read_route(parts.uri.path()) else {
                    return Err(ApiError::route_not_found());
                };
                let on_disk = self.state.store().on_disk();
                let ctx = ViewContext {
                    snapshot: &snapshot,
                    revision: &on_disk.revision,
                    runtime: self.state.runtime(),
                    caches: self.state.caches(),
                    query: parts.uri.query(),
                    now: SystemTime::now(),
                };
                let data = render(route, &ctx);
                let status = crate::views::status_of(route, &data);
                success_response(status, &data, &on_disk.revision)
            }
        }
    }
}

impl<B> tower::Service<Request<B>> for ApiService
where
    B: Body + Send + 'static,
    B::Data: Buf + Send,
{
    type Response = Response<ApiBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}
