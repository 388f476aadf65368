//! `mtproxyd run`: wiring and lifecycle.
//!
//! Order: create the default config when absent → open the store (which sweeps temp files of
//! dead writers) → stats (+ restore per-user counters) → data plane (client listeners) →
//! runtime port → store listener (events ring, log level, hand-deleted users) → file watcher → API listener
//! → ready. Then signals: SIGHUP re-reads the file; SIGINT/SIGTERM stop accepting (clients
//! and API), give in-flight sessions/requests a grace period, flush the counters state file
//! and return (exit 0).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use api::runtime::{ComponentStatus, StartupStatus, StartupTracker, TransportMode};
use config::{ChangeSource, ConfigEvent, ConfigStore, UserSecret};
use stats::Stats;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::logging::LogControl;
use crate::runtime::RuntimeHandle;
use crate::{commands, netinfo};

/// Username of the user put into a freshly created default config.
const DEFAULT_USER: &str = "default";
/// How often per-user counters are flushed to the state file (DECISIONS #27).
const STATE_FLUSH_EVERY: Duration = Duration::from_secs(30);
/// How long live client sessions may continue after SIGTERM/SIGINT before they are cut.
const CLIENT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Writes the commented default config (one random user, API on 127.0.0.1:9091) when `path`
/// does not exist. Returns whether it was created. The file is created 0600 (it holds
/// secrets) via a temp file + rename, so a crash never leaves a partial config behind.
fn ensure_default_config(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = config::default_config_toml(DEFAULT_USER, &UserSecret::random());
    config::create_file_atomically(path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(true)
}

/// Serializes writes of the counters state file (periodic flush vs shutdown flush).
struct StateSaver {
    path: PathBuf,
    stats: Arc<Stats>,
    lock: Mutex<()>,
}

impl StateSaver {
    fn save(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.stats.users().save_state(&self.path, SystemTime::now()) {
            tracing::warn!(error = %e, "cannot write per-user counters");
        }
    }
}

/// Registers the config-change hook (runs synchronously inside every publish).
fn install_store_listener(
    store: &Arc<ConfigStore>,
    runtime: Weak<RuntimeHandle>,
    log: LogControl,
    api_bind: (bool, SocketAddr),
) {
    store.add_listener(Box::new(move |ev: &ConfigEvent<'_>| {
        let Some(rt) = runtime.upgrade() else {
            return;
        };
        let stats = rt.stats_arc();
        match ev {
            ConfigEvent::Applied { snapshot, source } => {
                let cfg = &snapshot.config;
                stats
                    .events()
                    .set_capacity(cfg.server.api.runtime_edge_events_capacity);
                let source = match source {
                    ChangeSource::Api => "api",
                    ChangeSource::File => "file",
                };
                let short = snapshot.revision.get(..12).unwrap_or(&snapshot.revision);
                stats.events().push(
                    "config.reload.applied",
                    &format!("source={source} revision={short}"),
                );
                log.set_level(cfg.general.log_level);
                if source == "file" {
                    // Users removed by a hand edit: drop their counters/IP state and sessions
                    // (API deletes do this themselves).
                    let gone: Vec<String> = stats
                        .users()
                        .snapshot_all()
                        .into_iter()
                        .map(|(u, _)| u)
                        .filter(|u| !cfg.access.users.contains_key(u))
                        .collect();
                    for u in gone {
                        use api::runtime::Runtime as _;
                        rt.close_user_sessions(&u);
                        stats.forget_user(&u);
                    }
                }
                let api = &cfg.server.api;
                if (api.enabled, api.listen) != api_bind {
                    tracing::warn!(
                        "server.api.enabled/listen changed; the API listener changes on restart"
                    );
                }
            }
            ConfigEvent::ReloadFailed { error } => {
                stats
                    .events()
                    .push("config.reload.failed", &format!("error={error}"));
                // The store itself logs the failure with the file name.
            }
        }
    }));
}

