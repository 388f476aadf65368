//! Obfuscated2 primitives (docs/PROTOCOL.md §2, §3, §6.3), written independently of the `proto`
//! crate so tests built on them can catch its bugs. Both ends are here: the sender of a 64-byte
//! init (test client, or a proxy's link to a DC) and its receiver (a test DC, or a mini proxy in
//! unit tests).

use aes::cipher::{KeyIvInit, StreamCipher};
use sha2::{Digest, Sha256};

/// AES-256-CTR with a 128-bit big-endian counter (OpenSSL `aes-256-ctr` semantics, §2.3).
pub type Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Length of the obfuscated2 init.
pub const INIT_LEN: usize = 64;

/// The three protocol tags of §2.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `ef ef ef ef`, §3.1.
    Abridged,
    /// `ee ee ee ee`, §3.2.
    Intermediate,
    /// `dd dd dd dd`, §3.3.
    Padded,
}

impl Tag {
    /// Wire bytes of the tag.
    pub fn bytes(self) -> [u8; 4] {
        match self {
            Self::Abridged => [0xef; 4],
            Self::Intermediate => [0xee; 4],
            Self::Padded => [0xdd; 4],
        }
    }

    /// Parses the 4 plaintext tag bytes; `None` for anything else.
    pub fn from_bytes(b: [u8; 4]) -> Option<Self> {
        match b {
            [0xef, 0xef, 0xef, 0xef] => Some(Self::Abridged),
            [0xee, 0xee, 0xee, 0xee] => Some(Self::Intermediate),
            [0xdd, 0xdd, 0xdd, 0xdd] => Some(Self::Padded),
            _ => None,
        }
    }
}

/// Keys and IVs of one obfuscated2 link, named from the init *sender's* point of view.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Sender → receiver key (the receiver's `dec_key`).
    pub fwd_key: [u8; 32],
    /// Sender → receiver IV.
    pub fwd_iv: [u8; 16],
    /// Receiver → sender key (the receiver's `enc_key`).
    pub back_key: [u8; 32],
    /// Receiver → sender IV.
    pub back_iv: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn key_from(material: &[u8], secret: Option<&[u8; 16]>) -> [u8; 32] {
    match secret {
        Some(s) => {
            let mut h = Sha256::new();
            h.update(material);
            h.update(s);
            h.finalize().into()
        }
        None => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&material[..32]);
            k
        }
    }
}

/// Derives both directions' keys from the 64 init bytes (only `8..56` matter; they travel in
/// clear). `secret = None` is the proxy ↔ DC link (§6.3), where the raw bytes are the key.
pub fn derive_keys(init: &[u8; INIT_LEN], secret: Option<&[u8; 16]>) -> Keys {
    let mut fwd_iv = [0u8; 16];
    fwd_iv.copy_from_slice(&init[40..56]);
    let mut rev = [0u8; 48];
    rev.copy_from_slice(&init[8..56]);
    rev.reverse();
    let mut back_iv = [0u8; 16];
    back_iv.copy_from_slice(&rev[32..48]);
    Keys {
        fwd_key: key_from(&init[8..40], secret),
        fwd_iv,
        back_key: key_from(&rev[..32], secret),
        back_iv,
    }
}

/// A fresh AES-256-CTR stream.
pub fn ctr(key: &[u8; 32], iv: &[u8; 16]) -> Ctr {
    Ctr::new(key.into(), iv.into())
}

/// True if `init` obeys the forbidden-prefix rules of §2.2.
pub fn is_acceptable_init(init: &[u8; INIT_LEN]) -> bool {
    const BAD4: [[u8; 4]; 7] = [
        *b"HEAD",
        *b"POST",
        *b"GET ",
        *b"OPTI",
        [0xee; 4],
        [0xdd; 4],
        [0x16, 0x03, 0x01, 0x02],
    ];
    init[0] != 0xef && !BAD4.iter().any(|b| init[..4] == b[..]) && init[4..8] != [0, 0, 0, 0]
}

