//! ME link key derivation and the AES-256-CBC streams (docs/PROTOCOL.md §7.4).
//!
//! Owns: building the KDF input `s`, the key/IV formulas and CBC chained
//! across the whole connection. Must not: discover addresses (NAT/STUN is the
//! caller's job; pass the values the ME sees).
//!
//! ```text
//!  s = nonce_srv(16) | nonce_clt(16) | clt_ts LE32 | srv_ip(4) | clt_port LE16
//!      | purpose "CLIENT"/"SERVER" | clt_ip(4) | srv_port LE16 | proxy_secret
//!      | nonce_srv(16) | [clt_ipv6(16) | srv_ipv6(16)] | nonce_clt(16)
//!  key = MD5(s[1..])[0..12] || SHA1(s)        iv = MD5(s[2..])
//!  IPv4 fields: octets reversed; IPv6 links: IPv4 fields zero + the bracket
//! ```

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use md5::{Digest, Md5};
use sha1::Sha1;
use std::net::{IpAddr, SocketAddr};

/// Which direction a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Proxy → ME (`"CLIENT"`).
    Client,
    /// ME → proxy (`"SERVER"`).
    Server,
}

/// KDF inputs; "clt" is this proxy, "srv" the ME.
#[derive(Clone, Debug)]
pub struct KdfInput<'a> {
    /// ME's nonce.
    pub nonce_srv: [u8; 16],
    /// Our nonce.
    pub nonce_clt: [u8; 16],
    /// Our crypto_ts.
    pub clt_ts: u32,
    /// Our address as the ME sees it.
    pub clt: SocketAddr,
    /// The ME's address.
    pub srv: SocketAddr,
    /// The proxy secret.
    pub proxy_secret: &'a [u8],
}

/// Mixed address families cannot be expressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ME KDF needs both addresses in the same family")]
pub struct MixedFamilies;

fn rev4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            o.reverse();
            o
        }
        IpAddr::V6(_) => [0; 4],
    }
}

/// The raw KDF string `s` (exposed for test vector M1).
pub fn kdf_input_bytes(k: &KdfInput<'_>, purpose: Purpose) -> Result<Vec<u8>, MixedFamilies> {
    // An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) is the IPv4
    // address on the wire, so it keys as one.
    let (clt_ip, srv_ip) = (k.clt.ip().to_canonical(), k.srv.ip().to_canonical());
    let v6 = match (clt_ip, srv_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => None,
        (IpAddr::V6(c), IpAddr::V6(s)) => Some((c.octets(), s.octets())),
        _ => return Err(MixedFamilies),
    };
    let mut s = Vec::with_capacity(150 + k.proxy_secret.len());
    s.extend_from_slice(&k.nonce_srv);
    s.extend_from_slice(&k.nonce_clt);
    s.extend_from_slice(&k.clt_ts.to_le_bytes());
    s.extend_from_slice(&rev4(srv_ip));
    s.extend_from_slice(&k.clt.port().to_le_bytes());
    s.extend_from_slice(match purpose {
        Purpose::Client => b"CLIENT",
        Purpose::Server => b"SERVER",
    });
    s.extend_from_slice(&rev4(clt_ip));
    s.extend_from_slice(&k.srv.port().to_le_bytes());
    s.extend_from_slice(k.proxy_secret);
    s.extend_from_slice(&k.nonce_srv);
    if let Some((c, sv)) = v6 {
        s.extend_from_slice(&c);
        s.extend_from_slice(&sv);
    }
    s.extend_from_slice(&k.nonce_clt);
    Ok(s)
}

/// key/iv from a KDF string `s`.
pub fn key_iv_from(s: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut key = [0u8; 32];
    let md5_1: [u8; 16] = Md5::digest(s.get(1..).unwrap_or(&[])).into();
    key[..12].copy_from_slice(&md5_1[..12]);
    let sha: [u8; 20] = Sha1::digest(s).into();
    key[12..].copy_from_slice(&sha);
    let iv: [u8; 16] = Md5::digest(s.get(2..).unwrap_or(&[])).into();
    (key, iv)
}

/// Derives the key and IV for one direction.
pub fn derive_key_iv(
    k: &KdfInput<'_>,
    purpose: Purpose,
) -> Result<([u8; 32], [u8; 16]), MixedFamilies> {
    Ok(key_iv_from(&kdf_input_bytes(k, purpose)?))
}

/// One direction of an ME link: AES-256-CBC chained across calls.
pub enum CbcStream {
    /// Proxy → ME.
    Encrypt(cbc::Encryptor<aes::Aes256>),
    /// ME → proxy.
    Decrypt(cbc::Decryptor<aes::Aes256>),
}

impl std::fmt::Debug for CbcStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CbcStream")
    }
}

/// Input not a multiple of the 16-byte block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CBC input of {0} bytes is not a multiple of 16")]
pub struct NotBlockAligned(pub usize);

impl CbcStream {
    /// Encryptor.
    pub fn encryptor(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        Self::Encrypt(cbc::Encryptor::new(key.into(), iv.into()))
    }

    /// Decryptor.
    pub fn decryptor(key: &[u8; 32], iv: &[u8; 16]) -> Self {
        Self::Decrypt(cbc::Decryptor::new(key.into(), iv.into()))
    }

    /// Transforms whole blocks in place; the chain continues on the next call.
    pub fn apply_in_place(&mut self, buf: &mut [u8]) -> Result<(), NotBlockAligned> {
        if buf.len() % 16 != 0 {
            return Err(NotBlockAligned(buf.len()));
        }
        // Whole-slice calls: decryption then runs several blocks in parallel.
        let (blocks, _) = aes::cipher::inout::InOutBuf::from(buf).into_chunks();
        match self {
            Self::Encrypt(e) => e.encrypt_blocks_inout_mut(blocks),
            Self::Decrypt(d) => d.decrypt_blocks_inout_mut(blocks),
        }
        Ok(())
    }
}
