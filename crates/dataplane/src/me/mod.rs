//! The middle-proxy (ME) route (docs/PROTOCOL.md §7, docs/ME-MODEL.md): long-lived encrypted
//! RPC links to Telegram's middle proxies, each carrying many client sessions.
//!
//! Owns: the writers (one link each), the pool that keeps enough of them per DC and picks one
//! for a new client, the route decision with its fallback to direct, and the route's inputs
//! (`inputs`: proxy secret and proxy configs downloaded, cached, refreshed). Must not: parse
//! client framing or touch client sockets (the ME relay in `relay::me` does).

pub(crate) mod inputs;
pub(crate) mod pool;
pub(crate) mod writer;

pub use pool::{DcRow, Floor, PoolSnapshot, RefillRow, Timeskew, WriterRow};
pub(crate) use pool::{MePool, PoolInputs, Route};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use config::ConfigStore;
use stats::startup::{ComponentStatus, StartupStatus, StartupTracker, TransportMode};
use tokio_util::sync::CancellationToken;

/// Retry period while the inputs cannot be loaded at all.
const INPUTS_RETRY: Duration = Duration::from_secs(5);

/// The pool's view of the proxy configs: IPv4 endpoints when `network.ipv4`, IPv6 ones when
/// `network.ipv6` is on (auto-detect counts as off: a v6 link that cannot route only costs
/// failed connects), the preferred family first within each DC.
pub(crate) fn pool_inputs(
    secret: Arc<[u8]>,
    v4: &proto::me::ProxyConfigFile,
    v6: Option<&proto::me::ProxyConfigFile>,
    net: &config::Network,
) -> PoolInputs {
    let mut endpoints: std::collections::BTreeMap<i16, Vec<std::net::SocketAddr>> =
        Default::default();
    let mut files: Vec<&proto::me::ProxyConfigFile> = Vec::new();
    let use_v6 = net.ipv6 == Some(true);
    match (net.prefer == 6, use_v6, v6) {
        (true, true, Some(f6)) => {
            files.push(f6);
            if net.ipv4 {
                files.push(v4);
            }
        }
        (_, true, Some(f6)) => {
            if net.ipv4 {
                files.push(v4);
            }
            files.push(f6);
        }
        _ => files.push(v4),
    }
    for file in &files {
        for (dc, addr) in &file.proxy_for {
            let list = endpoints.entry(*dc).or_default();
            if !list.contains(addr) {
                list.push(*addr);
            }
        }
    }
    PoolInputs {
        secret,
        endpoints,
        default_dc: v4.default_dc.unwrap_or(2),
    }
}

/// Brings the pool up in the background and reports it to `startup`: listeners never wait
/// for it (new sessions take the fallback rules meanwhile). The inputs are loaded and refreshed
/// with the settings of the config current at each attempt or round.
pub(crate) async fn supervise(
    pool: MePool,
    store: Arc<ConfigStore>,
    startup: Arc<StartupTracker>,
    cancel: CancellationToken,
) {
    let snap = store.current();
    let cfg = Arc::clone(&snap.config);
    pool.set_config_path(&snap.path);
    startup.begin("me_pool", SystemTime::now());
    startup.set_me_status(StartupStatus::Initializing);
    startup.set_me_stage("inputs");
    let limit = cfg.general.me_init_retry_attempts;
    startup.set_me_retry_limit((limit > 0).then_some(limit));
    let settings: inputs::SettingsSource = Box::new(move || {
        let snap = store.current();
        inputs::InputsSettings::from_config(&snap.config, &snap.path)
    });
    let skew = pool.skew_log();
    let mut attempts = 0u32;
    let first = loop {
        startup.begin_me_attempt();
        attempts += 1;
        match inputs::load_initial(&settings(), &skew).await {
            Ok(inputs) => {
                startup.set_me_error(None);
                break Arc::new(inputs);
            }
            Err(e) => {
                let e = e.to_string();
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
    };
    pool.set_inputs(pool_inputs(
        Arc::clone(&first.secret),
        &first.v4,
        first.v6.as_ref(),
        &cfg.network,
    ));
    // Later downloads replace the inputs; the pool opens a new generation for a change.
    let (tx, mut rx) = tokio::sync::watch::channel(Some(first));
    let refresh = inputs::spawn_refresh(settings, skew, tx, cancel.child_token());
    let follow = {
        let pool = pool.clone();
        let cancel = cancel.clone();
        let net = cfg.network.clone();
        async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                }
                let next = rx.borrow_and_update().clone();
                if let Some(i) = next {
                    pool.set_inputs(pool_inputs(
                        Arc::clone(&i.secret),
                        &i.v4,
                        i.v6.as_ref(),
                        &net,
                    ));
                }
            }
        }
    };
    tokio::spawn(follow);
    drop(refresh);
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
