//! Validation rules (messages name the key) and telemt's load-time normalisations.

use std::net::IpAddr;

use crate::load::ConfigError;
use crate::model::{Config, Listener, ShowLink, UpstreamConfig, UpstreamKind};
use crate::types::{AdTag, UserSecret};

/// Facts about the raw TOML that serde defaults hide (was a key written explicitly?).
#[derive(Debug, Default)]
pub(crate) struct RawFacts {
    update_every_explicit: bool,
    legacy_reload_explicit: bool,
    stun_servers_explicit: bool,
}

fn sub<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Table> {
    t.get(key).and_then(toml::Value::as_table)
}

impl RawFacts {
    pub(crate) fn from_table(t: &toml::Table) -> Self {
        let general = sub(t, "general");
        let has = |tbl: Option<&toml::Table>, k: &str| tbl.is_some_and(|x| x.contains_key(k));
        RawFacts {
            update_every_explicit: has(general, "update_every"),
            legacy_reload_explicit: has(general, "proxy_secret_auto_reload_secs")
                || has(general, "proxy_config_auto_reload_secs"),
            stun_servers_explicit: has(sub(t, "network"), "stun_servers"),
        }
    }
}

/// Rejects a user entry whose secret is not 32 hex characters. telemt drops such a user with a
/// warning; we refuse the whole config instead (docs/DECISIONS.md #28): a typo in one secret
/// must not silently remove a user and cut their clients on a hand edit.
pub(crate) fn user_secrets(t: &toml::Table) -> Result<(), ConfigError> {
    let users = sub(t, "access").and_then(|a| sub(a, "users"));
    for (user, v) in users.into_iter().flatten() {
        let ok = v.as_str().is_some_and(|s| s.parse::<UserSecret>().is_ok());
        ensure(ok, || {
            format!("access.users.{user}: secret must be exactly 32 hex characters")
        })?;
    }
    Ok(())
}

