//! Client handshake: TLS vs obfuscated2 detection, per-user secret matching through the
//! precomputed [`proto::UserTable`], fake-TLS validation and ServerHello, the inner init,
//! the replay cache, and the per-client-IP "last matched user" hint (PROTOCOL.md §2.5, §4,
//! §5).
//!
//! Owns: reading exactly what the handshake needs (keeping every byte read, so a rejected
//! client can be masked with them) and deciding accept / mask / drop. Must not: apply
//! admission limits (the caller does, once the user is known) or talk to a DC.
//!
//! ```text
//!  first 5 bytes ── 16 03 01|03 LL LL ──► ClientHello (5+LL) ─► digest/SNI/ALPN/time ─► replay
//!        │                                 ─► ServerHello+CCS+flight ─► records ─► 64-byte init
//!        └── anything else ──────────────► 64-byte init (classic/secure only)
//!  init ─► match_init(hint first, tags allowed for the transport) ─► replay ─► Authenticated
//! ```

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use proto::{
    detect_tls, match_init_with, write_server_hello, CipherPair, Detection, FakeTlsHello,
    MatchOptions, ObfuscatedInit, ProtoTag, ServerHelloParams, INIT_LEN,
};
use tokio::net::TcpStream;

use crate::io_util::{read_some, write_all};
use crate::policy::{Policy, UserRuntime};
use crate::tls_stream::Deframer;

