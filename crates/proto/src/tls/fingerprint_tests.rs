//! JA3 / JA4 of fixed ClientHello bytes; expected hashes computed outside Rust
//! (`printf '%s' "<raw>" | md5sum`, `| sha256sum | cut -c1-12`).

use super::*;

/// A ClientHello with GREASE in ciphers, extensions, groups and supported_versions.
fn sample_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x08, 0x0a, 0x0a, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b]);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut ext = Vec::new();
    let mut push = |ty: u16, data: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    push(0x1a1a, &[]);
    let mut sni = vec![0x00, 0x0e, 0x00, 0x00, 0x0b];
    sni.extend_from_slice(b"example.com");
    push(0x0000, &sni);
    push(0x000a, &[0x00, 0x06, 0x2a, 0x2a, 0x00, 0x1d, 0x00, 0x17]);
    push(0x000b, &[0x01, 0x00]);
    push(0x000d, &[0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    let mut alpn = vec![0x00, 0x0c, 0x02];
    alpn.extend_from_slice(b"h2");
    alpn.push(0x08);
    alpn.extend_from_slice(b"http/1.1");
    push(0x0010, &alpn);
    push(0x002b, &[0x06, 0x3a, 0x3a, 0x03, 0x04, 0x03, 0x03]);
    push(0xff01, &[0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn ja3_and_ja4_of_a_fixed_hello() {
    let fp = fingerprint(&sample_hello()).expect("fingerprint");
    assert_eq!(
        fp.ja3_raw,
        "771,4865-4866-49195,0-10-11-13-16-43-65281,29-23,0"
    );
    assert_eq!(fp.ja3, "b045c2a43f67cb7c75cf8c8c9b52affd");
    assert_eq!(
        fp.ja4_raw,
        "t13d0307h2_1301,1302,c02b_000a,000b,000d,002b,ff01_0403,0804"
    );
    assert_eq!(fp.ja4, "t13d0307h2_5559582ccdc4_58f08eb65128");
}

#[test]
fn grease_alpn_and_version_rules() {
    assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
    assert!(!is_grease(0x0a1a) && !is_grease(0x1301) && !is_grease(0x0000));
    assert_eq!(alpn_code(None), "00");
    assert_eq!(alpn_code(Some(b"http/1.1")), "h1");
    assert_eq!(alpn_code(Some(b"h2")), "h2");
    assert_eq!(alpn_code(Some(&[0xab, 0x01, 0xcd])), "ad");
    assert_eq!(version_code(0x0303), "12");
    assert_eq!(version_code(0x1234), "00");
}

#[test]
fn no_extensions_and_garbage_never_panic() {
    // A hello without extensions: legacy version, no SNI, no ALPN, empty hash part c.
    let mut rec = sample_hello();
    let body_start = 5 + 4;
    let ext_start = body_start + 2 + 32 + 1 + 10 + 2;
    rec.truncate(ext_start);
    let hs_len = rec.len() - body_start;
    rec[6..9].copy_from_slice(&[0, (hs_len >> 8) as u8, hs_len as u8]);
    let rec_len = rec.len() - 5;
    rec[3..5].copy_from_slice(&(rec_len as u16).to_be_bytes());
    let fp = fingerprint(&rec).expect("fingerprint");
    assert_eq!(fp.ja3_raw, "771,4865-4866-49195,,,");
    assert!(fp.ja4.starts_with("t12i030000_"), "{}", fp.ja4);
    assert!(fp.ja4.ends_with("_000000000000"), "{}", fp.ja4);

    let full = sample_hello();
    for cut in 0..full.len() {
        let _ = fingerprint(&full[..cut]);
    }
    assert_eq!(
        fingerprint(b"GET / HTTP/1.1"),
        Err(FingerprintError::NotClientHello)
    );
}
