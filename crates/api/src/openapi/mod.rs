//! `GET /v1/openapi.json`: an OpenAPI 3.1 description of the `/v1` API, built per request from
//! the DTO types (their `utoipa::ToSchema` derives) and the route tables.
//!
//! Owns: turning the route tables (`operations` for the non-view routes) into paths, the
//! success/error envelope schemas, the per-status error codes (`errors`), the `If-Match` and
//! `Authorization` descriptions. The `data` schema
//! of every GET view comes from `views::schema`, so a new `ReadRoute` is documented by
//! construction. Must not: decide routing (the router does; tests check the two agree) or
//! cache the document in a process-wide static (it is cheap, and rarely fetched).
//!
//! The document itself is served raw, not inside the success envelope: every OpenAPI tool
//! expects the document at the top level of the URL it fetches. Errors keep the error envelope.

#[cfg(test)]
pub(crate) mod check;
mod errors;
mod operations;
#[cfg(test)]
mod tests;

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, Paths,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, Required,
};

use crate::views::schema::{component, data_schema, limit_query, Components};
use crate::views::ReadRoute;

pub use errors::{codes_by_status, ERROR_CODES};
pub use operations::{BodyDoc, OperationDoc, OPERATIONS};

/// The route's path.
pub const PATH: &str = "/v1/openapi.json";

/// Media type of every documented body (responses add `; charset=utf-8`).
const JSON: &str = "application/json";

/// The readiness probe's operation id (its 503 carries the success envelope too).
const READY_OPERATION: &str = "getHealthReady";

/// `config::validate_username`'s rule.
const USERNAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// Name of the `Authorization` security scheme.
const AUTH_SCHEME: &str = "authorization";

/// `{"ok":true,"data":<data>,"revision":"<sha256>"}`.
fn success_envelope(data: RefOr<Schema>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "ok",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([true])),
        )
        .property("data", data)
        .property(
            "revision",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("SHA-256 of the config file on disk")),
        )
        .required("ok")
        .required("data")
        .required("revision")
        .into()
}

fn string_param(
    name: &str,
    place: ParameterIn,
    required: bool,
    description: &str,
) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
}

fn path_params(path: &str) -> Vec<ParameterBuilder> {
    let mut out = Vec::new();
    if path.contains("{username}") {
        // Any other text names no user (404), so the pattern is the validation rule.
        out.push(
            string_param(
                "username",
                ParameterIn::Path,
                true,
                "Username, as written in `[access.users]`",
            )
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(USERNAME_PATTERN)),
            )),
        );
    }
    if path.contains("{id}") {
        out.push(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("`reload_id` returned by POST /v1/system/reload"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )),
        );
    }
    out
}

struct Built {
    method: HttpMethod,
    path: String,
    op: utoipa::openapi::path::Operation,
}

#[allow(clippy::too_many_arguments)]
fn operation(
    c: &mut Components,
    id: &str,
    summary: &str,
    tag: &str,
    path: &str,
    status: u16,
    success: RefOr<Schema>,
    body: BodyDoc,
    mutating: bool,
    route_errors: &[&'static str],
    extra: Vec<ParameterBuilder>,
) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .tag(tag);
    for p in path_params(path).into_iter().chain(extra) {
        op = op.parameter(p);
    }
    if mutating {
        op = op.parameter(string_param(
            "If-Match",
            ParameterIn::Header,
            false,
            "Expected config revision (quotes optional); 409 revision_conflict when it differs",
        ));
    }
    let body_schema = match body {
        BodyDoc::None => None,
        BodyDoc::Required(f) => Some((f(c), true)),
        BodyDoc::Optional(f) => Some((f(c), false)),
    };
    if let Some((schema, required)) = body_schema {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .description(Some(if required {
                    "JSON object"
                } else {
                    "JSON object, or an empty body"
                }))
                .build(),
        ));
    }
    let mut responses = ResponsesBuilder::new().response(
        status.to_string(),
        ResponseBuilder::new().description("Success").content(
            JSON,
            ContentBuilder::new().schema(Some(success.clone())).build(),
        ),
    );
    let has_body = !matches!(body, BodyDoc::None);
    for (code, codes) in codes_by_status(route_errors, mutating, has_body) {
        let mut error = errors::error_schema(c, &codes);
        let mut description = errors::describe(&codes);
        // `/v1/health/ready` answers 503 with its success envelope while not ready; the gate's
        // 503 api_disabled is still the error envelope.
        if code == 503 && id == READY_OPERATION {
            error = OneOfBuilder::new().item(success.clone()).item(error).into();
            description = format!("Not ready (success envelope, `ready: false`), or {description}");
        }
        responses = responses.response(
            code.to_string(),
            ResponseBuilder::new()
                .description(description)
                .content(JSON, ContentBuilder::new().schema(Some(error)).build()),
        );
    }
    op.responses(responses.build()).build()
}