/// Warnings for values telemt drops instead of rejecting (the serde helpers skip them).
pub(crate) fn lenient_warnings(t: &toml::Table, warnings: &mut Vec<String>) {
    if let Some(v) = sub(t, "general").and_then(|g| g.get("ad_tag")) {
        if v.as_str().and_then(|s| s.parse::<AdTag>().ok()).is_none() {
            warnings.push(
                "general.ad_tag must be exactly 32 hex characters; ad_tag is disabled".to_string(),
            );
        }
    }
    let access = sub(t, "access");
    if let Some(tags) = access.and_then(|a| sub(a, "user_ad_tags")) {
        for (user, v) in tags {
            if v.as_str().and_then(|s| s.parse::<AdTag>().ok()).is_none() {
                warnings.push(format!(
                    "access.user_ad_tags.{user} must be exactly 32 hex characters; tag ignored"
                ));
            }
        }
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if cond {
        Ok(())
    } else {
        Err(invalid(msg()))
    }
}

fn nonzero(v: u64, key: &str) -> Result<(), ConfigError> {
    ensure(v > 0, || format!("{key} must be > 0"))
}

fn within(v: u64, lo: u64, hi: u64, key: &str) -> Result<(), ConfigError> {
    ensure((lo..=hi).contains(&v), || {
        format!("{key} must be within [{lo}, {hi}], got {v}")
    })
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    let v = v.trim();
    if !v.is_empty() && !list.iter().any(|x| x == v) {
        list.push(v.to_string());
    }
}

/// Applies telemt's normalisations and checks every rule. On success `cfg` is the value the
/// store publishes.
pub(crate) fn finish(
    cfg: &mut Config,
    facts: &RawFacts,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    normalise(cfg, facts, warnings);
    check_general(cfg)?;
    check_server(cfg)?;
    check_timeouts_and_censorship(cfg)?;
    check_network(cfg, warnings)?;
    check_access(cfg)?;
    check_upstreams(cfg)?;
    if let Some(dc) = cfg.default_dc {
        within(dc.into(), 1, 5, "default_dc")?;
    }
    inert_values(cfg, warnings);
    Ok(())
}

/// Warnings for valid values that do not do what a telemt user may expect (docs/DECISIONS.md
/// #41); the values stay as written.
fn inert_values(cfg: &Config, warnings: &mut Vec<String>) {
    let g = &cfg.general;
    let cap = crate::model::ME_HANDSHAKE_SECRET_LEN_MAX;
    if g.proxy_secret_len_max > cap {
        warnings.push(format!(
            "general.proxy_secret_len_max = {} is above {cap} bytes, the longest proxy secret \
             the middle-proxy handshake takes: secrets longer than {cap} bytes are rejected",
            g.proxy_secret_len_max
        ));
    }
    if !g.me_snapshot_reject_empty_map {
        warnings.push(
            "general.me_snapshot_reject_empty_map = false has no effect: \
             general.me_snapshot_min_proxy_for_lines (at least 1) already rejects a proxy \
             config without proxy_for rows"
                .into(),
        );
    }
    if !g.me_secret_atomic_snapshot {
        warnings.push(
            "general.me_secret_atomic_snapshot = false has no effect: the proxy secret and the \
             middle-proxy endpoint map are always replaced together"
                .into(),
        );
    }
}

fn normalise(cfg: &mut Config, facts: &RawFacts, warnings: &mut Vec<String>) {
    let g = &mut cfg.general;
    if !facts.update_every_explicit && facts.legacy_reload_explicit {
        g.update_every = None;
    }
    // Legacy NAT STUN keys feed the unified list unless network.stun_servers is explicit.
    let legacy_one = g.middle_proxy_nat_stun.take();
    let legacy_many = std::mem::take(&mut g.middle_proxy_nat_stun_servers);
    let legacy_used = legacy_one.is_some() || !legacy_many.is_empty();
    let mut stun = Vec::new();
    if facts.stun_servers_explicit {
        for s in &cfg.network.stun_servers {
            push_unique(&mut stun, s);
        }
        if legacy_used {
            warnings
                .push("general.middle_proxy_nat_stun* ignored: network.stun_servers is set".into());
        }
    } else {
        stun = crate::model::default_stun_servers();
        for s in legacy_one.iter().chain(legacy_many.iter()) {
            push_unique(&mut stun, s);
        }
        if legacy_used {
            warnings.push(
                "general.middle_proxy_nat_stun* are deprecated; use network.stun_servers".into(),
            );
        }
    }
    cfg.network.stun_servers = stun;

    if g.prefer_ipv6 {
        if cfg.network.prefer == 4 {
            cfg.network.prefer = 6;
        }
        warnings.push("general.prefer_ipv6 is deprecated; use network.prefer = 6".into());
    }
    let force_close = g.effective_me_pool_force_close_secs();
    if force_close < g.me_pool_drain_ttl_secs {
        warnings.push(format!(
            "general.me_reinit_drain_timeout_secs ({force_close}) is below general.me_pool_drain_ttl_secs; raised to {}",
            g.me_pool_drain_ttl_secs
        ));
        g.me_reinit_drain_timeout_secs = g.me_pool_drain_ttl_secs;
    }

    let c = &mut cfg.censorship;
    if c.tls_new_session_tickets > 0 {
        // Accepted for telemt configs, never sent (docs/DECISIONS.md #45).
        warnings.push(format!(
            "censorship.tls_new_session_tickets = {} has no effect: Telegram clients read every \
             application-data record after the ServerHello flight as MTProto stream bytes, so \
             a fake NewSessionTicket record would corrupt the session; none is sent",
            c.tls_new_session_tickets
        ));
    }
    if c.mask_host.is_none() && c.mask_unix_sock.is_none() {
        c.mask_host = Some(c.tls_domain.clone());
    }
    c.tls_fetch_scope = c.tls_fetch_scope.trim().to_string();
    let mut extra = Vec::new();
    for d in std::mem::take(&mut c.tls_domains) {
        if !d.is_empty() && d != c.tls_domain && !extra.contains(&d) {
            extra.push(d);
        }
    }
    c.tls_domains = extra;

    let s = &mut cfg.server;
    let listen_tcp = s.listen_tcp.unwrap_or(
        s.listen_unix_sock.is_none() || s.listen_addr_ipv4.is_some() || !s.listeners.is_empty(),
    );
    if s.listeners.is_empty() && listen_tcp {
        let v4 = s.listen_addr_ipv4.as_deref().unwrap_or("0.0.0.0");
        if let Ok(ip) = v4.trim().parse::<IpAddr>() {
            s.listeners.push(Listener::on(ip));
        }
        if let Some(Ok(ip)) = s
            .listen_addr_ipv6
            .as_deref()
            .map(|v| v.trim().parse::<IpAddr>())
        {
            s.listeners.push(Listener::on(ip));
        }
    }
    for l in &mut s.listeners {
        if l.announce.is_none() {
            if let Some(ip) = l.announce_ip {
                l.announce = Some(ip.to_string());
            }
        }
    }
    if let Some(show) = cfg.show_link.take() {
        if show != ShowLink::None && cfg.general.links.show == ShowLink::None {
            cfg.general.links.show = show;
        }
    }
    if cfg.upstreams.is_empty() {
        cfg.upstreams.push(UpstreamConfig::direct());
    }
    cfg.dc_overrides
        .entry("203".to_string())
        .or_insert_with(|| vec!["91.105.192.100:443".to_string()]);
}

fn check_general(cfg: &Config) -> Result<(), ConfigError> {
    let g = &cfg.general;
    ensure(g.modes.classic || g.modes.secure || g.modes.tls, || {
        "general.modes: at least one of classic, secure, tls must be enabled".into()
    })?;
    for (key, v) in [
        ("general.proxy_secret_path", &g.proxy_secret_path),
        (
            "general.proxy_config_v4_cache_path",
            &g.proxy_config_v4_cache_path,
        ),
        (
            "general.proxy_config_v6_cache_path",
            &g.proxy_config_v6_cache_path,
        ),
    ] {
        ensure(v.as_ref().is_none_or(|p| !p.trim().is_empty()), || {
            format!("{key} cannot be empty when provided")
        })?;
    }
    for (key, v) in [
        ("general.proxy_secret_url", &g.proxy_secret_url),
        ("general.proxy_config_v4_url", &g.proxy_config_v4_url),
        ("general.proxy_config_v6_url", &g.proxy_config_v6_url),
    ] {
        if let Some(url) = v {
            if let Some(why) = fetch_url_problem(url) {
                return Err(invalid(format!(
                    "{key} must be an http:// or https:// URL: {why}"
                )));
            }
        }
    }
    match g.update_every {
        Some(v) => nonzero(v, "general.update_every")?,
        None => ensure(g.effective_update_every_secs() > 0, || {
            "general.proxy_*_auto_reload_secs must be > 0 when general.update_every is not set"
                .into()
        })?,
    }
    nonzero(
        g.stun_nat_probe_concurrency as u64,
        "general.stun_nat_probe_concurrency",
    )?;
    within(
        g.me_init_retry_attempts.into(),
        0,
        1_000_000,
        "general.me_init_retry_attempts",
    )?;
    nonzero(
        g.upstream_connect_retry_attempts.into(),
        "general.upstream_connect_retry_attempts",
    )?;
    nonzero(
        g.upstream_connect_budget_ms,
        "general.upstream_connect_budget_ms",
    )?;
    nonzero(
        g.upstream_unhealthy_fail_threshold.into(),
        "general.upstream_unhealthy_fail_threshold",
    )?;
    ensure(
        g.rpc_proxy_req_every == 0 || (10..=300).contains(&g.rpc_proxy_req_every),
        || {
            format!(
                "general.rpc_proxy_req_every must be 0 or within [10, 300], got {}",
                g.rpc_proxy_req_every
            )
        },
    )?;
    nonzero(g.me_reinit_every_secs, "general.me_reinit_every_secs")?;
    within(
        g.me_single_endpoint_shadow_writers.into(),
        0,
        32,
        "general.me_single_endpoint_shadow_writers",
    )?;
    within(
        g.me_adaptive_floor_min_writers_single_endpoint.into(),
        1,
        32,
        "general.me_adaptive_floor_min_writers_single_endpoint",
    )?;
    within(
        g.me_adaptive_floor_min_writers_multi_endpoint.into(),
        1,
        32,
        "general.me_adaptive_floor_min_writers_multi_endpoint",
    )?;
    for (key, v) in [
        (
            "general.me_adaptive_floor_writers_per_core_total",
            u64::from(g.me_adaptive_floor_writers_per_core_total),
        ),
        (
            "general.me_adaptive_floor_max_active_writers_per_core",
            g.me_adaptive_floor_max_active_writers_per_core.into(),
        ),
        (
            "general.me_adaptive_floor_max_warm_writers_per_core",
            g.me_adaptive_floor_max_warm_writers_per_core.into(),
        ),
        (
            "general.me_adaptive_floor_max_active_writers_global",
            g.me_adaptive_floor_max_active_writers_global.into(),
        ),
        (
            "general.me_adaptive_floor_max_warm_writers_global",
            g.me_adaptive_floor_max_warm_writers_global.into(),
        ),
        (
            "general.me_single_endpoint_outage_backoff_min_ms",
            g.me_single_endpoint_outage_backoff_min_ms,
        ),
        (
            "general.me_single_endpoint_outage_backoff_max_ms",
            g.me_single_endpoint_outage_backoff_max_ms,
        ),
        ("general.beobachten_minutes", g.beobachten_minutes),
        ("general.beobachten_flush_secs", g.beobachten_flush_secs),
        (
            "general.me_keepalive_interval_secs",
            g.me_keepalive_interval_secs,
        ),
        (
            "general.me_reconnect_backoff_base_ms",
            g.me_reconnect_backoff_base_ms,
        ),
        (
            "general.me_config_stable_snapshots",
            g.me_config_stable_snapshots.into(),
        ),
        (
            "general.proxy_secret_stable_snapshots",
            g.proxy_secret_stable_snapshots.into(),
        ),
        (
            "general.me_snapshot_min_proxy_for_lines",
            g.me_snapshot_min_proxy_for_lines.into(),
        ),
        (
            "general.me_hardswap_warmup_delay_max_ms",
            g.me_hardswap_warmup_delay_max_ms,
        ),
        (
            "general.me_hardswap_warmup_pass_backoff_base_ms",
            g.me_hardswap_warmup_pass_backoff_base_ms,
        ),
    ] {
        nonzero(v, key)?;
    }
    within(
        g.proxy_secret_len_max as u64,
        32,
        4096,
        "general.proxy_secret_len_max",
    )?;
    for ((lo_key, lo), (hi_key, hi)) in [
        (
            (
                "me_single_endpoint_outage_backoff_min_ms",
                g.me_single_endpoint_outage_backoff_min_ms,
            ),
            (
                "me_single_endpoint_outage_backoff_max_ms",
                g.me_single_endpoint_outage_backoff_max_ms,
            ),
        ),
        (
            (
                "me_reconnect_backoff_base_ms",
                g.me_reconnect_backoff_base_ms,
            ),
            ("me_reconnect_backoff_cap_ms", g.me_reconnect_backoff_cap_ms),
        ),
        (
            (
                "me_hardswap_warmup_delay_min_ms",
                g.me_hardswap_warmup_delay_min_ms,
            ),
            (
                "me_hardswap_warmup_delay_max_ms",
                g.me_hardswap_warmup_delay_max_ms,
            ),
        ),
    ] {
        ensure(lo <= hi, || {
            format!("general.{lo_key} must be <= general.{hi_key}")
        })?;
    }
    ensure(!g.beobachten_file.trim().is_empty(), || {
        "general.beobachten_file cannot be empty".into()
    })?;
    ensure((0.0..=1.0).contains(&g.me_pool_min_fresh_ratio), || {
        format!(
            "general.me_pool_min_fresh_ratio must be within [0.0, 1.0], got {}",
            g.me_pool_min_fresh_ratio
        )
    })?;
    within(
        g.me_route_no_writer_wait_ms,
        10,
        5000,
        "general.me_route_no_writer_wait_ms",
    )?;
    within(
        g.me_route_hybrid_max_wait_ms,
        50,
        60_000,
        "general.me_route_hybrid_max_wait_ms",
    )?;
    // Queue capacities: above ~10^6 entries a queue is no bound at all (and the channel
    // type refuses capacities near usize::MAX).
    for (key, v) in [
        (
            "general.me_route_channel_capacity",
            g.me_route_channel_capacity,
        ),
        (
            "general.me_writer_cmd_channel_capacity",
            g.me_writer_cmd_channel_capacity,
        ),
    ] {
        within(v as u64, 1, 1 << 20, key)?;
    }
    within(
        g.me_hardswap_warmup_extra_passes.into(),
        0,
        10,
        "general.me_hardswap_warmup_extra_passes",
    )?;
    within(
        g.me_route_blocking_send_timeout_ms,
        0,
        5000,
        "general.me_route_blocking_send_timeout_ms",
    )?;
    within(
        g.me_c2me_send_timeout_ms,
        0,
        60_000,
        "general.me_c2me_send_timeout_ms",
    )?;
    within(
        g.me_d2c_flush_batch_max_bytes as u64,
        4096,
        2 * 1024 * 1024,
        "general.me_d2c_flush_batch_max_bytes",
    )?;
    within(
        g.me_d2c_flush_batch_max_frames as u64,
        1,
        512,
        "general.me_d2c_flush_batch_max_frames",
    )?;
    within(
        g.me_writer_pick_sample_size.into(),
        2,
        4,
        "general.me_writer_pick_sample_size",
    )?;
    if let Some(h) = g.links.public_host.as_deref().map(str::trim) {
        if let Some(why) = link_host_problem(h) {
            return Err(invalid(format!(
                "general.links.public_host must be a host name or IP, got {h:?}: {why}"
            )));
        }
    }
    nonzero(g.quota_state_flush_secs, "general.quota_state_flush_secs")?;
    if let Some(p) = g.links.public_port {
        nonzero(p.into(), "general.links.public_port")?;
    }
    Ok(())
}

/// Why `url` cannot be fetched by the ME input updater, or `None` when it looks usable. The
/// value is not echoed: a URL may carry credentials (`user:pass@`).
fn fetch_url_problem(url: &str) -> Option<&'static str> {
    let lower = url.to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"]
        .iter()
        .find_map(|s| lower.strip_prefix(s))
    else {
        return Some("the scheme must be http or https");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains spaces or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Some("the host is missing");
    }
    None
}

