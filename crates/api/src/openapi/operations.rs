//! The table of documented operations besides the `ReadRoute` views: method, path template,
//! success status and `data` type, request body, and the route's own error codes.
//!
//! Owns: what each users, config, reload and document route sends and reads. Must not: build
//! OpenAPI objects (the parent module does) or route requests (tests check the router agrees).

use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use super::PATH;
use crate::config_routes::{ConfigSectionsData, PatchConfigResponse};
use crate::reload::{ReloadRecord, ReloadRequest};
use crate::users::dto::{
    CreateUserRequest, CreateUserResponse, PatchUserRequest, RotateSecretRequest, UserInfo,
};
use crate::users::ResetQuotaResponse;
use crate::views::schema::{component, list_of, Components};

/// What a route reads from the request body.
#[derive(Clone, Copy)]
pub enum BodyDoc {
    None,
    Required(fn(&mut Components) -> RefOr<Schema>),
    Optional(fn(&mut Components) -> RefOr<Schema>),
}

/// One documented operation that is not a `ReadRoute` view.
#[derive(Clone)]
pub struct OperationDoc {
    pub method: HttpMethod,
    /// OpenAPI path template (`{username}`, `{id}`).
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Status of the success envelope.
    pub status: u16,
    pub data: fn(&mut Components) -> RefOr<Schema>,
    pub body: BodyDoc,
    /// Writes config or runtime state: `If-Match`, the `read_only` gate and its errors.
    pub mutating: bool,
    /// Route-specific error codes (the gates', the body's and the write's are added).
    pub errors: &'static [&'static str],
}

fn user_info(c: &mut Components) -> RefOr<Schema> {
    component::<UserInfo>(c)
}

fn with_secret(c: &mut Components) -> RefOr<Schema> {
    component::<CreateUserResponse>(c)
}

fn string(_: &mut Components) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The deleted username."))
        .into()
}

/// The raw document (not enveloped): only its required top-level members are described.
fn document(_: &mut Components) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .property("openapi", ObjectBuilder::new().schema_type(Type::String))
        .property("info", ObjectBuilder::new().schema_type(Type::Object))
        .property("paths", ObjectBuilder::new().schema_type(Type::Object))
        .required("openapi")
        .required("info")
        .required("paths")
        .into()
}

