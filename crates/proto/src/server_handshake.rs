//! The proxy side of a client handshake as a sans-IO state machine (docs/PROTOCOL.md §2.5, §4,
//! §5): TLS vs obfuscated2 detection, ClientHello validation, the replay caches, the
//! ServerHello flight, the inner init through the record de-framer and multi-user matching.
//!
//! Owns: the order of those checks and every accept / reject decision, with a
//! [`RejectReason`] and a mask, drop or alert [`Disposition`] for each rejection. Must not: read
//! sockets or clocks, sleep, or draw randomness itself — the driver feeds bytes and [`Now`],
//! passes a [`RandomSource`], writes what [`Step::Send`] returns after its delay, and keeps
//! every raw byte it read (a rejected client is masked with all of them). Admission limits
//! (known only once the user is) are the driver's.
//!
//! ```text
//!  Detect ── first ≤5 bytes ─┬─ 16 03 01|03 LL LL ─► Hello(5+LL) ─ validate: SNI, ALPN,
//!                            │                        digest (hint first), time; replay(D)
//!                            │                        ─► Send(ServerHello|CCS|flight, delay)
//!                            │                        ─► Sent ─► TlsInit: records ─► de-framed
//!                            │                           stream ≥ 64 bytes ─┐
//!                            └─ anything else ─► PlainInit: 64 bytes ───────┤
//!                               (a §2.2 forbidden prefix: Reject at once)   │
//!                                                                           ▼
//!     match init (hint; tags for the transport; routable DC) ─► replay(I[8..56]) ─► Accept
//!  Any state: Reject(reason, disposition) — terminal; eof() names the truncation,
//!  timeout() decides what the handshake timer does (mask what may still be a handshake).
//! ```

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::dc::DcSet;
use crate::obfs2::{starts_forbidden, ObfuscatedInit, ProtoTag, RandomSource, TagSet, INIT_LEN};
use crate::reject::{Disposition, RejectReason};
use crate::replay::{ReplayVerdict, ShardedReplayCache, OBFS_REPLAY_KEY_LEN, TLS_REPLAY_KEY_LEN};
use crate::tls::deframe::Deframer;
use crate::tls::emulate::FlightTable;
use crate::tls::full_flight::FullFlightBudget;
use crate::tls::hello::{FakeTlsHello, HelloError, TlsPolicy};
use crate::tls::server_hello::{server_hello_len, write_server_hello_with, ServerHelloParams};
use crate::tls::{detect, Detection, RECORD_HEADER_LEN};
use crate::users::{match_init_with, MatchOptions, UserTable};
use crate::CipherPair;

/// Upper bound on bytes read before the handshake decides (a ClientHello record of 16 KiB
/// plus a few records carrying the inner init).
pub const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// Everything the handshake reads but does not own, borrowed from the published policy.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeContext<'a> {
    /// Users' matching state; indices are the caller's user indices.
    pub table: &'a UserTable,
    /// Fake-TLS policy (domains, unknown SNI action, ALPN, time window).
    pub tls: &'a TlsPolicy,
    /// Whether a ClientHello is served at all.
    pub tls_enabled: bool,
    /// Whether a bare obfuscated2 init is served at all.
    pub plain_enabled: bool,
    /// Tags admitted on plain TCP.
    pub plain_tags: TagSet,
    /// Tags admitted inside fake TLS.
    pub tls_tags: TagSet,
    /// DC indexes the caller can route (`None`: any).
    pub dcs: Option<&'a DcSet>,
    /// Obfuscated2 replay cache (`I[8..56]`).
    pub obfs_replay: &'a ShardedReplayCache<OBFS_REPLAY_KEY_LEN>,
    /// Fake-TLS replay cache (`D[0..16]`).
    pub tls_replay: &'a ShardedReplayCache<TLS_REPLAY_KEY_LEN>,
    /// How the flight looks per SNI (suite, extension order, record length, delay; §4.9).
    pub flights: &'a FlightTable,
    /// ServerHello delay range in milliseconds (uniform in `lo..=hi`) overriding the
    /// plan's (`server_hello_delay_*` set in the config).
    pub hello_delay_ms: Option<(u64, u64)>,
    /// The full-flight budget and the client's address: a repeat handshake of the same
    /// (SNI, IP) within `tls_full_cert_ttl_secs` gets the plan's compact record (§4.9).
    /// `None`: always the full flight.
    pub full_flight: Option<(&'a FullFlightBudget, IpAddr)>,
    /// User to try first (the client IP's last matched user).
    pub hint: Option<usize>,
}