/// The sender side of an obfuscated2 link after its init was built.
pub struct SenderInit {
    /// The 64 bytes to put on the wire.
    pub wire: [u8; INIT_LEN],
    /// Outgoing cipher, already advanced past the 64 init bytes.
    pub enc: Ctr,
    /// Incoming cipher, at offset 0.
    pub dec: Ctr,
    /// Keys, for tests that check them.
    pub keys: Keys,
}

/// Builds the wire init from a chosen plaintext (tag and DC already placed at `56..62`).
pub fn seal_init(plain: &[u8; INIT_LEN], secret: Option<&[u8; 16]>) -> SenderInit {
    let keys = derive_keys(plain, secret);
    let mut enc = ctr(&keys.fwd_key, &keys.fwd_iv);
    let dec = ctr(&keys.back_key, &keys.back_iv);
    let mut encrypted = *plain;
    enc.apply_keystream(&mut encrypted);
    let mut wire = *plain;
    wire[56..64].copy_from_slice(&encrypted[56..64]);
    SenderInit {
        wire,
        enc,
        dec,
        keys,
    }
}

/// Draws a random acceptable plaintext init carrying `tag` and `dc`, and seals it.
pub fn new_init(tag: Tag, dc: i16, secret: Option<&[u8; 16]>) -> SenderInit {
    let mut plain = [0u8; INIT_LEN];
    loop {
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut plain);
        plain[56..60].copy_from_slice(&tag.bytes());
        plain[60..62].copy_from_slice(&dc.to_le_bytes());
        if is_acceptable_init(&plain) {
            return seal_init(&plain, secret);
        }
    }
}

/// What a receiver learned from a 64-byte init.
pub struct ReceivedInit {
    /// Raw tag bytes from `plain[56..60]`.
    pub raw_tag: [u8; 4],
    /// Parsed tag, `None` when the bytes are not one of the three tags (wrong secret/garbage).
    pub tag: Option<Tag>,
    /// DC index, `i16_le(plain[60..62])`.
    pub dc: i16,
    /// Decryptor positioned at offset 64 (the next incoming byte).
    pub dec: Ctr,
    /// Encryptor for the answer direction, at offset 0.
    pub enc: Ctr,
}

/// Receiver side of §2.5 (with a secret) or §6.3 seen from the DC (without one).
pub fn open_init(wire: &[u8; INIT_LEN], secret: Option<&[u8; 16]>) -> ReceivedInit {
    let keys = derive_keys(wire, secret);
    let mut dec = ctr(&keys.fwd_key, &keys.fwd_iv);
    let enc = ctr(&keys.back_key, &keys.back_iv);
    let mut plain = *wire;
    dec.apply_keystream(&mut plain);
    let raw_tag = [plain[56], plain[57], plain[58], plain[59]];
    ReceivedInit {
        raw_tag,
        tag: Tag::from_bytes(raw_tag),
        dc: i16::from_le_bytes([plain[60], plain[61]]),
        dec,
        enc,
    }
}

/// Frames one MTProto transport packet for `tag` (§3). `payload.len()` must be a multiple of 4
/// for the abridged framing; the padded framing appends 0..=3 random bytes.
pub fn frame(tag: Tag, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    match tag {
        Tag::Abridged => {
            let w = payload.len() / 4;
            if w < 0x7f {
                out.push(w as u8);
            } else {
                out.push(0x7f);
                out.extend_from_slice(&(w as u32).to_le_bytes()[..3]);
            }
            out.extend_from_slice(payload);
        }
        Tag::Intermediate => {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        }
        Tag::Padded => {
            let pad = rand::random::<usize>() % 4;
            out.extend_from_slice(&((payload.len() + pad) as u32).to_le_bytes());
            out.extend_from_slice(payload);
            let mut p = [0u8; 3];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut p);
            out.extend_from_slice(&p[..pad]);
        }
    }
    out
}

