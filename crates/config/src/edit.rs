//! User edits: the request types, and their surgical application to the TOML document (only the
//! affected user's keys in the seven `access.*` per-user tables change) and to the in-memory model.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use toml_edit::{DocumentMut, Item, Table, TableLike, Value};

use crate::model::{Config, RateLimitBps};
use crate::schedule::QuotaResetSchedule;
use crate::types::{AdTag, UserSecret};

/// One mutation of the user set, as requested through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEdit {
    Create(NewUser),
    Patch {
        username: String,
        patch: UserPatch,
    },
    Delete {
        username: String,
    },
    RotateSecret {
        username: String,
        secret: UserSecret,
    },
}

impl UserEdit {
    /// The user this edit is about.
    pub fn username(&self) -> &str {
        match self {
            UserEdit::Create(n) => &n.username,
            UserEdit::Patch { username, .. }
            | UserEdit::Delete { username }
            | UserEdit::RotateSecret { username, .. } => username,
        }
    }
}

/// A user to create. `None` fields are not written (no empty tables are created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub secret: UserSecret,
    pub user_ad_tag: Option<AdTag>,
    pub max_tcp_conns: Option<usize>,
    pub expiration: Option<OffsetDateTime>,
    pub data_quota_bytes: Option<u64>,
    pub max_unique_ips: Option<usize>,
    /// `false` writes a disabled override.
    pub enabled: bool,
    /// Bandwidth caps (`access.user_rate_limits`).
    pub rate_limits: Option<RateLimitBps>,
    /// Scheduled quota reset (`access.user_quota_reset`).
    pub quota_reset: Option<QuotaResetSchedule>,
}

impl NewUser {
    /// A user with only a secret.
    pub fn new(username: impl Into<String>, secret: UserSecret) -> Self {
        NewUser {
            username: username.into(),
            secret,
            user_ad_tag: None,
            max_tcp_conns: None,
            expiration: None,
            data_quota_bytes: None,
            max_unique_ips: None,
            enabled: true,
            rate_limits: None,
            quota_reset: None,
        }
    }
}

/// JSON merge-patch for one optional field (docs/DECISIONS.md #11): omitted → `Keep`, `null` → `Clear`
/// (falls back to the global default), value → `Set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldPatch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

/// Partial update of a user. `Default` changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPatch {
    pub secret: Option<UserSecret>,
    pub user_ad_tag: FieldPatch<AdTag>,
    pub max_tcp_conns: FieldPatch<usize>,
    pub expiration: FieldPatch<OffsetDateTime>,
    pub data_quota_bytes: FieldPatch<u64>,
    pub max_unique_ips: FieldPatch<usize>,
    /// `Some(false)` disables the user; `Some(true)` removes the override (enabled).
    pub enabled: Option<bool>,
    /// Upload cap in bits per second (`Clear` or 0 = unlimited); the other direction keeps its
    /// current value.
    pub rate_limit_up_bps: FieldPatch<u64>,
    /// Download cap, likewise.
    pub rate_limit_down_bps: FieldPatch<u64>,
    /// Scheduled quota reset.
    pub quota_reset: FieldPatch<QuotaResetSchedule>,
}

impl UserPatch {
    /// The user's caps after this patch, given the current entry: `None` when nothing
    /// changes, `Some(None)` when no direction is capped any more (the entry goes).
    pub(crate) fn rate_limits(&self, cur: Option<RateLimitBps>) -> Option<Option<RateLimitBps>> {
        if matches!(
            (self.rate_limit_up_bps, self.rate_limit_down_bps),
            (FieldPatch::Keep, FieldPatch::Keep)
        ) {
            return None;
        }
        let cur = cur.unwrap_or_default();
        let pick = |p: FieldPatch<u64>, old: u64| match p {
            FieldPatch::Keep => old,
            FieldPatch::Clear => 0,
            FieldPatch::Set(v) => v,
        };
        let next = RateLimitBps {
            up_bps: pick(self.rate_limit_up_bps, cur.up_bps),
            down_bps: pick(self.rate_limit_down_bps, cur.down_bps),
        };
        Some((next != RateLimitBps::default()).then_some(next))
    }
}

