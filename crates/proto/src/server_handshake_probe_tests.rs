//! The handshake's answers to probes: forbidden init prefixes decided on their first bytes,
//! the handshake timer (mask or close), and the unknown-SNI alert (docs/DECISIONS.md #33,
//! docs/PROTOCOL.md §2.2, §4.4).

use super::*;

#[test]
fn forbidden_init_prefixes_are_masked_as_soon_as_they_show() {
    let env = Env::new();
    // (bytes, how many the rule needs)
    let cases: [(&[u8], usize); 6] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4),
        (b"HEAD / HTTP/1.1\r\n\r\n", 4),
        (b"POST / HTTP/1.1\r\n\r\n", 4),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", 4),
        (&[0xef, 1, 2, 3, 4, 5, 6, 7, 8], 1),
        (&[1, 2, 3, 4, 0, 0, 0, 0, 9, 9], 8),
    ];
    for (bytes, needed) in cases {
        let (out, fed) = env.run_counted(bytes, 1);
        assert_reason(out, RejectReason::Obfs2ForbiddenPrefix, Disposition::Mask);
        assert_eq!(fed, needed, "{bytes:?}");
    }
    // `ee ee ee ee` / `dd dd dd dd` mark other transports.
    for b in [0xee, 0xdd] {
        let (out, _) = env.run_counted(&[b; 10], 10);
        assert_reason(out, RejectReason::Obfs2ForbiddenPrefix, Disposition::Mask);
    }
    // Still possible: waits (EOF here names the truncation).
    for bytes in [&b"PUT / HTTP/1.1\r\n"[..], b"GE", &[0x16, 0x03, 0x01]] {
        let out = env.run(bytes, 1);
        assert_ne!(
            out.reason().map(|r| r.0),
            Some(RejectReason::Obfs2ForbiddenPrefix)
        );
    }
}

#[test]
fn timeout_masks_what_may_still_be_a_handshake() {
    let env = Env::new();
    let mut r = rng(5);
    let timed_out = |bytes: &[u8]| {
        let mut hs = ServerHandshake::new(env.ctx());
        let mut r = rng(7);
        if !bytes.is_empty() {
            assert!(matches!(hs.feed(bytes, env.now, &mut r), Step::NeedMore));
        }
        let t = hs.timeout();
        (t.reason, t.disposition)
    };
    let h = hello(1);
    let (wire, _) = plain_wire(1, 6, ProtoTag::Intermediate, 2, b"");
    let mask = (RejectReason::HandshakeTimeout, Disposition::Mask);
    let drop = (RejectReason::HandshakeTimeout, Disposition::Drop);
    assert_eq!(timed_out(b""), drop, "nothing to forward");
    assert_eq!(timed_out(&[0x16, 0x03]), mask);
    assert_eq!(timed_out(&h[..200]), mask, "truncated ClientHello");
    assert_eq!(timed_out(b"PUT / HTTP/1.1\r\n"), mask);
    assert_eq!(timed_out(&wire[..40]), mask);
    // After our ServerHello the mask host cannot take over.
    let mut hs = ServerHandshake::new(env.ctx());
    assert!(matches!(hs.feed(&h, env.now, &mut r), Step::Send { .. }));
    assert!(matches!(hs.feed(&[], env.now, &mut r), Step::NeedMore));
    let t = hs.timeout();
    assert_eq!((t.reason, t.disposition), drop);
}

#[test]
fn unknown_sni_reject_handshake_answers_the_alert_at_once_and_accept_continues() {
    let mut env = Env::new();
    env.tls.unknown_sni = UnknownSniAction::RejectHandshake;
    // A ServerHello delay applies to the success path only; the alert goes out without it.
    env.delay = (500, 900);
    let sni = hello_for(&secret(1), Some("other.example.org"), NOW as u32, &[]);
    let mut hs = ServerHandshake::new(env.ctx());
    match hs.feed(&sni, env.now, &mut rng(1)) {
        Step::Reject(r) => {
            assert_eq!(r.reason, RejectReason::TlsUnknownSni);
            let Disposition::Alert(bytes) = r.disposition else {
                panic!("{r:?}");
            };
            assert_eq!(bytes, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);
            assert_eq!(r.consumed, sni.len());
        }
        other => panic!("{other:?}"),
    }
    // A served SNI is unaffected.
    let (wire, _) = tls_wire(1, 21, b"");
    assert!(matches!(env.run(&wire, 4096), Outcome::Accepted(..)));

    // `accept`: the unknown SNI is treated as served and the digest decides.
    let mut acc = Env::new();
    acc.tls.unknown_sni = UnknownSniAction::Accept;
    let mut wire = hello_for(&secret(2), Some("other.example.org"), NOW as u32, &[]);
    let (inner, _) = tls_wire(2, 22, b"");
    let h2 = hello(2);
    wire.extend_from_slice(&inner[h2.len()..]);
    assert!(matches!(acc.run(&wire, 4096), Outcome::Accepted(..)));
}
