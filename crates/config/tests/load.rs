//! Loading: example/default files, normalisation, includes, warnings and every validation rule.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use common::*;
use config::{parse_str, ConfigError, IpPolicyMode, UpstreamKind};
use time::macros::datetime;

fn load(text: &str) -> config::Loaded {
    parse_str(text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

fn base() -> String {
    format!("[access.users]\nu = \"{ALICE}\"\n")
}

#[test]
fn default_config_parses_with_expected_values() {
    let text = config::default_config_toml("admin", &secret(0x42));
    let l = load(&text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.server.port, 8443);
    assert!(c.server.api.enabled);
    assert_eq!(
        c.server.api.listen,
        "127.0.0.1:9091".parse::<SocketAddr>().unwrap()
    );
    assert!(!c.general.use_middle_proxy);
    let m = &c.general.modes;
    assert!(m.tls && !m.classic && !m.secure, "only fake TLS by default");
    assert_eq!(c.censorship.tls_domain, "www.google.com");
    assert_eq!(c.access.users.len(), 1);
    assert_eq!(c.access.users["admin"], secret(0x42));
    assert!(
        text.contains("443"),
        "the comment mentions telemt's default port"
    );
    // A name that needs quoting still yields a loadable file.
    let l = load(&config::default_config_toml("a.b", &secret(1)));
    assert!(l.config.access.users.contains_key("a.b"));
}

#[test]
fn every_testdata_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            config::load_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn telemt_style_file_maps_every_section() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/telemt-style.toml");
    let l = config::load_file(&p).unwrap();
    let c = &l.config;
    assert_eq!(
        l.warnings,
        vec!["unknown key `general.me_route_backpressure_base_timeout_ms` ignored".to_string()]
    );
    assert_eq!(
        c.general.ad_tag.unwrap().to_hex(),
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(c.general.log_level.as_str(), "verbose");
    assert_eq!(c.general.me_floor_mode.as_str(), "static");
    assert_eq!(c.general.me_writer_pick_mode.as_str(), "sorted_rr");
    assert_eq!(c.general.upstream_connect_budget_ms, 5000);
    assert_eq!(c.general.effective_update_every_secs(), 600);
    assert_eq!(c.general.effective_me_pool_force_close_secs(), 90);
    assert!(c.general.modes.secure && !c.general.modes.classic);
    assert_eq!(c.general.public_host(), Some("proxy.example.com"));
    assert_eq!(c.general.links.public_port, Some(443));
    assert!(!c.general.telemetry.user_enabled);
    assert_eq!(c.general.telemetry.me_level.as_str(), "debug");
    assert_eq!(c.network.prefer, 6);
    assert_eq!(
        c.network.stun_servers,
        vec!["stun.example.org:3478".to_string()]
    );
    assert!(c.server.proxy_protocol);
    assert_eq!(
        c.server.proxy_protocol_trusted_cidrs[1].to_string(),
        "192.168.1.1/32"
    );
    // admin_api alias.
    let api = &c.server.api;
    assert!(api.enabled && api.read_only && api.minimal_runtime_enabled);
    assert_eq!(
        api.whitelist
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        ["127.0.0.0/8", "::1/128"]
    );
    assert_eq!(api.auth_header, "Bearer s3cret");
    assert_eq!(api.runtime_edge_top_n, 20);
    assert_eq!(c.server.listeners.len(), 2);
    assert_eq!(
        c.server.listeners[0].announce.as_deref(),
        Some("edge.example.com")
    );
    assert_eq!(
        c.server.listeners[1].announce.as_deref(),
        Some("2001:db8::1")
    );
    assert_eq!(c.server.listeners[1].proxy_protocol, Some(false));
    assert_eq!(c.timeouts.client_handshake, 15);
    assert_eq!(c.timeouts.me_one_retry, 3);
    assert_eq!(c.censorship.tls_domains, vec!["example.com".to_string()]);
    assert_eq!(c.censorship.mask_host.as_deref(), Some("petrovich.ru"));
    assert_eq!(
        c.censorship.all_tls_domains().collect::<Vec<_>>(),
        ["petrovich.ru", "example.com"]
    );
    let a = &c.access;
    assert_eq!(a.user_max_unique_ips_mode, IpPolicyMode::Combined);
    assert_eq!(a.effective_max_tcp_conns("alice"), Some(10));
    assert_eq!(a.effective_max_tcp_conns("bob.smith"), Some(32));
    assert_eq!(a.effective_max_unique_ips("bob.smith"), Some(1));
    assert_eq!(a.effective_max_unique_ips("alice"), Some(3));
    assert_eq!(
        a.user_expirations["bob.smith"],
        datetime!(2031-06-01 10:00 UTC)
    );
    assert_eq!(a.user_data_quota["alice"], 1 << 30);
    assert_eq!(c.upstreams.len(), 3);
    assert_eq!(c.upstreams[0].route_kind(), "direct");
    assert_eq!(c.upstreams[0].weight, 3);
    assert!(!c.upstreams[1].enabled);
    assert_eq!(c.upstreams[1].address_display(), "127.0.0.1:1080");
    assert!(
        matches!(&c.upstreams[2].kind, UpstreamKind::Socks4 { user_id: Some(u), .. } if u == "id")
    );
    assert_eq!(
        c.dc_overrides["203"],
        vec!["149.154.175.100:443".to_string()]
    );
    assert_eq!(c.dc_overrides["4"], vec!["149.154.167.91:443".to_string()]);
    assert_eq!(c.default_dc, Some(2));
    // Debug output never carries credentials.
    let dbg = format!("{c:?}");
    for secret in [
        "s3cret",
        "password: Some(\"p\")",
        "00112233445566778899aabbccddeeff",
    ] {
        assert!(!dbg.contains(secret), "{secret} leaked");
    }
}

#[test]
fn defaults_and_normalisation() {
    let c = load(&base()).config;
    assert_eq!(c.server.port, 443);
    assert!(!c.server.api.enabled);
    assert_eq!(
        c.server.api.listen,
        "127.0.0.1:9091".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.api.whitelist.len(), 2);
    assert_eq!(c.server.api.request_body_limit_bytes, 65536);
    assert_eq!(c.server.api.runtime_edge_events_capacity, 256);
    let ips: Vec<IpAddr> = c.server.listeners.iter().map(|l| l.ip).collect();
    assert_eq!(
        ips,
        ["0.0.0.0".parse::<IpAddr>().unwrap(), "::".parse().unwrap()]
    );
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(c.upstreams[0].route_kind(), "direct");
    assert_eq!(
        c.dc_overrides["203"],
        vec!["91.105.192.100:443".to_string()]
    );
    assert_eq!(c.censorship.mask_host.as_deref(), Some("petrovich.ru"));
    assert!(c.general.use_middle_proxy && c.general.me2dc_fallback);
    assert_eq!(c.general.me_writer_pick_mode.as_str(), "p2c");
    assert_eq!(
        c.access.user_max_unique_ips_mode,
        IpPolicyMode::ActiveWindow
    );
    assert_eq!(c.access.user_max_unique_ips_window_secs, 30);
    assert_eq!(c.access.effective_max_tcp_conns("u"), None);
    assert!(c.network.stun_servers.len() > 5);
    assert_eq!(c.timeouts.client_handshake, 30);

    // Legacy keys.
    let c = load(&format!(
        "{}[general]\nproxy_secret_auto_reload_secs = 120\nmiddle_proxy_nat_stun = \"legacy.example:3478\"\nprefer_ipv6 = true\n[network]\nipv6 = true\n",
        base()
    ))
    .config;
    assert_eq!(c.general.update_every, None);
    assert_eq!(c.general.effective_update_every_secs(), 120);
    assert!(c
        .network
        .stun_servers
        .contains(&"legacy.example:3478".to_string()));
    assert_eq!(c.network.prefer, 6);
}

#[test]
fn me_input_urls_default_to_telemt_and_cache_paths_follow_the_config_file() {
    let c = load(&base()).config;
    let g = &c.general;
    assert_eq!(g.proxy_secret_url, None);
    assert_eq!(
        g.effective_proxy_secret_url(),
        "https://core.telegram.org/getProxySecret"
    );
    assert_eq!(
        g.effective_proxy_config_v4_url(),
        "https://core.telegram.org/getProxyConfig"
    );
    assert_eq!(
        g.effective_proxy_config_v6_url(),
        "https://core.telegram.org/getProxyConfigV6"
    );
    let cfg_path = Path::new("/etc/mtproxyd/config.toml");
    assert_eq!(
        g.proxy_secret_file(cfg_path),
        Path::new("/etc/mtproxyd/proxy-secret")
    );
    assert_eq!(
        g.proxy_config_v4_file(cfg_path),
        Path::new("/etc/mtproxyd/cache/proxy-config-v4.txt")
    );
    assert_eq!(
        g.proxy_config_v6_file(Path::new("config.toml")),
        Path::new("./cache/proxy-config-v6.txt")
    );

    let l = load(&format!(
        "{}[general]\nproxy_secret_url = \"http://127.0.0.1:1/s\"\nproxy_config_v4_url = \"HTTPS://example.org/c4\"\nproxy_config_v6_url = \"https://user:pw@example.org:8443/c6?x=1\"\nproxy_secret_path = \"/var/lib/mtproxyd/secret\"\n",
        base()
    ));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let g = &l.config.general;
    assert_eq!(g.effective_proxy_secret_url(), "http://127.0.0.1:1/s");
    assert_eq!(g.effective_proxy_config_v4_url(), "HTTPS://example.org/c4");
    assert_eq!(
        g.effective_proxy_config_v6_url(),
        "https://user:pw@example.org:8443/c6?x=1"
    );
    assert_eq!(
        g.proxy_secret_file(cfg_path),
        Path::new("/var/lib/mtproxyd/secret")
    );
}

#[test]
fn me_input_rules_default_to_telemt_and_are_read() {
    let g = load(&base()).config.general;
    assert_eq!(g.me_config_stable_snapshots, 2);
    assert_eq!(g.me_config_apply_cooldown_secs, 300);
    assert!(g.me_snapshot_require_http_2xx);
    assert!(g.me_snapshot_reject_empty_map);
    assert_eq!(g.me_snapshot_min_proxy_for_lines, 1);
    assert_eq!(g.proxy_secret_stable_snapshots, 2);
    assert!(g.proxy_secret_rotate_runtime);
    assert!(g.me_secret_atomic_snapshot);
    assert_eq!(g.proxy_secret_len_max, 256);
    assert_eq!(g.effective_proxy_secret_len_max(), 256);

    // Every key set to something else: read, and none is an unknown key.
    let l = load(&format!(
        "{}[general]\nme_config_stable_snapshots = 3\nme_config_apply_cooldown_secs = 0\n\
         me_snapshot_require_http_2xx = false\nme_snapshot_min_proxy_for_lines = 10\n\
         proxy_secret_stable_snapshots = 1\nproxy_secret_rotate_runtime = false\n\
         proxy_secret_len_max = 128\nme_secret_atomic_snapshot = true\n\
         me_snapshot_reject_empty_map = true\n",
        base()
    ));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let g = l.config.general;
    assert_eq!(g.me_config_stable_snapshots, 3);
    assert_eq!(g.me_config_apply_cooldown_secs, 0);
    assert!(!g.me_snapshot_require_http_2xx);
    assert_eq!(g.me_snapshot_min_proxy_for_lines, 10);
    assert_eq!(g.proxy_secret_stable_snapshots, 1);
    assert!(!g.proxy_secret_rotate_runtime);
    assert_eq!(g.proxy_secret_len_max, 128);
    assert_eq!(g.effective_proxy_secret_len_max(), 128);

    // The range ends are valid.
    for v in [32, 4096] {
        let l = load(&format!(
            "{}[general]\nproxy_secret_len_max = {v}\n",
            base()
        ));
        assert_eq!(l.config.general.proxy_secret_len_max, v);
    }
}

#[test]
fn me_input_values_that_cannot_act_are_warnings() {
    // Above what the ME handshake takes: loads (telemt's range), capped, with a warning.
    let l = load(&format!(
        "{}[general]\nproxy_secret_len_max = 1024\n",
        base()
    ));
    assert_eq!(l.config.general.proxy_secret_len_max, 1024);
    assert_eq!(l.config.general.effective_proxy_secret_len_max(), 256);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0].contains("general.proxy_secret_len_max = 1024 is above 256 bytes"),
        "{:?}",
        l.warnings
    );
    let l = load(&format!(
        "{}[general]\nme_snapshot_reject_empty_map = false\nme_secret_atomic_snapshot = false\n",
        base()
    ));
    assert!(!l.config.general.me_snapshot_reject_empty_map);
    assert!(!l.config.general.me_secret_atomic_snapshot);
    for needle in [
        "general.me_snapshot_reject_empty_map = false has no effect",
        "general.me_secret_atomic_snapshot = false has no effect",
    ] {
        assert!(
            l.warnings.iter().any(|w| w.contains(needle)),
            "missing {needle}: {:?}",
            l.warnings
        );
    }
    assert!(!l.warnings.iter().any(|w| w.contains("unknown key")));
}

