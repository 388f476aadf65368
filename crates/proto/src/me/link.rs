//! One ME link's byte stream, per direction: sequence numbers, checksum,
//! padding and the AES-256-CBC chain (docs/PROTOCOL.md §7.2).
//!
//! Owns: turning payloads into wire bytes ([`RpcSender`]) and wire bytes into
//! payloads ([`RpcReceiver`]), clear before the nonce exchange and encrypted
//! after it. Must not: interpret payloads or do I/O.
//!
//! ```text
//!  clear:      [packet]                         (seq −2 only)
//!  encrypted:  CBC( packet | 04000000 × k )     k so the write is a multiple of 16;
//!              the chain continues from the last ciphertext block of the previous write
//! ```

use super::crc::Checksum;
use super::kdf::CbcStream;
use super::rpc::{encode_packet, pad_to_block, RpcError, RpcPacketDecoder};

/// Sending half: numbers, checksums, pads and encrypts each payload.
#[derive(Debug)]
pub struct RpcSender {
    seq: i32,
    checksum: Checksum,
    cbc: Option<CbcStream>,
}

impl RpcSender {
    /// Starts at `seq = −2` with CRC-32, unencrypted.
    pub fn new() -> Self {
        Self {
            seq: -2,
            checksum: Checksum::Crc32,
            cbc: None,
        }
    }

    /// Turns AES-256-CBC on for everything sent from now on.
    pub fn start_encryption(&mut self, key: &[u8; 32], iv: &[u8; 16]) {
        self.cbc = Some(CbcStream::encryptor(key, iv));
    }

    /// Switches the checksum (after the handshake settled CRC-32C).
    pub fn set_checksum(&mut self, c: Checksum) {
        self.checksum = c;
    }

    /// The sequence number the next packet gets.
    pub fn next_seq(&self) -> i32 {
        self.seq
    }

    /// Appends one packet carrying `payload` to `out`.
    pub fn send(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.send_tampered(payload, out, |_| {});
    }

    /// As [`Self::send`], but `tamper` may rewrite the plaintext packet
    /// (length, seq, payload, checksum) before padding and encryption — for
    /// test peers that must produce well-encrypted but invalid packets.
    pub fn send_tampered(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        tamper: impl FnOnce(&mut [u8]),
    ) {
        let start = out.len();
        encode_packet(self.seq, payload, self.checksum, out);
        self.seq = self.seq.wrapping_add(1);
        tamper(&mut out[start..]);
        if let Some(cbc) = &mut self.cbc {
            // Pad this write alone: the tail from `start` must be block-aligned
            // for the chain; a caller's earlier bytes are not ours to pad.
            let mut tail = out.split_off(start);
            pad_to_block(&mut tail);
            // `tail` is a multiple of 16 by construction, so this cannot fail.
            let _ = cbc.apply_in_place(&mut tail);
            out.extend_from_slice(&tail);
        }
    }
}

impl Default for RpcSender {
    fn default() -> Self {
        Self::new()
    }
}

/// Receiving half: buffers wire bytes, decrypts whole blocks, cuts packets.
#[derive(Debug)]
pub struct RpcReceiver {
    decoder: RpcPacketDecoder,
    cbc: Option<CbcStream>,
    /// Wire bytes not yet decrypted (clear mode: not yet decoded).
    raw: Vec<u8>,
    /// Decrypted bytes not yet decoded (encrypted mode only).
    plain: Vec<u8>,
    /// Bytes of the active buffer (`plain` when encrypted, else `raw`) already returned: a
    /// cursor rather than a drain per packet, so a read holding many small packets costs
    /// linear, not quadratic, work. Compacted when new bytes arrive.
    start: usize,
}

impl RpcReceiver {
    /// Expects the clear nonce packet first.
    pub fn new() -> Self {
        Self {
            decoder: RpcPacketDecoder::new(),
            cbc: None,
            raw: Vec::new(),
            plain: Vec::new(),
            start: 0,
        }
    }

    fn active(&mut self) -> &mut Vec<u8> {
        if self.cbc.is_some() {
            &mut self.plain
        } else {
            &mut self.raw
        }
    }

    /// Drops the bytes before the cursor.
    fn compact(&mut self) {
        let start = std::mem::take(&mut self.start);
        if start > 0 {
            self.active().drain(..start);
        }
    }

    /// Turns AES-256-CBC on; bytes already fed after the last decoded packet
    /// are ciphertext and get decrypted.
    pub fn start_decryption(&mut self, key: &[u8; 32], iv: &[u8; 16]) {
        // The cursor indexes `raw` until now.
        self.compact();
        self.cbc = Some(CbcStream::decryptor(key, iv));
        self.decrypt_ready();
    }

    /// Switches the checksum (after the handshake settled CRC-32C).
    pub fn set_checksum(&mut self, c: Checksum) {
        self.decoder.set_checksum(c);
    }

    /// Adds wire bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.raw.extend_from_slice(bytes);
        self.decrypt_ready();
    }

    /// Bytes held but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.raw.len() + self.plain.len() - self.start
    }

    fn decrypt_ready(&mut self) {
        let Some(cbc) = &mut self.cbc else { return };
        let whole = self.raw.len() - self.raw.len() % 16;
        if whole == 0 {
            return;
        }
        // `whole` is a multiple of 16, so this cannot fail. Decrypted in place, then moved:
        // no allocation per read.
        let _ = cbc.apply_in_place(&mut self.raw[..whole]);
        self.plain.extend_from_slice(&self.raw[..whole]);
        self.raw.drain(..whole);
    }

    /// The next packet's payload; `Ok(None)` = need more bytes. After an
    /// error the link is unusable (the caller closes it).
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, RpcError> {
        let mut pos = self.start;
        let buf = if self.cbc.is_some() {
            &mut self.plain
        } else {
            &mut self.raw
        };
        // Skip padding words here rather than in the decoder, so a peer streaming nothing
        // but padding costs linear work.
        let pad = buf[pos..]
            .chunks_exact(4)
            .take_while(|w| *w == [4, 0, 0, 0])
            .count();
        pos += pad * 4;
        let result = match self.decoder.decode(&buf[pos..])? {
            Some(p) => {
                let payload = buf[pos + p.payload.start..pos + p.payload.end].to_vec();
                pos += p.consumed;
                Some(payload)
            }
            // Incomplete: at most one packet (≤ MAX_PACKET_LEN) is pending,
            // because the decoder rejects larger lengths as soon as it sees them.
            None => None,
        };
        if pos == buf.len() {
            buf.clear();
            pos = 0;
        }
        self.start = pos;
        Ok(result)
    }
}

impl Default for RpcReceiver {
    fn default() -> Self {
        Self::new()
    }
}
