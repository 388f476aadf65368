//! `api`: the control-plane HTTP API (`/v1`, API.md + DECISIONS.md).
//!
//! Core (this file, `server`, `service`, `gates`, `routes`, `body`, `envelope`, `users`,
//! `links`, `state`) owns the hyper server, the gate pipeline, routing, envelopes, request ids,
//! body reading, If-Match and the users endpoints. `runtime` (the port to the running proxy)
//! and `views` (every other read-only endpoint) are owned by helper VIEWS.
//! Must not: reach into the data plane other than through [`runtime::Runtime`], write the
//! config file other than through `config::ConfigStore::apply`, keep process-wide statics.

pub mod body;
pub mod config_routes;
pub mod envelope;
pub mod gates;
pub mod links;
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
