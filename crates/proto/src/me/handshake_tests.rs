//! Both handshake roles against each other, the encrypted link stream and the
//! middle proxy's view of the messages (docs/PROTOCOL.md §7.2–§7.6).

use super::rpc::{flags, RPC_HANDSHAKE, RPC_PING};
use super::*;
use proptest::prelude::*;
use std::net::SocketAddr;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address literal")
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("valid hex literal")
}

fn secret() -> Vec<u8> {
    let mut s = vec![0xc4, 0xf9, 0xfa, 0xca];
    s.extend((0..124u8).map(|i| i.wrapping_mul(7)));
    s
}

fn params(nonce: u8, crc32c: bool) -> HandshakeParams {
    HandshakeParams {
        proxy_secret: secret(),
        proxy_addr: sa("203.0.113.10:40000"),
        me_addr: sa("149.154.175.50:8888"),
        now: 1_700_000_000,
        nonce: [nonce; 16],
        crc32c,
        pid: [nonce; 12],
        max_skew_secs: Some(30),
    }
}

/// Runs both sides to completion, feeding `chunk` bytes at a time.
fn run(
    c: HandshakeParams,
    s: HandshakeParams,
    chunk: usize,
) -> Result<(RpcLink, RpcLink), (Option<HandshakeError>, Option<HandshakeError>)> {
    let mut to_srv = Vec::new();
    let mut cli = ClientHandshake::start(c, &mut to_srv).map_err(|e| (Some(e), None))?;
    let mut srv = ServerHandshake::new(s).map_err(|e| (None, Some(e)))?;
    let (mut cdone, mut sdone) = (false, false);
    for _ in 0..64 {
        let mut to_cli = Vec::new();
        for part in std::mem::take(&mut to_srv).chunks(chunk) {
            sdone = srv.feed(part, &mut to_cli).map_err(|e| (None, Some(e)))?;
        }
        for part in to_cli.chunks(chunk) {
            cdone = cli.feed(part, &mut to_srv).map_err(|e| (Some(e), None))?;
        }
        if cdone && sdone && to_srv.is_empty() {
            break;
        }
    }
    let c = cli.into_link().ok_or((None, None))?;
    let s = srv.into_link().ok_or((None, None))?;
    Ok((c, s))
}

#[test]
fn client_nonce_packet_is_vector_m2() {
    let mut p = params(0, false);
    p.nonce = std::array::from_fn(|i| i as u8);
    let mut out = Vec::new();
    ClientHandshake::start(p, &mut out).expect("valid params");
    assert_eq!(
        out,
        h("2c000000 feffffff aa87cb7a c4f9faca 01000000 00f15365 000102030405060708090a0b0c0d0e0f 765227a2")
    );
}

