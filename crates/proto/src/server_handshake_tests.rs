//! The server handshake driven without sockets: every client mode (whole, byte at a time),
//! every rejection reason, and arbitrary bytes in arbitrary chunking.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::obfs2::{build_client_init, SealedInit, Transport};
use crate::tls::client::{build_client_hello, ClientHelloParams};
use crate::tls::emulate::FlightPlan;
use crate::tls::hello::UnknownSniAction;
use crate::tls::record::write_app_data;
use crate::tls::server_hello::verify_server_hello;
use crate::Secret;

const NOW: u64 = 1_800_000_000;
const DOMAIN: &str = "example.com";

fn secret(i: u8) -> Secret {
    [i; 16]
}

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

/// Owned inputs a [`HandshakeContext`] borrows.
struct Env {
    table: UserTable,
    tls: TlsPolicy,
    dcs: DcSet,
    obfs: ShardedReplayCache<OBFS_REPLAY_KEY_LEN>,
    tlsr: ShardedReplayCache<TLS_REPLAY_KEY_LEN>,
    tls_enabled: bool,
    plain_enabled: bool,
    classic: bool,
    secure: bool,
    delay: (u64, u64),
    flights: FlightTable,
    /// Full-flight budget and the client's address (`None`: always full).
    budget: Option<(FullFlightBudget, IpAddr)>,
    now: Now,
}

impl Env {
    fn new() -> Self {
        Self {
            table: UserTable::new([secret(1), secret(2), secret(3)]),
            tls: TlsPolicy {
                allowed_domains: vec![DOMAIN.into()],
                unknown_sni: UnknownSniAction::Mask,
                ..TlsPolicy::default()
            },
            dcs: DcSet::standard(),
            obfs: ShardedReplayCache::new(1024, Duration::from_secs(120), 4),
            tlsr: ShardedReplayCache::new(1024, Duration::from_secs(240), 4),
            tls_enabled: true,
            plain_enabled: true,
            classic: true,
            secure: true,
            delay: (0, 0),
            flights: FlightTable {
                plans: Vec::new(),
                fallback: FlightPlan {
                    cipher: 0x1301,
                    versions_first: false,
                    app_data_len: 2048,
                    jitter: 0,
                    compact_len: 85,
                    delay_ms: (0, 0),
                },
            },
            budget: None,
            now: Now {
                unix_secs: NOW,
                mono: Instant::now(),
            },
        }
    }

    fn ctx(&self) -> HandshakeContext<'_> {
        HandshakeContext {
            table: &self.table,
            tls: &self.tls,
            tls_enabled: self.tls_enabled,
            plain_enabled: self.plain_enabled,
            plain_tags: TagSet::for_modes(self.classic, self.secure, true, Transport::PlainTcp),
            tls_tags: TagSet::for_modes(self.classic, self.secure, true, Transport::InsideTls),
            dcs: Some(&self.dcs),
            obfs_replay: &self.obfs,
            tls_replay: &self.tlsr,
            flights: &self.flights,
            hello_delay_ms: Some(self.delay),
            full_flight: self.budget.as_ref().map(|(b, ip)| (b, *ip)),
            hint: None,
        }
    }

    /// Feeds `wire` in `step`-byte chunks; EOF at the end if still undecided.
    fn run(&self, wire: &[u8], step: usize) -> Outcome {
        self.run_counted(wire, step).0
    }

    /// [`run`](Self::run), also returning how many bytes were fed.
    fn run_counted(&self, wire: &[u8], step: usize) -> (Outcome, usize) {
        let mut hs = ServerHandshake::new(self.ctx());
        let mut r = rng(99);
        let mut sent = Vec::new();
        for chunk in wire.chunks(step.max(1)) {
            let mut s = hs.feed(chunk, self.now, &mut r);
            while let Step::Send { bytes, delay } = s {
                sent.push((bytes, delay));
                s = hs.feed(&[], self.now, &mut r);
            }
            let out = match s {
                Step::NeedMore => continue,
                Step::Reject(rej) => Outcome::Rejected(rej),
                Step::Accept(a) => Outcome::Accepted(a, sent),
                Step::Send { .. } => unreachable!("drained above"),
            };
            return (out, hs.consumed());
        }
        let n = hs.consumed();
        (Outcome::Rejected(hs.eof()), n)
    }
}

