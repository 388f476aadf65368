//! Client TLS fingerprints of a ClientHello: JA3 (Salesforce) and JA4 (FoxIO, TCP `t…`),
//! for the `/v1/runtime/tls-fingerprints` leaderboard.
//!
//! Owns: a tolerant walk of the ClientHello fields both formats read, GREASE filtering and
//! the two string/hash encodings. Must not: decide anything about the client (that is
//! [`super::hello`]'s job; a hello that fingerprints fine may still be refused) or count.
//!
//! ```text
//!  record   16 03 0x LL LL
//!  hs       01 LLLLLL
//!  body     legacy_version(2) random(32) sid(vec8) ciphers(vec16) compression(vec8)
//!           extensions(vec16): { type(2) data(vec16) }*
//!             000a supported_groups      vec16 of u16  → JA3 curves
//!             000b ec_point_formats      vec8 of u8    → JA3 point formats
//!             000d signature_algorithms  vec16 of u16  → JA4_c (original order)
//!             0010 ALPN                  vec16 of vec8 → JA4_a (first value)
//!             002b supported_versions    vec8 of u16   → JA4_a version (highest)
//!
//!  JA3     = md5("771,4865-4866,0-23-65281,29-23,0")   decimal, fields ',', items '-'
//!  JA4     = t 13 d 15 16 h2 _ sha256(sorted ciphers)[..12] _ sha256(exts_sigalgs)[..12]
//!            │  │  │ │  │  └ first+last char of the first ALPN value ("00": none)
//!            │  │  │ │  └ extension count (GREASE excluded, max 99)
//!            │  │  │ └ cipher count (GREASE excluded, max 99)
//!            │  │  └ d: SNI present, i: absent
//!            │  └ highest supported_versions value, else legacy_version
//!            └ TCP
//!  exts_sigalgs = sorted extensions without SNI and ALPN, 4-hex each, ','-joined,
//!                 then '_' and the signature algorithms in wire order (no '_' if none)
//! ```
//! GREASE (RFC 8701: `0x?a?a` with equal bytes) is dropped from every list.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::{CONTENT_HANDSHAKE, RECORD_HEADER_LEN};

const EXT_SNI: u16 = 0x0000;
const EXT_GROUPS: u16 = 0x000a;
const EXT_POINT_FORMATS: u16 = 0x000b;
const EXT_SIG_ALGS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_VERSIONS: u16 = 0x002b;

/// Why a ClientHello could not be fingerprinted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Not a TLS handshake record carrying a ClientHello.
    #[error("not a ClientHello record")]
    NotClientHello,
    /// A field runs past its enclosing structure.
    #[error("ClientHello truncated in {0}")]
    Truncated(&'static str),
}

/// The JA3 and JA4 fingerprints of one ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFingerprint {
    /// MD5 of [`ja3_raw`](Self::ja3_raw), lowercase hex.
    pub ja3: String,
    /// `version,ciphers,extensions,curves,point_formats`.
    pub ja3_raw: String,
    /// `a_b_c` (FoxIO JA4).
    pub ja4: String,
    /// JA4 with the hashed parts in clear (`a_ciphers_extensions_sigalgs`, FoxIO `JA4_r`).
    pub ja4_raw: String,
}