#[test]
fn roles_agree_and_carry_data() {
    for (crc32c, chunk) in [(true, 1), (true, 7), (false, 4096)] {
        let (mut c, mut s) = run(params(1, crc32c), params(2, crc32c), chunk).expect("handshake");
        let want = if crc32c {
            Checksum::Crc32c
        } else {
            Checksum::Crc32
        };
        assert_eq!((c.checksum, s.checksum), (want, want));
        assert_eq!(c.peer.sender_pid, [2; 12], "client sees the ME's PID");
        assert_eq!(s.peer.sender_pid, [1; 12], "ME sees the proxy's PID");
        // Proxy → ME: a PROXY_REQ with a tag.
        let mut req = Vec::new();
        let tag = [0xab; 16];
        write_proxy_req_header(
            0x2002_1000,
            77,
            sa("198.51.100.7:51234"),
            sa("203.0.113.10:443"),
            Some(&tag),
            &mut req,
        );
        req.extend_from_slice(&[9u8; 40]);
        let mut wire = Vec::new();
        c.sender.send(&req, &mut wire);
        c.sender.send(&ping_payload(5), &mut wire);
        assert_eq!(wire.len() % 16, 0);
        for b in wire.chunks(3) {
            s.receiver.feed(b);
        }
        let p = s.receiver.next_packet().expect("valid").expect("complete");
        let ProxyMessage::ProxyReq(r) = ProxyMessage::parse(&p).expect("parses") else {
            panic!("not a PROXY_REQ");
        };
        assert_eq!(r.flags, 0x2002_1008);
        assert_eq!((r.conn_id, r.ad_tag), (77, Some(tag)));
        assert_eq!(r.client, sa("198.51.100.7:51234"));
        assert_eq!(&p[r.data], &[9u8; 40][..]);
        let p = s.receiver.next_packet().expect("valid").expect("complete");
        assert_eq!(
            ProxyMessage::parse(&p),
            Ok(ProxyMessage::Ping { ping_id: 5 })
        );
        assert_eq!(s.receiver.next_packet(), Ok(None));
        // ME → proxy: answer, ack, close.
        let mut wire = Vec::new();
        let mut ans = Vec::new();
        proxy_ans_payload(0, 77, b"answer!!", &mut ans);
        s.sender.send(&ans, &mut wire);
        s.sender
            .send(&simple_ack_payload(77, [1, 2, 3, 4]), &mut wire);
        s.sender.send(&close_ext_payload(77), &mut wire);
        c.receiver.feed(&wire);
        let p = c.receiver.next_packet().expect("valid").expect("complete");
        let m = MeMessage::parse(&p).expect("parses");
        let MeMessage::ProxyAns { conn_id, data, .. } = m else {
            panic!("not an ANS: {m:?}");
        };
        assert_eq!((conn_id, &p[data]), (77, &b"answer!!"[..]));
        let p = c.receiver.next_packet().expect("valid").expect("complete");
        assert_eq!(
            MeMessage::parse(&p),
            Ok(MeMessage::SimpleAck {
                conn_id: 77,
                confirm: [1, 2, 3, 4]
            })
        );
        let p = c.receiver.next_packet().expect("valid").expect("complete");
        assert_eq!(MeMessage::parse(&p), Ok(MeMessage::Close { conn_id: 77 }));
    }
}

#[test]
fn roles_agree_over_ipv6() {
    let v6 = |n| HandshakeParams {
        proxy_addr: sa("[2001:db8::10]:40000"),
        me_addr: sa("[2001:67c:4e8:f002::d]:80"),
        ..params(n, true)
    };
    let (mut c, mut s) = run(v6(1), v6(2), 5).expect("handshake");
    let mut wire = Vec::new();
    c.sender.send(&ping_payload(9), &mut wire);
    s.receiver.feed(&wire);
    let p = s.receiver.next_packet().expect("valid").expect("complete");
    assert_eq!(
        ProxyMessage::parse(&p),
        Ok(ProxyMessage::Ping { ping_id: 9 })
    );
}

#[test]
fn crc32c_needs_both_sides() {
    let (c, s) = run(params(1, true), params(2, false), 64).expect("handshake");
    assert_eq!((c.checksum, s.checksum), (Checksum::Crc32, Checksum::Crc32));
    assert_eq!(c.peer.flags, 0, "the ME answers without 0x800");
}

#[test]
fn wrong_secrets_fail() {
    // Another secret altogether: the ME refuses the key selector.
    let mut other = params(2, true);
    other.proxy_secret[0] ^= 1;
    let e = run(params(1, true), other, 64).expect_err("must fail");
    assert!(
        matches!(e, (None, Some(HandshakeError::KeySelect(_)))),
        "{e:?}"
    );
    // Same selector, different tail: keys differ; the ME's first decrypted
    // packet is garbage.
    let mut other = params(2, true);
    other.proxy_secret[100] ^= 1;
    let e = run(params(1, true), other, 64).expect_err("must fail");
    assert!(
        matches!(
            e,
            (
                None,
                Some(HandshakeError::Rpc(
                    RpcError::BadLength(_) | RpcError::BadChecksum
                ))
            )
        ),
        "{e:?}"
    );
    // A wrong view of our address (NAT not accounted for) fails the same way.
    let mut other = params(2, true);
    other.proxy_addr = sa("203.0.113.10:40001");
    assert!(run(params(1, true), other, 64).is_err());
}

