//! Arbitrary text as a getProxyConfig body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::me::parse_proxy_config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_proxy_config(text);
    }
});
