//! Arbitrary bytes as a PROXY v1/v2 header: parse never panics, never
//! consumes more than it was given, and is stable under extra trailing bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::ProxyHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((h, n))) = ProxyHeader::parse(data) {
        assert!(n <= data.len());
        let mut more = data.to_vec();
        more.extend_from_slice(b"trailing");
        assert_eq!(ProxyHeader::parse(&more), Ok(Some((h, n))));
    }
});
