//! Exact key sets of every endpoint's JSON objects, transcribed from docs/API.md.

use serde_json::Value;

use super::*;

use super::fields::*;

fn full() -> (config::Config, Fake) {
    (cfg_enabled(), Fake::full())
}

fn get(route: ReadRoute) -> Value {
    let (cfg, rt) = full();
    render_once(route, &cfg, &rt)
}

#[test]
fn health_shape() {
    assert_keys(&get(ReadRoute::Health), &["status", "read_only"]);
    assert_eq!(get(ReadRoute::Health)["status"], "ok");
}

#[test]
fn system_info_shape() {
    let v = get(ReadRoute::SystemInfo);
    let required = [
        "version",
        "target_arch",
        "target_os",
        "build_profile",
        "process_started_at_epoch_secs",
        "uptime_seconds",
        "config_path",
        "config_hash",
        "config_reload_count",
    ];
    let optional = [
        "git_commit",
        "build_time_utc",
        "rustc_version",
        "last_config_reload_epoch_secs",
    ];
    let got = keys(&v);
    for k in required {
        assert!(got.contains(k), "missing {k}");
    }
    for k in &got {
        assert!(
            required.contains(&k.as_str()) || optional.contains(&k.as_str()),
            "unexpected {k}"
        );
    }
    for k in optional {
        if let Some(x) = v.get(k) {
            assert!(x.is_string() || x.is_u64(), "{k} must be omitted, not null");
        }
    }
}

#[test]
fn gates_shape() {
    assert_keys(
        &get(ReadRoute::RuntimeGates),
        &[
            "accepting_new_connections",
            "conditional_cast_enabled",
            "me_runtime_ready",
            "me2dc_fallback_enabled",
            "use_middle_proxy",
            "startup_status",
            "startup_stage",
            "startup_progress_pct",
        ],
    );
}

#[test]
fn initialization_shape() {
    let (cfg, rt) = full();
    rt.tracker.register("c", "C", false);
    rt.tracker.set_status(StartupStatus::Ready, at(1));
    rt.tracker.set_me_error(Some("e".into()));
    rt.tracker.begin("c", at(0));
    rt.tracker
        .finish("c", ComponentStatus::Ready, Some("d".into()), at(1));
    let v = render_once(ReadRoute::RuntimeInitialization, &cfg, &rt);
    assert_keys(
        &v,
        &[
            "status",
            "degraded",
            "current_stage",
            "progress_pct",
            "started_at_epoch_secs",
            "ready_at_epoch_secs",
            "total_elapsed_ms",
            "transport_mode",
            "me",
            "components",
        ],
    );
    assert_keys(
        &v["me"],
        &[
            "status",
            "current_stage",
            "progress_pct",
            "init_attempt",
            "retry_limit",
            "last_error",
        ],
    );
    assert_keys(
        &v["components"][0],
        &[
            "id",
            "title",
            "status",
            "started_at_epoch_ms",
            "finished_at_epoch_ms",
            "duration_ms",
            "attempts",
            "details",
        ],
    );
}

#[test]
fn limits_shape() {
    let v = get(ReadRoute::LimitsEffective);
    assert_keys(
        &v,
        &[
            "update_every_secs",
            "me_reinit_every_secs",
            "me_pool_force_close_secs",
            "timeouts",
            "upstream",
            "middle_proxy",
            "user_ip_policy",
        ],
    );
    assert_keys(
        &v["timeouts"],
        &[
            "client_handshake_secs",
            "tg_connect_secs",
            "client_keepalive_secs",
            "client_ack_secs",
            "me_one_retry",
            "me_one_timeout_ms",
        ],
    );
    assert_keys(
        &v["upstream"],
        &[
            "connect_retry_attempts",
            "connect_retry_backoff_ms",
            "connect_budget_ms",
            "unhealthy_fail_threshold",
            "connect_failfast_hard_errors",
        ],
    );
    assert_keys(&v["middle_proxy"], MIDDLE_PROXY_LIMITS);
    assert_keys(&v["user_ip_policy"], &["mode", "window_secs"]);
}

