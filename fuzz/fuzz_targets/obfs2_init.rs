//! Any 64 bytes against a small user table: match must never panic, and a
//! match must agree with the single-secret reference `open`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{match_init, ObfuscatedInit, TagSet, UserTable};

fuzz_target!(|data: &[u8]| {
    let Ok(init) = ObfuscatedInit::from_wire(data.get(..64).unwrap_or(data)) else {
        return;
    };
    let table = UserTable::new([[0u8; 16], [0x11; 16], [0xff; 16]]);
    if let Ok(m) = match_init(&table, &init, Some(1), TagSet::ALL) {
        let secret = table.secret(m.user_index).copied().unwrap_or_default();
        let opened = init.open(Some(&secret)).expect("fast match implies open");
        assert_eq!((opened.tag, opened.dc), (m.tag, m.dc));
    }
});
