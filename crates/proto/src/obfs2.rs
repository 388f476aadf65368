//! Obfuscated2: the 64-byte init that opens every MTProto transport connection
//! (docs/PROTOCOL.md §2, §6.3).
//!
//! Owns: the init layout, protocol tags, DC index, the forbidden-first-bytes
//! rules, key derivation in both directions, and building/opening an init for
//! one known secret (or none, for the proxy's own link to a DC). Fast matching
//! against many users lives in [`crate::users`]. Must not: do I/O, read clocks
//! or draw randomness itself (a [`RandomSource`] is injected).
//!
//! ```text
//!  plaintext init (offsets):
//!   0        8                                40               56      60   62   64
//!   +--------+--------------------------------+----------------+-------+----+----+
//!   | random |        key material K (32)     |  IV material V | tag   | dc | rnd|
//!   +--------+--------------------------------+----------------+-------+----+----+
//!  on the wire: plain[0..56] || AES-CTR(plain)[56..64]  (whole init encrypted,
//!  keystream offsets 0..64 consumed; the next data byte uses offset 64)
//!
//!  forward  (initiator → responder): key = SHA256(I[8..40] || S), iv = I[40..56]
//!  backward (responder → initiator): R = rev(I[8..56]);
//!                                    key = SHA256(R[0..32] || S), iv = R[32..48]
//!  without a secret (proxy → DC) the SHA-256 step is skipped: key = the raw 32 bytes.
//! ```

use sha2::{Digest, Sha256};

use crate::cipher::{AesCtr, CipherPair};

/// Length of the init.
pub const INIT_LEN: usize = 64;
/// Length of a user secret.
pub const SECRET_LEN: usize = 16;

/// A 16-byte user secret (raw bytes; links add `dd`/`ee` prefixes).
pub type Secret = [u8; SECRET_LEN];

/// Source of random bytes, injected so handshakes stay deterministic in tests.
pub trait RandomSource {
    /// Fills `dest` with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);

    /// A fresh X25519 public key for a ServerHello key share: a real curve point whose
    /// private half nobody needs. Default: a random scalar drawn and multiplied now. A driver
    /// may hand out keys computed ahead of time, but never the same key twice — a key share
    /// seen on two connections would mark the server.
    fn x25519_key_share(&mut self) -> [u8; 32] {
        let mut scalar = [0u8; 32];
        self.fill_bytes(&mut scalar);
        crate::x25519_public(scalar)
    }
}

impl<F: FnMut(&mut [u8])> RandomSource for F {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self(dest)
    }
}

/// Client transport selected by the init (docs/PROTOCOL.md §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtoTag {
    /// `ef ef ef ef`, abridged framing.
    Abridged,
    /// `ee ee ee ee`, intermediate framing.
    Intermediate,
    /// `dd dd dd dd`, padded intermediate ("secure").
    Padded,
}

impl ProtoTag {
    /// All tags.
    pub const ALL: [ProtoTag; 3] = [Self::Abridged, Self::Intermediate, Self::Padded];

    /// Wire bytes at init offsets 56..60.
    pub const fn to_bytes(self) -> [u8; 4] {
        match self {
            Self::Abridged => [0xef; 4],
            Self::Intermediate => [0xee; 4],
            Self::Padded => [0xdd; 4],
        }
    }

    /// Recognises a tag.
    pub fn from_bytes(b: [u8; 4]) -> Option<Self> {
        match b {
            [0xef, 0xef, 0xef, 0xef] => Some(Self::Abridged),
            [0xee, 0xee, 0xee, 0xee] => Some(Self::Intermediate),
            [0xdd, 0xdd, 0xdd, 0xdd] => Some(Self::Padded),
            _ => None,
        }
    }

    /// Stable lower-case name (for logs and stat labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Abridged => "abridged",
            Self::Intermediate => "intermediate",
            Self::Padded => "padded",
        }
    }
}

