//! Arbitrary bytes as an ME RPC stream (plaintext view) and as message payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::me::{parse_handshake_answer, Checksum, MeMessage, RpcNonce, RpcPacketDecoder};

fuzz_target!(|data: &[u8]| {
    let _ = MeMessage::parse(data);
    let _ = RpcNonce::parse(data);
    let _ = parse_handshake_answer(data);
    for c in [Checksum::Crc32, Checksum::Crc32c] {
        let mut d = RpcPacketDecoder::new();
        d.set_checksum(c);
        let mut rest = data;
        while let Ok(Some(p)) = d.decode(rest) {
            assert!(p.payload.end + 4 == p.consumed && p.consumed <= rest.len());
            let _ = MeMessage::parse(&rest[p.payload.clone()]);
            rest = &rest[p.consumed..];
        }
    }
});
