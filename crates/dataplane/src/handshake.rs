//! Client handshake driver: socket I/O and clocks around `proto`'s sans-IO
//! [`ServerHandshake`] (which owns detection, ClientHello validation, the replay checks, the
//! ServerHello, the inner init and multi-user matching, docs/PROTOCOL.md §2.5, §4, §5), plus the
//! per-client-IP "last matched user" hint.
//!
//! Owns: reading (keeping every byte read, so a rejected client can be masked with all of
//! them), writing the ServerHello after its delay, the clocks (tokio's, so paused-time tests
//! work) and the randomness. Must not: decide anything about the bytes (the state machine
//! does), apply admission limits (the caller does, once the user is known) or talk to a DC.
//!
//! ```text
//!  raw ──feed──► ServerHandshake ──► NeedMore ─ read ─► feed …
//!                                ├─► Send(bytes, delay) ─ sleep, write ─► feed(empty)
//!                                ├─► Reject(reason, mask|drop|alert) ─► Rejected (+ raw to mask)
//!                                └─► Accept(keys, user, tag, dc, pending) ─► Authenticated
//! ```

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use proto::{
    Accepted, CipherPair, Disposition, HandshakeContext, Now, ProtoTag, RejectReason, Rejection,
    ServerHandshake, Step,
};
use tokio::net::TcpStream;

use crate::io_util::{read_some, write_all};
use crate::policy::{Policy, UserRuntime};
use crate::rng::{HandshakeRandom, KeyShares};
use proto::Deframer;

/// Bytes asked of each read (a ClientHello is usually one or two reads).
const READ_CHUNK: usize = 4096;

/// A client whose user is identified.
pub(crate) struct Authenticated {
    pub(crate) user: Arc<UserRuntime>,
    pub(crate) tag: ProtoTag,
    pub(crate) dc: i16,
    /// Client-side ciphers: `decrypt` is past the init and every pending byte.
    /// Boxed: 2 KiB of key schedules stay out of the session future.
    pub(crate) ciphers: Box<CipherPair>,
    /// Proxy → client key and IV (fast mode, §6.3).
    pub(crate) enc_key: [u8; 32],
    pub(crate) enc_iv: [u8; 16],
    /// `Some` for fake-TLS clients: de-framer positioned where the handshake stopped.
    pub(crate) deframer: Option<Deframer>,
    /// Client data already read and decrypted (to forward after the DC init).
    pub(crate) pending: Vec<u8>,
    /// Every byte read from the client (masked with them if admission refuses).
    pub(crate) raw: Vec<u8>,
}

/// A client the handshake refused.
pub(crate) enum Rejected {
    /// Relay to the mask host with the bytes read so far.
    Mask {
        raw: Vec<u8>,
        reason: RejectReason,
        detail: &'static str,
    },
    /// Close (unknown SNI with `drop`, or the client went away).
    Drop {
        reason: RejectReason,
        detail: &'static str,
    },
    /// Write `bytes` (a TLS alert) at once, then close.
    Alert {
        bytes: &'static [u8],
        reason: RejectReason,
        detail: &'static str,
    },
}

impl Rejected {
    /// Statistics class.
    pub(crate) fn reason(&self) -> RejectReason {
        match self {
            Self::Mask { reason, .. } | Self::Drop { reason, .. } | Self::Alert { reason, .. } => {
                *reason
            }
        }
    }

    /// Finer label for logs.
    pub(crate) fn detail(&self) -> &'static str {
        match self {
            Self::Mask { detail, .. } | Self::Drop { detail, .. } | Self::Alert { detail, .. } => {
                detail
            }
        }
    }

    fn from_rejection(r: Rejection, raw: Vec<u8>) -> Self {
        match r.disposition {
            Disposition::Mask => Self::Mask {
                raw,
                reason: r.reason,
                detail: r.detail,
            },
            Disposition::Drop => Self::Drop {
                reason: r.reason,
                detail: r.detail,
            },
            Disposition::Alert(bytes) => Self::Alert {
                bytes,
                reason: r.reason,
                detail: r.detail,
            },
        }
    }

    fn io_error() -> Self {
        Self::Drop {
            reason: RejectReason::IoError,
            detail: RejectReason::IoError.label(),
        }
    }
}