fn rate_value(r: RateLimitBps) -> Result<Value, EditError> {
    let mut t = toml_edit::InlineTable::new();
    t.insert("up_bps", int_value(r.up_bps, "rate_limit_up_bps")?);
    t.insert("down_bps", int_value(r.down_bps, "rate_limit_down_bps")?);
    Ok(Value::InlineTable(t))
}

/// Why an edit was refused. Maps to HTTP: 409 / 409 / 404 / 409 / 400 / 500.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("revision conflict")]
    RevisionConflict,
    #[error("user already exists")]
    UserExists,
    #[error("user not found")]
    UserNotFound,
    #[error("cannot delete the last user")]
    LastUser,
    #[error("{0}")]
    Invalid(String),
    /// `PATCH /v1/config` named `access` (users are edited through the users routes).
    #[error("the access section is managed through the users API")]
    AccessNotEditable,
    /// `PATCH /v1/config` named a section that cannot be edited over HTTP.
    #[error("section `{0}` cannot be edited through the API (editable: general, timeouts, censorship, upstreams, show_link, dc_overrides)")]
    SectionNotEditable(String),
    /// The file on disk does not load (a broken hand edit): nothing can be edited until it is
    /// fixed by hand; the running config stays in force.
    #[error("the config file on disk is invalid ({0}); fix it by hand, the running config stays in force")]
    DiskInvalid(String),
    #[error("config I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Renders an expiration as stored in the file: a quoted UTC RFC 3339 string ("...Z").
