//! Raw SHA-256 block helpers behind the multi-user matchers.
//!
//! Owns: pre-padded single-block hashing (the obfuscated2 key derivation hashes
//! exactly 48 bytes, i.e. one compression) and HMAC-SHA-256 from pre-keyed
//! inner/outer midstates (computed once per user at table build time), so a
//! candidate secret costs only the compressions that depend on it.
//! Must not: hold per-connection state.

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

/// One 64-byte SHA-256 block.
pub(crate) type Block = GenericArray<u8, U64>;

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3).
pub(crate) const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Big-endian serialisation of a final state.
pub(crate) fn state_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// A 64-byte block holding a 48-byte message followed by SHA-256 padding:
/// bytes 0..48 message, 48 = 0x80, 56..64 = BE64(384).
pub(crate) fn padded48() -> Block {
    let mut b = Block::default();
    b[48] = 0x80;
    b[56..64].copy_from_slice(&(48u64 * 8).to_be_bytes());
    b
}

/// SHA-256 of the 48 message bytes already placed in `block` (see [`padded48`]).
pub(crate) fn hash_padded48(block: &Block) -> [u8; 32] {
    let mut st = H0;
    sha2::compress256(&mut st, std::slice::from_ref(block));
    state_bytes(&st)
}

/// Inner and outer HMAC-SHA-256 midstates for one key (≤ 64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct HmacKeyState {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacKeyState {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        let mut ipad = Block::default();
        let mut opad = Block::default();
        for i in 0..64 {
            let k = key.get(i).copied().unwrap_or(0);
            ipad[i] = k ^ 0x36;
            opad[i] = k ^ 0x5c;
        }
        let mut inner = H0;
        sha2::compress256(&mut inner, std::slice::from_ref(&ipad));
        let mut outer = H0;
        sha2::compress256(&mut outer, std::slice::from_ref(&opad));
        Self { inner, outer }
    }

    /// HMAC(key, message) where `msg` was prepared by [`HmacMessage::new`].
    pub(crate) fn mac(&self, msg: &HmacMessage) -> [u8; 32] {
        let mut st = self.inner;
        sha2::compress256(&mut st, &msg.blocks);
        let mut last = Block::default();
        last[..32].copy_from_slice(&state_bytes(&st));
        last[32] = 0x80;
        last[56..64].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut out = self.outer;
        sha2::compress256(&mut out, std::slice::from_ref(&last));
        state_bytes(&out)
    }
}

/// A message padded once for the inner HMAC hash (it follows the 64-byte key
/// block), shared by every candidate key.
pub(crate) struct HmacMessage {
    blocks: Vec<Block>,
}

impl HmacMessage {
    /// `parts` are concatenated; the result can be MACed under any key.
    pub(crate) fn new(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let padded_len = (len + 9).div_ceil(64) * 64;
        let mut buf = Vec::with_capacity(padded_len);
        for p in parts {
            buf.extend_from_slice(p);
        }
        buf.push(0x80);
        buf.resize(padded_len - 8, 0);
        let bits = ((len as u64) + 64) * 8;
        buf.extend_from_slice(&bits.to_be_bytes());
        // memcpy per block (GenericArray::clone_from_slice clones byte by byte).
        let mut blocks = vec![Block::default(); padded_len / 64];
        for (b, chunk) in blocks.iter_mut().zip(buf.chunks_exact(64)) {
            b.as_mut_slice().copy_from_slice(chunk);
        }
        Self { blocks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    #[test]
    fn padded48_matches_sha2() {
        let mut b = padded48();
        for (i, x) in b[..48].iter_mut().enumerate() {
            *x = i as u8 * 5;
        }
        let want: [u8; 32] = Sha256::digest(&b[..48]).into();
        assert_eq!(hash_padded48(&b), want);
    }

    #[test]
    fn midstate_hmac_matches_hmac_crate() {
        let key = [0x42u8; 16];
        let st = HmacKeyState::new(&key);
        for len in [0usize, 1, 54, 55, 56, 63, 64, 65, 119, 120, 517, 1800] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let (a, b) = msg.split_at(len / 3);
            let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
            m.update(&msg);
            let want: [u8; 32] = m.finalize().into_bytes().into();
            assert_eq!(st.mac(&HmacMessage::new(&[a, b])), want, "len {len}");
        }
    }
}
