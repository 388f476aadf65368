//! `testkit` (dev-dependency only): helpers for tests that drive the real `mtproxyd` binary.
//!
//! Owns: ephemeral port picking, a spawned-daemon handle (start, wait for readiness, signals,
//! logs), a minimal keep-alive HTTP/1.1 JSON client over a tokio `TcpStream`, config
//! fixtures, and the protocol-level pieces the data-plane tests use: a test DC (`dc`), a
//! proxy client (`client`), a masking target (`mask`), a test middle proxy with its client
//! driver and config files (`me`), a loopback STUN server (`stun`), the Python interop
//! runner (`py`) and the missing-peer policy (`external`).
//! Must not: ship in the binary, or depend on the crates under test (it speaks to them only
//! as an outside client or server would) — with one exception: `me` builds on `proto::me`,
//! the sans-IO ME wire layer pinned by the doc's test vectors (docs/DECISIONS.md #37).

mod daemon;
mod fixtures;
mod http;

pub mod client;
pub mod dc;
pub mod external;
pub mod mask;
pub mod me;
pub mod py;
pub mod stun;

pub use daemon::{free_port, Daemon, DaemonError};
pub use fixtures::{random_secret_hex, ConfigFixture};
pub use http::{HttpClient, HttpError, HttpResponse};
pub use stun::StunResponder;

/// Polls `cond` every `every` until it holds or `timeout` passes; returns whether it held.
/// The peers' `wait_until` methods are this over their own recorded state.
pub async fn poll_until(
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}
