//! telemt 3.4's user lifecycle routes: enable / disable (a patch of `access.user_enabled`),
//! reset-quota (a runtime counter reset), readiness and active IPs.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn disable_and_enable_round_trip_through_the_file() {
    let f = Fixture::new("");
    let before = f.file();
    let r = f.call("POST", "/v1/users/bob/disable", None).await;
    let info = r.assert_ok(200);
    assert_eq!(info["username"], "bob");
    assert_eq!(info["enabled"], false);
    assert_eq!(info["in_runtime"], true);
    let text = f.file();
    assert!(
        text.contains("[access.user_enabled]\nbob = false\n"),
        "{text}"
    );
    // Secret and limits are kept.
    assert!(text.contains(BOB_SECRET), "{text}");
    let listed = f.call("GET", "/v1/users", None).await;
    let users = listed
        .assert_ok(200)
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bob = users
        .iter()
        .find(|u| u["username"] == "bob")
        .expect("bob listed");
    assert_eq!(bob["enabled"], false);

    // Trailing slash matches too; enabling removes the override (and the table it emptied).
    let r = f.call("POST", "/v1/users/bob/enable/", None).await;
    assert_eq!(r.assert_ok(200)["enabled"], true);
    assert_eq!(f.file(), before);

    // PATCH carries the same flag; null means enabled.
    f.call("PATCH", "/v1/users/bob", Some(r#"{"enabled":false}"#))
        .await
        .assert_ok(200);
    assert!(f.file().contains("bob = false"));
    let r = f
        .call("PATCH", "/v1/users/bob", Some(r#"{"enabled":null}"#))
        .await;
    assert_eq!(r.assert_ok(200)["enabled"], true);
    assert_eq!(f.file(), before);

    // Create disabled.
    let r = f
        .call(
            "POST",
            "/v1/users",
            Some(r#"{"username":"carol","enabled":false}"#),
        )
        .await;
    assert_eq!(r.assert_ok(201)["user"]["enabled"], false);

    f.call("POST", "/v1/users/nobody/disable", None)
        .await
        .assert_error(404, "not_found");
    f.call("GET", "/v1/users/bob/disable", None)
        .await
        .assert_error(404, "not_found");
    let events: Vec<String> = f
        .runtime
        .stats
        .events()
        .recent(50)
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert!(
        events.contains(&"api.user.disable.ok".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"api.user.enable.ok".to_owned()),
        "{events:?}"
    );
}

#[tokio::test]
async fn lifecycle_routes_obey_read_only() {
    let f = Fixture::new("read_only = true");
    for path in [
        "/v1/users/bob/disable",
        "/v1/users/bob/enable",
        "/v1/users/bob/reset-quota",
    ] {
        f.call("POST", path, None)
            .await
            .assert_error(403, "read_only");
    }
}

#[tokio::test]
async fn reset_quota_zeroes_the_counter() {
    let f = Fixture::new("");
    let bob = f.runtime.stats.users().handle("bob");
    bob.add_octets_to_client(5000);
    assert_eq!(bob.quota_used_bytes(), 5000);
    let r = f.call("POST", "/v1/users/bob/reset-quota", None).await;
    let data = r.assert_ok(200);
    assert_eq!(data["username"], "bob");
    assert_eq!(data["used_bytes"], 0);
    assert_eq!(data["last_reset_epoch_secs"], 1_800_000_000u64);
    assert_eq!(bob.quota_used_bytes(), 0);
    // Octet totals are history, not quota: they stay.
    assert_eq!(bob.snapshot().total_octets, 5000);
    f.call("POST", "/v1/users/nobody/reset-quota", None)
        .await
        .assert_error(404, "not_found");
    let mut stale = req("POST", "/v1/users/bob/reset-quota/", None);
    stale
        .headers_mut()
        .insert("if-match", "stale".parse().expect("header"));
    f.send(stale).await.assert_error(409, "revision_conflict");
}

#[tokio::test]
async fn readiness_and_active_ips() {
    let f = Fixture::new("");
    // The fake runtime has no upstream manager and admits nothing: not ready, with reasons.
    let r = f.call("GET", "/v1/health/ready", None).await;
    let data = r.assert_ok(503);
    assert_eq!(data["ready"], false);
    assert_eq!(data["status"], "not_ready");
    assert_eq!(data["reason"], "admission_closed");
    assert_eq!(data["total_upstreams"], 0);

    let r = f.call("GET", "/v1/stats/users/active-ips", None).await;
    assert_eq!(r.assert_ok(200), &serde_json::json!([]));
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    assert!(f.runtime.stats.ips().try_admit(
        "bob",
        ip,
        None,
        stats::UniqueIpMode::ActiveWindow,
        Duration::from_secs(30),
        Instant::now()
    ));
    let r = f.call("GET", "/v1/stats/users/active-ips", None).await;
    assert_eq!(
        r.assert_ok(200),
        &serde_json::json!([{"username": "bob", "active_ips": ["10.1.2.3"]}])
    );
}

#[tokio::test]
async fn rate_limits_round_trip_per_direction() {
    let f = Fixture::new("");
    let before = f.file();
    let r = f
        .call(
            "POST",
            "/v1/users",
            Some(r#"{"username":"carol","rate_limit_down_bps":8000000}"#),
        )
        .await;
    let user = &r.assert_ok(201)["user"];
    assert_eq!(user["rate_limit_down_bps"], 8_000_000);
    assert_eq!(user["rate_limit_up_bps"], serde_json::Value::Null);
    assert!(
        f.file()
            .contains("[access.user_rate_limits]\ncarol = { up_bps = 0, down_bps = 8000000 }"),
        "{}",
        f.file()
    );
    // One direction at a time; the other keeps its value.
    let r = f
        .call(
            "PATCH",
            "/v1/users/carol",
            Some(r#"{"rate_limit_up_bps":1000000}"#),
        )
        .await;
    let u = r.assert_ok(200);
    assert_eq!(
        (
            u["rate_limit_up_bps"].clone(),
            u["rate_limit_down_bps"].clone()
        ),
        (serde_json::json!(1_000_000), serde_json::json!(8_000_000))
    );
    f.call(
        "PATCH",
        "/v1/users/carol",
        Some(r#"{"rate_limit_down_bps":null}"#),
    )
    .await
    .assert_ok(200);
    assert!(f
        .file()
        .contains("carol = { up_bps = 1000000, down_bps = 0 }"));
    // No direction left: the entry (and the table it was alone in) goes.
    let r = f
        .call(
            "PATCH",
            "/v1/users/carol",
            Some(r#"{"rate_limit_up_bps":null}"#),
        )
        .await;
    assert_eq!(
        r.assert_ok(200)["rate_limit_up_bps"],
        serde_json::Value::Null
    );
    f.call("DELETE", "/v1/users/carol", None)
        .await
        .assert_ok(200);
    assert_eq!(f.file(), before);
}

#[tokio::test]
async fn quota_reset_schedules_are_set_shown_and_cleared() {
    let f = Fixture::new("");
    let r = f
        .call(
            "POST",
            "/v1/users",
            Some(r#"{"username":"dan","quota_reset":"weekly:mon@03:00"}"#),
        )
        .await;
    let user = r.assert_ok(201)["user"].clone();
    assert_eq!(user["quota_reset"], "weekly:mon@03:00");
    assert_eq!(user["last_quota_reset_epoch_secs"], serde_json::Value::Null);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let next = user["next_quota_reset_epoch_secs"].as_u64().expect("next");
    assert!(next > now && next <= now + 7 * 86_400, "{next}");
    assert!(f
        .file()
        .contains("[access.user_quota_reset]\ndan = \"weekly:mon@03:00\""));
    let r = f
        .call("PATCH", "/v1/users/dan", Some(r#"{"quota_reset":"daily"}"#))
        .await;
    assert_eq!(r.assert_ok(200)["quota_reset"], "daily@00:00");
    f.call(
        "PATCH",
        "/v1/users/dan",
        Some(r#"{"quota_reset":"hourly"}"#),
    )
    .await
    .assert_error(400, "bad_request");
    let r = f
        .call("PATCH", "/v1/users/dan", Some(r#"{"quota_reset":null}"#))
        .await;
    assert_eq!(r.assert_ok(200)["quota_reset"], serde_json::Value::Null);
    assert!(!f.file().contains("user_quota_reset"));
}

#[tokio::test]
async fn admin_page_and_qr_codes() {
    let f = Fixture::new(r#"auth_header = "Bearer admin""#);
    let resp = f.send_raw(req("GET", "/admin", None)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("<title>mtproxyd</title>"));
    // The data behind it still needs the header; so does a QR code (it holds the secret).
    f.call("GET", "/v1/users", None)
        .await
        .assert_error(401, "unauthorized");
    f.call("GET", "/v1/users/alice/qr", None)
        .await
        .assert_error(401, "unauthorized");
    let mut q = req("GET", "/v1/users/alice/qr", None);
    q.headers_mut()
        .insert("authorization", "Bearer admin".parse().expect("hv"));
    let resp = f.send_raw(q).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    let svg = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(String::from_utf8_lossy(&svg).contains("<svg"));
    let mut q = req("GET", "/v1/users/nobody/qr", None);
    q.headers_mut()
        .insert("authorization", "Bearer admin".parse().expect("hv"));
    assert_eq!(f.send_raw(q).await.status(), 404);
    // The whitelist applies to the page too.
    let outsider = req_from("GET", "/admin", None, "10.9.9.9:1234");
    assert_eq!(f.send_raw(outsider).await.status(), 403);
}
