//! Active probes end at the mask server with every byte they sent, see its reply, and count
//! as bad connections under their own class; drop / discard / timeout / PROXY-protocol
//! behaviour.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testkit::client::probe::{bad_digest_hello, send_probe, signed_hello};
use testkit::client::HelloShape;
use testkit::dc::DcMode;
use testkit::mask::{http_reply, MaskReply};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(5);

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The non-zero bad-connection classes, which must add up to `connections_bad_total`.
fn classes(h: &Harness) -> Vec<(&'static str, u64)> {
    let rows: Vec<_> = h
        .stats
        .bad_by_class()
        .into_iter()
        .map(|r| (r.class, r.total))
        .collect();
    let sum: u64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(sum, h.stats.core().connections_bad_total, "{rows:?}");
    rows
}

/// Sends `bytes` (then FIN when `half_close`), expects the mask server to receive exactly
/// `bytes` on connection `idx` and the prober to receive the mask's reply.
async fn assert_masked(h: &Harness, bytes: &[u8], half_close: bool, idx: usize) {
    // Without FIN the mask site keeps the connection open: just wait for its reply.
    let wait = if half_close {
        WAIT
    } else {
        Duration::from_millis(1500)
    };
    let out = send_probe(h.addr(), bytes, wait, half_close)
        .await
        .expect("probe");
    assert_eq!(out.received, http_reply(), "prober sees the mask site");
    let got = h.mask.wait_received(idx, bytes.len(), WAIT).await;
    assert_eq!(got.as_deref(), Some(bytes), "mask got every byte unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_reach_the_mask_host_and_count_as_bad() {
    let h = Harness::start(Cfg {
        censorship: "unknown_sni_action = \"mask\"".into(),
        ..Cfg::default()
    })
    .await;
    let s = h.cfg.users[0].1;
    // 1. random bytes (more than an init), 2. a long HTTP request, 3. a short HTTP request
    // followed by FIN (both masked on their method, §2.2), 4. fake TLS with a bad digest,
    // 5. fake TLS for an unknown SNI.
    assert_masked(&h, &random_probe(300), true, 0).await;
    let long_get = format!("GET /{} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n", "a".repeat(80));
    assert_masked(&h, long_get.as_bytes(), true, 1).await;
    assert_masked(&h, b"GET / HTTP/1.1\r\n\r\n", true, 2).await;
    assert_masked(&h, &bad_digest_hello(&s, Some(DOMAIN)), true, 3).await;
    let wrong_sni = signed_hello(&s, Some("other.example.org"), HelloShape::Large, now());
    assert_masked(&h, &wrong_sni, true, 4).await;
    // 6. a replayed obfuscated2 init, 7. a replayed ClientHello.
    let conn = h.connect(Mode::Intermediate, 0).await;
    let init = conn.init_wire();
    let (rd, wr) = echo_roundtrip(conn.into_split(), b"hello", 5).await;
    drop((rd, wr));
    let mut replay = init.to_vec();
    replay.extend_from_slice(&random(40));
    assert_masked(&h, &replay, true, 5).await;
    let conn = h.connect(tls_mode(), 0).await;
    let hello = conn.client_hello().expect("hello").to_vec();
    let (rd, wr) = echo_roundtrip(conn.into_split(), b"hello", 5).await;
    drop((rd, wr));
    assert_masked(&h, &hello, true, 6).await;
    // A timestamp far outside the window.
    let stale = signed_hello(&s, Some(DOMAIN), HelloShape::Small517, now() - 3600);
    assert_masked(&h, &stale, true, 7).await;
    let core = h.stats.core();
    assert_eq!(core.connections_bad_total, 8);
    assert_eq!(core.connections_total, 10);
    assert_eq!(h.dc.counters().sessions, 2, "probes never reach the DC");
    assert_eq!(
        classes(&h),
        [
            ("obfs2_forbidden_prefix", 2),   // long HTTP GET, short HTTP GET + FIN
            ("obfs2_no_matching_secret", 1), // random bytes
            ("obfs2_replay", 1),
            ("tls_no_matching_secret", 1), // bad digest
            ("tls_replay", 1),
            ("tls_stale_timestamp", 1),
            ("tls_unknown_sni", 1),
        ]
    );
}

use testkit::client::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_masks_plain_traffic_at_once_and_drops_unknown_sni() {
    let h = Harness::start(Cfg {
        classic: false,
        secure: false,
        ..Cfg::default()
    })
    .await;
    // Fewer than 64 bytes and no FIN: masked without waiting for an init.
    assert_masked(&h, b"GET / HTTP/1.1\r\n\r\n", false, 0).await;
    // A classic client is not admitted.
    let s = h.cfg.users[0].1;
    let init = testkit::client::obfs::new_init(testkit::client::Tag::Padded, 2, Some(&s));
    assert_masked(&h, &init.wire, true, 1).await;
    // Unknown SNI with the default `drop`: closed, nothing reaches the mask host.
    let wrong_sni = signed_hello(&s, Some("other.example.org"), HelloShape::Large, now());
    let out = send_probe(h.addr(), &wrong_sni, WAIT, false)
        .await
        .expect("probe");
    assert!(out.closed && out.received.is_empty(), "{out:?}");
    assert_eq!(h.mask.connections().len(), 2);
    // ee still works.
    let conn = h.connect(tls_mode(), 1).await;
    drop(echo_roundtrip(conn.into_split(), &random(5000), 1000).await);
    assert_eq!(h.stats.core().connections_bad_total, 3);
    assert_eq!(classes(&h), [("plain_disabled", 2), ("tls_unknown_sni", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_off_discards_then_closes_and_handshake_times_out() {
    let h = Harness::start_with(
        Cfg {
            mask: false,
            handshake_secs: 1,
            ..Cfg::default()
        },
        DcMode::Echo,
        MaskReply::Http,
        None,
    )
    .await;
    let out = send_probe(h.addr(), &random_probe(5000), WAIT, true)
        .await
        .expect("probe");
    assert!(out.closed && out.received.is_empty(), "{out:?}");
    assert!(h.mask.connections().is_empty());
    // Silent client: closed after `client_handshake`.
    let started = std::time::Instant::now();
    let out = send_probe(h.addr(), &[], WAIT, false).await.expect("probe");
    assert!(out.closed && out.received.is_empty(), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    h.wait_for("timeout counted", |h| {
        h.stats.core().handshake_timeouts_total == 1
    })
    .await;
    h.wait_for("timeout classified", |h| {
        h.stats.core().connections_bad_total == 2
    })
    .await;
    assert_eq!(
        classes(&h),
        [("handshake_timeout", 1), ("obfs2_no_matching_secret", 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_header_sets_the_client_address() {
    let h = Harness::start(Cfg {
        server: "proxy_protocol = true\nproxy_protocol_trusted_cidrs = [\"127.0.0.0/8\"]".into(),
        censorship: "mask_proxy_protocol = 1".into(),
        ..Cfg::default()
    })
    .await;
    let header = b"PROXY TCP4 10.1.2.3 192.0.2.7 5555 443\r\n";
    let body = b"PUT / HTTP/1.1\r\n\r\n";
    let out = send_probe(h.addr(), &[&header[..], body].concat(), WAIT, true)
        .await
        .expect("probe");
    assert_eq!(out.received, http_reply());
    let want = [&b"PROXY TCP4 10.1.2.3 192.0.2.7 5555 443\r\n"[..], body].concat();
    let got = h.mask.wait_received(0, want.len(), WAIT).await;
    assert_eq!(got.as_deref(), Some(&want[..]));
    // No header: closed, not masked.
    let out = send_probe(h.addr(), body, WAIT, true).await.expect("probe");
    assert!(out.closed && out.received.is_empty());
    assert_eq!(h.mask.connections().len(), 1);
    assert_eq!(h.stats.core().connections_bad_total, 2);
    assert_eq!(
        classes(&h),
        [("obfs2_truncated", 1), ("proxy_header_invalid", 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_proxy_header_sender_is_refused() {
    let h = Harness::start(Cfg {
        server: "proxy_protocol = true\nproxy_protocol_trusted_cidrs = [\"10.0.0.0/8\"]".into(),
        ..Cfg::default()
    })
    .await;
    let header = b"PROXY TCP4 10.1.2.3 192.0.2.7 5555 443\r\nGET / HTTP/1.1\r\n\r\n";
    let out = send_probe(h.addr(), header, WAIT, true)
        .await
        .expect("probe");
    assert!(out.closed && out.received.is_empty());
    assert!(h.mask.connections().is_empty());
    assert_eq!(classes(&h), [("proxy_header_untrusted_peer", 1)]);
}

/// `replay_check_len = 0` switches replay protection off: a replayed init is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_check_len_zero_disables_the_replay_cache() {
    let h = Harness::start(Cfg {
        access: "replay_check_len = 0".into(),
        ..Cfg::default()
    })
    .await;
    let conn = h.connect(Mode::Intermediate, 0).await;
    let init = conn.init_wire();
    drop(echo_roundtrip(conn.into_split(), b"hello", 5).await);
    let mut replay = init.to_vec();
    replay.extend_from_slice(&random(40));
    let _ = send_probe(h.addr(), &replay, Duration::from_secs(2), false).await;
    h.wait_for("the replay reached the DC", |h| {
        h.dc.counters().sessions == 2
    })
    .await;
    assert!(classes(&h).is_empty(), "{:?}", classes(&h));
}
