//! ME layer tests (docs/PROTOCOL.md vectors M1, M2, M3).

use super::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address literal")
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("valid hex literal")
}

#[test]
fn vector_m1_kdf() {
    let secret = [0x55u8; 128];
    let k = KdfInput {
        nonce_srv: [0x11; 16],
        nonce_clt: [0x22; 16],
        clt_ts: u32::from_le_bytes([0x11, 0x22, 0x33, 0x44]),
        clt: sa("1.0.0.10:8080"),
        srv: sa("50.175.154.149:8888"),
        proxy_secret: &secret,
    };
    let cases = [
        (
            Purpose::Client,
            "934f5facdafd65a44d5c2df90d2f35ddc81faaaeb337949dfeef817c8a7c1e00",
            "933c18ee8f1696c3379ac8a86e4441991428be4c294c886bf636e83b947def5d",
            "2141a0df45c455edbf2730ac5902d65a",
        ),
        (
            Purpose::Server,
            "d4cbad69200ee661e8466793768ce8a55a405eeec1101d5ef7e8fd270d970d9d",
            "2e7248959517afa3f9c9a05ca2258e5f935727265585cd9d1905a258c7209444",
            "9f11c0fd1acd950cb703679b3ea16fb5",
        ),
    ];
    for (purpose, sha, key, iv) in cases {
        let s = kdf_input_bytes(&k, purpose).expect("same family");
        assert_eq!(s.len(), 214);
        assert_eq!(s[36..40], [0x95, 0x9a, 0xaf, 0x32]);
        assert_eq!(s[48..52], [0x0a, 0x00, 0x00, 0x01]);
        assert_eq!(Sha256::digest(&s).to_vec(), h(sha));
        let (kk, ii) = derive_key_iv(&k, purpose).expect("same family");
        assert_eq!(kk.to_vec(), h(key));
        assert_eq!(ii.to_vec(), h(iv));
    }
    let mixed = KdfInput {
        srv: sa("[2001:db8::1]:8888"),
        ..k.clone()
    };
    assert_eq!(derive_key_iv(&mixed, Purpose::Client), Err(MixedFamilies));
    let v6 = KdfInput {
        clt: sa("[2001:db8::2]:1"),
        ..mixed
    };
    assert_eq!(
        kdf_input_bytes(&v6, Purpose::Client).map(|s| s.len()),
        Ok(214 + 32)
    );
}

#[test]
fn vector_m2_nonce_packet() {
    let n = RpcNonce {
        key_select: [0xc4, 0xf9, 0xfa, 0xca],
        schema: 1,
        ts: 1_700_000_000,
        nonce: std::array::from_fn(|i| i as u8),
    };
    let mut out = Vec::new();
    encode_packet(-2, &n.to_bytes(), Checksum::Crc32, &mut out);
    assert_eq!(
        out,
        h("2c000000 feffffff aa87cb7a c4f9faca 01000000 00f15365 000102030405060708090a0b0c0d0e0f 765227a2")
    );
    let mut d = RpcPacketDecoder::new();
    let p = d.decode(&out).expect("valid").expect("complete");
    assert_eq!((p.seq, p.consumed), (-2, 44));
    let back = RpcNonce::parse(&out[p.payload]).expect("nonce");
    assert_eq!(back, n);
    assert_eq!(n.check_reply(&back), Ok(()));
    let other = RpcNonce {
        key_select: [0; 4],
        ..n
    };
    assert_eq!(
        n.check_reply(&other),
        Err(RpcError::NonceMismatch("key_select"))
    );
}

#[test]
fn vector_m3_proxy_req() {
    let mut out = Vec::new();
    write_proxy_req_header(
        0x2802_1002,
        0x0102_0304_0506_0708,
        sa("198.51.100.7:51234"),
        sa("203.0.113.10:443"),
        Some(&[
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]),
        &mut out,
    );
    assert_eq!(
        out,
        h(concat!(
            "eef1ce36 0a100228 0807060504030201",
            "00000000000000000000ffffc6336407 22c80000",
            "00000000000000000000ffffcb00710a bb010000",
            "18000000 ae261edb 10 0123456789abcdef0123456789abcdef 000000"
        ))
    );
    let mut no_tag = Vec::new();
    write_proxy_req_header(
        0x2802_100a,
        1,
        sa("1.2.3.4:5"),
        sa("6.7.8.9:10"),
        None,
        &mut no_tag,
    );
    assert_eq!(no_tag.len(), 56);
    assert_eq!(no_tag[4..8], 0x2802_1002u32.to_le_bytes());
    // M3 first line: IPv4-mapped address and port encoding.
    let mut a = Vec::new();
    write_proxy_req_header(
        0,
        0,
        sa("149.154.175.50:8888"),
        sa("0.0.0.0:0"),
        None,
        &mut a,
    );
    assert_eq!(
        a[16..36],
        h("00000000000000000000ffff959aaf32 b8220000")[..]
    );
}