#[derive(Debug)]
enum Outcome {
    Rejected(Rejection),
    Accepted(Box<Accepted>, Vec<(Vec<u8>, Duration)>),
}

impl Outcome {
    fn accepted(self) -> (Box<Accepted>, Vec<(Vec<u8>, Duration)>) {
        match self {
            Self::Accepted(a, s) => (a, s),
            Self::Rejected(r) => panic!("rejected: {r:?}"),
        }
    }
    fn reason(&self) -> Option<(RejectReason, Disposition)> {
        match self {
            Self::Rejected(r) => Some((r.reason, r.disposition)),
            Self::Accepted(..) => None,
        }
    }
}

fn init(seed: u64, who: u8, tag: ProtoTag, dc: i16) -> SealedInit {
    build_client_init(&mut rng(seed), &secret(who), tag, dc).expect("init")
}

/// A ClientHello; `ts` also seeds the session id, so two hellos with different `ts` have
/// different replay keys (the timestamp alone only changes the digest's last 4 bytes).
fn hello_for(s: &Secret, sni: Option<&str>, ts: u32, alpn: &[&[u8]]) -> Vec<u8> {
    let mut sid = [0x33; 32];
    sid[..4].copy_from_slice(&ts.to_le_bytes());
    build_client_hello(
        s,
        &ClientHelloParams {
            timestamp: ts,
            session_id: &sid,
            sni,
            alpn,
            key_share: &[5; 32],
            total_len: Some(517),
        },
    )
    .expect("hello")
}

fn hello(who: u8) -> Vec<u8> {
    hello_for(&secret(who), Some(DOMAIN), NOW as u32, &[b"h2"])
}

/// A full fake-TLS client flight: hello, CCS, then the init and `data` in small records.
fn tls_wire(who: u8, seed: u64, data: &[u8]) -> (Vec<u8>, SealedInit) {
    let mut sealed = init(seed, who, ProtoTag::Padded, -2);
    let mut stream = sealed.wire.to_vec();
    let mut enc = data.to_vec();
    sealed.ciphers.encrypt.apply_in_place(&mut enc);
    stream.extend_from_slice(&enc);
    let mut wire = hello(who);
    wire.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
    write_app_data(&stream, 50, &mut wire);
    (wire, sealed)
}

fn plain_wire(who: u8, seed: u64, tag: ProtoTag, dc: i16, data: &[u8]) -> (Vec<u8>, SealedInit) {
    let mut sealed = init(seed, who, tag, dc);
    let mut wire = sealed.wire.to_vec();
    let mut enc = data.to_vec();
    sealed.ciphers.encrypt.apply_in_place(&mut enc);
    wire.extend_from_slice(&enc);
    (wire, sealed)
}

#[test]
fn classic_and_secure_accept_whole_and_byte_at_a_time() {
    for (i, (tag, dc)) in [
        (ProtoTag::Abridged, 2),
        (ProtoTag::Intermediate, -4),
        (ProtoTag::Padded, 5),
    ]
    .into_iter()
    .enumerate()
    {
        for step in [1usize, 7, 1000] {
            let env = Env::new();
            let (wire, _) = plain_wire(2, 10 + i as u64, tag, dc, b"first packet");
            let (out, fed) = env.run_counted(&wire, step);
            let (a, sent) = out.accepted();
            assert!(sent.is_empty());
            assert_eq!((a.user_index, a.tag, a.dc), (1, tag, dc), "step {step}");
            assert!(a.deframer.is_none());
            // Bytes past the init that arrived with its last chunk, already decrypted.
            assert_eq!(a.pending, b"first packet"[..fed - INIT_LEN], "step {step}");
        }
    }
}

