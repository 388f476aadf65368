//! Client framings inside the decrypted obfuscated2 stream (docs/PROTOCOL.md §3).
//!
//! Owns: sans-IO encode and incremental decode of abridged, intermediate and
//! padded-intermediate frames, quick-ack bits and quick-ack answers, and the
//! §3.4 limits. Must not: decrypt (the caller applies AES-CTR first) or buffer
//! bytes itself: [`FrameDecoder::decode`] looks at the caller's buffer and says
//! how many bytes one frame consumes.
//!
//! ```text
//!  abridged (tag ef): W = len/4 (len % 4 == 0)
//!    W < 0x7f :  [q|W : 1 byte] payload           q = 0x80 quick-ack request
//!    otherwise:  [q|7f] [LE24 W] payload          long form with W < 0x7f is invalid
//!    answer (server → client): 4 raw bytes, token big endian (bit 7 of byte 0 set)
//!
//!  intermediate (tag ee):   [LE32 len | q<<31] payload
//!  padded (tag dd):         [LE32 (len+pad) | q<<31] payload padding(pad)
//!    receiver keeps total - total % 4 bytes; total 1..3 is invalid
//!    answer (server → client): 4 raw bytes, token little endian with bit 31 set
//! ```

use std::ops::Range;

use crate::obfs2::ProtoTag;

/// Default maximum frame payload (telemt `general.max_client_frame`, 16 MiB).
pub const MAX_FRAME_PAYLOAD: usize = 16 * 1024 * 1024;
/// Default number of consecutive empty frames tolerated before closing.
pub const MAX_EMPTY_FRAMES_IN_A_ROW: u32 = 16;

/// The three client framings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// `0xefefefef`.
    Abridged,
    /// `0xeeeeeeee`.
    Intermediate,
    /// `0xdddddddd`.
    Padded,
}

impl From<ProtoTag> for Framing {
    fn from(t: ProtoTag) -> Self {
        match t {
            ProtoTag::Abridged => Self::Abridged,
            ProtoTag::Intermediate => Self::Intermediate,
            ProtoTag::Padded => Self::Padded,
        }
    }
}

/// Which side produced the stream being decoded (quick-ack bits differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamSide {
    /// Client → proxy: a set top bit is a quick-ack *request* on a frame.
    FromClient,
    /// Proxy → client: a set top bit is a 4-byte quick-ack *answer*.
    FromServer,
}

/// Framing violations (each variant doubles as a bad-connection label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Abridged long form encoding fewer than 0x7f words.
    #[error("abridged long length form encodes only {0} words")]
    AbridgedLongFormTooShort(u32),
    /// Declared length above the limit.
    #[error("frame length {len} exceeds the limit {max}")]
    TooLarge {
        /// Declared length in bytes.
        len: usize,
        /// Limit in bytes.
        max: usize,
    },
    /// Intermediate/padded frame of 1..3 bytes.
    #[error("frame length {0} is below the 4-byte minimum")]
    TooShort(usize),
    /// Intermediate frame (or abridged payload to encode) not a multiple of 4.
    #[error("frame length {0} is not a multiple of 4")]
    Unaligned(usize),
    /// Too many zero-length frames in a row.
    #[error("{0} empty frames in a row")]
    TooManyEmptyFrames(u32),
    /// Padding requested for a framing that has none.
    #[error("padding is only valid in padded intermediate framing")]
    PaddingNotAllowed,
}

impl FrameError {
    /// Stable label for bad-connection statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::AbridgedLongFormTooShort(_) => "frame_abridged_long_form_too_short",
            Self::TooLarge { .. } => "frame_too_large",
            Self::TooShort(_) => "frame_too_short",
            Self::Unaligned(_) => "frame_unaligned",
            Self::TooManyEmptyFrames(_) => "frame_too_many_empty",
            Self::PaddingNotAllowed => "frame_padding_not_allowed",
        }
    }
}

/// One decoded frame; ranges index the buffer passed to `decode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Payload bytes (padding excluded; may be empty).
    pub payload: Range<usize>,
    /// Quick-ack requested (client → proxy only).
    pub quick_ack: bool,
    /// Bytes of the buffer this frame occupies (header + payload + padding).
    pub consumed: usize,
}

/// Result of one successful decode step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A frame.
    Frame(Frame),
    /// A quick-ack answer (proxy → client only); `token` as the 32-bit value
    /// the ME sent, `consumed` is always 4.
    QuickAck {
        /// The confirm token.
        token: u32,
        /// Bytes consumed (4).
        consumed: usize,
    },
}

/// Incremental frame decoder for one direction of one connection.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    framing: Framing,
    side: StreamSide,
    max_payload: usize,
    max_empty_run: u32,
    empty_run: u32,
}

impl FrameDecoder {
    /// A decoder with the default limits of §3.4.
    pub fn new(framing: Framing, side: StreamSide) -> Self {
        Self {
            framing,
            side,
            max_payload: MAX_FRAME_PAYLOAD,
            max_empty_run: MAX_EMPTY_FRAMES_IN_A_ROW,
            empty_run: 0,
        }
    }

    /// Overrides the maximum payload (telemt `general.max_client_frame`).
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    /// Overrides the tolerated run of empty frames.
    pub fn with_max_empty_run(mut self, n: u32) -> Self {
        self.max_empty_run = n;
        self
    }

