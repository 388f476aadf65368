//! Arbitrary bytes as what the peer sends during an ME handshake, in both
//! roles, and as proxy → middle proxy message payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::me::{
    ClientHandshake, Handshake, HandshakeParams, ProxyMessage, RpcReceiver, ServerHandshake,
};

fn params() -> HandshakeParams {
    HandshakeParams {
        proxy_secret: vec![0x5a; 128],
        proxy_addr: "127.0.0.1:40000".parse().expect("literal"),
        me_addr: "127.0.0.1:8888".parse().expect("literal"),
        now: 1_700_000_000,
        nonce: [7; 16],
        crc32c: true,
        pid: [0; 12],
        max_skew_secs: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ProxyMessage::parse(data);
    let _ = Handshake::parse(data);
    if let Ok(mut s) = ServerHandshake::new(params()) {
        let mut out = Vec::new();
        for part in data.chunks(17) {
            if s.feed(part, &mut out).is_err() {
                break;
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(mut c) = ClientHandshake::start(params(), &mut out) {
        let _ = c.feed(data, &mut out);
    }
    let mut r = RpcReceiver::new();
    r.feed(data);
    while let Ok(Some(p)) = r.next_packet() {
        let _ = ProxyMessage::parse(&p);
    }
});
