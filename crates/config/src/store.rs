//! `ConfigStore`: the published snapshot (lock-free reads), the process-wide mutation lock,
//! surgical API writes and reloads of hand edits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use toml_edit::DocumentMut;

use crate::edit::{apply_to_doc, apply_to_model, doc_has_user, EditError, UserEdit};
use crate::fsio::{self, Replace};
use crate::load::{self, ConfigError};
use crate::model::Config;
use crate::retire::Retirer;
use crate::splice::AccessIndex;
use crate::types::validate_username;

/// A validated config and the revision (lowercase SHA-256 hex) of the main file's exact bytes.
/// Cheap to share (`Arc`).
#[derive(Debug, Clone)]
pub struct ConfigSnapshot {
    pub config: Arc<Config>,
    pub revision: String,
    /// Absolute path of the main config file.
    pub path: PathBuf,
}

/// Who caused a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    /// An API write (`apply`).
    Api,
    /// A change found on disk (watcher, poll, SIGHUP).
    File,
}

/// What listeners are told.
#[derive(Debug)]
pub enum ConfigEvent<'a> {
    Applied {
        snapshot: &'a Arc<ConfigSnapshot>,
        source: ChangeSource,
    },
    /// A changed file failed to read/parse/validate; the running config was kept.
    ReloadFailed { error: &'a str },
}

/// Counters for `/v1/system/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReloadStats {
    /// Successfully observed config changes since start (API writes included).
    pub reload_count: u64,
    pub last_reload_epoch_secs: Option<u64>,
}

mod sections_edit;

/// Errors of `open` / `reload_from_disk`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

type Listener = Box<dyn Fn(&ConfigEvent<'_>) + Send + Sync>;

/// How many times an API write without If-Match is re-applied on top of a file that changed
/// under it before giving up.
const MAX_REAPPLY: usize = 5;

/// State guarded by the mutation lock: what the main file held when last read or written.
struct Disk {
    bytes: Vec<u8>,
    /// Byte positions of the per-user tables (fast edit path); `None` = use the document path.
    index: Option<AccessIndex>,
    /// Whether the main file has `include` lines (edits then re-merge and re-validate fully).
    has_includes: bool,
    /// Hash over the main file and every included file.
    fingerprint: [u8; 32],
    /// Metadata of the main file when `bytes` was read or written.
    stamp: Option<FileStamp>,
    /// Fingerprint of the last content that failed to load (report each failure once).
    failed: Option<[u8; 32]>,
    warnings: Vec<String>,
}

/// The main file as last read or written: its revision, and why it does not load (if so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// Lowercase hex SHA-256 of the file's bytes.
    pub revision: String,
    /// `Some(reason)` while those bytes do not load (the running config is an older one).
    pub invalid: Option<String>,
}

