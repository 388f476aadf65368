//! Config publishes apply to new connections at once; deleting, rotating or expiring a user
//! (API edit or hand edit) closes that user's live sessions. The data plane's publish hook is
//! the only thing that does so.

use std::sync::Arc;

use config::{ConfigEvent, UserEdit, UserSecret};
use parking_lot::Mutex;
use testkit::client::TestClient;

use crate::support::*;

async fn live(h: &Harness, user: usize) -> Halves {
    let conn = h.connect(tls_mode(), user).await;
    echo_roundtrip(conn.into_split(), b"still here", 10).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_rotate_close_live_sessions() {
    let h = Harness::start(Cfg::default()).await;
    let (mut alice_rd, _alice_wr) = live(&h, 0).await;
    let bob = live(&h, 1).await;
    let store = std::sync::Arc::clone(&h.store);
    tokio::task::spawn_blocking(move || {
        store.apply(
            None,
            UserEdit::Delete {
                username: "alice".into(),
            },
        )
    })
    .await
    .expect("join")
    .expect("delete");
    alice_rd.wait_eof().await.expect("alice closed");
    // Her counters went with her (the hook drops per-user state of deleted users).
    assert!(h.stats.users().existing("alice").is_none());
    assert!(h.stats.users().existing("bob").is_some());
    // Bob is untouched.
    let (mut bob_rd, _bob_wr) = echo_roundtrip(bob, b"bob ok", 6).await;
    // Alice's secret no longer works: masked.
    let s = h.cfg.users[0].1;
    let init = testkit::client::obfs::new_init(testkit::client::Tag::Intermediate, 2, Some(&s));
    let out = testkit::client::probe::send_probe(
        h.addr(),
        &init.wire,
        std::time::Duration::from_secs(5),
        true,
    )
    .await
    .expect("probe");
    assert_eq!(out.received, testkit::mask::http_reply());

    let new_secret = secret(77);
    let store = std::sync::Arc::clone(&h.store);
    tokio::task::spawn_blocking(move || {
        store.apply(
            None,
            UserEdit::RotateSecret {
                username: "bob".into(),
                secret: UserSecret(new_secret),
            },
        )
    })
    .await
    .expect("join")
    .expect("rotate");
    bob_rd.wait_eof().await.expect("bob closed on rotation");
    let conn = testkit::client::TestClient::connect(h.addr(), tls_mode(), new_secret, 2)
        .await
        .expect("new secret works");
    drop(echo_roundtrip(conn.into_split(), b"rotated", 7).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_add_expire_and_requota_users() {
    let mut h = Harness::start(Cfg::default()).await;
    let (mut alice_rd, _w1) = live(&h, 0).await;
    let (mut bob_rd, _w2) = live(&h, 1).await;
    // Add carol and expire alice in one edit; lower bob's quota under what he used.
    let mut cfg = h.cfg.clone();
    cfg.users.push(("carol".into(), secret(3)));
    cfg.access =
        "user_expirations = { alice = \"2020-01-01T00:00:00Z\" }\nuser_data_quota = { bob = 10 }"
            .into();
    h.rewrite(cfg);
    alice_rd.wait_eof().await.expect("expired alice closed");
    bob_rd.wait_eof().await.expect("bob over quota closed");
    drop(live(&h, 2).await);
    // Un-expire alice: new connections work at once.
    let mut cfg = h.cfg.clone();
    cfg.access = String::new();
    h.rewrite(cfg);
    drop(live(&h, 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_reached_while_connected_closes_the_session() {
    let mut h = Harness::start(Cfg::default()).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let mut cfg = h.cfg.clone();
    cfg.access = format!(
        "user_expirations = {{ alice = \"{}\" }}",
        config::format_expiration(soon)
    );
    h.rewrite(cfg);
    let (mut rd, _wr) = live(&h, 0).await;
    let started = std::time::Instant::now();
    rd.wait_eof().await.expect("closed at expiry");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A client that reconnects with the new secret while the rotation is being published keeps
/// its session: the old entry (old secret) is closed, never "whoever is called bob" after
/// the fact. The reconnect happens inside the publish, right after the data plane's hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_a_client_that_reconnected_with_the_new_secret() {
    let h = Harness::start(Cfg::default()).await;
    let (mut old_rd, _old_wr) = live(&h, 1).await;
    let new_secret = secret(91);
    let addr = h.addr();
    let rt = tokio::runtime::Handle::current();
    let slot: Arc<Mutex<Option<Halves>>> = Arc::new(Mutex::new(None));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let slot = Arc::clone(&slot);
        let armed = Arc::clone(&armed);
        h.store.add_listener(Box::new(move |ev| {
            if !matches!(ev, ConfigEvent::Applied { .. })
                || !armed.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            // The publish runs on a blocking-pool thread, so blocking on the runtime is fine.
            let conn = rt.block_on(async {
                let conn = TestClient::connect(addr, tls_mode(), new_secret, 2)
                    .await
                    .expect("the new secret is accepted inside the publish");
                echo_roundtrip(conn.into_split(), b"reconnected", 11).await
            });
            *slot.lock() = Some(conn);
        }));
    }
    let store = Arc::clone(&h.store);
    tokio::task::spawn_blocking(move || {
        store.apply(
            None,
            UserEdit::RotateSecret {
                username: "bob".into(),
                secret: UserSecret(new_secret),
            },
        )
    })
    .await
    .expect("join")
    .expect("rotate");
    old_rd
        .wait_eof()
        .await
        .expect("the old-secret session is closed");
    let conn = slot.lock().take().expect("listener reconnected");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let conn = echo_roundtrip(conn, b"still relaying", 7).await;
    // And it is counted as bob's live session.
    assert_eq!(
        h.stats
            .users()
            .existing("bob")
            .map(|s| s.current_connections()),
        Some(1)
    );
    drop(conn);
}

/// A changed listener port serves new clients after a reload while sessions accepted on the
/// old port continue; the old port stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_port_changes_on_reload_and_old_sessions_continue() {
    let (p1, p2) = (testkit::free_port(), testkit::free_port());
    let mut h = Harness::start(Cfg {
        port: Some(p1),
        ..Cfg::default()
    })
    .await;
    assert_eq!(h.addr().port(), p1);
    let old = live(&h, 0).await;
    let mut cfg = h.cfg.clone();
    cfg.port = Some(p2);
    cfg.server = "listen_backlog = 64\nmax_connections = 50".into();
    h.rewrite(cfg);
    assert_eq!(h.dp.local_addrs().len(), 1);
    assert_eq!(h.addr().port(), p2);
    drop(live(&h, 1).await);
    drop(echo_roundtrip(old, b"old port session", 4).await);
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", p1)).await;
    assert!(refused.is_err(), "the old port must stop accepting");
}
