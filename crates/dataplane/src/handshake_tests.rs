//! The driver over a real loopback socket with tokio's clock paused: the ServerHello delay is
//! slept on tokio's clock, the accepted client carries every raw byte, and a rejected one is
//! handed back with all of them for masking.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::{
    build_client_hello, build_client_init, verify_server_hello, write_app_data, ClientHelloParams,
    ProtoTag, RejectReason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const SECRET: [u8; 16] = [0x11; 16];

fn policy(delay_ms: u64) -> Policy {
    let toml = format!(
        "[general.modes]\nclassic = true\nsecure = true\ntls = true\n\n\
         [censorship]\ntls_domain = \"example.com\"\n\
         server_hello_delay_min_ms = {delay_ms}\nserver_hello_delay_max_ms = {delay_ms}\n\n\
         [access.users]\nalice = \"{}\"\nbob = \"{}\"\n",
        hex::encode([0x22u8; 16]),
        hex::encode(SECRET),
    );
    let cfg = config::parse_str(&toml).expect("config").config;
    Policy::build(&cfg, None, 1).policy
}

fn observer(stats: &stats::Stats) -> Observer<'_> {
    // Leaked once per test: the table must outlive the borrowed observer.
    let flights = Box::leak(Box::new(proto::FlightTable {
        plans: Vec::new(),
        fallback: proto::FlightPlan {
            cipher: proto::DEFAULT_CIPHER,
            versions_first: true,
            app_data_len: 2048,
            jitter: 0,
            compact_len: 2048,
            delay_ms: (0, 0),
        },
    }));
    let key_shares = Box::leak(Box::new(crate::rng::KeyShares::new()));
    Observer {
        stats,
        flights,
        key_shares,
    }
}

async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, peer) = listener.accept().await.expect("accept");
    (client, server, peer)
}

fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed | 1;
    move |b: &mut [u8]| {
        for v in b {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = (x >> 32) as u8;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fake_tls_client_waits_the_hello_delay_on_tokio_clock() {
    let policy = policy(5_000);
    let hints = IpHints::new();
    let stats = stats::Stats::new(SystemTime::now());
    let (mut client, server, peer) = pair().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let hello = build_client_hello(
        &SECRET,
        &ClientHelloParams {
            timestamp: now,
            session_id: &[7; 32],
            sni: Some("example.com"),
            alpn: &[b"h2"],
            key_share: &[9; 32],
            total_len: Some(517),
        },
    )
    .expect("hello");
    let sealed = build_client_init(&mut rng(3), &SECRET, ProtoTag::Padded, 2).expect("init");
    let mut wire = hello.clone();
    write_app_data(&sealed.wire, 1000, &mut wire);
    client.write_all(&wire).await.expect("write");

    let started = tokio::time::Instant::now();
    let auth = run(
        &server,
        &policy,
        &hints,
        peer.ip(),
        Vec::new(),
        far(),
        observer(&stats),
    )
    .await;
    let Ok(auth) = auth else {
        panic!("rejected");
    };
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "slept on tokio's clock"
    );
    assert_eq!(
        (&*auth.user.name, auth.tag, auth.dc),
        ("bob", ProtoTag::Padded, 2)
    );
    assert_eq!(auth.raw, wire, "every byte read is kept");
    assert!(auth.deframer.is_some() && auth.pending.is_empty());
    assert_eq!(hints.get(peer.ip(), policy.generation), Some(1));
    // The hello is fingerprinted once, as authenticated, under its user.
    let fp = proto::tls_fingerprint(&hello).expect("fingerprint");
    let snap = stats.tls_fingerprints().snapshot(10, now as u64 + 1, 600);
    assert_eq!(snap.by_fingerprint.len(), 1);
    let row = &snap.by_fingerprint[0];
    assert_eq!((&row.ja3, &row.ja4), (&fp.ja3, &fp.ja4));
    assert_eq!((row.total, row.auth_success, row.bad_or_probe), (1, 1, 0));
    assert_eq!(snap.by_user[0].scope.as_deref(), Some("bob"));

    let mut response = vec![0u8; 8192];
    let n = client.read(&mut response).await.expect("read");
    let digest: [u8; 32] = hello[11..43].try_into().expect("digest");
    assert!(verify_server_hello(&SECRET, &digest, &response[..n]));
}

#[tokio::test(start_paused = true)]
async fn rejected_clients_come_back_with_every_byte() {
    let policy = policy(0);
    let hints = IpHints::new();
    let stats = stats::Stats::new(SystemTime::now());
    let (mut client, server, peer) = pair().await;
    let junk: Vec<u8> = (0..300u32).map(|i| (i * 13 + 1) as u8).collect();
    client.write_all(&junk).await.expect("write");
    match run(
        &server,
        &policy,
        &hints,
        peer.ip(),
        b"pre".to_vec(),
        far(),
        observer(&stats),
    )
    .await
    {
        Err(Rejected::Mask { raw, reason, .. }) => {
            assert_eq!(reason, RejectReason::Obfs2NoMatchingSecret);
            assert_eq!(&raw[..3], b"pre");
            assert!(junk.starts_with(&raw[3..]) && raw.len() >= 64);
        }
        _ => panic!("expected a masked rejection"),
    }
    // A short probe followed by FIN: truncated, masked with exactly what it sent.
    let (mut client, server, peer) = pair().await;
    client
        .write_all(b"PUT / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    client.shutdown().await.expect("fin");
    match run(
        &server,
        &policy,
        &hints,
        peer.ip(),
        Vec::new(),
        far(),
        observer(&stats),
    )
    .await
    {
        Err(Rejected::Mask { raw, reason, .. }) => {
            assert_eq!(reason, RejectReason::Obfs2Truncated);
            assert_eq!(raw, b"PUT / HTTP/1.1\r\n\r\n");
        }
        _ => panic!("expected a masked rejection"),
    }
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

#[tokio::test(start_paused = true)]
async fn held_open_probes_are_masked_early_or_at_the_deadline() {
    let policy = policy(0);
    let hints = IpHints::new();
    let stats = stats::Stats::new(SystemTime::now());
    // A forbidden prefix (§2.2) is decided without FIN and without waiting.
    let (mut client, server, peer) = pair().await;
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    client.write_all(get).await.expect("write");
    let started = tokio::time::Instant::now();
    match run(
        &server,
        &policy,
        &hints,
        peer.ip(),
        Vec::new(),
        far(),
        observer(&stats),
    )
    .await
    {
        Err(Rejected::Mask { raw, reason, .. }) => {
            assert_eq!(reason, RejectReason::Obfs2ForbiddenPrefix);
            assert_eq!(raw, get);
        }
        _ => panic!("expected a masked rejection"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // An ambiguous prefix held open goes to the mask host when the timer fires.
    let (mut client, server, peer) = pair().await;
    client
        .write_all(b"PUT / HTTP/1.1\r\n")
        .await
        .expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    match run(
        &server,
        &policy,
        &hints,
        peer.ip(),
        Vec::new(),
        deadline,
        observer(&stats),
    )
    .await
    {
        Err(Rejected::Mask { raw, reason, .. }) => {
            assert_eq!(reason, RejectReason::HandshakeTimeout);
            assert_eq!(raw, b"PUT / HTTP/1.1\r\n");
        }
        _ => panic!("expected a masked rejection"),
    }
    assert!(tokio::time::Instant::now() >= deadline);
    // A silent client is closed at the deadline.
    let (_client, server, peer) = pair().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    match run(
        &server,
        &policy,
        &hints,
        peer.ip(),
        Vec::new(),
        deadline,
        observer(&stats),
    )
    .await
    {
        Err(Rejected::Drop { reason, .. }) => assert_eq!(reason, RejectReason::HandshakeTimeout),
        _ => panic!("expected a dropped rejection"),
    }
}
