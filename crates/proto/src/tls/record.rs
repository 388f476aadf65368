//! TLS record layer after the fake handshake (docs/PROTOCOL.md §4.6).
//!
//! Owns: sans-IO reading of client records (application data, the optional
//! ChangeCipherSpec, alerts) and writing of application-data records. Must
//! not: buffer or decrypt; payloads are handed back as ranges of the caller's
//! buffer and carry the obfuscated2 byte stream (record boundaries mean
//! nothing).
//!
//! ```text
//!  +------+-------+-------+----------------+
//!  | type | 03 03 | BE16 L| payload (L)    |
//!  +------+-------+-------+----------------+
//!  client → proxy: 17 with 1 ≤ L ≤ 16640; 14 with L = 1 (skipped anywhere);
//!                  15 with L = 2 (alert: end of stream); 16 is an error
//!  proxy → client: 17 03 03 BE16(L) with L ≤ 16384, never a CCS
//! ```

use std::ops::Range;

use super::{CONTENT_ALERT, CONTENT_APP_DATA, CONTENT_CCS, CONTENT_HANDSHAKE, RECORD_HEADER_LEN};

/// Largest client record payload accepted (telemt, 2^14 + 256).
pub const MAX_RECORD_PAYLOAD_IN: usize = 16640;
/// Largest record payload this proxy sends.
pub const MAX_RECORD_PAYLOAD_OUT: usize = 16384;

/// Record-layer violations (each variant doubles as a bad-connection label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Version other than 03 03.
    #[error("record version {0:02x}{1:02x} is not 0303")]
    BadVersion(u8, u8),
    /// Unknown content type.
    #[error("unknown record content type {0:#04x}")]
    UnknownContentType(u8),
    /// A handshake record after the handshake.
    #[error("handshake record after the handshake")]
    UnexpectedHandshake,
    /// Application-data record of length 0 or above the limit.
    #[error("application-data record length {0} out of range")]
    BadAppDataLength(usize),
    /// ChangeCipherSpec with a length other than 1.
    #[error("ChangeCipherSpec record length {0} is not 1")]
    BadCcsLength(usize),
    /// Alert with a length other than 2.
    #[error("alert record length {0} is not 2")]
    BadAlertLength(usize),
    /// Payload to send does not fit one record.
    #[error("record payload of {0} bytes exceeds 16384")]
    PayloadTooLarge(usize),
}

impl RecordError {
    /// Stable label for bad-connection statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::BadVersion(..) => "tls_record_bad_version",
            Self::UnknownContentType(_) => "tls_record_unknown_type",
            Self::UnexpectedHandshake => "tls_record_unexpected_handshake",
            Self::BadAppDataLength(_) => "tls_record_bad_app_data_length",
            Self::BadCcsLength(_) => "tls_record_bad_ccs_length",
            Self::BadAlertLength(_) => "tls_record_bad_alert_length",
            Self::PayloadTooLarge(_) => "tls_record_payload_too_large",
        }
    }
}

/// Kind of an accepted client record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Application data: the payload continues the obfuscated2 stream.
    ApplicationData,
    /// ChangeCipherSpec: skip the payload.
    ChangeCipherSpec,
    /// Alert: the client ends the stream.
    Alert,
}

/// A validated record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Kind.
    pub kind: RecordKind,
    /// Payload length that follows the 5 header bytes.
    pub len: usize,
}

/// One complete record found at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Kind.
    pub kind: RecordKind,
    /// Payload range in the buffer.
    pub payload: Range<usize>,
    /// Bytes occupied by the record.
    pub consumed: usize,
}

/// Client → proxy record reader.
#[derive(Clone, Debug)]
pub struct TlsRecordReader {
    max_payload: usize,
}

impl Default for TlsRecordReader {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsRecordReader {
    /// A reader with telemt's 16640-byte limit.
    pub fn new() -> Self {
        Self {
            max_payload: MAX_RECORD_PAYLOAD_IN,
        }
    }

