//! The middle-proxy route end to end: testkit clients (every mode) → data plane → test middle
//! proxies (real handshake, KDF, RPC) → test DC; ad tags, client addresses, writer loss and
//! the fallback to direct.

use std::time::Duration;

use testkit::client::{Mode, TestClient};
use testkit::dc::{DcMode, TestDc};
use testkit::me::{random_proxy_secret, MeFiles, MeOptions, Misbehave, TestMe};

use crate::support::*;

const TAG_ALICE: [u8; 16] = [0xa1; 16];
const TAG_GLOBAL: [u8; 16] = [0x60; 16];

/// A data plane whose config lists `mes` as the middle proxies of DC 2 (and the default).
struct MeSetup {
    h: Harness,
    files: MeFiles,
}

async fn start_me(mes: &[&TestMe], secret: &[u8], extra: &str) -> MeSetup {
    let entries: Vec<(i16, std::net::SocketAddr)> = mes.iter().map(|m| (2, m.addr())).collect();
    let files = MeFiles::write(secret, Some(2), &entries).expect("ME files");
    let keys = format!(
        "{}ad_tag = \"{}\"\nme_keepalive_interval_secs = 1\nme_keepalive_jitter_secs = 0\n\
         me_reconnect_backoff_base_ms = 100\nme_reconnect_backoff_cap_ms = 400\n\
         me_reconnect_fast_retry_count = 2\n{extra}",
        files.general_keys(),
        hex(&TAG_GLOBAL),
    );
    let cfg = Cfg {
        middle_proxy: Some(keys),
        access: format!("[access.user_ad_tags]\nalice = \"{}\"\n", hex(&TAG_ALICE)),
        ..Cfg::default()
    };
    let h = Harness::start(cfg).await;
    MeSetup { h, files }
}

impl MeSetup {
    async fn wait_ready(&self) {
        self.h.wait_for("ME pool ready", |h| h.dp.me_ready()).await;
    }
}

/// One echo DC and one middle proxy (misbehaving as asked) in front of a data plane whose
/// ME pool is ready.
struct OneMe {
    dc: TestDc,
    me: TestMe,
    s: MeSetup,
    secret: Vec<u8>,
}

async fn one_me(misbehave: Misbehave, extra: &str) -> OneMe {
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let mut opts = MeOptions::new(secret.clone());
    opts.misbehave = misbehave;
    let me = TestMe::start(dc.addr(), opts).await.expect("ME");
    let s = start_me(&[&me], &secret, extra).await;
    s.wait_ready().await;
    OneMe { dc, me, s, secret }
}

