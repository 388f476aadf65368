//! A stored TLS front profile for the real-client tests (docs/PROTOCOL.md §4.9): the mask
//! server speaks no TLS, so the daemon's fetch fails and the stored profile stays in use.
//! ee clients then get nginx's extension order (supported_versions first), 13 02 when offered
//! and one 4000-byte record — or, for a repeat from 127.0.0.1 within `tls_full_cert_ttl_secs`,
//! one record of the profile's resumed flight (first + last encrypted record: 42 + 116).
//!
//! ```text
//!  16 03 03 LL LL 02 BE24 03 03 <32> n <n> CS CS 00 00 2e [00 2b …] [00 33 …] | CCS | 17 03 03 LL LL …
//!  0              5                    43    44         44+n+3     44+n+5
//! ```

use std::path::Path;

/// The emulated record's length.
const FLIGHT: usize = 4000;
/// The compact record's length (EncryptedExtensions + Finished of the profile below).
const COMPACT: usize = 42 + 116;

/// Writes `<dir>/tlsfront/<domain>.json`.
pub fn write_profile(dir: &Path, domain: &str) {
    let front = dir.join("tlsfront");
    std::fs::create_dir_all(&front).unwrap();
    let profile = serde_json::json!({
        "version": 1, "domain": domain, "origin": "127.0.0.1:443", "fetched_at_unix": 1,
        "legacy_version": 0x0303, "selected_version": 0x0304, "cipher": 0x1302,
        "extensions": [0x002b, 0x0033], "key_share_group": 0x001d, "alpn": null,
        "ccs_count": 1, "records": [[23, 42], [23, 3542], [23, 300], [23, 116]],
        "flight_total": FLIGHT, "tail_records": 0, "connect_ms": 0, "flight_ms": 2
    });
    std::fs::write(front.join(format!("{domain}.json")), profile.to_string()).unwrap();
}

/// Checks a received flight against the profile: supported_versions before key_share and one
/// application-data record of 4000 ± 16 bytes, or the compact one (a randomized plan's compact
/// record is 85..109 bytes, so either length shows the stored profile is in use).
pub fn check_flight(f: &[u8]) -> Result<(), String> {
    let be16 = |at: usize| {
        f.get(at..at + 2)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let sid = usize::from(f.get(43).copied().unwrap_or(0));
    let ext_at = 44 + sid + 5;
    let versions_first = f.get(ext_at..ext_at + 2) == Some(&[0x00, 0x2b][..]);
    let app_at = 5 + be16(3) + 6;
    let app_len = be16(app_at + 3);
    if versions_first && (app_len.abs_diff(FLIGHT) <= 16 || app_len == COMPACT) {
        Ok(())
    } else {
        Err(format!("versions_first={versions_first} app_len={app_len}"))
    }
}