#[test]
fn fake_tls_accepts_whole_and_byte_at_a_time_and_the_deframer_continues() {
    for step in [1usize, 5, 517, 523, 4096] {
        let env = Env::new();
        let (mut wire, mut sealed) = tls_wire(3, 42, b"0123456789");
        let (out, fed) = env.run_counted(&wire, step);
        let (mut a, sent) = out.accepted();
        assert_eq!((a.user_index, a.tag, a.dc), (2, ProtoTag::Padded, -2));
        assert_eq!(sent.len(), 1, "one ServerHello flight");
        let digest: [u8; 32] = hello(3)[11..43].try_into().expect("32");
        assert!(verify_server_hello(&secret(3), &digest, &sent[0].0));
        assert_eq!(sent[0].1, Duration::ZERO);
        // The relay continues with the de-framer and ciphers the handshake left: the unread
        // rest of the wire plus one more record decrypt to the rest of the client's data.
        let mut more = b"more".to_vec();
        sealed.ciphers.encrypt.apply_in_place(&mut more);
        write_app_data(&more, 100, &mut wire);
        let mut rest = wire[fed..].to_vec();
        let mut d = a.deframer.take().expect("tls client");
        let out = d.deframe(&mut rest).expect("records");
        assert!(!out.closed);
        let mut got = rest[..out.len].to_vec();
        a.ciphers.decrypt.apply_in_place(&mut got);
        let mut all = a.pending.clone();
        all.extend_from_slice(&got);
        assert_eq!(all, b"0123456789more", "step {step}");
    }
}

#[test]
fn hello_delay_is_drawn_within_the_range() {
    let mut env = Env::new();
    env.delay = (10, 20);
    let (wire, _) = tls_wire(1, 3, b"");
    let (_, sent) = env.run(&wire, 4096).accepted();
    assert!(
        (10..=20).contains(&sent[0].1.as_millis()),
        "{:?}",
        sent[0].1
    );
}

/// The application-data record's length in a ServerHello flight.
fn flight_record_len(sent: &[u8]) -> usize {
    let hs = 5 + usize::from(u16::from_be_bytes([sent[3], sent[4]]));
    let app = hs + 6;
    assert_eq!(sent[app..app + 3], [0x17, 3, 3]);
    let len = usize::from(u16::from_be_bytes([sent[app + 3], sent[app + 4]]));
    assert_eq!(sent.len(), app + 5 + len, "one record, nothing after it");
    len
}

#[test]
fn repeat_handshake_within_the_ttl_gets_the_compact_record() {
    let mut env = Env::new();
    env.budget = Some((FullFlightBudget::new(90), "192.0.2.7".parse().expect("ip")));
    let mut lens = Vec::new();
    for (i, ts) in [NOW as u32, NOW as u32 + 1].into_iter().enumerate() {
        let mut sealed = init(70 + 2 * i as u64, 1, ProtoTag::Padded, 2);
        let mut wire = hello_for(&secret(1), Some(DOMAIN), ts, &[b"h2"]);
        let digest: [u8; 32] = wire[11..43].try_into().expect("32");
        let mut stream = sealed.wire.to_vec();
        let mut data = b"ping".to_vec();
        sealed.ciphers.encrypt.apply_in_place(&mut data);
        stream.extend_from_slice(&data);
        write_app_data(&stream, 100, &mut wire);
        let (a, sent) = env.run(&wire, 4096).accepted();
        assert_eq!(a.user_index, 0);
        assert!(verify_server_hello(&secret(1), &digest, &sent[0].0));
        lens.push(flight_record_len(&sent[0].0));
    }
    assert_eq!(lens, [2048, 85], "full, then compact");
}

