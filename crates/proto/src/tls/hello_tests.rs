//! Unit tests and proptests for fake TLS (docs/PROTOCOL.md vectors T1, T2).

use super::*;
use crate::sha::HmacKeyState;
use crate::tls::client::{build_client_hello, client_digest, ClientHelloParams};
use crate::tls::server_hello::{
    build_server_hello, verify_server_hello, ServerHelloParams, DEFAULT_CIPHER,
};
use proptest::prelude::*;

fn h<const N: usize>(s: &str) -> [u8; N] {
    let v = hex::decode(s).expect("valid hex literal");
    v.try_into().expect("literal has the right length")
}

const S: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

fn t1_record() -> Vec<u8> {
    let mut rec: Vec<u8> = (0..517usize).map(|i| ((7 * i + 3) % 256) as u8).collect();
    rec[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    rec[11..43].fill(0);
    rec
}

const T1_D: &str = "6c1b2630b03cae20e79352b28f533e6a314907d8c8457896a7e673619dead608";

#[test]
fn vector_t1_digest() {
    let rec = t1_record();
    let hm = HmacKeyState::new(&S).mac(&crate::sha::HmacMessage::new(&[&rec]));
    assert_eq!(
        hm,
        h::<32>("6c1b2630b03cae20e79352b28f533e6a314907d8c8457896a7e673619d1b856d")
    );
    let d = client_digest(&S, &rec, 1_700_000_000);
    assert_eq!(d, h::<32>(T1_D));
    let ts = u32::from_le_bytes([
        d[28] ^ hm[28],
        d[29] ^ hm[29],
        d[30] ^ hm[30],
        d[31] ^ hm[31],
    ]);
    assert_eq!(ts, 0x6553_f100);
}

#[test]
fn vector_t2_server_hello() {
    let d = h::<32>(T1_D);
    let sid: Vec<u8> = (0x20..0x40).collect();
    let flight = [0u8; 64];
    let p = ServerHelloParams {
        client_digest: &d,
        session_id: &sid,
        key_share: &[0x09; 32],
        fake_flight: &flight,
        alpn: None,
        cipher: DEFAULT_CIPHER,
        versions_first: false,
    };
    let resp = build_server_hello(&S, &p).expect("valid params");
    let mut want = Vec::new();
    want.extend_from_slice(&h::<11>("160303007a020000760303"));
    want.extend_from_slice(&h::<32>(
        "aef1b8fc6c4efdba1ad1c1ff3aa40ed57116dabf3bd296619cd1c0ba0ef5650e",
    ));
    want.push(0x20);
    want.extend_from_slice(&sid);
    want.extend_from_slice(&h::<5>("130100002e"));
    want.extend_from_slice(&h::<8>("00330024001d0020"));
    want.extend_from_slice(&[0x09; 32]);
    want.extend_from_slice(&h::<6>("002b00020304"));
    want.extend_from_slice(&h::<6>("140303000101"));
    want.extend_from_slice(&h::<5>("1703030040"));
    want.extend_from_slice(&[0u8; 64]);
    assert_eq!(resp.len(), 202);
    assert_eq!(resp, want);
    assert!(verify_server_hello(&S, &d, &resp));
    let mut bad = resp.clone();
    bad[150] ^= 1;
    assert!(!verify_server_hello(&S, &d, &bad));
}

#[test]
fn server_hello_alpn_and_errors() {
    let d = [1u8; 32];
    let flight = [0xabu8; 100];
    let mut p = ServerHelloParams {
        client_digest: &d,
        session_id: &[],
        key_share: &[2; 32],
        fake_flight: &flight,
        alpn: Some(Alpn::H2),
        cipher: DEFAULT_CIPHER,
        versions_first: true,
    };
    let resp = build_server_hello(&S, &p).expect("valid");
    let flight_at = resp.len() - 100;
    assert_eq!(
        resp[flight_at..flight_at + 9],
        [0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x02, b'h', b'2']
    );
    assert!(verify_server_hello(&S, &d, &resp));
    p.fake_flight = &flight[..63];
    assert_eq!(
        build_server_hello(&S, &p),
        Err(ServerHelloError::BadFlightLength(63))
    );
    let sid = [0u8; 33];
    p.fake_flight = &flight;
    p.session_id = &sid;
    assert_eq!(
        build_server_hello(&S, &p),
        Err(ServerHelloError::SessionIdTooLong(33))
    );
}
use crate::tls::server_hello::ServerHelloError;

fn hello(
    secret: &[u8; 16],
    ts: u32,
    sni: Option<&str>,
    alpn: &[&[u8]],
    total: Option<usize>,
) -> Vec<u8> {
    build_client_hello(
        secret,
        &ClientHelloParams {
            timestamp: ts,
            session_id: &[0x5a; 32],
            sni,
            alpn,
            key_share: &[7; 32],
            total_len: total,
        },
    )
    .expect("buildable")
}

fn policy() -> TlsPolicy {
    TlsPolicy {
        allowed_domains: vec!["example.com".into(), "Other.org".into()],
        unknown_sni: UnknownSniAction::Drop,
        alpn_enforce: true,
        time: TimeWindow::default(),
    }
}

fn table() -> UserTable {
    UserTable::new([[1u8; 16], S, [3u8; 16]])
}

const NOW: u64 = 1_700_000_000;

#[test]
fn validates_real_client_sizes() {
    for total in [517usize, 526, 1725, 1827, 1900] {
        let rec = hello(
            &S,
            NOW as u32 - 30,
            Some("EXAMPLE.com"),
            &[b"h2", b"http/1.1"],
            Some(total),
        );
        assert_eq!(rec.len(), total);
        let v = FakeTlsHello::validate(&rec, &table(), NOW, &policy()).expect("valid hello");
        assert_eq!(v.user_index, 1);
        assert_eq!(v.tries, 2);
        assert_eq!(v.sni.as_deref(), Some("EXAMPLE.com"));
        assert!(v.sni_known);
        assert_eq!(v.alpn, Some(Alpn::H2));
        assert_eq!(v.session_id, vec![0x5a; 32]);
        assert_eq!(v.timestamp, NOW as u32 - 30);
        assert_eq!(v.replay_key()[..], rec[11..27]);
        let v = FakeTlsHello::validate_with_hint(&rec, &table(), NOW, &policy(), Some(1))
            .expect("valid");
        assert_eq!(v.tries, 1);
    }
}

#[test]
fn rejections_are_precise() {
    let t = table();
    let p = policy();
    let ok = hello(&S, NOW as u32, Some("example.com"), &[], Some(517));
    assert!(FakeTlsHello::validate(&ok, &t, NOW, &p).is_ok());
    // wrong secret
    let other = hello(&[9; 16], NOW as u32, Some("example.com"), &[], Some(517));
    assert_eq!(
        FakeTlsHello::validate(&other, &t, NOW, &p),
        Err(HelloError::NoMatchingSecret)
    );
    // time skew, and the boot-time quirk
    let old = hello(&S, NOW as u32 - 121, None, &[], None);
    assert_eq!(
        FakeTlsHello::validate(&old, &t, NOW, &p),
        Err(HelloError::TimestampOutOfWindow {
            ts: NOW as u32 - 121,
            now: NOW
        })
    );
    let mut lax = p.clone();
    lax.time.ignore = true;
    assert!(FakeTlsHello::validate(&old, &t, NOW, &lax).is_ok());
    let uptime = hello(&S, 50, None, &[], None);
    assert!(FakeTlsHello::validate(&uptime, &t, NOW, &p).is_ok());
    // SNI policy
    let unknown = hello(&S, NOW as u32, Some("evil.net"), &[], None);
    assert_eq!(
        FakeTlsHello::validate(&unknown, &t, NOW, &p),
        Err(HelloError::UnknownSniDrop)
    );
    let mut m = p.clone();
    m.unknown_sni = UnknownSniAction::Mask;
    assert_eq!(
        FakeTlsHello::validate(&unknown, &t, NOW, &m),
        Err(HelloError::UnknownSniMask)
    );
    m.unknown_sni = UnknownSniAction::Accept;
    let v = FakeTlsHello::validate(&unknown, &t, NOW, &m).expect("accepted");
    assert!(!v.sni_known);
    let ip = hello(&S, NOW as u32, Some("1.2.3.4"), &[], None);
    assert_eq!(
        FakeTlsHello::validate(&ip, &t, NOW, &p),
        Err(HelloError::InvalidSni)
    );
    // ALPN
    let spdy = hello(&S, NOW as u32, None, &[b"spdy/3"], None);
    assert_eq!(
        FakeTlsHello::validate(&spdy, &t, NOW, &p),
        Err(HelloError::AlpnNotAllowed)
    );
    let h11 = hello(&S, NOW as u32, None, &[b"http/1.1"], None);
    assert_eq!(
        FakeTlsHello::validate(&h11, &t, NOW, &p).map(|v| v.alpn),
        Ok(Some(Alpn::Http11))
    );
    // structure
    assert_eq!(
        FakeTlsHello::validate(&ok[..516], &t, NOW, &p),
        Err(HelloError::RecordSizeMismatch {
            have: 516,
            want: 517
        })
    );
    let mut bad = ok.clone();
    bad[5] = 2;
    assert_eq!(
        FakeTlsHello::validate(&bad, &t, NOW, &p),
        Err(HelloError::NotClientHello(2))
    );
    let mut bad = ok.clone();
    bad[43] = 33;
    assert_eq!(
        FakeTlsHello::validate(&bad, &t, NOW, &p),
        Err(HelloError::SessionIdTooLong(33))
    );
    let mut bad = ok.clone();
    bad[0] = 0x17;
    assert_eq!(
        FakeTlsHello::validate(&bad, &t, NOW, &p),
        Err(HelloError::NotHandshakeRecord)
    );
    assert_eq!(
        FakeTlsHello::validate(&ok, &UserTable::new([]), NOW, &p),
        Err(HelloError::NoUsers)
    );
    assert!(!HelloError::UnknownSniMask.is_drop() && HelloError::UnknownSniDrop.is_drop());
}

#[test]
fn duplicate_sni_is_rejected() {
    let rec = hello(&S, NOW as u32, Some("example.com"), &[], None);
    let info = parse_client_hello(&rec).expect("valid");
    assert_eq!(info.sni, Some("example.com"));
    // Rebuild with the SNI extension twice: find the extension block and splice.
    let sni_ext: Vec<u8> = {
        let mut e = vec![0, 0, 0, 16, 0, 14, 0, 0, 11];
        e.extend_from_slice(b"example.com");
        e
    };
    let pos = rec
        .windows(sni_ext.len())
        .position(|w| w == sni_ext.as_slice())
        .expect("present");
    let mut dup = rec.clone();
    dup.splice(pos..pos, sni_ext.iter().copied());
    let grow = sni_ext.len();
    let bump = |v: &mut Vec<u8>, at: usize, n: usize| {
        let x = usize::from(u16::from_be_bytes([v[at], v[at + 1]])) + n;
        v[at..at + 2].copy_from_slice(&(x as u16).to_be_bytes());
    };
    bump(&mut dup, 3, grow);
    let hs = (usize::from(dup[6]) << 16 | usize::from(dup[7]) << 8 | usize::from(dup[8])) + grow;
    dup[6..9].copy_from_slice(&(hs as u32).to_be_bytes()[1..]);
    bump(&mut dup, pos - 2, grow);
    assert_eq!(parse_client_hello(&dup), Err(HelloError::DuplicateSni));
}

#[test]
fn plausible_hosts() {
    for ok in ["example.com", "a-b.c0", "x", "EXAMPLE.COM"] {
        assert!(is_plausible_host(ok), "{ok}");
    }
    for bad in [
        "",
        ".a",
        "a.",
        "a..b",
        "-a.b",
        "a-.b",
        "a_b.c",
        "1.2.3.4",
        "::1",
        &"a".repeat(64),
    ] {
        assert!(!is_plausible_host(bad), "{bad}");
    }
}

proptest! {
    #[test]
    fn build_then_validate(secret in any::<[u8; 16]>(), ts in any::<u32>(), pad in 0usize..1400,
                           sni_i in 0usize..3, alpn_i in 0usize..3, sid_len in 0usize..33) {
        let sni = [None, Some("example.com"), Some("other.org")][sni_i];
        let alpns: [&[&[u8]]; 3] = [&[], &[b"h2"], &[b"http/1.1", b"h2"]];
        let sid = vec![0x11u8; sid_len];
        let rec = build_client_hello(&secret, &ClientHelloParams {
            timestamp: ts, session_id: &sid, sni, alpn: alpns[alpn_i], key_share: &[3; 32], total_len: None,
        }).expect("buildable");
        let padded = build_client_hello(&secret, &ClientHelloParams {
            timestamp: ts, session_id: &sid, sni, alpn: alpns[alpn_i], key_share: &[3; 32], total_len: Some(rec.len() + 4 + pad),
        }).expect("buildable");
        let t = UserTable::new([[0xaa; 16], secret]);
        for r in [&rec, &padded] {
            let v = FakeTlsHello::validate(r, &t, u64::from(ts), &policy()).expect("valid");
            prop_assert_eq!(v.user_index, if secret == [0xaa; 16] { 0 } else { 1 });
            prop_assert_eq!(v.timestamp, ts);
            prop_assert_eq!(&v.session_id, &sid);
            prop_assert_eq!(v.sni.as_deref(), sni);
            prop_assert_eq!(v.alpn.is_some(), alpn_i > 0);
        }
    }

    #[test]
    fn validate_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..700), len_ok in any::<bool>()) {
        if len_ok && bytes.len() >= 105 {
            // Make the header plausible so the parser gets past it.
            let l = (bytes.len() - 5) as u16;
            bytes[..3].copy_from_slice(&[0x16, 3, 1]);
            bytes[3..5].copy_from_slice(&l.to_be_bytes());
            bytes[5] = 1;
        }
        let _ = FakeTlsHello::validate(&bytes, &table(), NOW, &policy());
        let _ = crate::tls::detect(&bytes);
    }
}

