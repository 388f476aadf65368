//! Answers that a stock web server would give: the `unrecognized_name` alert for an unknown
//! SNI under `reject_handshake`, and prompt masking of probes that can never become a valid
//! handshake (docs/PROTOCOL.md §4.4, §2.2), and the emulated flight of repeat ee clients
//! (§4.9).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::client::probe::signed_hello;
use testkit::client::HelloShape;
use testkit::mask::http_reply;
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
    assert_eq!(classes(&h), [("tls_unknown_sni", 1)]);
    // The served domain still works.
    let conn = h.connect(tls_mode(), 0).await;
    drop(echo_roundtrip(conn.into_split(), b"hello", 5).await);
}

/// Bad-connection classes and counts.
fn classes(h: &Harness) -> Vec<(&'static str, u64)> {
    h.stats
        .bad_by_class()
        .into_iter()
        .map(|r| (r.class, r.total))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_http_probe_held_open_is_masked_at_once_with_classic_and_secure_on() {
    let h = Harness::start(Cfg {
        handshake_secs: 10,
        ..Cfg::default()
    })
    .await;
    let get = b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_eq!(get.len(), 38);
    // No FIN: a web server answers anyway, and so must we, long before the 10 s timer.
    let mut c = tokio::net::TcpStream::connect(h.addr())
        .await
        .expect("connect");
    let started = Instant::now();
    c.write_all(get).await.expect("write");
    let want = http_reply();
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(got, want, "prober sees the mask site");
    let got = h
        .mask
        .wait_received(0, get.len(), Duration::from_secs(5))
        .await;
    assert_eq!(got.as_deref(), Some(&get[..]));
    h.wait_for("counted", |h| h.stats.core().connections_bad_total == 1)
        .await;
    assert_eq!(classes(&h), [("obfs2_forbidden_prefix", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_hello_held_open_reaches_the_mask_host_when_the_timer_fires() {
    let h = Harness::start(Cfg {
        handshake_secs: 1,
        ..Cfg::default()
    })
    .await;
    let s = h.cfg.users[0].1;
    let hello = signed_hello(&s, Some(DOMAIN), HelloShape::Small517, now());
    let part = &hello[..200];
    let mut c = tokio::net::TcpStream::connect(h.addr())
        .await
        .expect("connect");
    let started = Instant::now();
    c.write_all(part).await.expect("write");
    let want = http_reply();
    let mut reply = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut reply))
        .await
        .expect("answered")
        .expect("masked, not closed");
    assert_eq!(reply, want, "prober sees the mask site");
    let got = h
        .mask
        .wait_received(0, part.len(), Duration::from_secs(5))
        .await;
    assert_eq!(got.as_deref(), Some(part), "the mask host got every byte");
    // Not before the (1 s) handshake timer.
    assert!(started.elapsed() >= Duration::from_millis(900));
    h.wait_for("timeout counted", |h| {
        h.stats.core().handshake_timeouts_total == 1
    })
    .await;
    assert_eq!(classes(&h), [("handshake_timeout", 1)]);
}

/// `(content type, payload length)` of every record after the ServerHello record.
fn flight_records(wire: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut at = 5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]));
    while let Some(h) = wire.get(at..at + 5) {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        out.push((h[0], len));
        at += 5 + len;
    }
    assert_eq!(at, wire.len(), "whole records");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_ee_handshake_from_one_ip_gets_the_compact_flight_and_still_relays() {
    // Emulation on (the mask host is no TLS origin: the domain keeps a randomized plan of
    // 2300..5200 bytes, compact ≈ 85..109), the default TTL of 90 s spelled out.
    let h = Harness::start(Cfg {
        censorship: "tls_emulation = true\ntls_full_cert_ttl_secs = 90".into(),
        ..Cfg::default()
    })
    .await;
    let mut lens = Vec::new();
    for round in 0..3u8 {
        // The testkit client checks the digest over exactly ServerHello + CCS + one record.
        let conn = h.connect(tls_mode(), 0).await;
        let records = flight_records(conn.server_hello().expect("ServerHello kept"));
        assert_eq!(
            records.len(),
            2,
            "CCS and ONE application-data record: {records:?}"
        );
        assert_eq!(records[0], (0x14, 1));
        assert_eq!(records[1].0, 0x17);
        lens.push(records[1].1);
        drop(echo_roundtrip(conn.into_split(), &[round; 300], 100).await);
    }
    eprintln!("flight record lengths: {lens:?}");
    assert!(lens[0] >= 2300 - 16, "first: the full flight: {lens:?}");
    assert!(
        (64..=110).contains(&lens[1]) && lens[2] == lens[1],
        "repeats within the TTL: the compact one: {lens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_gives_every_ee_handshake_the_full_flight() {
    let h = Harness::start(Cfg {
        censorship: "tls_emulation = true\ntls_full_cert_ttl_secs = 0".into(),
        ..Cfg::default()
    })
    .await;
    for _ in 0..2 {
        let conn = h.connect(tls_mode(), 0).await;
        let records = flight_records(conn.server_hello().expect("ServerHello kept"));
        assert!(records[1].1 >= 2300 - 16, "{records:?}");
        drop(echo_roundtrip(conn.into_split(), b"hello", 5).await);
    }
}
