//! `NatProbe` against the loopback STUN responder. Every config names only 127.0.0.1
//! servers: these tests never reach the internet.

use super::*;
use testkit::StunResponder;
use tokio::io::AsyncWriteExt;

const PUBLIC: &str = "203.0.113.7";

fn cfg(extra_general: &str, network: &str) -> Config {
    let text = format!(
        "[general]\nuse_middle_proxy = true\n{extra_general}\n\n[network]\n{network}\n\n\
         [access.users]\nu = \"00112233445566778899aabbccddeeff\"\n"
    );
    config::parse_str(&text).expect("config").config
}

fn servers(list: &[&StunResponder]) -> String {
    let entries: Vec<String> = list
        .iter()
        .map(|r| format!("\"{}\"", r.server_entry()))
        .collect();
    format!(
        "stun_servers = [{}]\nhttp_ip_detect_urls = []\n",
        entries.join(", ")
    )
}

fn quick() -> NatProbeOptions {
    NatProbeOptions {
        request_timeout: Duration::from_millis(300),
        ..NatProbeOptions::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

async fn responder() -> StunResponder {
    StunResponder::start(ip(PUBLIC)).await.expect("responder")
}

#[tokio::test]
async fn udp_reflection_becomes_the_public_address() {
    let r = responder().await;
    let probe = NatProbe::new(&cfg("", &servers(&[&r])), quick());
    assert_eq!(
        probe.public_ip_for(ip("10.0.0.5")),
        None,
        "nothing known yet"
    );
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    assert_eq!(probe.public_ip_for(ip("10.0.0.5")), Some(ip(PUBLIC)));
    assert_eq!(probe.public_ip_for(ip("127.0.0.1")), Some(ip(PUBLIC)));
    assert_eq!(probe.public_ip_for(ip("0.0.0.0")), Some(ip(PUBLIC)));
    // A public local address is used as is; no IPv6 reflection exists.
    assert_eq!(probe.public_ip_for(ip("198.51.100.1")), None);
    assert_eq!(probe.public_ip_for(ip("::1")), None);
    assert_eq!(probe.public_v4(), Some(PUBLIC.parse().expect("v4")));
    assert_eq!((r.udp_requests(), r.tcp_requests()), (1, 0));

    let snap = probe.snapshot();
    assert!(snap.nat_probe_enabled);
    assert!(!snap.nat_probe_disabled_runtime);
    assert_eq!(snap.nat_probe_attempts, 0);
    assert_eq!(snap.configured_servers, vec![r.server_entry()]);
    assert_eq!(snap.live_servers, vec![r.server_entry()]);
    let v4 = snap.reflection_v4.expect("v4 reflection");
    assert_eq!(v4.addr.ip(), ip(PUBLIC));
    assert_ne!(v4.addr.port(), 0, "the port is our UDP source port");
    assert_eq!(snap.reflection_v6, None);
    assert_eq!(snap.stun_backoff_remaining_ms, None);
}

#[tokio::test]
async fn rfc3489_style_mapped_address_is_accepted() {
    let r = responder().await;
    r.set_plain_mapped(true);
    let probe = NatProbe::new(&cfg("", &servers(&[&r])), quick());
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    assert_eq!(probe.public_v4(), Some(PUBLIC.parse().expect("v4")));
}

#[tokio::test]
async fn tcp_fallback_when_udp_is_silent() {
    let r = responder().await;
    r.set_silent_udp(true);
    let probe = NatProbe::new(&cfg("", &servers(&[&r])), quick());
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    assert_eq!(probe.public_ip_for(ip("192.168.1.2")), Some(ip(PUBLIC)));
    assert!(r.udp_requests() >= 1, "UDP is tried first");
    assert_eq!(r.tcp_requests(), 1);
    assert_eq!(probe.snapshot().live_servers, vec![r.server_entry()]);
}

#[tokio::test]
async fn no_tcp_without_stun_tcp_fallback() {
    let r = responder().await;
    r.set_silent_udp(true);
    let net = format!("{}stun_tcp_fallback = false\n", servers(&[&r]));
    let probe = NatProbe::new(&cfg("", &net), quick());
    assert_eq!(probe.probe_now().await, ProbeOutcome::Failed);
    assert_eq!(r.tcp_requests(), 0);
}

#[tokio::test]
async fn all_silent_backs_off_exponentially() {
    let r = responder().await;
    r.set_silent(true);
    let opts = NatProbeOptions {
        backoff_base: Duration::from_millis(400),
        ..quick()
    };
    let probe = NatProbe::new(&cfg("", &servers(&[&r])), opts);
    assert_eq!(probe.probe_now().await, ProbeOutcome::Failed);
    let snap = probe.snapshot();
    assert_eq!(snap.nat_probe_attempts, 1);
    assert!(snap.live_servers.is_empty());
    assert_eq!(snap.reflection_v4, None);
    let left = snap.stun_backoff_remaining_ms.expect("backoff running");
    assert!(left > 0 && left <= 400, "first backoff is the base: {left}");
    assert_eq!(probe.public_ip_for(ip("10.1.1.1")), None);

    // During the backoff nothing is sent.
    let sent = r.requests();
    assert!(matches!(probe.probe_now().await, ProbeOutcome::Backoff(_)));
    assert_eq!(r.requests(), sent);

    // After it, a second failure doubles it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(probe.probe_now().await, ProbeOutcome::Failed);
    let snap = probe.snapshot();
    assert_eq!(snap.nat_probe_attempts, 2);
    let left = snap.stun_backoff_remaining_ms.expect("backoff running");
    assert!(left > 400 && left <= 800, "second backoff doubles: {left}");

    // A server that answers again resets the count once the backoff is over.
    r.set_silent(false);
    tokio::time::sleep(Duration::from_millis(850)).await;
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    let snap = probe.snapshot();
    assert_eq!(snap.nat_probe_attempts, 0);
    assert_eq!(snap.stun_backoff_remaining_ms, None);
}

#[tokio::test]
async fn nat_ip_overrides_without_probing() {
    let r = responder().await;
    let probe = NatProbe::new(
        &cfg("middle_proxy_nat_ip = \"198.51.100.20\"", &servers(&[&r])),
        quick(),
    );
    assert_eq!(probe.probe_now().await, ProbeOutcome::Skipped);
    // For its family even a public local address is replaced; the other family is not.
    assert_eq!(
        probe.public_ip_for(ip("10.0.0.1")),
        Some(ip("198.51.100.20"))
    );
    assert_eq!(
        probe.public_ip_for(ip("192.0.2.55")),
        Some(ip("198.51.100.20"))
    );
    assert_eq!(probe.public_ip_for(ip("fd00::1")), None);
    assert_eq!(r.requests(), 0);
    let snap = probe.snapshot();
    assert!(!snap.nat_probe_enabled);
    assert!(!snap.nat_probe_disabled_runtime);
}

#[tokio::test]
async fn reflection_is_cached_within_the_ttl() {
    let r = responder().await;
    let probe = NatProbe::new(&cfg("", &servers(&[&r])), quick());
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    let sent = r.requests();
    r.set_reflected_ip(ip("203.0.113.99"));
    for _ in 0..3 {
        assert_eq!(probe.probe_now().await, ProbeOutcome::Cached);
    }
    assert_eq!(r.requests(), sent, "no request within the TTL");
    assert_eq!(probe.public_ip_for(ip("10.0.0.5")), Some(ip(PUBLIC)));

    // With a TTL of zero every call is a round and sees the new address.
    let fresh = NatProbe::new(
        &cfg("", &servers(&[&r])),
        NatProbeOptions {
            cache_ttl: Duration::ZERO,
            ..quick()
        },
    );
    assert_eq!(fresh.probe_now().await, ProbeOutcome::Found);
    assert_eq!(fresh.probe_now().await, ProbeOutcome::Found);
    assert_eq!(
        fresh.public_ip_for(ip("10.0.0.5")),
        Some(ip("203.0.113.99"))
    );
}

#[tokio::test]
async fn majority_wins_and_silent_servers_are_not_live() {
    let a = responder().await;
    let b = responder().await;
    let odd = StunResponder::start(ip("198.51.100.66"))
        .await
        .expect("responder");
    let dead = responder().await;
    dead.set_silent(true);
    let net = format!(
        "{}stun_tcp_fallback = false\n",
        servers(&[&odd, &a, &dead, &b])
    );
    let probe = NatProbe::new(&cfg("stun_nat_probe_concurrency = 2", &net), quick());
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    assert_eq!(probe.public_v4(), Some(PUBLIC.parse().expect("v4")));
    let snap = probe.snapshot();
    assert_eq!(
        snap.live_servers,
        vec![odd.server_entry(), a.server_entry(), b.server_entry()]
    );
}

#[tokio::test]
async fn stun_use_false_or_probe_off_sends_nothing() {
    let r = responder().await;
    for (general, network) in [
        ("", format!("{}stun_use = false\n", servers(&[&r]))),
        ("middle_proxy_nat_probe = false", servers(&[&r])),
    ] {
        let probe = NatProbe::new(&cfg(general, &network), quick());
        assert_eq!(probe.probe_now().await, ProbeOutcome::Skipped);
        assert!(!probe.snapshot().nat_probe_enabled);
        assert_eq!(probe.public_ip_for(ip("10.0.0.1")), None);
    }
    assert_eq!(r.requests(), 0);
}

#[tokio::test]
async fn nothing_to_ask_disables_at_runtime() {
    let probe = NatProbe::new(
        &cfg("", "stun_servers = []\nhttp_ip_detect_urls = []\n"),
        quick(),
    );
    let snap = probe.snapshot();
    assert!(snap.nat_probe_enabled);
    assert!(snap.nat_probe_disabled_runtime);
    assert_eq!(probe.probe_now().await, ProbeOutcome::Skipped);
    let task = probe.spawn_refresh(CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("refresh ends at once")
        .expect("join");
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `body`.
async fn http_ip_server(body: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn http_fallback_after_stun_fails() {
    let r = responder().await;
    r.set_silent(true);
    let bad = http_ip_server("not an address\n").await;
    let good = http_ip_server("203.0.113.50\n").await;
    let net = format!(
        "stun_servers = [\"{}\"]\nstun_tcp_fallback = false\n\
         http_ip_detect_urls = [\"http://{bad}/ip\", \"http://{good}/ip\"]\n",
        r.server_entry()
    );
    let probe = NatProbe::new(&cfg("", &net), quick());
    assert_eq!(probe.probe_now().await, ProbeOutcome::Found);
    assert_eq!(
        probe.public_ip_for(ip("10.0.0.1")),
        Some(ip("203.0.113.50"))
    );
    let snap = probe.snapshot();
    let v4 = snap.reflection_v4.expect("v4");
    assert_eq!(v4.addr, "203.0.113.50:0".parse().expect("addr"));
    // STUN itself still failed: its backoff runs.
    assert_eq!(snap.nat_probe_attempts, 1);
    assert!(snap.stun_backoff_remaining_ms.is_some());
    assert!(snap.live_servers.is_empty());
}

#[tokio::test]
async fn refresh_task_probes_and_stops_on_cancel() {
    let r = responder().await;
    let probe = NatProbe::new(&cfg("", &servers(&[&r])), quick());
    let cancel = CancellationToken::new();
    let task = probe.spawn_refresh(cancel.clone());
    let seen = testkit::poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        probe.public_v4().is_some()
    })
    .await;
    assert!(seen, "the refresh task found the address");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops on cancel")
        .expect("join");
}

#[test]
fn non_public_addresses() {
    for a in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "127.0.0.1",
        "0.0.0.0",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "::1",
        "::",
        "fd12::1",
        "fe80::1",
    ] {
        assert!(is_non_public(ip(a)), "{a}");
    }
    for a in [
        "203.0.113.7",
        "8.8.8.8",
        "100.128.0.1",
        "2001:db8::1",
        "2a00::1",
    ] {
        assert!(!is_non_public(ip(a)), "{a}");
    }
}

#[test]
fn majority_pick_keeps_the_first_on_ties() {
    let sa = |s: &str| -> SocketAddr { s.parse().expect("addr") };
    let b = Batch {
        live: vec!["x".into()],
        found: vec![
            sa("198.51.100.1:1"),
            sa("203.0.113.7:2"),
            sa("[2001:db8::1]:3"),
            sa("203.0.113.7:4"),
        ],
    };
    assert_eq!(b.pick(false), Some(sa("203.0.113.7:2")));
    assert_eq!(b.pick(true), Some(sa("[2001:db8::1]:3")));
    let tie = Batch {
        live: vec![],
        found: vec![sa("198.51.100.1:1"), sa("203.0.113.7:2")],
    };
    assert_eq!(tie.pick(false), Some(sa("198.51.100.1:1")));
}

/// The data plane runs the probe with `use_middle_proxy = true` only.
#[tokio::test]
async fn dataplane_starts_the_probe_only_for_the_middle_proxy_route() {
    let r = responder().await;
    for me in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let text = format!(
            "[general]\nuse_middle_proxy = {me}\n\n[network]\n{}\n\
             [access.users]\nu = \"00112233445566778899aabbccddeeff\"\n",
            servers(&[&r])
        );
        std::fs::write(&path, text).expect("write config");
        let store = config::ConfigStore::open(&path).expect("config loads");
        let stats = stats::Stats::new(SystemTime::now());
        let startup = Arc::new(stats::startup::StartupTracker::new(
            SystemTime::now(),
            stats::startup::TransportMode::Direct,
        ));
        let opts = crate::DataplaneOptions {
            port_override: Some(0),
            listen_override: Some(vec![ip("127.0.0.1")]),
            ..crate::DataplaneOptions::default()
        };
        let dp = crate::Dataplane::start(store, stats, startup, opts).expect("start");
        if me {
            let found =
                testkit::poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    dp.nat_snapshot()
                        .and_then(|s| s.reflection_v4)
                        .is_some_and(|r| r.addr.ip() == ip(PUBLIC))
                })
                .await;
            assert!(found, "the data plane's probe found the address");
            assert_eq!(
                dp.nat_probe().and_then(|p| p.public_ip_for(ip("10.0.0.1"))),
                Some(ip(PUBLIC))
            );
        } else {
            assert!(dp.nat_snapshot().is_none());
            assert!(dp.nat_probe().is_none());
        }
        dp.shutdown(Duration::from_millis(10)).await;
    }
    assert_eq!(r.requests(), 1, "only the middle-proxy data plane asked");
}
