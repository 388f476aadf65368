//! File watcher: inotify (via `notify`) on the directories holding the main and included files
//! — a rename replaces the inode, so watching the file itself would go deaf after the first
//! atomic save — plus a slow poll as a safety net. Events are debounced, then
//! `reload_from_disk` runs on a blocking thread.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::store::ConfigStore;

/// Watcher timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatcherOptions {
    /// Quiet time after the last file event before reloading.
    pub debounce: Duration,
    /// Poll period of the safety-net check.
    pub poll_interval: Duration,
}

impl Default for WatcherOptions {
    fn default() -> Self {
        WatcherOptions {
            debounce: Duration::from_millis(250),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// Stops the watcher when dropped (or via [`WatcherHandle::stop`]).
pub struct WatcherHandle {
    task: tokio::task::JoinHandle<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl WatcherHandle {
    /// Stops watching.
    pub fn stop(self) {}
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigStore {
    /// Starts the watcher with default timing. Must be called inside a tokio runtime.
    pub fn spawn_watcher(self: &Arc<Self>) -> WatcherHandle {
        self.spawn_watcher_with(WatcherOptions::default())
    }

    /// Starts the watcher with the given timing. Must be called inside a tokio runtime.
    pub fn spawn_watcher_with(self: &Arc<Self>, opts: WatcherOptions) -> WatcherHandle {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let snap = self.current();
        let mut dirs = BTreeSet::new();
        let mut names = BTreeSet::new();
        for p in std::iter::once(&snap.path).chain(snap.config.includes.iter()) {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            for f in [abs.clone(), std::fs::canonicalize(&abs).unwrap_or(abs)] {
                if let (Some(d), Some(n)) = (f.parent(), f.file_name()) {
                    dirs.insert(d.to_path_buf());
                    names.insert(n.to_os_string());
                }
            }
        }
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                // Our own temp files are named ".<name>.tmp.*" and are not in `names`.
                if ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
                {
                    let _ = tx.send(());
                }
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                let ok = dirs
                    .iter()
                    .map(|d: &PathBuf| w.watch(d, RecursiveMode::NonRecursive))
                    .all(|r| r.is_ok());
                if !ok {
                    tracing::warn!(
                        "config watcher: cannot watch every directory; relying on polling"
                    );
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "config watcher unavailable; relying on polling");
                None
            }
        };
        let store = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut poll = tokio::time::interval(opts.poll_interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll.tick().await;
            loop {
                tokio::select! {
                    ev = rx.recv() => {
                        if ev.is_none() {
                            // Watcher gone: keep polling only.
                            loop {
                                poll.tick().await;
                                reload(&store).await;
                            }
                        }
                        // Debounce: wait until events stop arriving for `debounce`.
                        while let Ok(Some(())) =
                            tokio::time::timeout(opts.debounce, rx.recv()).await
                        {}
                        reload(&store).await;
                    }
                    _ = poll.tick() => reload(&store).await,
                }
            }
        });
        WatcherHandle {
            task,
            _watcher: watcher,
        }
    }
}

async fn reload(store: &Arc<ConfigStore>) {
    let s = Arc::clone(store);
    // Errors are already logged and reported to listeners by the store.
    let _ = tokio::task::spawn_blocking(move || s.reload_from_disk()).await;
}