#[test]
fn a_bad_user_secret_invalidates_the_config() {
    for bad in ["\"nothex\"", "\"abc\"", "42", &format!("\"{ALICE}00\"")] {
        let text = format!("[access.users]\nok = \"{ALICE}\"\nalice = {bad}\n");
        let err = config::parse_str(&text).expect_err(bad).to_string();
        assert!(
            err.contains("access.users.alice: secret must be exactly 32 hex characters"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_tags_are_warnings() {
    let text = format!(
        "future_top = 1\n[general]\nbrand_new = true\nad_tag = \"xyz\"\n[access.users]\nok = \"{ALICE}\"\n[access.user_ad_tags]\nok = \"nothex\"\n[mystery]\nx = 1\n"
    );
    let l = load(&text);
    assert!(l.config.access.users.contains_key("ok"));
    assert!(l.config.general.ad_tag.is_none());
    assert!(l.config.access.user_ad_tags.is_empty());
    for needle in [
        "`future_top`",
        "`general.brand_new`",
        "`mystery`",
        "general.ad_tag must be exactly 32 hex characters",
        "access.user_ad_tags.ok",
    ] {
        assert!(
            l.warnings.iter().any(|w| w.contains(needle)),
            "missing {needle}: {:?}",
            l.warnings
        );
    }
}

#[test]
fn session_tickets_are_accepted_but_inert_with_a_warning() {
    let l = load(&format!(
        "{}[censorship]\ntls_new_session_tickets = 0\n",
        base()
    ));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let l = load(&format!(
        "{}[censorship]\ntls_new_session_tickets = 2\n",
        base()
    ));
    assert_eq!(l.config.censorship.tls_new_session_tickets, 2);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("censorship.tls_new_session_tickets = 2 has no effect")),
        "{:?}",
        l.warnings
    );
    // A u8, like telemt's.
    let err = parse_str(&format!(
        "{}[censorship]\ntls_new_session_tickets = 256\n",
        base()
    ))
    .err()
    .map(|e| e.to_string());
    assert!(
        err.is_some_and(|e| e.contains("expected u8")),
        "256 does not fit"
    );
}

#[test]
fn includes_follow_telemt_semantics() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "users.toml",
        &format!("[access.users]\nx = \"{ALICE}\"\ninclude = \"sub/more.toml\"\n"),
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // Paths are relative to the including file.
    write(
        &dir.path().join("sub"),
        "more.toml",
        &format!("y = \"{BOB}\"\n"),
    );
    let main = write(
        dir.path(),
        "config.toml",
        "[server]\nport = 1234\ninclude = \"users.toml\"\n",
    );
    let l = config::load_file(&main).unwrap();
    assert!(l.config.access.users.contains_key("x") && l.config.access.users.contains_key("y"));
    assert_eq!(l.config.server.port, 1234);
    assert_eq!(l.config.includes.len(), 2);

    let cyc = write(dir.path(), "cycle.toml", "include = \"cycle.toml\"\n");
    let e = config::load_file(&cyc).unwrap_err();
    assert!(
        matches!(e, ConfigError::Include(ref m) if m.contains("deeper than 10")),
        "{e}"
    );
    let missing = write(
        dir.path(),
        "missing.toml",
        &format!("{}include = \"nope.toml\"\n", base()),
    );
    let e = config::load_file(&missing).unwrap_err();
    assert!(e.to_string().contains("nope.toml"), "{e}");
}

/// Each rule: a snippet appended to a valid base and the message it must produce.
const RULES: &[(&str, &str)] = &[
    ("[server.api]\nlisten = \"nope\"\n", "server.api.listen must be a valid IP:PORT"),
    ("[server.api]\nrequest_body_limit_bytes = 0\n", "server.api.request_body_limit_bytes must be > 0"),
    ("[server.api]\nminimal_runtime_cache_ttl_ms = 60001\n", "server.api.minimal_runtime_cache_ttl_ms must be within [0, 60000], got 60001"),
    ("[server.api]\nruntime_edge_cache_ttl_ms = 70000\n", "server.api.runtime_edge_cache_ttl_ms must be within [0, 60000], got 70000"),
    ("[server.api]\nruntime_edge_top_n = 0\n", "server.api.runtime_edge_top_n must be within [1, 1000], got 0"),
    ("[server.api]\nruntime_edge_top_n = 1001\n", "server.api.runtime_edge_top_n must be within [1, 1000], got 1001"),
    ("[server.api]\nruntime_edge_events_capacity = 15\n", "server.api.runtime_edge_events_capacity must be within [16, 4096], got 15"),
    ("[server.api]\nruntime_edge_events_capacity = 4097\n", "server.api.runtime_edge_events_capacity must be within [16, 4096], got 4097"),
    ("[server.api]\nwhitelist = [\"10.0.0.0/33\"]\n", "server.api.whitelist contains an invalid CIDR"),
    ("[server.api]\nauth_header = \"a\\nb\"\n", "server.api.auth_header must not contain line breaks"),
    ("[server]\nproxy_protocol_header_timeout_ms = 0\n", "server.proxy_protocol_header_timeout_ms must be > 0"),
    ("[server]\nproxy_protocol_trusted_cidrs = [\"x\"]\n", "server.proxy_protocol_trusted_cidrs contains an invalid CIDR"),
    ("[server]\naccept_permit_timeout_ms = 60001\n", "server.accept_permit_timeout_ms must be within [0, 60000]"),
    ("[server]\nlisten_addr_ipv4 = \"localhost\"\n", "server.listen_addr_ipv4 must be an IP address"),
    ("[[server.listeners]]\nip = \"0.0.0.0\"\nannounce = \"a b\"\n", "server.listeners[0].announce must be a host name or IP"),
    ("[general]\nupdate_every = 0\n", "general.update_every must be > 0"),
    ("[general]\nupstream_connect_retry_attempts = 0\n", "general.upstream_connect_retry_attempts must be > 0"),
    ("[general]\nupstream_connect_budget_ms = 0\n", "general.upstream_connect_budget_ms must be > 0"),
    ("[general]\nupstream_unhealthy_fail_threshold = 0\n", "general.upstream_unhealthy_fail_threshold must be > 0"),
    ("[general]\nrpc_proxy_req_every = 5\n", "general.rpc_proxy_req_every must be 0 or within [10, 300], got 5"),
    ("[general]\nstun_nat_probe_concurrency = 0\n", "general.stun_nat_probe_concurrency must be > 0"),
    ("[general]\nme_init_retry_attempts = 1000001\n", "general.me_init_retry_attempts must be within [0, 1000000]"),
    ("[general]\nme_reinit_every_secs = 0\n", "general.me_reinit_every_secs must be > 0"),
    ("[general]\nme_config_stable_snapshots = 0\n", "general.me_config_stable_snapshots must be > 0"),
    ("[general]\nproxy_secret_stable_snapshots = 0\n", "general.proxy_secret_stable_snapshots must be > 0"),
    ("[general]\nme_snapshot_min_proxy_for_lines = 0\n", "general.me_snapshot_min_proxy_for_lines must be > 0"),
    ("[general]\nproxy_secret_len_max = 31\n", "general.proxy_secret_len_max must be within [32, 4096], got 31"),
    ("[general]\nproxy_secret_len_max = 4097\n", "general.proxy_secret_len_max must be within [32, 4096], got 4097"),
    ("[general]\nme_config_stable_snapshots = 256\n", "expected u8"),
    ("[general]\nme_snapshot_require_http_2xx = \"no\"\n", "expected a boolean"),
    ("[general]\nme_single_endpoint_shadow_writers = 33\n", "general.me_single_endpoint_shadow_writers must be within [0, 32]"),
    ("[general]\nme_adaptive_floor_min_writers_single_endpoint = 0\n", "general.me_adaptive_floor_min_writers_single_endpoint must be within [1, 32]"),
    ("[general]\nme_adaptive_floor_min_writers_multi_endpoint = 33\n", "general.me_adaptive_floor_min_writers_multi_endpoint must be within [1, 32]"),
    ("[general]\nme_adaptive_floor_writers_per_core_total = 0\n", "general.me_adaptive_floor_writers_per_core_total must be > 0"),
    ("[general]\nme_adaptive_floor_max_active_writers_global = 0\n", "general.me_adaptive_floor_max_active_writers_global must be > 0"),
    ("[general]\nme_adaptive_floor_max_warm_writers_per_core = 0\n", "general.me_adaptive_floor_max_warm_writers_per_core must be > 0"),
    ("[general]\nme_single_endpoint_outage_backoff_min_ms = 5000\n", "general.me_single_endpoint_outage_backoff_min_ms must be <= general.me_single_endpoint_outage_backoff_max_ms"),
    ("[general]\nme_reconnect_backoff_base_ms = 40000\n", "general.me_reconnect_backoff_base_ms must be <= general.me_reconnect_backoff_cap_ms"),
    ("[general]\nme_pool_min_fresh_ratio = 1.5\n", "general.me_pool_min_fresh_ratio must be within [0.0, 1.0]"),
    ("[general]\nme_writer_pick_sample_size = 5\n", "general.me_writer_pick_sample_size must be within [2, 4], got 5"),
    ("[general]\nme_route_no_writer_wait_ms = 5\n", "general.me_route_no_writer_wait_ms must be within [10, 5000]"),
    ("[general]\nme_route_hybrid_max_wait_ms = 10\n", "general.me_route_hybrid_max_wait_ms must be within [50, 60000]"),
    ("[general]\nme_hardswap_warmup_delay_min_ms = 3000\n", "general.me_hardswap_warmup_delay_min_ms must be <= general.me_hardswap_warmup_delay_max_ms"),
    ("[general]\nme_hardswap_warmup_delay_min_ms = 0\nme_hardswap_warmup_delay_max_ms = 0\n", "general.me_hardswap_warmup_delay_max_ms must be > 0"),
    ("[general]\nme_hardswap_warmup_extra_passes = 11\n", "general.me_hardswap_warmup_extra_passes must be within [0, 10]"),
    ("[general]\nme_hardswap_warmup_pass_backoff_base_ms = 0\n", "general.me_hardswap_warmup_pass_backoff_base_ms must be > 0"),
    ("[general]\nme_route_channel_capacity = 0\n", "general.me_route_channel_capacity must be within [1, 1048576]"),
    ("[general]\nme_writer_cmd_channel_capacity = 2000000\n", "general.me_writer_cmd_channel_capacity must be within [1, 1048576]"),
    ("[general]\nme_route_blocking_send_timeout_ms = 5001\n", "general.me_route_blocking_send_timeout_ms must be within [0, 5000]"),
    ("[general]\nme_c2me_send_timeout_ms = 60001\n", "general.me_c2me_send_timeout_ms must be within [0, 60000]"),
    ("[general]\nme_d2c_flush_batch_max_bytes = 100\n", "general.me_d2c_flush_batch_max_bytes must be within [4096, 2097152]"),
    ("[general]\nme_d2c_flush_batch_max_frames = 0\n", "general.me_d2c_flush_batch_max_frames must be within [1, 512]"),
    ("[general]\nbeobachten_file = \" \"\n", "general.beobachten_file cannot be empty"),
    ("[general]\nproxy_config_v4_cache_path = \"\"\n", "general.proxy_config_v4_cache_path cannot be empty when provided"),
    ("[general]\nproxy_secret_path = \" \"\n", "general.proxy_secret_path cannot be empty when provided"),
    ("[general]\nproxy_secret_url = \"ftp://core.telegram.org/x\"\n", "general.proxy_secret_url must be an http:// or https:// URL: the scheme must be http or https"),
    ("[general]\nproxy_config_v4_url = \"core.telegram.org/getProxyConfig\"\n", "general.proxy_config_v4_url must be an http:// or https:// URL"),
    ("[general]\nproxy_config_v6_url = \"https:///getProxyConfigV6\"\n", "general.proxy_config_v6_url must be an http:// or https:// URL: the host is missing"),
    ("[general]\nproxy_config_v6_url = \"https://a b/\"\n", "general.proxy_config_v6_url must be an http:// or https:// URL: it contains spaces"),
    ("[general.modes]\ntls = false\n", "general.modes: at least one of classic, secure, tls must be enabled"),
    ("[general.links]\npublic_host = \"a/b\"\n", "general.links.public_host must be a host name or IP"),
    ("[general.links]\npublic_host = \"proxy.example.com:8443\"\n", "a port cannot be part of the host (set general.links.public_port)"),
    ("[general.links]\npublic_host = \"[2001:db8::1]:443\"\n", "a port is attached"),
    ("[general.links]\npublic_host = \"fe80::1%eth0\"\n", "zoned IPv6"),
    ("[general.links]\npublic_host = \"-bad-.example\"\n", "host names are letters, digits"),
    ("[general.links]\nshow = \"all\"\n", "general.links.show must be \"*\" or a list of usernames"),
    ("[general]\nlog_level = \"loud\"\n", "unknown variant `loud`"),
    ("[timeouts]\nclient_handshake = 0\n", "timeouts.client_handshake must be > 0"),
    ("[timeouts]\ntg_connect = 0\n", "timeouts.tg_connect must be > 0"),
    ("[timeouts]\nrelay_client_idle_hard_secs = 60\n", "timeouts.relay_client_idle_hard_secs must be >= timeouts.relay_client_idle_soft_secs"),
    ("[timeouts]\nrelay_idle_grace_after_downstream_activity_secs = 1000\n", "timeouts.relay_idle_grace_after_downstream_activity_secs must be <= timeouts.relay_client_idle_hard_secs"),
    ("[censorship]\nserver_hello_delay_max_ms = 30000\n", "censorship.server_hello_delay_max_ms must be < timeouts.client_handshake * 1000"),
    ("[censorship]\nserver_hello_delay_min_ms = 100\n", "censorship.server_hello_delay_min_ms must be <= censorship.server_hello_delay_max_ms"),
    ("[censorship]\ntls_domain = \"\"\n", "censorship.tls_domain cannot be empty"),
    ("[censorship]\ntls_domain = \"a b\"\n", "invalid domain"),
    ("[censorship]\nmask_unix_sock = \"/tmp/s\"\nmask_host = \"h\"\n", "censorship.mask_unix_sock and censorship.mask_host are mutually exclusive"),
    ("[censorship]\nmask_proxy_protocol = 3\n", "censorship.mask_proxy_protocol must be within [0, 2]"),
    ("[network]\nipv4 = false\nipv6 = false\n", "network: ipv4 and ipv6 cannot both be disabled"),
    ("[network]\nprefer = 5\n", "network.prefer must be 4 or 6, got 5"),
    ("[access]\nuser_max_unique_ips_window_secs = 0\n", "access.user_max_unique_ips_window_secs must be > 0"),
    ("[access]\nuser_max_unique_ips_mode = \"sometimes\"\n", "unknown variant `sometimes`"),
    ("[access.user_expirations]\nu = \"tomorrow\"\n", "access.user_expirations.u must be an RFC 3339 timestamp"),
    ("[[upstreams]]\ntype = \"socks5\"\n", "upstreams: type = \"socks5\" requires `address`"),
    ("[[upstreams]]\ntype = \"http\"\n", "upstreams: type must be one of direct, socks4, socks5, shadowsocks"),
    ("[[upstreams]]\ntype = \"socks4\"\naddress = \"nohostport\"\n", "upstreams[0].address must be host:port"),
    ("[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"ss://aes-128-gcm:pw@h:1\"\n", "shadowsocks upstreams require general.use_middle_proxy = false"),
    ("[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"http://x\"\n", "upstreams[0].url must be an ss:// URL"),
    ("[[upstreams]]\ntype = \"direct\"\nenabled = false\n", "upstreams: at least one upstream must be enabled"),
];

#[test]
fn every_validation_rule_names_its_key() {
    for (snippet, msg) in RULES {
        let text = if snippet.contains("default_dc") {
            format!("{snippet}{}", base())
        } else {
            format!("{}{snippet}", base())
        };
        match parse_str(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => assert!(
                e.to_string().contains(msg),
                "for\n{snippet}\nwant {msg:?}\ngot {e}"
            ),
        }
        // Sanity: the base alone is valid, so it is the snippet that failed.
    }
    assert!(parse_str(&base()).is_ok());
    let e = parse_str(&format!("default_dc = 9\n{}", base())).unwrap_err();
    assert!(
        e.to_string()
            .contains("default_dc must be within [1, 5], got 9"),
        "{e}"
    );
    let e = parse_str("[access]\nuser_max_tcp_conns_global_each = 1\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("access.users must contain at least one user"),
        "{e}"
    );
    let e = parse_str("[access\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse(_)), "{e}");
}

#[test]
fn link_hosts_that_are_accepted() {
    for host in [
        "proxy.example.com",
        "proxy.example.com.",
        "203.0.113.7",
        "2001:db8::5",
        "[2001:db8::5]",
        "xn--80ak6aa92e.example",
        "",
    ] {
        let text = format!("[general.links]\npublic_host = \"{host}\"\n{}", base());
        assert!(parse_str(&text).is_ok(), "{host} refused");
    }
}
