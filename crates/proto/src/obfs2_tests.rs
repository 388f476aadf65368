//! Unit tests and proptests for `obfs2` (docs/PROTOCOL.md vectors O1, O2).

use super::*;
use proptest::prelude::*;

fn h<const N: usize>(s: &str) -> [u8; N] {
    let v = hex::decode(s).expect("valid hex literal");
    v.try_into().expect("literal has the right length")
}

const S: &str = "00112233445566778899aabbccddeeff";

fn o1_plain() -> [u8; 64] {
    let mut p = [0u8; 64];
    for (i, b) in p.iter_mut().enumerate() {
        *b = i as u8;
    }
    p[56..60].copy_from_slice(&[0xdd; 4]);
    p[60..62].copy_from_slice(&[0x02, 0x00]);
    p
}

#[test]
fn vector_o1_client_init() {
    let secret: Secret = h(S);
    let wire: [u8; 64] = h(concat!(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "202122232425262728292a2b2c2d2e2f30313233343536378f3d40553f8b44b1"
    ));
    // Client side: sealing the plaintext gives the wire bytes.
    let mut sealed = seal_init(&o1_plain(), Some(&secret));
    assert_eq!(sealed.wire, wire);

    // Proxy side.
    let init = ObfuscatedInit::from_wire(&wire).expect("64 bytes");
    let mut opened = init.open(Some(&secret)).expect("valid init");
    assert_eq!(
        opened.keys.forward_key,
        h::<32>("28ddb6447216c5f55106259f1c7ba64bfe69909197bc20253466cfa42715f29c")
    );
    assert_eq!(
        opened.keys.forward_iv,
        h::<16>("28292a2b2c2d2e2f3031323334353637")
    );
    assert_eq!(
        opened.keys.backward_key,
        h::<32>("c95a3c8c663a4e2daff3469561805825e7be010c4fcb691415b93145b640c9f3")
    );
    assert_eq!(
        opened.keys.backward_iv,
        h::<16>("17161514131211100f0e0d0c0b0a0908")
    );
    assert_eq!(opened.tag, ProtoTag::Padded);
    assert_eq!(opened.dc, 2);

    let mut decrypted = wire;
    AesCtr::new(&opened.keys.forward_key, &opened.keys.forward_iv).apply_in_place(&mut decrypted);
    assert_eq!(decrypted[56..64], h::<8>("dddddddd02003e3f"));

    // Next client byte uses keystream offset 64, in both the client's encryptor
    // and the proxy's decryptor.
    let mut data = h::<4>("01000000");
    sealed.ciphers.encrypt.apply_in_place(&mut data);
    assert_eq!(data, h::<4>("986c5102"));
    opened.ciphers.decrypt.apply_in_place(&mut data);
    assert_eq!(data, h::<4>("01000000"));

    let mut ks = [0u8; 8];
    opened.ciphers.encrypt.apply_in_place(&mut ks);
    assert_eq!(ks, h::<8>("08e1eddf0a73ec8c"));
    // The client's decryptor sees the same keystream.
    let mut ks2 = [0u8; 8];
    sealed.ciphers.decrypt.apply_in_place(&mut ks2);
    assert_eq!(ks2, ks);

    assert_eq!(init.replay_key()[..], wire[8..56]);
}

#[test]
fn vector_o2_dc_init() {
    let mut plain = [0u8; 64];
    for (i, b) in plain.iter_mut().enumerate() {
        *b = ((3 * i + 1) % 256) as u8;
    }
    plain[56..60].copy_from_slice(&[0xef; 4]);
    plain[60..62].copy_from_slice(&(-4i16).to_le_bytes());
    assert_eq!(
        plain[..],
        h::<64>(concat!(
            "0104070a0d101316191c1f2225282b2e3134373a3d404346494c4f5255585b5e",
            "6164676a6d707376797c7f8285888b8e9194979a9da0a3a6efefefeffcffbbbe"
        ))[..]
    );
    let sealed = seal_init(&plain, None);
    assert_eq!(sealed.wire[..56], plain[..56]);
    assert_eq!(sealed.wire[56..], h::<8>("f08596b53ac06e9d"));
    assert_eq!(
        sealed.keys.backward_key,
        h::<32>("a6a3a09d9a9794918e8b8885827f7c797673706d6a6764615e5b5855524f4c49")
    );
    assert_eq!(
        sealed.keys.backward_iv,
        h::<16>("4643403d3a3734312e2b2825221f1c19")
    );
    let opened = ObfuscatedInit::new(sealed.wire)
        .open(None)
        .expect("DC opens it");
    assert_eq!((opened.tag, opened.dc), (ProtoTag::Abridged, -4));
}

