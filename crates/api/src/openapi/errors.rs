//! Error codes by HTTP status, and the per-response error schema: the derived `ErrorEnvelope`
//! with `error.code` narrowed to the codes that status can carry on that route.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{AdditionalProperties, AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::envelope::ErrorEnvelope;
use crate::views::schema::{component, Components};

/// Every `error.code` the API sends, with its status (tests check `ApiError`'s constructors
/// against this table).
pub const ERROR_CODES: &[(&str, u16)] = &[
    ("bad_request", 400),
    ("access_not_editable", 400),
    ("section_not_editable", 400),
    ("unauthorized", 401),
    ("forbidden", 403),
    ("read_only", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("revision_conflict", 409),
    ("user_exists", 409),
    ("last_user_forbidden", 409),
    ("payload_too_large", 413),
    ("internal_error", 500),
    ("api_disabled", 503),
    ("config_invalid_on_disk", 503),
];

/// The gates run before routing, so every route can answer these.
const GATE_CODES: &[&str] = &["unauthorized", "forbidden", "api_disabled"];
/// Routes that write: the `read_only` gate and `If-Match`.
const WRITE_CODES: &[&str] = &["read_only", "revision_conflict"];
/// Routes that read a body: its size limit and JSON decoding.
const BODY_CODES: &[&str] = &["bad_request", "payload_too_large"];

fn status_of(code: &str) -> Option<u16> {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, status)| *status)
}

/// An operation's error codes grouped by status (codes missing from [`ERROR_CODES`] are a
/// programming error caught by the tests, and left out here).
pub fn codes_by_status(
    route_codes: &[&'static str],
    mutating: bool,
    has_body: bool,
) -> BTreeMap<u16, Vec<&'static str>> {
    let mut all: Vec<&'static str> = GATE_CODES.to_vec();
    if mutating {
        all.extend_from_slice(WRITE_CODES);
    }
    if has_body {
        all.extend_from_slice(BODY_CODES);
    }
    all.extend_from_slice(route_codes);
    let mut out: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for code in all {
        if let Some(status) = status_of(code) {
            let codes = out.entry(status).or_default();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
    }
    out
}

/// `ErrorEnvelope` whose `error.code` is one of `codes`.
pub(super) fn error_schema(c: &mut Components, codes: &[&str]) -> RefOr<Schema> {
    let envelope = component::<ErrorEnvelope>(c);
    // Narrowing parts leave the other members to the envelope, hence open objects.
    let narrowed = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .property(
            "error",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::FreeForm(true)))
                .property(
                    "code",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(codes.iter().copied())),
                ),
        );
    AllOfBuilder::new().item(envelope).item(narrowed).into()
}

/// Response description listing the codes.
pub(super) fn describe(codes: &[&str]) -> String {
    let list: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    format!("Error envelope: {}", list.join(", "))
}