/// The driver's clocks at the moment it feeds: wall time for the ClientHello timestamp
/// window, a monotonic instant for the replay caches.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Unix time in seconds.
    pub unix_secs: u64,
    /// Monotonic time.
    pub mono: Instant,
}

/// A refused client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Statistics class.
    pub reason: RejectReason,
    /// Mask with every byte read, or close.
    pub disposition: Disposition,
    /// Finer label for logs (e.g. which ClientHello field was malformed).
    pub detail: &'static str,
    /// Bytes fed before the decision.
    pub consumed: usize,
}

/// An identified client.
#[derive(Debug)]
pub struct Accepted {
    /// Index of the user in the [`UserTable`].
    pub user_index: usize,
    /// Protocol tag (client framing).
    pub tag: ProtoTag,
    /// DC index the client asked for.
    pub dc: i16,
    /// Client-side ciphers: `decrypt` is past the init and every byte of `pending`.
    /// Boxed: the key schedules are large.
    pub ciphers: Box<CipherPair>,
    /// Proxy → client key (fast mode, §6.3).
    pub enc_key: [u8; 32],
    /// Proxy → client IV.
    pub enc_iv: [u8; 16],
    /// `Some` for fake-TLS clients: the de-framer positioned where the handshake stopped.
    pub deframer: Option<Deframer>,
    /// Client data that followed the init, already decrypted.
    pub pending: Vec<u8>,
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Read more bytes and [`feed`](ServerHandshake::feed) them (or call
    /// [`eof`](ServerHandshake::eof) if the client closed).
    NeedMore,
    /// Wait `delay`, write `bytes`, then call [`feed`](ServerHandshake::feed) (with new bytes
    /// or none): bytes that arrived with the ClientHello are processed then.
    Send {
        /// ServerHello, ChangeCipherSpec and the fake certificate record.
        bytes: Vec<u8>,
        /// Delay before writing (`server_hello_delay_*`).
        delay: Duration,
    },
    /// Terminal: refuse the client.
    Reject(Rejection),
    /// Terminal: the client is identified.
    Accept(Box<Accepted>),
}

enum State {
    Detect,
    Hello {
        end: usize,
    },
    Sent {
        user: usize,
    },
    TlsInit {
        user: usize,
        deframer: Deframer,
        payload: Vec<u8>,
    },
    PlainInit,
    Done,
}

/// One client handshake; see the module docs for the flow.
pub struct ServerHandshake<'a> {
    ctx: HandshakeContext<'a>,
    state: State,
    /// Bytes of the current stage not consumed yet (detection, ClientHello, plain init).
    buf: Vec<u8>,
    fed: usize,
}

impl std::fmt::Debug for ServerHandshake<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("fed", &self.fed)
            .finish_non_exhaustive()
    }
}

fn hello_reason(e: &HelloError) -> (RejectReason, Disposition) {
    let reason = match e {
        HelloError::UnknownSniDrop => return (RejectReason::TlsUnknownSni, Disposition::Drop),
        HelloError::UnknownSniMask => RejectReason::TlsUnknownSni,
        HelloError::UnknownSniReject => {
            let alert = Disposition::Alert(&crate::tls::ALERT_UNRECOGNIZED_NAME);
            return (RejectReason::TlsUnknownSni, alert);
        }
        HelloError::AlpnNotAllowed => RejectReason::TlsAlpnNotAllowed,
        HelloError::NoUsers => RejectReason::NoUsers,
        HelloError::NoMatchingSecret => RejectReason::TlsNoMatchingSecret,
        HelloError::TimestampOutOfWindow { .. } => RejectReason::TlsStaleTimestamp,
        HelloError::NotHandshakeRecord
        | HelloError::BadRecordVersion(..)
        | HelloError::RecordLengthOutOfRange(_)
        | HelloError::RecordSizeMismatch { .. }
        | HelloError::NotClientHello(_)
        | HelloError::HandshakeLengthMismatch(_)
        | HelloError::Truncated(_)
        | HelloError::SessionIdTooLong(_)
        | HelloError::DuplicateSni
        | HelloError::InvalidSni => RejectReason::TlsMalformedHello,
    };
    (reason, Disposition::Mask)
}