/// Per-client-IP hint of the last matched user: `(policy generation, user index)`.
pub(crate) struct IpHints {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<IpAddr, (u64, u32)>>>,
}

const HINT_SHARDS: usize = 16;
const HINTS_PER_SHARD: usize = 4096;

impl IpHints {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..HINT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, (u64, u32)>> {
        &self.shards[(self.hasher.hash_one(ip) as usize) % HINT_SHARDS]
    }

    /// The user index last matched from `ip` under policy `generation`.
    pub(crate) fn get(&self, ip: IpAddr, generation: u64) -> Option<usize> {
        self.shard(&ip)
            .lock()
            .get(&ip)
            .filter(|(g, _)| *g == generation)
            .map(|(_, i)| *i as usize)
    }

    pub(crate) fn set(&self, ip: IpAddr, generation: u64, index: usize) {
        let mut m = self.shard(&ip).lock();
        if m.len() >= HINTS_PER_SHARD && !m.contains_key(&ip) {
            // Bounded memory: hints are an optimisation, dropping them is harmless.
            m.clear();
        }
        m.insert(ip, (generation, index as u32));
    }
}

fn now() -> Now {
    Now {
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        mono: tokio::time::Instant::now().into_std(),
    }
}

/// What the handshake saw besides its verdict.
pub(crate) struct Observer<'a> {
    /// Where complete ClientHellos are fingerprinted.
    pub(crate) stats: &'a stats::Stats,
    /// The emulated flights learned from the origins (used when `tls_emulation` is on).
    pub(crate) flights: &'a proto::FlightTable,
    /// ServerHello key shares computed ahead.
    pub(crate) key_shares: &'a Arc<KeyShares>,
}

/// Runs the handshake on `stream`; `raw` holds bytes already read (after a PROXY header).
/// At `deadline` (`timeouts.client_handshake`) the state machine decides what happens to
/// the bytes read so far ([`ServerHandshake::timeout`]).
pub(crate) async fn run(
    stream: &TcpStream,
    policy: &Policy,
    hints: &IpHints,
    peer_ip: IpAddr,
    mut raw: Vec<u8>,
    deadline: tokio::time::Instant,
    observer: Observer<'_>,
) -> Result<Authenticated, Rejected> {
    let ctx = HandshakeContext {
        table: &policy.table,
        tls: &policy.tls,
        tls_enabled: policy.tls_enabled,
        plain_enabled: policy.plain_enabled,
        plain_tags: policy.plain_tags,
        tls_tags: policy.tls_tags,
        dcs: Some(policy.dc.accepted()),
        obfs_replay: &policy.replay.obfs,
        tls_replay: &policy.replay.tls,
        flights: if policy.tls_emulation {
            observer.flights
        } else {
            &policy.legacy_flights
        },
        hello_delay_ms: policy.hello_delay_ms,
        // The compact flight is a shortened learned flight: without emulation every client
        // gets `fake_cert_len`, as before.
        full_flight: policy
            .tls_emulation
            .then_some((&*policy.full_flight, peer_ip)),
        hint: hints.get(peer_ip, policy.generation),
    };
    let mut hs = ServerHandshake::new(ctx);
    let mut sent_hello = false;
    let mut rng = HandshakeRandom {
        shares: observer.key_shares,
    };
    let ended = drive(
        stream,
        &mut hs,
        &mut raw,
        deadline,
        &mut sent_hello,
        &mut rng,
    )
    .await;
    let user = match &ended {
        Ok(a) => policy.users.get(a.user_index).map(Arc::clone),
        Err(_) => None,
    };
    let name = user.as_ref().map(|u| &*u.name);
    observe_hello(observer.stats, &raw, peer_ip, name, sent_hello);
    let accepted = match ended {
        Ok(a) => a,
        Err(Ended::Rejected(r)) => return Err(Rejected::from_rejection(r, raw)),
        Err(Ended::Io) => return Err(Rejected::io_error()),
    };
    let Some(user) = user else {
        // The table and the user list are built together; kept total anyway.
        return Err(Rejected::Mask {
            raw,
            reason: RejectReason::NoUsers,
            detail: "user_index_out_of_range",
        });
    };
    hints.set(peer_ip, policy.generation, accepted.user_index);
    let a = *accepted;
    Ok(Authenticated {
        user,
        tag: a.tag,
        dc: a.dc,
        ciphers: a.ciphers,
        enc_key: a.enc_key,
        enc_iv: a.enc_iv,
        deframer: a.deframer,
        pending: a.pending,
        raw,
    })
}

