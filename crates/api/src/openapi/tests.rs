use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::Value;

use super::*;
use crate::envelope::ApiError;
use crate::routes::{match_users, Matched, UserAction, UserRoute};

fn doc() -> Value {
    let bytes = to_bytes().expect("serializes");
    serde_json::from_slice(&bytes).expect("valid JSON")
}

/// Documented `(method, path template)` pairs.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// The template of a matched users route. Exhaustive, so a new route or action must be
/// documented before this compiles.
fn users_template(route: UserRoute<'_>) -> (Method, &'static str) {
    match route {
        UserRoute::List => (Method::GET, "/v1/users"),
        UserRoute::Create => (Method::POST, "/v1/users"),
        UserRoute::Get(_) => (Method::GET, "/v1/users/{username}"),
        UserRoute::Patch(_) => (Method::PATCH, "/v1/users/{username}"),
        UserRoute::Delete(_) => (Method::DELETE, "/v1/users/{username}"),
        UserRoute::RotateSecret(_) => (Method::POST, "/v1/users/{username}/rotate-secret"),
        UserRoute::Action(_, UserAction::Enable) => (Method::POST, "/v1/users/{username}/enable"),
        UserRoute::Action(_, UserAction::Disable) => (Method::POST, "/v1/users/{username}/disable"),
        UserRoute::Action(_, UserAction::ResetQuota) => {
            (Method::POST, "/v1/users/{username}/reset-quota")
        }
    }
}