#[test]
fn a_rejected_hello_does_not_spend_the_budget() {
    let mut env = Env::new();
    let ip: IpAddr = "192.0.2.8".parse().expect("ip");
    env.budget = Some((FullFlightBudget::new(90), ip));
    // Unknown secret: masked before the budget is looked at.
    let out = env.run(&hello(9), 4096);
    assert_reason(out, RejectReason::TlsNoMatchingSecret, Disposition::Mask);
    let (wire, _) = tls_wire(2, 5, b"");
    let (_, sent) = env.run(&wire, 4096).accepted();
    assert_eq!(flight_record_len(&sent[0].0), 2048);
}

fn assert_reason(out: Outcome, reason: RejectReason, disposition: Disposition) {
    assert_eq!(out.reason(), Some((reason, disposition)), "{out:?}");
}

#[test]
fn detection_stage_rejections() {
    let env = Env::new();
    assert_reason(
        env.run(b"GET", 100),
        RejectReason::EofBeforeDetection,
        Disposition::Mask,
    );
    assert_reason(
        env.run(b"", 100),
        RejectReason::EofBeforeDetection,
        Disposition::Mask,
    );
    assert_reason(
        env.run(&[0x16, 3, 1, 0, 0x10, 1, 2], 1),
        RejectReason::TlsBadRecordLength,
        Disposition::Mask,
    );
    assert_reason(
        env.run(b"PUT / HTTP/1.1\r\n\r\n", 3),
        RejectReason::Obfs2Truncated,
        Disposition::Mask,
    );
    let mut env = Env::new();
    env.tls_enabled = false;
    assert_reason(
        env.run(&hello(1), 1),
        RejectReason::TlsDisabled,
        Disposition::Mask,
    );
    let mut env = Env::new();
    env.plain_enabled = false;
    let out = env.run(b"GET / HTTP/1.1\r\n", 100);
    assert_reason(out, RejectReason::PlainDisabled, Disposition::Mask);
    // One byte that cannot start a ClientHello decides when only TLS is served.
    let (out, fed) = env.run_counted(b"GET / HTTP/1.1\r\n", 1);
    assert_reason(out, RejectReason::PlainDisabled, Disposition::Mask);
    assert_eq!(fed, 1);
    let (out, fed) = env.run_counted(&[0x16, 0x03, 0x02, 0, 0], 1);
    assert_reason(out, RejectReason::PlainDisabled, Disposition::Mask);
    assert_eq!(fed, 3);
}

#[test]
fn obfuscated2_rejections() {
    let env = Env::new();
    let junk: Vec<u8> = (0..300u32).map(|i| (i * 37 + 11) as u8).collect();
    assert_reason(
        env.run(&junk, 64),
        RejectReason::Obfs2NoMatchingSecret,
        Disposition::Mask,
    );
    let put = format!("PUT /{} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n", "a".repeat(80));
    assert_reason(
        env.run(put.as_bytes(), 9),
        RejectReason::Obfs2NoMatchingSecret,
        Disposition::Mask,
    );
    let get = format!("GET /{} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n", "a".repeat(80));
    assert_reason(
        env.run(get.as_bytes(), 9),
        RejectReason::Obfs2ForbiddenPrefix,
        Disposition::Mask,
    );
    // Unknown secret.
    let (wire, _) = plain_wire(9, 1, ProtoTag::Abridged, 2, b"");
    assert_reason(
        env.run(&wire, 64),
        RejectReason::Obfs2NoMatchingSecret,
        Disposition::Mask,
    );
    // Right secret, DC the proxy cannot route.
    let (wire, _) = plain_wire(1, 2, ProtoTag::Abridged, 999, b"");
    assert_reason(
        env.run(&wire, 64),
        RejectReason::Obfs2NoMatchingSecret,
        Disposition::Mask,
    );
    // Truncated init.
    let (wire, _) = plain_wire(1, 3, ProtoTag::Abridged, 2, b"");
    assert_reason(
        env.run(&wire[..63], 1),
        RejectReason::Obfs2Truncated,
        Disposition::Mask,
    );
    // Replay: the same init twice.
    let (wire, _) = plain_wire(1, 4, ProtoTag::Intermediate, 2, b"x");
    assert!(matches!(env.run(&wire, 64), Outcome::Accepted(..)));
    assert_reason(
        env.run(&wire, 64),
        RejectReason::Obfs2Replay,
        Disposition::Mask,
    );
    // `dd` on plain TCP with `secure` off.
    let mut env = Env::new();
    env.secure = false;
    let (wire, _) = plain_wire(1, 5, ProtoTag::Padded, 2, b"");
    assert_reason(
        env.run(&wire, 64),
        RejectReason::Obfs2TagNotAllowed,
        Disposition::Mask,
    );
    // No users at all.
    let mut env = Env::new();
    env.table = UserTable::new([]);
    assert_reason(env.run(&junk, 64), RejectReason::NoUsers, Disposition::Mask);
}

