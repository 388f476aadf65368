//! Shared state of the API: the config store, the runtime port, the view caches and the
//! request-id counter. Cheap to clone; no process-wide statics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use config::ConfigStore;

use crate::reload::ReloadLog;
use crate::runtime::Runtime;
use crate::views::ViewCaches;

struct Inner {
    store: Arc<ConfigStore>,
    runtime: Arc<dyn Runtime>,
    caches: ViewCaches,
    reloads: ReloadLog,
    next_request_id: AtomicU64,
}

/// Everything a request handler may use. Clones share the same state.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl ApiState {
    pub fn new(store: Arc<ConfigStore>, runtime: Arc<dyn Runtime>) -> Self {
        Self::with_caches(store, runtime, ViewCaches::default())
    }

    pub fn with_caches(
        store: Arc<ConfigStore>,
        runtime: Arc<dyn Runtime>,
        caches: ViewCaches,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                caches,
                reloads: ReloadLog::default(),
                next_request_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn store(&self) -> &Arc<ConfigStore> {
        &self.inner.store
    }

    pub fn runtime(&self) -> &dyn Runtime {
        self.inner.runtime.as_ref()
    }

    pub fn caches(&self) -> &ViewCaches {
        &self.inner.caches
    }

    /// Outcomes of `POST /v1/system/reload`.
    pub fn reloads(&self) -> &ReloadLog {
        &self.inner.reloads
    }

    /// Takes the next request id (docs/DECISIONS.md #6: process-wide, from 1, one per request).
    pub fn next_request_id(&self) -> u64 {
        self.inner.next_request_id.fetch_add(1, Ordering::Relaxed)
    }
}
