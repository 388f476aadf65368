//! What a test does when an external peer it needs (a SOCKS server binary, a Python client
//! library) is missing: it fails, naming the peer and how to install it, because a silent
//! skip hides breakage. Setting `MTPROXYD_SKIP_EXTERNAL=1` is the explicit opt-out: the test
//! then prints `SKIPPED: …` to the real stderr and returns early.

use std::io::Write as _;

/// The opt-out variable.
pub const SKIP_VAR: &str = "MTPROXYD_SKIP_EXTERNAL";

/// Whether the operator opted out of tests that need external peers.
pub fn skip_allowed() -> bool {
    std::env::var(SKIP_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that `what` is missing: panics with `how` to install it, unless opted out, in
/// which case the skip is printed (to the real stderr, past the test harness's capture).
pub fn missing(what: &str, how: &str) {
    let msg = format!("{what} is missing: {how} (or set {SKIP_VAR}=1 to skip such tests)");
    if !skip_allowed() {
        panic!("{msg}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
}