#[test]
fn packets_seq_padding_and_errors() {
    let mut wire = Vec::new();
    encode_packet(-2, &[1; 32], Checksum::Crc32, &mut wire);
    encode_packet(
        -1,
        &handshake_payload(0x800, &[1; 12], &[2; 12]),
        Checksum::Crc32,
        &mut wire,
    );
    pad_to_block(&mut wire);
    assert_eq!(wire.len() % 16, 0);
    encode_packet(0, &id_ping(), Checksum::Crc32c, &mut wire);
    let mut d = RpcPacketDecoder::new();
    let mut rest = &wire[..];
    let p = d.decode(rest).expect("ok").expect("nonce");
    rest = &rest[p.consumed..];
    let p = d.decode(rest).expect("ok").expect("handshake");
    assert_eq!(parse_handshake_answer(&rest[p.payload.clone()]), Ok(0x800));
    rest = &rest[p.consumed..];
    assert_eq!(d.decode(rest), Err(RpcError::BadChecksum), "still CRC-32");
    d.set_checksum(Checksum::Crc32c);
    let p = d.decode(rest).expect("ok").expect("ping after padding");
    assert_eq!(p.seq, 0);
    assert_eq!(
        MeMessage::parse(&rest[p.payload.clone()]),
        Ok(MeMessage::Ping { ping_id: 7 })
    );
    let mut d = RpcPacketDecoder::new();
    assert_eq!(d.decode(&[11, 0, 0, 0]), Err(RpcError::BadLength(11)));
    let mut seq_wrong = Vec::new();
    encode_packet(5, &[0; 4], Checksum::Crc32, &mut seq_wrong);
    assert_eq!(
        d.decode(&seq_wrong),
        Err(RpcError::BadSeq { got: 5, want: -2 })
    );
    let mut err = vec![0xda, 0xbe, 0x27, 0x6a];
    err.extend_from_slice(&(-3i32).to_le_bytes());
    assert_eq!(
        parse_handshake_answer(&err),
        Err(RpcError::HandshakeRejected(-3))
    );
}

fn id_ping() -> [u8; 12] {
    rpc::id_u64_payload(rpc::RPC_PING, 7)
}

#[test]
fn me_messages() {
    let mut ans = rpc::RPC_PROXY_ANS.to_le_bytes().to_vec();
    ans.extend_from_slice(&0x8000_0000u32.to_le_bytes());
    ans.extend_from_slice(&9u64.to_le_bytes());
    ans.extend_from_slice(b"data");
    assert_eq!(
        MeMessage::parse(&ans),
        Ok(MeMessage::ProxyAns {
            flags: 0x8000_0000,
            conn_id: 9,
            data: 16..20
        })
    );
    let mut ack = rpc::RPC_SIMPLE_ACK.to_le_bytes().to_vec();
    ack.extend_from_slice(&9u64.to_le_bytes());
    ack.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        MeMessage::parse(&ack),
        Ok(MeMessage::SimpleAck {
            conn_id: 9,
            confirm: [1, 2, 3, 4]
        })
    );
    let close = rpc::id_u64_payload(rpc::RPC_CLOSE_EXT, 4);
    assert_eq!(
        MeMessage::parse(&close),
        Ok(MeMessage::Close { conn_id: 4 })
    );
    assert_eq!(
        MeMessage::parse(&close[..8]),
        Err(RpcError::Truncated(rpc::RPC_CLOSE_EXT))
    );
    assert_eq!(
        MeMessage::parse(&[1, 2, 3, 4]),
        Err(RpcError::UnexpectedType(0x0403_0201))
    );
}