    /// The framing decoded.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` = need more bytes.
    /// Call again with the remaining bytes after consuming `consumed`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<Decoded>, FrameError> {
        let (header, len, payload_len, quick_ack) = match self.framing {
            Framing::Abridged => {
                let Some(&b0) = buf.first() else {
                    return Ok(None);
                };
                if b0 & 0x80 != 0 && self.side == StreamSide::FromServer {
                    return Ok(quick_ack_from(buf, u32::from_be_bytes));
                }
                let q = b0 & 0x80 != 0;
                let w = b0 & 0x7f;
                if w == 0x7f {
                    let Some(b) = buf.get(1..4) else {
                        return Ok(None);
                    };
                    let words = u32::from_le_bytes([b[0], b[1], b[2], 0]);
                    if words < 0x7f {
                        return Err(FrameError::AbridgedLongFormTooShort(words));
                    }
                    let len = words as usize * 4;
                    (4, len, len, q)
                } else {
                    let len = usize::from(w) * 4;
                    (1, len, len, q)
                }
            }
            Framing::Intermediate | Framing::Padded => {
                let Some(b) = buf.get(..4) else {
                    return Ok(None);
                };
                let raw = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let q = raw & 0x8000_0000 != 0;
                if q && self.side == StreamSide::FromServer {
                    return Ok(quick_ack_from(buf, u32::from_le_bytes));
                }
                let len = (raw & 0x7fff_ffff) as usize;
                if len > self.max_payload {
                    return Err(FrameError::TooLarge {
                        len,
                        max: self.max_payload,
                    });
                }
                if (1..4).contains(&len) {
                    return Err(FrameError::TooShort(len));
                }
                let payload_len = match self.framing {
                    Framing::Padded => len - len % 4,
                    _ if len % 4 != 0 => return Err(FrameError::Unaligned(len)),
                    _ => len,
                };
                (4, len, payload_len, q)
            }
        };
        if len > self.max_payload {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        let total = header + len;
        if buf.len() < total {
            return Ok(None);
        }
        if payload_len == 0 {
            self.empty_run += 1;
            if self.empty_run > self.max_empty_run {
                return Err(FrameError::TooManyEmptyFrames(self.empty_run));
            }
        } else {
            self.empty_run = 0;
        }
        Ok(Some(Decoded::Frame(Frame {
            payload: header..header + payload_len,
            quick_ack,
            consumed: total,
        })))
    }
}

fn quick_ack_from(buf: &[u8], conv: fn([u8; 4]) -> u32) -> Option<Decoded> {
    let b = buf.get(..4)?;
    Some(Decoded::QuickAck {
        token: conv([b[0], b[1], b[2], b[3]]),
        consumed: 4,
    })
}

/// An encoded frame header (1 or 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; 4],
    len: u8,
}

impl FrameHeader {
    /// The header bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Encodes the header for `payload_len` payload bytes followed by
/// `padding_len` padding bytes (padded framing only).
pub fn encode_header(
    framing: Framing,
    payload_len: usize,
    quick_ack: bool,
    padding_len: usize,
) -> Result<FrameHeader, FrameError> {
    let q32 = if quick_ack { 0x8000_0000u32 } else { 0 };
    match framing {
        Framing::Abridged => {
            if padding_len != 0 {
                return Err(FrameError::PaddingNotAllowed);
            }
            if payload_len % 4 != 0 {
                return Err(FrameError::Unaligned(payload_len));
            }
            let words = payload_len / 4;
            let q = if quick_ack { 0x80u8 } else { 0 };
            if words < 0x7f {
                // words < 0x7f fits in the low 7 bits.
                let w = u8::try_from(words).unwrap_or(0);
                Ok(FrameHeader {
                    bytes: [w | q, 0, 0, 0],
                    len: 1,
                })
            } else if words < (1 << 24) {
                let w = (words as u32).to_le_bytes();
                Ok(FrameHeader {
                    bytes: [0x7f | q, w[0], w[1], w[2]],
                    len: 4,
                })
            } else {
                Err(FrameError::TooLarge {
                    len: payload_len,
                    max: ((1 << 24) - 1) * 4,
                })
            }
        }
        Framing::Intermediate | Framing::Padded => {
            if framing == Framing::Intermediate && padding_len != 0 {
                return Err(FrameError::PaddingNotAllowed);
            }
            let total = payload_len.saturating_add(padding_len);
            let total32 = u32::try_from(total)
                .ok()
                .filter(|t| t & 0x8000_0000 == 0)
                .ok_or(FrameError::TooLarge {
                    len: total,
                    max: 0x7fff_ffff,
                })?;
            Ok(FrameHeader {
                bytes: (total32 | q32).to_le_bytes(),
                len: 4,
            })
        }
    }
}

/// Appends one complete frame to `out`.
pub fn encode_frame(
    framing: Framing,
    payload: &[u8],
    quick_ack: bool,
    padding: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let h = encode_header(framing, payload.len(), quick_ack, padding.len())?;
    out.reserve(h.as_slice().len() + payload.len() + padding.len());
    out.extend_from_slice(h.as_slice());
    out.extend_from_slice(payload);
    out.extend_from_slice(padding);
    Ok(())
}

/// The 4 raw bytes answering a quick-ack request: big endian for abridged,
/// little endian for intermediate/padded (§3.1, §3.2).
pub fn quick_ack_answer(framing: Framing, token: u32) -> [u8; 4] {
    match framing {
        Framing::Abridged => token.to_be_bytes(),
        Framing::Intermediate | Framing::Padded => token.to_le_bytes(),
    }
}

/// Padding length a proxy adds to a padded frame from one random byte:
/// 1..=3, so the total is never a multiple of 4 (telemt's choice).
pub fn proxy_padding_len(random: u8) -> usize {
    1 + usize::from(random % 3)
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
