//! Request and response DTOs of the users endpoints, and request validation (docs/DECISIONS.md #10).
//!
//! Requests are decoded leniently (unknown fields ignored) and then validated into the store's
//! edit types; PATCH keeps the absent / `null` / value distinction (docs/DECISIONS.md #11).

use std::net::IpAddr;

use config::{AdTag, FieldPatch, NewUser, UserPatch, UserSecret};
use serde::{Deserialize, Deserializer, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::envelope::ApiError;

/// `POST /v1/users` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct CreateUserRequest {
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub username: String,
    #[serde(default)]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub secret: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub user_ad_tag: Option<String>,
    #[serde(default)]
    pub max_tcp_conns: Option<usize>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expiration_rfc3339: Option<String>,
    #[serde(default)]
    pub data_quota_bytes: Option<u64>,
    #[serde(default)]
    pub max_unique_ips: Option<usize>,
    /// Missing = enabled; `false` creates the user disabled (telemt 3.4).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Bandwidth caps in bits per second (telemt 3.4).
    #[serde(default)]
    pub rate_limit_up_bps: Option<u64>,
    #[serde(default)]
    pub rate_limit_down_bps: Option<u64>,
    /// Scheduled quota reset: `daily[@HH:MM]`, `weekly:<mon..sun>[@HH:MM]`,
    /// `monthly:<1..28>[@HH:MM]` (UTC).
    #[serde(default)]
    #[schema(
        pattern = "^(daily|weekly:(mon|tue|wed|thu|fri|sat|sun)|monthly:([1-9]|1[0-9]|2[0-8]))(@([01]?[0-9]|2[0-3]):[0-5]?[0-9])?$"
    )]
    pub quota_reset: Option<String>,
}

/// `PATCH /v1/users/{u}` body: outer `None` = absent (keep), `Some(None)` = `null` (clear),
/// `Some(Some(v))` = set.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct PatchUserRequest {
    /// Cannot be cleared: `null` is refused.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = Option<String>, pattern = "^[0-9A-Fa-f]{32}$")]
    pub secret: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub user_ad_tag: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub max_tcp_conns: Option<Option<usize>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(format = DateTime)]
    pub expiration_rfc3339: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub data_quota_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub max_unique_ips: Option<Option<usize>>,
    /// `false` disables; `true` or `null` enables (removes the override) — telemt 3.4.
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<Option<bool>>,
    /// `null` (or 0) removes the cap of that direction.
    #[serde(default, deserialize_with = "present")]
    pub rate_limit_up_bps: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub rate_limit_down_bps: Option<Option<u64>>,
    /// `null` removes the schedule.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        pattern = "^(daily|weekly:(mon|tue|wed|thu|fri|sat|sun)|monthly:([1-9]|1[0-9]|2[0-8]))(@([01]?[0-9]|2[0-3]):[0-5]?[0-9])?$"
    )]
    pub quota_reset: Option<Option<String>>,
}

/// `POST /v1/users/{u}/rotate-secret` body (the body itself is optional).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct RotateSecretRequest {
    #[serde(default)]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub secret: Option<String>,
}

/// Only called for a present key, so a present `null` becomes `Some(None)`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `UserLinks` (owned form, for clients and tests; responses are streamed, see `info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserLinks {
    pub classic: Vec<String>,
    pub secure: Vec<String>,
    pub tls: Vec<String>,
}

/// `UserInfo` (owned form, for clients and tests; the server streams the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    pub username: String,
    /// `false` while `access.user_enabled` disables the user.
    pub enabled: bool,
    /// Whether the running proxy applies this entry (always, once a write has returned).
    pub in_runtime: bool,
    #[schema(required = true)]
    pub user_ad_tag: Option<String>,
    #[schema(required = true)]
    pub max_tcp_conns: Option<usize>,
    #[schema(required = true)]
    pub expiration_rfc3339: Option<String>,
    #[schema(required = true)]
    pub data_quota_bytes: Option<u64>,
    #[schema(required = true)]
    pub max_unique_ips: Option<usize>,
    #[schema(required = true)]
    pub rate_limit_up_bps: Option<u64>,
    #[schema(required = true)]
    pub rate_limit_down_bps: Option<u64>,
    #[schema(required = true)]
    pub quota_reset: Option<String>,
    #[schema(required = true)]
    pub last_quota_reset_epoch_secs: Option<u64>,
    #[schema(required = true)]
    pub next_quota_reset_epoch_secs: Option<u64>,
    pub current_connections: u64,
    pub active_unique_ips: usize,
    #[schema(value_type = Vec<String>)]
    pub active_unique_ips_list: Vec<IpAddr>,
    pub recent_unique_ips: usize,
    #[schema(value_type = Vec<String>)]
    pub recent_unique_ips_list: Vec<IpAddr>,
    pub total_octets: u64,
    pub links: UserLinks,
}

