//! `GET /v1/openapi.json` end to end: served behind the same gates as every route, and every
//! documented operation, called through the real router, answers a documented status with a
//! body that conforms to the documented schema (so the hand-streamed `UserInfo`, the config
//! sections and the reload records cannot drift from the document either).

#[path = "../src/openapi/check.rs"]
mod check;
mod common;

use common::*;
use serde_json::Value;

struct Conformance {
    doc: Value,
    failures: Vec<String>,
    /// Documented `(method, template)` pairs that were answered with their success status.
    succeeded: Vec<(String, String)>,
}

impl Conformance {
    fn new(doc: Value) -> Self {
        Self {
            doc,
            failures: Vec::new(),
            succeeded: Vec::new(),
        }
    }

    /// Checks `reply` for `method template` against the document.
    fn record(&mut self, method: &str, template: &str, reply: &Reply) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        if op.is_null() {
            self.failures
                .push(format!("{method} {template}: not documented"));
            return;
        }
        let responses = &op["responses"];
        let status = reply.status.to_string();
        let Some(response) = responses.get(&status) else {
            self.failures.push(format!(
                "{method} {template}: status {status} is not documented: {}",
                reply.json
            ));
            return;
        };
        let schema = &response["content"]["application/json"]["schema"];
        for e in check::check(&self.doc, schema, &reply.json) {
            self.failures
                .push(format!("{method} {template} -> {status}: {e}"));
        }
        let media = reply.headers["content-type"].to_str().unwrap_or("");
        if !media.starts_with("application/json") {
            self.failures
                .push(format!("{method} {template}: content type {media}"));
        }
        // The readiness probe's 503 while not ready is a success envelope too.
        let success = responses
            .as_object()
            .and_then(|r| r.keys().find(|k| k.starts_with('2')).cloned());
        if success.as_deref() == Some(status.as_str()) || reply.json["ok"] == true {
            self.succeeded
                .push((method.to_owned(), template.to_owned()));
        }
    }

    async fn call(
        &mut self,
        f: &Fixture,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&str>,
    ) -> Reply {
        let reply = f.call(method, path, body).await;
        self.record(method, template, &reply);
        reply
    }
}

#[tokio::test]
async fn served_behind_the_gates() {
    let f = Fixture::new(r#"auth_header = "Bearer s""#);
    let r = f.call("GET", "/v1/openapi.json", None).await;
    r.assert_error(401, "unauthorized");
    let r = f
        .send(req_from("GET", "/v1/openapi.json", None, "10.1.1.1:1"))
        .await;
    r.assert_error(403, "forbidden");
    let mut rq = req("GET", "/v1/openapi.json", None);
    rq.headers_mut()
        .insert("authorization", "Bearer s".parse().expect("hv"));
    let r = f.send(rq).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json; charset=utf-8");
    // The document itself, not an envelope.
    assert!(r.json["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    assert!(r.json.get("ok").is_none());
    // Like every view, other methods are an unknown route.
    Fixture::new("")
        .call("POST", "/v1/openapi.json", None)
        .await
        .assert_error(404, "not_found");

    let off = Fixture::new("read_only = true");
    off.rewrite(&config_text("").replace("enabled = true", "enabled = false"));
    off.call("GET", "/v1/openapi.json", None)
        .await
        .assert_error(503, "api_disabled");
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let f = Fixture::new("");
    let doc = f.call("GET", "/v1/openapi.json", None).await.json;
    let mut c = Conformance::new(doc.clone());

    // Every parameterless GET: the views, the user list, config and the document.
    let plain: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(p, item)| !p.contains('{') && item.get("get").is_some())
        .map(|(p, _)| p.clone())
        .collect();
    for p in &plain {
        c.call(&f, "GET", p, p, None).await;
    }

    let u = "/v1/users/{username}";
    c.call(&f, "POST", "/v1/users", "/v1/users", Some("{"))
        .await;
    let created = r#"{"username":"carol","data_quota_bytes":5,"quota_reset":"daily@03:00","rate_limit_up_bps":8000,"user_ad_tag":"0123456789abcdef0123456789abcdef","expiration_rfc3339":"2030-01-01T00:00:00Z"}"#;
    c.call(&f, "POST", "/v1/users", "/v1/users", Some(created))
        .await;
    c.call(&f, "POST", "/v1/users", "/v1/users", Some(created))
        .await;
    c.call(&f, "GET", u, "/v1/users/carol", None).await;
    c.call(&f, "GET", u, "/v1/users/nobody", None).await;
    c.call(&f, "GET", "/v1/users", "/v1/users", None).await;
    c.call(
        &f,
        "PATCH",
        u,
        "/v1/users/carol",
        Some(r#"{"max_tcp_conns":3,"quota_reset":null}"#),
    )
    .await;
    let mut stale = req("PATCH", "/v1/users/carol", Some("{}"));
    stale
        .headers_mut()
        .insert("if-match", "\"0000\"".parse().expect("hv"));
    let r = f.send(stale).await;
    c.record("PATCH", u, &r);
    r.assert_error(409, "revision_conflict");
    c.call(
        &f,
        "POST",
        "/v1/users/{username}/rotate-secret",
        "/v1/users/carol/rotate-secret",
        None,
    )
    .await;
    for action in ["disable", "enable", "reset-quota"] {
        let template = format!("/v1/users/{{username}}/{action}");
        c.call(
            &f,
            "POST",
            &template,
            &format!("/v1/users/carol/{action}"),
            None,
        )
        .await;
        c.call(
            &f,
            "POST",
            &template,
            &format!("/v1/users/nobody/{action}"),
            None,
        )
        .await;
    }

    c.call(
        &f,
        "PATCH",
        "/v1/config",
        "/v1/config",
        Some(r#"{"censorship":{"tls_domain":"example.org"}}"#),
    )
    .await;
    c.call(
        &f,
        "PATCH",
        "/v1/config",
        "/v1/config",
        Some(r#"{"access":{}}"#),
    )
    .await;
    c.call(&f, "GET", "/v1/config", "/v1/config", None).await;

    c.call(&f, "POST", "/v1/system/reload", "/v1/system/reload", None)
        .await;
    c.call(
        &f,
        "POST",
        "/v1/system/reload",
        "/v1/system/reload",
        Some(r#"{"mode":"sideways"}"#),
    )
    .await;
    c.call(
        &f,
        "GET",
        "/v1/system/reload/{id}",
        "/v1/system/reload/1",
        None,
    )
    .await;
    c.call(
        &f,
        "GET",
        "/v1/system/reload/{id}",
        "/v1/system/reload/99",
        None,
    )
    .await;

    c.call(&f, "DELETE", u, "/v1/users/carol", None).await;
    c.call(&f, "DELETE", u, "/v1/users/bob", None).await;
    c.call(&f, "DELETE", u, "/v1/users/alice", None).await;

    // The gates' errors on a write.
    let ro = Fixture::new("read_only = true");
    let r = ro
        .call("POST", "/v1/users", Some(r#"{"username":"x"}"#))
        .await;
    r.assert_error(403, "read_only");
    c.record("POST", "/v1/users", &r);

    assert!(c.failures.is_empty(), "{:#?}", c.failures);
    // Every documented operation was answered with its documented success at least once.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let key = (method.to_uppercase(), path.clone());
            assert!(c.succeeded.contains(&key), "{key:?} never succeeded");
        }
    }
}