#[test]
fn cbc_chains_across_calls() {
    let (key, iv) = ([4u8; 32], [5u8; 16]);
    let plain: Vec<u8> = (0..96u8).collect();
    let mut one = plain.clone();
    CbcStream::encryptor(&key, &iv)
        .apply_in_place(&mut one)
        .expect("aligned");
    let mut two = plain.clone();
    let mut e = CbcStream::encryptor(&key, &iv);
    let (a, b) = two.split_at_mut(32);
    e.apply_in_place(a).expect("aligned");
    e.apply_in_place(b).expect("aligned");
    assert_eq!(one, two);
    let mut d = CbcStream::decryptor(&key, &iv);
    let (a, b) = two.split_at_mut(48);
    d.apply_in_place(a).expect("aligned");
    d.apply_in_place(b).expect("aligned");
    assert_eq!(two, plain);
    assert_eq!(
        e.apply_in_place(&mut [0u8; 15]),
        Err(kdf::NotBlockAligned(15))
    );
}

proptest! {
    #[test]
    fn packet_round_trip(words in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..16), 1..6)) {
        // RPC payloads are whole 4-byte words (TL), which keeps padding words aligned.
        let payloads: Vec<Vec<u8>> = words.iter().map(|w| w.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let mut wire = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_packet(i as i32 - 2, p, Checksum::Crc32, &mut wire);
            if i % 2 == 0 {
                pad_to_block(&mut wire);
            }
        }
        let mut d = RpcPacketDecoder::new();
        let mut rest = &wire[..];
        for p in &payloads {
            let pkt = d.decode(rest).expect("valid").expect("complete");
            prop_assert_eq!(&rest[pkt.payload.clone()], &p[..]);
            rest = &rest[pkt.consumed..];
        }
    }

    #[test]
    fn encrypted_link_yields_every_packet_in_any_chunking(
        sizes in proptest::collection::vec(0usize..300, 1..40),
        cuts in proptest::collection::vec(1usize..700, 1..30),
        crc32c in any::<bool>(),
    ) {
        let (key, iv) = ([7u8; 32], [9u8; 16]);
        let mut tx = RpcSender::new();
        tx.start_encryption(&key, &iv);
        let mut rx = RpcReceiver::new();
        rx.start_decryption(&key, &iv);
        let c = if crc32c { Checksum::Crc32c } else { Checksum::Crc32 };
        tx.set_checksum(c);
        rx.set_checksum(c);
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (0..n * 4).map(|b| (b + i) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for p in &payloads {
            tx.send(p, &mut wire);
        }
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            rx.feed(&rest[..n]);
            rest = &rest[n..];
            while let Some(p) = rx.next_packet().expect("valid stream") {
                got.push(p);
            }
        }
        prop_assert_eq!(got, payloads);
        prop_assert_eq!(rx.buffered(), 0);
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = MeMessage::parse(&bytes);
        let _ = RpcNonce::parse(&bytes);
        let _ = parse_handshake_answer(&bytes);
        let mut d = RpcPacketDecoder::new();
        let _ = d.decode(&bytes);
    }
}

#[test]
fn the_longest_proxy_req_fits_one_packet() {
    let mut req = Vec::new();
    let v6: std::net::SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
    write_proxy_req_header(0, u64::MAX, v6, v6, Some(&[7; 16]), &mut req);
    assert_eq!(req.len(), PROXY_REQ_MAX_HEADER);
    req.resize(PROXY_REQ_MAX_HEADER + MAX_PROXY_REQ_DATA, 0);
    let mut wire = Vec::new();
    super::encode_packet(-2, &req, super::Checksum::Crc32, &mut wire);
    assert_eq!(wire.len(), MAX_PACKET_LEN);
    // The proxy's own decoder takes it.
    let mut d = RpcPacketDecoder::new();
    assert!(d.decode(&wire).expect("decodes").is_some());
}

#[test]
fn an_ipv4_mapped_address_keys_as_ipv4() {
    let input = |clt: &str, srv: &str| {
        let k = KdfInput {
            nonce_srv: [1; 16],
            nonce_clt: [2; 16],
            clt_ts: 3,
            clt: clt.parse().expect("clt"),
            srv: srv.parse().expect("srv"),
            proxy_secret: &[9; 32],
        };
        kdf_input_bytes(&k, Purpose::Client)
    };
    let plain = input("192.0.2.1:4000", "198.51.100.7:8888").expect("v4");
    assert_eq!(
        input("[::ffff:192.0.2.1]:4000", "198.51.100.7:8888"),
        Ok(plain.clone())
    );
    assert_eq!(
        input("192.0.2.1:4000", "[::ffff:198.51.100.7]:8888"),
        Ok(plain)
    );
    // A real IPv6 address with an IPv4 one stays an error.
    assert!(input("[2001:db8::1]:4000", "198.51.100.7:8888").is_err());
}