/// Why `h` cannot be the host of a tg:// link (`server=` takes a bare host; the port is a
/// separate parameter), or `None` when it can. Empty means "not set".
fn link_host_problem(h: &str) -> Option<&'static str> {
    if h.is_empty() {
        return None;
    }
    let bare = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if bare.contains('%') {
        return Some("a zoned IPv6 address (fe80::1%eth0) is only meaningful on this machine");
    }
    if bare.parse::<IpAddr>().is_ok() {
        return None;
    }
    if h.starts_with('[') || h.contains("]:") {
        return Some("not an IPv6 literal, or a port is attached (set general.links.public_port)");
    }
    if h.contains(':') {
        return Some("a port cannot be part of the host (set general.links.public_port)");
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Some("host names are letters, digits, '-' and '.' (at most 253 characters)");
    }
    None
}

fn check_server(cfg: &Config) -> Result<(), ConfigError> {
    let s = &cfg.server;
    let a = &s.api;
    nonzero(
        a.request_body_limit_bytes as u64,
        "server.api.request_body_limit_bytes",
    )?;
    within(
        a.minimal_runtime_cache_ttl_ms,
        0,
        60_000,
        "server.api.minimal_runtime_cache_ttl_ms",
    )?;
    within(
        a.runtime_edge_cache_ttl_ms,
        0,
        60_000,
        "server.api.runtime_edge_cache_ttl_ms",
    )?;
    within(
        a.runtime_edge_top_n as u64,
        1,
        1000,
        "server.api.runtime_edge_top_n",
    )?;
    within(
        a.runtime_edge_events_capacity as u64,
        16,
        4096,
        "server.api.runtime_edge_events_capacity",
    )?;
    ensure(!a.auth_header.contains(['\r', '\n']), || {
        "server.api.auth_header must not contain line breaks".into()
    })?;
    nonzero(
        s.proxy_protocol_header_timeout_ms,
        "server.proxy_protocol_header_timeout_ms",
    )?;
    within(
        s.accept_permit_timeout_ms,
        0,
        60_000,
        "server.accept_permit_timeout_ms",
    )?;
    for (key, v) in [
        ("server.listen_addr_ipv4", &s.listen_addr_ipv4),
        ("server.listen_addr_ipv6", &s.listen_addr_ipv6),
    ] {
        if let Some(v) = v {
            ensure(v.trim().parse::<IpAddr>().is_ok(), || {
                format!("{key} must be an IP address, got {v:?}")
            })?;
        }
    }
    for (i, l) in s.listeners.iter().enumerate() {
        if let Some(a) = &l.announce {
            ensure(!a.trim().is_empty() && !a.contains(['/', ' ']), || {
                format!("server.listeners[{i}].announce must be a host name or IP, got {a:?}")
            })?;
        }
    }
    Ok(())
}

