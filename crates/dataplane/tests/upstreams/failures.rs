//! Refusing, silent, garbage-speaking and wrongly-authenticated upstreams: counted failures
//! with closed (never stuck) client sessions, unhealthy marking, traffic moving to the
//! healthy upstream, recovery, and counters matching what happened.

use std::time::{Duration, Instant};

use testkit::client::Mode;

use crate::kinds::with_upstreams;
use crate::servers::*;
use crate::support::*;

/// Runs one abridged session; `true` if data echoed, `false` if the proxy closed it.
/// Panics if the session neither echoes nor closes within 10 s (a stuck session).
async fn session(h: &Harness) -> bool {
    let mut conn = h.connect(Mode::Abridged, 0).await;
    conn.set_timeout(Duration::from_secs(10));
    let (mut rd, mut wr) = conn.into_split();
    let data = random(4096);
    if wr.send(&data).await.is_err() {
        return false;
    }
    let started = Instant::now();
    let r = rd.recv_exact(data.len()).await;
    assert!(started.elapsed() < Duration::from_secs(9), "session stuck");
    match r {
        Ok(got) => {
            assert!(got == data, "echo differs");
            true
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_upstream_goes_unhealthy_traffic_moves_and_it_recovers() {
    let (port, reservation) = refusing_port();
    let general = "upstream_unhealthy_fail_threshold = 2\nupstream_connect_retry_attempts = 1\n\
                   upstream_connect_retry_backoff_ms = 0\n";
    let h = Harness::start(with_upstreams(
        &format!(
            "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{port}\"\nweight = 5\n\n\
             [[upstreams]]\ntype = \"direct\"\nweight = 1\n"
        ),
        general,
    ))
    .await;
    let (mut ok, mut failed) = (0u64, 0u64);
    for _ in 0..60 {
        if session(&h).await {
            ok += 1;
        } else {
            failed += 1;
        }
        let rows = h.dp.upstreams_snapshot().expect("snapshot");
        if !rows[0].healthy {
            break;
        }
    }
    let rows = h.dp.upstreams_snapshot().expect("snapshot");
    assert!(
        !rows[0].healthy,
        "refusing upstream marked unhealthy: ok={ok} failed={failed} {rows:?} {:?}",
        h.stats.upstream()
    );
    assert!(rows[0].fails >= 2);
    assert!(rows[1].healthy);
    assert_eq!(
        failed, 2,
        "exactly threshold failures before it was taken out"
    );
    // Traffic now goes to the healthy upstream only.
    for _ in 0..8 {
        assert!(session(&h).await, "healthy upstream serves every session");
        ok += 1;
    }
    let up = h.stats.upstream();
    assert_eq!(up.connect_fail_total, failed);
    assert_eq!(up.connect_success_total, ok);
    assert_eq!(up.connect_attempt_total, ok + failed);
    assert_eq!(up.connect_attempts_bucket_1, ok + failed);
    assert_eq!(up.connect_failfast_hard_error_total, 0, "failfast is off");
    let fail_buckets = up.connect_duration_fail_bucket_le_100ms
        + up.connect_duration_fail_bucket_101_500ms
        + up.connect_duration_fail_bucket_501_1000ms
        + up.connect_duration_fail_bucket_gt_1000ms;
    assert_eq!(fail_buckets, failed);
    assert_eq!(
        up.connect_duration_fail_bucket_le_100ms, failed,
        "refusal is fast"
    );

    // The server comes up: the health checker brings the upstream back.
    drop(reservation);
    let Some(_srv) = microsocks(port, None).await else {
        return;
    };
    h.wait_for("recovery", |h| {
        h.dp.upstreams_snapshot()
            .is_some_and(|r| r[0].healthy && r[0].fails == 0)
    })
    .await;
    assert!(session(&h).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_fast_and_are_counted() {
    let port = free_port();
    let Some(_srv) = microsocks(port, Some(("mtp", "right"))).await else {
        return;
    };
    let h = Harness::start(with_upstreams(
        &format!(
            "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{port}\"\n\
             username = \"mtp\"\npassword = \"wrong\"\n"
        ),
        "upstream_connect_retry_attempts = 3\nupstream_connect_failfast_hard_errors = true\n",
    ))
    .await;
    assert!(!session(&h).await, "session closed");
    let up = h.stats.upstream();
    assert_eq!(
        (
            up.connect_attempt_total,
            up.connect_fail_total,
            up.connect_success_total
        ),
        (1, 1, 0)
    );
    assert_eq!(up.connect_failfast_hard_error_total, 1);
    assert_eq!(up.connect_attempts_bucket_1, 1);
    let rows = h.dp.upstreams_snapshot().expect("snapshot");
    assert_eq!(rows[0].fails, 1);
    assert!(
        rows[0].healthy,
        "one failure is below the default threshold (5)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_garbage_servers_are_counted_failures() {
    // Silent: the attempt times out within the 600 ms budget; one attempt only.
    let (silent, _t1) = fake_socks(Fake::Silent).await;
    let h = Harness::start(with_upstreams(
        &format!("[[upstreams]]\ntype = \"socks5\"\naddress = \"{silent}\"\n"),
        "upstream_connect_budget_ms = 600\nupstream_connect_retry_attempts = 2\n",
    ))
    .await;
    assert!(!session(&h).await);
    let up = h.stats.upstream();
    assert_eq!((up.connect_attempt_total, up.connect_fail_total), (1, 1));
    assert_eq!(up.connect_duration_fail_bucket_501_1000ms, 1);
    drop(h);

    // Garbage reply: malformed SOCKS, retried once (not a hard error), then failed.
    let (garbage, _t2) = fake_socks(Fake::Garbage).await;
    let h = Harness::start(with_upstreams(
        &format!("[[upstreams]]\ntype = \"socks5\"\naddress = \"{garbage}\"\n"),
        "upstream_connect_retry_attempts = 2\nupstream_connect_retry_backoff_ms = 10\n\
         upstream_connect_failfast_hard_errors = true\n",
    ))
    .await;
    assert!(!session(&h).await);
    let up = h.stats.upstream();
    assert_eq!((up.connect_attempt_total, up.connect_fail_total), (2, 1));
    assert_eq!(up.connect_attempts_bucket_2, 1);
    assert_eq!(up.connect_failfast_hard_error_total, 0);
    // SOCKS4 through a garbage server fails the same way.
    let h2 = Harness::start(with_upstreams(
        &format!("[[upstreams]]\ntype = \"socks4\"\naddress = \"{garbage}\"\n"),
        "upstream_connect_retry_attempts = 1\n",
    ))
    .await;
    assert!(!session(&h2).await);
    assert_eq!(h2.stats.upstream().connect_fail_total, 1);
}