/// The transport an init arrived on (docs/PROTOCOL.md §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Obfuscated2 directly on TCP.
    PlainTcp,
    /// Inside fake-TLS application-data records.
    InsideTls,
}

/// A set of admitted protocol tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TagSet(u8);

impl TagSet {
    /// No tag admitted.
    pub const NONE: Self = Self(0);
    /// Every tag admitted.
    pub const ALL: Self = Self(0b111);

    const fn bit(tag: ProtoTag) -> u8 {
        match tag {
            ProtoTag::Abridged => 1,
            ProtoTag::Intermediate => 2,
            ProtoTag::Padded => 4,
        }
    }

    /// This set plus `tag`.
    pub const fn with(self, tag: ProtoTag) -> Self {
        Self(self.0 | Self::bit(tag))
    }

    /// Whether `tag` is admitted.
    pub const fn contains(self, tag: ProtoTag) -> bool {
        self.0 & Self::bit(tag) != 0
    }

    /// Tags admitted by telemt's `[general.modes]` for a transport (§3.5):
    /// plain TCP admits ef/ee with `classic` and dd with `secure`; inside TLS
    /// dd needs `tls` and ef/ee need `classic` (telemt, mtprotoproxy).
    pub const fn for_modes(classic: bool, secure: bool, tls: bool, transport: Transport) -> Self {
        let padded_ok = match transport {
            Transport::PlainTcp => secure,
            Transport::InsideTls => tls,
        };
        let mut s = Self::NONE;
        if classic {
            s = s.with(ProtoTag::Abridged).with(ProtoTag::Intermediate);
        }
        if padded_ok {
            s = s.with(ProtoTag::Padded);
        }
        s
    }
}

/// Errors of building or opening a single init.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// Fewer or more than 64 bytes were supplied.
    #[error("obfuscated2 init must be 64 bytes, got {0}")]
    BadLength(usize),
    /// The decrypted bytes 56..60 are not a known protocol tag.
    #[error("obfuscated2 init has an unknown protocol tag")]
    UnknownTag,
    /// The random source kept producing forbidden prefixes.
    #[error("random source produced only forbidden init prefixes")]
    RandomSourceStuck,
}

/// Both keystreams' keys and IVs derived from one init.
#[derive(Clone, PartialEq, Eq)]
pub struct InitKeys {
    /// Initiator → responder key (client → proxy, proxy → DC).
    pub forward_key: [u8; 32],
    /// Initiator → responder IV.
    pub forward_iv: [u8; 16],
    /// Responder → initiator key.
    pub backward_key: [u8; 32],
    /// Responder → initiator IV.
    pub backward_iv: [u8; 16],
}

impl std::fmt::Debug for InitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitKeys").finish_non_exhaustive()
    }
}

impl InitKeys {
    /// Derives the keys from the 64 init bytes (only 8..56 matter, identical in
    /// plaintext and on the wire) and an optional secret.
    pub fn derive(init: &[u8; INIT_LEN], secret: Option<&Secret>) -> Self {
        let mut fwd_mat = [0u8; 32];
        fwd_mat.copy_from_slice(&init[8..40]);
        let mut forward_iv = [0u8; 16];
        forward_iv.copy_from_slice(&init[40..56]);
        let mut rev = [0u8; 48];
        rev.copy_from_slice(&init[8..56]);
        rev.reverse();
        let mut back_mat = [0u8; 32];
        back_mat.copy_from_slice(&rev[..32]);
        let mut backward_iv = [0u8; 16];
        backward_iv.copy_from_slice(&rev[32..]);
        let (forward_key, backward_key) = match secret {
            Some(s) => (keyed(&fwd_mat, s), keyed(&back_mat, s)),
            None => (fwd_mat, back_mat),
        };
        Self {
            forward_key,
            forward_iv,
            backward_key,
            backward_iv,
        }
    }