#[test]
fn nonce_checks() {
    let mut late = params(2, true);
    late.now += 31;
    assert_eq!(
        run(params(1, true), late, 64).map(|_| ()),
        Err((
            None,
            Some(HandshakeError::ClockSkew {
                ours: 1_700_000_031,
                theirs: 1_700_000_000
            })
        ))
    );
    let mut srv = ServerHandshake::new(params(2, true)).expect("valid");
    let bad = RpcNonce {
        key_select: [0xc4, 0xf9, 0xfa, 0xca],
        schema: 2,
        ts: 1_700_000_000,
        nonce: [0; 16],
    };
    let mut wire = Vec::new();
    RpcSender::new().send(&bad.to_bytes(), &mut wire);
    assert_eq!(
        srv.feed(&wire, &mut Vec::new()),
        Err(HandshakeError::Schema(2))
    );
    let mut short = params(1, true);
    short.proxy_secret.truncate(31);
    assert_eq!(
        ClientHandshake::start(short, &mut Vec::new()).map(|_| ()),
        Err(HandshakeError::SecretLength(31))
    );
    let mut v6 = params(1, true);
    v6.me_addr = sa("[2001:db8::1]:8888");
    let mut out = Vec::new();
    let mut c = ClientHandshake::start(v6, &mut out).expect("valid");
    let mut reply = Vec::new();
    RpcSender::new().send(
        &RpcNonce {
            key_select: [0xc4, 0xf9, 0xfa, 0xca],
            schema: 1,
            ts: 1_700_000_000,
            nonce: [3; 16],
        }
        .to_bytes(),
        &mut reply,
    );
    assert_eq!(
        c.feed(&reply, &mut out),
        Err(HandshakeError::MixedFamilies(MixedFamilies))
    );
}

#[test]
fn refusing_server_is_seen_by_the_client() {
    let mut out = Vec::new();
    let mut cli = ClientHandshake::start(params(1, true), &mut out).expect("valid");
    let mut srv = ServerHandshake::new(params(2, true)).expect("valid");
    srv.reject_with(-5);
    let mut back = Vec::new();
    assert_eq!(srv.feed(&out, &mut back), Ok(false));
    out.clear();
    assert_eq!(cli.feed(&back, &mut out), Ok(false));
    back.clear();
    assert_eq!(
        srv.feed(&out, &mut back),
        Err(HandshakeError::Rpc(RpcError::HandshakeRejected(-5)))
    );
    assert_eq!(
        cli.feed(&back, &mut Vec::new()),
        Err(HandshakeError::Rpc(RpcError::HandshakeRejected(-5)))
    );
}

#[test]
fn handshake_error_is_a_rejection() {
    let p = handshake_error_payload(-7, &[0; 12]);
    assert_eq!(Handshake::parse(&p), Err(RpcError::HandshakeRejected(-7)));
    let ok = handshake_payload(0x800, &[1; 12], &[2; 12]);
    assert_eq!(
        Handshake::parse(&ok),
        Ok(Handshake {
            flags: 0x800,
            sender_pid: [1; 12],
            peer_pid: [2; 12]
        })
    );
    assert_eq!(
        Handshake::parse(&ok[..31]),
        Err(RpcError::Truncated(RPC_HANDSHAKE))
    );
    assert_eq!(
        pid_bytes(sa("203.0.113.10:443"), 0x1234, 5),
        h("0a7100cb bb01 3412 05000000")[..]
    );
}

