//! The per-user counters state file (docs/DECISIONS.md #27): JSON next to the config file, written
//! atomically (temp file in the same directory, fsync, rename, directory fsync) so a crash
//! leaves either the previous or the new state, never a torn one.
//!
//! Layout: `{"version":1,"saved_at_epoch_secs":N,"users":{"alice":{"octets_from_client":..,
//! "octets_to_client":..,"quota_used_bytes":..}}}`.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::users::{PersistedUser, UserRegistry};

const STATE_VERSION: u32 = 1;

/// State file errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error("stats state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a state file we understand.
    #[error("stats state file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    saved_at_epoch_secs: u64,
    #[serde(default)]
    users: HashMap<String, PersistedUser>,
}

/// Where the state file for `config_path` lives: same directory, `<config file name>.stats.json`
/// (e.g. `config.toml` → `config.toml.stats.json`).
pub fn state_path_for(config_path: &Path) -> PathBuf {
    let mut name = config_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "config.toml".into());
    name.push(".stats.json");
    config_path.with_file_name(name)
}

fn temp_path_for(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "stats.json".into());
    name.push(".tmp");
    path.with_file_name(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl UserRegistry {
    /// Writes every user's octet/quota counters to `path` atomically. Users with no traffic
    /// are omitted.
    pub fn save_state(&self, path: &Path, now: SystemTime) -> Result<(), StateError> {
        let file = StateFile {
            version: STATE_VERSION,
            saved_at_epoch_secs: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            users: self.persisted(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| StateError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let tmp = temp_path_for(path);
        {
            // 0600: the file names every user, like the config it sits next to.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Directory fsync makes the rename durable; failure here is not worth losing the
            // (already complete) write over, some filesystems do not support it.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Restores counters from `path`. A missing file is not an error (`Ok(0)`); a leftover
    /// temp file from an interrupted save is removed. Returns the number of users restored.
    pub fn load_state(&self, path: &Path) -> Result<usize, StateError> {
        let tmp = temp_path_for(path);
        if tmp.exists() {
            let _ = fs::remove_file(&tmp);
        }
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(path)(e)),
        };
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Malformed {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if file.version != STATE_VERSION {
            return Err(StateError::Malformed {
                path: path.to_path_buf(),
                reason: format!("unsupported version {}", file.version),
            });
        }
        self.restore(&file.users);
        Ok(file.users.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_path_is_next_to_config() {
        assert_eq!(
            state_path_for(Path::new("/etc/mtp/config.toml")),
            PathBuf::from("/etc/mtp/config.toml.stats.json")
        );
        assert_eq!(
            state_path_for(Path::new("config.toml")),
            PathBuf::from("config.toml.stats.json")
        );
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml.stats.json");
        let reg = UserRegistry::new();
        assert_eq!(reg.load_state(&path).unwrap(), 0);

        let h = reg.handle("alice");
        h.add_octets_from_client(7);
        h.add_octets_to_client(11);
        let _live = h.open_session();
        reg.handle("idle");
        reg.save_state(&path, SystemTime::now()).unwrap();
        assert!(!temp_path_for(&path).exists());

        let restored = UserRegistry::new();
        assert_eq!(restored.load_state(&path).unwrap(), 1);
        let s = restored.get("alice").unwrap();
        assert_eq!(s.octets_from_client, 7);
        assert_eq!(s.octets_to_client, 11);
        assert_eq!(s.quota_used_bytes, 18);
        assert_eq!(s.current_connections, 0);
        assert!(restored.get("idle").is_none());
    }

    #[test]
    fn malformed_file_is_an_error_and_stale_temp_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, b"{not json").unwrap();
        fs::write(temp_path_for(&path), b"partial").unwrap();
        let reg = UserRegistry::new();
        assert!(matches!(
            reg.load_state(&path),
            Err(StateError::Malformed { .. })
        ));
        assert!(!temp_path_for(&path).exists());
        fs::write(&path, br#"{"version":99,"users":{}}"#).unwrap();
        assert!(reg.load_state(&path).is_err());
    }
}
