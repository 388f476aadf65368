//! Gate order, routing edge cases, envelopes and request ids (docs/API.md error and routing tables,
//! docs/DECISIONS.md #1–#6, #25), driven through `oneshot` with no socket.

mod common;

use common::*;
use http::Request;

#[tokio::test]
async fn api_disabled_is_503_before_everything() {
    let f = Fixture::with_text(&config_text("").replace("enabled = true", "enabled = false"));
    // Even a non-whitelisted peer on an unknown path sees 503 first.
    let r = f.send(req_from("GET", "/nope", None, "10.1.1.1:1")).await;
    r.assert_error(503, "api_disabled");
}

#[tokio::test]
async fn whitelist_is_403_before_auth_and_routing() {
    let f = Fixture::new(r#"auth_header = "Bearer s""#);
    let r = f.send(req_from("GET", "/nope", None, "10.1.1.1:1")).await;
    r.assert_error(403, "forbidden");
    // IPv4-mapped IPv6 loopback is matched as 127.0.0.1 (docs/DECISIONS.md #2).
    let mut rq = req_from("GET", "/v1/users", None, "[::ffff:127.0.0.1]:5");
    rq.headers_mut()
        .insert("authorization", "Bearer s".parse().expect("hv"));
    f.send(rq).await.assert_ok(200);
    let r = f
        .send(req_from("GET", "/v1/users", None, "[::ffff:10.0.0.1]:5"))
        .await;
    r.assert_error(403, "forbidden");
    // A request without a known peer is refused by a non-empty whitelist.
    let bare = Request::builder()
        .uri("/v1/users")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("req");
    f.send(bare).await.assert_error(403, "forbidden");
}

#[tokio::test]
async fn empty_whitelist_allows_all() {
    let f = Fixture::with_text(&config_text("").replace(
        r#"whitelist = ["127.0.0.1/32", "::1/128"]"#,
        "whitelist = []",
    ));
    f.send(req_from("GET", "/v1/users", None, "203.0.113.9:1"))
        .await
        .assert_ok(200);
}

#[tokio::test]
async fn auth_is_401_even_on_unknown_paths() {
    let f = Fixture::new(r#"auth_header = "Bearer s3cret""#);
    f.call("GET", "/definitely/unknown", None)
        .await
        .assert_error(401, "unauthorized");
    f.call("PUT", "/v1/users/alice", None)
        .await
        .assert_error(401, "unauthorized");
    for bad in ["Bearer s3cre", "Bearer s3cret ", "bearer s3cret", ""] {
        let mut rq = req("GET", "/v1/users", None);
        rq.headers_mut()
            .insert("authorization", bad.parse().expect("hv"));
        f.send(rq).await.assert_error(401, "unauthorized");
    }
    let mut rq = req("GET", "/definitely/unknown", None);
    rq.headers_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("hv"));
    f.send(rq).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn routing_edge_cases() {
    let f = Fixture::new("");
    // Query string does not affect matching.
    f.call("GET", "/v1/users?limit=1&x", None)
        .await
        .assert_ok(200);
    f.call("GET", "/v1/users/alice?x=1", None)
        .await
        .assert_ok(200);
    // Trailing slash is not normalized.
    f.call("GET", "/v1/users/", None)
        .await
        .assert_error(404, "not_found");
    f.call("GET", "/v1/users/alice/", None)
        .await
        .assert_error(404, "not_found");
    f.call("GET", "/v1/health/", None)
        .await
        .assert_error(404, "not_found");
    // Extra segments are not a user route.
    f.call("GET", "/v1/users/alice/extra", None)
        .await
        .assert_error(404, "not_found");
    f.call("DELETE", "/v1/users/alice/extra", None)
        .await
        .assert_error(404, "not_found");
    // PUT (and other methods) on a user route: 405 with Allow.
    for m in ["PUT", "HEAD", "OPTIONS", "TRACE"] {
        let r = f.call(m, "/v1/users/alice", None).await;
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.headers["allow"], "GET, PATCH, DELETE");
    }
    // POST on a user route: 404.
    f.call("POST", "/v1/users/alice", Some("{}"))
        .await
        .assert_error(404, "not_found");
    // Unknown methods on fixed routes and read-only views: 404.
    f.call("PUT", "/v1/users", None)
        .await
        .assert_error(404, "not_found");
    f.call("DELETE", "/v1/users", None)
        .await
        .assert_error(404, "not_found");
    f.call("POST", "/v1/stats/users", None)
        .await
        .assert_error(404, "not_found");
    f.call("POST", "/v1/health", None)
        .await
        .assert_error(404, "not_found");
    f.call("GET", "/v1/users/alice/rotate-secret", None)
        .await
        .assert_error(404, "not_found");
    // Percent-encoding is not decoded: "%61lice" is not "alice".
    f.call("GET", "/v1/users/%61lice", None)
        .await
        .assert_error(404, "not_found");
    // Unknown paths.
    f.call("GET", "/", None)
        .await
        .assert_error(404, "not_found");
    f.call("GET", "/v2/users", None)
        .await
        .assert_error(404, "not_found");
    // Unknown user.
    f.call("GET", "/v1/users/nobody", None)
        .await
        .assert_error(404, "not_found");
    let long = format!("/v1/users/{}", "a".repeat(10_000));
    f.call("GET", &long, None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn read_views_are_wrapped_in_the_envelope() {
    let f = Fixture::new("");
    let r = f.call("GET", "/v1/health", None).await;
    let data = r.assert_ok(200);
    assert_eq!(data["status"], "ok");
    assert_eq!(data["read_only"], false);
    assert_eq!(r.json["revision"].as_str(), Some(f.revision().as_str()));
    f.call("GET", "/v1/system/info", None).await.assert_ok(200);
}

#[tokio::test]
async fn read_only_gate_after_routing_before_body() {
    let f = Fixture::new("read_only = true");
    // Routing errors win over read_only.
    f.call("PUT", "/v1/users/alice", None)
        .await
        .assert_error(405, "method_not_allowed");
    f.call("POST", "/v1/nope", None)
        .await
        .assert_error(404, "not_found");
    // read_only wins over body errors.
    f.call("POST", "/v1/users", Some("not json"))
        .await
        .assert_error(403, "read_only");
    f.call("PATCH", "/v1/users/alice", Some("{"))
        .await
        .assert_error(403, "read_only");
    f.call("DELETE", "/v1/users/alice", None)
        .await
        .assert_error(403, "read_only");
    f.call("POST", "/v1/users/alice/rotate-secret", None)
        .await
        .assert_error(403, "read_only");
    let big = format!("{{\"username\":\"{}\"}}", "x".repeat(100_000));
    f.call("POST", "/v1/users", Some(&big))
        .await
        .assert_error(403, "read_only");
    // Reads still work and nothing was written.
    f.call("GET", "/v1/users", None).await.assert_ok(200);
    assert_eq!(f.file(), config_text("read_only = true"));
}

#[tokio::test]
async fn request_ids_count_every_request_from_one() {
    let f = Fixture::new("");
    let first = f
        .call("GET", "/nope", None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(first, 1);
    f.call("GET", "/v1/users", None).await.assert_ok(200);
    f.call("GET", "/v1/health", None).await.assert_ok(200);
    let fourth = f
        .call("GET", "/nope", None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(fourth, 4);
    // A second state has its own counter (no process-wide statics).
    let g = Fixture::new("");
    assert_eq!(
        g.call("GET", "/nope", None)
            .await
            .assert_error(404, "not_found"),
        1
    );
}

#[tokio::test]
async fn api_settings_apply_without_restart() {
    let f = Fixture::new("");
    f.call("GET", "/v1/users", None).await.assert_ok(200);

    f.rewrite(&config_text(r#"auth_header = "Bearer live""#));
    f.call("GET", "/v1/users", None)
        .await
        .assert_error(401, "unauthorized");

    f.rewrite(&config_text("read_only = true"));
    f.call("DELETE", "/v1/users/bob", None)
        .await
        .assert_error(403, "read_only");

    f.rewrite(&config_text("request_body_limit_bytes = 16"));
    let body = r#"{"username":"carol"}"#; // 20 bytes
    f.call("POST", "/v1/users", Some(body))
        .await
        .assert_error(413, "payload_too_large");

    f.rewrite(&config_text("").replace(
        r#"whitelist = ["127.0.0.1/32", "::1/128"]"#,
        r#"whitelist = ["10.0.0.0/8"]"#,
    ));
    f.call("GET", "/v1/users", None)
        .await
        .assert_error(403, "forbidden");

    f.rewrite(&config_text("").replace("enabled = true", "enabled = false"));
    f.call("GET", "/v1/users", None)
        .await
        .assert_error(503, "api_disabled");
}