fn check_timeouts_and_censorship(cfg: &Config) -> Result<(), ConfigError> {
    let t = &cfg.timeouts;
    nonzero(t.client_handshake, "timeouts.client_handshake")?;
    nonzero(
        t.relay_client_idle_soft_secs,
        "timeouts.relay_client_idle_soft_secs",
    )?;
    nonzero(
        t.relay_client_idle_hard_secs,
        "timeouts.relay_client_idle_hard_secs",
    )?;
    ensure(
        t.relay_client_idle_hard_secs >= t.relay_client_idle_soft_secs,
        || {
            "timeouts.relay_client_idle_hard_secs must be >= timeouts.relay_client_idle_soft_secs"
                .into()
        },
    )?;
    ensure(
        t.relay_idle_grace_after_downstream_activity_secs <= t.relay_client_idle_hard_secs,
        || {
            "timeouts.relay_idle_grace_after_downstream_activity_secs must be <= timeouts.relay_client_idle_hard_secs".into()
        },
    )?;
    nonzero(t.tg_connect, "timeouts.tg_connect")?;
    let c = &cfg.censorship;
    let hs_ms = t.client_handshake.saturating_mul(1000);
    let (delay_min, delay_max) = c.hello_delay_override_ms().unwrap_or((0, 0));
    ensure(delay_max < hs_ms, || {
        "censorship.server_hello_delay_max_ms must be < timeouts.client_handshake * 1000".into()
    })?;
    ensure(delay_min <= delay_max, || {
        "censorship.server_hello_delay_min_ms must be <= censorship.server_hello_delay_max_ms"
            .into()
    })?;
    ensure(!c.tls_domain.trim().is_empty(), || {
        "censorship.tls_domain cannot be empty".into()
    })?;
    for d in c.all_tls_domains() {
        ensure(!d.contains([' ', '/']), || {
            format!("censorship.tls_domain(s): invalid domain {d:?}")
        })?;
    }
    if let Some(sock) = &c.mask_unix_sock {
        ensure(!sock.is_empty(), || {
            "censorship.mask_unix_sock cannot be empty".into()
        })?;
        ensure(sock.len() <= 107, || {
            format!(
                "censorship.mask_unix_sock path too long: {} bytes (max 107)",
                sock.len()
            )
        })?;
        ensure(c.mask_host.is_none(), || {
            "censorship.mask_unix_sock and censorship.mask_host are mutually exclusive".into()
        })?;
    }
    within(
        c.mask_proxy_protocol.into(),
        0,
        2,
        "censorship.mask_proxy_protocol",
    )?;
    Ok(())
}

