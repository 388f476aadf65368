//! `GET`/`PATCH /v1/config`: the editable sections as JSON and sparse, validated, surgical
//! patches of them.

mod common;

use common::*;

#[tokio::test]
async fn get_shows_editable_sections_only() {
    let f = Fixture::new(r#"auth_header = "Bearer x""#);
    let mut r = req("GET", "/v1/config", None);
    r.headers_mut()
        .insert("authorization", "Bearer x".parse().expect("hv"));
    let reply = f.send(r).await;
    let data = reply.assert_ok(200);
    assert_eq!(data["revision"], reply.json["revision"]);
    assert_eq!(data["general"]["use_middle_proxy"], false);
    for hidden in ["access", "server", "network"] {
        assert!(data.get(hidden).is_none(), "{hidden} shown: {data}");
    }
}

#[tokio::test]
async fn patch_merges_validates_and_keeps_the_rest() {
    let f = Fixture::new("");
    let before = f.file();
    let r = f
        .call(
            "PATCH",
            "/v1/config?reload=instant",
            Some(r#"{"censorship": {"tls_domain": "front.example.net"}}"#),
        )
        .await;
    let data = r.assert_ok(200).clone();
    assert_eq!(data["changed"], serde_json::json!(["censorship"]));
    assert_eq!(data["restart_required"], false);
    assert_eq!(data["revision"], r.json["revision"]);
    let after = f.file();
    assert!(after.contains("front.example.net"), "{after}");
    assert!(after.starts_with("# top comment survives"), "{after}");
    // Only the tls_domain line changed.
    let diff: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert_eq!(
        f.state.store().current().config.censorship.tls_domain,
        "front.example.net"
    );

    // Invalid values are refused as a whole; the file is untouched.
    let r = f
        .call(
            "PATCH",
            "/v1/config",
            Some(r#"{"general": {"log_level": "loud"}, "censorship": {"tls_domain": "other.example"}}"#),
        )
        .await;
    r.assert_error(400, "bad_request");
    assert_eq!(f.file(), after);
}

#[tokio::test]
async fn patch_refusals() {
    let f = Fixture::new("");
    let before = f.file();
    for (body, status, code) in [
        (r#"{"access": {"users": {}}}"#, 400, "access_not_editable"),
        (r#"{"server": {"port": 1}}"#, 400, "section_not_editable"),
        (r#"{"network": {}}"#, 400, "section_not_editable"),
        (r#"{"mystery": 1}"#, 400, "section_not_editable"),
        ("{}", 400, "bad_request"),
        ("[]", 400, "bad_request"),
        ("not json", 400, "bad_request"),
    ] {
        f.call("PATCH", "/v1/config", Some(body))
            .await
            .assert_error(status, code);
    }
    let mut stale = req(
        "PATCH",
        "/v1/config",
        Some(r#"{"general": {"log_level": "debug"}}"#),
    );
    stale
        .headers_mut()
        .insert("if-match", "\"stale\"".parse().expect("hv"));
    f.send(stale).await.assert_error(409, "revision_conflict");
    let r = f.call("DELETE", "/v1/config", None).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "GET, PATCH");
    assert_eq!(f.file(), before);

    let ro = Fixture::new("read_only = true");
    ro.call("PATCH", "/v1/config", Some(r#"{"general": {}}"#))
        .await
        .assert_error(403, "read_only");
}