/// `cargo test --release -p proto --lib hello_timing -- --ignored --nocapture`
#[test]
#[ignore = "timing report, run manually in release mode"]
fn hello_timing() {
    fn cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
    let rec = hello(
        &[0xee; 16],
        NOW as u32,
        Some("example.com"),
        &[b"h2"],
        Some(1800),
    );
    let n = 20_000u64;
    let t = cpu_ns();
    for _ in 0..n {
        std::hint::black_box(parse_client_hello(std::hint::black_box(&rec)).is_ok());
    }
    let parse = (cpu_ns() - t) / n;
    let t = cpu_ns();
    for _ in 0..n {
        std::hint::black_box(crate::sha::HmacMessage::new(&[std::hint::black_box(&rec)]));
    }
    let msg = (cpu_ns() - t) / n;
    let m = crate::sha::HmacMessage::new(&[&rec]);
    let st = HmacKeyState::new(&S);
    let t = cpu_ns();
    for _ in 0..n {
        std::hint::black_box(st.mac(std::hint::black_box(&m)));
    }
    let mac = (cpu_ns() - t) / n;
    let t1 = UserTable::new([[1u8; 16]]);
    let t = cpu_ns();
    for _ in 0..n {
        let _ = std::hint::black_box(FakeTlsHello::validate(&rec, &t1, NOW, &policy()));
    }
    let full = (cpu_ns() - t) / n;
    println!("ns: parse {parse}, message {msg}, mac {mac}, validate(1 user) {full}");
}
