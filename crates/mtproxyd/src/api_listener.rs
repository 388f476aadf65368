//! The control-plane API listener: bound per `[server.api]` at start (a failed or disabled
//! listener is reported to the startup tracker, never fatal: the proxy keeps serving clients),
//! served until the shutdown signal.

use std::net::SocketAddr;
use std::time::SystemTime;

use api::runtime::{ComponentStatus, StartupTracker};
use config::ApiSettings;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Binds the listener; `Err` with the reason when disabled, port 0, or the bind fails (no
/// retry: the operator fixes the config and restarts).
async fn bind(enabled: bool, listen: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    if !enabled {
        return Err("disabled ([server.api] enabled = false)".to_owned());
    }
    if listen.port() == 0 {
        return Err("listen port is 0".to_owned());
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot bind {listen}: {e}"))
}

/// Starts serving `state` per `settings` until `stop` turns true; reports the `api` stage.
pub async fn start(
    settings: &ApiSettings,
    state: api::ApiState,
    startup: &StartupTracker,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    startup.register("api", "Control-plane API listener", false);
    startup.begin("api", SystemTime::now());
    match bind(settings.enabled, settings.listen).await {
        Ok(listener) => {
            let addr = listener.local_addr().unwrap_or(settings.listen);
            tracing::info!(%addr, "control-plane API listening");
            startup.finish(
                "api",
                ComponentStatus::Ready,
                Some(addr.to_string()),
                SystemTime::now(),
            );
            let mut stop = stop;
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = api::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "control-plane API stopped");
                }
            }))
        }
        Err(reason) => {
            let status = if settings.enabled && settings.listen.port() != 0 {
                tracing::warn!("control-plane API not started: {reason}");
                ComponentStatus::Failed
            } else {
                tracing::info!("control-plane API not started: {reason}");
                ComponentStatus::Skipped
            };
            startup.finish("api", status, Some(reason), SystemTime::now());
            None
        }
    }
}

/// Lets in-flight requests finish (the server bounds its own grace period).
pub async fn stop(task: Option<JoinHandle<()>>) {
    if let Some(task) = task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }
}

/// Starts the Prometheus endpoint when `server.metrics_port` / `metrics_listen` is set (bind
/// failures are logged, not fatal); it stops with the API.
pub async fn start_metrics(
    store: &std::sync::Arc<config::ConfigStore>,
    stats: &std::sync::Arc<stats::Stats>,
    runtime: std::sync::Arc<dyn api::runtime::Runtime>,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let snap = store.current();
    let addr = api::metrics::bind_addr(&snap.config.server)?;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(%addr, "metrics listening (GET /metrics)");
            let (store, stats) = (std::sync::Arc::clone(store), std::sync::Arc::clone(stats));
            let mut stop = stop;
            Some(tokio::spawn(api::metrics::serve(
                listener,
                store,
                stats,
                runtime,
                env!("CARGO_PKG_VERSION"),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "metrics listener not started");
            None
        }
    }
}
