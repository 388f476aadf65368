//! Arbitrary bytes through the post-handshake record reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::TlsRecordReader;

fuzz_target!(|data: &[u8]| {
    let mut r = TlsRecordReader::new();
    let mut rest = data;
    while let Ok(Some(rec)) = r.decode(rest) {
        assert!(rec.payload.end == rec.consumed && rec.consumed <= rest.len());
        rest = &rest[rec.consumed..];
    }
});