fn view_operation(route: ReadRoute, c: &mut Components) -> Built {
    let path = route.path();
    let id = view_operation_id(path);
    let data = data_schema(route, c);
    let mut extra = Vec::new();
    if let Some((description, max)) = limit_query(route) {
        extra.push(
            ParameterBuilder::new()
                .name("limit")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1))
                        .maximum(Some(max as f64)),
                )),
        );
    }
    let summary = format!("View `{path}`");
    let op = operation(
        c,
        &id,
        &summary,
        "views",
        path,
        200,
        success_envelope(data),
        BodyDoc::None,
        false,
        &[],
        extra,
    );
    Built {
        method: HttpMethod::Get,
        path: path.to_owned(),
        op,
    }
}

/// `/v1/runtime/me_pool_state` → `getRuntimeMePoolState`.
pub fn view_operation_id(path: &str) -> String {
    let mut id = String::from("get");
    let mut upper = true;
    for ch in path.trim_start_matches("/v1/").chars() {
        if ch.is_ascii_alphanumeric() {
            if upper {
                id.push(ch.to_ascii_uppercase());
            } else {
                id.push(ch);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    id
}

/// Builds the whole document.
pub fn build() -> OpenApi {
    let mut c = Components::new();
    let mut built: Vec<Built> = ReadRoute::ALL
        .into_iter()
        .map(|r| view_operation(r, &mut c))
        .collect();
    for d in OPERATIONS {
        let data = (d.data)(&mut c);
        let success = if d.path == PATH {
            data
        } else {
            success_envelope(data)
        };
        let op = operation(
            &mut c,
            d.id,
            d.summary,
            d.tag,
            d.path,
            d.status,
            success,
            d.body,
            d.mutating,
            d.errors,
            Vec::new(),
        );
        built.push(Built {
            method: d.method.clone(),
            path: d.path.to_owned(),
            op,
        });
    }
    let mut paths = Paths::new();
    for b in built {
        match paths.paths.get_mut(&b.path) {
            Some(item) => item.merge_operations(PathItem::new(b.method, b.op)),
            None => {
                paths.paths.insert(b.path, PathItem::new(b.method, b.op));
            }
        }
    }
    // The envelope itself, so clients can name it.
    component::<crate::envelope::ErrorEnvelope>(&mut c);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(c)
        .security_scheme(
            AUTH_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Exact value of `server.api.auth_header`; only required when that is set",
            ))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mtproxyd control-plane API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Every response is JSON. Success: `{\"ok\":true,\"data\":...,\"revision\":...}`; \
                     error: `{\"ok\":false,\"error\":{\"code\",\"message\"},\"request_id\":N}`. \
                     Routes match the raw path exactly; an unknown route is 404 `not_found`, an \
                     unsupported method on `/v1/users/{username}`, `/v1/config` or \
                     `/v1/system/reload` is 405 `method_not_allowed` with `Allow`.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        // `{}` first: the header is optional unless `server.api.auth_header` is configured.
        .security(Some([
            SecurityRequirement::default(),
            SecurityRequirement::new(AUTH_SCHEME, Vec::<String>::new()),
        ]))
        .build()
}

/// The serialized document.
pub fn to_bytes() -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&build())
}

/// The `GET /v1/openapi.json` response: the raw document (see the module doc).
pub fn response() -> Result<http::Response<crate::ApiBody>, crate::ApiError> {
    let body = to_bytes().map_err(|e| {
        tracing::error!(error = %e, "openapi serialization failed");
        crate::ApiError::internal("OpenAPI document serialization failed")
    })?;
    Ok(crate::envelope::json_response(http::StatusCode::OK, body))
}
