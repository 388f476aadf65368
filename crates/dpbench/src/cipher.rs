//! The ciphers' own cost, for the `me` scenario's bound: how fast one core runs the
//! transforms each route must apply, independent of any proxy.
//!
//! Per byte relayed (an echo: half of the bytes up, half down) the direct route applies
//! AES-256-CTR twice (client side, DC side); the ME route applies CTR once (client side)
//! and, on the link, AES-256-CBC encryption up and decryption down. CBC encryption cannot be
//! parallelised within one chain (each block waits for the previous ciphertext), so it runs
//! at AES's latency, several times slower than CTR. With everything else equal, the proxy's
//! CPU per GB over ME is at least direct's plus
//! `0.5 × (cbc_encrypt + cbc_decrypt) − ctr`, which bounds the CPU-bound ME/direct ratio.
//!
//! Uses the same RustCrypto crates as the proxy, measured directly (the bench does not link
//! the proxy's crates).

use std::time::Instant;

use aes::cipher::inout::InOutBuf;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, StreamCipher};

/// Seconds per 10^9 bytes on one core.
#[derive(Debug, Clone, Copy)]
pub struct CipherCosts {
    /// AES-256-CBC encryption of one chain.
    pub cbc_encrypt: f64,
    /// AES-256-CBC decryption.
    pub cbc_decrypt: f64,
    /// AES-256-CTR.
    pub ctr: f64,
}

impl CipherCosts {
    /// Extra CPU-seconds per GB relayed the ME route needs over the direct one (see the
    /// module docs).
    pub fn me_extra_per_gb(&self) -> f64 {
        0.5 * (self.cbc_encrypt + self.cbc_decrypt) - self.ctr
    }

    /// The best ME/direct throughput ratio a CPU-bound proxy can reach, given direct's cost
    /// (1 when the ME route's transforms cost no more).
    pub fn me_ratio_bound(&self, direct_cpu_s_per_gb: f64) -> f64 {
        direct_cpu_s_per_gb / (direct_cpu_s_per_gb + self.me_extra_per_gb().max(0.0))
    }
}

/// Measures each transform over `bytes` in 64 KiB buffers, best of three.
pub fn measure(bytes: usize) -> CipherCosts {
    let key = rand::random::<[u8; 32]>();
    let iv = rand::random::<[u8; 16]>();
    const BUF: usize = 64 * 1024;
    let mut buf = vec![0x5au8; BUF];
    let rounds = (bytes / BUF).max(1);
    let per_gb = |secs: f64| secs * 1e9 / (rounds * BUF) as f64;
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut enc = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
    let cbc_encrypt = best(&mut || {
        for _ in 0..rounds {
            let (blocks, _) = InOutBuf::from(&mut buf[..]).into_chunks();
            enc.encrypt_blocks_inout_mut(blocks);
        }
    });
    let mut dec = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into());
    let cbc_decrypt = best(&mut || {
        for _ in 0..rounds {
            let (blocks, _) = InOutBuf::from(&mut buf[..]).into_chunks();
            dec.decrypt_blocks_inout_mut(blocks);
        }
    });
    let mut ctr = ctr::Ctr128BE::<aes::Aes256>::new(&key.into(), &iv.into());
    let ctr = best(&mut || {
        for _ in 0..rounds {
            ctr.apply_keystream(&mut buf);
        }
    });
    // Keep the buffer observable so the loops are not optimised away.
    std::hint::black_box(&buf);
    CipherCosts {
        cbc_encrypt: per_gb(cbc_encrypt),
        cbc_decrypt: per_gb(cbc_decrypt),
        ctr: per_gb(ctr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_measured_and_the_bound_follows_from_them() {
        let c = measure(1 << 20);
        assert!(c.cbc_encrypt > 0.0 && c.cbc_decrypt > 0.0 && c.ctr > 0.0);
        // The bound is below 1 exactly when the ME route's transforms cost more.
        let b = c.me_ratio_bound(0.5);
        assert!(b > 0.0 && b <= 1.0);
        assert_eq!(b < 1.0, c.me_extra_per_gb() > 0.0);
        let cheaper = CipherCosts {
            cbc_encrypt: 0.1,
            cbc_decrypt: 0.1,
            ctr: 1.0,
        };
        assert_eq!(cheaper.me_ratio_bound(0.5), 1.0);
        let same = CipherCosts {
            cbc_encrypt: 1.0,
            cbc_decrypt: 1.0,
            ctr: 1.0,
        };
        assert!((same.me_ratio_bound(0.5) - 1.0).abs() < 1e-12);
        let slow = CipherCosts {
            cbc_encrypt: 1.2,
            cbc_decrypt: 0.2,
            ctr: 0.2,
        };
        assert!((slow.me_extra_per_gb() - 0.5).abs() < 1e-12);
        assert!((slow.me_ratio_bound(0.5) - 0.5).abs() < 1e-12);
    }
}