#[test]
fn document_is_openapi_31_json() {
    let d = doc();
    let version = d["openapi"].as_str().expect("openapi member");
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(d["components"]["securitySchemes"]["authorization"].is_object());
    // Every `$ref` names a schema that is present.
    let text = d.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap_or_default();
        assert!(
            d["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
}

#[test]
fn every_route_the_router_knows_is_documented() {
    let d = doc();
    let have = documented(&d);
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    for route in ReadRoute::ALL {
        want.insert(("GET".into(), route.path().into()));
        assert_eq!(
            d["paths"][route.path()]["get"]["operationId"],
            view_operation_id(route.path())
        );
    }
    // One concrete request per users route shape, through the real matcher.
    for (method, path) in [
        (Method::GET, "/v1/users"),
        (Method::GET, "/v1/stats/users"),
        (Method::POST, "/v1/users"),
        (Method::GET, "/v1/users/alice"),
        (Method::PATCH, "/v1/users/alice"),
        (Method::DELETE, "/v1/users/alice"),
        (Method::POST, "/v1/users/alice/rotate-secret"),
        (Method::POST, "/v1/users/alice/enable"),
        (Method::POST, "/v1/users/alice/disable"),
        (Method::POST, "/v1/users/alice/reset-quota"),
    ] {
        let Matched::Route(route) = match_users(&method, path) else {
            panic!("{method} {path} is not a users route");
        };
        let (m, template) = users_template(route);
        assert_eq!(m, method, "{path}");
        // `/v1/stats/users` is an alias of the list, documented under its own path.
        let template = if path == "/v1/stats/users" {
            path
        } else {
            template
        };
        want.insert((method.to_string(), template.into()));
    }
    for method in ["GET", "PATCH"] {
        want.insert((method.into(), crate::config_routes::PATH.into()));
    }
    want.insert(("POST".into(), crate::reload::PATH.into()));
    want.insert(("GET".into(), format!("{}/{{id}}", crate::reload::PATH)));
    want.insert(("GET".into(), PATH.into()));
    assert_eq!(have, want, "documented routes differ from the router's");
}

#[test]
fn mutating_routes_take_if_match_and_every_route_has_its_errors() {
    let d = doc();
    for (method, path) in documented(&d) {
        let op = &d["paths"][&path][method.to_lowercase()];
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let mutating = method != "GET";
        assert_eq!(params.contains(&"If-Match"), mutating, "{method} {path}");
        for status in ["401", "403", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
        if mutating {
            let codes = &op["responses"]["409"]["content"]["application/json"]["schema"]["allOf"]
                [1]["properties"]["error"]["properties"]["code"]["enum"];
            assert!(
                codes
                    .as_array()
                    .is_some_and(|c| c.contains(&Value::from("revision_conflict"))),
                "{method} {path}: {codes}"
            );
        }
        if path.contains("{username}") || path.contains("{id}") {
            assert!(op["responses"]["404"].is_object(), "{method} {path}");
        }
    }
}

#[test]
fn error_table_covers_every_api_error() {
    let all = [
        ApiError::bad_request("x"),
        ApiError::not_found("x"),
        ApiError::route_not_found(),
        ApiError::user_not_found(),
        ApiError::internal("x"),
        ApiError::api_disabled(),
        ApiError::forbidden(),
        ApiError::unauthorized(),
        ApiError::method_not_allowed(),
        ApiError::method_not_allowed_for("GET"),
        ApiError::not_editable("access_not_editable", "x"),
        ApiError::not_editable("section_not_editable", "x"),
        ApiError::read_only(),
        ApiError::payload_too_large(1),
        ApiError::config_invalid_on_disk("x"),
        ApiError::revision_conflict(),
        ApiError::user_exists(),
        ApiError::last_user(),
    ];
    for e in all {
        assert!(
            ERROR_CODES.contains(&(e.code, e.status.as_u16())),
            "{} {} is missing from ERROR_CODES",
            e.status,
            e.code
        );
    }
    for op in OPERATIONS {
        for code in op.errors {
            assert!(
                ERROR_CODES.iter().any(|(c, _)| c == code),
                "{}: unknown code {code}",
                op.id
            );
        }
    }
    let statuses: BTreeSet<u16> = ERROR_CODES.iter().map(|(_, s)| *s).collect();
    assert!(statuses.iter().all(|s| StatusCode::from_u16(*s).is_ok()));
}

#[test]
fn user_info_schema_names_every_field_of_the_owned_dto() {
    // The streamed renderer is checked against the schema end to end in tests/openapi.rs; here
    // the owned DTO and the schema derived from it agree on the member names.
    let d = doc();
    let schema = &d["components"]["schemas"]["UserInfo"];
    let props: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(props, required, "UserInfo always sends every member");
    let info = crate::UserInfo {
        username: "a".into(),
        enabled: true,
        in_runtime: true,
        user_ad_tag: None,
        max_tcp_conns: None,
        expiration_rfc3339: None,
        data_quota_bytes: None,
        max_unique_ips: None,
        rate_limit_up_bps: None,
        rate_limit_down_bps: None,
        quota_reset: None,
        last_quota_reset_epoch_secs: None,
        next_quota_reset_epoch_secs: None,
        current_connections: 0,
        active_unique_ips: 0,
        active_unique_ips_list: vec!["10.0.0.1".parse().expect("ip")],
        recent_unique_ips: 0,
        recent_unique_ips_list: Vec::new(),
        total_octets: 0,
        links: crate::UserLinks {
            classic: Vec::new(),
            secure: Vec::new(),
            tls: vec!["tg://proxy".into()],
        },
    };
    let v = serde_json::to_value(&info).expect("json");
    let errors = check::check(
        &d,
        &serde_json::json!({"$ref": "#/components/schemas/UserInfo"}),
        &v,
    );
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn checker_reports_drift() {
    let d = doc();
    let health = serde_json::json!({"$ref": "#/components/schemas/HealthData"});
    let good = serde_json::json!({"status": "ok", "read_only": false});
    assert!(check::check(&d, &health, &good).is_empty());
    for bad in [
        serde_json::json!({"status": "ok", "read_only": false, "extra": 1}),
        serde_json::json!({"status": "ok"}),
        serde_json::json!({"status": "ok", "read_only": "no"}),
        serde_json::json!({"status": null, "read_only": false}),
    ] {
        assert!(!check::check(&d, &health, &bad).is_empty(), "{bad}");
    }
    // Nullable members accept null, skipped ones must not be null.
    let ready = serde_json::json!({"$ref": "#/components/schemas/HealthReadyData"});
    let v = serde_json::json!({"ready": true, "status": "ready", "reason": null,
        "admission_open": true, "healthy_upstreams": 1, "total_upstreams": 1});
    assert!(check::check(&d, &ready, &v).is_empty());
    let info = serde_json::json!({"$ref": "#/components/schemas/SystemInfoData"});
    let errors = check::check(&d, &info, &serde_json::json!({"git_commit": null}));
    assert!(
        errors.iter().any(|e| e.contains("git_commit")),
        "{errors:?}"
    );
}

/// Fixed-string fields carry their value set (docs/API.md's lists), the JSON type stays string.
#[test]
fn fixed_string_fields_are_enums() {
    let d = doc();
    let schemas = &d["components"]["schemas"];
    let startup = serde_json::json!(["pending", "initializing", "ready", "failed", "skipped"]);
    let reasons = serde_json::json!(["feature_disabled", "source_unavailable"]);
    for (schema, field, want) in [
        (
            "MeWriterStatus",
            "state",
            serde_json::json!(["warm", "active", "draining"]),
        ),
        ("RuntimeInitializationData", "status", startup.clone()),
        ("RuntimeInitializationMeData", "status", startup.clone()),
        ("RuntimeGatesData", "startup_status", startup),
        (
            "RuntimeInitializationComponentData",
            "status",
            serde_json::json!(["pending", "running", "ready", "failed", "skipped"]),
        ),
        (
            "RuntimeInitializationData",
            "transport_mode",
            serde_json::json!(["middle_proxy", "direct"]),
        ),
        ("MeWritersData", "reason", reasons.clone()),
        ("UpstreamsData", "reason", reasons),
        (
            "RuntimeMePoolStateData",
            "reason",
            serde_json::json!(["source_unavailable"]),
        ),
        (
            "RuntimeEdgeEventsData",
            "reason",
            serde_json::json!(["feature_disabled"]),
        ),
        (
            "UpstreamStatus",
            "route_kind",
            serde_json::json!(["direct", "socks4", "socks5", "shadowsocks"]),
        ),
        (
            "MinimalDcPathData",
            "ip_preference",
            serde_json::json!([
                "unknown",
                "prefer_v4",
                "prefer_v6",
                "both_work",
                "unavailable",
                null
            ]),
        ),
        (
            "RuntimeMeSelftestBndData",
            "addr_state",
            serde_json::json!(["ok", "bogon", "error"]),
        ),
        (
            "RuntimeMeSelftestBndData",
            "port_state",
            serde_json::json!(["ok", "zero", "error"]),
        ),
        (
            "RuntimeMeSelftestIpFamilyData",
            "state",
            serde_json::json!(["good", "bogon", "loopback"]),
        ),
        (
            "RuntimeMeSelftestPidData",
            "state",
            serde_json::json!(["one", "non-one"]),
        ),
        (
            "RuntimeMePoolStateRefillDcData",
            "family",
            serde_json::json!(["V4", "V6"]),
        ),
        (
            "EffectiveMiddleProxyLimits",
            "floor_mode",
            serde_json::json!(["static", "adaptive"]),
        ),
        (
            "EffectiveMiddleProxyLimits",
            "writer_pick_mode",
            serde_json::json!(["sorted_rr", "p2c"]),
        ),
        (
            "EffectiveUserIpPolicyLimits",
            "mode",
            serde_json::json!(["active_window", "time_window", "combined"]),
        ),
        (
            "SecurityPostureData",
            "log_level",
            serde_json::json!(["debug", "verbose", "normal", "silent"]),
        ),
        (
            "ZeroCoreData",
            "telemetry_me_level",
            serde_json::json!(["off", "normal", "verbose"]),
        ),
        (
            "ReloadRecord",
            "state",
            serde_json::json!(["accepted", "succeeded"]),
        ),
        (
            "ReloadRecord",
            "mode",
            serde_json::json!(["instant", "drain"]),
        ),
        (
            "HealthReadyData",
            "reason",
            serde_json::json!(["admission_closed", "no_healthy_upstreams", null]),
        ),
    ] {
        let prop = &schemas[schema]["properties"][field];
        assert_eq!(prop["enum"], want, "{schema}.{field}: {prop}");
        let ty = &prop["type"];
        assert!(
            ty == "string" || ty == &serde_json::json!(["string", "null"]),
            "{schema}.{field}: {prop}"
        );
    }
}
