//! Randomness for handshakes: the thread-local CSPRNG behind `proto`'s injected
//! [`proto::RandomSource`]. Never held across `.await` (the thread RNG is not `Send`).

use rand::RngCore;

/// `proto::RandomSource` over `rand::thread_rng()`.
pub(crate) struct ThreadRandom;

impl proto::RandomSource for ThreadRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::thread_rng().fill_bytes(dest);
    }
}
