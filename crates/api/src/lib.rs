//! `api`: the control-plane HTTP API (`/v1`, docs/API.md + docs/DECISIONS.md).
//!
//! Owns: the hyper server (`server`), the gate pipeline (`service`, `gates`), routing
//! (`routes`), envelopes and request ids (`envelope`, `state`), body reading (`body`), the
//! users endpoints (`users`, with `links`), config over HTTP (`config_routes`, `reload`), the
//! read-only views (`views`), the OpenAPI document (`openapi`) and the port to the running proxy (`runtime`).
//! Must not: reach into the data plane other than through [`runtime::Runtime`], write the
//! config file other than through `config::ConfigStore`, keep process-wide statics.

pub mod admin;
pub mod body;
pub mod config_routes;
pub mod envelope;
pub mod gates;
pub mod links;
pub mod metrics;
pub mod openapi;
pub mod reload;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod service;
pub mod state;
pub mod users;
pub mod views;

pub use envelope::{ApiBody, ApiError, JSON_CONTENT_TYPE};
pub use server::{serve, serve_with, PeerAddr, ServeOptions};
pub use service::{router, ApiService};
pub use state::ApiState;
pub use users::dto::{
    CreateUserRequest, CreateUserResponse, PatchUserRequest, RotateSecretRequest, UserInfo,
    UserLinks,
};
