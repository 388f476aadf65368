//! AES-256-CTR stream ciphers as used by obfuscated2 (docs/PROTOCOL.md §2.3).
//!
//! Owns: the keystream type the data plane applies in place to every byte of a
//! connection, and the cipher pair of one side of a link. Must not know about
//! sockets or framing: one direction is one continuous keystream for the whole
//! life of a connection (never restarted per frame or per TLS record).
//!
//! ```text
//!   counter block = IV as a 128-bit big-endian integer, +1 per 16-byte block,
//!                   wrapping mod 2^128 (OpenSSL EVP_aes_256_ctr semantics)
//!   ciphertext[i] = plaintext[i] XOR AES256(key, IV + i/16)[i % 16]
//! ```

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

type Ctr = ctr::Ctr128BE<aes::Aes256>;

/// One direction of an obfuscated2 stream: AES-256-CTR, streaming across calls.
#[derive(Clone)]
pub struct AesCtr {
    inner: Ctr,
}

impl std::fmt::Debug for AesCtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("AesCtr").finish_non_exhaustive()
    }
}

impl AesCtr {
    /// A keystream positioned at offset 0.
    pub fn new(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        Self {
            inner: Ctr::new(key.into(), iv.into()),
        }
    }

    /// A keystream positioned at byte `offset` (e.g. 64 after an init).
    pub fn new_at(key: &[u8; 32], iv: &[u8; 16], offset: u64) -> Self {
        let mut c = Self::new(key, iv);
        c.inner.seek(offset);
        c
    }

    /// XORs the next `buf.len()` keystream bytes into `buf` (encrypt == decrypt).
    pub fn apply_in_place(&mut self, buf: &mut [u8]) {
        self.inner.apply_keystream(buf);
    }

    /// Current keystream offset in bytes.
    pub fn position(&self) -> u64 {
        self.inner.current_pos()
    }
}

/// Both directions of one side of an obfuscated2 link.
///
/// On the proxy's client side `decrypt` handles client → proxy bytes and is
/// already positioned after the 64-byte init; `encrypt` handles proxy → client
/// bytes and starts at offset 0.
#[derive(Clone, Debug)]
pub struct CipherPair {
    /// Keystream for bytes received from the peer.
    pub decrypt: AesCtr,
    /// Keystream for bytes sent to the peer.
    pub encrypt: AesCtr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot_and_seek() {
        let key = [7u8; 32];
        let iv = [0xffu8; 16]; // exercises the 2^128 wrap on the second block
        let mut one = [0u8; 100];
        AesCtr::new(&key, &iv).apply_in_place(&mut one);
        let mut parts = [0u8; 100];
        let mut c = AesCtr::new(&key, &iv);
        for chunk in parts.chunks_mut(7) {
            c.apply_in_place(chunk);
        }
        assert_eq!(one, parts);
        assert_eq!(c.position(), 100);
        let mut tail = [0u8; 36];
        AesCtr::new_at(&key, &iv, 64).apply_in_place(&mut tail);
        assert_eq!(&one[64..], &tail[..]);
    }
}
