//! Arbitrary bytes through every framing decoder, both stream sides.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{Decoded, FrameDecoder, Framing, StreamSide};

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Abridged, Framing::Intermediate, Framing::Padded] {
        for side in [StreamSide::FromClient, StreamSide::FromServer] {
            let mut d = FrameDecoder::new(framing, side).with_max_payload(1 << 16);
            let mut rest = data;
            while let Ok(Some(x)) = d.decode(rest) {
                let n = match x {
                    Decoded::Frame(f) => {
                        assert!(f.payload.end <= f.consumed);
                        f.consumed
                    }
                    Decoded::QuickAck { consumed, .. } => consumed,
                };
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
        }
    }
});