fn check_network(cfg: &mut Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let n = &mut cfg.network;
    ensure(n.ipv4 || n.ipv6 != Some(false), || {
        "network: ipv4 and ipv6 cannot both be disabled".into()
    })?;
    ensure(n.prefer == 4 || n.prefer == 6, || {
        format!("network.prefer must be 4 or 6, got {}", n.prefer)
    })?;
    if !n.ipv4 && n.prefer == 4 {
        warnings.push("network.prefer = 4 but network.ipv4 = false; using prefer = 6".into());
        n.prefer = 6;
    }
    if n.ipv6 == Some(false) && n.prefer == 6 {
        warnings.push("network.prefer = 6 but network.ipv6 = false; using prefer = 4".into());
        n.prefer = 4;
    }
    Ok(())
}

fn check_access(cfg: &Config) -> Result<(), ConfigError> {
    let a = &cfg.access;
    ensure(!a.users.is_empty(), || {
        "access.users must contain at least one user with a valid secret".into()
    })?;
    nonzero(
        a.user_max_unique_ips_window_secs,
        "access.user_max_unique_ips_window_secs",
    )?;
    nonzero(a.replay_window_secs, "access.replay_window_secs")?;
    for (u, r) in &a.user_rate_limits {
        ensure(r.up_bps > 0 || r.down_bps > 0, || {
            format!("access.user_rate_limits.{u}: up_bps or down_bps must be > 0")
        })?;
    }
    let mut templates = Vec::new();
    for (k, r) in &a.cidr_rate_limits {
        let key = crate::model::CidrRateKey::parse(k)
            .map_err(|e| invalid(format!("access.cidr_rate_limits.{k:?}: {e}")))?;
        ensure(r.up_bps > 0 || r.down_bps > 0, || {
            format!("access.cidr_rate_limits.{k:?}: up_bps or down_bps must be > 0")
        })?;
        if let crate::model::CidrRateKey::Template(..) = key {
            ensure(!templates.contains(&key), || {
                format!("access.cidr_rate_limits.{k:?}: the same template appears twice")
            })?;
            templates.push(key);
        }
    }
    Ok(())
}