/// Upper bound on bytes read before the handshake decides (a ClientHello record of 16 KiB
/// plus a few records carrying the inner init).
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

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
    Mask { raw: Vec<u8>, label: &'static str },
    /// Close (unknown SNI with `drop`, or the client went away).
    Drop { label: &'static str },
}

impl Rejected {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Mask { label, .. } | Self::Drop { label } => label,
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

enum Fill {
    Ready,
    Eof,
}

/// Reads until `raw` holds at least `need` bytes.
async fn fill(stream: &TcpStream, raw: &mut Vec<u8>, need: usize) -> Result<Fill, Rejected> {
    while raw.len() < need {
        let old = raw.len();
        let want = (need - old).max(2048);
        raw.resize(old + want, 0);
        let r = read_some(stream, &mut raw[old..]).await;
        match r {
            Ok(0) => {
                raw.truncate(old);
                return Ok(Fill::Eof);
            }
            Ok(n) => raw.truncate(old + n),
            Err(_) => return Err(Rejected::Drop { label: "io_error" }),
        }
    }
    Ok(Fill::Ready)
}

fn mask(raw: Vec<u8>, label: &'static str) -> Rejected {
    Rejected::Mask { raw, label }
}

/// Runs the handshake on `stream`; `raw` holds bytes already read (after a PROXY header).
pub(crate) async fn run(
    stream: &TcpStream,
    policy: &Policy,
    hints: &IpHints,
    peer_ip: IpAddr,
    mut raw: Vec<u8>,
) -> Result<Authenticated, Rejected> {
    if let Fill::Eof = fill(stream, &mut raw, 5).await? {
        return Err(mask(raw, "eof_before_detection"));
    }
    let hint = hints.get(peer_ip, policy.generation);
    let auth = match detect_tls(&raw[..5]) {
        Detection::ClientHello { record_len } => {
            if !policy.tls_enabled {
                return Err(mask(raw, "tls_disabled"));
            }
            tls(stream, policy, hint, raw, 5 + record_len).await?
        }
        Detection::BadRecordLength(_) => return Err(mask(raw, "tls_bad_record_length")),
        Detection::NeedMore => return Err(mask(raw, "eof_before_detection")),
        Detection::NotTls => {
            if !policy.plain_enabled {
                return Err(mask(raw, "plain_disabled"));
            }
            plain(stream, policy, hint, raw).await?
        }
    };
    if let Some(i) = policy.user_index(&auth.user.name) {
        hints.set(peer_ip, policy.generation, i);
    }
    Ok(auth)
}

async fn plain(
    stream: &TcpStream,
    policy: &Policy,
    hint: Option<usize>,
    mut raw: Vec<u8>,
) -> Result<Authenticated, Rejected> {
    if let Fill::Eof = fill(stream, &mut raw, INIT_LEN).await? {
        return Err(mask(raw, "obfs2_truncated"));
    }
    let mut init = [0u8; INIT_LEN];
    init.copy_from_slice(&raw[..INIT_LEN]);
    let pending = raw[INIT_LEN..].to_vec();
    finish(policy, hint, policy.plain_tags, &init, pending, None, raw)
}

/// Matches the init, checks the replay cache and decrypts pending data.
fn finish(
    policy: &Policy,
    hint: Option<usize>,
    allowed: proto::TagSet,
    init: &[u8; INIT_LEN],
    mut pending: Vec<u8>,
    deframer: Option<Deframer>,
    raw: Vec<u8>,
) -> Result<Authenticated, Rejected> {
    let init = ObfuscatedInit::new(*init);
    let opts = MatchOptions {
        hint,
        allowed,
        max_tries: usize::MAX,
    };
    let mut m = match match_init_with(&policy.table, &init, opts) {
        Ok(m) => m,
        Err(e) => return Err(mask(raw, e.label())),
    };
    if policy.replay.obfs_replayed(m.replay_key) {
        return Err(mask(raw, "obfs2_replay"));
    }
    let Some(user) = policy.users.get(m.user_index).map(Arc::clone) else {
        return Err(mask(raw, "obfs2_no_users"));
    };
    m.ciphers.decrypt.apply_in_place(&mut pending);
    Ok(Authenticated {
        user,
        tag: m.tag,
        dc: m.dc,
        ciphers: Box::new(m.ciphers),
        enc_key: m.keys.backward_key,
        enc_iv: m.keys.backward_iv,
        deframer,
        pending,
        raw,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn server_hello(policy: &Policy, hello: &FakeTlsHello, secret: &[u8; 16]) -> Vec<u8> {
    let mut scalar = [0u8; 32];
    crate::rng::fill(&mut scalar);
    let key_share = x25519_dalek::x25519(scalar, x25519_dalek::X25519_BASEPOINT_BYTES);
    let mut flight = vec![0u8; policy.fake_cert_len];
    crate::rng::fill(&mut flight);
    let params = ServerHelloParams {
        client_digest: &hello.digest,
        session_id: &hello.session_id,
        key_share: &key_share,
        fake_flight: &flight,
        alpn: hello.alpn,
    };
    let mut out = Vec::new();
    // Inputs are bounded by construction (session id ≤ 32 from the parser, flight clamped
    // to 64..=16384), so this cannot fail; an empty response would just end the session.
    if let Err(e) = write_server_hello(secret, &params, &mut out) {
        tracing::error!(error = %e, "building the ServerHello failed");
        out.clear();
    }
    out
}

async fn tls(
    stream: &TcpStream,
    policy: &Policy,
    hint: Option<usize>,
    mut raw: Vec<u8>,
    hello_len: usize,
) -> Result<Authenticated, Rejected> {
    if let Fill::Eof = fill(stream, &mut raw, hello_len).await? {
        return Err(mask(raw, "tls_hello_truncated"));
    }
    let hello = match FakeTlsHello::validate_with_hint(
        &raw[..hello_len],
        &policy.table,
        unix_now(),
        &policy.tls,
        hint,
    ) {
        Ok(h) => h,
        Err(e) if e.is_drop() => return Err(Rejected::Drop { label: e.label() }),
        Err(e) => return Err(mask(raw, e.label())),
    };
    if policy.replay.tls_replayed(hello.replay_key()) {
        return Err(mask(raw, "tls_replay"));
    }
    let Some(tls_user) = policy.users.get(hello.user_index) else {
        return Err(mask(raw, "tls_no_users"));
    };
    let response = server_hello(policy, &hello, &tls_user.secret);
    if response.is_empty() {
        return Err(Rejected::Drop {
            label: "tls_server_hello",
        });
    }
    let (lo, hi) = policy.hello_delay_ms;
    let delay = crate::rng::between(lo, hi);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if write_all(stream, &response).await.is_err() {
        return Err(Rejected::Drop { label: "io_error" });
    }
    drop(response);

    // Inner obfuscated2 init, from the de-framed record stream (§4.7).
    let mut deframer = Deframer::default();
    let mut payload = Vec::new();
    let mut consumed = hello_len;
    loop {
        if consumed < raw.len() {
            let mut chunk = raw[consumed..].to_vec();
            consumed = raw.len();
            match deframer.deframe(&mut chunk) {
                Ok(d) if d.closed => return Err(mask(raw, "tls_alert_before_init")),
                Ok(d) => payload.extend_from_slice(&chunk[..d.len]),
                Err(e) => return Err(mask(raw, e.label())),
            }
        }
        if payload.len() >= INIT_LEN {
            break;
        }
        if raw.len() >= MAX_HANDSHAKE_BYTES {
            return Err(mask(raw, "tls_init_too_far"));
        }
        let need = raw.len() + 1;
        if let Fill::Eof = fill(stream, &mut raw, need).await? {
            return Err(mask(raw, "tls_init_truncated"));
        }
    }
    let mut init = [0u8; INIT_LEN];
    init.copy_from_slice(&payload[..INIT_LEN]);
    let pending = payload[INIT_LEN..].to_vec();
    finish(
        policy,
        Some(hello.user_index),
        policy.tls_tags,
        &init,
        pending,
        Some(deframer),
        raw,
    )
}
