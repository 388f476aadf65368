//! Secret forms handed to clients in links (PROTOCOL.md §1.2, §1.3).
//!
//! Owns: the `secret=` value for each transport mode (hex, and the base64url
//! form of fake-TLS secrets some tools print). Must not: know hosts, ports or
//! URL layouts (the API renders links).
//!
//! ```text
//!  classic:  <32 hex>
//!  secure:   dd <32 hex>
//!  fake TLS: ee <32 hex> hex(domain)      raw form 0xee || key16 || domain,
//!            or base64url(raw) without padding
//! ```

use crate::obfs2::Secret;

/// The client transport a link selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Plain obfuscated2 (abridged / intermediate).
    Classic,
    /// Padded intermediate (`dd`).
    Secure,
    /// Fake TLS (`ee`), with the SNI domain.
    Tls,
}

fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// The hex `secret=` value; `domain` is used only for [`LinkMode::Tls`].
pub fn link_secret_hex(mode: LinkMode, secret: &Secret, domain: &str) -> String {
    let mut s = String::with_capacity(34 + 2 * domain.len());
    match mode {
        LinkMode::Classic => {}
        LinkMode::Secure => s.push_str("dd"),
        LinkMode::Tls => s.push_str("ee"),
    }
    hex(secret, &mut s);
    if mode == LinkMode::Tls {
        hex(domain.as_bytes(), &mut s);
    }
    s
}

/// The base64url (no padding) form of a fake-TLS secret: `0xee || key || domain`.
pub fn tls_secret_base64url(secret: &Secret, domain: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut raw = Vec::with_capacity(17 + domain.len());
    raw.push(0xee);
    raw.extend_from_slice(secret);
    raw.extend_from_slice(domain.as_bytes());
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Secret = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];

    #[test]
    fn self_check_1_3() {
        let d = "example.com";
        assert_eq!(
            link_secret_hex(LinkMode::Classic, &KEY, d),
            "00112233445566778899aabbccddeeff"
        );
        assert_eq!(
            link_secret_hex(LinkMode::Secure, &KEY, d),
            "dd00112233445566778899aabbccddeeff"
        );
        assert_eq!(
            link_secret_hex(LinkMode::Tls, &KEY, d),
            "ee00112233445566778899aabbccddeeff6578616d706c652e636f6d"
        );
        assert_eq!(
            tls_secret_base64url(&KEY, d),
            "7gARIjNEVWZ3iJmqu8zd7v9leGFtcGxlLmNvbQ"
        );
    }

    #[test]
    fn base64url_lengths() {
        // 17 + len bytes → ceil(4n/3) chars without padding.
        for len in 0..6 {
            let d = "a".repeat(len);
            let n = 17 + len;
            assert_eq!(tls_secret_base64url(&KEY, &d).len(), (4 * n).div_ceil(3));
        }
    }
}
