//! Multi-user secret matching for obfuscated2 inits (docs/PROTOCOL.md §2.5).
//!
//! Owns: [`UserTable`] (per-user state precomputed once per config load) and
//! [`match_init`]. Must not: know user names, limits or config; the table is
//! indexed like the caller's user list.
//!
//! Cost per candidate secret, and why it is minimal:
//! ```text
//!  dec_key = SHA256(I[8..40] || S)   48 bytes → exactly one compression of a
//!                                    block pre-padded once per init; only the
//!                                    16 secret bytes are rewritten per candidate
//!  tag check needs plain[56..64]     = I[56..64] XOR AES(dec_key, dec_iv + 3)[8..16]
//!                                    → one AES-256 key expansion (encrypt-only)
//!                                      + one block, instead of a 64-byte CTR run
//!  enc_key, CTR streams              only for the matching user
//! ```
//! The secret follows the init bytes inside the hash, so no per-user SHA-256
//! midstate can help obfuscated2; fake TLS (HMAC keyed by the secret) does get
//! per-user inner/outer midstates, see [`crate::tls::hello`].
//!
//! Measured (benches/matching.rs, thread CPU time, loaded 2-vCPU AMD EPYC VM):
//! SHA-256 block ≈ 38 ns (SHA-NI), AES-256 key expansion + 1 block ≈ 150 ns
//! (`AESKEYGENASSIST` is slow there) → ≈ 200 ns per secret. A table-driven
//! key schedule with 8-lane `hazmat::cipher_round_par` was tried and gained
//! only ~10%, not worth non-constant-time lookups. Candidates are processed
//! in small batches so independent hash/expansion chains can overlap.

use aes::cipher::{BlockEncrypt, KeyInit};

use crate::dc::DcSet;
use crate::obfs2::{InitKeys, ObfuscatedInit, ProtoTag, Secret, TagSet, INIT_LEN};
use crate::reject::RejectReason;
use crate::sha::{self, HmacKeyState};
use crate::CipherPair;

/// One user's precomputed matching state (the secret and its HMAC midstates). Computing it
/// costs two SHA-256 compressions, so callers that rebuild their table on every config
/// change keep the keys of unchanged users and assemble the table with
/// [`UserTable::from_keys`].
#[derive(Clone, Copy)]
pub struct UserKey {
    secret: Secret,
    hmac: HmacKeyState,
}

impl UserKey {
    /// Precomputes the state for `secret`.
    pub fn new(secret: Secret) -> Self {
        Self {
            hmac: HmacKeyState::new(&secret),
            secret,
        }
    }

    /// The user's secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(..)")
    }
}

/// Per-user matching state, built once per config load.
pub struct UserTable {
    secrets: Vec<Secret>,
    hmac: Vec<HmacKeyState>,
}

impl std::fmt::Debug for UserTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl UserTable {
    /// Builds the table; index `i` of the result refers to the `i`-th secret.
    pub fn new<I: IntoIterator<Item = Secret>>(secrets: I) -> Self {
        Self::from_keys(secrets.into_iter().map(UserKey::new))
    }

    /// Builds the table from precomputed keys; index `i` refers to the `i`-th key.
    pub fn from_keys<I: IntoIterator<Item = UserKey>>(keys: I) -> Self {
        let (secrets, hmac) = keys.into_iter().map(|k| (k.secret, k.hmac)).unzip();
        Self { secrets, hmac }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when there is no user.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The secret of user `index`.
    pub fn secret(&self, index: usize) -> Option<&Secret> {
        self.secrets.get(index)
    }

    pub(crate) fn hmac_state(&self, index: usize) -> Option<&HmacKeyState> {
        self.hmac.get(index)
    }

    /// Candidate order: `hint` first (if valid), then every other index.
    pub(crate) fn candidates(&self, hint: Option<usize>) -> impl Iterator<Item = usize> {
        let n = self.secrets.len();
        let hint = hint.filter(|&h| h < n);
        hint.into_iter()
            .chain((0..n).filter(move |&i| Some(i) != hint))
    }
}

/// Options of one matching attempt.
#[derive(Clone, Copy, Debug)]
pub struct MatchOptions<'a> {
    /// User to try first (sticky per-IP hint, or the TLS-authenticated user).
    pub hint: Option<usize>,
    /// Tags the enabled modes admit for this transport (§3.5).
    pub allowed: TagSet,
    /// Upper bound on secrets tried (overload protection); `usize::MAX` = all.
    pub max_tries: usize,
    /// DC indexes the caller can route; `None` accepts any. A candidate whose tag is valid
    /// but whose DC is outside the set is "not this user" and matching goes on: a wrong
    /// secret yields a valid tag with probability 3/2^32 per candidate, and a listed DC
    /// only with the set's share of 2^16 on top.
    pub dcs: Option<&'a DcSet>,
}

