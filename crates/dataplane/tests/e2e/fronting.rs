//! Answers that a stock web server would give: the `unrecognized_name` alert for an unknown
//! SNI under `reject_handshake`, and prompt masking of probes that can never become a valid
//! handshake (docs/PROTOCOL.md §4.4, §2.2).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::client::probe::signed_hello;
use testkit::client::HelloShape;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_with_reject_handshake_gets_the_alert_then_fin() {
    let h = Harness::start(Cfg {
        censorship: "unknown_sni_action = \"reject_handshake\"".into(),
        ..Cfg::default()
    })
    .await;
    let s = h.cfg.users[0].1;
    let hello = signed_hello(&s, Some("other.example.org"), HelloShape::Large, now());
    let mut c = tokio::net::TcpStream::connect(h.addr())
        .await
        .expect("connect");
    let started = Instant::now();
    c.write_all(&hello).await.expect("write");
    // No FIN from us: the proxy closes first. A reset would fail `read_to_end`.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("clean FIN, not a reset");
    assert_eq!(got, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);
    // Answered at once (the proto tests show the ServerHello delay does not apply).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        h.mask.connections().is_empty(),
        "nothing reaches the mask host"
    );
    h.wait_for("counted", |h| h.stats.core().connections_bad_total == 1)
        .await;
    let rows: Vec<_> = h
        .stats
        .bad_by_class()
        .into_iter()
        .map(|r| (r.class, r.total))
        .collect();
    assert_eq!(rows, [("tls_unknown_sni", 1)]);
    // The served domain still works.
    let conn = h.connect(tls_mode(), 0).await;
    drop(echo_roundtrip(conn.into_split(), b"hello", 5).await);
}
