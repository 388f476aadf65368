//! The test middle proxy against the client driver: handshake, relaying to a
//! TestDc, records, and each misbehaviour (docs/PROTOCOL.md §7).

use std::net::SocketAddr;
use std::time::Duration;

use proto::me::rpc::flags;
use proto::me::{ping_payload, HandshakeError, MeMessage, RpcError};

use super::*;
use crate::dc::{mtproto, DcMessage, DcMode, TestDc};

const T: Duration = Duration::from_secs(10);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

async fn setup(mode: DcMode, mb: Misbehave) -> (TestDc, TestMe, Vec<u8>) {
    let dc = TestDc::start(mode).await.unwrap();
    let secret = random_proxy_secret();
    let mut opts = MeOptions::new(secret.clone());
    opts.misbehave = mb;
    let me = TestMe::start(dc.addr(), opts).await.unwrap();
    (dc, me, secret)
}

#[tokio::test]
async fn echo_is_byte_exact_and_recorded() {
    let (dc, me, secret) = setup(DcMode::Echo, Misbehave::default()).await;
    let mut c = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap();
    assert_eq!(c.checksum(), proto::me::Checksum::Crc32c);
    let tag = [0x5a; 16];
    let abridged = flags::ABRIDGED | flags::EXTMODE2 | flags::MAGIC;
    let client = sa("198.51.100.7:51234");
    let ours = sa("203.0.113.10:443");
    for (conn_id, round) in [(1u64, 0u8), (2, 0), (1, 1)] {
        let packet: Vec<u8> = (0..256u32)
            .map(|i| (i as u8) ^ round ^ conn_id as u8)
            .collect();
        c.send_proxy_req(abridged, conn_id, client, ours, Some(&tag), &packet)
            .await
            .unwrap();
        let r = c.recv().await.unwrap();
        assert_eq!(r.answer(), Some((conn_id, &packet[..])), "byte-exact echo");
    }
    let conns = me.conns();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].conn_id, 1);
    assert_eq!((conns[0].requests, conns[0].answers), (2, 2));
    assert_eq!(conns[0].flags, abridged | flags::HAS_AD_TAG);
    assert_eq!(conns[0].ad_tag, Some(tag));
    assert_eq!((conns[0].client, conns[0].ours), (client, ours));
    assert_eq!(conns[0].bytes_to_dc, 512);
    let links = me.links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].peer, c.local_addr());
    assert!(links[0].established && links[0].crc32c);
    assert_eq!((links[0].frames_in, links[0].frames_out), (3, 3));
    let n = me.counters();
    assert_eq!((n.handshakes_ok, n.dc_sessions, n.frames_in), (1, 2, 3));
    // One DC session per conn_id, reused for its second request.
    let s = dc.sessions();
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|s| s.dc == 2));
    // Pings are answered with the same id.
    c.send(&ping_payload(0x1122)).await.unwrap();
    assert_eq!(
        c.recv().await.unwrap().msg,
        MeMessage::Pong { ping_id: 0x1122 }
    );
    // RPC_CLOSE_CONN ends the DC session.
    c.close_conn(2).await.unwrap();
    assert!(dc.wait_until(T, |d| d.counters().active == 1).await);
    assert!(me.conns()[1].closed_by_proxy);
}

#[tokio::test]
async fn req_pq_multi_gets_res_pq() {
    let (dc, me, secret) = setup(DcMode::MtProto, Misbehave::default()).await;
    let mut opts = MeClientOptions::new(secret);
    opts.crc32c = false;
    let mut c = MeClient::connect(me.addr(), opts).await.unwrap();
    assert_eq!(c.checksum(), proto::me::Checksum::Crc32);
    let nonce: [u8; 16] = rand::random();
    let msg = mtproto::req_pq_multi_message(&nonce);
    let f = flags::INTERMEDIATE | flags::EXTMODE2 | flags::MAGIC | flags::NOT_ENCRYPTED;
    c.send_proxy_req(f, 9, sa("192.0.2.1:1000"), sa("192.0.2.2:443"), None, &msg)
        .await
        .unwrap();
    let r = c.recv().await.unwrap();
    let (conn_id, data) = r.answer().unwrap();
    assert_eq!(conn_id, 9);
    let plain = mtproto::parse_plain(data).unwrap();
    let res = mtproto::parse_res_pq(&plain.body).unwrap();
    assert_eq!(res.nonce, nonce);
    assert!(matches!(
        dc.messages().as_slice(),
        [DcMessage::ReqPq { nonce: n, server_nonce, .. }] if *n == nonce && *server_nonce == res.server_nonce
    ));
    assert_eq!(me.conns()[0].ad_tag, None);
}

