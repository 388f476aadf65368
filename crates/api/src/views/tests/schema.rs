//! Every view, rendered with every source missing and then with every source populated, checked
//! against its `data` schema in the served OpenAPI document: a field added to, renamed in or
//! dropped from a view without its schema following fails here.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::openapi::check::check;

/// `data` schema of a view's 200 response in `doc`.
fn data_schema(doc: &Value, route: ReadRoute) -> &Value {
    &doc["paths"][route.path()]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        ["properties"]["data"]
}

/// A fake whose counters, events, IPs and fingerprints are all non-empty, so arrays are
/// checked item by item; the session guard keeps a live connection while it is held.
fn busy() -> (Fake, stats::UserSessionGuard) {
    let rt = Fake::full();
    rt.stats
        .events()
        .push("config.reload.applied", "generation=2");
    rt.stats.inc_connections_bad_class("handshake_timeout");
    rt.stats.record_me_handshake_reject(-404);
    let alice = rt.stats.users().handle("alice");
    alice.add_octets_from_client(10);
    let session = alice.open_session();
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    assert!(rt.stats.ips().try_admit(
        "alice",
        ip,
        None,
        stats::UniqueIpMode::ActiveWindow,
        Duration::from_secs(30),
        Instant::now(),
    ));
    let fp = stats::FingerprintRef {
        ja3: "0123456789abcdef0123456789abcdef",
        ja3_raw: "771,4865,0,29,0",
        ja4: "t13d1516h2_000000000001_000000000000",
        ja4_raw: "t13d1516h2_1301_000a",
    };
    rt.stats
        .tls_fingerprints()
        .record(fp, ip, Some("alice"), true, 1_700_000_050);
    (rt, session)
}

#[test]
fn every_view_conforms_to_its_schema() {
    let doc: Value = serde_json::to_value(crate::openapi::build()).expect("document");
    let mut cfg = cfg_enabled();
    cfg.access.users.insert(
        "alice".to_owned(),
        "00112233445566778899aabbccddeeff".parse().expect("secret"),
    );
    let mut off = cfg.clone();
    off.server.api.minimal_runtime_enabled = false;
    off.server.api.runtime_edge_enabled = false;
    let (busy, _session) = busy();
    let mut failures = Vec::new();
    let (none, full) = (Fake::new(), Fake::full());
    for (label, cfg, rt) in [
        ("no sources", &cfg, &none),
        ("features off", &off, &full),
        ("busy", &cfg, &busy),
    ] {
        for route in ReadRoute::ALL {
            let schema = data_schema(&doc, route);
            assert!(!schema.is_null(), "{} has no data schema", route.path());
            let v = render_once(route, cfg, rt);
            for e in check(&doc, schema, &v) {
                failures.push(format!("{} ({label}): {e}", route.path()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