async fn packet_echo(conn: &mut testkit::client::TestConn, sizes: &[usize]) {
    for &n in sizes {
        let p = random(n);
        conn.send_packet(&p).await.expect("send packet");
        let got = conn.recv_packet().await.expect("echoed packet");
        assert!(got == p, "packet of {n} bytes differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_reaches_the_dc_through_the_middle_proxy_with_ad_tags_and_addresses() {
    let OneMe {
        dc: _dc,
        me,
        s,
        secret: _,
    } = one_me(Misbehave::default(), "").await;
    let snap = s.h.dp.me_pool_snapshot().expect("pool");
    assert!(snap.ready);
    assert!(!snap.writers.is_empty());
    assert!(snap
        .writers
        .iter()
        .all(|w| w.dc == 2 && w.endpoint == me.addr()));

    let sizes = [4usize, 64, 1000, 4096, 65_536, 300_000];
    for (i, (name, mode)) in all_modes().into_iter().enumerate() {
        for (user, tag) in [(0usize, TAG_ALICE), (1, TAG_GLOBAL)] {
            let mut conn = s.h.connect(mode.clone(), user).await;
            packet_echo(&mut conn, &sizes).await;
            assert_eq!(s.h.dp.current_by_route().me, 1, "{name}");
            assert_eq!(s.h.dp.current_by_route().direct, 0, "{name}");
            let local = conn.local_addr();
            let rec = me
                .conns()
                .into_iter()
                .find(|c| c.client == local)
                .unwrap_or_else(|| panic!("{name}: ME saw no conn from {local}"));
            assert_eq!(rec.ad_tag, Some(tag), "{name} user {user}");
            assert_eq!(rec.ours, s.h.addr(), "{name}");
            assert_eq!(rec.requests, sizes.len() as u64, "{name}");
            drop(conn);
            s.h.wait_for("ME session end", |h| h.dp.current_by_route().me == 0)
                .await;
            let _ = i;
        }
    }
    // The middle proxy heard about every closed client.
    let conns = me.conns();
    assert_eq!(conns.len(), 10);
    me.wait_until(Duration::from_secs(10), |m| {
        m.conns().iter().all(|c| c.closed_by_proxy)
    })
    .await;
    let mp = s.h.stats.middle_proxy();
    assert!(mp.rpc_proxy_req_signal_sent_total >= 60);
    assert!(mp.rpc_proxy_req_signal_close_sent_total >= 10);
    drop(s.files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_middle_proxy_closes_its_clients_falls_back_and_recovers() {
    let OneMe { dc, me, s, secret } =
        one_me(Misbehave::default(), "me_route_hybrid_max_wait_ms = 300\n").await;
    let me_addr = me.addr();
    let mut conn = s.h.connect(Mode::Intermediate, 0).await;
    packet_echo(&mut conn, &[128]).await;
    let gen_before = s.h.dp.me_pool_snapshot().expect("pool").active_generation;

    // Kill the middle proxy: the session ends promptly (not after an idle timeout).
    drop(me);
    let started = std::time::Instant::now();
    conn.set_timeout(Duration::from_secs(20));
    let _ = conn.wait_eof().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "client waited on a dead writer"
    );
    s.h.wait_for("pool not ready", |h| !h.dp.me_ready()).await;
    let mp = s.h.stats.middle_proxy();
    assert!(mp.reader_eof_total >= 1);

    // New clients wait out the no-writer budget, then go direct (the DC override) until
    // the runtime grace passes, and keep working.
    let mut direct = s.h.connect(Mode::Intermediate, 0).await;
    direct.send(&random(64)).await.expect("send");
    let _ = direct.recv_exact(64).await.expect("echo via direct");
    assert_eq!(s.h.dp.current_by_route().direct, 1);
    drop(direct);

    // Failing reconnects put the endpoint in quarantine.
    s.h.wait_for("quarantine", |h| {
        h.dp.me_pool_snapshot()
            .is_some_and(|p| p.quarantine.iter().any(|(ep, _)| *ep == me_addr))
    })
    .await;

    // The middle proxy comes back on the same address: writers return, clients go via ME.
    let me = TestMe::start_on(me_addr, dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME restarted");
    tokio::time::timeout(Duration::from_secs(20), async {
        while !s.h.dp.me_ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("pool ready again");
    let snap = s.h.dp.me_pool_snapshot().expect("pool");
    assert_eq!(
        snap.active_generation, gen_before,
        "same inputs, same generation"
    );
    let mut back = s.h.connect(Mode::Secure, 1).await;
    packet_echo(&mut back, &[256, 8192]).await;
    assert_eq!(s.h.dp.current_by_route().me, 1);
    assert!(!me.conns().is_empty());
    let mp = s.h.stats.middle_proxy();
    assert!(mp.reconnect_success_total >= 2);
    // The writer that carried the client was lost (its idle siblings were closed by the
    // peer) and came back on the same endpoint.
    let pool = s.h.stats.pool();
    assert!(pool.writer_removed_unexpected_total >= 1, "{pool:?}");
    assert!(pool.writer_restored_same_endpoint_total >= 1, "{pool:?}");
    assert_eq!(pool.writer_restored_fallback_total, 0, "{pool:?}");
    // DC 2 has one endpoint: losing it was an outage, with its own retries, now over.
    assert_eq!(mp.single_endpoint_outage_enter_total, 1, "{mp:?}");
    assert_eq!(mp.single_endpoint_outage_exit_total, 1, "{mp:?}");
    assert!(
        mp.single_endpoint_outage_reconnect_attempt_total >= 2,
        "{mp:?}"
    );
    assert!(
        mp.single_endpoint_outage_reconnect_success_total >= 1,
        "{mp:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_lost_with_its_middle_proxy_is_restored_on_the_other_one() {
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let mut mes = Vec::new();
    for _ in 0..2 {
        let me = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
            .await
            .expect("ME");
        mes.push(Some(me));
    }
    let both: Vec<&TestMe> = mes.iter().flatten().collect();
    let s = start_me(&both, &secret, "").await;
    s.wait_ready().await;
    let mut conn = s.h.connect(Mode::Intermediate, 0).await;
    packet_echo(&mut conn, &[128]).await;
    // A DC in use keeps its full floor (adaptive floors shrink idle DCs to one writer):
    // a writer per endpoint.
    s.h.wait_for("a writer per endpoint", |h| {
        h.dp.me_pool_snapshot()
            .is_some_and(|p| p.writers.len() == 2)
    })
    .await;
    // Kill the middle proxy that carries the client.
    let (carrier, _) = mes
        .iter()
        .enumerate()
        .find(|(_, m)| m.as_ref().is_some_and(|m| !m.conns().is_empty()))
        .expect("one middle proxy carries the client");
    let other = mes[1 - carrier].as_ref().expect("other ME").addr();
    mes[carrier] = None;
    conn.set_timeout(Duration::from_secs(20));
    let _ = conn.wait_eof().await;
    // The DC's floor wants a writer per endpoint; the dead one refuses, so the lost writer
    // is restored on the other middle proxy.
    s.h.wait_for("restored on the fallback endpoint", |h| {
        h.stats.pool().writer_restored_fallback_total >= 1
    })
    .await;
    let snap = s.h.dp.me_pool_snapshot().expect("pool");
    assert!(
        snap.writers
            .iter()
            .filter(|w| w.contour == "active" && w.endpoint == other)
            .count()
            >= 2,
        "{snap:?}"
    );
    assert_eq!(s.h.stats.pool().writer_restored_same_endpoint_total, 0);
    let mut again = s.h.connect(Mode::Secure, 0).await;
    packet_echo(&mut again, &[512]).await;
    assert_eq!(s.h.dp.current_by_route().me, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_frames_and_closes_from_the_dc_are_counted() {
    let OneMe {
        dc,
        me,
        s,
        secret: _,
    } = one_me(Misbehave::default(), "").await;
    // A frame of 2 bytes: for a secure client all of it would be padding.
    let short_frame = [2u8, 0, 0, 0, 0xaa, 0xbb];
    for (mode, padding_invalid) in [(Mode::Secure, 1), (Mode::Intermediate, 1)] {
        let mut conn = s.h.connect(mode, 0).await;
        conn.send(&short_frame).await.expect("send");
        conn.set_timeout(Duration::from_secs(10));
        let _ = conn.wait_eof().await;
        let d = s.h.stats.desync();
        assert_eq!(d.secure_padding_invalid_total, padding_invalid, "{d:?}");
    }
    assert_eq!(s.h.stats.desync().desync_total, 2);

    // The DC ends a session: the middle proxy says CLOSE_EXT, the client is closed, and
    // its release has nothing left to tell the middle proxy.
    let mut conn = s.h.connect(Mode::Secure, 1).await;
    packet_echo(&mut conn, &[256]).await;
    drop(dc);
    conn.set_timeout(Duration::from_secs(10));
    let _ = conn.wait_eof().await;
    me.wait_until(Duration::from_secs(10), |m| {
        m.conns().iter().any(|c| c.closed_by_dc)
    })
    .await;
    s.h.wait_for("session released", |h| h.dp.current_by_route().me == 0)
        .await;
    let mp = s.h.stats.middle_proxy();
    assert_eq!(mp.rpc_proxy_req_signal_skipped_no_meta_total, 1, "{mp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_from_the_middle_proxy_and_unknown_messages_do_not_disturb_the_link() {
    let misbehave = Misbehave {
        ping_every: Some(Duration::from_millis(50)),
        unknown_before_answers: true,
        ..Misbehave::default()
    };
    let OneMe {
        dc: _dc,
        me,
        s,
        secret: _,
    } = one_me(misbehave, "").await;
    // Bulk traffic both ways while the middle proxy pings: every ping is answered, every
    // unknown message skipped, the packets arrive intact.
    let mut a = s.h.connect(Mode::Intermediate, 0).await;
    let mut b = s.h.connect(Mode::Secure, 1).await;
    for _ in 0..4 {
        packet_echo(&mut a, &[65_536, 300_000, 4]).await;
        packet_echo(&mut b, &[1000, 200_000]).await;
    }
    me.wait_until(Duration::from_secs(10), |m| m.counters().pongs_in >= 5)
        .await;
    let c = me.counters();
    assert!(c.pongs_in >= 5, "{c:?}");
    let lost = || s.h.stats.pool().writer_removed_unexpected_total;
    assert_eq!(lost(), 0, "no link was lost: {c:?}");

    // A client frame too long for one RPC_PROXY_REQ ends that session only (refused on its
    // length, before any payload).
    let too_long = (proto::me::MAX_PROXY_REQ_DATA + 4) as u32;
    let mut big = s.h.connect(Mode::Intermediate, 0).await;
    big.send(&too_long.to_le_bytes()).await.expect("send");
    big.set_timeout(Duration::from_secs(10));
    let _ = big.wait_eof().await;
    packet_echo(&mut a, &[512]).await;
    assert_eq!(lost(), 0);
    assert_eq!(s.h.stats.desync().desync_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_acks_from_the_middle_proxy_reach_the_client_in_its_framing() {
    use testkit::me::QUICK_ACK_CONFIRM;
    let misbehave = Misbehave {
        ack_quick_requests: true,
        ..Misbehave::default()
    };
    let OneMe {
        dc: _dc,
        me,
        s,
        secret: _,
    } = one_me(misbehave, "").await;
    let payload: Vec<u8> = (1..=8).collect();
    let swapped = {
        let mut c = QUICK_ACK_CONFIRM;
        c.reverse();
        c
    };
    // (mode, frame header asking for a quick ack, the answer the client must read):
    // intermediate and secure get the confirm as the middle proxy sent it, abridged byte-swapped
    // (PROTOCOL.md §7.8).
    let cases = [
        (
            Mode::Intermediate,
            (8u32 | 1 << 31).to_le_bytes().to_vec(),
            QUICK_ACK_CONFIRM,
        ),
        (
            Mode::Secure,
            (8u32 | 1 << 31).to_le_bytes().to_vec(),
            QUICK_ACK_CONFIRM,
        ),
        (Mode::Abridged, vec![0x80 | 2], swapped),
    ];
    for (mode, header, answer) in cases {
        let mut conn = s.h.connect(mode, 0).await;
        let mut frame = header;
        frame.extend_from_slice(&payload);
        conn.send(&frame).await.expect("send");
        assert_eq!(conn.recv_exact(4).await.expect("quick ack"), answer);
        assert_eq!(conn.recv_packet().await.expect("echo"), payload);
    }
    let conns = me.conns();
    assert_eq!(conns.len(), 3);
    assert!(conns
        .iter()
        .all(|c| c.flags & proto::me::rpc::flags::QUICKACK != 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_proxy_that_ignores_pings_keeps_its_busy_links() {
    let misbehave = Misbehave {
        ignore_pings: true,
        ..Misbehave::default()
    };
    // Keepalive every second: an unanswered ping alone would end a link after 4 s.
    let OneMe {
        dc: _dc,
        me,
        s,
        secret: _,
    } = one_me(misbehave, "").await;
    let mut conn = s.h.connect(Mode::Intermediate, 0).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        packet_echo(&mut conn, &[256]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = me.counters();
    assert!(c.pings_ignored >= 3, "{c:?}");
    // The busy link lived on its traffic; idle ones (no traffic to vouch for them) may go.
    let mp = s.h.stats.middle_proxy();
    let snap = s.h.dp.me_pool_snapshot().expect("pool");
    assert!(
        snap.writers.iter().any(|w| w.bound_clients == 1),
        "the client's writer is still there: {snap:?} {mp:?}"
    );
    packet_echo(&mut conn, &[1024]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_middle_proxy_is_detected_and_its_clients_closed() {
    let misbehave = Misbehave {
        stall_after_handshake: true,
        ..Misbehave::default()
    };
    let OneMe {
        dc: _dc,
        me: _me,
        s,
        secret: _,
    } = one_me(misbehave, "me_route_hybrid_max_wait_ms = 3000\n").await;
    let mut conn = s.h.connect(Mode::Abridged, 0).await;
    conn.send_packet(&random(64)).await.expect("send");
    conn.set_timeout(Duration::from_secs(30));
    let started = std::time::Instant::now();
    // A pong later than one interval marks the writers degraded (new sessions avoid them)...
    s.h.wait_for("degraded writer", |h| {
        h.dp.me_pool_snapshot()
            .is_some_and(|p| p.writers.iter().any(|w| w.degraded))
    })
    .await;
    // ...and unanswered past the keepalive bound, the link is declared dead.
    let _ = conn.wait_eof().await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(12), "waited {waited:?}");
    assert!(s.h.stats.middle_proxy().keepalive_timeout_total >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_tags_follow_config_edits_without_a_restart() {
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let me = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME");
    let mut s = start_me(&[&me], &secret, "").await;
    s.wait_ready().await;
    let tag_of = |conn: &testkit::client::TestConn| {
        let local = conn.local_addr();
        me.conns()
            .into_iter()
            .find(|c| c.client == local)
            .and_then(|c| c.ad_tag)
    };
    let mut conn = s.h.connect(Mode::Secure, 0).await;
    packet_echo(&mut conn, &[64]).await;
    assert_eq!(tag_of(&conn), Some(TAG_ALICE));

    // Alice's own tag changes; bob's global one goes away.
    let new_tag = [0x33u8; 16];
    let mut cfg = s.h.cfg.clone();
    cfg.access = format!("[access.user_ad_tags]\nalice = \"{}\"\n", hex(&new_tag));
    let keys = cfg.middle_proxy.clone().expect("ME keys");
    cfg.middle_proxy = Some(keys.replace(&format!("ad_tag = \"{}\"\n", hex(&TAG_GLOBAL)), ""));
    s.h.rewrite(cfg);
    let mut alice = s.h.connect(Mode::Secure, 0).await;
    packet_echo(&mut alice, &[64]).await;
    assert_eq!(tag_of(&alice), Some(new_tag));
    let mut bob = s.h.connect(Mode::Secure, 1).await;
    packet_echo(&mut bob, &[64]).await;
    assert_eq!(
        tag_of(&bob),
        None,
        "no tag: flag 0x8 cleared, no extra block"
    );
    // The session that started before the edit keeps relaying.
    packet_echo(&mut conn, &[128]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_config_swaps_in_a_new_generation_and_the_old_one_drains() {
    use testkit::me::{MeHttpFiles, CONFIG_V4_PATH, CONFIG_V6_PATH, SECRET_PATH};
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let me1 = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME 1");
    let me2 = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME 2");
    let http = MeHttpFiles::start().await.expect("download server");
    let config_of = |me: &TestMe| testkit::me::proxy_config_text(Some(2), &[(2, me.addr())]);
    http.set_body(SECRET_PATH, secret.clone());
    http.set_body(CONFIG_V4_PATH, config_of(&me1));
    http.set_body(CONFIG_V6_PATH, "default 2;\n");
    // The caches start empty: the proxy must download (and keep refreshing every second).
    let cache = tempfile::tempdir().expect("cache dir");
    let keys = format!(
        "proxy_secret_path = {:?}\nproxy_config_v4_cache_path = {:?}\nproxy_config_v6_cache_path = {:?}\n\
         proxy_secret_url = \"{}\"\nproxy_config_v4_url = \"{}\"\nproxy_config_v6_url = \"{}\"\n\
         middle_proxy_nat_probe = false\nupdate_every = 1\nme_pool_drain_ttl_secs = 60\n\
         me_bind_stale_mode = \"always\"\nme_route_hybrid_max_wait_ms = 3000\n",
        cache.path().join("secret").display().to_string(),
        cache.path().join("v4.txt").display().to_string(),
        cache.path().join("v6.txt").display().to_string(),
        http.url(SECRET_PATH),
        http.url(CONFIG_V4_PATH),
        http.url(CONFIG_V6_PATH),
    );
    let h = Harness::start(Cfg {
        middle_proxy: Some(keys),
        ..Cfg::default()
    })
    .await;
    h.wait_for("ME pool ready", |h| h.dp.me_ready()).await;
    assert!(cache.path().join("v4.txt").exists(), "download cached");
    let mut old = h.connect(Mode::Intermediate, 0).await;
    packet_echo(&mut old, &[100]).await;
    assert_eq!(me1.conns().len(), 1);

    // The published config now lists the second middle proxy.
    http.set_body(CONFIG_V4_PATH, config_of(&me2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = h.dp.me_pool_snapshot().expect("pool");
        if p.active_generation == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no swap: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = h.dp.me_pool_snapshot().expect("pool");
    assert!(p
        .writers
        .iter()
        .any(|w| w.contour == "active" && w.endpoint == me2.addr()));
    // The old generation drains: its writer with a client stays until the client leaves.
    assert!(
        p.writers
            .iter()
            .any(|w| w.contour == "draining" && w.endpoint == me1.addr()),
        "{p:?}"
    );
    assert!(h.stats.pool().pool_swap_total >= 1);
    packet_echo(&mut old, &[200]).await;
    let mut new = h.connect(Mode::Intermediate, 1).await;
    packet_echo(&mut new, &[300]).await;
    assert_eq!(
        me2.conns().len(),
        1,
        "new sessions go to the new generation"
    );
    drop(new);

    // The new generation's only middle proxy dies; with me_bind_stale_mode = "always" a new
    // session may use the old generation's draining writer meanwhile.
    let me2_addr = me2.addr();
    drop(me2);
    h.wait_for("new generation lost", |h| {
        h.dp.me_pool_snapshot().is_some_and(|p| {
            !p.writers
                .iter()
                .any(|w| w.endpoint == me2_addr && w.contour == "active")
        })
    })
    .await;
    let mut stale = h.connect(Mode::Intermediate, 1).await;
    packet_echo(&mut stale, &[64]).await;
    assert_eq!(me1.conns().len(), 2, "served by the draining writer");
    assert!(h.stats.pool().pool_stale_pick_total >= 1);
    drop(stale);
    drop(old);
    h.wait_for("drained", |h| {
        h.dp.me_pool_snapshot()
            .is_some_and(|p| p.writers.iter().all(|w| w.endpoint != me1.addr()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_middle_proxies_are_counted_quarantined_and_never_serve_clients() {
    use testkit::me::Misbehave;
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let start = |m: Misbehave| {
        let mut o = MeOptions::new(secret.clone());
        o.misbehave = m;
        TestMe::start(dc.addr(), o)
    };
    let good = start(Misbehave::default()).await.expect("good ME");
    let bad_crc = start(Misbehave {
        corrupt_crc_at: Some(0),
        ..Misbehave::default()
    })
    .await
    .expect("bad CRC ME");
    let wrong_kdf = start(Misbehave {
        wrong_kdf: true,
        ..Misbehave::default()
    })
    .await
    .expect("wrong KDF ME");
    let rejecting = start(Misbehave {
        reject_handshake: Some(-7),
        ..Misbehave::default()
    })
    .await
    .expect("rejecting ME");
    let refusing = start(Misbehave {
        refuse: true,
        ..Misbehave::default()
    })
    .await
    .expect("refusing ME");
    let entries = [
        (2, good.addr()),
        (1, bad_crc.addr()),
        (3, wrong_kdf.addr()),
        (4, rejecting.addr()),
        (5, refusing.addr()),
    ];
    let files = MeFiles::write(&secret, Some(2), &entries).expect("files");
    let keys = format!(
        "{}me_reconnect_backoff_base_ms = 100\nme_reconnect_backoff_cap_ms = 400\n\
         me_reconnect_fast_retry_count = 1\nme_route_hybrid_max_wait_ms = 2000\n",
        files.general_keys()
    );
    let h = Harness::start(Cfg {
        middle_proxy: Some(keys),
        ..Cfg::default()
    })
    .await;
    let quarantined = |h: &Harness, ep: std::net::SocketAddr| {
        h.dp.me_pool_snapshot()
            .is_some_and(|p| p.quarantine.iter().any(|(q, _)| *q == ep))
    };
    h.wait_for("broken endpoints quarantined", |h| {
        quarantined(h, wrong_kdf.addr())
            && quarantined(h, rejecting.addr())
            && quarantined(h, refusing.addr())
    })
    .await;
    let mp = h.stats.middle_proxy();
    assert!(mp.kdf_drift_total >= 1, "{mp:?}");
    assert!(
        mp.handshake_error_codes
            .iter()
            .any(|c| c.code == -7 && c.total >= 1),
        "{mp:?}"
    );
    assert!(mp.endpoint_quarantine_total >= 3, "{mp:?}");
    assert!(h.stats.pool().refill_failed_total >= 9);
    // Coverage is incomplete, so the pool is not ready, but DC 2 clients still use the
    // middle proxy that works.
    let p = h.dp.me_pool_snapshot().expect("pool");
    assert!(!p.ready);
    assert!(p
        .writers
        .iter()
        .all(|w| w.endpoint == good.addr() || w.endpoint == bad_crc.addr()));
    let mut ok = TestClient::connect(h.addr(), Mode::Intermediate, h.cfg.users[0].1, 2)
        .await
        .expect("client");
    packet_echo(&mut ok, &[64]).await;
    assert_eq!(good.conns().len(), 1);

    // A link whose first answer fails its CRC is dropped with its client.
    h.wait_for("DC 1 writer", |h| {
        h.dp.me_pool_snapshot()
            .is_some_and(|p| p.writers.iter().any(|w| w.dc == 1))
    })
    .await;
    let removed = h.stats.pool().writer_removed_unexpected_total;
    let mut c1 = TestClient::connect(h.addr(), Mode::Intermediate, h.cfg.users[0].1, 1)
        .await
        .expect("client DC 1");
    c1.set_timeout(Duration::from_secs(10));
    c1.send_packet(&random(64)).await.expect("send");
    assert!(
        c1.recv_packet().await.is_err(),
        "a corrupt answer never reaches the client"
    );
    h.wait_for("corrupt link removed", |h| {
        h.stats.pool().writer_removed_unexpected_total > removed
    })
    .await;
    drop(files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dc_indexes_use_the_default_cluster_and_are_logged_once() {
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let me = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME");
    let s = start_me(
        &[&me],
        &secret,
        "unknown_dc_file_log_enabled = true\nunknown_dc_log_path = \"unknown-dc.txt\"\n",
    )
    .await;
    s.wait_ready().await;
    for _ in 0..2 {
        let mut c = TestClient::connect(s.h.addr(), Mode::Secure, s.h.cfg.users[0].1, 4)
            .await
            .expect("client");
        packet_echo(&mut c, &[32]).await;
    }
    assert_eq!(
        me.conns().len(),
        2,
        "DC 4 served by the default cluster (DC 2)"
    );
    let log = s.h.dir.path().join("unknown-dc.txt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !log.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&log).expect("unknown-DC log written");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.trim_end().ends_with(" dc=4"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_balancer_the_middle_proxy_sees_the_proxy_header_addresses() {
    let secret = random_proxy_secret();
    let dc = TestDc::start(DcMode::Echo).await.expect("DC");
    let me = TestMe::start(dc.addr(), MeOptions::new(secret.clone()))
        .await
        .expect("ME");
    let files = MeFiles::write(&secret, Some(2), &[(2, me.addr())]).expect("files");
    let h = Harness::start(Cfg {
        middle_proxy: Some(files.general_keys()),
        server: "proxy_protocol = true\n".into(),
        ..Cfg::default()
    })
    .await;
    h.wait_for("ME pool ready", |h| h.dp.me_ready()).await;
    let header = b"PROXY TCP4 198.51.100.7 203.0.113.10 51234 443\r\n";
    for mode in [Mode::Secure, tls_mode()] {
        let mut c = TestClient::connect_after(h.addr(), header, mode, h.cfg.users[0].1, 2)
            .await
            .expect("client");
        packet_echo(&mut c, &[48]).await;
    }
    let conns = me.conns();
    assert_eq!(conns.len(), 2);
    for c in conns {
        assert_eq!(c.client, "198.51.100.7:51234".parse().unwrap());
        assert_eq!(c.ours, "203.0.113.10:443".parse().unwrap());
    }
}

/// Heavy (64 MiB through two CBC links in a debug build) and dependent on the kernel's socket
/// buffer sizes; the mechanism itself is unit-tested in `me::writer`. Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: 64 MiB through the ME links; the queue logic is unit-tested in me::writer"]
async fn a_client_that_stops_reading_is_closed_without_stalling_its_writer() {
    // One writer, so both clients share it.
    let OneMe {
        dc: _dc,
        me: _me,
        s,
        secret: _,
    } = one_me(
        Misbehave::default(),
        "me_single_endpoint_shadow_writers = 0\n",
    )
    .await;
    assert_eq!(s.h.dp.me_pool_snapshot().expect("pool").writers.len(), 1);
    let mut reader = s.h.connect(Mode::Intermediate, 1).await;
    packet_echo(&mut reader, &[64]).await;

    // The slow client asks for far more than its socket buffers and queue hold, never reads.
    let slow = s.h.connect(Mode::Intermediate, 0).await;
    let (_slow_rd, mut slow_wr) = slow.into_split();
    let pump = tokio::spawn(async move {
        let p = random(64 * 1024);
        for _ in 0..1024 {
            if slow_wr.send_packet(&p).await.is_err() {
                break;
            }
        }
    });
    // Meanwhile the other client on the same writer keeps getting answers. They share the
    // link with everything already in flight for the slow client (that is multiplexing, and
    // slow in this debug build: seconds for the megabytes the socket buffers took), so the bound
    // checked is "no hang": the link's reader waits 250 ms once for the slow session, closes
    // it, and drops what still arrives for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut worst = Duration::ZERO;
    while s.h.stats.middle_proxy().route_drop_queue_full_total == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client never closed"
        );
        let t = std::time::Instant::now();
        packet_echo(&mut reader, &[256]).await;
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_secs(20),
        "writer stalled for {worst:?}"
    );
    pump.abort();
    packet_echo(&mut reader, &[512]).await;
    assert_eq!(
        s.h.dp.me_pool_snapshot().expect("pool").writers.len(),
        1,
        "same writer"
    );
}