#[tokio::test]
async fn wrong_secret_fails_on_both_sides() {
    let (_dc, me, secret) = setup(DcMode::Echo, Misbehave::default()).await;
    // Another secret: the key selector differs, the ME closes after our nonce.
    let mut other = secret.clone();
    other[0] ^= 1;
    let e = MeClient::connect(me.addr(), MeClientOptions::new(other))
        .await
        .unwrap_err();
    assert!(matches!(e, MeClientError::Closed), "{e}");
    // Same selector, different tail: keys differ, the ME cannot read our handshake.
    let mut other = secret.clone();
    other[127] ^= 1;
    let e = MeClient::connect(me.addr(), MeClientOptions::new(other))
        .await
        .unwrap_err();
    assert!(matches!(e, MeClientError::Closed), "{e}");
    // Our address as the ME does not see it (unaccounted NAT): same failure.
    let mut opts = MeClientOptions::new(secret);
    opts.kdf_addr = Some(sa("203.0.113.10:40000"));
    let e = MeClient::connect(me.addr(), opts).await.unwrap_err();
    assert!(matches!(e, MeClientError::Closed), "{e}");
    assert!(
        me.wait_until(T, |m| m.links().iter().filter(|l| l.closed).count() == 3)
            .await
    );
    assert_eq!(me.counters().handshake_failures, 3);
    let links = me.links();
    assert!(links[0].error.as_deref().unwrap().contains("key_select"));
    assert!(links.iter().all(|l| !l.established));
    assert_eq!(me.counters().handshakes_ok, 0);
}

#[tokio::test]
async fn wrong_kdf_on_the_me_side_fails_the_handshake() {
    let mb = Misbehave {
        wrong_kdf: true,
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let e = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap_err();
    assert!(matches!(e, MeClientError::Closed), "{e}");
    assert!(
        me.wait_until(T, |m| m.counters().handshake_failures == 1)
            .await
    );
}

#[tokio::test]
async fn handshake_error_and_clock_skew_reach_the_client() {
    let mb = Misbehave {
        reject_handshake: Some(-3),
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let e = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            MeClientError::Handshake(HandshakeError::Rpc(RpcError::HandshakeRejected(-3)))
        ),
        "{e}"
    );
    let mb = Misbehave {
        clock_offset_secs: -120,
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let e = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            MeClientError::Handshake(HandshakeError::ClockSkew { .. })
        ),
        "{e}"
    );
    assert!(
        me.wait_until(T, |m| m.counters().handshake_failures == 1)
            .await
    );
}

#[tokio::test]
async fn bad_crc_from_the_proxy_closes_and_counts() {
    let (_dc, me, secret) = setup(DcMode::Echo, Misbehave::default()).await;
    let mut c = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap();
    c.send_tampered(&ping_payload(1), |p| {
        if let Some(b) = p.last_mut() {
            *b ^= 1;
        }
    })
    .await
    .unwrap();
    assert!(matches!(c.recv().await, Err(MeClientError::Closed)));
    assert!(me.wait_until(T, |m| m.counters().active == 0).await);
    assert_eq!(me.counters().bad_crc, 1);
    assert!(me.links()[0].error.as_deref().unwrap().contains("checksum"));
}

