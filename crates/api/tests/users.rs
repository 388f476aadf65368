//! Users endpoints through `oneshot`: CRUD, rotate-secret, validation, merge-patch, If-Match,
//! check order, side effects (sessions, IP state, events) and the file on disk.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use api::{CreateUserResponse, UserInfo};
use common::*;
use http::header::IF_MATCH;

fn users_of(v: &serde_json::Value) -> Vec<UserInfo> {
    serde_json::from_value(v.clone()).expect("UserInfo[] shape")
}

#[tokio::test]
async fn list_and_get_shape_and_order() {
    let f = Fixture::new("");
    let r = f.call("GET", "/v1/users", None).await;
    let users = users_of(r.assert_ok(200));
    let names: Vec<_> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let a = &users[0];
    assert_eq!(a.user_ad_tag, None);
    assert_eq!(a.max_tcp_conns, None);
    assert_eq!(a.expiration_rfc3339, None);
    assert_eq!(a.current_connections, 0);
    assert_eq!(
        a.links.classic,
        [format!(
            "tg://proxy?server=proxy.example.com&port=8443&secret={ALICE_SECRET}"
        )]
    );
    assert_eq!(
        a.links.secure,
        [format!(
            "tg://proxy?server=proxy.example.com&port=8443&secret=dd{ALICE_SECRET}"
        )]
    );
    assert_eq!(
        a.links.tls,
        [format!(
            "tg://proxy?server=proxy.example.com&port=8443&secret=ee{ALICE_SECRET}{}",
            hex_of("example.com")
        )]
    );
    // Null optional fields are present as null, not omitted.
    assert!(r.json["data"][0]
        .get("user_ad_tag")
        .is_some_and(|v| v.is_null()));

    let stats = f.call("GET", "/v1/stats/users", None).await;
    assert_eq!(stats.assert_ok(200), r.assert_ok(200));

    let one = f.call("GET", "/v1/users/bob", None).await;
    let bob: UserInfo = serde_json::from_value(one.assert_ok(200).clone()).expect("UserInfo");
    assert_eq!(bob, users[1]);
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn runtime_fields_come_from_stats() {
    let f = Fixture::new("");
    let st = &f.runtime.stats;
    let h = st.users().handle("alice");
    let _s1 = h.open_session();
    let _s2 = h.open_session();
    h.add_octets_from_client(100);
    h.add_octets_to_client(23);
    let now = Instant::now();
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    for a in ["2001:db8::1", "10.0.0.2", "10.0.0.1"] {
        assert!(st.ips().try_admit(
            "alice",
            ip(a),
            None,
            stats::UniqueIpMode::ActiveWindow,
            Duration::from_secs(30),
            now
        ));
    }
    st.ips().release("alice", ip("10.0.0.2"), now);
    let r = f.call("GET", "/v1/users/alice", None).await;
    let u: UserInfo = serde_json::from_value(r.assert_ok(200).clone()).expect("UserInfo");
    assert_eq!(u.current_connections, 2);
    assert_eq!(u.total_octets, 123);
    assert_eq!(u.active_unique_ips, 2);
    assert_eq!(
        u.active_unique_ips_list,
        [ip("10.0.0.1"), ip("2001:db8::1")]
    );
    assert_eq!(u.recent_unique_ips, 3);
    assert_eq!(
        u.recent_unique_ips_list,
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("2001:db8::1")]
    );
    assert_eq!(r.json["data"]["active_unique_ips_list"][1], "2001:db8::1");
}