#[test]
fn client_hello_rejections() {
    let env = Env::new();
    let h = hello(1);
    assert_reason(
        env.run(&h[..300], 50),
        RejectReason::TlsHelloTruncated,
        Disposition::Mask,
    );
    let mut bad = h.clone();
    bad[5] = 2; // handshake type ServerHello
    assert_reason(
        env.run(&bad, 517),
        RejectReason::TlsMalformedHello,
        Disposition::Mask,
    );
    let other = hello_for(&secret(9), Some(DOMAIN), NOW as u32, &[]);
    assert_reason(
        env.run(&other, 517),
        RejectReason::TlsNoMatchingSecret,
        Disposition::Mask,
    );
    let stale = hello_for(&secret(1), Some(DOMAIN), NOW as u32 - 3600, &[]);
    assert_reason(
        env.run(&stale, 517),
        RejectReason::TlsStaleTimestamp,
        Disposition::Mask,
    );
    let sni = hello_for(&secret(1), Some("other.example.org"), NOW as u32, &[]);
    assert_reason(
        env.run(&sni, 517),
        RejectReason::TlsUnknownSni,
        Disposition::Mask,
    );
    let mut drop_env = Env::new();
    drop_env.tls.unknown_sni = UnknownSniAction::Drop;
    assert_reason(
        drop_env.run(&sni, 517),
        RejectReason::TlsUnknownSni,
        Disposition::Drop,
    );
    let mut alpn_env = Env::new();
    alpn_env.tls.alpn_enforce = true;
    let spdy = hello_for(&secret(1), Some(DOMAIN), NOW as u32, &[b"spdy/3"]);
    assert_reason(
        alpn_env.run(&spdy, 517),
        RejectReason::TlsAlpnNotAllowed,
        Disposition::Mask,
    );
    // Replay of a valid hello (the first one is answered).
    let (wire, _) = tls_wire(2, 8, b"");
    assert!(matches!(env.run(&wire, 4096), Outcome::Accepted(..)));
    assert_reason(
        env.run(&hello(2), 517),
        RejectReason::TlsReplay,
        Disposition::Mask,
    );
}

#[test]
fn inner_record_rejections() {
    let env = Env::new();
    // Each hello needs a fresh replay key: vary the timestamp (and so the session id).
    let h = |ts_off: u32, tail: &[u8]| {
        let mut w = hello_for(&secret(1), Some(DOMAIN), NOW as u32 - ts_off, &[]);
        w.extend_from_slice(tail);
        w
    };
    let out = env.run(&h(0, &[]), 517);
    assert_reason(out, RejectReason::TlsInitTruncated, Disposition::Mask);
    let out = env.run(&h(1, &[0x16, 3, 3, 0, 1, 0]), 600);
    assert_reason(out, RejectReason::TlsBadRecord, Disposition::Mask);
    let out = env.run(&h(2, &[0x15, 3, 3, 0, 2, 1, 0]), 600);
    assert_reason(out, RejectReason::TlsAlertBeforeInit, Disposition::Mask);
    let ccs: Vec<u8> = [0x14, 3, 3, 0, 1, 1].repeat(MAX_HANDSHAKE_BYTES / 6 + 1);
    let out = env.run(&h(3, &ccs), 4096);
    assert_reason(out, RejectReason::TlsInitTooFar, Disposition::Mask);
    // A bare init for a user who is not the TLS one: the hint is tried first, then the rest,
    // so a different configured user still matches (telemt does the same).
    let mut w = h(4, &[]);
    let sealed = init(5, 2, ProtoTag::Padded, 1);
    write_app_data(&sealed.wire, 100, &mut w);
    let (a, _) = env.run(&w, 700).accepted();
    assert_eq!(a.user_index, 1);
}

