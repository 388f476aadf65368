//! Unit tests and proptests for `proxy_header` (docs/PROTOCOL.md §8.2 self-check).

use super::*;
use proptest::prelude::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address literal")
}

#[test]
fn self_check_8_2() {
    let pair = Some((sa("192.0.2.1:51234"), sa("203.0.113.10:443")));
    let v1 = ProxyHeader::v1_bytes(pair);
    assert_eq!(v1, b"PROXY TCP4 192.0.2.1 203.0.113.10 51234 443\r\n");
    let v2 = ProxyHeader::v2_bytes(pair);
    assert_eq!(
        v2,
        hex::decode("0d0a0d0a000d0a515549540a2111000cc0000201cb00710ac82201bb").expect("hex")
    );
    for wire in [&v1, &v2] {
        let mut buf = wire.clone();
        buf.extend_from_slice(b"\xef\xef");
        let (h, n) = ProxyHeader::parse(&buf).expect("valid").expect("complete");
        assert_eq!(n, wire.len());
        assert_eq!(h.addresses, pair);
        assert_eq!(h.source(), Some(sa("192.0.2.1:51234")));
        for cut in 0..wire.len() {
            assert_eq!(ProxyHeader::parse(&wire[..cut]), Ok(None), "cut {cut}");
        }
    }
}

#[test]
fn unknown_local_and_other_families() {
    let (h, n) = ProxyHeader::parse(b"PROXY UNKNOWN ffff::1 whatever\r\nX")
        .expect("ok")
        .expect("done");
    assert_eq!((h.version, h.addresses, n), (ProxyVersion::V1, None, 32));
    let local = ProxyHeader::v2_bytes(None);
    assert_eq!(local[12..], [0x20, 0x00, 0x00, 0x00]);
    let (h, n) = ProxyHeader::parse(&local).expect("ok").expect("done");
    assert_eq!((h.addresses, n), (None, 16));
    // LOCAL with a body (health check with TLVs): consume it all.
    let mut l = V2_SIGNATURE.to_vec();
    l.extend_from_slice(&[0x20, 0x11, 0x00, 0x03, 1, 2, 3]);
    assert_eq!(ProxyHeader::parse(&l).map(|o| o.map(|x| x.1)), Ok(Some(19)));
    // UNIX stream: keep peer.
    let mut u = V2_SIGNATURE.to_vec();
    u.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
    u.resize(16 + 216, 0);
    assert_eq!(
        ProxyHeader::parse(&u).map(|o| o.map(|x| x.0.addresses)),
        Ok(Some(None))
    );
    // TCP6 with TLVs after the addresses.
    let pair = Some((sa("[2001:db8::1]:1000"), sa("[2001:db8::2]:443")));
    let mut v6 = ProxyHeader::v2_bytes(pair);
    v6[15] = 36 + 5;
    v6.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
    let (h, n) = ProxyHeader::parse(&v6).expect("ok").expect("done");
    assert_eq!((h.addresses, n), (pair, v6.len()));
}

#[test]
fn precise_errors() {
    assert_eq!(
        ProxyHeader::parse(b"GET / HTTP/1.1\r\n"),
        Err(ProxyError::NotProxyProtocol)
    );
    assert_eq!(
        ProxyHeader::parse(&[0xef; 20]),
        Err(ProxyError::NotProxyProtocol)
    );
    assert_eq!(
        ProxyHeader::parse(b"PROXY TCP5 1 2 3 4\r\n"),
        Err(ProxyError::V1Malformed("protocol"))
    );
    assert_eq!(
        ProxyHeader::parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
        Err(ProxyError::V1Malformed("field count"))
    );
    assert_eq!(
        ProxyHeader::parse(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"),
        Err(ProxyError::V1Malformed("address"))
    );
    assert_eq!(
        ProxyHeader::parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"),
        Err(ProxyError::V1Malformed("port"))
    );
    assert_eq!(
        ProxyHeader::parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
        Err(ProxyError::V1Malformed("port"))
    );
    assert_eq!(
        ProxyHeader::parse(b"PROXY TCP4\n"),
        Err(ProxyError::V1Malformed("stray CR or LF"))
    );
    let long = [&b"PROXY UNKNOWN "[..], &[b'a'; 100]].concat();
    assert_eq!(ProxyHeader::parse(&long), Err(ProxyError::V1TooLong));
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x31, 0x11, 0, 12]);
    assert_eq!(ProxyHeader::parse(&v2), Err(ProxyError::V2BadVersion(3)));
    v2[12] = 0x22;
    assert_eq!(ProxyHeader::parse(&v2), Err(ProxyError::V2BadCommand(2)));
    v2[12] = 0x21;
    v2[15] = 11;
    assert_eq!(
        ProxyHeader::parse(&v2),
        Err(ProxyError::V2TooShort { len: 11, family: 1 })
    );
}

fn addr_pair() -> impl Strategy<Value = Option<(SocketAddr, SocketAddr)>> {
    prop_oneof![
        Just(None),
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(a, b, p, q)| Some((SocketAddr::from((a, p)), SocketAddr::from((b, q))))),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(a, b, p, q)| Some((SocketAddr::from((a, p)), SocketAddr::from((b, q))))),
    ]
}

proptest! {
    #[test]
    fn round_trip(pair in addr_pair(), v2 in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let wire = if v2 { ProxyHeader::v2_bytes(pair) } else { ProxyHeader::v1_bytes(pair) };
        prop_assert!(wire.len() <= V1_MAX_LEN || v2);
        let mut buf = wire.clone();
        buf.extend_from_slice(&tail);
        let (h, n) = ProxyHeader::parse(&buf).expect("valid").expect("complete");
        prop_assert_eq!(n, wire.len());
        prop_assert_eq!(h.addresses, pair);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), v in 0u8..3) {
        let mut b = bytes;
        match v {
            0 => { let mut x = V1_PREFIX.to_vec(); x.extend_from_slice(&b); b = x; }
            1 => { let mut x = V2_SIGNATURE.to_vec(); x.extend_from_slice(&b); b = x; }
            _ => {}
        }
        if let Ok(Some((_, n))) = ProxyHeader::parse(&b) {
            prop_assert!(n <= b.len());
        }
    }
}