/// Uniform-enough draw in `lo..=hi` (`lo` when `hi <= lo`); the modulo bias of a 64-bit draw
/// over a millisecond range is irrelevant for a jitter.
fn delay_between(rng: &mut impl RandomSource, (lo, hi): (u64, u64)) -> Duration {
    if hi <= lo {
        return Duration::from_millis(lo);
    }
    let mut b = [0u8; 8];
    rng.fill_bytes(&mut b);
    let r = u64::from_le_bytes(b);
    let ms = match (hi - lo).checked_add(1) {
        Some(span) => lo + r % span,
        None => r,
    };
    Duration::from_millis(ms)
}

impl<'a> ServerHandshake<'a> {
    /// A handshake that has seen no byte yet.
    pub fn new(ctx: HandshakeContext<'a>) -> Self {
        Self {
            ctx,
            state: State::Detect,
            buf: Vec::new(),
            fed: 0,
        }
    }

    /// Bytes fed so far.
    pub fn consumed(&self) -> usize {
        self.fed
    }

    /// Ends the handshake with a rejection.
    fn rejection(
        &mut self,
        reason: RejectReason,
        disposition: Disposition,
        detail: &'static str,
    ) -> Rejection {
        self.state = State::Done;
        self.buf = Vec::new();
        Rejection {
            reason,
            disposition,
            detail,
            consumed: self.fed,
        }
    }

    fn reject(
        &mut self,
        reason: RejectReason,
        disposition: Disposition,
        detail: &'static str,
    ) -> Step {
        Step::Reject(self.rejection(reason, disposition, detail))
    }

    fn mask(&mut self, reason: RejectReason) -> Step {
        self.reject(reason, Disposition::Mask, reason.label())
    }

    /// Feeds the next bytes read from the client (possibly none, after [`Step::Send`]).
    /// After a terminal step every call rejects with [`RejectReason::InternalError`].
    pub fn feed(&mut self, input: &[u8], now: Now, rng: &mut impl RandomSource) -> Step {
        self.fed = self.fed.saturating_add(input.len());
        match &mut self.state {
            State::Done => return self.finished(),
            State::TlsInit {
                deframer, payload, ..
            } => {
                if let Err(e) = deframe_into(deframer, payload, input.to_vec()) {
                    return self.mask_detail(e);
                }
            }
            _ => self.buf.extend_from_slice(input),
        }
        self.advance(now, rng)
    }

