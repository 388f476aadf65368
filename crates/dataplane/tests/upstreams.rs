//! `[[upstreams]]` end to end: testkit clients → data plane → real SOCKS / Shadowsocks
//! servers (microsocks, dante, ss-server, the `shadowsocks` crate's server) on 127.0.0.1 →
//! testkit DC; failure handling, health and recovery, counters, hot reload; a full-duplex soak
//! with a progress watchdog through each upstream kind.
//! External servers missing: a failure naming them, unless `MTPROXYD_SKIP_EXTERNAL=1` opts out.

#[path = "e2e/support.rs"]
mod support;

#[path = "upstreams/servers.rs"]
mod servers;

#[path = "upstreams/kinds.rs"]
mod kinds;

#[path = "upstreams/failures.rs"]
mod failures;

#[path = "upstreams/bench.rs"]
mod bench;

#[path = "upstreams/soak.rs"]
mod soak;