#[test]
fn forbidden_prefixes() {
    let mut ok = [1u8; 64];
    assert!(!is_forbidden_prefix(&ok));
    for bad in [
        &b"HEAD"[..],
        b"POST",
        b"GET ",
        b"OPTI",
        &[0xee; 4],
        &[0xdd; 4],
        &[0x16, 3, 1, 2],
    ] {
        let mut x = ok;
        x[..4].copy_from_slice(bad);
        assert!(is_forbidden_prefix(&x), "{bad:?}");
    }
    ok[0] = 0xef;
    assert!(is_forbidden_prefix(&ok));
    ok[0] = 1;
    ok[4..8].copy_from_slice(&[0; 4]);
    assert!(is_forbidden_prefix(&ok));
}

#[test]
fn stuck_random_source_is_an_error() {
    let mut zeros = |b: &mut [u8]| b.fill(0);
    assert_eq!(
        generate_plain_init(&mut zeros, ProtoTag::Padded, 2),
        Err(InitError::RandomSourceStuck)
    );
    assert_eq!(
        ObfuscatedInit::from_wire(&[0; 63]),
        Err(InitError::BadLength(63))
    );
}

#[test]
fn tag_sets_follow_modes() {
    let plain_secure = TagSet::for_modes(false, true, true, Transport::PlainTcp);
    assert!(plain_secure.contains(ProtoTag::Padded));
    assert!(!plain_secure.contains(ProtoTag::Abridged));
    let tls_only = TagSet::for_modes(false, false, true, Transport::InsideTls);
    assert!(tls_only.contains(ProtoTag::Padded));
    assert!(!tls_only.contains(ProtoTag::Intermediate));
    assert_eq!(
        TagSet::for_modes(false, false, true, Transport::PlainTcp),
        TagSet::NONE
    );
    let classic_tls = TagSet::for_modes(true, false, false, Transport::InsideTls);
    assert!(classic_tls.contains(ProtoTag::Abridged) && !classic_tls.contains(ProtoTag::Padded));
}

fn seeded(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut x = seed | 1;
    move |buf: &mut [u8]| {
        for b in buf {
            // xorshift64: deterministic test randomness.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}

proptest! {
    #[test]
    fn client_init_round_trip(seed in any::<u64>(), secret in any::<[u8; 16]>(),
                              tag_i in 0usize..3, dc in any::<i16>(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let tag = ProtoTag::ALL[tag_i];
        let mut rng = seeded(seed);
        let mut sealed = build_client_init(&mut rng, &secret, tag, dc).expect("rng ok");
        prop_assert!(!is_forbidden_prefix(&sealed.wire));
        let mut opened = ObfuscatedInit::new(sealed.wire).open(Some(&secret)).expect("opens");
        prop_assert_eq!((opened.tag, opened.dc), (tag, dc));
        let mut buf = data.clone();
        sealed.ciphers.encrypt.apply_in_place(&mut buf);
        opened.ciphers.decrypt.apply_in_place(&mut buf);
        prop_assert_eq!(&buf, &data);
        opened.ciphers.encrypt.apply_in_place(&mut buf);
        sealed.ciphers.decrypt.apply_in_place(&mut buf);
        prop_assert_eq!(&buf, &data);
    }

    #[test]
    fn fast_mode_dc_stream_equals_client_stream(seed in any::<u64>(), key in any::<[u8; 32]>(), iv in any::<[u8; 16]>()) {
        let mut rng = seeded(seed);
        let sealed = build_dc_init(&mut rng, ProtoTag::Intermediate, 3, Some(FastModeKeys { key: &key, iv: &iv })).expect("rng ok");
        prop_assert_eq!(sealed.keys.backward_key, key);
        prop_assert_eq!(sealed.keys.backward_iv, iv);
    }

    #[test]
    fn open_never_panics(bytes in any::<[u8; 64]>(), secret in any::<[u8; 16]>()) {
        let _ = ObfuscatedInit::new(bytes).open(Some(&secret));
    }
}