    /// Overrides the payload limit.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    /// Validates a 5-byte header (for callers that read header then payload).
    pub fn header(&self, h: [u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, RecordError> {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let kind = match h[0] {
            CONTENT_APP_DATA => RecordKind::ApplicationData,
            CONTENT_CCS => RecordKind::ChangeCipherSpec,
            CONTENT_ALERT => RecordKind::Alert,
            CONTENT_HANDSHAKE => return Err(RecordError::UnexpectedHandshake),
            other => return Err(RecordError::UnknownContentType(other)),
        };
        if h[1] != 0x03 || h[2] != 0x03 {
            return Err(RecordError::BadVersion(h[1], h[2]));
        }
        match kind {
            RecordKind::ApplicationData if len == 0 || len > self.max_payload => {
                Err(RecordError::BadAppDataLength(len))
            }
            RecordKind::ChangeCipherSpec if len != 1 => Err(RecordError::BadCcsLength(len)),
            RecordKind::Alert if len != 2 => Err(RecordError::BadAlertLength(len)),
            _ => Ok(RecordHeader { kind, len }),
        }
    }

    /// Decodes the record at the start of `buf`; `Ok(None)` = need more bytes.
    /// Errors are reported as soon as the header is complete.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<Record>, RecordError> {
        let Some(h) = buf.get(..RECORD_HEADER_LEN) else {
            return Ok(None);
        };
        let h = self.header([h[0], h[1], h[2], h[3], h[4]])?;
        let end = RECORD_HEADER_LEN + h.len;
        if buf.len() < end {
            return Ok(None);
        }
        Ok(Some(Record {
            kind: h.kind,
            payload: RECORD_HEADER_LEN..end,
            consumed: end,
        }))
    }
}

/// Header of an outgoing application-data record of `len` bytes.
pub fn app_data_header(len: usize) -> Result<[u8; RECORD_HEADER_LEN], RecordError> {
    let l = u16::try_from(len)
        .ok()
        .filter(|&l| usize::from(l) <= MAX_RECORD_PAYLOAD_OUT)
        .ok_or(RecordError::PayloadTooLarge(len))?;
    let b = l.to_be_bytes();
    Ok([CONTENT_APP_DATA, 0x03, 0x03, b[0], b[1]])
}

/// Appends `payload` to `out` as application-data records of at most
/// `max_record` (clamped to 1..=16384) bytes each.
pub fn write_app_data(payload: &[u8], max_record: usize, out: &mut Vec<u8>) {
    let max = max_record.clamp(1, MAX_RECORD_PAYLOAD_OUT);
    out.reserve(payload.len() + payload.len().div_ceil(max) * RECORD_HEADER_LEN);
    for chunk in payload.chunks(max) {
        let l = chunk.len() as u16; // ≤ 16384
        out.extend_from_slice(&[CONTENT_APP_DATA, 0x03, 0x03]);
        out.extend_from_slice(&l.to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_rules() {
        let mut r = TlsRecordReader::new();
        let ccs = [0x14, 3, 3, 0, 1, 1];
        assert_eq!(
            r.decode(&ccs),
            Ok(Some(Record {
                kind: RecordKind::ChangeCipherSpec,
                payload: 5..6,
                consumed: 6
            }))
        );
        assert_eq!(
            r.decode(&[0x14, 3, 3, 0, 2, 1, 1]),
            Err(RecordError::BadCcsLength(2))
        );
        assert_eq!(
            r.decode(&[0x15, 3, 3, 0, 2, 1, 0])
                .map(|x| x.map(|r| r.kind)),
            Ok(Some(RecordKind::Alert))
        );
        assert_eq!(
            r.decode(&[0x15, 3, 3, 0, 3]),
            Err(RecordError::BadAlertLength(3))
        );
        assert_eq!(
            r.decode(&[0x16, 3, 3, 0, 3]),
            Err(RecordError::UnexpectedHandshake)
        );
        assert_eq!(
            r.decode(&[0x18, 3, 3, 0, 3]),
            Err(RecordError::UnknownContentType(0x18))
        );
        assert_eq!(
            r.decode(&[0x17, 3, 1, 0, 3]),
            Err(RecordError::BadVersion(3, 1))
        );
        assert_eq!(
            r.decode(&[0x17, 3, 3, 0, 0]),
            Err(RecordError::BadAppDataLength(0))
        );
        assert_eq!(
            r.decode(&[0x17, 3, 3, 0x41, 0x01]),
            Err(RecordError::BadAppDataLength(16641))
        );
        assert_eq!(
            r.decode(&[0x17, 3, 3, 0x41, 0x00]),
            Ok(None),
            "16640 accepted, needs payload"
        );
        assert_eq!(r.decode(&[0x17, 3, 3]), Ok(None));
        assert_eq!(
            app_data_header(16385),
            Err(RecordError::PayloadTooLarge(16385))
        );
        assert_eq!(app_data_header(64), Ok([0x17, 3, 3, 0, 0x40]));
    }

    proptest! {
        #[test]
        fn write_then_read(payload in proptest::collection::vec(any::<u8>(), 0..40000), max in 1usize..20000) {
            let mut wire = Vec::new();
            write_app_data(&payload, max, &mut wire);
            let mut r = TlsRecordReader::new();
            let mut rest = &wire[..];
            let mut got = Vec::new();
            while !rest.is_empty() {
                let rec = r.decode(rest).expect("valid").expect("complete");
                prop_assert_eq!(rec.kind, RecordKind::ApplicationData);
                prop_assert!(rec.payload.len() <= MAX_RECORD_PAYLOAD_OUT);
                got.extend_from_slice(&rest[rec.payload.clone()]);
                rest = &rest[rec.consumed..];
            }
            prop_assert_eq!(got, payload);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = TlsRecordReader::new().with_max_payload(32);
            let mut rest = &bytes[..];
            while let Ok(Some(rec)) = r.decode(rest) {
                prop_assert!(rec.consumed <= rest.len());
                rest = &rest[rec.consumed..];
            }
        }
    }
}