/// How [`drive`] ended without an accept.
enum Ended {
    Rejected(Rejection),
    Io,
}

/// Feeds the state machine until it decides; every byte read is appended to `raw`.
async fn drive(
    stream: &TcpStream,
    hs: &mut ServerHandshake<'_>,
    raw: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    sent_hello: &mut bool,
    rng: &mut HandshakeRandom<'_>,
) -> Result<Box<Accepted>, Ended> {
    let mut step = hs.feed(raw, now(), rng);
    loop {
        step = match step {
            Step::NeedMore => {
                let old = raw.len();
                raw.resize(old + READ_CHUNK, 0);
                let read = tokio::time::timeout_at(deadline, read_some(stream, &mut raw[old..]));
                let Ok(read) = read.await else {
                    raw.truncate(old);
                    return Err(Ended::Rejected(hs.timeout()));
                };
                match read {
                    Ok(0) => {
                        raw.truncate(old);
                        return Err(Ended::Rejected(hs.eof()));
                    }
                    Ok(n) => {
                        raw.truncate(old + n);
                        hs.feed(&raw[old..], now(), rng)
                    }
                    Err(_) => {
                        raw.truncate(old);
                        return Err(Ended::Io);
                    }
                }
            }
            Step::Send { bytes, delay } => {
                let send = async {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    write_all(stream, &bytes).await
                };
                match tokio::time::timeout_at(deadline, send).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Ended::Io),
                    Err(_) => return Err(Ended::Rejected(hs.timeout())),
                }
                // Only a ClientHello whose digest matched a user is answered.
                *sent_hello = true;
                drop(bytes);
                hs.feed(&[], now(), rng)
            }
            Step::Reject(r) => return Err(Ended::Rejected(r)),
            Step::Accept(a) => return Ok(a),
        };
    }
}

/// Fingerprints the ClientHello at the start of `raw`, if one arrived complete: counted as
/// authenticated when it was answered with a ServerHello, as bad or probe otherwise.
fn observe_hello(
    stats: &stats::Stats,
    raw: &[u8],
    ip: IpAddr,
    user: Option<&str>,
    authenticated: bool,
) {
    let Some(head) = raw.get(..proto::tls::RECORD_HEADER_LEN) else {
        return;
    };
    let proto::Detection::ClientHello { record_len } = proto::detect_tls(head) else {
        return;
    };
    let Some(record) = raw.get(..proto::tls::RECORD_HEADER_LEN + record_len) else {
        return;
    };
    let board = stats.tls_fingerprints();
    match proto::tls_fingerprint(record) {
        Ok(fp) => {
            let f = stats::FingerprintRef {
                ja3: &fp.ja3,
                ja3_raw: &fp.ja3_raw,
                ja4: &fp.ja4,
                ja4_raw: &fp.ja4_raw,
            };
            board.record(f, ip, user, authenticated, now().unix_secs);
        }
        Err(_) => board.record_parse_error(),
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