/// RFC 8701 GREASE values: both bytes equal and of the form `0x?a`.
pub fn is_grease(v: u16) -> bool {
    let [hi, lo] = v.to_be_bytes();
    hi == lo && lo & 0x0f == 0x0a
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FingerprintError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(FingerprintError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(FingerprintError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FingerprintError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FingerprintError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], FingerprintError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], FingerprintError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Big-endian u16 items of a list body (a trailing odd byte is ignored).
fn u16s(data: &[u8]) -> impl Iterator<Item = u16> + '_ {
    data.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// The fields both fingerprints read, GREASE already removed (except where noted).
#[derive(Default)]
struct Fields {
    version: u16,
    ciphers: Vec<u16>,
    /// In wire order, GREASE removed.
    extensions: Vec<u16>,
    groups: Vec<u16>,
    point_formats: Vec<u8>,
    sig_algs: Vec<u16>,
    /// Highest non-GREASE supported_versions value.
    max_version: Option<u16>,
    sni: bool,
    /// First ALPN value.
    alpn: Option<Vec<u8>>,
}

fn parse(record: &[u8]) -> Result<Fields, FingerprintError> {
    let mut r = Reader::new(record);
    let hdr = r.take(RECORD_HEADER_LEN, "record header")?;
    if hdr[0] != CONTENT_HANDSHAKE {
        return Err(FingerprintError::NotClientHello);
    }
    let body = &record[RECORD_HEADER_LEN..];
    let mut r = Reader::new(body);
    if r.u8("handshake type")? != 0x01 {
        return Err(FingerprintError::NotClientHello);
    }
    let hl = r.take(3, "handshake length")?;
    let hs_len = usize::from(hl[0]) << 16 | usize::from(hl[1]) << 8 | usize::from(hl[2]);
    let mut r = Reader::new(r.take(hs_len, "handshake body")?);
    let mut f = Fields {
        version: r.u16("client version")?,
        ..Fields::default()
    };
    r.take(32, "random")?;
    r.vec8("session id")?;
    f.ciphers = u16s(r.vec16("cipher suites")?)
        .filter(|c| !is_grease(*c))
        .collect();
    r.vec8("compression methods")?;
    if r.done() {
        return Ok(f);
    }
    let mut e = Reader::new(r.vec16("extensions")?);
    while !e.done() {
        let ty = e.u16("extension type")?;
        let data = e.vec16("extension data")?;
        if is_grease(ty) {
            continue;
        }
        f.extensions.push(ty);
        let mut d = Reader::new(data);
        match ty {
            EXT_SNI => f.sni = true,
            EXT_GROUPS => {
                f.groups = u16s(d.vec16("supported groups")?)
                    .filter(|g| !is_grease(*g))
                    .collect();
            }
            EXT_POINT_FORMATS => f.point_formats = d.vec8("point formats")?.to_vec(),
            EXT_SIG_ALGS => {
                f.sig_algs = u16s(d.vec16("signature algorithms")?)
                    .filter(|s| !is_grease(*s))
                    .collect();
            }
            EXT_ALPN => {
                let mut list = Reader::new(d.vec16("alpn list")?);
                if !list.done() {
                    f.alpn = Some(list.vec8("alpn protocol")?.to_vec());
                }
            }
            EXT_VERSIONS => {
                f.max_version = u16s(d.vec8("supported versions")?)
                    .filter(|v| !is_grease(*v))
                    .max();
            }
            _ => {}
        }
    }
    Ok(f)
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>, sep: &str) -> String {
    let mut out = String::new();
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        let _ = write!(out, "{v}");
    }
    out
}

/// Runs on every ee handshake: written straight into one buffer, no string per item.
fn hex4(items: &[u16]) -> String {
    let mut out = String::with_capacity(items.len() * 5);
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((v >> shift) & 0xf)] as char);
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// First 12 hex chars of SHA-256 (`000000000000` for an empty input list, per JA4).
fn sha12(input: &str, empty: bool) -> String {
    if empty {
        return "000000000000".to_owned();
    }
    let mut h = hex_lower(&Sha256::digest(input.as_bytes()));
    h.truncate(12);
    h
}

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// First and last character of the first ALPN value; their hex digits when either is not
/// ASCII alphanumeric; `00` without ALPN.
fn alpn_code(alpn: Option<&[u8]>) -> String {
    let Some((&first, &last)) = alpn.and_then(|a| Some((a.first()?, a.last()?))) else {
        return "00".to_owned();
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        format!("{}{}", char::from(first), char::from(last))
    } else {
        let h = format!("{first:02x}{last:02x}");
        let (a, b) = (&h[..1], &h[3..]);
        format!("{a}{b}")
    }
}

/// JA3 and JA4 of one complete ClientHello record (`5 + len` bytes).
pub fn fingerprint(record: &[u8]) -> Result<TlsFingerprint, FingerprintError> {
    let f = parse(record)?;
    let ja3_raw = format!(
        "{},{},{},{},{}",
        f.version,
        join(&f.ciphers, "-"),
        join(&f.extensions, "-"),
        join(&f.groups, "-"),
        join(&f.point_formats, "-"),
    );
    let ja3 = hex_lower(&Md5::digest(ja3_raw.as_bytes()));

    let version = version_code(f.max_version.unwrap_or(f.version));
    let ja4_a = format!(
        "t{version}{}{:02}{:02}{}",
        if f.sni { 'd' } else { 'i' },
        f.ciphers.len().min(99),
        f.extensions.len().min(99),
        alpn_code(f.alpn.as_deref()),
    );
    let mut ciphers = f.ciphers.clone();
    ciphers.sort_unstable();
    let ciphers = hex4(&ciphers);
    let mut exts: Vec<u16> = f
        .extensions
        .iter()
        .copied()
        .filter(|e| *e != EXT_SNI && *e != EXT_ALPN)
        .collect();
    exts.sort_unstable();
    let mut c_input = hex4(&exts);
    if !f.sig_algs.is_empty() {
        c_input.push('_');
        c_input.push_str(&hex4(&f.sig_algs));
    }
    let ja4 = format!(
        "{ja4_a}_{}_{}",
        sha12(&ciphers, f.ciphers.is_empty()),
        sha12(&c_input, exts.is_empty()),
    );
    let ja4_raw = format!("{ja4_a}_{ciphers}_{c_input}");
    Ok(TlsFingerprint {
        ja3,
        ja3_raw,
        ja4,
        ja4_raw,
    })
}

#[cfg(test)]
#[path = "fingerprint_tests.rs"]
mod tests;
