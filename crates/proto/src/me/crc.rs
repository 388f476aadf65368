//! CRC-32 (IEEE, zlib) and CRC-32C (Castagnoli) for ME RPC packets (§7.2).
//!
//! Owns: the two checksums (SIMD / hardware-accelerated crates: a table-driven loop was half
//! of an ME link's CPU in dpbench). Must not: know packet layout.

/// CRC-32 (IEEE 802.3 / zlib).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// CRC-32C (Castagnoli).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Checksum in use on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// CRC-32 (nonce and handshake packets always; data packets by default).
    Crc32,
    /// CRC-32C (both sides set flag `0x800` in their handshakes).
    Crc32c,
}

impl Checksum {
    /// Computes the checksum.
    pub fn compute(self, data: &[u8]) -> u32 {
        match self {
            Self::Crc32 => crc32(data),
            Self::Crc32c => crc32c(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_checks_7_2() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }
}
