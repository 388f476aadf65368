//! Arbitrary bytes as a STUN answer: the binding-response and binding-request parsers never
//! panic, the TCP message size never exceeds the 16-bit length bound, and a message that
//! parses is exactly as long as `message_len` says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::stun::{
    message_len, parse_binding_request, parse_binding_response, TransactionId, HEADER_LEN,
    MAX_MESSAGE_LEN,
};

fuzz_target!(|data: &[u8]| {
    // Expect the transaction id the bytes carry, so the attribute walk is reached.
    let txid: TransactionId = data
        .get(8..20)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 12]);
    let answer = parse_binding_response(data, &txid);
    let request = parse_binding_request(data);
    match message_len(data) {
        Ok(Some(n)) => {
            assert!((HEADER_LEN..=MAX_MESSAGE_LEN).contains(&n));
            if answer.is_ok() || request.is_ok() {
                assert_eq!(n, data.len());
            }
        }
        Ok(None) => assert!(data.len() < HEADER_LEN),
        Err(_) => assert!(answer.is_err() && request.is_err()),
    }
});