/// Why no user accepted an init (each variant is a bad-connection label; the class it is
/// counted under is [`InitReject::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InitReject {
    /// The user table is empty.
    #[error("no users configured")]
    NoUsers,
    /// No secret decrypted the init to a known protocol tag and an acceptable DC.
    #[error("no secret matches the obfuscated2 init")]
    NoMatchingSecret,
    /// A secret matched but its tag is not admitted by the enabled modes.
    #[error("protocol tag {} not allowed by the enabled modes", .0.as_str())]
    TagNotAllowed(ProtoTag),
    /// `max_tries` secrets were tried without a match.
    #[error("gave up after {0} secrets")]
    TooManyCandidates(usize),
}

impl InitReject {
    /// Stable label for bad-connection statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::NoUsers => "obfs2_no_users",
            Self::NoMatchingSecret => "obfs2_no_matching_secret",
            Self::TagNotAllowed(_) => "obfs2_tag_not_allowed",
            Self::TooManyCandidates(_) => "obfs2_too_many_candidates",
        }
    }

    /// Statistics class.
    pub const fn reason(&self) -> RejectReason {
        match self {
            Self::NoUsers => RejectReason::NoUsers,
            // Giving up early is indistinguishable, to the client, from no match.
            Self::NoMatchingSecret | Self::TooManyCandidates(_) => {
                RejectReason::Obfs2NoMatchingSecret
            }
            Self::TagNotAllowed(_) => RejectReason::Obfs2TagNotAllowed,
        }
    }
}

/// A successful match.
#[derive(Clone, Debug)]
pub struct Matched {
    /// Index of the matching user in the [`UserTable`].
    pub user_index: usize,
    /// Protocol tag (client framing).
    pub tag: ProtoTag,
    /// DC index requested by the client.
    pub dc: i16,
    /// Keys; `backward_key`/`backward_iv` are the proxy → client stream (needed
    /// for fast mode, §6.3).
    pub keys: InitKeys,
    /// Proxy ciphers: `decrypt` already past the 64 init bytes.
    pub ciphers: CipherPair,
    /// Replay-cache key `I[8..56]`; insert it only now that a secret matched.
    pub replay_key: [u8; 48],
    /// Number of secrets tried.
    pub tries: usize,
}

/// Per-init precomputation: pre-padded hash block and the counter block that
/// covers bytes 48..64.
struct InitProbe {
    block: sha::Block,
    counter3: [u8; 16],
    tail: [u8; 8],
}

impl InitProbe {
    fn new(init: &[u8; INIT_LEN]) -> Self {
        let mut block = sha::padded48();
        block[..32].copy_from_slice(&init[8..40]);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&init[40..56]);
        let counter3 = u128::from_be_bytes(iv).wrapping_add(3).to_be_bytes();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&init[56..64]);
        Self {
            block,
            counter3,
            tail,
        }
    }

    /// Decrypted bytes 56..64 under each of `secrets` (≤ [`BATCH`]). The
    /// candidates are independent, so doing each step for the whole batch lets
    /// the CPU overlap the latency-bound SHA-NI / AES key-expansion chains.
    #[inline]
    fn plain_tails(&self, secrets: &[&Secret], out: &mut [[u8; 8]; BATCH]) {
        let n = secrets.len().min(BATCH);
        let mut keys = [[0u8; 32]; BATCH];
        for (key, secret) in keys.iter_mut().zip(secrets) {
            let mut block = self.block;
            block[32..48].copy_from_slice(*secret);
            *key = sha::hash_padded48(&block);
        }
        let mut ks = [[0u8; 8]; BATCH];
        for (k, o) in keys[..n].iter().zip(ks.iter_mut()) {
            let mut blk = aes::Block::from(self.counter3);
            aes::Aes256Enc::new(&(*k).into()).encrypt_block(&mut blk);
            o.copy_from_slice(&blk[8..16]);
        }
        for (o, k) in out.iter_mut().zip(&ks[..n]) {
            *o = self.tail;
            for (b, x) in o.iter_mut().zip(k) {
                *b ^= x;
            }
        }
    }
}