#[tokio::test]
async fn create_user_full_and_generated_secret() {
    let f = Fixture::new("");
    let body = r#"{"username":"carol","secret":"AABBCCDDEEFF00112233445566778899",
        "user_ad_tag":"0123456789ABCDEF0123456789abcdef","max_tcp_conns":5,
        "expiration_rfc3339":"2027-01-01T02:00:00+02:00","data_quota_bytes":1000,
        "max_unique_ips":0,"unknown_field":[1,2]}"#;
    let r = f.call("POST", "/v1/users", Some(body)).await;
    let resp: CreateUserResponse =
        serde_json::from_value(r.assert_ok(201).clone()).expect("CreateUserResponse");
    assert_eq!(resp.secret, "aabbccddeeff00112233445566778899");
    let u = &resp.user;
    assert_eq!(u.username, "carol");
    assert_eq!(
        u.user_ad_tag.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(u.max_tcp_conns, Some(5));
    assert_eq!(
        u.expiration_rfc3339.as_deref(),
        Some("2027-01-01T00:00:00Z")
    );
    assert_eq!(u.data_quota_bytes, Some(1000));
    assert_eq!(u.max_unique_ips, Some(0));
    assert!(u.links.classic[0].ends_with("aabbccddeeff00112233445566778899"));
    assert_eq!(r.json["revision"].as_str(), Some(f.revision().as_str()));

    let file = f.file();
    assert!(file.starts_with("# top comment survives"));
    assert!(
        file.contains(r#"carol = "aabbccddeeff00112233445566778899""#),
        "{file}"
    );
    assert!(file.contains("2027-01-01T00:00:00Z"));

    // Generated secret, no Content-Type required.
    let r = f
        .call("POST", "/v1/users", Some(r#"{"username":"dave"}"#))
        .await;
    let resp: CreateUserResponse = serde_json::from_value(r.assert_ok(201).clone()).expect("shape");
    assert_eq!(resp.secret.len(), 32);
    assert!(resp
        .secret
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(f.file().contains(&format!("dave = \"{}\"", resp.secret)));

    // The list is sorted by username byte order.
    let r = f.call("GET", "/v1/users", None).await;
    let names: Vec<String> = users_of(r.assert_ok(200))
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
}

#[tokio::test]
async fn create_errors() {
    let f = Fixture::new("");
    let before = f.file();
    for body in [
        "",
        "not json",
        "{",
        r#"{"username":"x"} trailing"#,
        r#"{"secret":"00112233445566778899aabbccddeeff"}"#,
        r#"{"username":5}"#,
        r#"{"username":"x","max_tcp_conns":-1}"#,
        r#"{"username":"x","data_quota_bytes":"5"}"#,
        r#"["positional"]"#,
        "null",
    ] {
        let r = f.call("POST", "/v1/users", Some(body)).await;
        r.assert_error(400, "bad_request");
        assert_eq!(r.json["error"]["message"], "Invalid JSON body", "{body}");
    }
    for body in [
        r#"{"username":""}"#,
        r#"{"username":"bad name"}"#,
        r#"{"username":"ünï"}"#,
        &format!(r#"{{"username":"{}"}}"#, "a".repeat(65)),
        r#"{"username":"x","secret":"0011"}"#,
        r#"{"username":"x","secret":"zz112233445566778899aabbccddeeff"}"#,
        r#"{"username":"x","user_ad_tag":"0011"}"#,
        r#"{"username":"x","expiration_rfc3339":"2027-01-01T00:00:00"}"#,
        r#"{"username":"x","expiration_rfc3339":"2027-01-01"}"#,
        r#"{"username":"x","expiration_rfc3339":"soon"}"#,
    ] {
        f.call("POST", "/v1/users", Some(body))
            .await
            .assert_error(400, "bad_request");
    }
    let r = f
        .call("POST", "/v1/users", Some(r#"{"username":"alice"}"#))
        .await;
    r.assert_error(409, "user_exists");
    assert_eq!(f.file(), before, "no failed create may touch the file");
}

#[tokio::test]
async fn body_limit_exact_accepted_one_more_refused() {
    let f = Fixture::new("request_body_limit_bytes = 64");
    let base = r#"{"username":"erin"}"#;
    let exact = format!("{base}{}", " ".repeat(64 - base.len()));
    assert_eq!(exact.len(), 64);
    f.call("POST", "/v1/users", Some(&exact))
        .await
        .assert_ok(201);
    let over = format!(
        r#"{{"username":"fred"}}{}"#,
        " ".repeat(64 - base.len() + 1)
    );
    let r = f.call("POST", "/v1/users", Some(&over)).await;
    r.assert_error(413, "payload_too_large");
    let over = format!(r#"{{"username":"fred"}}{}"#, " ".repeat(10_000));
    f.call("PATCH", "/v1/users/alice", Some(&over))
        .await
        .assert_error(413, "payload_too_large");
    let r = f
        .call("POST", "/v1/users/alice/rotate-secret", Some(&over))
        .await;
    r.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn patch_merge_semantics() {
    let f = Fixture::new("");
    let body = r#"{"max_tcp_conns":3,"data_quota_bytes":10,"user_ad_tag":"0123456789abcdef0123456789abcdef","expiration_rfc3339":"2030-06-01T00:00:00Z","max_unique_ips":2}"#;
    let r = f.call("PATCH", "/v1/users/bob", Some(body)).await;
    let u: UserInfo = serde_json::from_value(r.assert_ok(200).clone()).expect("UserInfo");
    assert_eq!(u.max_tcp_conns, Some(3));
    assert_eq!(u.data_quota_bytes, Some(10));
    assert_eq!(u.max_unique_ips, Some(2));
    assert_eq!(
        u.expiration_rfc3339.as_deref(),
        Some("2030-06-01T00:00:00Z")
    );

    // Absent = keep, null = clear, value = set.
    let r = f
        .call(
            "PATCH",
            "/v1/users/bob",
            Some(r#"{"max_tcp_conns":null,"data_quota_bytes":11}"#),
        )
        .await;
    let u: UserInfo = serde_json::from_value(r.assert_ok(200).clone()).expect("UserInfo");
    assert_eq!(u.max_tcp_conns, None);
    assert_eq!(u.data_quota_bytes, Some(11));
    assert_eq!(u.max_unique_ips, Some(2));
    assert!(u.user_ad_tag.is_some());
    let file = f.file();
    assert!(!file.contains("bob = 3"), "{file}");
    assert!(file.contains("bob = 11"), "{file}");

    // Empty object: nothing changes but it is a valid patch.
    f.call("PATCH", "/v1/users/bob", Some("{}"))
        .await
        .assert_ok(200);

    // Secret change closes the user's sessions.
    let r = f
        .call(
            "PATCH",
            "/v1/users/bob",
            Some(&format!(r#"{{"secret":"{ALICE_SECRET}"}}"#)),
        )
        .await;
    r.assert_ok(200);
    f.call("PATCH", "/v1/users/bob", Some(r#"{"secret":null}"#))
        .await
        .assert_error(400, "bad_request");
    f.call("PATCH", "/v1/users/bob", Some(""))
        .await
        .assert_error(400, "bad_request");
    f.call("PATCH", "/v1/users/bob", Some(r#"{"max_unique_ips":-2}"#))
        .await
        .assert_error(400, "bad_request");
    f.call("PATCH", "/v1/users/nobody", Some("{}"))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn effective_limits_from_global_defaults() {
    let text = config_text("").replace(
        "[access.users]",
        "[access]\nuser_max_tcp_conns_global_each = 7\nuser_max_unique_ips_global_each = 4\n\n[access.user_max_tcp_conns]\nbob = 2\n\n[access.users]",
    );
    let f = Fixture::with_text(&text);
    let users = users_of(f.call("GET", "/v1/users", None).await.assert_ok(200));
    assert_eq!(users[0].max_tcp_conns, Some(7));
    assert_eq!(users[0].max_unique_ips, Some(4));
    assert_eq!(users[1].max_tcp_conns, Some(2));
}

/// The handler only edits the config: closing bob's sessions and forgetting his counters is
/// the data plane's publish hook's job (tested there), so the API has no runtime verb for it.
#[tokio::test]
async fn delete_user_cleans_up() {
    let f = Fixture::new("");
    let patch = r#"{"max_tcp_conns":1,"data_quota_bytes":2}"#;
    f.call("PATCH", "/v1/users/bob", Some(patch))
        .await
        .assert_ok(200);

    let r = f.call("DELETE", "/v1/users/bob", None).await;
    assert_eq!(r.assert_ok(200), "bob");
    let file = f.file();
    assert!(!file.contains("bob"), "{file}");
    assert!(file.contains("alice"));
    f.call("GET", "/v1/users/bob", None)
        .await
        .assert_error(404, "not_found");
    f.call("DELETE", "/v1/users/bob", None)
        .await
        .assert_error(404, "not_found");
    f.call("DELETE", "/v1/users/alice", None)
        .await
        .assert_error(409, "last_user_forbidden");
    assert!(f.file().contains("alice"));
}

#[tokio::test]
async fn rotate_secret() {
    let f = Fixture::new("");
    let given = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";
    let r = f
        .call(
            "POST",
            "/v1/users/alice/rotate-secret",
            Some(&format!(r#"{{"secret":"{given}"}}"#)),
        )
        .await;
    let resp: CreateUserResponse = serde_json::from_value(r.assert_ok(200).clone()).expect("shape");
    assert_eq!(resp.secret, given);
    assert!(resp.user.links.classic[0].ends_with(given));
    assert!(f.file().contains(&format!("alice = \"{given}\"")));

    // Empty body (and `{}`) generate a secret.
    let r = f.call("POST", "/v1/users/alice/rotate-secret", None).await;
    let gen: CreateUserResponse = serde_json::from_value(r.assert_ok(200).clone()).expect("shape");
    assert_ne!(gen.secret, given);
    assert_eq!(gen.secret.len(), 32);
    let r = f
        .call("POST", "/v1/users/alice/rotate-secret", Some("{}"))
        .await;
    r.assert_ok(200);

    f.call("POST", "/v1/users/nobody/rotate-secret", None)
        .await
        .assert_error(404, "not_found");
    let r = f
        .call(
            "POST",
            "/v1/users/alice/rotate-secret",
            Some(r#"{"secret":"short"}"#),
        )
        .await;
    r.assert_error(400, "bad_request");
    let r = f
        .call("POST", "/v1/users/alice/rotate-secret", Some("{"))
        .await;
    r.assert_error(400, "bad_request");
}

#[tokio::test]
async fn if_match_and_check_order() {
    let f = Fixture::new("");
    let rev = f.revision();
    let with = |m: &str, p: &str, b: Option<&str>, v: &str| {
        let mut r = req(m, p, b);
        r.headers_mut().insert(IF_MATCH, v.parse().expect("hv"));
        r
    };
    let stale = "0".repeat(64);
    // Body validation (400) before If-Match (409).
    let r = f
        .send(with(
            "PATCH",
            "/v1/users/bob",
            Some(r#"{"secret":"x"}"#),
            &stale,
        ))
        .await;
    r.assert_error(400, "bad_request");
    // If-Match (409) before existence (404) and before the last-user rule.
    let r = f
        .send(with("PATCH", "/v1/users/nobody", Some("{}"), &stale))
        .await;
    r.assert_error(409, "revision_conflict");
    let r = f
        .send(with(
            "POST",
            "/v1/users",
            Some(r#"{"username":"alice"}"#),
            &stale,
        ))
        .await;
    r.assert_error(409, "revision_conflict");
    let r = f.send(with("DELETE", "/v1/users/bob", None, &stale)).await;
    r.assert_error(409, "revision_conflict");
    let r = f
        .send(with("POST", "/v1/users/bob/rotate-secret", None, &stale))
        .await;
    r.assert_error(409, "revision_conflict");
    assert_eq!(f.revision(), rev, "nothing written");
    // Existence (404) with a matching revision; quotes and whitespace are trimmed.
    let r = f
        .send(with(
            "DELETE",
            "/v1/users/nobody",
            None,
            &format!(" \"{rev}\" "),
        ))
        .await;
    r.assert_error(404, "not_found");
    let r = f
        .send(with(
            "PATCH",
            "/v1/users/bob",
            Some("{\"data_quota_bytes\":1}"),
            &format!("\"{rev}\""),
        ))
        .await;
    r.assert_ok(200);
    let new_rev = r.json["revision"].as_str().expect("rev").to_owned();
    assert_ne!(new_rev, rev);
    assert_eq!(new_rev, f.revision());
    // The old revision is now stale.
    let r = f
        .send(with("PATCH", "/v1/users/bob", Some("{}"), &rev))
        .await;
    r.assert_error(409, "revision_conflict");
    let r = f
        .send(with("DELETE", "/v1/users/bob", None, &new_rev))
        .await;
    r.assert_ok(200);
    // Last user: revision checked first, then the rule.
    let r = f
        .send(with("DELETE", "/v1/users/alice", None, &stale))
        .await;
    r.assert_error(409, "revision_conflict");
    let r = f
        .send(with("DELETE", "/v1/users/alice", None, &f.revision()))
        .await;
    r.assert_error(409, "last_user_forbidden");
}

#[tokio::test]
async fn writes_against_a_missing_file_say_so() {
    let f = Fixture::new("");
    // Remove the directory under the store: the file to edit is gone.
    std::fs::remove_dir_all(f.dir.path()).expect("rm");
    let r = f
        .call("POST", "/v1/users", Some(r#"{"username":"zed"}"#))
        .await;
    r.assert_error(503, "config_invalid_on_disk");
    // Reads are served from the in-memory snapshot.
    f.call("GET", "/v1/users", None).await.assert_ok(200);
}

#[tokio::test]
async fn events_record_user_writes() {
    let f = Fixture::new("");
    f.call("POST", "/v1/users", Some(r#"{"username":"carol"}"#))
        .await
        .assert_ok(201);
    f.call("POST", "/v1/users", Some(r#"{"username":"carol"}"#))
        .await
        .assert_error(409, "user_exists");
    f.call("PATCH", "/v1/users/carol", Some("{}"))
        .await
        .assert_ok(200);
    f.call("POST", "/v1/users/carol/rotate-secret", None)
        .await
        .assert_ok(200);
    f.call("DELETE", "/v1/users/carol", None)
        .await
        .assert_ok(200);
    f.call("DELETE", "/v1/users/carol", None)
        .await
        .assert_error(404, "not_found");
    f.call("GET", "/v1/users", None).await.assert_ok(200);
    let ev: Vec<(String, String)> = f
        .runtime
        .stats
        .events()
        .recent(100)
        .into_iter()
        .map(|e| (e.event_type, e.context))
        .collect();
    let want = [
        ("api.user.create.ok", "username=carol"),
        ("api.user.create.failed", "username=carol code=user_exists"),
        ("api.user.patch.ok", "username=carol"),
        ("api.user.rotate_secret.ok", "username=carol"),
        ("api.user.delete.ok", "username=carol"),
        ("api.user.delete.failed", "username=carol code=not_found"),
    ];
    let got: Vec<(&str, &str)> = ev.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn invalid_path_usernames_are_unknown_users() {
    let f = Fixture::new("");
    let long = "a".repeat(10_000);
    for u in [long.as_str(), "a%20b", "bad*name"] {
        f.call("PATCH", &format!("/v1/users/{u}"), Some("{}"))
            .await
            .assert_error(404, "not_found");
        f.call("DELETE", &format!("/v1/users/{u}"), None)
            .await
            .assert_error(404, "not_found");
        let r = f
            .call("POST", &format!("/v1/users/{u}/rotate-secret"), None)
            .await;
        r.assert_error(404, "not_found");
        // Body errors still come first, and a stale If-Match before existence.
        f.call("PATCH", &format!("/v1/users/{u}"), Some("{"))
            .await
            .assert_error(400, "bad_request");
        let mut rq = req("DELETE", &format!("/v1/users/{u}"), None);
        rq.headers_mut()
            .insert(IF_MATCH, "stale".parse().expect("hv"));
        f.send(rq).await.assert_error(409, "revision_conflict");
    }
}

#[tokio::test]
async fn dropped_request_still_completes_side_effects() {
    let f = Fixture::new("");
    let svc = api::router(f.state.clone());
    // Poll the DELETE exactly once (it is then waiting on the write), then drop it, as hyper
    // does when the client disconnects.
    let fut = tower::ServiceExt::oneshot(svc, req("DELETE", "/v1/users/bob", None));
    let polled = tokio::time::timeout(Duration::ZERO, fut).await;
    assert!(polled.is_err(), "the write cannot finish within one poll");
    // The spawned write task finishes on its own: the event is its last step.
    let last_event = || {
        let ev = f.runtime.stats.events().recent(10);
        ev.last().map(|e| e.event_type.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while last_event().as_deref() != Some("api.user.delete.ok") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last_event().as_deref(), Some("api.user.delete.ok"));
    assert!(!f.file().contains("bob"));
}
