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

#[tokio::test]
async fn system_reload_applies_the_file_and_is_recorded() {
    let f = Fixture::new("");
    let path = f.state.store().path().to_path_buf();
    // A hand edit that no watcher has picked up yet (the fixture runs none).
    let text = f.file().replace(
        "[access.users]",
        "[access.users]\ncarol = \"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\"",
    );
    std::fs::write(&path, &text).expect("write");
    let r = f.call("POST", "/v1/system/reload", None).await;
    let data = r.assert_ok(202).clone();
    assert_eq!(data["state"], "accepted");
    assert_eq!(data["mode"], "instant");
    assert_eq!(data["failure_policy"], "keep_new");
    assert_eq!(data["config_revision"], r.json["revision"]);
    assert!(f
        .state
        .store()
        .current()
        .config
        .access
        .users
        .contains_key("carol"));
    let id = data["reload_id"].as_u64().expect("id");
    let s = f
        .call("GET", &format!("/v1/system/reload/{id}"), None)
        .await;
    let st = s.assert_ok(200);
    assert_eq!(st["state"], "succeeded");
    assert!(st["finished_at_epoch_secs"].as_u64() >= st["accepted_at_epoch_secs"].as_u64());

    let r = f
        .call(
            "POST",
            "/v1/system/reload",
            Some(r#"{"mode":"drain","timeout_secs":30,"failure_policy":"rollback"}"#),
        )
        .await;
    assert_eq!(r.assert_ok(202)["mode"], "drain");
    for bad in [
        r#"{"mode":"slow"}"#,
        r#"{"mode":"instant","timeout_secs":5}"#,
        r#"{"mode":"drain","timeout_secs":0}"#,
        r#"{"failure_policy":"pray"}"#,
    ] {
        f.call("POST", "/v1/system/reload", Some(bad))
            .await
            .assert_error(400, "bad_request");
    }
    // A file that does not load is refused before anything is recorded.
    std::fs::write(&path, "[broken").expect("write");
    f.call("POST", "/v1/system/reload", None)
        .await
        .assert_error(400, "bad_request");
    f.call("GET", "/v1/system/reload/99", None)
        .await
        .assert_error(404, "not_found");
    let r = f.call("GET", "/v1/system/reload", None).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "POST");
}
