//! File helpers: revision hashing, include masking for the editable document, the atomic
//! replace (temp + fsync + re-check + rename + directory fsync, mode kept), the atomic create of
//! a new config file, the atomic overwrite of a cache file, and the sweep of temp files left by writers that died mid-write.
//! Temp siblings of `<dir>/<name>` are named `.<name>.tmp.<pid>.<random>`; only this module
//! knows that.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::load::include_target;

/// Lowercase hex SHA-256 of `bytes` (the revision of a file's exact contents).
pub fn revision_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Prefix turning an `include` line into a comment while the main file is edited as a TOML
/// document: a textual include may legally repeat or sit inside a table, which a TOML parser
/// would reject or misread as a key. The prefix is removed again before writing.
const INCLUDE_MASK: &str = "#\u{2060}mtproxyd-include\u{2060}";

/// Whether `text` has any `include` line.
pub(crate) fn has_includes(text: &str) -> bool {
    text.lines().any(|l| include_target(l).is_some())
}

pub(crate) fn mask_includes(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        if include_target(line).is_some() {
            out.push_str(INCLUDE_MASK);
        }
        out.push_str(line);
    }
    out
}

pub(crate) fn unmask_includes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(line.strip_prefix(INCLUDE_MASK).unwrap_or(line));
    }
    out
}

/// Result of [`replace_if_unchanged`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replace {
    Written,
    /// The file no longer holds `expected`; nothing was written.
    Changed,
}

/// Atomically replaces `path` with `new`, provided it still contains `expected` right before
/// the rename. The new file keeps the old one's permission bits (and owner, when allowed).
/// `before_recheck` runs between writing the temp file and the final comparison (a test seam).
pub(crate) fn replace_if_unchanged(
    path: &Path,
    expected: &[u8],
    new: &[u8],
    before_recheck: &mut dyn FnMut(),
) -> std::io::Result<Replace> {
    let meta = fs::metadata(path)?;
    let (dir, tmp) = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o7777)
            .open(&tmp)?;
        // The umask may have narrowed the mode given at creation; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
        f.write_all(new)?;
        // fdatasync: the data and the size reach the disk; timestamps need not.
        f.sync_data()?;
        drop(f);
        before_recheck();
        // Last look before the rename: a hand edit since we read the file must not be lost.
        let now = fs::read(path)?;
        if now != expected {
            return Ok(Replace::Changed);
        }
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(Replace::Written)
    })();
    if !matches!(result, Ok(Replace::Written)) {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `path`'s directory (`.` for a bare file name) and a fresh temp sibling in it.
fn temp_sibling(path: &Path) -> (&Path, PathBuf) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        "{}{}.{}",
        temp_prefix(path),
        std::process::id(),
        rand::random::<u64>()
    ));
    (dir, tmp)
}

/// `.<name>.tmp.`: what every temp sibling of `path` starts with (the writer's pid follows).
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp.")
}

/// Creates `path` with `bytes` and permission bits `mode`, atomically (temp file, fsync,
/// rename, directory fsync): a crash leaves either no file or the whole file. Fails with
/// `AlreadyExists` when `path` exists.
pub fn create_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if path.exists() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    write_file_atomically(path, bytes, mode)
}

/// Writes `path` with `bytes` and permission bits `mode`, replacing any existing file
/// atomically (temp file, fsync, rename, directory fsync): a reader or a crash sees the old
/// file or the whole new one, never a part. For caches the process owns (not the config file,
/// whose hand edits [`replace_if_unchanged`] protects).
pub fn write_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, tmp) = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes temp siblings of `path` whose writer process is gone (SIGKILL, power loss). Files of
/// live processes (including this one) and the config file itself are never touched.
pub(crate) fn sweep_stale_temps(path: &Path) {
    let (dir, _) = temp_sibling(path);
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(file = %entry.path().display(), "removed stale temp file"),
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove stale temp file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_atomic_exclusive_and_sets_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        create_file_atomically(&path, b"a = 1\n", 0o600).expect("created");
        assert_eq!(fs::read(&path).expect("read"), b"a = 1\n");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        let again = create_file_atomically(&path, b"b = 2\n", 0o600);
        assert_eq!(
            again.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(fs::read(&path).expect("read"), b"a = 1\n");
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn write_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.txt");
        write_file_atomically(&path, b"one", 0o644).expect("first");
        write_file_atomically(&path, b"two", 0o600).expect("replaced");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
        let missing_dir = dir.path().join("nope").join("x");
        assert!(write_file_atomically(&missing_dir, b"x", 0o644).is_err());
    }

    #[test]
    fn sweep_removes_only_temps_of_dead_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        fs::write(&path, "a = 1\n").expect("write");
        // pid_max on Linux is at most 2^22, so this pid cannot be alive.
        let dead = dir.path().join(".config.toml.tmp.4294967295.7");
        let mine = dir
            .path()
            .join(format!(".config.toml.tmp.{}.7", std::process::id()));
        let other = dir.path().join(".other.toml.tmp.4294967295.7");
        for f in [&dead, &mine, &other] {
            fs::write(f, "x").expect("write");
        }
        sweep_stale_temps(&path);
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists() && path.exists());
    }
}