#[tokio::test]
async fn misbehaviours() {
    // Refuse: closed before any byte.
    let mb = Misbehave {
        refuse: true,
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let e = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap_err();
    assert!(
        matches!(e, MeClientError::Closed | MeClientError::Io(_)),
        "{e}"
    );
    assert_eq!(me.counters().refused, 1);

    // Stall after the handshake: nothing comes back.
    let mb = Misbehave {
        stall_after_handshake: true,
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let mut opts = MeClientOptions::new(secret);
    opts.timeout = Duration::from_millis(300);
    let mut c = MeClient::connect(me.addr(), opts).await.unwrap();
    c.send(&ping_payload(1)).await.unwrap();
    assert!(matches!(c.recv().await, Err(MeClientError::Timeout)));

    // Drop after 2 frames.
    let mb = Misbehave {
        drop_after_frames: Some(2),
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let mut c = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap();
    c.send(&ping_payload(1)).await.unwrap();
    assert_eq!(c.recv().await.unwrap().msg, MeMessage::Pong { ping_id: 1 });
    c.send(&ping_payload(2)).await.unwrap();
    assert!(matches!(c.recv().await, Err(MeClientError::Closed)));
    assert_eq!(me.links()[0].frames_in, 2);

    // Corrupt the CRC of the second frame sent.
    let mb = Misbehave {
        corrupt_crc_at: Some(1),
        ..Misbehave::default()
    };
    let (_dc, me, secret) = setup(DcMode::Echo, mb).await;
    let mut c = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap();
    c.send(&ping_payload(1)).await.unwrap();
    assert!(c.recv().await.is_ok());
    c.send(&ping_payload(2)).await.unwrap();
    assert!(matches!(
        c.recv().await,
        Err(MeClientError::Rpc(RpcError::BadChecksum))
    ));
}

#[tokio::test]
async fn dc_close_becomes_close_ext() {
    let (dc, me, secret) = setup(DcMode::Echo, Misbehave::default()).await;
    let mut c = MeClient::connect(me.addr(), MeClientOptions::new(secret))
        .await
        .unwrap();
    let f = flags::INTERMEDIATE | flags::EXTMODE2 | flags::MAGIC;
    c.send_proxy_req(f, 5, sa("192.0.2.1:1"), sa("192.0.2.2:2"), None, &[7; 8])
        .await
        .unwrap();
    assert_eq!(c.recv().await.unwrap().answer(), Some((5, &[7u8; 8][..])));
    // Stopping the DC ends its session; the ME tells the proxy.
    drop(dc);
    assert_eq!(c.recv().await.unwrap().msg, MeMessage::Close { conn_id: 5 });
    assert!(me.conns()[0].closed_by_dc);
}

#[test]
fn files_round_trip_through_the_parser() {
    let secret = random_proxy_secret();
    assert_eq!(secret.len(), PROXY_SECRET_LEN);
    let entries = [
        (2i16, sa("127.0.0.1:41000")),
        (-2, sa("127.0.0.1:41000")),
        (4, sa("127.0.0.1:41001")),
        (2, sa("[::1]:41002")),
    ];
    let f = MeFiles::write(&secret, Some(2), &entries).unwrap();
    assert_eq!(std::fs::read(&f.secret_path).unwrap(), secret);
    let v4 = proto::me::parse_proxy_config(&std::fs::read_to_string(&f.config_v4_path).unwrap())
        .unwrap();
    assert_eq!(v4.default_dc, Some(2));
    assert_eq!(v4.proxy_for, entries[..3].to_vec());
    let v6 = proto::me::parse_proxy_config(&std::fs::read_to_string(&f.config_v6_path).unwrap())
        .unwrap();
    assert_eq!(v6.proxy_for, entries[3..].to_vec());
    let keys = f.general_keys();
    assert!(keys.contains("proxy_secret_path = \""));
    assert!(keys.contains(&f.config_v4_path.display().to_string()));
    assert!(f.dir().exists());
}

/// An independent proxy side (Python, written from docs/PROTOCOL.md §7 only) completes the
/// handshake with CRC-32C and gets a resPQ through TestMe, so TestMe and `proto::me` do not
/// merely agree with each other.
#[tokio::test]
async fn independent_python_peer_speaks_to_test_me() {
    let has_aes =
        crate::py::has_modules(&["cryptography"]).await || crate::py::has_modules(&["pyaes"]).await;
    if !has_aes {
        crate::external::missing(
            "a Python AES module (cryptography or pyaes)",
            "pip install -r tests-py/requirements.txt and set MTPROXYD_PY",
        );
        return;
    }
    let (dc, me, secret) = setup(DcMode::MtProto, Misbehave::default()).await;
    let tag: [u8; 16] = rand::random();
    let args = vec![
        "--port".to_owned(),
        me.addr().port().to_string(),
        "--proxy-secret".to_owned(),
        hex::encode(&secret),
        "--ad-tag".to_owned(),
        hex::encode(tag),
    ];
    let r = crate::py::run_interop("me_link_interop.py", &args, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(r.ok, "{}\n{}", r.json, r.stderr);
    assert_eq!(r.json["crc32c"], true);
    let conns = me.conns();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].conn_id, 0x1122_3344_5566_7788);
    assert_eq!(conns[0].ad_tag, Some(tag));
    assert_eq!(conns[0].client, sa("198.51.100.7:51234"));
    assert_eq!(conns[0].flags, 0x2002_100a);
    assert!(matches!(
        dc.messages().as_slice(),
        [DcMessage::ReqPq { .. }]
    ));
}