#[test]
fn security_shapes() {
    assert_keys(
        &get(ReadRoute::SecurityPosture),
        &[
            "api_read_only",
            "api_whitelist_enabled",
            "api_whitelist_entries",
            "api_auth_header_enabled",
            "proxy_protocol_enabled",
            "log_level",
            "telemetry_core_enabled",
            "telemetry_user_enabled",
            "telemetry_me_level",
        ],
    );
    assert_keys(
        &get(ReadRoute::SecurityWhitelist),
        &[
            "generated_at_epoch_secs",
            "enabled",
            "entries_total",
            "entries",
        ],
    );
}

#[test]
fn summary_and_zero_shapes() {
    assert_keys(
        &get(ReadRoute::StatsSummary),
        &[
            "uptime_seconds",
            "connections_total",
            "connections_bad_total",
            "connections_bad_by_class",
            "handshake_timeouts_total",
            "configured_users",
        ],
    );
    let (cfg, rt) = full();
    rt.stats.record_me_handshake_reject(-404);
    rt.stats.inc_connections_bad_class("tls_replay");
    let v = render_once(ReadRoute::StatsZeroAll, &cfg, &rt);
    assert_keys(
        &v,
        &[
            "generated_at_epoch_secs",
            "core",
            "upstream",
            "middle_proxy",
            "pool",
            "desync",
        ],
    );
    assert_keys(
        &v["core"],
        &[
            "uptime_seconds",
            "connections_total",
            "connections_bad_total",
            "connections_bad_by_class",
            "handshake_timeouts_total",
            "accept_permit_timeout_total",
            "configured_users",
            "telemetry_core_enabled",
            "telemetry_user_enabled",
            "telemetry_me_level",
        ],
    );
    assert_keys(&v["upstream"], ZERO_UPSTREAM);
    assert_keys(&v["middle_proxy"], ZERO_MIDDLE_PROXY);
    assert_keys(
        &v["middle_proxy"]["handshake_error_codes"][0],
        &["code", "total"],
    );
    assert_keys(
        &v["core"]["connections_bad_by_class"][0],
        &["class", "total"],
    );
    assert_keys(&v["pool"], ZERO_POOL);
    assert_keys(&v["desync"], ZERO_DESYNC);
}

#[test]
fn upstreams_shape() {
    let v = get(ReadRoute::StatsUpstreams);
    assert_keys(
        &v,
        &[
            "enabled",
            "generated_at_epoch_secs",
            "zero",
            "summary",
            "upstreams",
        ],
    );
    assert_keys(&v["zero"], ZERO_UPSTREAM);
    assert_keys(&v["summary"], UPSTREAM_SUMMARY);
    assert_keys(&v["upstreams"][0], UPSTREAM_ROW);
    assert_keys(&v["upstreams"][0]["dc"][0], UPSTREAM_DC);
}

#[test]
fn minimal_all_shape() {
    let v = get(ReadRoute::StatsMinimalAll);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    let d = &v["data"];
    assert_keys(d, &["me_writers", "dcs", "me_runtime", "network_path"]);
    assert_keys(
        &d["me_writers"],
        &[
            "middle_proxy_enabled",
            "generated_at_epoch_secs",
            "summary",
            "writers",
        ],
    );
    assert_keys(
        &d["dcs"],
        &["middle_proxy_enabled", "generated_at_epoch_secs", "dcs"],
    );
    assert_keys(&d["me_runtime"], ME_RUNTIME);
    assert_keys(
        &d["me_runtime"]["quarantined_endpoints"][0],
        &["endpoint", "remaining_ms"],
    );
    assert_keys(
        &d["network_path"][0],
        &[
            "dc",
            "ip_preference",
            "selected_addr_v4",
            "selected_addr_v6",
        ],
    );
}

