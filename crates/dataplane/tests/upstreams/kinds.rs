//! Each upstream type carries every client mode byte-exact to the test DC.

use dataplane::{BndAddrStatus, BndPortStatus, IpPreference};

use crate::servers::*;
use crate::support::*;

pub fn with_upstreams(tail: &str, general: &str) -> Cfg {
    Cfg {
        tail: tail.to_string(),
        general: general.to_string(),
        ..Cfg::default()
    }
}

/// One session per client mode, each echoing data byte-exact; returns the session count.
pub async fn echo_all_modes(h: &Harness) -> u64 {
    let modes = all_modes();
    let n = modes.len();
    for (name, mode) in modes {
        let data = random(200 * 1024 + 11);
        let conn = h.connect(mode, 0).await;
        let halves = echo_roundtrip(conn.into_split(), &data, 16 * 1024 + 1).await;
        drop(halves);
        h.wait_for(name, |h| h.dp.current_by_route().direct == 0)
            .await;
    }
    n as u64
}

/// Counters after `n` sessions that each connected on the first attempt.
pub fn assert_clean_counters(h: &Harness, n: u64) {
    let up = h.stats.upstream();
    assert_eq!(up.connect_attempt_total, n);
    assert_eq!(up.connect_success_total, n);
    assert_eq!(up.connect_fail_total, 0);
    assert_eq!(up.connect_attempts_bucket_1, n);
    assert_eq!(
        up.connect_attempts_bucket_2 + up.connect_attempts_bucket_3_4,
        0
    );
    let success_buckets = up.connect_duration_success_bucket_le_100ms
        + up.connect_duration_success_bucket_101_500ms
        + up.connect_duration_success_bucket_501_1000ms
        + up.connect_duration_success_bucket_gt_1000ms;
    assert_eq!(success_buckets, n);
    assert_eq!(
        h.dc.sessions().len() as u64,
        n,
        "every session reached the DC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_with_password_through_microsocks() {
    let port = free_port();
    let Some(_srv) = microsocks(port, Some(("mtp", "s3cret-pw"))).await else {
        return;
    };
    let h = Harness::start(with_upstreams(
        &format!(
            "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{port}\"\n\
             username = \"mtp\"\npassword = \"s3cret-pw\"\n"
        ),
        "",
    ))
    .await;
    let n = echo_all_modes(&h).await;
    assert_clean_counters(&h, n);
    let rows = h.dp.upstreams_snapshot().expect("snapshot");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.route_kind.as_str(), r.address.as_str()),
        ("socks5", &*format!("127.0.0.1:{port}"))
    );
    assert!(r.healthy && r.fails == 0);
    assert!(r.dc[1].latency_ema_ms.is_some(), "DC 2 latency learned");
    assert_eq!(r.dc[1].ip_preference, IpPreference::PreferV4);
    assert!(r.effective_latency_ms.is_some());
    assert!(
        !format!("{rows:?}").contains("s3cret"),
        "credentials never shown"
    );
    // microsocks answers CONNECT with an all-zero BND (0.0.0.0:0): bogon address, zero port.
    let bnd = h.dp.upstream_bnd().expect("BND observed");
    assert_eq!(bnd.addr_state, BndAddrStatus::Bogon);
    assert_eq!(bnd.port_state, BndPortStatus::Zero);
    assert_eq!(bnd.upstream_id, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks4_and_socks5_through_dante() {
    let port = free_port();
    let Some(_srv) = dante(port).await else {
        return;
    };
    for kind in ["socks4", "socks5"] {
        let extra = if kind == "socks4" {
            "user_id = \"mtproxyd\"\n"
        } else {
            ""
        };
        let h = Harness::start(with_upstreams(
            &format!("[[upstreams]]\ntype = \"{kind}\"\naddress = \"127.0.0.1:{port}\"\n{extra}"),
            "",
        ))
        .await;
        let n = echo_all_modes(&h).await;
        assert_clean_counters(&h, n);
        let rows = h.dp.upstreams_snapshot().expect("snapshot");
        assert_eq!(rows[0].route_kind.as_str(), kind);
        // dante reports its real outgoing socket: 127.0.0.1 (bogon per §9.3), non-zero port.
        let bnd = h.dp.upstream_bnd().expect("BND recorded");
        assert_eq!(bnd.addr_state, BndAddrStatus::Bogon, "{kind}");
        assert_eq!(bnd.port_state, BndPortStatus::Ok, "{kind}");
        assert_eq!(
            bnd.addr.map(|a| a.ip().to_string()).as_deref(),
            Some("127.0.0.1"),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowsocks_aead_through_ss_server() {
    let port = free_port();
    let Some(_srv) = ss_server(port, "ss-test-key", "chacha20-ietf-poly1305").await else {
        return;
    };
    let h = Harness::start(with_upstreams(
        &format!(
            "[[upstreams]]\ntype = \"shadowsocks\"\n\
             url = \"ss://chacha20-ietf-poly1305:ss-test-key@127.0.0.1:{port}\"\n"
        ),
        "",
    ))
    .await;
    let n = echo_all_modes(&h).await;
    assert_clean_counters(&h, n);
    let rows = h.dp.upstreams_snapshot().expect("snapshot");
    assert_eq!(rows[0].route_kind.as_str(), "shadowsocks");
    assert_eq!(rows[0].address, format!("127.0.0.1:{port}"));
    assert!(!format!("{rows:?}").contains("ss-test-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowsocks_2022_in_process_server() {
    // 32-byte PSK 00 01 .. 1f, base64.
    let psk = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let port = free_port();
    let url = format!("ss://2022-blake3-aes-256-gcm:{psk}@127.0.0.1:{port}");
    let _srv = ss_in_process(&url).await;
    let h = Harness::start(with_upstreams(
        &format!("[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"{url}\"\n"),
        "",
    ))
    .await;
    let n = echo_all_modes(&h).await;
    assert_clean_counters(&h, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_to_new_connections_only() {
    let port = free_port();
    let Some(mut srv) = microsocks(port, None).await else {
        return;
    };
    let socks = format!("[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{port}\"\n");
    let mut h = Harness::start(with_upstreams(&socks, "")).await;
    let live = h
        .connect(testkit::client::Mode::Abridged, 0)
        .await
        .into_split();
    let live = echo_roundtrip(live, &random(10_000), 4096).await;

    // Replace the SOCKS upstream by a weighted direct one.
    h.rewrite(with_upstreams(
        "[[upstreams]]\ntype = \"direct\"\nweight = 7\n",
        "",
    ));
    let rows = h.dp.upstreams_snapshot().expect("snapshot");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].route_kind.as_str(), rows[0].weight), ("direct", 7));
    // The live session keeps its SOCKS path.
    let live = echo_roundtrip(live, &random(10_000), 4096).await;
    drop(live);
    h.wait_for("live session end", |h| h.dp.current_by_route().direct == 0)
        .await;
    // New sessions go direct: they work with the SOCKS server gone.
    srv.kill();
    let conn = h
        .connect(testkit::client::Mode::Secure, 0)
        .await
        .into_split();
    drop(echo_roundtrip(conn, &random(10_000), 4096).await);

    // Re-adding SOCKS next to a disabled entry: disabled ones are not in the runtime set.
    h.rewrite(with_upstreams(
        &format!("{socks}\n[[upstreams]]\ntype = \"direct\"\nenabled = false\n"),
        "",
    ));
    let rows = h.dp.upstreams_snapshot().expect("snapshot");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].route_kind.as_str(), "socks5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_bind_addresses_and_interface_pick_the_source() {
    // Round robin over the configured source addresses of the target's family.
    let h = Harness::start(with_upstreams(
        "[[upstreams]]\ntype = \"direct\"\nbind_addresses = [\"127.0.0.2\", \"127.0.0.3\", \"::1\"]\n",
        "",
    ))
    .await;
    for _ in 0..2 {
        let conn = h
            .connect(testkit::client::Mode::Secure, 0)
            .await
            .into_split();
        drop(echo_roundtrip(conn, &random(1000), 1000).await);
    }
    let mut peers: Vec<String> =
        h.dc.sessions()
            .iter()
            .map(|s| s.peer.ip().to_string())
            .collect();
    peers.sort();
    assert_eq!(peers, vec!["127.0.0.2", "127.0.0.3"]);
    drop(h);

    // `interface` given as an address binds to it as well.
    let h = Harness::start(with_upstreams(
        "[[upstreams]]\ntype = \"direct\"\ninterface = \"127.0.0.4\"\n",
        "",
    ))
    .await;
    let conn = h
        .connect(testkit::client::Mode::Secure, 0)
        .await
        .into_split();
    drop(echo_roundtrip(conn, &random(1000), 1000).await);
    assert_eq!(h.dc.sessions()[0].peer.ip().to_string(), "127.0.0.4");
}

/// Middle-proxy links through SOCKS (docs/PROTOCOL.md §9.3): dante reports 127.0.0.1 as its
/// bound address, a bogon, so `strict` refuses to derive keys from it; `compat` falls back to
/// our own address, which the middle proxy does not see (it sees dante's socket), so the keys
/// differ and the middle proxy drops the link: both outcomes are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middle_proxy_links_through_socks_follow_the_kdf_policy() {
    use testkit::dc::{DcMode, TestDc};
    use testkit::me::{random_proxy_secret, MeFiles, MeOptions, TestMe};
    let port = free_port();
    let Some(_srv) = dante(port).await else {
        return;
    };
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let me = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME");
    let files = MeFiles::write(&secret, Some(2), &[(2, me.addr())]).expect("files");
    let cfg = |policy: &str| Cfg {
        middle_proxy: Some(format!(
            "{}me_socks_kdf_policy = \"{policy}\"\nme_reconnect_backoff_base_ms = 100\n\
             me_reconnect_backoff_cap_ms = 200\n",
            files.general_keys()
        )),
        ..with_upstreams(
            &format!("[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{port}\"\n"),
            "",
        )
    };
    let mut h = Harness::start(cfg("strict")).await;
    h.wait_for("strict rejects", |h| {
        h.stats.middle_proxy().socks_kdf_strict_reject_total >= 2
    })
    .await;
    assert_eq!(
        me.counters().handshakes_ok,
        0,
        "no handshake over an unusable BND"
    );
    assert!(h
        .dp
        .me_pool_snapshot()
        .is_some_and(|p| p.writers.is_empty()));

    h.rewrite(cfg("compat"));
    h.wait_for("compat fallback and KDF drift", |h| {
        let mp = h.stats.middle_proxy();
        mp.socks_kdf_compat_fallback_total >= 1 && mp.kdf_drift_total >= 1
    })
    .await;
    assert!(me.counters().handshake_failures >= 1);
}