/// Result of trying to cut one packet off the front of a plaintext stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Deframed {
    /// Need more bytes.
    Incomplete,
    /// A packet: `consumed` bytes to drop from the buffer, and the payload (padding removed).
    Packet {
        /// Bytes consumed from the buffer.
        consumed: usize,
        /// Payload bytes.
        payload: Vec<u8>,
        /// Quick-ack bit was set on the header.
        quick_ack: bool,
    },
    /// A malformed header (length out of range, padded total below 4).
    Invalid(String),
}

/// Largest payload accepted by [`deframe`] (16 MiB, §3.4).
pub const MAX_FRAME: usize = 16 << 20;

/// Parses one packet from the front of `buf` (§3.1–§3.3).
pub fn deframe(tag: Tag, buf: &[u8]) -> Deframed {
    let (header, len, quick_ack) = match tag {
        Tag::Abridged => {
            let Some(&first) = buf.first() else {
                return Deframed::Incomplete;
            };
            let qa = first & 0x80 != 0;
            if first & 0x7f == 0x7f {
                if buf.len() < 4 {
                    return Deframed::Incomplete;
                }
                let w = u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as usize;
                (4, w * 4, qa)
            } else {
                (1, usize::from(first & 0x7f) * 4, qa)
            }
        }
        Tag::Intermediate | Tag::Padded => {
            if buf.len() < 4 {
                return Deframed::Incomplete;
            }
            let raw = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            (4, (raw & 0x7fff_ffff) as usize, raw & 0x8000_0000 != 0)
        }
    };
    if len > MAX_FRAME {
        return Deframed::Invalid(format!("frame length {len} above {MAX_FRAME}"));
    }
    if tag == Tag::Padded && len < 4 {
        return Deframed::Invalid(format!("padded frame length {len} below 4"));
    }
    if buf.len() < header + len {
        return Deframed::Incomplete;
    }
    let keep = if tag == Tag::Padded {
        len - len % 4
    } else {
        len
    };
    Deframed::Packet {
        consumed: header + len,
        payload: buf[header..header + keep].to_vec(),
        quick_ack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    const S: [u8; 16] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];

    fn o1_plain() -> [u8; 64] {
        let mut p = [0u8; 64];
        for (i, b) in p.iter_mut().enumerate() {
            *b = i as u8;
        }
        p[56..60].copy_from_slice(&[0xdd; 4]);
        p[60..62].copy_from_slice(&[0x02, 0x00]);
        p
    }

    #[test]
    fn vector_o1_sender_and_receiver() {
        let mut sent = seal_init(&o1_plain(), Some(&S));
        assert_eq!(
            sent.wire.to_vec(),
            h(
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
               202122232425262728292a2b2c2d2e2f30313233343536378f3d40553f8b44b1"
            )
        );
        assert_eq!(
            sent.keys.fwd_key.to_vec(),
            h("28ddb6447216c5f55106259f1c7ba64bfe69909197bc20253466cfa42715f29c")
        );
        assert_eq!(
            sent.keys.fwd_iv.to_vec(),
            h("28292a2b2c2d2e2f3031323334353637")
        );
        assert_eq!(
            sent.keys.back_key.to_vec(),
            h("c95a3c8c663a4e2daff3469561805825e7be010c4fcb691415b93145b640c9f3")
        );
        assert_eq!(
            sent.keys.back_iv.to_vec(),
            h("17161514131211100f0e0d0c0b0a0908")
        );
        let mut next = [0x01, 0x00, 0x00, 0x00];
        sent.enc.apply_keystream(&mut next);
        assert_eq!(next.to_vec(), h("986c5102"));

        let mut got = open_init(&sent.wire, Some(&S));
        assert_eq!(got.tag, Some(Tag::Padded));
        assert_eq!(got.dc, 2);
        let mut wire_next = next;
        got.dec.apply_keystream(&mut wire_next);
        assert_eq!(wire_next, [1, 0, 0, 0]);
        let mut ks = [0u8; 8];
        got.enc.apply_keystream(&mut ks);
        assert_eq!(ks.to_vec(), h("08e1eddf0a73ec8c"));
        // The client's decryptor matches the proxy's encryptor.
        let mut back = ks;
        sent.dec.apply_keystream(&mut back);
        assert_eq!(back, [0u8; 8]);

        // A wrong secret does not yield a valid tag.
        let wrong = open_init(&sent.wire, Some(&[0x42; 16]));
        assert_eq!(wrong.tag, None);
    }

    #[test]
    fn vector_o2_proxy_to_dc_without_secret() {
        let mut p = [0u8; 64];
        for (i, b) in p.iter_mut().enumerate() {
            *b = ((3 * i + 1) % 256) as u8;
        }
        p[56..60].copy_from_slice(&[0xef; 4]);
        p[60..62].copy_from_slice(&(-4i16).to_le_bytes());
        let sent = seal_init(&p, None);
        assert_eq!(sent.wire[..56], p[..56]);
        assert_eq!(sent.wire[56..].to_vec(), h("f08596b53ac06e9d"));
        assert_eq!(
            sent.keys.back_key.to_vec(),
            h("a6a3a09d9a9794918e8b8885827f7c797673706d6a6764615e5b5855524f4c49")
        );
        assert_eq!(
            sent.keys.back_iv.to_vec(),
            h("4643403d3a3734312e2b2825221f1c19")
        );
        let got = open_init(&sent.wire, None);
        assert_eq!(got.tag, Some(Tag::Abridged));
        assert_eq!(got.dc, -4);
    }

    #[test]
    fn generated_inits_obey_prefix_rules_and_round_trip() {
        for dc in [-5i16, 1, 2, 203] {
            let s = new_init(Tag::Intermediate, dc, Some(&S));
            assert!(is_acceptable_init(&s.wire));
            let r = open_init(&s.wire, Some(&S));
            assert_eq!((r.tag, r.dc), (Some(Tag::Intermediate), dc));
        }
        let mut bad = [1u8; 64];
        bad[..4].copy_from_slice(b"GET ");
        assert!(!is_acceptable_init(&bad));
        bad[..4].copy_from_slice(&[1, 1, 1, 1]);
        bad[4..8].copy_from_slice(&[0; 4]);
        assert!(!is_acceptable_init(&bad));
    }

    #[test]
    fn framing_self_checks() {
        let p8 = [7u8; 8];
        assert_eq!(frame(Tag::Abridged, &p8)[0], 0x02);
        let big = vec![0u8; 508];
        assert_eq!(frame(Tag::Abridged, &big)[..4], [0x7f, 0x7f, 0, 0]);
        assert_eq!(frame(Tag::Intermediate, &p8)[..4], [8, 0, 0, 0]);
        for _ in 0..32 {
            let f = frame(Tag::Padded, &p8);
            let total = u32::from_le_bytes([f[0], f[1], f[2], f[3]]) as usize;
            assert!((8..=11).contains(&total));
            assert_eq!(f.len(), 4 + total);
        }
        for tag in [Tag::Abridged, Tag::Intermediate, Tag::Padded] {
            for len in [4usize, 8, 500, 508, 4096] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut f = frame(tag, &payload);
                assert_eq!(deframe(tag, &f[..f.len() - 1]), Deframed::Incomplete);
                f.extend_from_slice(&[9, 9]);
                match deframe(tag, &f) {
                    Deframed::Packet {
                        consumed,
                        payload: got,
                        ..
                    } => {
                        assert_eq!(consumed, f.len() - 2);
                        assert_eq!(got, payload);
                    }
                    other => panic!("{tag:?} {len}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            deframe(Tag::Abridged, &[0x82, 1, 2, 3, 4, 5, 6, 7, 8]),
            Deframed::Packet {
                quick_ack: true,
                ..
            }
        ));
        assert!(matches!(
            deframe(Tag::Padded, &[2, 0, 0, 0, 1, 2]),
            Deframed::Invalid(_)
        ));
    }
}