    /// Ciphers of the responder (proxy facing a client, DC facing the proxy):
    /// `decrypt` = forward stream already past the 64-byte init.
    pub fn responder_ciphers(&self) -> CipherPair {
        CipherPair {
            decrypt: AesCtr::new_at(&self.forward_key, &self.forward_iv, INIT_LEN as u64),
            encrypt: AesCtr::new(&self.backward_key, &self.backward_iv),
        }
    }

    /// Ciphers of the initiator after it sealed its init: `encrypt` = forward
    /// stream past offset 64, `decrypt` = backward stream at 0.
    pub fn initiator_ciphers(&self) -> CipherPair {
        CipherPair {
            decrypt: AesCtr::new(&self.backward_key, &self.backward_iv),
            encrypt: AesCtr::new_at(&self.forward_key, &self.forward_iv, INIT_LEN as u64),
        }
    }
}

fn keyed(material: &[u8; 32], secret: &Secret) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(material);
    h.update(secret);
    h.finalize().into()
}

/// True when a generated init must be redrawn (docs/PROTOCOL.md §2.2).
pub fn is_forbidden_prefix(init: &[u8; INIT_LEN]) -> bool {
    starts_forbidden(init)
}

/// True when the first bytes received so far already break a rule of PROTOCOL.md §2.2, so
/// they can never be the start of an init a real client generated: the rules need 1, 4 and
/// 8 bytes, and each is checked once that many bytes are present. A shorter or clean prefix
/// is still possible (`false`).
pub fn starts_forbidden(bytes: &[u8]) -> bool {
    const BAD4: [[u8; 4]; 7] = [
        *b"HEAD",
        *b"POST",
        *b"GET ",
        *b"OPTI",
        [0xee; 4],
        [0xdd; 4],
        [0x16, 0x03, 0x01, 0x02],
    ];
    bytes.first() == Some(&0xef)
        || bytes.get(..4).is_some_and(|p| BAD4.iter().any(|b| p == b))
        || bytes.get(4..8) == Some(&[0, 0, 0, 0])
}

/// The decoded content of a sealed init.
#[derive(Clone, Debug)]
pub struct OpenedInit {
    /// Protocol tag (bytes 56..60).
    pub tag: ProtoTag,
    /// DC index (bytes 60..62, signed LE).
    pub dc: i16,
    /// Derived keys.
    pub keys: InitKeys,
    /// Responder ciphers, `decrypt` positioned at offset 64.
    pub ciphers: CipherPair,
}

/// A plaintext init plus the wire form and initiator ciphers after sealing.
#[derive(Clone, Debug)]
pub struct SealedInit {
    /// The 64 bytes to send.
    pub wire: [u8; INIT_LEN],
    /// Derived keys (forward = our sending direction).
    pub keys: InitKeys,
    /// Initiator ciphers, `encrypt` positioned at offset 64.
    pub ciphers: CipherPair,
}

/// A received (still encrypted at 56..64) init with its secret-independent parts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ObfuscatedInit {
    bytes: [u8; INIT_LEN],
}

impl std::fmt::Debug for ObfuscatedInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObfuscatedInit").finish_non_exhaustive()
    }
}

impl ObfuscatedInit {
    /// Wraps exactly 64 wire bytes.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, InitError> {
        let bytes: [u8; INIT_LEN] = bytes
            .try_into()
            .map_err(|_| InitError::BadLength(bytes.len()))?;
        Ok(Self { bytes })
    }

    /// Wraps a 64-byte array.
    pub const fn new(bytes: [u8; INIT_LEN]) -> Self {
        Self { bytes }
    }

    /// The wire bytes (what masking forwards unchanged).
    pub const fn as_bytes(&self) -> &[u8; INIT_LEN] {
        &self.bytes
    }

    /// The replay-cache key `I[8..56]` (docs/PROTOCOL.md §5).
    pub fn replay_key(&self) -> [u8; 48] {
        let mut k = [0u8; 48];
        k.copy_from_slice(&self.bytes[8..56]);
        k
    }

    /// Opens the init with one secret (or none: DC side of a proxy link).
    /// Reference implementation of what [`crate::users::match_init`] does fast.
    pub fn open(&self, secret: Option<&Secret>) -> Result<OpenedInit, InitError> {
        let keys = InitKeys::derive(&self.bytes, secret);
        let mut plain = self.bytes;
        AesCtr::new(&keys.forward_key, &keys.forward_iv).apply_in_place(&mut plain);
        let tag = ProtoTag::from_bytes([plain[56], plain[57], plain[58], plain[59]])
            .ok_or(InitError::UnknownTag)?;
        let dc = i16::from_le_bytes([plain[60], plain[61]]);
        let ciphers = keys.responder_ciphers();
        Ok(OpenedInit {
            tag,
            dc,
            keys,
            ciphers,
        })
    }
}