fn check_upstreams(cfg: &Config) -> Result<(), ConfigError> {
    let mut ss = false;
    for (i, u) in cfg.upstreams.iter().enumerate() {
        if let UpstreamKind::Shadowsocks { url, .. } = &u.kind {
            ensure(url.trim().starts_with("ss://"), || {
                format!("upstreams[{i}].url must be an ss:// URL")
            })?;
            // The URL carries the password: never echo it back in the error.
            if let Err(e) = crate::ss_url::ShadowsocksUrl::parse(url) {
                return Err(invalid(format!("upstreams[{i}].url: {e}")));
            }
            ss |= u.enabled;
        }
        if let UpstreamKind::Socks5 {
            username, password, ..
        } = &u.kind
        {
            ensure(password.is_none() || username.is_some(), || {
                format!("upstreams[{i}].password requires username")
            })?;
            for (key, v) in [("username", username), ("password", password)] {
                ensure(v.as_ref().is_none_or(|v| v.len() <= 255), || {
                    format!("upstreams[{i}].{key} must be at most 255 bytes")
                })?;
            }
        }
        if let UpstreamKind::Direct {
            bind_addresses: Some(addrs),
            ..
        } = &u.kind
        {
            for a in addrs {
                ensure(a.trim().parse::<std::net::IpAddr>().is_ok(), || {
                    format!("upstreams[{i}].bind_addresses: {a:?} is not an IP address")
                })?;
            }
        }
        if let UpstreamKind::Socks4 { address, .. } | UpstreamKind::Socks5 { address, .. } = &u.kind
        {
            ensure(
                address
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                || format!("upstreams[{i}].address must be host:port, got {address:?}"),
            )?;
        }
    }
    ensure(!(ss && cfg.general.use_middle_proxy), || {
        "shadowsocks upstreams require general.use_middle_proxy = false".into()
    })?;
    ensure(cfg.upstreams.iter().any(|u| u.enabled), || {
        "upstreams: at least one upstream must be enabled".into()
    })?;
    Ok(())
}
