//! Arbitrary bytes as a ClientHello record: detection, structural parse and
//! full validation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{detect_tls, parse_client_hello, FakeTlsHello, TlsPolicy, UnknownSniAction, UserTable};

fuzz_target!(|data: &[u8]| {
    let _ = detect_tls(data);
    let _ = parse_client_hello(data);
    let table = UserTable::new([[0u8; 16], [0x42; 16]]);
    let policy = TlsPolicy {
        allowed_domains: vec!["example.com".into()],
        unknown_sni: UnknownSniAction::Accept,
        alpn_enforce: true,
        ..TlsPolicy::default()
    };
    let _ = FakeTlsHello::validate(data, &table, 1_700_000_000, &policy);
});
