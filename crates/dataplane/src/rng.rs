//! Randomness for handshakes: the thread-local CSPRNG behind `proto`'s injected
//! [`proto::RandomSource`], and the ServerHello key shares computed ahead of the handshakes
//! that use them. Never held across `.await` (the thread RNG is not `Send`).
//!
//! ```text
//!  ee handshake ── take() ──► pool of fresh X25519 public keys (each handed out once)
//!                  │ empty: computed inline, as before
//!                  └ fewer than LOW left: one spawn_blocking task tops the pool up to SIZE
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::RngCore;

/// `proto::RandomSource` over `rand::thread_rng()`.
pub(crate) struct ThreadRandom;

impl proto::RandomSource for ThreadRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::thread_rng().fill_bytes(dest);
    }
}

/// Public keys the pool holds when full (8 KiB).
const SIZE: usize = 256;
/// Below this many, a refill is started.
const LOW: usize = 128;
/// Keys computed between two visits to the lock (the lock is never held while computing).
const BATCH: usize = 16;

/// X25519 public keys computed off the handshake path. The fixed-base multiplication was the
/// largest CPU cost an ee handshake added over a classic one; computed here in a blocking
/// task, it no longer sits between a ClientHello and its answer. Only public keys are kept
/// (no handshake ever needs the private half), each is removed when handed out, so no two
/// connections see the same key share.
pub(crate) struct KeyShares {
    ready: Mutex<Vec<[u8; 32]>>,
    refilling: AtomicBool,
}

impl KeyShares {
    /// An empty pool: filled on the first ee handshake, so a proxy without ee clients never
    /// computes a key.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            ready: Mutex::new(Vec::with_capacity(SIZE)),
            refilling: AtomicBool::new(false),
        })
    }

    /// One key share, removed from the pool; `None` when the pool is empty. Starts a refill
    /// when the pool runs low (never waits for it).
    pub(crate) fn take(self: &Arc<Self>) -> Option<[u8; 32]> {
        let (key, left) = {
            let mut q = self.ready.lock();
            let key = q.pop();
            (key, q.len())
        };
        if left < LOW {
            self.refill();
        }
        key
    }

    /// Keys ready now.
    #[cfg(test)]
    pub(crate) fn ready(&self) -> usize {
        self.ready.lock().len()
    }

    fn refill(self: &Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.refilling.store(false, Ordering::Release);
            return;
        };
        let pool = Arc::clone(self);
        rt.spawn_blocking(move || {
            loop {
                let missing = SIZE.saturating_sub(pool.ready.lock().len());
                if missing == 0 {
                    break;
                }
                let batch: Vec<[u8; 32]> = (0..missing.min(BATCH)).map(|_| fresh()).collect();
                let mut q = pool.ready.lock();
                let room = SIZE.saturating_sub(q.len());
                q.extend(batch.into_iter().take(room));
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }
}

/// A key share from a fresh random private key (dropped at once). aws-lc's X25519 (linked
/// anyway for Shadowsocks) runs the s2n-bignum assembly, cheaper than curve25519-dalek's
/// fixed-base table; dalek (through `proto`) is the fallback, so a key share never fails.
fn fresh() -> [u8; 32] {
    use aws_lc_rs::agreement::{PrivateKey, X25519};
    PrivateKey::generate(&X25519)
        .and_then(|k| k.compute_public_key())
        .ok()
        .and_then(|p| <[u8; 32]>::try_from(p.as_ref()).ok())
        .unwrap_or_else(fresh_dalek)
}

fn fresh_dalek() -> [u8; 32] {
    let mut scalar = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut scalar);
    proto::x25519_public(scalar)
}

/// [`ThreadRandom`] whose key shares come from the pool when it has one.
pub(crate) struct HandshakeRandom<'a> {
    pub(crate) shares: &'a Arc<KeyShares>,
}

impl proto::RandomSource for HandshakeRandom<'_> {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::thread_rng().fill_bytes(dest);
    }

    fn x25519_key_share(&mut self) -> [u8; 32] {
        self.shares.take().unwrap_or_else(fresh)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_fills_in_the_background_and_never_repeats_a_key() {
        let pool = KeyShares::new();
        assert_eq!(
            pool.take(),
            None,
            "empty at first: the caller computes inline"
        );
        for _ in 0..500 {
            if pool.ready() == SIZE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.ready(), SIZE);
        let mut rng = HandshakeRandom { shares: &pool };
        let mut seen = HashSet::new();
        // More than one pool's worth: refills (or inline keys) keep every key fresh.
        for _ in 0..3 * SIZE {
            let k = proto::RandomSource::x25519_key_share(&mut rng);
            assert!(seen.insert(k), "a key share was handed out twice");
            // A real public key: the u-coordinate of a point of the prime-order subgroup
            // is never one of the low-order encodings (0, 1, ...).
            assert_ne!(k, [0; 32]);
        }
    }

    #[test]
    fn aws_lc_and_dalek_compute_the_same_public_key() {
        use aws_lc_rs::agreement::{PrivateKey, X25519};
        for seed in 1..=8u8 {
            let scalar = [seed.wrapping_mul(37); 32];
            let k = PrivateKey::from_private_key(&X25519, &scalar).expect("key");
            let public = k.compute_public_key().expect("public");
            assert_eq!(public.as_ref(), proto::x25519_public(scalar), "seed {seed}");
        }
        assert_ne!(fresh(), fresh());
    }

    #[test]
    fn without_a_runtime_keys_are_computed_inline() {
        let pool = KeyShares::new();
        let mut rng = HandshakeRandom { shares: &pool };
        let a = proto::RandomSource::x25519_key_share(&mut rng);
        let b = proto::RandomSource::x25519_key_share(&mut rng);
        assert_ne!(a, b);
        assert_eq!(pool.ready(), 0);
    }
}