#[test]
fn me_writers_and_dcs_shapes() {
    let v = get(ReadRoute::StatsMeWriters);
    assert_keys(
        &v,
        &[
            "middle_proxy_enabled",
            "generated_at_epoch_secs",
            "summary",
            "writers",
        ],
    );
    assert_keys(&v["summary"], ME_WRITERS_SUMMARY);
    assert_keys(&v["writers"][0], ME_WRITER);
    let v = get(ReadRoute::StatsDcs);
    assert_keys(
        &v,
        &["middle_proxy_enabled", "generated_at_epoch_secs", "dcs"],
    );
    assert_keys(&v["dcs"][0], DC_STATUS);
    assert_keys(
        &v["dcs"][0]["endpoint_writers"][0],
        &["endpoint", "active_writers"],
    );
}

#[test]
fn me_pool_state_shape() {
    let v = get(ReadRoute::RuntimeMePoolState);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    let d = &v["data"];
    assert_keys(d, &["generations", "hardswap", "writers", "refill"]);
    assert_keys(
        &d["generations"],
        &[
            "active_generation",
            "warm_generation",
            "pending_hardswap_generation",
            "pending_hardswap_age_secs",
            "draining_generations",
        ],
    );
    assert_keys(&d["hardswap"], &["enabled", "pending"]);
    assert_keys(
        &d["writers"],
        &[
            "total",
            "alive_non_draining",
            "draining",
            "degraded",
            "contour",
            "health",
        ],
    );
    assert_keys(&d["writers"]["contour"], &["warm", "active", "draining"]);
    assert_keys(
        &d["writers"]["health"],
        &["healthy", "degraded", "draining"],
    );
    assert_keys(
        &d["refill"],
        &["inflight_endpoints_total", "inflight_dc_total", "by_dc"],
    );
    assert_keys(&d["refill"]["by_dc"][0], &["dc", "family", "inflight"]);
}

#[test]
fn me_quality_shape() {
    let v = get(ReadRoute::RuntimeMeQuality);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    let d = &v["data"];
    assert_keys(d, &["counters", "route_drops", "dc_rtt"]);
    assert_keys(
        &d["counters"],
        &[
            "idle_close_by_peer_total",
            "reader_eof_total",
            "kdf_drift_total",
            "kdf_port_only_drift_total",
            "reconnect_attempt_total",
            "reconnect_success_total",
        ],
    );
    assert_keys(
        &d["route_drops"],
        &[
            "no_conn_total",
            "channel_closed_total",
            "queue_full_total",
            "queue_full_base_total",
            "queue_full_high_total",
        ],
    );
    assert_keys(
        &d["dc_rtt"][0],
        &[
            "dc",
            "rtt_ema_ms",
            "alive_writers",
            "required_writers",
            "coverage_pct",
        ],
    );
}

#[test]
fn upstream_quality_shape() {
    let v = get(ReadRoute::RuntimeUpstreamQuality);
    assert_keys(
        &v,
        &[
            "enabled",
            "generated_at_epoch_secs",
            "policy",
            "counters",
            "summary",
            "upstreams",
        ],
    );
    assert_keys(
        &v["policy"],
        &[
            "connect_retry_attempts",
            "connect_retry_backoff_ms",
            "connect_budget_ms",
            "unhealthy_fail_threshold",
            "connect_failfast_hard_errors",
        ],
    );
    assert_keys(
        &v["counters"],
        &[
            "connect_attempt_total",
            "connect_success_total",
            "connect_fail_total",
            "connect_failfast_hard_error_total",
        ],
    );
    assert_keys(&v["summary"], UPSTREAM_SUMMARY);
    assert_keys(&v["upstreams"][0], UPSTREAM_ROW);
    assert_keys(&v["upstreams"][0]["dc"][0], UPSTREAM_DC);
}

#[test]
fn nat_stun_shape() {
    let v = get(ReadRoute::RuntimeNatStun);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    let d = &v["data"];
    assert_keys(
        d,
        &[
            "flags",
            "servers",
            "reflection",
            "stun_backoff_remaining_ms",
        ],
    );
    assert_keys(
        &d["flags"],
        &[
            "nat_probe_enabled",
            "nat_probe_disabled_runtime",
            "nat_probe_attempts",
        ],
    );
    assert_keys(&d["servers"], &["configured", "live", "live_total"]);
    assert_keys(&d["reflection"], &["v4", "v6"]);
    assert_keys(&d["reflection"]["v4"], &["addr", "age_secs"]);
}

