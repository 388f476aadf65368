//! `mtproxyd run`: wiring only.
//!
//! Order: signal handlers → default config when absent → config store → stats and the startup
//! tracker → data plane (restores counters, starts upstreams and listeners, owns every runtime
//! effect of a config publish) → the binary's publish hook (events, log level) → file watcher
//! → API listener → ready. Then signals: SIGHUP re-reads the file; SIGINT/SIGTERM stop the
//! API and the data plane (which lets sessions finish within a grace period and flushes the
//! counters) and return (exit 0).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use api::runtime::{ComponentStatus, StartupStatus, StartupTracker, TransportMode};
use config::ConfigStore;
use stats::Stats;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::logging::LogControl;
use crate::runtime::RuntimeHandle;
use crate::{api_listener, commands, hooks, netinfo};

/// How long live client sessions may continue after SIGTERM/SIGINT before they are cut.
const CLIENT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `mtproxyd run --config PATH`.
pub async fn run(path: PathBuf, log: LogControl) -> anyhow::Result<()> {
    let started_at = SystemTime::now();
    // Install handlers first: SIGHUP's default action would kill a process still starting.
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    raise_fd_limit();
    let created = commands::ensure_default_config(&path)?;
    if created {
        tracing::info!(path = %path.display(), user = commands::DEFAULT_USER, "created default config");
    }

    let startup = Arc::new(StartupTracker::new(started_at, TransportMode::Direct));
    startup.register("config", "Load configuration", false);
    startup.begin("config", SystemTime::now());
    let store = ConfigStore::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for w in store.warnings() {
        tracing::warn!("config: {w}");
    }
    let snap = store.current();
    let cfg = &snap.config;
    log.set_level(cfg.general.log_level);
    let users = format!("{} users", cfg.access.users.len());
    startup.finish(
        "config",
        ComponentStatus::Ready,
        Some(users),
        SystemTime::now(),
    );

    let events = cfg.server.api.runtime_edge_events_capacity;
    let stats = Stats::with_event_capacity(started_at, events);
    let dataplane = dataplane::Dataplane::start(
        Arc::clone(&store),
        Arc::clone(&stats),
        Arc::clone(&startup),
        dataplane::DataplaneOptions::default(),
    )?;
    let dataplane = Arc::new(dataplane);

    let detected = netinfo::local_interface_addrs();
    let runtime = Arc::new(RuntimeHandle::new(
        Arc::clone(&store),
        Arc::clone(&stats),
        Arc::clone(&startup),
        detected,
        Arc::clone(&dataplane),
    ));
    let api_cfg = &cfg.server.api;
    hooks::install(&store, &stats, log, (api_cfg.enabled, api_cfg.listen));
    let watcher = store.spawn_watcher();

    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_task =
        api_listener::start_metrics(&store, &stats, runtime.clone(), stop_rx.clone()).await;
    let state = api::ApiState::new(Arc::clone(&store), runtime);
    let api_task = api_listener::start(api_cfg, state, &startup, stop_rx).await;

    startup.set_stage("ready");
    startup.set_status(StartupStatus::Ready, SystemTime::now());
    commands::log_links(cfg, detected);

    let reason = loop {
        tokio::select! {
            _ = sighup.recv() => reload(&store).await,
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    tracing::info!("{reason}: shutting down");
    let _ = stop_tx.send(true);
    tokio::join!(
        dataplane.shutdown(CLIENT_SHUTDOWN_GRACE),
        api_listener::stop(api_task),
        api_listener::stop(metrics_task)
    );
    drop(watcher);
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: re-reads the config file now (off the async workers: it does file I/O).
async fn reload(store: &Arc<ConfigStore>) {
    tracing::info!("SIGHUP: re-reading the config file");
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.reload_from_disk()).await {
        Ok(Ok(true)) => tracing::info!("SIGHUP: new config applied"),
        Ok(Ok(false)) => tracing::info!("SIGHUP: config unchanged"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "SIGHUP: reload failed; keeping the running config")
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
    }
}

/// Every client holds two sockets (client and DC): lift the soft open-files limit to the hard
/// one, so a default `ulimit -n 1024` does not cap the proxy at ~500 clients.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}