/// Candidates evaluated together.
const BATCH: usize = 4;

/// Tries the users' secrets (hint first) against a client init.
pub fn match_init(
    table: &UserTable,
    init: &ObfuscatedInit,
    hint: Option<usize>,
    allowed: TagSet,
) -> Result<Matched, InitReject> {
    match_init_with(
        table,
        init,
        MatchOptions {
            hint,
            allowed,
            max_tries: usize::MAX,
            dcs: None,
        },
    )
}

/// [`match_init`] with every option.
pub fn match_init_with(
    table: &UserTable,
    init: &ObfuscatedInit,
    opts: MatchOptions<'_>,
) -> Result<Matched, InitReject> {
    if table.is_empty() {
        return Err(InitReject::NoUsers);
    }
    let bytes = init.as_bytes();
    let probe = InitProbe::new(bytes);
    let mut disallowed = None;
    let mut tries = 0usize;
    let mut order = table.candidates(opts.hint);
    let mut idxs = [0usize; BATCH];
    let mut secrets: [&Secret; BATCH] = [&[0u8; 16]; BATCH];
    let mut tails = [[0u8; 8]; BATCH];
    loop {
        let room = BATCH.min(opts.max_tries - tries);
        let mut n = 0;
        while n < room {
            let Some(idx) = order.next() else { break };
            if let Some(s) = table.secret(idx) {
                idxs[n] = idx;
                secrets[n] = s;
                n += 1;
            }
        }
        if n == 0 {
            if room == 0 && order.next().is_some() {
                return Err(InitReject::TooManyCandidates(tries));
            }
            break;
        }
        probe.plain_tails(&secrets[..n], &mut tails);
        for k in 0..n {
            tries += 1;
            let tail = tails[k];
            let Some(tag) = ProtoTag::from_bytes([tail[0], tail[1], tail[2], tail[3]]) else {
                continue;
            };
            let dc = i16::from_le_bytes([tail[4], tail[5]]);
            if opts.dcs.is_some_and(|set| !set.contains(dc)) {
                continue;
            }
            if !opts.allowed.contains(tag) {
                disallowed = Some(tag);
                continue;
            }
            let keys = InitKeys::derive(bytes, Some(secrets[k]));
            let ciphers = keys.responder_ciphers();
            return Ok(Matched {
                user_index: idxs[k],
                tag,
                dc,
                keys,
                ciphers,
                replay_key: init.replay_key(),
                tries,
            });
        }
    }
    Err(match disallowed {
        Some(tag) => InitReject::TagNotAllowed(tag),
        None => InitReject::NoMatchingSecret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obfs2::{build_client_init, Transport};
    use proptest::prelude::*;

    fn secret(i: u32) -> Secret {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&i.to_le_bytes());
        s[4] = 0x5a;
        s
    }

    fn table(n: u32) -> UserTable {
        UserTable::new((0..n).map(secret))
    }

    fn rng(seed: u8) -> impl FnMut(&mut [u8]) {
        let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        move |b: &mut [u8]| {
            for v in b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = (x >> 24) as u8;
            }
        }
    }

    #[test]
    fn finds_the_right_user_and_honours_hint_and_limits() {
        let t = table(50);
        let sealed = build_client_init(&mut rng(3), &secret(37), ProtoTag::Padded, -2).expect("ok");
        let init = ObfuscatedInit::new(sealed.wire);
        let m = match_init(&t, &init, None, TagSet::ALL).expect("matches");
        assert_eq!(
            (m.user_index, m.tag, m.dc, m.tries),
            (37, ProtoTag::Padded, -2, 38)
        );
        let m = match_init(&t, &init, Some(37), TagSet::ALL).expect("matches");
        assert_eq!(m.tries, 1);
        let m = match_init(&t, &init, Some(99), TagSet::ALL).expect("bad hint ignored");
        assert_eq!(m.user_index, 37);
        let opts = MatchOptions {
            hint: None,
            allowed: TagSet::ALL,
            max_tries: 10,
            dcs: None,
        };
        assert_eq!(
            match_init_with(&t, &init, opts).map(|m| m.user_index),
            Err(InitReject::TooManyCandidates(10))
        );
        let only_classic = TagSet::for_modes(true, false, true, Transport::PlainTcp);
        assert_eq!(
            match_init(&t, &init, None, only_classic).map(|m| m.user_index),
            Err(InitReject::TagNotAllowed(ProtoTag::Padded))
        );
        assert_eq!(
            match_init(&table(0), &init, None, TagSet::ALL).map(|m| m.user_index),
            Err(InitReject::NoUsers)
        );
        let other = UserTable::new([[9u8; 16]]);
        assert_eq!(
            match_init(&other, &init, None, TagSet::ALL).map(|m| m.user_index),
            Err(InitReject::NoMatchingSecret)
        );
    }

    #[test]
    fn table_from_reused_keys_equals_a_fresh_table() {
        // A config reload keeps the keys of unchanged users and reorders/extends them.
        let old: Vec<UserKey> = (0..4).map(|i| UserKey::new(secret(i))).collect();
        let reused = UserTable::from_keys([old[3], UserKey::new(secret(9)), old[0]]);
        let fresh = UserTable::new([secret(3), secret(9), secret(0)]);
        for i in 0..3 {
            assert_eq!(reused.secret(i), fresh.secret(i));
            assert!(
                reused.hmac_state(i) == fresh.hmac_state(i),
                "hmac state {i}"
            );
        }
        let sealed = build_client_init(&mut rng(5), &secret(9), ProtoTag::Padded, 1).expect("ok");
        let m = match_init(
            &reused,
            &ObfuscatedInit::new(sealed.wire),
            None,
            TagSet::ALL,
        );
        assert_eq!(m.map(|m| m.user_index), Ok(1));
    }

    #[test]
    fn matched_ciphers_continue_after_init() {
        let t = table(3);
        let mut sealed =
            build_client_init(&mut rng(9), &secret(2), ProtoTag::Intermediate, 4).expect("ok");
        let mut m =
            match_init(&t, &ObfuscatedInit::new(sealed.wire), None, TagSet::ALL).expect("matches");
        let mut data = *b"hello, dc four!!";
        sealed.ciphers.encrypt.apply_in_place(&mut data);
        m.ciphers.decrypt.apply_in_place(&mut data);
        assert_eq!(&data, b"hello, dc four!!");
        assert_eq!(m.replay_key[..], sealed.wire[8..56]);
    }

    proptest! {
        #[test]
        fn fast_match_agrees_with_reference_open(wire in any::<[u8; 64]>(), secrets in proptest::collection::vec(any::<[u8; 16]>(), 1..4)) {
            let t = UserTable::new(secrets.clone());
            let init = ObfuscatedInit::new(wire);
            let fast = match_init(&t, &init, None, TagSet::ALL).ok().map(|m| (m.user_index, m.tag, m.dc));
            let slow = secrets.iter().enumerate().find_map(|(i, s)| init.open(Some(s)).ok().map(|o| (i, o.tag, o.dc)));
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn matches_any_generated_init(seed in any::<u8>(), who in 0u32..8, tag_i in 0usize..3, dc in any::<i16>()) {
            let t = table(8);
            let sealed = build_client_init(&mut rng(seed), &secret(who), ProtoTag::ALL[tag_i], dc).expect("ok");
            let m = match_init(&t, &ObfuscatedInit::new(sealed.wire), None, TagSet::ALL).expect("matches");
            prop_assert_eq!((m.user_index, m.tag, m.dc), (who as usize, ProtoTag::ALL[tag_i], dc));
        }
    }
}

#[cfg(test)]
#[path = "users_dc_tests.rs"]
mod dc_tests;