pub fn format_expiration(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// One field write: table name under `[access]` and the new value (`None` = remove the key).
pub(crate) struct FieldWrite {
    pub(crate) table: &'static str,
    pub(crate) value: Option<Value>,
}

fn int_value(v: u64, field: &str) -> Result<Value, EditError> {
    i64::try_from(v)
        .map(Value::from)
        .map_err(|_| EditError::Invalid(format!("{field} must be <= {}", i64::MAX)))
}

fn patch_write<T>(
    table: &'static str,
    p: &FieldPatch<T>,
    conv: impl FnOnce(&T) -> Result<Value, EditError>,
) -> Result<Option<FieldWrite>, EditError> {
    Ok(match p {
        FieldPatch::Keep => None,
        FieldPatch::Clear => Some(FieldWrite { table, value: None }),
        FieldPatch::Set(v) => Some(FieldWrite {
            table,
            value: Some(conv(v)?),
        }),
    })
}

/// The table writes an edit performs, in a fixed order. `cur_rate` is the user's current
/// `access.user_rate_limits` entry (a patch may change one direction only).
pub(crate) fn writes_for(
    edit: &UserEdit,
    cur_rate: Option<RateLimitBps>,
) -> Result<Vec<FieldWrite>, EditError> {
    let str_v = |s: String| Value::from(s);
    let mut w = Vec::new();
    match edit {
        UserEdit::Create(n) => {
            w.push(FieldWrite {
                table: "users",
                value: Some(str_v(n.secret.to_hex())),
            });
            if let Some(t) = n.user_ad_tag {
                w.push(FieldWrite {
                    table: "user_ad_tags",
                    value: Some(str_v(t.to_hex())),
                });
            }
            if let Some(v) = n.max_tcp_conns {
                w.push(FieldWrite {
                    table: "user_max_tcp_conns",
                    value: Some(int_value(v as u64, "max_tcp_conns")?),
                });
            }
            if let Some(at) = n.expiration {
                w.push(FieldWrite {
                    table: "user_expirations",
                    value: Some(str_v(format_expiration(at))),
                });
            }
            if let Some(v) = n.data_quota_bytes {
                w.push(FieldWrite {
                    table: "user_data_quota",
                    value: Some(int_value(v, "data_quota_bytes")?),
                });
            }
            if let Some(v) = n.max_unique_ips {
                w.push(FieldWrite {
                    table: "user_max_unique_ips",
                    value: Some(int_value(v as u64, "max_unique_ips")?),
                });
            }
            if !n.enabled {
                w.push(FieldWrite {
                    table: "user_enabled",
                    value: Some(Value::from(false)),
                });
            }
            if let Some(r) = n.rate_limits.filter(|r| *r != RateLimitBps::default()) {
                w.push(FieldWrite {
                    table: "user_rate_limits",
                    value: Some(rate_value(r)?),
                });
            }
            if let Some(s) = n.quota_reset {
                w.push(FieldWrite {
                    table: "user_quota_reset",
                    value: Some(str_v(s.to_string())),
                });
            }
        }
        UserEdit::Patch { patch, .. } => {
            if let Some(s) = patch.secret {
                w.push(FieldWrite {
                    table: "users",
                    value: Some(str_v(s.to_hex())),
                });
            }
            w.extend(patch_write("user_ad_tags", &patch.user_ad_tag, |t| {
                Ok(str_v(t.to_hex()))
            })?);
            w.extend(patch_write(
                "user_max_tcp_conns",
                &patch.max_tcp_conns,
                |v| int_value(*v as u64, "max_tcp_conns"),
            )?);
            w.extend(patch_write("user_expirations", &patch.expiration, |at| {
                Ok(str_v(format_expiration(*at)))
            })?);
            w.extend(patch_write(
                "user_data_quota",
                &patch.data_quota_bytes,
                |v| int_value(*v, "data_quota_bytes"),
            )?);
            w.extend(patch_write(
                "user_max_unique_ips",
                &patch.max_unique_ips,
                |v| int_value(*v as u64, "max_unique_ips"),
            )?);
            if let Some(on) = patch.enabled {
                // Only the disabled state is written: enabled is the default.
                w.push(FieldWrite {
                    table: "user_enabled",
                    value: (!on).then(|| Value::from(false)),
                });
            }
            w.extend(patch_write("user_quota_reset", &patch.quota_reset, |s| {
                Ok(str_v(s.to_string()))
            })?);
            if let Some(next) = patch.rate_limits(cur_rate) {
                w.push(FieldWrite {
                    table: "user_rate_limits",
                    value: next.map(rate_value).transpose()?,
                });
            }
        }
        UserEdit::Delete { .. } => {
            for table in USER_TABLES {
                w.push(FieldWrite { table, value: None });
            }
        }
        UserEdit::RotateSecret { secret, .. } => {
            w.push(FieldWrite {
                table: "users",
                value: Some(str_v(secret.to_hex())),
            });
        }
    }
    Ok(w)
}

/// The per-user tables under `[access]`.
pub const USER_TABLES: [&str; 9] = [
    "users",
    "user_ad_tags",
    "user_max_tcp_conns",
    "user_expirations",
    "user_data_quota",
    "user_max_unique_ips",
    "user_enabled",
    "user_rate_limits",
    "user_quota_reset",
];

/// Is `user` present in the document's own (main-file) `access.users`?
pub(crate) fn doc_has_user(doc: &DocumentMut, user: &str) -> bool {
    doc.get("access")
        .and_then(Item::as_table_like)
        .and_then(|a| a.get("users"))
        .and_then(Item::as_table_like)
        .is_some_and(|u| u.contains_key(user))
}

fn access_mut(
    doc: &mut DocumentMut,
    create: bool,
) -> Result<Option<&mut dyn TableLike>, EditError> {
    if doc.get("access").is_none() {
        if !create {
            return Ok(None);
        }
        let mut t = Table::new();
        t.set_implicit(true);
        doc.insert("access", Item::Table(t));
    }
    doc.get_mut("access")
        .and_then(Item::as_table_like_mut)
        .map(Some)
        .ok_or_else(|| EditError::Invalid("`access` in the config file is not a table".into()))
}

/// Applies an edit to the document, touching only `username`'s keys.
pub(crate) fn apply_to_doc(
    doc: &mut DocumentMut,
    edit: &UserEdit,
    cur_rate: Option<RateLimitBps>,
) -> Result<(), EditError> {
    let user = edit.username();
    for w in writes_for(edit, cur_rate)? {
        let creating = w.value.is_some();
        let Some(access) = access_mut(doc, creating)? else {
            continue;
        };
        if access.get(w.table).is_none() {
            if !creating {
                continue;
            }
            // New tables go to the end of the document, as `[access.<table>]`.
            access.insert(w.table, Item::Table(Table::new()));
        }
        let key = format!("access.{}", w.table);
        let tbl = access
            .get_mut(w.table)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| {
                EditError::Invalid(format!("`{key}` in the config file is not a table"))
            })?;
        match w.value {
            None => {
                // A table this edit empties goes too; one written empty by hand stays.
                if tbl.remove(user).is_some() && tbl.is_empty() {
                    access.remove(w.table);
                }
            }
            Some(mut v) => match tbl.get_mut(user) {
                // Keep the old value's surrounding whitespace and trailing comment.
                Some(Item::Value(old)) => {
                    *v.decor_mut() = old.decor().clone();
                    *old = v;
                }
                Some(other) => *other = Item::Value(v),
                None => {
                    tbl.insert(user, Item::Value(v));
                }
            },
        }
    }
    Ok(())
}

