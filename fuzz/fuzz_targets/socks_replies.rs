//! Arbitrary bytes as SOCKS4/5 server replies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::socks::{
    parse_socks4_reply, parse_socks5_auth_reply, parse_socks5_method, parse_socks5_reply,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_socks4_reply(data);
    let _ = parse_socks5_method(data, true);
    let _ = parse_socks5_auth_reply(data);
    if let Ok(Some((_, n))) = parse_socks5_reply(data) {
        assert!(n <= data.len());
    }
});
