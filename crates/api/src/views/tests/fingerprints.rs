//! `/v1/runtime/tls-fingerprints`: feature flag, `limit`, shapes and counts.

use serde_json::{json, Value};

use super::*;

fn record(rt: &Fake, n: u32, ip: &str, user: Option<&str>, ok: bool) {
    let (ja3, ja4) = (
        format!("{n:032x}"),
        format!("t13d1516h2_{n:012x}_000000000000"),
    );
    let fp = stats::FingerprintRef {
        ja3: &ja3,
        ja3_raw: "771,4865,0,29,0",
        ja4: &ja4,
        ja4_raw: "t13d1516h2_1301_000a",
    };
    let now = 1_700_000_050;
    let ip = ip.parse().expect("ip");
    rt.stats.tls_fingerprints().record(fp, ip, user, ok, now);
}

#[test]
fn disabled_then_listed_with_counts_and_limit() {
    let rt = Fake::new();
    let mut off = cfg_enabled();
    off.server.api.runtime_edge_enabled = false;
    let v = render_once(ReadRoute::RuntimeTlsFingerprints, &off, &rt);
    assert_eq!(v["enabled"], json!(false));
    assert_eq!(v["reason"], json!("feature_disabled"));
    assert_eq!(v.get("data"), Some(&Value::Null));

    record(&rt, 1, "198.51.100.7", Some("alice"), true);
    record(&rt, 1, "198.51.100.8", None, false);
    record(&rt, 2, "2001:db8::1", None, false);
    let cfg = cfg_enabled();
    let v = render_once(ReadRoute::RuntimeTlsFingerprints, &cfg, &rt);
    assert_eq!(v["enabled"], json!(true));
    assert!(v.get("reason").is_none(), "{v}");
    let d = &v["data"];
    assert_keys(
        d,
        &[
            "limit",
            "retention_secs",
            "capacity",
            "dropped_total",
            "parse_error_total",
            "by_fingerprint",
            "by_ip",
            "by_cidr",
            "by_user",
        ],
    );
    assert_eq!(d["limit"], json!(10), "runtime_edge_top_n by default");
    assert_eq!(d["retention_secs"], json!(600));
    assert_eq!(d["capacity"], json!(stats::TLS_FINGERPRINT_CAPACITY));
    let top = &d["by_fingerprint"][0];
    assert_keys(
        top,
        &[
            "ja3",
            "ja3_raw",
            "ja4",
            "ja4_raw",
            "total",
            "auth_success",
            "bad_or_probe",
            "first_seen_epoch_secs",
            "last_seen_epoch_secs",
        ],
    );
    assert_eq!(top["ja3"], json!(format!("{:032x}", 1)));
    assert_eq!(
        (&top["total"], &top["auth_success"], &top["bad_or_probe"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(
        d["by_user"],
        json!([{
            "scope": "alice", "ja3": format!("{:032x}", 1), "ja3_raw": "771,4865,0,29,0",
            "ja4": format!("t13d1516h2_{:012x}_000000000000", 1), "ja4_raw": "t13d1516h2_1301_000a",
            "total": 1, "auth_success": 1, "bad_or_probe": 0,
            "first_seen_epoch_secs": 1_700_000_050u64, "last_seen_epoch_secs": 1_700_000_050u64,
        }])
    );
    let cidrs: Vec<&Value> = d["by_cidr"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["scope"])
        .collect();
    assert!(cidrs.contains(&&json!("198.51.100.0/24")), "{cidrs:?}");
    assert!(cidrs.contains(&&json!("2001:db8::/56")), "{cidrs:?}");

    let caches = ViewCaches::default();
    let get = |q: &str| {
        render_q(
            ReadRoute::RuntimeTlsFingerprints,
            &cfg,
            &rt,
            &caches,
            Some(q),
            at(100),
        )["data"]
            .clone()
    };
    let d = get("limit=1");
    assert_eq!(d["limit"], json!(1));
    assert_eq!(d["by_fingerprint"].as_array().map(Vec::len), Some(1));
    assert_eq!(get("limit=0")["limit"], json!(1));
    assert_eq!(get("limit=5000")["limit"], json!(1000));
    assert_eq!(get("limit=x")["limit"], json!(10));
}
