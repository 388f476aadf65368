//! Whole-section edits of the config store (`GET`/`PATCH /v1/config`): the same lock, fresh
//! read, `If-Match`, whole-file validation, atomic write and publish as user edits.

use std::sync::Arc;

use super::{fingerprint, parse_doc, ConfigSnapshot, ConfigStore, Disk, FileStamp, MAX_REAPPLY};
use crate::edit::EditError;
use crate::splice::AccessIndex;
use crate::store::ChangeSource;
use crate::{fsio, load};

impl ConfigStore {
    /// The editable sections of the main file as JSON (`GET /v1/config`), credentials left
    /// out; picks up a pending hand edit first.
    pub fn editable_sections(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, EditError> {
        let mut disk = self.disk.lock();
        self.fresh_locked(&mut disk, None)?;
        let text = std::str::from_utf8(&disk.bytes)
            .map_err(|_| EditError::Io(std::io::Error::other("config file is not UTF-8")))?;
        crate::sections::editable_sections(text).map_err(EditError::Invalid)
    }

    /// Deep-merges a sparse JSON patch into the editable sections (`PATCH /v1/config`): the
    /// merged file is validated as a whole before anything is written, then written
    /// atomically and published like a user edit. Returns the new snapshot and the sections
    /// that changed (none: nothing was written).
    pub fn apply_sections(
        &self,
        if_match: Option<&str>,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Arc<ConfigSnapshot>, Vec<String>), EditError> {
        crate::sections::check_patch(patch)?;
        let mut disk = self.disk.lock();
        for _ in 0..MAX_REAPPLY {
            let cur = self.fresh_locked(&mut disk, if_match)?;
            let old = std::str::from_utf8(&disk.bytes)
                .map_err(|_| EditError::Io(std::io::Error::other("config file is not UTF-8")))?;
            let mut doc = parse_doc(old, disk.has_includes)
                .map_err(|e| EditError::Io(std::io::Error::other(e)))?;
            let changed = crate::sections::merge(&mut doc, patch)?;
            if changed.is_empty() {
                return Ok((cur, changed));
            }
            let text = doc.to_string();
            let text = if disk.has_includes {
                fsio::unmask_includes(&text)
            } else {
                text
            };
            let new_bytes = text.into_bytes();
            let loaded = load::load_bytes(&self.target, &new_bytes)
                .map_err(|e| EditError::Invalid(format!("patch rejected: {e}")))?;
            let written = self.write_file(&disk.bytes, &new_bytes);
            if !self.written_or_retry(&mut disk, written, if_match)? {
                continue;
            }
            let text = String::from_utf8_lossy(&new_bytes).into_owned();
            let revision = fsio::revision_of(&new_bytes);
            *disk = Disk {
                index: AccessIndex::build(&text),
                has_includes: fsio::has_includes(&text),
                fingerprint: fingerprint(&new_bytes, &loaded.config.includes),
                stamp: FileStamp::of(&self.target),
                failed: None,
                warnings: loaded.warnings,
                bytes: new_bytes,
            };
            let snap = self.publish(Arc::new(loaded.config), revision, ChangeSource::Api);
            return Ok((snap, changed));
        }
        Err(EditError::Io(std::io::Error::other(
            "config file keeps changing on disk; edit not applied",
        )))
    }
}