/// Seals a plaintext init: keys derived with `secret` (or raw), the whole init
/// encrypted, `plain[0..56] || cipher[56..64]` returned as the wire form.
pub fn seal_init(plain: &[u8; INIT_LEN], secret: Option<&Secret>) -> SealedInit {
    let keys = InitKeys::derive(plain, secret);
    let mut enc = *plain;
    AesCtr::new(&keys.forward_key, &keys.forward_iv).apply_in_place(&mut enc);
    let mut wire = *plain;
    wire[56..].copy_from_slice(&enc[56..]);
    let ciphers = keys.initiator_ciphers();
    SealedInit {
        wire,
        keys,
        ciphers,
    }
}

/// Draws a plaintext init obeying §2.2, with `tag` at 56..60 and `dc` at 60..62.
pub fn generate_plain_init(
    rng: &mut impl RandomSource,
    tag: ProtoTag,
    dc: i16,
) -> Result<[u8; INIT_LEN], InitError> {
    let mut init = [0u8; INIT_LEN];
    // Each draw is forbidden with probability ~2^-8; 256 failures in a row
    // means the source is broken, not unlucky.
    for _ in 0..256 {
        rng.fill_bytes(&mut init);
        if !is_forbidden_prefix(&init) {
            init[56..60].copy_from_slice(&tag.to_bytes());
            init[60..62].copy_from_slice(&dc.to_le_bytes());
            return Ok(init);
        }
    }
    Err(InitError::RandomSourceStuck)
}

/// The client-side stream a fast-mode DC init mirrors (§6.3 step 4): the
/// proxy → client key and IV.
#[derive(Clone, Copy)]
pub struct FastModeKeys<'a> {
    /// Proxy → client key.
    pub key: &'a [u8; 32],
    /// Proxy → client IV.
    pub iv: &'a [u8; 16],
}

/// Builds the proxy's own init to a DC (§6.3): no secret; in fast mode
/// `init[8..56] = rev(client_enc_key || client_enc_iv)` so the DC → proxy stream
/// equals the proxy → client stream.
pub fn build_dc_init(
    rng: &mut impl RandomSource,
    tag: ProtoTag,
    dc: i16,
    fast_mode: Option<FastModeKeys<'_>>,
) -> Result<SealedInit, InitError> {
    let mut plain = generate_plain_init(rng, tag, dc)?;
    if let Some(fm) = fast_mode {
        let mut mat = [0u8; 48];
        mat[..32].copy_from_slice(fm.key);
        mat[32..].copy_from_slice(fm.iv);
        mat.reverse();
        plain[8..56].copy_from_slice(&mat);
    }
    Ok(seal_init(&plain, None))
}

/// Builds a client init for `secret` (test clients, self-tests).
pub fn build_client_init(
    rng: &mut impl RandomSource,
    secret: &Secret,
    tag: ProtoTag,
    dc: i16,
) -> Result<SealedInit, InitError> {
    let plain = generate_plain_init(rng, tag, dc)?;
    Ok(seal_init(&plain, Some(secret)))
}

#[cfg(test)]
#[path = "obfs2_tests.rs"]
mod tests;