/// `CreateUserResponse` (owned form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserResponse {
    pub user: UserInfo,
    pub secret: String,
}

pub fn parse_secret(s: &str) -> Result<UserSecret, ApiError> {
    s.parse::<UserSecret>()
        .map_err(|_| ApiError::bad_request("secret must be exactly 32 hex characters"))
}

pub fn parse_ad_tag(s: &str) -> Result<AdTag, ApiError> {
    s.parse::<AdTag>()
        .map_err(|_| ApiError::bad_request("user_ad_tag must be exactly 32 hex characters"))
}

/// Strict RFC 3339 with an explicit offset (`Z` or `±hh:mm`), normalized to UTC.
pub fn parse_expiration(s: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.to_offset(UtcOffset::UTC))
        .map_err(|_| {
            ApiError::bad_request("expiration_rfc3339 must be an RFC 3339 timestamp with offset")
        })
}

pub fn parse_quota_reset(s: &str) -> Result<config::QuotaResetSchedule, ApiError> {
    s.parse()
        .map_err(|e: String| ApiError::bad_request(format!("quota_reset: {e}")))
}

pub fn validate_username(s: &str) -> Result<(), ApiError> {
    config::validate_username(s).map_err(|_| {
        ApiError::bad_request("username must match [A-Za-z0-9_.-] and be 1..64 characters")
    })
}

impl CreateUserRequest {
    /// Validates the request into the store's edit (generating a secret when absent).
    pub fn into_new_user(self) -> Result<NewUser, ApiError> {
        validate_username(&self.username)?;
        let secret = match self.secret.as_deref() {
            Some(s) => parse_secret(s)?,
            None => UserSecret::random(),
        };
        let user_ad_tag = self.user_ad_tag.as_deref().map(parse_ad_tag).transpose()?;
        let expiration = self
            .expiration_rfc3339
            .as_deref()
            .map(parse_expiration)
            .transpose()?;
        Ok(NewUser {
            username: self.username,
            secret,
            user_ad_tag,
            max_tcp_conns: self.max_tcp_conns,
            expiration,
            data_quota_bytes: self.data_quota_bytes,
            max_unique_ips: self.max_unique_ips,
            enabled: self.enabled.unwrap_or(true),
            rate_limits: match (self.rate_limit_up_bps, self.rate_limit_down_bps) {
                (None, None) => None,
                (up, down) => Some(config::RateLimitBps {
                    up_bps: up.unwrap_or(0),
                    down_bps: down.unwrap_or(0),
                }),
            },
            quota_reset: self
                .quota_reset
                .as_deref()
                .map(parse_quota_reset)
                .transpose()?,
        })
    }
}

fn field<T, U>(
    v: Option<Option<T>>,
    parse: impl FnOnce(T) -> Result<U, ApiError>,
) -> Result<FieldPatch<U>, ApiError> {
    Ok(match v {
        None => FieldPatch::Keep,
        Some(None) => FieldPatch::Clear,
        Some(Some(x)) => FieldPatch::Set(parse(x)?),
    })
}