    fn mask_detail(&mut self, (reason, detail): (RejectReason, &'static str)) -> Step {
        self.reject(reason, Disposition::Mask, detail)
    }

    /// Input after a terminal step: a driver bug, never the client's doing.
    fn finished(&mut self) -> Step {
        self.reject(
            RejectReason::InternalError,
            Disposition::Drop,
            "handshake_already_finished",
        )
    }

    /// The client closed its side: the rejection naming what was cut short.
    pub fn eof(&mut self) -> Rejection {
        let reason = match self.state {
            State::Detect => RejectReason::EofBeforeDetection,
            State::PlainInit if self.fed < RECORD_HEADER_LEN => RejectReason::EofBeforeDetection,
            State::Hello { .. } => RejectReason::TlsHelloTruncated,
            State::PlainInit => RejectReason::Obfs2Truncated,
            State::Sent { .. } | State::TlsInit { .. } => RejectReason::TlsInitTruncated,
            State::Done => {
                let r = RejectReason::InternalError;
                return self.rejection(r, Disposition::Drop, "handshake_already_finished");
            }
        };
        self.rejection(reason, Disposition::Mask, reason.label())
    }

    /// `timeouts.client_handshake` fired. Bytes that may still be a ClientHello or an init
    /// go to the mask host, as they would at EOF: a web server answers a partial request
    /// too, where a silent close would mark the proxy (docs/DECISIONS.md #33). A client that
    /// sent nothing is closed (nothing to forward), and so is one that already has our
    /// ServerHello (the mask host's reply could not follow it).
    pub fn timeout(&mut self) -> Rejection {
        let reason = RejectReason::HandshakeTimeout;
        let (disposition, detail) = match self.state {
            State::Detect if self.fed == 0 => (Disposition::Drop, "handshake_timeout_silent"),
            State::Detect | State::Hello { .. } | State::PlainInit => {
                (Disposition::Mask, "handshake_timeout_masked")
            }
            State::Sent { .. } | State::TlsInit { .. } => {
                (Disposition::Drop, "handshake_timeout_after_server_hello")
            }
            State::Done => {
                let r = RejectReason::InternalError;
                return self.rejection(r, Disposition::Drop, "handshake_already_finished");
            }
        };
        self.rejection(reason, disposition, detail)
    }

    fn advance(&mut self, now: Now, rng: &mut impl RandomSource) -> Step {
        loop {
            match &mut self.state {
                State::Done => return self.finished(),
                State::Detect => {
                    // Decide on as few bytes as the rules allow (docs/DECISIONS.md #33): a
                    // first byte other than 16 already rules TLS out.
                    let first = &self.buf[..self.buf.len().min(RECORD_HEADER_LEN)];
                    self.state = match detect(first) {
                        Detection::ClientHello { record_len } => {
                            if !self.ctx.tls_enabled {
                                return self.mask(RejectReason::TlsDisabled);
                            }
                            State::Hello {
                                end: RECORD_HEADER_LEN + record_len,
                            }
                        }
                        Detection::BadRecordLength(_) => {
                            return self.mask(RejectReason::TlsBadRecordLength)
                        }
                        Detection::NeedMore => return Step::NeedMore,
                        Detection::NotTls => {
                            if !self.ctx.plain_enabled {
                                return self.mask(RejectReason::PlainDisabled);
                            }
                            State::PlainInit
                        }
                    };
                }
                State::PlainInit => {
                    // Real clients redraw such inits (§2.2): whatever sent them is a probe,
                    // answered by the mask host now rather than after the handshake timeout.
                    if starts_forbidden(&self.buf) {
                        return self.mask(RejectReason::Obfs2ForbiddenPrefix);
                    }
                    let Some(init) = self.buf.get(..INIT_LEN) else {
                        return Step::NeedMore;
                    };
                    let mut wire = [0u8; INIT_LEN];
                    wire.copy_from_slice(init);
                    let pending = self.buf.split_off(INIT_LEN);
                    let (hint, tags) = (self.ctx.hint, self.ctx.plain_tags);
                    return self.finish(hint, tags, wire, pending, None, now);
                }
                State::Hello { end } => {
                    let end = *end;
                    if self.buf.len() < end {
                        return Step::NeedMore;
                    }
                    return self.hello(end, now, rng);
                }
                State::Sent { user } => {
                    let user = *user;
                    let mut deframer = Deframer::default();
                    let mut payload = Vec::new();
                    let early = std::mem::take(&mut self.buf);
                    if let Err(e) = deframe_into(&mut deframer, &mut payload, early) {
                        return self.mask_detail(e);
                    }
                    self.state = State::TlsInit {
                        user,
                        deframer,
                        payload,
                    };
                }
                State::TlsInit { user, payload, .. } => {
                    if payload.len() < INIT_LEN {
                        if self.fed >= MAX_HANDSHAKE_BYTES {
                            return self.mask(RejectReason::TlsInitTooFar);
                        }
                        return Step::NeedMore;
                    }
                    let user = *user;
                    let mut wire = [0u8; INIT_LEN];
                    wire.copy_from_slice(&payload[..INIT_LEN]);
                    let pending = payload.split_off(INIT_LEN);
                    let State::TlsInit { deframer, .. } =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        return self.mask(RejectReason::InternalError);
                    };
                    let tags = self.ctx.tls_tags;
                    return self.finish(Some(user), tags, wire, pending, Some(deframer), now);
                }
            }
        }
    }

