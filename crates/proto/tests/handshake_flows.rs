//! End-to-end handshakes through the public API only, the way the data plane
//! and a test client drive them (no I/O: byte buffers stand in for sockets).

use std::time::{Duration, Instant};

use proto::{
    build_client_hello, build_client_init, build_dc_init, build_server_hello, detect_tls,
    match_init, verify_server_hello, write_app_data, ClientHelloParams, Decoded, Detection,
    FakeTlsHello, FastModeKeys, FrameDecoder, Framing, ObfuscatedInit, ProtoTag, RecordKind,
    ReplayVerdict, ServerHelloParams, ShardedReplayCache, StreamSide, TagSet, TlsPolicy,
    TlsRecordReader, Transport, UserTable,
};

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

const NOW: u64 = 1_800_000_000;

#[test]
fn fake_tls_then_inner_obfs2_then_padded_frames() {
    let secrets = [[1u8; 16], [2u8; 16], [3u8; 16]];
    let table = UserTable::new(secrets);
    let me = secrets[2];
    let mut r = rng(7);

    // Client: ClientHello of a modern size.
    let hello = build_client_hello(
        &me,
        &ClientHelloParams {
            timestamp: NOW as u32,
            session_id: &[0x33; 32],
            sni: Some("example.com"),
            alpn: &[b"h2"],
            key_share: &[5; 32],
            total_len: Some(1800),
        },
    )
    .expect("hello");

    // Proxy: detect, validate, replay-check, respond.
    assert_eq!(
        detect_tls(&hello[..5]),
        Detection::ClientHello { record_len: 1795 }
    );
    let policy = TlsPolicy {
        allowed_domains: vec!["example.com".into()],
        alpn_enforce: true,
        ..TlsPolicy::default()
    };
    let v = FakeTlsHello::validate(&hello, &table, NOW, &policy).expect("valid");
    assert_eq!(v.user_index, 2);
    let tls_replay = ShardedReplayCache::<16>::new(1024, Duration::from_secs(120), 4);
    let t0 = Instant::now();
    assert_eq!(
        tls_replay.check_and_insert(v.replay_key(), t0),
        ReplayVerdict::Fresh
    );
    let mut flight = vec![0u8; 2048];
    r(&mut flight);
    let resp = build_server_hello(
        &me,
        &ServerHelloParams {
            client_digest: &v.digest,
            session_id: &v.session_id,
            key_share: &[8; 32],
            fake_flight: &flight,
            alpn: v.alpn,
            cipher: proto::tls::server_hello::DEFAULT_CIPHER,
            versions_first: false,
        },
    )
    .expect("response");
    assert!(verify_server_hello(&me, &v.digest, &resp));
    // Replaying the same hello is caught.
    let v2 = FakeTlsHello::validate(&hello, &table, NOW, &policy).expect("still valid");
    assert_eq!(
        tls_replay.check_and_insert(v2.replay_key(), t0),
        ReplayVerdict::Replay
    );

    // Client: CCS, then the init merged with the first packet in one record.
    let mut sealed = build_client_init(&mut r, &me, ProtoTag::Padded, -2).expect("init");
    let mut first = Vec::new();
    first.extend_from_slice(&sealed.wire);
    let mut frame = vec![0x0c, 0, 0, 0];
    frame.extend_from_slice(b"hello world!");
    sealed.ciphers.encrypt.apply_in_place(&mut frame);
    first.extend_from_slice(&frame);
    let mut wire = vec![0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
    write_app_data(&first, 50, &mut wire); // several small records

    // Proxy: de-frame records into the obfuscated2 stream.
    let mut reader = TlsRecordReader::new();
    let mut stream = Vec::new();
    let mut rest = &wire[..];
    while let Some(rec) = reader.decode(rest).expect("valid records") {
        if rec.kind == RecordKind::ApplicationData {
            stream.extend_from_slice(&rest[rec.payload.clone()]);
        }
        rest = &rest[rec.consumed..];
    }
    assert!(rest.is_empty());
    let init = ObfuscatedInit::from_wire(&stream[..64]).expect("64 bytes");
    let allowed = TagSet::for_modes(false, false, true, Transport::InsideTls);
    let mut m = match_init(&table, &init, Some(v.user_index), allowed).expect("inner init");
    assert_eq!(
        (m.user_index, m.tag, m.dc, m.tries),
        (2, ProtoTag::Padded, -2, 1)
    );
    let obfs_replay = ShardedReplayCache::<48>::new(1024, Duration::from_secs(120), 4);
    assert_eq!(
        obfs_replay.check_and_insert(m.replay_key, t0),
        ReplayVerdict::Fresh
    );

    let mut data = stream[64..].to_vec();
    m.ciphers.decrypt.apply_in_place(&mut data);
    let mut dec = FrameDecoder::new(Framing::from(m.tag), StreamSide::FromClient);
    let Some(Decoded::Frame(f)) = dec.decode(&data).expect("frame") else {
        panic!("expected a complete frame");
    };
    assert_eq!(&data[f.payload], b"hello world!");

    // Direct mode, fast: the DC → proxy stream equals the proxy → client one.
    let dc = build_dc_init(
        &mut r,
        m.tag,
        m.dc,
        Some(FastModeKeys {
            key: &m.keys.backward_key,
            iv: &m.keys.backward_iv,
        }),
    )
    .expect("dc init");
    let dc_side = ObfuscatedInit::new(dc.wire).open(None).expect("DC opens");
    assert_eq!((dc_side.tag, dc_side.dc), (ProtoTag::Padded, -2));
    let mut from_dc = *b"answer bytes....";
    let mut dc_enc = dc_side.ciphers.encrypt.clone();
    dc_enc.apply_in_place(&mut from_dc);
    let mut via_client_stream = *b"answer bytes....";
    m.ciphers.encrypt.apply_in_place(&mut via_client_stream);
    assert_eq!(from_dc, via_client_stream, "fast mode: identity relay");
    let mut back = from_dc;
    sealed.ciphers.decrypt.apply_in_place(&mut back);
    assert_eq!(&back, b"answer bytes....");
}

#[test]
fn classic_init_rejected_when_only_tls_enabled() {
    let table = UserTable::new([[9u8; 16]]);
    let sealed = build_client_init(&mut rng(3), &[9u8; 16], ProtoTag::Abridged, 1).expect("init");
    let allowed = TagSet::for_modes(false, false, true, Transport::PlainTcp);
    let err = match_init(&table, &ObfuscatedInit::new(sealed.wire), None, allowed)
        .expect_err("classic off");
    assert_eq!(err.label(), "obfs2_tag_not_allowed");
}
