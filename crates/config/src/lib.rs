//! mtproxyd configuration: the telemt-compatible TOML model, its validation, and the
//! `ConfigStore` (revisioned, lock-free reads, surgical atomic writes, hot reload).
//!
//! Owns: parsing/validating `config.toml` (+ `include`d files), the `[access]` user edits the
//! API performs, the file watcher. Must not touch: networking, stats, HTTP — other crates read
//! `Arc<Config>` snapshots from here.
//!
//! Decisions:
//! - Unknown keys are accepted and reported as warnings (so telemt configs load).
//! - A user whose secret is not 32 hex characters makes the whole config invalid (telemt skips
//!   the user with a warning; a hand-edit typo would then silently drop a user). API writes
//!   cannot produce one (`UserSecret` is typed).
//! - A config with no valid user is rejected.
//! - `include = "file"` lines are expanded textually like telemt (relative to the including
//!   file, depth ≤ 10). API edits always go to the main file; a user defined only in an
//!   included file cannot be edited through the API (400). Edits of a file with includes
//!   re-merge and re-validate the whole config before writing.
//! - Writes are surgical. Plain layouts (`[access.<table>]` headers, one `key = value` per line)
//!   are edited by splicing the text at indexed offsets (fast: no re-serialisation); other
//!   layouts go through a `toml_edit` document. Either way only the user's own keys change,
//!   new per-user tables are placed after the last existing one, a table an edit empties is
//!   removed (one written empty by hand stays). On the
//!   splice path a comment line above a deleted user's line stays; on the document path
//!   `toml_edit` removes it together with the key.
//! - `ConfigStore` listeners run synchronously under the mutation lock: they must not call
//!   `apply`, `reload_from_disk` or `add_listener`.
//! - Secrets, the API `auth_header` and upstream credentials are redacted from `Debug` output.

mod de;
mod default_toml;
pub mod edit;
mod fsio;
pub mod load;
pub mod model;
mod retire;
pub mod schedule;
pub mod sections;
mod splice;
pub mod ss_url;
mod store;
#[cfg(test)]
mod store_tests;
pub mod types;
mod validate;
mod watcher;

pub use default_toml::default_config_toml;
pub use edit::{format_expiration, EditError, FieldPatch, NewUser, UserEdit, UserPatch};
pub use fsio::{create_file_atomically, revision_of, write_file_atomically};
pub use load::{load_file, parse_str, ConfigError, Loaded};
pub use model::*;
pub use retire::Retirer;
pub use schedule::QuotaResetSchedule;
pub use ss_url::{ShadowsocksUrl, SS_CIPHERS};
pub use store::{
    ChangeSource, ConfigEvent, ConfigSnapshot, ConfigStore, OnDisk, ReloadStats, StoreError,
};
pub use types::{
    validate_username, AdTag, IpPolicyMode, LogLevel, MeBindStaleMode, MeFloorMode,
    MeRouteNoWriterMode, MeSocksKdfPolicy, MeTelemetryLevel, MeWriterPickMode, UnknownSniAction,
    UserSecret,
};
pub use watcher::{WatcherHandle, WatcherOptions};
