//! Byte-exact relaying per mode, fast mode on and off, concurrency, half-close, stats.

use std::time::Duration;

use testkit::client::Mode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_every_mode_byte_exact_fast_and_slow() {
    for fast_mode in [true, false] {
        let h = Harness::start(Cfg {
            fast_mode,
            ..Cfg::default()
        })
        .await;
        for (i, (name, mode)) in all_modes().into_iter().enumerate() {
            let tag = mode.tag();
            let data = random(1024 * 1024 + 17);
            let conn = h.connect(mode, 0).await;
            let halves = echo_roundtrip(conn.into_split(), &data, 70_001).await;
            assert_eq!(h.dp.current_by_route().direct, 1, "{name}");
            let sessions = h.dc.sessions();
            let last = sessions.last().expect("dc session");
            assert_eq!(sessions.len(), i + 1, "{name}");
            assert_eq!((last.tag, last.dc), (Some(tag), 2), "{name}");
            let alice = h.stats.users().get("alice").expect("alice stats");
            assert_eq!(alice.current_connections, 1, "{name}");
            assert!(alice.octets_from_client >= data.len() as u64, "{name}");
            assert!(alice.octets_to_client >= data.len() as u64, "{name}");
            assert_eq!(
                h.stats.ips().active_ips("alice"),
                vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
            );
            drop(halves);
            h.wait_for("session end", |h| h.dp.current_by_route().direct == 0)
                .await;
            h.wait_for("user gauge", |h| {
                h.stats
                    .users()
                    .get("alice")
                    .is_some_and(|a| a.current_connections == 0)
            })
            .await;
        }
        let core = h.stats.core();
        assert_eq!(core.connections_total, 5);
        assert_eq!(core.connections_bad_total, 0);
        assert!(h
            .stats
            .events()
            .recent(10)
            .iter()
            .any(|e| e.event_type == "admission.state"));
        assert!(h.dp.accepting_new_connections());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_stay_separate() {
    let h = std::sync::Arc::new(Harness::start(Cfg::default()).await);
    let mut tasks = Vec::new();
    for i in 0..16usize {
        let h = std::sync::Arc::clone(&h);
        tasks.push(tokio::spawn(async move {
            let modes = all_modes();
            let (_, mode) = modes[i % modes.len()].clone();
            let data = random(100_000 + i);
            let conn = h.connect(mode, i % 2).await;
            let halves = echo_roundtrip(conn.into_split(), &data, 8_000 + i).await;
            drop(halves);
        }));
    }
    for t in tasks {
        t.await.expect("session task");
    }
    assert_eq!(h.stats.core().connections_total, 16);
    assert_eq!(h.stats.core().connections_bad_total, 0);
    h.wait_for("all closed", |h| h.dp.current_by_route().direct == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_delivers_the_tail_then_eof() {
    let h = Harness::start(Cfg::default()).await;
    for (name, mode) in all_modes() {
        let data = random(200_000);
        let conn = h.connect(mode, 1).await;
        let (mut rd, mut wr) = conn.into_split();
        wr.send(&data).await.expect("send");
        wr.shutdown().await.expect("half close");
        let got = rd.recv_exact(data.len()).await.expect("echo after FIN");
        assert!(got == data, "{name}");
        rd.wait_eof().await.expect("eof");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_cuts_sessions() {
    let h = Harness::start(Cfg::default()).await;
    let conn = h.connect(tls_mode(), 0).await;
    let (mut rd, wr) = echo_roundtrip(conn.into_split(), b"ping", 4).await;
    h.dp.shutdown(Duration::from_millis(200)).await;
    assert!(!h.dp.accepting_new_connections());
    rd.wait_eof().await.expect("cut");
    drop(wr);
    assert!(tokio::net::TcpStream::connect(h.addr()).await.is_err());
    let events = h.stats.events().recent(10);
    assert!(events
        .iter()
        .any(|e| e.event_type == "admission.state" && e.context.contains("accepting=false")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_active_ones_kept() {
    let h = Harness::start(Cfg {
        timeouts: "relay_client_idle_soft_secs = 1\nrelay_client_idle_hard_secs = 2\nrelay_idle_grace_after_downstream_activity_secs = 1".into(),
        ..Cfg::default()
    })
    .await;
    // Active: a ping every 300 ms for 3 s keeps the session.
    let conn = h.connect(Mode::Secure, 0).await;
    let mut halves = conn.into_split();
    let mut last_activity = std::time::Instant::now();
    for _ in 0..10 {
        halves = echo_roundtrip(halves, b"ping", 4).await;
        last_activity = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Silent: closed after the soft timeout (no downstream activity either), counted from
    // the last ping (not from the end of the last pause, which made the bound racy).
    let (mut rd, _wr) = halves;
    rd.wait_eof().await.expect("idle close");
    let waited = last_activity.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_concurrent_clients() {
    let h = Harness::start(Cfg {
        server: "max_connections = 1\naccept_permit_timeout_ms = 100".into(),
        ..Cfg::default()
    })
    .await;
    let first = echo_roundtrip(h.connect(Mode::Secure, 0).await.into_split(), b"one", 3).await;
    let out = testkit::client::probe::send_probe(h.addr(), b"x", Duration::from_secs(3), false)
        .await
        .expect("probe");
    assert!(out.closed && out.received.is_empty(), "{out:?}");
    assert_eq!(h.stats.core().accept_permit_timeout_total, 1);
    drop(first);
    h.wait_for("slot freed", |h| h.dp.live_connections() == 0)
        .await;
    drop(echo_roundtrip(h.connect(Mode::Secure, 0).await.into_split(), b"two", 3).await);
}