impl PatchUserRequest {
    /// Validates the request into the store's patch.
    pub fn into_patch(self) -> Result<UserPatch, ApiError> {
        let secret = match self.secret {
            None => None,
            Some(None) => return Err(ApiError::bad_request("secret cannot be cleared")),
            Some(Some(s)) => Some(parse_secret(&s)?),
        };
        Ok(UserPatch {
            secret,
            user_ad_tag: field(self.user_ad_tag, |s| parse_ad_tag(&s))?,
            max_tcp_conns: field(self.max_tcp_conns, Ok)?,
            expiration: field(self.expiration_rfc3339, |s| parse_expiration(&s))?,
            data_quota_bytes: field(self.data_quota_bytes, Ok)?,
            max_unique_ips: field(self.max_unique_ips, Ok)?,
            enabled: self.enabled.map(|v| v.unwrap_or(true)),
            rate_limit_up_bps: field(self.rate_limit_up_bps, Ok)?,
            rate_limit_down_bps: field(self.rate_limit_down_bps, Ok)?,
            quota_reset: field(self.quota_reset, |s| parse_quota_reset(&s))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::decode_object;
    use http::StatusCode;

    #[test]
    fn patch_distinguishes_absent_null_value() {
        let p: PatchUserRequest =
            decode_object(br#"{"max_tcp_conns":null,"data_quota_bytes":5,"zzz":1}"#).expect("json");
        let patch = p.into_patch().expect("valid");
        assert!(matches!(patch.max_tcp_conns, FieldPatch::Clear));
        assert!(matches!(patch.data_quota_bytes, FieldPatch::Set(5)));
        assert!(matches!(patch.max_unique_ips, FieldPatch::Keep));
        assert!(matches!(patch.user_ad_tag, FieldPatch::Keep));
        assert!(patch.secret.is_none());
    }

    #[test]
    fn decode_failures_are_bad_request() {
        for body in [
            &br#"{"max_tcp_conns":-1}"#[..],
            br#"{"max_tcp_conns":"5"}"#,
            br#"{"max_tcp_conns":1.5}"#,
            br#"{} x"#,
            b"",
            b"[]",
        ] {
            let err = decode_object::<PatchUserRequest>(body).expect_err("must fail");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.message, "Invalid JSON body");
        }
        let err = decode_object::<CreateUserRequest>(br#"{"secret":null}"#).expect_err("no name");
        assert_eq!(err.code, "bad_request");
    }

    #[test]
    fn create_validation() {
        let ok = CreateUserRequest {
            username: "a.b-c_D9".into(),
            secret: Some("00112233445566778899AABBCCDDEEFF".into()),
            expiration_rfc3339: Some("2027-01-01T03:00:00+03:00".into()),
            ..Default::default()
        };
        let nu = ok.into_new_user().expect("valid");
        assert_eq!(nu.secret.to_hex(), "00112233445566778899aabbccddeeff");
        assert_eq!(
            nu.expiration.map(config::format_expiration).as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        let generated = CreateUserRequest {
            username: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            generated.into_new_user().expect("ok").secret.to_hex().len(),
            32
        );

        let bad = |f: fn(&mut CreateUserRequest)| {
            let mut r = CreateUserRequest {
                username: "ok".into(),
                ..Default::default()
            };
            f(&mut r);
            r.into_new_user().expect_err("invalid").status
        };
        assert_eq!(bad(|r| r.username = String::new()), StatusCode::BAD_REQUEST);
        assert_eq!(
            bad(|r| r.username = "a".repeat(65)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(bad(|r| r.username = "a b".into()), StatusCode::BAD_REQUEST);
        assert_eq!(bad(|r| r.username = "é".into()), StatusCode::BAD_REQUEST);
        assert_eq!(
            bad(|r| r.secret = Some("0011".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad(|r| r.secret = Some("g".repeat(32))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad(|r| r.user_ad_tag = Some("1".repeat(31))),
            StatusCode::BAD_REQUEST
        );
        for e in [
            "2027-01-01",
            "2027-01-01T00:00:00",
            "tomorrow",
            "2027-13-01T00:00:00Z",
        ] {
            let e = e.to_owned();
            let mut r = CreateUserRequest {
                username: "ok".into(),
                expiration_rfc3339: Some(e.clone()),
                ..Default::default()
            };
            r.max_tcp_conns = Some(0);
            assert!(r.into_new_user().is_err(), "{e} must be rejected");
        }
        let mut r = CreateUserRequest {
            username: "a".repeat(64),
            ..Default::default()
        };
        r.max_unique_ips = Some(0);
        assert!(
            r.into_new_user().is_ok(),
            "64 chars and zero limits are valid"
        );
    }

    #[test]
    fn patch_secret_null_rejected() {
        let p: PatchUserRequest = decode_object(br#"{"secret":null}"#).expect("json");
        assert_eq!(
            p.into_patch().expect_err("null").status,
            StatusCode::BAD_REQUEST
        );
    }
}