#[test]
fn feeding_after_a_decision_is_an_internal_error() {
    let env = Env::new();
    let mut hs = ServerHandshake::new(env.ctx());
    let mut r = rng(1);
    assert!(matches!(
        hs.feed(b"\x16\x03\x01\x00\x01", env.now, &mut r),
        Step::Reject(_)
    ));
    match hs.feed(b"more", env.now, &mut r) {
        Step::Reject(rej) => assert_eq!(rej.reason, RejectReason::InternalError),
        other => panic!("{other:?}"),
    }
    assert_eq!(hs.consumed(), 9);
    let rej = hs.eof();
    assert_eq!(
        (rej.reason, rej.disposition),
        (RejectReason::InternalError, Disposition::Drop)
    );
}

#[test]
fn replay_windows_follow_the_injected_clock() {
    let mut env = Env::new();
    let (plain, _) = plain_wire(1, 21, ProtoTag::Abridged, 3, b"");
    let (tls, _) = tls_wire(2, 22, b"");
    assert!(matches!(env.run(&plain, 64), Outcome::Accepted(..)));
    assert!(matches!(env.run(&tls, 4096), Outcome::Accepted(..)));
    env.now.mono += Duration::from_secs(119);
    assert_reason(
        env.run(&plain, 64),
        RejectReason::Obfs2Replay,
        Disposition::Mask,
    );
    assert_reason(
        env.run(&tls, 4096),
        RejectReason::TlsReplay,
        Disposition::Mask,
    );
    // Past the obfuscated2 window (120 s) but inside the TLS one (240 s).
    env.now.mono += Duration::from_secs(2);
    assert!(matches!(env.run(&plain, 64), Outcome::Accepted(..)));
    assert_reason(
        env.run(&tls, 4096),
        RejectReason::TlsReplay,
        Disposition::Mask,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn never_panics_on_arbitrary_bytes_in_arbitrary_chunks(
        data in proptest::collection::vec(any::<u8>(), 0..1200),
        cuts in proptest::collection::vec(1usize..300, 1..20),
        tls_prefix in any::<bool>(),
    ) {
        let env = Env::new();
        let mut wire = if tls_prefix { hello(1)[..5].to_vec() } else { Vec::new() };
        wire.extend_from_slice(&data);
        let mut hs = ServerHandshake::new(env.ctx());
        let mut r = rng(5);
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        let mut done = false;
        while !rest.is_empty() && !done {
            let n = (*cut.next().unwrap_or(&1)).min(rest.len());
            let mut s = hs.feed(&rest[..n], env.now, &mut r);
            rest = &rest[n..];
            while let Step::Send { .. } = s {
                s = hs.feed(&[], env.now, &mut r);
            }
            done = !matches!(s, Step::NeedMore);
        }
        if !done {
            let rej = hs.eof();
            prop_assert_eq!(rej.consumed, wire.len() - rest.len());
        }
    }

    #[test]
    fn a_valid_tls_flight_with_a_garbage_tail_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        step in 1usize..700,
    ) {
        let env = Env::new();
        let mut wire = hello(2);
        wire.extend_from_slice(&tail);
        let _ = env.run(&wire, step);
    }
}

#[path = "server_handshake_probe_tests.rs"]
mod probes;