/// Every documented operation besides the views, in docs/API.md's order.
pub const OPERATIONS: &[OperationDoc] = &[
    OperationDoc {
        method: HttpMethod::Get,
        path: "/v1/users",
        id: "listUsers",
        summary: "All configured users, sorted by username",
        tag: "users",
        status: 200,
        data: list_of::<UserInfo>,
        body: BodyDoc::None,
        mutating: false,
        errors: &[],
    },
    OperationDoc {
        method: HttpMethod::Get,
        path: "/v1/stats/users",
        id: "listUserStats",
        summary: "Same as GET /v1/users",
        tag: "users",
        status: 200,
        data: list_of::<UserInfo>,
        body: BodyDoc::None,
        mutating: false,
        errors: &[],
    },
    OperationDoc {
        method: HttpMethod::Post,
        path: "/v1/users",
        id: "createUser",
        summary: "Create a user (a secret is generated when absent)",
        tag: "users",
        status: 201,
        data: with_secret,
        body: BodyDoc::Required(component::<CreateUserRequest>),
        mutating: true,
        errors: &["user_exists", "internal_error", "config_invalid_on_disk"],
    },
    OperationDoc {
        method: HttpMethod::Get,
        path: "/v1/users/{username}",
        id: "getUser",
        summary: "One user",
        tag: "users",
        status: 200,
        data: user_info,
        body: BodyDoc::None,
        mutating: false,
        errors: &["not_found"],
    },
    OperationDoc {
        method: HttpMethod::Patch,
        path: "/v1/users/{username}",
        id: "patchUser",
        summary: "Change a user's fields (absent keeps, null clears)",
        tag: "users",
        status: 200,
        data: user_info,
        body: BodyDoc::Required(component::<PatchUserRequest>),
        mutating: true,
        errors: &["not_found", "internal_error", "config_invalid_on_disk"],
    },
    OperationDoc {
        method: HttpMethod::Delete,
        path: "/v1/users/{username}",
        id: "deleteUser",
        summary: "Delete a user (never the last one)",
        tag: "users",
        status: 200,
        data: string,
        body: BodyDoc::None,
        mutating: true,
        errors: &[
            "not_found",
            "last_user_forbidden",
            "internal_error",
            "config_invalid_on_disk",
        ],
    },
    OperationDoc {
        method: HttpMethod::Post,
        path: "/v1/users/{username}/rotate-secret",
        id: "rotateUserSecret",
        summary: "Replace a user's secret (generated when the body has none)",
        tag: "users",
        status: 200,
        data: with_secret,
        body: BodyDoc::Optional(component::<RotateSecretRequest>),
        mutating: true,
        errors: &["not_found", "internal_error", "config_invalid_on_disk"],
    },
    OperationDoc {
        method: HttpMethod::Post,
        path: "/v1/users/{username}/enable",
        id: "enableUser",
        summary: "Enable a user (removes the disabled override)",
        tag: "users",
        status: 200,
        data: user_info,
        body: BodyDoc::None,
        mutating: true,
        errors: &["not_found", "internal_error", "config_invalid_on_disk"],
    },
    OperationDoc {
        method: HttpMethod::Post,
        path: "/v1/users/{username}/disable",
        id: "disableUser",
        summary: "Disable a user and close its sessions",
        tag: "users",
        status: 200,
        data: user_info,
        body: BodyDoc::None,
        mutating: true,
        errors: &["not_found", "internal_error", "config_invalid_on_disk"],
    },
    OperationDoc {
        method: HttpMethod::Post,
        path: "/v1/users/{username}/reset-quota",
        id: "resetUserQuota",
        summary: "Reset a user's data-quota counter",
        tag: "users",
        status: 200,
        data: component::<ResetQuotaResponse>,
        body: BodyDoc::None,
        mutating: true,
        errors: &["not_found"],
    },
    OperationDoc {
        method: HttpMethod::Get,
        path: "/v1/config",
        id: "getConfig",
        summary: "The editable config sections",
        tag: "config",
        status: 200,
        data: component::<ConfigSectionsData>,
        body: BodyDoc::None,
        mutating: false,
        errors: &["internal_error", "config_invalid_on_disk"],
    },
    OperationDoc {
        method: HttpMethod::Patch,
        path: "/v1/config",
        id: "patchConfig",
        summary: "Deep-merge a sparse patch into the editable sections",
        tag: "config",
        status: 200,
        data: component::<PatchConfigResponse>,
        body: BodyDoc::Required(config_patch),
        mutating: true,
        errors: &[
            "access_not_editable",
            "section_not_editable",
            "internal_error",
            "config_invalid_on_disk",
        ],
    },
    OperationDoc {
        method: HttpMethod::Post,
        path: "/v1/system/reload",
        id: "reloadConfig",
        summary: "Load the config file from disk and apply it",
        tag: "config",
        status: 202,
        data: component::<ReloadRecord>,
        body: BodyDoc::Optional(component::<ReloadRequest>),
        mutating: true,
        errors: &["internal_error"],
    },
    OperationDoc {
        method: HttpMethod::Get,
        path: "/v1/system/reload/{id}",
        id: "getReload",
        summary: "One of the last 32 reload outcomes",
        tag: "config",
        status: 200,
        data: component::<ReloadRecord>,
        body: BodyDoc::None,
        mutating: false,
        errors: &["not_found"],
    },
    OperationDoc {
        method: HttpMethod::Get,
        path: PATH,
        id: "getOpenApi",
        summary: "This document (served as is, without the success envelope)",
        tag: "system",
        status: 200,
        data: document,
        body: BodyDoc::None,
        mutating: false,
        errors: &[],
    },
];

fn config_patch(_: &mut Components) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A sparse patch of the editable sections (`general`, `timeouts`, `censorship`, \
             `upstreams`, `show_link`, `dc_overrides`): objects merge, `null` removes a key.",
        ))
        .into()
}
