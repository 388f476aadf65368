//! Config publishes apply to new connections at once; deleting, rotating or expiring a user
//! (API edit or hand edit) closes that user's live sessions.

use config::{UserEdit, UserSecret};
use testkit::client::Mode;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_user_sessions_from_the_handle() {
    let h = Harness::start(Cfg::default()).await;
    let (mut rd, _wr) = live(&h, 0).await;
    let closer = h.dp.session_closer();
    closer("alice");
    rd.wait_eof().await.expect("closed");
    // Only live sessions are affected.
    let conn = h.connect(Mode::Secure, 0).await;
    drop(echo_roundtrip(conn.into_split(), b"again", 5).await);
}
