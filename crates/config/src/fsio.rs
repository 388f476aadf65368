//! File helpers: revision hashing, include masking for the editable document, and the atomic
//! replace (temp + fsync + re-check + rename + directory fsync, mode kept).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

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
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta = fs::metadata(path)?;
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        rand::random::<u64>()
    ));
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
