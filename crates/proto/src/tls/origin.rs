//! The real site's side of fake TLS: a browser-like ClientHello to send to the origin and the
//! parse of the server flight it answers with (docs/PROTOCOL.md §4.9).
//!
//! Owns: the probe ClientHello bytes (every random value is a parameter) and the structural
//! read of the origin's records into a [`FlightShape`]. Must not: do I/O, read clocks or
//! decrypt anything — TLS 1.3 hides EncryptedExtensions … Finished in application-data
//! records, so only their lengths are learned.
//!
//! ```text
//!  probe → origin:  16 03 01 LL LL  01 BE24 03 03 <32 random> 20 <32 sid>
//!                   BE16 suites (1.3 + 1.2 ECDHE) 01 00  BE16 ext_len
//!                   SNI | ems | reneg | groups | ec_formats | ticket | ALPN h2,http/1.1 |
//!                   status_request | sig_algs | sct | key_share x25519 | psk_modes |
//!                   supported_versions 1.3,1.2 | padding (record = 517 bytes, like Chrome)
//!  origin → probe:  16 03 03 LL LL  02 BE24 <ver 2> <random 32> n <sid n> <suite 2> <comp 1>
//!                                   BE16 ext_len { type BE16, len BE16, data }…
//!                   [14 03 03 00 01 01]                      CCS (middlebox compatibility)
//!                   17 03 03 LL LL <encrypted>…              TLS 1.3: EE, Certificate, CV, Finished
//!                   16 03 03 LL LL <Certificate …>…          TLS 1.2: readable handshake records
//! ```

use super::{CONTENT_ALERT, CONTENT_APP_DATA, CONTENT_CCS, CONTENT_HANDSHAKE, RECORD_HEADER_LEN};

/// TLS 1.3 version code (supported_versions).
pub const TLS13: u16 = 0x0304;
/// TLS 1.2 version code.
pub const TLS12: u16 = 0x0303;
/// Extension types the emulated ServerHello can carry.
pub const EXT_KEY_SHARE: u16 = 0x0033;
/// supported_versions.
pub const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ALPN: u16 = 0x0010;
/// Size of the probe record on the wire (Chrome pads its ClientHello to 517 bytes).
const PROBE_RECORD_LEN: usize = 517;
/// Records of a flight parsed at most (an origin sending more is cut there).
const MAX_RECORDS: usize = 64;

/// Cipher suites offered by the probe: the TLS 1.3 ones, then ECDHE AEAD and legacy 1.2.
const PROBE_SUITES: [u16; 15] = [
    0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
    0x009d, 0x002f, 0x0035,
];

/// Origin flight parse errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The origin answered with an alert (level, description).
    #[error("origin sent alert {0}/{1}")]
    Alert(u8, u8),
    /// The first record is not a handshake record holding a ServerHello.
    #[error("origin reply is not a ServerHello")]
    NotServerHello,
    /// A field runs past its enclosing structure.
    #[error("ServerHello truncated in {0}")]
    Truncated(&'static str),
    /// Record type outside the TLS content types, or a bad version.
    #[error("unexpected record header {0:02x?}")]
    BadRecord([u8; 3]),
    /// SNI longer than its length fields allow.
    #[error("host name too long")]
    HostTooLong,
}

/// Inputs of the probe; random values come from the caller.
#[derive(Clone, Copy, Debug)]
pub struct ProbeParams<'a> {
    /// SNI host name.
    pub sni: &'a str,
    /// Client random.
    pub random: &'a [u8; 32],
    /// Legacy session id (browsers send 32 random bytes).
    pub session_id: &'a [u8; 32],
    /// X25519 public key.
    pub key_share: &'a [u8; 32],
}

fn put16(out: &mut Vec<u8>, v: usize) -> Result<(), OriginError> {
    let v = u16::try_from(v).map_err(|_| OriginError::HostTooLong)?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

fn ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) -> Result<(), OriginError> {
    out.extend_from_slice(&ty.to_be_bytes());
    put16(out, data.len())?;
    out.extend_from_slice(data);
    Ok(())
}