fn set_or_clear<T: Copy>(
    map: &mut std::collections::BTreeMap<String, T>,
    user: &str,
    p: &FieldPatch<T>,
) {
    match p {
        FieldPatch::Keep => {}
        FieldPatch::Clear => {
            map.remove(user);
        }
        FieldPatch::Set(v) => {
            map.insert(user.to_string(), *v);
        }
    }
}

/// Applies an edit to the model (mirrors [`apply_to_doc`]). Expirations are truncated to what
/// the file stores, so model and file agree.
pub(crate) fn apply_to_model(cfg: &mut Config, edit: &UserEdit) {
    let a = &mut cfg.access;
    let user = edit.username().to_string();
    let stored = |at: OffsetDateTime| at.to_offset(UtcOffset::UTC);
    match edit {
        UserEdit::Create(n) => {
            a.users.insert(user.clone(), n.secret);
            if let Some(t) = n.user_ad_tag {
                a.user_ad_tags.insert(user.clone(), t);
            }
            if let Some(v) = n.max_tcp_conns {
                a.user_max_tcp_conns.insert(user.clone(), v);
            }
            if let Some(at) = n.expiration {
                a.user_expirations.insert(user.clone(), stored(at));
            }
            if let Some(v) = n.data_quota_bytes {
                a.user_data_quota.insert(user.clone(), v);
            }
            if let Some(v) = n.max_unique_ips {
                a.user_max_unique_ips.insert(user.clone(), v);
            }
            if !n.enabled {
                a.user_enabled.insert(user.clone(), false);
            }
            if let Some(r) = n.rate_limits.filter(|r| *r != RateLimitBps::default()) {
                a.user_rate_limits.insert(user.clone(), r);
            }
            if let Some(s) = n.quota_reset {
                a.user_quota_reset.insert(user, s);
            }
        }
        UserEdit::Patch { patch, .. } => {
            if let Some(s) = patch.secret {
                a.users.insert(user.clone(), s);
            }
            set_or_clear(&mut a.user_ad_tags, &user, &patch.user_ad_tag);
            set_or_clear(&mut a.user_max_tcp_conns, &user, &patch.max_tcp_conns);
            let exp = match patch.expiration {
                FieldPatch::Set(at) => FieldPatch::Set(stored(at)),
                other => other,
            };
            set_or_clear(&mut a.user_expirations, &user, &exp);
            set_or_clear(&mut a.user_data_quota, &user, &patch.data_quota_bytes);
            set_or_clear(&mut a.user_max_unique_ips, &user, &patch.max_unique_ips);
            match patch.enabled {
                Some(false) => {
                    a.user_enabled.insert(user.clone(), false);
                }
                Some(true) => {
                    a.user_enabled.remove(&user);
                }
                None => {}
            }
            set_or_clear(&mut a.user_quota_reset, &user, &patch.quota_reset);
            match patch.rate_limits(a.user_rate_limits.get(&user).copied()) {
                Some(Some(r)) => {
                    a.user_rate_limits.insert(user, r);
                }
                Some(None) => {
                    a.user_rate_limits.remove(&user);
                }
                None => {}
            }
        }
        UserEdit::Delete { .. } => {
            a.users.remove(&user);
            a.user_ad_tags.remove(&user);
            a.user_max_tcp_conns.remove(&user);
            a.user_expirations.remove(&user);
            a.user_data_quota.remove(&user);
            a.user_max_unique_ips.remove(&user);
            a.user_enabled.remove(&user);
            a.user_rate_limits.remove(&user);
            a.user_quota_reset.remove(&user);
        }
        UserEdit::RotateSecret { secret, .. } => {
            a.users.insert(user, *secret);
        }
    }
}
