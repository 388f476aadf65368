//! Probe ClientHello and origin flight parse.

use super::*;
use crate::tls::hello::parse_client_hello;

fn probe() -> Vec<u8> {
    build_probe_hello(&ProbeParams {
        sni: "front.test",
        random: &[1; 32],
        session_id: &[2; 32],
        key_share: &[3; 32],
    })
    .expect("probe")
}

#[test]
fn probe_is_a_517_byte_browser_hello() {
    let p = probe();
    assert_eq!(p.len(), PROBE_RECORD_LEN);
    let info = parse_client_hello(&p).expect("parses as a ClientHello");
    assert_eq!(info.sni, Some("front.test"));
    assert!(info.alpn_h2 && info.alpn_http11);
    assert_eq!(info.tls13_suites, 0b111);
}

/// A ServerHello the way nginx/OpenSSL writes it: supported_versions, then key_share.
fn server_hello(cipher: u16) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[2; 32]);
    body.extend_from_slice(&cipher.to_be_bytes());
    body.push(0);
    let mut ext = vec![0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    ext.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![0x02];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x03];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

fn app(len: usize) -> Vec<u8> {
    let mut r = vec![0x17, 0x03, 0x03];
    r.extend_from_slice(&(len as u16).to_be_bytes());
    r.resize(5 + len, 0xaa);
    r
}

#[test]
fn tls13_flight_shape_byte_by_byte() {
    let mut wire = server_hello(0x1302);
    wire.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    wire.extend_from_slice(&app(2400));
    wire.extend_from_slice(&app(286));
    wire.extend_from_slice(&app(74));
    let mut p = FlightParser::default();
    for b in wire.chunks(1) {
        p.push(b).expect("valid flight");
    }
    let s = p.shape().expect("shape");
    assert_eq!(s.hello.cipher, 0x1302);
    assert_eq!(s.hello.selected_version, TLS13);
    assert_eq!(s.hello.extensions, [EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE]);
    assert_eq!(s.hello.key_share_group, Some(0x001d));
    assert_eq!(s.ccs_count, 1);
    assert_eq!(s.app_data_total(), 2400 + 286 + 74);
}

#[test]
fn tls12_hello_sharing_its_record_counts_the_rest() {
    let mut rec = server_hello(0xc02f);
    // Append a Certificate-like message inside the same record.
    rec.extend_from_slice(&[0x0b, 0x00, 0x00, 0x03, 1, 2, 3]);
    let len = (rec.len() - 5) as u16;
    rec[3..5].copy_from_slice(&len.to_be_bytes());
    let mut p = FlightParser::default();
    p.push(&rec).expect("valid");
    let s = p.shape().expect("shape");
    assert_eq!(
        s.records,
        [RecordShape {
            content_type: 0x16,
            len: 7
        }]
    );
}

#[test]
fn alerts_and_garbage_are_errors() {
    let mut p = FlightParser::default();
    assert_eq!(
        p.push(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
        Err(OriginError::Alert(2, 0x28))
    );
    let mut p = FlightParser::default();
    assert!(p.push(b"HTTP/1.1 400 Bad Request\r\n").is_err());
    let mut p = FlightParser::default();
    assert_eq!(p.push(&app(10)), Err(OriginError::NotServerHello));
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let mut p = FlightParser::default();
        let _ = p.push(&bytes);
        let _ = parse_server_hello(&bytes);
    }
}