#[test]
fn proxy_req_vector_m3_parses() {
    let wire = h(concat!(
        "eef1ce36 0a100228 0807060504030201",
        "00000000000000000000ffffc6336407 22c80000",
        "00000000000000000000ffffcb00710a bb010000",
        "18000000 ae261edb 10 0123456789abcdef0123456789abcdef 000000",
        "00000000"
    ));
    let r = ProxyReq::parse(&wire).expect("M3");
    assert_eq!(r.flags, 0x2802_100a);
    assert_eq!(r.conn_id, 0x0102_0304_0506_0708);
    assert_eq!(r.client, sa("198.51.100.7:51234"));
    assert_eq!(r.ours, sa("203.0.113.10:443"));
    assert_eq!(
        r.ad_tag.map(hex::encode).as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(r.data, 84..88);
    // Malformed variants.
    let mut bad = wire.clone();
    bad[56] = 25;
    assert_eq!(ProxyReq::parse(&bad), Err(ProxyReqError::BadExtraSize(25)));
    let mut bad = wire.clone();
    bad[56] = 0xfc;
    bad[57..60].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert_eq!(
        ProxyReq::parse(&bad),
        Err(ProxyReqError::BadExtraSize(0xffff_fffc))
    );
    let mut bad = wire.clone();
    bad[64] = 15;
    assert_eq!(
        ProxyReq::parse(&bad),
        Err(ProxyReqError::BadAdTag("tag length is not 16"))
    );
    let mut bad = wire.clone();
    bad[34] = 1;
    assert_eq!(ProxyReq::parse(&bad), Err(ProxyReqError::BadPort(0x1c822)));
    assert_eq!(
        ProxyReq::parse(&wire[..50]),
        Err(ProxyReqError::Truncated(36))
    );
    assert_eq!(
        ProxyMessage::parse(&wire[..58]),
        Err(ProxyMessageError::ProxyReq(ProxyReqError::Truncated(56)))
    );
    let v6 = {
        let mut o = Vec::new();
        write_proxy_req_header(
            flags::MAGIC,
            1,
            sa("[2001:db8::7]:1"),
            sa("[::1]:2"),
            None,
            &mut o,
        );
        o
    };
    let r = ProxyReq::parse(&v6).expect("v6");
    assert_eq!(
        (r.client, r.ours, r.ad_tag),
        (sa("[2001:db8::7]:1"), sa("[::1]:2"), None)
    );
}

#[test]
fn sender_tamper_and_receiver_limits() {
    let mut s = RpcSender::new();
    let mut wire = Vec::new();
    s.send_tampered(&ping_payload(1), &mut wire, |p| {
        if let Some(b) = p.last_mut() {
            *b ^= 1;
        }
    });
    let mut r = RpcReceiver::new();
    r.feed(&wire);
    assert_eq!(r.next_packet(), Err(RpcError::BadChecksum));
    // A stream of nothing but padding words is consumed, not buffered.
    let mut r = RpcReceiver::new();
    for _ in 0..1000 {
        r.feed(&[4, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(r.next_packet(), Ok(None));
    }
    assert_eq!(r.buffered(), 0);
    let mut r = RpcReceiver::new();
    r.feed(&[14, 0, 0, 0]);
    assert_eq!(r.next_packet(), Err(RpcError::BadLength(14)));
    assert_eq!(RPC_PING, u32::from_le_bytes([0xdf, 0xa2, 0x30, 0x57]));
}

proptest! {
    #[test]
    fn proxy_req_round_trip(
        f in any::<u32>(), conn in any::<u64>(), tag in proptest::option::of(any::<[u8; 16]>()),
        c in any::<SocketAddr>(), o in any::<SocketAddr>(),
        words in proptest::collection::vec(any::<u32>(), 0..32),
    ) {
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut p = Vec::new();
        write_proxy_req_header(f, conn, c, o, tag.as_ref(), &mut p);
        p.extend_from_slice(&data);
        let r = ProxyReq::parse(&p).expect("own output parses");
        // Only ip and port travel (no IPv6 flow info or scope id); mapped
        // IPv4 comes back as IPv4.
        let canon = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V6(v6) => SocketAddr::new(v6.to_ipv4_mapped().map_or(v6.into(), Into::into), a.port()),
            std::net::IpAddr::V4(_) => a,
        };
        prop_assert_eq!(r.conn_id, conn);
        prop_assert_eq!(r.ad_tag, tag);
        prop_assert_eq!(r.client, canon(c));
        prop_assert_eq!(r.ours, canon(o));
        prop_assert_eq!(&p[r.data], &data[..]);
    }

    #[test]
    fn link_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 1..20), 1..8), chunk in 1usize..64) {
        let (mut c, mut s) = run(params(1, true), params(2, true), 64).expect("handshake");
        let mut wire = Vec::new();
        let bytes: Vec<Vec<u8>> = payloads.iter().map(|w| w.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        for p in &bytes {
            c.sender.send(p, &mut wire);
        }
        let mut got = Vec::new();
        for part in wire.chunks(chunk) {
            s.receiver.feed(part);
            while let Some(p) = s.receiver.next_packet().expect("valid") {
                got.push(p);
            }
        }
        prop_assert_eq!(got, bytes);
    }

    #[test]
    fn middle_proxy_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = ProxyReq::parse(&bytes);
        let _ = ProxyMessage::parse(&bytes);
        let _ = Handshake::parse(&bytes);
        let mut srv = ServerHandshake::new(params(2, true)).expect("valid");
        let _ = srv.feed(&bytes, &mut Vec::new());
        let mut cli = ClientHandshake::start(params(1, true), &mut Vec::new()).expect("valid");
        let _ = cli.feed(&bytes, &mut Vec::new());
    }
}