/// The config store. `Send + Sync`; share it as `Arc<ConfigStore>`.
pub struct ConfigStore {
    path: PathBuf,
    /// Where writes go (the symlink target when `path` is a symlink).
    target: PathBuf,
    current: ArcSwap<ConfigSnapshot>,
    /// The main file as last seen on disk, which may not load (docs/DECISIONS.md #13, #29).
    on_disk: ArcSwap<OnDisk>,
    watch_tx: tokio::sync::watch::Sender<Arc<ConfigSnapshot>>,
    disk: Mutex<Disk>,
    listeners: RwLock<Vec<Listener>>,
    reload_count: AtomicU64,
    /// Frees replaced snapshots off the write path.
    retirer: Retirer,
    /// Epoch seconds of the last counted change; 0 = never.
    last_reload: AtomicU64,
    /// Test seam: runs just before the pre-rename re-check of an API write.
    #[cfg(test)]
    pub(crate) before_recheck: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

/// Identity of the config content: SHA-256 of the main file alone when there are no includes
/// (so it doubles as the revision digest), else a hash over the main and included files.
fn fingerprint(main: &[u8], includes: &[PathBuf]) -> [u8; 32] {
    if includes.is_empty() {
        return Sha256::digest(main).into();
    }
    let mut h = Sha256::new();
    h.update((main.len() as u64).to_le_bytes());
    h.update(main);
    for p in includes {
        h.update(p.as_os_str().as_encoded_bytes());
        match std::fs::read(p) {
            Ok(b) => {
                h.update((b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(e) => h.update(format!("\0err:{e}").as_bytes()),
        }
    }
    h.finalize().into()
}

/// Cheap change detector for the main file (inode, size, mtime, ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(FileStamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

fn parse_doc(text: &str, has_includes: bool) -> Result<DocumentMut, String> {
    let r = if has_includes {
        fsio::mask_includes(text).parse::<DocumentMut>()
    } else {
        text.parse::<DocumentMut>()
    };
    r.map_err(|e| format!("the config file cannot be edited as a TOML document: {e}"))
}

fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the main file, loads it fully and builds the editable state.
fn read_disk(target: &Path) -> Result<(Disk, Config), ConfigError> {
    // Stamp first: a change racing the read then shows up as a stamp mismatch later.
    let stamp = FileStamp::of(target);
    let (bytes, loaded) = load::load_path(target)?;
    let text = String::from_utf8_lossy(&bytes);
    let has_includes = fsio::has_includes(&text);
    let index = AccessIndex::build(&text);
    let fp = fingerprint(&bytes, &loaded.config.includes);
    let disk = Disk {
        bytes,
        index,
        has_includes,
        stamp,
        fingerprint: fp,
        failed: None,
        warnings: loaded.warnings,
    };
    Ok((disk, loaded.config))
}

impl ConfigStore {
    /// Loads and validates `path`. Load warnings are logged and available via
    /// [`ConfigStore::warnings`].
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        fsio::sweep_stale_temps(&target);
        let (disk, config) = read_disk(&target)?;
        for w in &disk.warnings {
            tracing::warn!(config = %path.display(), "{w}");
        }
        let snap = Arc::new(ConfigSnapshot {
            config: Arc::new(config),
            revision: fsio::revision_of(&disk.bytes),
            path: path.clone(),
        });
        let (watch_tx, _) = tokio::sync::watch::channel(snap.clone());
        Ok(Arc::new(ConfigStore {
            path,
            target,
            on_disk: ArcSwap::from_pointee(OnDisk {
                revision: snap.revision.clone(),
                invalid: None,
            }),
            current: ArcSwap::new(snap),
            watch_tx,
            disk: Mutex::new(disk),
            listeners: RwLock::new(Vec::new()),
            reload_count: AtomicU64::new(0),
            retirer: Retirer::new("config-retire"),
            last_reload: AtomicU64::new(0),
            #[cfg(test)]
            before_recheck: Mutex::new(None),
        }))
    }

    /// The published snapshot (lock-free).
    pub fn current(&self) -> Arc<ConfigSnapshot> {
        self.current.load_full()
    }

    /// The main file as last seen on disk. Its revision is what the API reports: while a hand
    /// edit does not load, it differs from the running snapshot's.
    pub fn on_disk(&self) -> Arc<OnDisk> {
        self.on_disk.load_full()
    }

    /// The main config file's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Warnings from the last successful load from disk (unknown keys, skipped users, ...).
    pub fn warnings(&self) -> Vec<String> {
        self.disk.lock().warnings.clone()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ConfigSnapshot>> {
        self.watch_tx.subscribe()
    }

    /// Registers a hook run synchronously on every publish (before `apply` returns) and on
    /// every failed reload. Hooks run under the mutation lock: they must not call `apply` or
    /// `reload_from_disk`.
    pub fn add_listener(&self, f: Box<dyn Fn(&ConfigEvent<'_>) + Send + Sync>) {
        self.listeners.write().push(f);
    }

    /// Whether API edits currently take the fast text-splice path (diagnostics and tests).
    #[doc(hidden)]
    pub fn splice_path_active(&self) -> bool {
        self.disk.lock().index.is_some()
    }

    /// Reload counters.
    pub fn reload_stats(&self) -> ReloadStats {
        let last = self.last_reload.load(Ordering::Acquire);
        ReloadStats {
            reload_count: self.reload_count.load(Ordering::Acquire),
            last_reload_epoch_secs: (last != 0).then_some(last),
        }
    }

    fn notify(&self, ev: &ConfigEvent<'_>) {
        for l in self.listeners.read().iter() {
            l(ev);
        }
    }

    /// Publishes a new snapshot. Caller holds the mutation lock.
    fn publish(
        &self,
        config: Arc<Config>,
        revision: String,
        source: ChangeSource,
    ) -> Arc<ConfigSnapshot> {
        self.on_disk.store(Arc::new(OnDisk {
            revision: revision.clone(),
            invalid: None,
        }));
        let snap = Arc::new(ConfigSnapshot {
            config,
            revision,
            path: self.path.clone(),
        });
        // Counters first, so anyone woken by the new snapshot sees them updated.
        self.last_reload
            .store(now_epoch().max(1), Ordering::Release);
        self.reload_count.fetch_add(1, Ordering::AcqRel);
        let replaced = (
            self.current.swap(snap.clone()),
            self.watch_tx.send_replace(snap.clone()),
        );
        self.notify(&ConfigEvent::Applied {
            snapshot: &snap,
            source,
        });
        self.retirer.retire(replaced);
        snap
    }

    /// Re-reads the file now (watcher, poll, SIGHUP). `Ok(true)` when a new config was
    /// published, `Ok(false)` when nothing changed. A bad file keeps the running config and
    /// returns the error (listeners get `ReloadFailed` once per distinct bad content).
    pub fn reload_from_disk(&self) -> Result<bool, StoreError> {
        let mut disk = self.disk.lock();
        self.reload_locked(&mut disk)
    }

    fn reload_locked(&self, disk: &mut Disk) -> Result<bool, StoreError> {
        let includes = self.current().config.includes.clone();
        let stamp = FileStamp::of(&self.target);
        let bytes = match std::fs::read(&self.target) {
            Ok(b) => b,
            Err(e) => {
                let err = ConfigError::Io {
                    path: self.target.clone(),
                    message: e.to_string(),
                };
                // Identify the failure by its message so a missing file is reported once.
                let fp: [u8; 32] = Sha256::digest(err.to_string().as_bytes()).into();
                return Err(self.report_failure(disk, fp, err));
            }
        };
        let fp = fingerprint(&bytes, &includes);
        if fp == disk.fingerprint {
            disk.stamp = stamp;
            return Ok(false);
        }
        let loaded = match load::load_bytes(&self.target, &bytes) {
            Ok(l) => l,
            Err(e) => {
                self.on_disk.store(Arc::new(OnDisk {
                    revision: fsio::revision_of(&bytes),
                    invalid: Some(e.to_string()),
                }));
                return Err(self.report_failure(disk, fp, e));
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let has_includes = fsio::has_includes(&text);
        // Recompute with the (possibly changed) include list so the next comparison is exact.
        let fp = fingerprint(&bytes, &loaded.config.includes);
        for w in &loaded.warnings {
            tracing::warn!(config = %self.path.display(), "{w}");
        }
        *disk = Disk {
            index: AccessIndex::build(&text),
            has_includes,
            stamp,
            fingerprint: fp,
            failed: None,
            warnings: loaded.warnings,
            bytes,
        };
        let revision = fsio::revision_of(&disk.bytes);
        tracing::info!(config = %self.path.display(), %revision, "config reloaded from disk");
        self.publish(Arc::new(loaded.config), revision, ChangeSource::File);
        Ok(true)
    }

    fn report_failure(&self, disk: &mut Disk, fp: [u8; 32], err: ConfigError) -> StoreError {
        let msg = err.to_string();
        let repeated = disk.failed == Some(fp);
        if !repeated {
            tracing::warn!(config = %self.path.display(), error = %msg, "config reload failed; keeping the running config");
            self.notify(&ConfigEvent::ReloadFailed { error: &msg });
        }
        disk.failed = Some(fp);
        StoreError::Config(err)
    }

    /// Applies a user edit: If-Match → existence → last-user rule → surgical edit → validate →
    /// atomic write → publish (listeners run before this returns). Blocking: call it from
    /// `spawn_blocking` in async code.
    pub fn apply(
        &self,
        if_match: Option<&str>,
        edit: UserEdit,
    ) -> Result<Arc<ConfigSnapshot>, EditError> {
        // New names must follow the API rule; existing ones (possibly from a hand-written
        // telemt file) can still be patched or deleted.
        if let UserEdit::Create(n) = &edit {
            validate_username(&n.username).map_err(EditError::Invalid)?;
        }
        let mut disk = self.disk.lock();
        for _ in 0..MAX_REAPPLY {
            let cur = self.fresh_locked(&mut disk, if_match)?;
            self.check_preconditions(&cur.config, &edit)?;
            let new_bytes = self.render_text(&mut disk, &cur.config, &edit)?;
            let (written, new_config, digest) = if disk.has_includes {
                // Validate the re-merged config before anything touches the disk.
                let cfg = match load::load_bytes(&self.target, &new_bytes) {
                    Ok(l) => l.config,
                    Err(e) => {
                        self.restore_doc(&mut disk);
                        return Err(EditError::Invalid(format!("edit rejected: {e}")));
                    }
                };
                let digest = fingerprint(&new_bytes, &cfg.includes);
                (self.write_file(&disk.bytes, &new_bytes), cfg, digest)
            } else {
                // Nothing can fail in the model update, so it (and the hash) run while the
                // file is written and fsynced on a helper thread.
                let old = &disk.bytes;
                let new = &new_bytes;
                std::thread::scope(|scope| {
                    let writer = scope.spawn(move || self.write_file(old, new));
                    let mut cfg = Config::clone(&cur.config);
                    apply_to_model(&mut cfg, &edit);
                    let digest = fingerprint(new, &[]);
                    let written = writer.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("config writer thread panicked"))
                    });
                    (written, cfg, digest)
                })
            };
            if !self.written_or_retry(&mut disk, written, if_match)? {
                continue;
            }
            disk.fingerprint = digest;
            let revision = if new_config.includes.is_empty() {
                hex::encode(disk.fingerprint)
            } else {
                fsio::revision_of(&new_bytes)
            };
            disk.stamp = FileStamp::of(&self.target);
            disk.bytes = new_bytes;
            disk.failed = None;
            return Ok(self.publish(Arc::new(new_config), revision, ChangeSource::Api));
        }
        Err(EditError::Io(std::io::Error::other(
            "config file keeps changing on disk; edit not applied",
        )))
    }

    /// Under the mutation lock: picks up a hand edit that landed since we last looked (cheap
    /// when unchanged) and checks `If-Match` against it.
    fn fresh_locked(
        &self,
        disk: &mut Disk,
        if_match: Option<&str>,
    ) -> Result<Arc<ConfigSnapshot>, EditError> {
        // docs/DECISIONS.md #14: surrounding whitespace and double quotes are not significant.
        let want = if_match.map(|w| w.trim().trim_matches('"'));
        if self.file_changed(disk) {
            if let Err(e) = self.reload_locked(disk) {
                // A stale If-Match is a conflict whatever the file holds (it names bytes that
                // are gone); otherwise the broken file blocks every edit.
                if want.is_some_and(|w| w != self.on_disk().revision) {
                    return Err(EditError::RevisionConflict);
                }
                return Err(EditError::DiskInvalid(format!(
                    "{}: {e}",
                    self.path.display()
                )));
            }
        }
        let cur = self.current();
        if want.is_some_and(|w| w != cur.revision) {
            return Err(EditError::RevisionConflict);
        }
        Ok(cur)
    }

    /// The outcome of an atomic replace: `Ok(true)` written; `Ok(false)` the file changed
    /// under us and the edit should be re-applied on top of it (without `If-Match`; with it,
    /// that is a conflict); `Err` otherwise. Our document copy is rebuilt when not written.
    fn written_or_retry(
        &self,
        disk: &mut Disk,
        written: std::io::Result<Replace>,
        if_match: Option<&str>,
    ) -> Result<bool, EditError> {
        match written {
            Ok(Replace::Written) => Ok(true),
            Ok(Replace::Changed) => {
                self.restore_doc(disk);
                if if_match.is_some() {
                    return Err(EditError::RevisionConflict);
                }
                Ok(false)
            }
            Err(e) => {
                self.restore_doc(disk);
                Err(EditError::Io(e))
            }
        }
    }

    fn write_file(&self, old: &[u8], new: &[u8]) -> std::io::Result<Replace> {
        fsio::replace_if_unchanged(&self.target, old, new, &mut || self.run_test_hook())
    }

    #[cfg(test)]
    fn run_test_hook(&self) {
        if let Some(h) = self.before_recheck.lock().as_mut() {
            h();
        }
    }

    #[cfg(not(test))]
    fn run_test_hook(&self) {}

    /// Whether the main file's bytes differ from what we last read or wrote.
    /// (Metadata only: the byte-exact comparison happens right before the rename.)
    fn file_changed(&self, disk: &Disk) -> bool {
        let now = FileStamp::of(&self.target);
        now.is_none() || now != disk.stamp
    }

    fn check_preconditions(&self, cfg: &Config, edit: &UserEdit) -> Result<(), EditError> {
        let user = edit.username();
        let exists = cfg.access.users.contains_key(user);
        match edit {
            UserEdit::Create(_) if exists => return Err(EditError::UserExists),
            UserEdit::Create(_) => {}
            _ if !exists => return Err(EditError::UserNotFound),
            UserEdit::Delete { .. } if cfg.access.users.len() <= 1 => {
                return Err(EditError::LastUser)
            }
            _ => {}
        }
        Ok(())
    }

    /// Produces the new main-file bytes. Fast path: splice the text at indexed offsets.
    /// Otherwise: edit a freshly parsed `toml_edit` document. On error nothing was written.
    fn render_text(
        &self,
        disk: &mut Disk,
        cur: &Config,
        edit: &UserEdit,
    ) -> Result<Vec<u8>, EditError> {
        // Loaded files are valid UTF-8 (checked at load), so this never fails in practice.
        let old = std::str::from_utf8(&disk.bytes)
            .map_err(|_| EditError::Io(std::io::Error::other("config file is not UTF-8")))?
            .to_owned();
        let cur_rate = cur.access.user_rate_limits.get(edit.username()).copied();
        let text = match disk.index.as_mut() {
            Some(index) => {
                let mut text = old;
                if let Err(e) = index.apply(&mut text, edit, cur_rate) {
                    self.restore_doc(disk);
                    return Err(e);
                }
                text
            }
            None => {
                let mut doc = parse_doc(&old, disk.has_includes)
                    .map_err(|e| EditError::Io(std::io::Error::other(e)))?;
                let user = edit.username();
                if cur.access.users.contains_key(user) && !doc_has_user(&doc, user) {
                    return Err(EditError::Invalid(format!(
                        "user {user:?} is defined in an included file; edit that file instead"
                    )));
                }
                apply_to_doc(&mut doc, edit, cur_rate)?;
                let text = doc.to_string();
                if disk.has_includes {
                    fsio::unmask_includes(&text)
                } else {
                    text
                }
            }
        };
        Ok(text.into_bytes())
    }

    /// Re-indexes the main file after an abandoned edit (the published config is kept; a
    /// changed file is picked up by the next reload).
    fn restore_doc(&self, disk: &mut Disk) {
        // Force a full re-read on the next attempt, whatever the metadata says.
        disk.stamp = None;
        if disk.index.is_some() {
            disk.index = std::str::from_utf8(&disk.bytes)
                .ok()
                .and_then(AccessIndex::build);
        }
    }
}