/// Builds the probe ClientHello record (517 bytes unless the host name is very long).
pub fn build_probe_hello(p: &ProbeParams<'_>) -> Result<Vec<u8>, OriginError> {
    let host = p.sni.as_bytes();
    let mut e = Vec::with_capacity(512);
    let mut sni = Vec::with_capacity(host.len() + 5);
    put16(&mut sni, host.len() + 3)?;
    sni.push(0);
    put16(&mut sni, host.len())?;
    sni.extend_from_slice(host);
    ext(&mut e, 0x0000, &sni)?;
    ext(&mut e, 0x0017, &[])?;
    ext(&mut e, 0xff01, &[0])?;
    ext(&mut e, 0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18])?;
    ext(&mut e, 0x000b, &[1, 0])?;
    ext(&mut e, 0x0023, &[])?;
    ext(&mut e, EXT_ALPN, b"\x00\x0c\x02h2\x08http/1.1")?;
    ext(&mut e, 0x0005, &[1, 0, 0, 0, 0])?;
    let sig_algs: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let mut sa = Vec::with_capacity(18);
    put16(&mut sa, sig_algs.len() * 2)?;
    sig_algs
        .iter()
        .for_each(|s| sa.extend_from_slice(&s.to_be_bytes()));
    ext(&mut e, 0x000d, &sa)?;
    ext(&mut e, 0x0012, &[])?;
    let mut ks = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
    ks.extend_from_slice(p.key_share);
    ext(&mut e, EXT_KEY_SHARE, &ks)?;
    ext(&mut e, 0x002d, &[1, 1])?;
    ext(&mut e, EXT_SUPPORTED_VERSIONS, &[4, 0x03, 0x04, 0x03, 0x03])?;

    let mut body = Vec::with_capacity(PROBE_RECORD_LEN);
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(p.random);
    body.push(32);
    body.extend_from_slice(p.session_id);
    put16(&mut body, PROBE_SUITES.len() * 2)?;
    PROBE_SUITES
        .iter()
        .for_each(|s| body.extend_from_slice(&s.to_be_bytes()));
    body.extend_from_slice(&[1, 0]);
    // Pad the record to Chrome's 517 bytes: 5 record + 4 handshake + body + 2 ext len + ext.
    let natural = RECORD_HEADER_LEN + 4 + body.len() + 2 + e.len();
    if natural + 4 <= PROBE_RECORD_LEN {
        ext(&mut e, 0x0015, &vec![0; PROBE_RECORD_LEN - natural - 4])?;
    }
    put16(&mut body, e.len())?;
    body.extend_from_slice(&e);
    let mut rec = Vec::with_capacity(RECORD_HEADER_LEN + 4 + body.len());
    rec.extend_from_slice(&[CONTENT_HANDSHAKE, 0x03, 0x01]);
    put16(&mut rec, body.len() + 4)?;
    rec.push(0x01);
    let hl = u32::try_from(body.len()).map_err(|_| OriginError::HostTooLong)?;
    rec.extend_from_slice(&hl.to_be_bytes()[1..]);
    rec.extend_from_slice(&body);
    Ok(rec)
}

/// What the origin's ServerHello says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHelloShape {
    /// Legacy version field (03 03 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// Negotiated version: supported_versions if present, else the legacy one.
    pub selected_version: u16,
    /// Cipher suite.
    pub cipher: u16,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    /// key_share group, if any.
    pub key_share_group: Option<u16>,
    /// ALPN selected in the ServerHello (TLS 1.2 only; 1.3 encrypts it).
    pub alpn: Option<String>,
    /// Length of the ServerHello handshake message (without the record header).
    pub hello_len: usize,
}

/// Outer shape of one record after the ServerHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordShape {
    /// Content type.
    pub content_type: u8,
    /// Payload length.
    pub len: usize,
}

/// The whole flight as seen on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlightShape {
    /// The ServerHello.
    pub hello: ServerHelloShape,
    /// ChangeCipherSpec records seen.
    pub ccs_count: usize,
    /// Records after the ServerHello other than CCS, in order.
    pub records: Vec<RecordShape>,
}

impl FlightShape {
    /// Sum of the application-data payloads (TLS 1.3: EE + Certificate + CV + Finished,
    /// plus any ticket that rode along).
    pub fn app_data_total(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.content_type == CONTENT_APP_DATA)
            .map(|r| r.len)
            .sum()
    }
}

struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], OriginError> {
        let end = self.at.checked_add(n).ok_or(OriginError::Truncated(what))?;
        let s = self
            .b
            .get(self.at..end)
            .ok_or(OriginError::Truncated(what))?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, OriginError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, OriginError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn rest(&self) -> bool {
        self.at < self.b.len()
    }
}

