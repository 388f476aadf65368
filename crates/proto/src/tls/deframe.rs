//! Streaming fake-TLS record de-framing for the client → proxy direction (docs/PROTOCOL.md §4.6).
//!
//! Owns: turning whatever bytes a read returned (record boundaries anywhere) into the
//! obfuscated2 byte stream, in place, with no buffering beyond a 5-byte header. Header
//! validation is [`TlsRecordReader`]. Used by the server handshake (the inner init) and then,
//! in the state the handshake left it, by the data plane's relay. Must not: decrypt (the
//! caller applies the client keystream to the payload bytes this returns) or do I/O.
//!
//! ```text
//!  read:  ..payload tail | 17 03 03 LL LL | payload.. | 14 03 03 00 01 01 | 17 03 ..
//!  out :  ..payload tail                    payload..   (CCS skipped)       ..
//! ```

use super::record::{RecordError, RecordKind, TlsRecordReader};

/// De-framer state carried across reads.
#[derive(Debug, Default)]
pub struct Deframer {
    reader: TlsRecordReader,
    hdr: [u8; 5],
    hdr_len: usize,
    remaining: usize,
    app_data: bool,
}

/// Outcome of one [`Deframer::deframe`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deframed {
    /// Payload bytes now at the start of the buffer.
    pub len: usize,
    /// The client sent an alert: end of stream.
    pub closed: bool,
}

impl Deframer {
    /// Compacts the application-data payload in `buf` to its front.
    pub fn deframe(&mut self, buf: &mut [u8]) -> Result<Deframed, RecordError> {
        let (mut r, mut w) = (0usize, 0usize);
        while r < buf.len() {
            if self.remaining == 0 {
                let take = (5 - self.hdr_len).min(buf.len() - r);
                self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&buf[r..r + take]);
                self.hdr_len += take;
                r += take;
                if self.hdr_len < 5 {
                    break;
                }
                self.hdr_len = 0;
                let h = self.reader.header(self.hdr)?;
                match h.kind {
                    RecordKind::Alert => {
                        return Ok(Deframed {
                            len: w,
                            closed: true,
                        })
                    }
                    kind => {
                        self.app_data = kind == RecordKind::ApplicationData;
                        self.remaining = h.len;
                    }
                }
                continue;
            }
            let take = self.remaining.min(buf.len() - r);
            if self.app_data {
                buf.copy_within(r..r + take, w);
                w += take;
            }
            r += take;
            self.remaining -= take;
        }
        Ok(Deframed {
            len: w,
            closed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_yields_the_payload_stream() {
        let mut wire = vec![0x14, 3, 3, 0, 1, 1];
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        crate::tls::record::write_app_data(&payload, 1000, &mut wire);
        wire.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
        crate::tls::record::write_app_data(&payload[..10], 3, &mut wire);
        for step in [1usize, 2, 3, 5, 7, 64, 1001, 100_000] {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                let mut c = chunk.to_vec();
                let out = d.deframe(&mut c).expect("valid");
                assert!(!out.closed);
                got.extend_from_slice(&c[..out.len]);
            }
            assert_eq!(got.len(), 5010, "step {step}");
            assert_eq!(&got[..5000], &payload[..]);
            assert_eq!(&got[5000..], &payload[..10]);
        }
    }

    #[test]
    fn alert_closes_and_bad_records_error() {
        let mut d = Deframer::default();
        let mut b = vec![0x17, 3, 3, 0, 2, 9, 9, 0x15, 3, 3, 0, 2, 1, 0];
        assert_eq!(
            d.deframe(&mut b),
            Ok(Deframed {
                len: 2,
                closed: true
            })
        );
        assert_eq!(&b[..2], &[9, 9]);
        let mut d = Deframer::default();
        let mut b = vec![0x16, 3, 3, 0, 2];
        assert_eq!(d.deframe(&mut b), Err(RecordError::UnexpectedHandshake));
    }
}
