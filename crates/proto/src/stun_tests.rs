//! Unit tests and proptests for `stun`: the RFC 5769 sample responses, every malformed case,
//! round trips and "never panics".

use super::*;
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).expect("hex literal")
}

/// RFC 5769 §2.2/§2.3 transaction id.
const RFC_TXID: TransactionId = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 §2.2 Sample IPv4 Response: SOFTWARE "test vector" (11 bytes, padded with a
/// space), XOR-MAPPED-ADDRESS 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT.
fn rfc5769_ipv4() -> Vec<u8> {
    h("01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
       80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
       00 20 00 08 00 01 a1 47 e1 12 a6 43
       00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
       80 28 00 04 c0 7d 4c 96")
}

/// RFC 5769 §2.3 Sample IPv6 Response: XOR-MAPPED-ADDRESS
/// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
fn rfc5769_ipv6() -> Vec<u8> {
    h("01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
       80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
       00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
       00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
       80 28 00 04 c8 fb 0b 4c")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}

#[test]
fn rfc5769_ipv4_sample_response() {
    let msg = rfc5769_ipv4();
    assert_eq!(msg.len(), 80);
    assert_eq!(message_len(&msg), Ok(Some(80)));
    assert_eq!(
        parse_binding_response(&msg, &RFC_TXID),
        Ok(sa("192.0.2.1:32853"))
    );
}

#[test]
fn rfc5769_ipv6_sample_response() {
    let msg = rfc5769_ipv6();
    assert_eq!(msg.len(), 92);
    assert_eq!(message_len(&msg), Ok(Some(92)));
    assert_eq!(
        parse_binding_response(&msg, &RFC_TXID),
        Ok(sa("[2001:db8:1234:5678:11:2233:4455:6677]:32853"))
    );
}

#[test]
fn binding_request_layout() {
    let req = binding_request(&RFC_TXID);
    assert_eq!(
        req.to_vec(),
        h("00 01 00 00 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
    );
    assert_eq!(parse_binding_request(&req), Ok(RFC_TXID));
    assert_eq!(message_len(&req), Ok(Some(20)));
}

#[test]
fn rfc5769_sample_request_is_a_binding_request() {
    // §2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME (9 bytes + 3 pad), MI, FINGERPRINT.
    let req = h("00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
                 80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
                 00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
                 00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
                 00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
                 80 28 00 04 e5 7a 3b cf");
    assert_eq!(parse_binding_request(&req), Ok(RFC_TXID));
    assert_eq!(
        parse_binding_response(&req, &RFC_TXID),
        Err(StunError::UnexpectedType(BINDING_REQUEST))
    );
}

#[test]
fn xor_mapped_wins_over_mapped() {
    let mut msg = binding_success(&RFC_TXID, sa("203.0.113.7:4000"), MappedEncoding::Xor);
    // Append a MAPPED-ADDRESS with another address after the XOR one.
    let extra = [0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x00, 0x50, 10, 0, 0, 1];
    msg.extend_from_slice(&extra);
    let len = u16::from_be_bytes([msg[2], msg[3]]) + 12;
    msg[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        parse_binding_response(&msg, &RFC_TXID),
        Ok(sa("203.0.113.7:4000"))
    );
    // MAPPED-ADDRESS alone (an RFC 3489 style answer) is used.
    let plain = binding_success(&RFC_TXID, sa("198.51.100.9:81"), MappedEncoding::Plain);
    assert_eq!(
        parse_binding_response(&plain, &RFC_TXID),
        Ok(sa("198.51.100.9:81"))
    );
}

#[test]
fn malformed_answers_have_precise_errors() {
    let good = rfc5769_ipv4();
    let other_txid = [0u8; 12];
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut m = good.clone();
        f(&mut m);
        parse_binding_response(&m, &RFC_TXID)
    };
    assert_eq!(
        parse_binding_response(&good[..19], &RFC_TXID),
        Err(StunError::TooShort(19))
    );
    assert_eq!(with(&|m| m[0] = 0x41), Err(StunError::NotStun(0x41)));
    assert_eq!(
        with(&|m| m[4] = 0),
        Err(StunError::BadCookie([0, 0x12, 0xa4, 0x42]))
    );
    assert_eq!(
        with(&|m| m[3] = 0x3d),
        Err(StunError::UnalignedLength(0x3d))
    );
    assert_eq!(
        parse_binding_response(&good[..76], &RFC_TXID),
        Err(StunError::Truncated {
            declared: 60,
            available: 56
        })
    );
    assert_eq!(
        with(&|m| m.extend_from_slice(&[0; 4])),
        Err(StunError::TrailingBytes(4))
    );
    assert_eq!(with(&|m| m[1] = 0x11), Err(StunError::ErrorResponse));
    assert_eq!(
        with(&|m| m[1] = 0x02),
        Err(StunError::UnexpectedType(0x0102))
    );
    assert_eq!(
        parse_binding_response(&good, &other_txid),
        Err(StunError::TransactionMismatch)
    );
    // XOR-MAPPED family 3.
    assert_eq!(
        with(&|m| m[41] = 3),
        Err(StunError::BadFamily {
            attr: ATTR_XOR_MAPPED_ADDRESS,
            family: 3
        })
    );
    // IPv4 family with an IPv6-sized value: make the attribute claim length 4 (padding ok).
    assert_eq!(
        with(&|m| m[39] = 4),
        Err(StunError::BadAddressLength {
            attr: ATTR_XOR_MAPPED_ADDRESS,
            len: 4
        })
    );
    // SOFTWARE claims 0xff bytes: runs past the end.
    assert_eq!(
        with(&|m| m[23] = 0xff),
        Err(StunError::AttributeTruncated(20))
    );
    // No address attribute at all: turn XOR-MAPPED into an unknown comprehension-optional type.
    assert_eq!(
        with(&|m| m[36..38].copy_from_slice(&[0x80, 0x99])),
        Err(StunError::NoMappedAddress)
    );
}

#[test]
fn attribute_padding_is_walked() {
    // A 1-byte attribute (3 bytes of padding) before the address.
    let mut msg = binding_success(&RFC_TXID, sa("192.0.2.44:7"), MappedEncoding::Xor);
    let body = msg.split_off(HEADER_LEN);
    let mut attrs = vec![0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0];
    attrs.extend_from_slice(&body);
    msg[2..4].copy_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&attrs);
    assert_eq!(
        parse_binding_response(&msg, &RFC_TXID),
        Ok(sa("192.0.2.44:7"))
    );
    // The same with the padding missing is truncated.
    let mut short = msg[..HEADER_LEN].to_vec();
    short[2..4].copy_from_slice(&8u16.to_be_bytes());
    short.extend_from_slice(&[0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4]);
    assert_eq!(
        parse_binding_response(&short, &RFC_TXID),
        Err(StunError::AttributeTruncated(20))
    );
}

#[test]
fn message_len_streams() {
    let msg = rfc5769_ipv6();
    for cut in 0..HEADER_LEN {
        assert_eq!(message_len(&msg[..cut]), Ok(None), "cut {cut}");
    }
    for cut in HEADER_LEN..msg.len() {
        assert_eq!(message_len(&msg[..cut]), Ok(Some(92)), "cut {cut}");
    }
    assert_eq!(message_len(b"G"), Err(StunError::NotStun(b'G')));
    assert_eq!(
        message_len(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Err(StunError::NotStun(b'G'))
    );
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(o, p)| SocketAddr::from((o, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(o, p)| SocketAddr::from((o, p))),
    ]
}

proptest! {
    #[test]
    fn round_trip(txid in any::<[u8; 12]>(), addr in any_addr(), enc in 0u8..3) {
        let enc = [MappedEncoding::Xor, MappedEncoding::Plain, MappedEncoding::Both][enc as usize];
        let msg = binding_success(&txid, addr, enc);
        prop_assert_eq!(message_len(&msg), Ok(Some(msg.len())));
        prop_assert_eq!(parse_binding_response(&msg, &txid), Ok(addr));
        prop_assert_eq!(parse_binding_request(&binding_request(&txid)), Ok(txid));
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), stunny in any::<bool>()) {
        let mut b = bytes;
        if stunny && b.len() >= HEADER_LEN {
            // Plausible header so the attribute walk is reached.
            b[0] = 0x01;
            b[1] = 0x01;
            let len = ((b.len() - HEADER_LEN) & !3) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            b[4..8].copy_from_slice(&MAGIC_COOKIE);
            b.truncate(HEADER_LEN + usize::from(len));
        }
        let txid: TransactionId = b.get(8..20).and_then(|s| s.try_into().ok()).unwrap_or([0; 12]);
        let _ = parse_binding_response(&b, &txid);
        let _ = parse_binding_request(&b);
        if let Ok(Some(n)) = message_len(&b) {
            prop_assert!((HEADER_LEN..=MAX_MESSAGE_LEN).contains(&n));
        }
    }
}