/// Binds the API listener per `[server.api]`; `None` (with the reason logged) when disabled,
/// port 0, or the bind fails (API.md Operational Notes: warn, no retry).
async fn bind_api(enabled: bool, listen: SocketAddr) -> Result<tokio::net::TcpListener, String> {
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

/// `mtproxyd run --config PATH`.
pub async fn run(path: PathBuf, log: LogControl) -> anyhow::Result<()> {
    let started_at = SystemTime::now();
    // Install handlers first: SIGHUP's default action would kill a process still starting.
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    let created = ensure_default_config(&path)?;
    if created {
        tracing::info!(path = %path.display(), user = DEFAULT_USER, "created default config");
    }

    let startup = Arc::new(StartupTracker::new(started_at, TransportMode::Direct));
    startup.register("config", "Load configuration", false);
    startup.register("stats_state", "Restore per-user counters", false);
    startup.register("api", "Control-plane API listener", false);
    startup.register("listeners", "Client listeners", false);
    startup.register("me_pool", "Middle-proxy pool", true);

    startup.begin("config", SystemTime::now());
    let store = ConfigStore::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for w in store.warnings() {
        tracing::warn!("config: {w}");
    }
    let snap = store.current();
    log.set_level(snap.config.general.log_level);
    startup.finish(
        "config",
        ComponentStatus::Ready,
        Some(format!("{} users", snap.config.access.users.len())),
        SystemTime::now(),
    );

    let stats = Stats::with_event_capacity(
        started_at,
        snap.config.server.api.runtime_edge_events_capacity,
    );
    let state_path = stats::state_path_for(&snap.path);
    startup.begin("stats_state", SystemTime::now());
    match stats.users().load_state(&state_path) {
        Ok(n) => {
            let cfg = &snap.config;
            stats.users().retain(|u| cfg.access.users.contains_key(u));
            startup.finish(
                "stats_state",
                ComponentStatus::Ready,
                Some(format!("{n} users restored")),
                SystemTime::now(),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "per-user counters not restored; starting from zero");
            startup.finish(
                "stats_state",
                ComponentStatus::Failed,
                Some(e.to_string()),
                SystemTime::now(),
            );
        }
    }
    let saver = Arc::new(StateSaver {
        path: state_path,
        stats: Arc::clone(&stats),
        lock: Mutex::new(()),
    });

    // Client listeners (data plane). A bind failure is logged and reported (listeners
    // component failed, degraded) but the process keeps running so the API stays reachable
    // to inspect and fix the config.
    startup.begin("listeners", SystemTime::now());
    let dataplane = match dataplane::Dataplane::start(
        Arc::clone(&store),
        Arc::clone(&stats),
        dataplane::DataplaneOptions::default(),
    ) {
        Ok(handle) => {
            let addrs: Vec<String> = handle.local_addrs().iter().map(|a| a.to_string()).collect();
            startup.finish(
                "listeners",
                ComponentStatus::Ready,
                Some(addrs.join(", ")),
                SystemTime::now(),
            );
            Some(Arc::new(handle))
        }
        Err(e) => {
            tracing::error!(error = %e, "client listeners not started; serving the API only");
            startup.finish(
                "listeners",
                ComponentStatus::Failed,
                Some(e.to_string()),
                SystemTime::now(),
            );
            startup.set_degraded(true);
            stats.events().push(
                "admission.state",
                "accepting=false reason=listener_bind_failed",
            );
            None
        }
    };

    let detected = netinfo::local_interface_addrs();
    let runtime = Arc::new(RuntimeHandle::new(
        Arc::clone(&store),
        Arc::clone(&stats),
        Arc::clone(&startup),
        detected,
        dataplane.clone(),
    ));
    let api_cfg = snap.config.server.api.clone();
    install_store_listener(
        &store,
        Arc::downgrade(&runtime),
        log.clone(),
        (api_cfg.enabled, api_cfg.listen),
    );
    let watcher = store.spawn_watcher();

    // API listener.
    startup.begin("api", SystemTime::now());
    let (stop_tx, stop_rx) = watch::channel(false);
    let api_task = match bind_api(api_cfg.enabled, api_cfg.listen).await {
        Ok(listener) => {
            let addr = listener.local_addr().unwrap_or(api_cfg.listen);
            tracing::info!(%addr, "control-plane API listening");
            startup.finish(
                "api",
                ComponentStatus::Ready,
                Some(addr.to_string()),
                SystemTime::now(),
            );
            let state = api::ApiState::new(Arc::clone(&store), runtime.clone());
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                if let Err(e) = api::serve(listener, state, shutdown).await {
                    tracing::error!(error = %e, "control-plane API stopped");
                }
            }))
        }
        Err(reason) => {
            let status = if api_cfg.enabled && api_cfg.listen.port() != 0 {
                tracing::warn!("control-plane API not started: {reason}");
                ComponentStatus::Failed
            } else {
                tracing::info!("control-plane API not started: {reason}");
                ComponentStatus::Skipped
            };
            startup.finish("api", status, Some(reason), SystemTime::now());
            None
        }
    };

    // Not built yet: be explicit about it in /v1/runtime/initialization.
    startup.finish(
        "me_pool",
        ComponentStatus::Skipped,
        Some("middle-proxy route not implemented; direct mode".to_owned()),
        SystemTime::now(),
    );
    if snap.config.general.use_middle_proxy {
        tracing::warn!("general.use_middle_proxy = true, but the middle-proxy route is not implemented in this build");
        startup.set_me_status(StartupStatus::Failed);
        startup.set_me_error(Some(
            "middle-proxy route not implemented in this build".to_owned(),
        ));
        startup.set_degraded(true);
    }
    startup.set_stage("ready");
    startup.set_status(StartupStatus::Ready, SystemTime::now());
    stats
        .events()
        .push("admission.state", "accepting=false reason=no_data_plane");

    if created {
        for (mode, link) in commands::user_links(
            &snap.config,
            detected,
            &snap
                .config
                .access
                .users
                .get(DEFAULT_USER)
                .map(|s| s.to_hex())
                .unwrap_or_default(),
        ) {
            tracing::info!(user = DEFAULT_USER, mode = %mode, "link: {link}");
        }
    }

    // Periodic housekeeping: flush counters, prune stale unique-IP entries.
    let housekeeping = {
        let saver = Arc::clone(&saver);
        let store = Arc::clone(&store);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATE_FLUSH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let access = &store.current().config.access;
                let window = Duration::from_secs(access.user_max_unique_ips_window_secs);
                stats.ips().prune(window, Instant::now());
                let saver = Arc::clone(&saver);
                let _ = tokio::task::spawn_blocking(move || saver.save()).await;
            }
        })
    };

    let reason = loop {
        tokio::select! {
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: re-reading the config file");
                let store = Arc::clone(&store);
                match tokio::task::spawn_blocking(move || store.reload_from_disk()).await {
                    Ok(Ok(true)) => tracing::info!("SIGHUP: new config applied"),
                    Ok(Ok(false)) => tracing::info!("SIGHUP: config unchanged"),
                    Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: reload failed; keeping the running config"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
                }
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };

    tracing::info!("{reason}: shutting down");
    let _ = stop_tx.send(true);
    let stop_clients = async {
        if let Some(d) = &dataplane {
            d.shutdown(CLIENT_SHUTDOWN_GRACE).await;
            stats
                .events()
                .push("admission.state", "accepting=false reason=shutdown");
        }
    };
    let stop_api = async {
        if let Some(task) = api_task {
            // serve() already bounds in-flight connections by its own grace period.
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    };
    tokio::join!(stop_clients, stop_api);
    housekeeping.abort();
    drop(watcher);
    let saver2 = Arc::clone(&saver);
    let _ = tokio::task::spawn_blocking(move || saver2.save()).await;
    tracing::info!("stopped");
    Ok(())
}
