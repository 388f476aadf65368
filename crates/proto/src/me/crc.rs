//! CRC-32 (IEEE, zlib) and CRC-32C (Castagnoli) for ME RPC packets (§7.2).
//!
//! Owns: table-driven checksums. Must not: know packet layout.

const fn table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32: [u32; 256] = table(0xedb8_8320);
static CRC32C: [u32; 256] = table(0x82f6_3b78);

fn run(t: &[u32; 256], data: &[u8]) -> u32 {
    !data
        .iter()
        .fold(!0u32, |c, &b| t[usize::from((c as u8) ^ b)] ^ (c >> 8))
}

/// CRC-32 (IEEE 802.3 / zlib).
pub fn crc32(data: &[u8]) -> u32 {
    run(&CRC32, data)
}

/// CRC-32C (Castagnoli).
pub fn crc32c(data: &[u8]) -> u32 {
    run(&CRC32C, data)
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
