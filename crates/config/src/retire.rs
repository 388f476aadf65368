//! Deferred deallocation. Replacing a config with tens of thousands of users frees as many
//! heap objects; doing that inline would run on the write path, under the store's mutation
//! lock, before the API answers. A [`Retirer`] hands such values to a background thread.
//! Must not: run anything but `Drop` there.

use std::sync::mpsc;

type Garbage = Box<dyn Send>;

/// Drops values on a dedicated background thread (inline when that thread cannot be had).
#[derive(Debug)]
pub struct Retirer {
    tx: Option<mpsc::Sender<Garbage>>,
}

impl Retirer {
    /// Starts the thread (named `name`); it exits when the `Retirer` is dropped.
    pub fn new(name: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Garbage>();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || rx.into_iter().for_each(drop));
        Self {
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Drops `value` later, off the caller's thread.
    pub fn retire<T: Send + 'static>(&self, value: T) {
        let garbage: Garbage = Box::new(value);
        if let Some(tx) = &self.tx {
            // A send fails only if the thread died; the value then comes back and drops here.
            let _ = tx.send(garbage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Noisy(Arc<AtomicUsize>, std::thread::ThreadId);
    impl Drop for Noisy {
        fn drop(&mut self) {
            assert_ne!(
                std::thread::current().id(),
                self.1,
                "dropped on the caller's thread"
            );
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn drops_every_value_on_the_background_thread() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let r = Retirer::new("test-retirer");
        for _ in 0..10 {
            r.retire(Noisy(dropped.clone(), std::thread::current().id()));
        }
        drop(r);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dropped.load(Ordering::SeqCst) < 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 10);
    }
}