#[test]
fn me_selftest_shape() {
    let v = get(ReadRoute::RuntimeMeSelftest);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    let d = &v["data"];
    assert_keys(d, &["kdf", "timeskew", "ip", "pid", "bnd"]);
    assert_keys(
        &d["kdf"],
        &[
            "state",
            "ewma_errors_per_min",
            "threshold_errors_per_min",
            "errors_total",
        ],
    );
    assert_keys(
        &d["timeskew"],
        &[
            "state",
            "max_skew_secs_15m",
            "samples_15m",
            "last_skew_secs",
            "last_source",
            "last_seen_age_secs",
        ],
    );
    assert_keys(&d["ip"], &["v4"]);
    assert_keys(&d["ip"]["v4"], &["addr", "state"]);
    assert_keys(&d["pid"], &["pid", "state"]);
    assert_keys(
        &d["bnd"],
        &[
            "addr_state",
            "port_state",
            "last_addr",
            "last_seen_age_secs",
        ],
    );
}

#[test]
fn connections_summary_shape() {
    let (cfg, rt) = full();
    let _s = rt.stats.users().handle("alice").open_session();
    let v = render_once(ReadRoute::RuntimeConnectionsSummary, &cfg, &rt);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    let d = &v["data"];
    assert_keys(d, &["cache", "totals", "top", "telemetry"]);
    assert_keys(
        &d["cache"],
        &["ttl_ms", "served_from_cache", "stale_cache_used"],
    );
    assert_keys(
        &d["totals"],
        &[
            "current_connections",
            "current_connections_me",
            "current_connections_direct",
            "active_users",
        ],
    );
    assert_keys(&d["top"], &["limit", "by_connections", "by_throughput"]);
    assert_keys(
        &d["top"]["by_connections"][0],
        &["username", "current_connections", "total_octets"],
    );
    assert_keys(
        &d["telemetry"],
        &["user_enabled", "throughput_is_cumulative"],
    );
}

#[test]
fn events_shape() {
    let (cfg, rt) = full();
    rt.stats
        .events()
        .push_at("api.user.create.ok", "username=a", at(1));
    let v = render_once(ReadRoute::RuntimeEventsRecent, &cfg, &rt);
    assert_keys(&v, &["enabled", "generated_at_epoch_secs", "data"]);
    assert_keys(&v["data"], &["capacity", "dropped_total", "events"]);
    assert_keys(
        &v["data"]["events"][0],
        &["seq", "ts_epoch_secs", "event_type", "context"],
    );
}

#[test]
fn disabled_shapes_keep_reason_and_null_data() {
    let mut cfg = cfg_enabled();
    cfg.server.api.minimal_runtime_enabled = false;
    cfg.server.api.runtime_edge_enabled = false;
    let rt = Fake::new();
    for route in [
        ReadRoute::StatsMinimalAll,
        ReadRoute::RuntimeConnectionsSummary,
        ReadRoute::RuntimeEventsRecent,
        ReadRoute::RuntimeMePoolState,
        ReadRoute::RuntimeMeQuality,
        ReadRoute::RuntimeNatStun,
        ReadRoute::RuntimeMeSelftest,
    ] {
        let v = render_once(route, &cfg, &rt);
        assert_keys(
            &v,
            &["enabled", "reason", "generated_at_epoch_secs", "data"],
        );
    }
    let v = render_once(ReadRoute::StatsUpstreams, &cfg, &rt);
    assert_keys(
        &v,
        &["enabled", "reason", "generated_at_epoch_secs", "zero"],
    );
    let v = render_once(ReadRoute::StatsMeWriters, &cfg, &rt);
    assert_keys(
        &v,
        &[
            "middle_proxy_enabled",
            "reason",
            "generated_at_epoch_secs",
            "summary",
            "writers",
        ],
    );
    assert_keys(&v["summary"], ME_WRITERS_SUMMARY);
}
