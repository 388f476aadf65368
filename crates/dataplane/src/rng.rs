//! Randomness for handshakes: the thread-local CSPRNG behind `proto`'s injected
//! [`proto::RandomSource`]. Never held across `.await` (the thread RNG is not `Send`).

use rand::{Rng, RngCore};

/// `proto::RandomSource` over `rand::thread_rng()`.
pub(crate) struct ThreadRandom;

impl proto::RandomSource for ThreadRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::thread_rng().fill_bytes(dest);
    }
}

/// Fills `dest` with random bytes.
pub(crate) fn fill(dest: &mut [u8]) {
    rand::thread_rng().fill_bytes(dest);
}

/// Uniform in `lo..=hi` (`lo` when `hi <= lo`).
pub(crate) fn between(lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        rand::thread_rng().gen_range(lo..=hi)
    }
}
