//! The middle-proxy (ME) route (docs/PROTOCOL.md §7, docs/ME-MODEL.md): long-lived encrypted
//! RPC links to Telegram's middle proxies, each carrying many client sessions.
//!
//! Owns: the writers (one link each), the pool that keeps enough of them per DC and picks one
//! for a new client, the route decision with its fallback to direct, and the route's inputs
//! (`inputs`: proxy secret and proxy configs downloaded, cached, refreshed). Must not: parse
//! client framing or touch client sockets (the ME relay in `relay::me` does).

// Not started by the pool yet (it reads the caches through `inputs_from_cache`).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod inputs;
pub(crate) mod pool;
pub(crate) mod writer;

pub use pool::{DcRow, Floor, PoolSnapshot, WriterRow};
pub(crate) use pool::{MePool, PoolInputs, Route};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use config::Config;
use stats::startup::{ComponentStatus, StartupStatus, StartupTracker, TransportMode};
use tokio_util::sync::CancellationToken;

/// Retry period while the inputs cannot be loaded at all.
const INPUTS_RETRY: Duration = Duration::from_secs(5);

/// A path from the config, relative to the config file's directory.
pub(crate) fn resolve(config_path: &Path, configured: &str) -> PathBuf {
    crate::tls_front::front_dir(config_path, configured)
}

/// Reads the proxy secret and the IPv4 proxy config from their cache files.
pub(crate) fn inputs_from_cache(cfg: &Config, config_path: &Path) -> Result<PoolInputs, String> {
    let g = &cfg.general;
    let secret_key = "general.proxy_secret_path";
    let secret_path = resolve(
        config_path,
        g.proxy_secret_path.as_deref().unwrap_or("proxy-secret"),
    );
    let secret = std::fs::read(&secret_path)
        .map_err(|e| format!("{} ({secret_key}): {e}", secret_path.display()))?;
    if !proto::me::handshake::SECRET_LEN.contains(&secret.len()) {
        return Err(format!(
            "{} ({secret_key}): proxy secret of {} bytes (32..=256 expected)",
            secret_path.display(),
            secret.len()
        ));
    }
    let v4_key = "general.proxy_config_v4_cache_path";
    let v4_path = resolve(
        config_path,
        g.proxy_config_v4_cache_path
            .as_deref()
            .unwrap_or("cache/proxy-config-v4.txt"),
    );
    let text = std::fs::read_to_string(&v4_path)
        .map_err(|e| format!("{} ({v4_key}): {e}", v4_path.display()))?;
    let file = proto::me::parse_proxy_config(&text)
        .map_err(|e| format!("{} ({v4_key}): {e}", v4_path.display()))?;
    Ok(pool_inputs(secret.into(), &file))
}

/// The pool's view of a parsed proxy config.
pub(crate) fn pool_inputs(secret: Arc<[u8]>, file: &proto::me::ProxyConfigFile) -> PoolInputs {
    let mut endpoints: std::collections::BTreeMap<i16, Vec<std::net::SocketAddr>> =
        Default::default();
    for (dc, addr) in &file.proxy_for {
        let list = endpoints.entry(*dc).or_default();
        if !list.contains(addr) {
            list.push(*addr);
        }
    }
    PoolInputs {
        secret,
        endpoints,
        default_dc: file.default_dc.unwrap_or(2),
    }
}

/// Brings the pool up in the background and reports it to `startup`: listeners never wait
/// for it (new sessions take the fallback rules meanwhile).
pub(crate) async fn supervise(
    pool: MePool,
    cfg: Arc<Config>,
    config_path: PathBuf,
    startup: Arc<StartupTracker>,
    cancel: CancellationToken,
) {
    startup.begin("me_pool", SystemTime::now());
    startup.set_me_status(StartupStatus::Initializing);
    startup.set_me_stage("inputs");
    let limit = cfg.general.me_init_retry_attempts;
    startup.set_me_retry_limit((limit > 0).then_some(limit));
    let mut attempts = 0u32;
    loop {
        startup.begin_me_attempt();
        attempts += 1;
        match inputs_from_cache(&cfg, &config_path) {
            Ok(inputs) => {
                startup.set_me_error(None);
                pool.set_inputs(inputs);
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "middle-proxy inputs unavailable");
                startup.set_me_error(Some(e.clone()));
                if limit > 0 && attempts >= limit {
                    startup.finish(
                        "me_pool",
                        ComponentStatus::Failed,
                        Some(e),
                        SystemTime::now(),
                    );
                    startup.set_me_status(StartupStatus::Failed);
                    startup.set_degraded(true);
                    return;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(INPUTS_RETRY) => {}
        }
    }
    startup.set_me_stage("background_init");
    let mut ready = pool.ready_watch();
    tokio::select! {
        _ = cancel.cancelled() => return,
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
    }
    startup.set_me_stage("ready");
    startup.set_me_status(StartupStatus::Ready);
    startup.set_transport_mode(TransportMode::MiddleProxy);
    startup.finish(
        "me_pool",
        ComponentStatus::Ready,
        Some("every DC has a middle-proxy writer".into()),
        SystemTime::now(),
    );
}