/// Parses a ServerHello handshake message (type byte first).
pub fn parse_server_hello(msg: &[u8]) -> Result<ServerHelloShape, OriginError> {
    let mut c = Cur { b: msg, at: 0 };
    if c.u8("type")? != 0x02 {
        return Err(OriginError::NotServerHello);
    }
    let l = c.take(3, "length")?;
    let len = usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2]);
    let body = c.take(len, "body")?;
    let mut c = Cur { b: body, at: 0 };
    let legacy_version = c.u16("version")?;
    c.take(32, "random")?;
    let sid = usize::from(c.u8("session id")?);
    c.take(sid, "session id")?;
    let cipher = c.u16("cipher")?;
    c.u8("compression")?;
    let mut shape = ServerHelloShape {
        legacy_version,
        selected_version: legacy_version,
        cipher,
        hello_len: 4 + len,
        ..ServerHelloShape::default()
    };
    if !c.rest() {
        return Ok(shape);
    }
    let el = usize::from(c.u16("extensions")?);
    let mut e = Cur {
        b: c.take(el, "extensions")?,
        at: 0,
    };
    while e.rest() {
        let ty = e.u16("extension type")?;
        let dl = usize::from(e.u16("extension length")?);
        let data = e.take(dl, "extension data")?;
        shape.extensions.push(ty);
        let mut d = Cur { b: data, at: 0 };
        match ty {
            EXT_SUPPORTED_VERSIONS => shape.selected_version = d.u16("supported_versions")?,
            EXT_KEY_SHARE => shape.key_share_group = Some(d.u16("key_share")?),
            EXT_ALPN => {
                d.u16("alpn list")?;
                let n = usize::from(d.u8("alpn")?);
                let p = d.take(n, "alpn")?;
                shape.alpn = Some(String::from_utf8_lossy(p).into_owned());
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// Progress of [`FlightParser::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlightProgress {
    /// Still inside the ServerHello.
    NeedHello,
    /// ServerHello parsed; `records` records seen after it.
    Records(usize),
}

/// Incremental parse of the origin's reply: feed bytes as they arrive.
#[derive(Debug, Default)]
pub struct FlightParser {
    buf: Vec<u8>,
    hello_msg: Vec<u8>,
    shape: Option<FlightShape>,
}

impl FlightParser {
    /// Adds bytes; complete records are consumed.
    pub fn push(&mut self, data: &[u8]) -> Result<FlightProgress, OriginError> {
        self.buf.extend_from_slice(data);
        while let Some(h) = self.buf.get(..RECORD_HEADER_LEN) {
            let (ty, len) = (h[0], usize::from(u16::from_be_bytes([h[3], h[4]])));
            if h[1] != 0x03 || !matches!(ty, CONTENT_CCS..=CONTENT_APP_DATA) {
                return Err(OriginError::BadRecord([h[0], h[1], h[2]]));
            }
            let Some(payload) = self.buf.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
                break;
            };
            if ty == CONTENT_ALERT {
                let lvl = payload.first().copied().unwrap_or(0);
                let desc = payload.get(1).copied().unwrap_or(0);
                return Err(OriginError::Alert(lvl, desc));
            }
            match self.shape.as_mut() {
                None if ty == CONTENT_HANDSHAKE => {
                    // The ServerHello may span records; parse once its length is in.
                    self.hello_msg.extend_from_slice(payload);
                    if let Some(l) = self.hello_msg.get(1..4) {
                        let need = 4
                            + (usize::from(l[0]) << 16
                                | usize::from(l[1]) << 8
                                | usize::from(l[2]));
                        if self.hello_msg.len() >= need {
                            let hello = parse_server_hello(&self.hello_msg[..need])?;
                            let mut shape = FlightShape {
                                hello,
                                ..FlightShape::default()
                            };
                            // TLS 1.2 servers often pack Certificate … ServerHelloDone
                            // into the ServerHello's record: count that part too.
                            let rest = self.hello_msg.len() - need;
                            if rest > 0 {
                                shape.records.push(RecordShape {
                                    content_type: CONTENT_HANDSHAKE,
                                    len: rest,
                                });
                            }
                            self.shape = Some(shape);
                        }
                    }
                }
                None => return Err(OriginError::NotServerHello),
                Some(s) if ty == CONTENT_CCS => s.ccs_count += 1,
                Some(s) => {
                    if s.records.len() < MAX_RECORDS {
                        s.records.push(RecordShape {
                            content_type: ty,
                            len,
                        });
                    }
                }
            }
            self.buf.drain(..RECORD_HEADER_LEN + len);
        }
        Ok(match &self.shape {
            None => FlightProgress::NeedHello,
            Some(s) => FlightProgress::Records(s.records.len()),
        })
    }

    /// The shape parsed so far (`None` before the ServerHello is complete).
    pub fn shape(&self) -> Option<&FlightShape> {
        self.shape.as_ref()
    }
}

#[cfg(test)]
#[path = "origin_tests.rs"]
mod tests;
