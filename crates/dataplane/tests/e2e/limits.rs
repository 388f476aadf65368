//! Admission limits: max TCP connections, data quota, expiration, unique IPs in each mode.
//! A refused client is masked (the mask host receives its init), never told why.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use testkit::client::Mode;
use testkit::dc::DcMode;
use testkit::mask::MaskReply;

use crate::support::*;

/// A classic connection for user `user` that must end at the mask host (connection `idx`).
async fn assert_refused(h: &Harness, addr: SocketAddr, user: usize, idx: usize) {
    let conn = h.connect_to(addr, Mode::Intermediate, user).await;
    let init = conn.init_wire();
    let (mut rd, mut wr) = conn.into_split();
    wr.send(b"ping").await.expect("send");
    let got = h.mask.wait_received(idx, 64, Duration::from_secs(5)).await;
    assert_eq!(
        got.as_deref().map(|g| &g[..64]),
        Some(&init[..]),
        "masked with the init"
    );
    drop(wr);
    let _ = rd.wait_eof().await;
}

async fn assert_admitted(h: &Harness, addr: SocketAddr, user: usize) -> Halves {
    let conn = h.connect_to(addr, Mode::Intermediate, user).await;
    echo_roundtrip(conn.into_split(), b"are you there?", 14).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tcp_conns_per_user_and_global_default() {
    let h = Harness::start(Cfg {
        access: "user_max_tcp_conns = { alice = 2 }\nuser_max_tcp_conns_global_each = 1".into(),
        ..Cfg::default()
    })
    .await;
    let a = h.addr();
    let a1 = assert_admitted(&h, a, 0).await;
    let a2 = assert_admitted(&h, a, 0).await;
    assert_refused(&h, a, 0, 0).await;
    let b1 = assert_admitted(&h, a, 1).await;
    assert_refused(&h, a, 1, 1).await;
    assert_eq!(h.stats.core().connections_bad_total, 2);
    let classes: Vec<_> = h
        .stats
        .bad_by_class()
        .into_iter()
        .map(|r| (r.class, r.total))
        .collect();
    assert_eq!(classes, [("user_max_tcp_conns", 2)]);
    drop(a1);
    h.wait_for("alice slot freed", |h| {
        h.stats
            .users()
            .get("alice")
            .is_some_and(|u| u.current_connections == 1)
    })
    .await;
    let a3 = assert_admitted(&h, a, 0).await;
    drop((a2, a3, b1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_quota_cuts_the_session_and_refuses_new_ones() {
    let h = Harness::start_with(
        Cfg {
            access: "user_data_quota = { alice = 100000 }".into(),
            ..Cfg::default()
        },
        DcMode::Echo,
        MaskReply::Http,
        None,
    )
    .await;
    let conn = h.connect(tls_mode(), 0).await;
    let (mut rd, mut wr) = conn.into_split();
    let data = random(40_000);
    wr.send(&data).await.expect("send");
    let got = rd.recv_exact(data.len()).await.expect("echo under quota");
    assert!(got == data);
    // Crossing the quota (both directions count) ends the session.
    let _ = wr.send(&random(40_000)).await;
    rd.wait_eof().await.expect("cut at quota");
    let used = h
        .stats
        .users()
        .get("alice")
        .expect("stats")
        .quota_used_bytes;
    assert!(used >= 100_000, "{used}");
    assert_refused(&h, h.addr(), 0, 0).await;
    // Bob has no quota.
    drop(assert_admitted(&h, h.addr(), 1).await);
    // An operator's reset re-admits alice at once and is remembered.
    let at = h.dp.reset_user_quota("alice");
    assert!(at > 0);
    let alice = h.stats.users().existing("alice").expect("stats");
    assert_eq!(alice.last_quota_reset_epoch_secs(), at);
    drop(assert_admitted(&h, h.addr(), 0).await);
}

/// Disabling keeps the user's entry but takes it out of matching: the live session is cut and
/// new clients end at the mask host like unknown ones; enabling restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_user_is_masked_and_re_enabled_relays_again() {
    let h = Harness::start(Cfg::default()).await;
    let (mut rd, _wr) = assert_admitted(&h, h.addr(), 0).await;
    let set = |on: bool| {
        let store = std::sync::Arc::clone(&h.store);
        tokio::task::spawn_blocking(move || {
            let patch = config::UserPatch {
                enabled: Some(on),
                ..Default::default()
            };
            store.apply(
                None,
                config::UserEdit::Patch {
                    username: "alice".into(),
                    patch,
                },
            )
        })
    };
    set(false).await.expect("join").expect("disable");
    rd.wait_eof().await.expect("live session closed on disable");
    let bad_before = h.stats.core().connections_bad_total;
    assert_refused(&h, h.addr(), 0, 0).await;
    assert!(h.stats.core().connections_bad_total > bad_before);
    // Her counters survive a disable (only a delete forgets them).
    assert!(h.stats.users().existing("alice").is_some());
    drop(assert_admitted(&h, h.addr(), 1).await);
    set(true).await.expect("join").expect("enable");
    drop(assert_admitted(&h, h.addr(), 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_user_is_refused() {
    let h = Harness::start(Cfg {
        access: "user_expirations = { alice = \"2020-01-01T00:00:00Z\", bob = \"2999-01-01T00:00:00Z\" }".into(),
        ..Cfg::default()
    })
    .await;
    assert_refused(&h, h.addr(), 0, 0).await;
    drop(assert_admitted(&h, h.addr(), 1).await);
}

async fn ip_harness(mode: &str) -> Harness {
    Harness::start_with(
        Cfg {
            access: format!(
                "user_max_unique_ips = {{ alice = 1 }}\nuser_max_unique_ips_mode = \"{mode}\"\nuser_max_unique_ips_window_secs = 30"
            ),
            ..Cfg::default()
        },
        DcMode::Echo,
        MaskReply::Http,
        Some(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_ip_limit_in_each_mode() {
    for (mode, v6_after_close) in [
        ("active_window", true),
        ("time_window", false),
        ("combined", false),
    ] {
        let h = ip_harness(mode).await;
        let v4 = h.dp.local_addrs()[0];
        let v6 = h.dp.local_addrs()[1];
        assert!(v6.is_ipv6());
        let first = assert_admitted(&h, v4, 0).await;
        // Same IP again is fine; another IP is not.
        let again = assert_admitted(&h, v4, 0).await;
        assert_refused(&h, v6, 0, 0).await;
        assert_eq!(
            h.stats.ips().active_ips("alice"),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()],
            "{mode}"
        );
        // Other users are not limited.
        drop(assert_admitted(&h, v6, 1).await);
        drop((first, again));
        h.wait_for("alice gone", |h| {
            h.stats.ips().active_ips("alice").is_empty()
        })
        .await;
        if v6_after_close {
            drop(assert_admitted(&h, v6, 0).await);
        } else {
            // Still "recent" within the window.
            assert_refused(&h, v6, 0, 1).await;
        }
    }
}

/// `access.user_rate_limits`: a capped download never runs faster than its cap (the pacing
/// is shared by all the user's sessions; another user is not paced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_download_holds_its_cap() {
    const CAP_BYTES: u64 = 400_000; // 3.2 Mbit/s
    const N: usize = 1_200_000;
    let h = Harness::start(Cfg {
        tail: format!(
            "[access.user_rate_limits]\nalice = {{ down_bps = {} }}\n",
            CAP_BYTES * 8
        ),
        ..Cfg::default()
    })
    .await;
    let conn = h.connect(Mode::Intermediate, 0).await;
    let (mut rd, mut wr) = conn.into_split();
    let data = random(N);
    let t0 = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        wr.send(&data).await.expect("send");
        wr
    });
    let got = rd.recv_exact(N).await.expect("echo");
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(got.len(), N);
    drop(writer.await);
    let rate = N as f64 / elapsed;
    // Never faster than the cap (a 50 ms burst allowance); not absurdly slower either.
    assert!(
        rate <= CAP_BYTES as f64 * 1.06,
        "{rate:.0} B/s over a {CAP_BYTES} B/s cap"
    );
    assert!(
        rate >= CAP_BYTES as f64 * 0.5,
        "{rate:.0} B/s far under the cap"
    );
    // Bob is not paced.
    drop(assert_admitted(&h, h.addr(), 1).await);
}