    /// Validates the complete ClientHello in `buf[..end]` and builds the response.
    fn hello(&mut self, end: usize, now: Now, rng: &mut impl RandomSource) -> Step {
        let ctx = self.ctx;
        let validated = FakeTlsHello::validate_with_hint(
            &self.buf[..end],
            ctx.table,
            now.unix_secs,
            ctx.tls,
            ctx.hint,
        );
        let hello = match validated {
            Ok(h) => h,
            Err(e) => {
                let (reason, disposition) = hello_reason(&e);
                return self.reject(reason, disposition, e.label());
            }
        };
        // Inserted only now that a secret matched, so garbage cannot evict real entries.
        if ctx
            .tls_replay
            .check_and_insert(hello.replay_key(), now.mono)
            == ReplayVerdict::Replay
        {
            return self.mask(RejectReason::TlsReplay);
        }
        let Some(secret) = ctx.table.secret(hello.user_index) else {
            return self.mask(RejectReason::NoUsers);
        };
        let key_share = rng.x25519_key_share();
        let plan = ctx.flights.plan(hello.sni.as_deref());
        // Spent only here, after the digest and the replay check: a prober cannot use up a
        // real client's full flight.
        let full = ctx
            .full_flight
            .is_none_or(|(budget, ip)| budget.take_full(hello.sni.as_deref(), ip, now.mono));
        let mut draw = [0u8; 8];
        rng.fill_bytes(&mut draw);
        let len = if full {
            plan.flight_len(u64::from_le_bytes(draw))
        } else {
            plan.compact_flight_len()
        };
        let params = ServerHelloParams {
            client_digest: &hello.digest,
            session_id: &hello.session_id,
            key_share: &key_share,
            fake_flight: &[],
            alpn: hello.alpn,
            cipher: plan.cipher_for(hello.tls13_suites),
            versions_first: plan.versions_first,
        };
        let mut bytes = Vec::with_capacity(server_hello_len(hello.session_id.len(), len));
        // Inputs are bounded by construction (session id ≤ 32 from the parser, the caller
        // clamps the flight to 64..=16384), so this only fails on a caller bug.
        let fill = |flight: &mut [u8]| rng.fill_bytes(flight);
        let written = write_server_hello_with(secret, &params, len, fill, &mut bytes);
        if written.is_err() || bytes.is_empty() {
            return self.reject(
                RejectReason::InternalError,
                Disposition::Drop,
                "tls_server_hello",
            );
        }
        let delay = delay_between(rng, ctx.hello_delay_ms.unwrap_or(plan.delay_ms));
        self.buf.drain(..end);
        self.state = State::Sent {
            user: hello.user_index,
        };
        Step::Send { bytes, delay }
    }

    /// Matches the init, checks the replay cache and decrypts the pending bytes.
    fn finish(
        &mut self,
        hint: Option<usize>,
        allowed: TagSet,
        wire: [u8; INIT_LEN],
        mut pending: Vec<u8>,
        deframer: Option<Deframer>,
        now: Now,
    ) -> Step {
        let ctx = self.ctx;
        let opts = MatchOptions {
            hint,
            allowed,
            max_tries: usize::MAX,
            dcs: ctx.dcs,
        };
        let mut m = match match_init_with(ctx.table, &ObfuscatedInit::new(wire), opts) {
            Ok(m) => m,
            Err(e) => return self.reject(e.reason(), Disposition::Mask, e.label()),
        };
        if ctx.obfs_replay.check_and_insert(m.replay_key, now.mono) == ReplayVerdict::Replay {
            return self.mask(RejectReason::Obfs2Replay);
        }
        m.ciphers.decrypt.apply_in_place(&mut pending);
        self.state = State::Done;
        self.buf = Vec::new();
        Step::Accept(Box::new(Accepted {
            user_index: m.user_index,
            tag: m.tag,
            dc: m.dc,
            ciphers: Box::new(m.ciphers),
            enc_key: m.keys.backward_key,
            enc_iv: m.keys.backward_iv,
            deframer,
            pending,
        }))
    }
}

/// De-frames `chunk` and appends its application data to `payload`.
fn deframe_into(
    deframer: &mut Deframer,
    payload: &mut Vec<u8>,
    mut chunk: Vec<u8>,
) -> Result<(), (RejectReason, &'static str)> {
    if chunk.is_empty() {
        return Ok(());
    }
    match deframer.deframe(&mut chunk) {
        Ok(d) if d.closed => Err((
            RejectReason::TlsAlertBeforeInit,
            RejectReason::TlsAlertBeforeInit.label(),
        )),
        Ok(d) => {
            payload.extend_from_slice(&chunk[..d.len]);
            Ok(())
        }
        Err(e) => Err((RejectReason::TlsBadRecord, e.label())),
    }
}

#[cfg(test)]
#[path = "server_handshake_tests.rs"]
mod tests;
