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
use super::rpc::{encode_packet, pad_tail_to_block, RpcError, RpcPacketDecoder};

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
            pad_tail_to_block(out, start);
            // The tail is a multiple of 16 by construction, so this cannot fail.
            let _ = cbc.apply_in_place(&mut out[start..]);
        }
    }
}

impl Default for RpcSender {
    fn default() -> Self {
        Self::new()
    }
}

/// Receiving half: buffers wire bytes, decrypts whole blocks, cuts packets.
///
/// ```text
///  buf: [ returned | decrypted, not yet returned | ciphertext (< 16 bytes or not yet fed) ]
///       0        start                          plain_end                             len
/// ```
/// One buffer, decrypted in place: no copy between a ciphertext and a plaintext buffer, and a
/// cursor instead of a drain per packet (a read of many small packets stays linear).
#[derive(Debug)]
pub struct RpcReceiver {
    decoder: RpcPacketDecoder,
    cbc: Option<CbcStream>,
    buf: Vec<u8>,
    /// Bytes before this were returned as packets.
    start: usize,
    /// Bytes before this are plaintext (all of them in clear mode).
    plain_end: usize,
}

impl RpcReceiver {
    /// Expects the clear nonce packet first.
    pub fn new() -> Self {
        Self {
            decoder: RpcPacketDecoder::new(),
            cbc: None,
            buf: Vec::new(),
            start: 0,
            plain_end: 0,
        }
    }

    /// Turns AES-256-CBC on; bytes already fed after the last decoded packet
    /// are ciphertext and get decrypted.
    pub fn start_decryption(&mut self, key: &[u8; 32], iv: &[u8; 16]) {
        self.cbc = Some(CbcStream::decryptor(key, iv));
        // Everything not yet returned was received after the clear packets: ciphertext.
        self.plain_end = self.start;
        self.decrypt_ready();
    }

    /// Switches the checksum (after the handshake settled CRC-32C).
    pub fn set_checksum(&mut self, c: Checksum) {
        self.decoder.set_checksum(c);
    }

    /// Adds wire bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.plain_end -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.decrypt_ready();
    }

    /// Bytes held but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn decrypt_ready(&mut self) {
        let Some(cbc) = &mut self.cbc else {
            self.plain_end = self.buf.len();
            return;
        };
        let pending = self.buf.len() - self.plain_end;
        let whole = pending - pending % 16;
        if whole == 0 {
            return;
        }
        let end = self.plain_end + whole;
        // `whole` is a multiple of 16, so this cannot fail.
        let _ = cbc.apply_in_place(&mut self.buf[self.plain_end..end]);
        self.plain_end = end;
    }

    /// The next packet's payload; `Ok(None)` = need more bytes. After an
    /// error the link is unusable (the caller closes it).
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, RpcError> {
        let plain = &self.buf[self.start..self.plain_end];
        // Skip padding words here rather than in the decoder, so a peer streaming nothing
        // but padding costs linear work.
        let pad = plain
            .chunks_exact(4)
            .take_while(|w| *w == [4, 0, 0, 0])
            .count();
        let plain = &plain[pad * 4..];
        self.start += pad * 4;
        let result = match self.decoder.decode(plain)? {
            Some(p) => {
                let payload = plain[p.payload].to_vec();
                self.start += p.consumed;
                Some(payload)
            }
            // Incomplete: at most one packet (≤ MAX_PACKET_LEN) is pending,
            // because the decoder rejects larger lengths as soon as it sees them.
            None => None,
        };
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.plain_end = 0;
        }
        Ok(result)
    }
}

impl Default for RpcReceiver {
    fn default() -> Self {
        Self::new()
    }
}
