//! Store semantics: If-Match, concurrency, last user, file mode, reloads, watcher, stats.

mod common;

use sha2::Digest as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use config::{
    ChangeSource, ConfigEvent, EditError, FieldPatch, NewUser, UserEdit, UserPatch, WatcherOptions,
};

#[test]
fn if_match_mismatch_writes_nothing() {
    let (_d, path, store) = fixture_store();
    let before = read(&path);
    let r = store.apply(
        Some(&"0".repeat(64)),
        UserEdit::Create(NewUser::new("x", secret(1))),
    );
    assert!(matches!(r, Err(EditError::RevisionConflict)));
    assert_eq!(read(&path), before);
    assert_eq!(store.reload_stats().reload_count, 0);
    // The matching revision is accepted.
    let rev = store.current().revision.clone();
    assert_eq!(rev, config::revision_of(before.as_bytes()));
    store
        .apply(Some(&rev), UserEdit::Create(NewUser::new("x", secret(1))))
        .unwrap();
    assert!(read(&path).contains("x = "));
}

#[test]
fn existence_and_last_user_rules() {
    let (_d, path, store) = minimal_store(&[("solo", ALICE)]);
    let r = store.apply(None, UserEdit::Create(NewUser::new("solo", secret(1))));
    assert!(matches!(r, Err(EditError::UserExists)));
    let r = store.apply(
        None,
        UserEdit::Delete {
            username: "ghost".into(),
        },
    );
    assert!(matches!(r, Err(EditError::UserNotFound)));
    let r = store.apply(
        None,
        UserEdit::Patch {
            username: "ghost".into(),
            patch: UserPatch::default(),
        },
    );
    assert!(matches!(r, Err(EditError::UserNotFound)));
    let r = store.apply(
        None,
        UserEdit::RotateSecret {
            username: "ghost".into(),
            secret: secret(1),
        },
    );
    assert!(matches!(r, Err(EditError::UserNotFound)));
    let before = read(&path);
    let r = store.apply(
        None,
        UserEdit::Delete {
            username: "solo".into(),
        },
    );
    assert!(matches!(r, Err(EditError::LastUser)));
    assert_eq!(read(&path), before);
    let r = store.apply(None, UserEdit::Create(NewUser::new("bad name", secret(1))));
    assert!(matches!(r, Err(EditError::Invalid(m)) if m.contains("username")));
}

#[test]
fn hand_written_odd_usernames_can_still_be_patched_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[access.users]
\"odd name@x\" = \"{ALICE}\"\nok = \"{BOB}\"\n"
    );
    let path = write(dir.path(), "config.toml", &text);
    let store = config::ConfigStore::open(&path).unwrap();
    let patch = UserPatch {
        max_unique_ips: FieldPatch::Set(2),
        ..Default::default()
    };
    let snap = store
        .apply(
            None,
            UserEdit::Patch {
                username: "odd name@x".into(),
                patch,
            },
        )
        .unwrap();
    assert_eq!(
        snap.config.access.effective_max_unique_ips("odd name@x"),
        Some(2)
    );
    assert_eq!(*snap.config, config::load_file(&path).unwrap().config);
    store
        .apply(
            None,
            UserEdit::Delete {
                username: "odd name@x".into(),
            },
        )
        .unwrap();
    // The table the API created for that user went with it: back to the original text.
    assert_eq!(read(&path), format!("[access.users]\nok = \"{BOB}\"\n"));
}

#[test]
fn fifty_threads_create_distinct_users() {
    let (_d, path, store) = minimal_store(&[("seed", ALICE)]);
    let handles: Vec<_> = (0..50u8)
        .map(|i| {
            let s = Arc::clone(&store);
            std::thread::spawn(move || {
                s.apply(
                    None,
                    UserEdit::Create(NewUser::new(format!("u{i}"), secret(i))),
                )
                .unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let cfg = config::load_file(&path).unwrap().config;
    assert_eq!(cfg.access.users.len(), 51);
    assert_eq!(store.current().config.access.users.len(), 51);
    assert_eq!(
        store.current().revision,
        config::revision_of(read(&path).as_bytes())
    );
    assert_eq!(store.reload_stats().reload_count, 50);
}

#[test]
fn twenty_patches_with_same_if_match_exactly_one_wins() {
    let (_d, _path, store) = minimal_store(&[("a", ALICE), ("b", BOB)]);
    let rev = store.current().revision.clone();
    let handles: Vec<_> = (0..20usize)
        .map(|i| {
            let s = Arc::clone(&store);
            let rev = rev.clone();
            std::thread::spawn(move || {
                let patch = UserPatch {
                    max_tcp_conns: FieldPatch::Set(i + 1),
                    ..Default::default()
                };
                s.apply(
                    Some(&rev),
                    UserEdit::Patch {
                        username: "a".into(),
                        patch,
                    },
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, EditError::RevisionConflict)));
}

#[test]
fn file_mode_is_kept() {
    let (_d, path, store) = minimal_store(&[("a", ALICE)]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    store
        .apply(None, UserEdit::Create(NewUser::new("b", secret(2))))
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    // No temp files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn hand_edit_is_picked_up_before_an_api_write() {
    let (_d, path, store) = minimal_store(&[("a", ALICE)]);
    std::fs::write(&path, minimal(&[("a", ALICE), ("hand", BOB)])).unwrap();
    // Without If-Match the write lands on top of the newer file.
    store
        .apply(None, UserEdit::Create(NewUser::new("api", secret(9))))
        .unwrap();
    let cfg = config::load_file(&path).unwrap().config;
    assert!(cfg.access.users.contains_key("hand") && cfg.access.users.contains_key("api"));
    // With a stale If-Match: conflict, nothing written.
    let stale = store.current().revision.clone();
    std::fs::write(&path, read(&path) + "hand2 = \"" + BOB + "\"\n").unwrap();
    let before = read(&path);
    let r = store.apply(
        Some(&stale),
        UserEdit::Create(NewUser::new("api2", secret(8))),
    );
    assert!(matches!(r, Err(EditError::RevisionConflict)));
    assert_eq!(read(&path), before);
    assert!(store.current().config.access.users.contains_key("hand2"));
}

#[test]
fn bad_hand_edit_keeps_old_config_and_reports_once() {
    let (_d, path, store) = minimal_store(&[("a", ALICE)]);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let f = Arc::clone(&failures);
    store.add_listener(Box::new(move |ev| {
        if let ConfigEvent::ReloadFailed { error } = ev {
            f.lock().unwrap().push(error.to_string());
        }
    }));
    let old = store.current();
    std::fs::write(&path, "[access.users\nbroken").unwrap();
    assert!(store.reload_from_disk().is_err());
    assert!(store.reload_from_disk().is_err());
    assert_eq!(
        failures.lock().unwrap().len(),
        1,
        "reported once per bad content"
    );
    assert!(Arc::ptr_eq(&old, &store.current()));
    // A missing file is also reported once, however often we look.
    let saved = read(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(store.reload_from_disk().is_err());
    assert!(store.reload_from_disk().is_err());
    assert_eq!(failures.lock().unwrap().len(), 2);
    std::fs::write(&path, saved).unwrap();
    // An API write refuses to edit a broken file and does not overwrite it.
    let r = store.apply(None, UserEdit::Create(NewUser::new("b", secret(2))));
    assert!(matches!(r, Err(EditError::DiskInvalid(_))), "{r:?}");
    assert_eq!(read(&path), "[access.users\nbroken");
    // The revision reported is the broken file's; the running snapshot keeps its own.
    let on_disk = store.on_disk();
    assert_eq!(
        on_disk.revision,
        hex::encode(sha2::Sha256::digest(b"[access.users\nbroken"))
    );
    assert!(on_disk.invalid.is_some());
    assert_eq!(store.current().revision, old.revision);
    // A stale If-Match is a conflict, not "invalid file".
    let r = store.apply(
        Some(&old.revision),
        UserEdit::Create(NewUser::new("b", secret(2))),
    );
    assert!(matches!(r, Err(EditError::RevisionConflict)), "{r:?}");
    // Fixing the file publishes again.
    std::fs::write(&path, minimal(&[("a", ALICE), ("c", BOB)])).unwrap();
    assert!(store.reload_from_disk().unwrap());
    assert!(!store.reload_from_disk().unwrap(), "same bytes: no-op");
    assert!(store.current().config.access.users.contains_key("c"));
}

#[test]
fn listeners_and_subscribers_see_api_writes_before_apply_returns() {
    let (_d, _path, store) = minimal_store(&[("a", ALICE)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    store.add_listener(Box::new(move |ev| {
        if let ConfigEvent::Applied { snapshot, source } = ev {
            s2.lock()
                .unwrap()
                .push((snapshot.revision.clone(), *source));
        }
    }));
    let rx = store.subscribe();
    let snap = store
        .apply(None, UserEdit::Create(NewUser::new("b", secret(2))))
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(snap.revision.clone(), ChangeSource::Api)]
    );
    assert_eq!(rx.borrow().revision, snap.revision);
    let stats = store.reload_stats();
    assert_eq!(stats.reload_count, 1);
    assert!(stats.last_reload_epoch_secs.is_some());
    // Our own write seen again from disk is a no-op.
    assert!(!store.reload_from_disk().unwrap());
    assert_eq!(store.reload_stats().reload_count, 1);
}

fn atomic_write(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_picks_up_hand_edits_and_bad_edits() {
    let (_d, path, store) = minimal_store(&[("a", ALICE)]);
    let failed = Arc::new(Mutex::new(0usize));
    let f = Arc::clone(&failed);
    store.add_listener(Box::new(move |ev| {
        if matches!(ev, ConfigEvent::ReloadFailed { .. }) {
            *f.lock().unwrap() += 1;
        }
    }));
    let opts = WatcherOptions {
        debounce: Duration::from_millis(30),
        poll_interval: Duration::from_secs(60),
    };
    let _w = store.spawn_watcher_with(opts);
    let mut rx = store.subscribe();
    // Atomic save like an editor: temp file + rename.
    atomic_write(&path, &minimal(&[("a", ALICE), ("w", BOB)]));
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(store.current().config.access.users.contains_key("w"));
    // In-place write after the rename (new inode) is seen too.
    std::fs::write(&path, minimal(&[("a", ALICE), ("w", BOB), ("v", BOB)])).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(store.current().config.access.users.contains_key("v"));
    // (An in-place write may be seen half-done; only count failures from here on.)
    *failed.lock().unwrap() = 0;
    // A broken edit is reported (once) and the config kept.
    atomic_write(&path, "not = [toml");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while *failed.lock().unwrap() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*failed.lock().unwrap(), 1);
    assert!(store.current().config.access.users.contains_key("v"));
    // Repair it, then check that our own API write seen by the watcher is a no-op.
    atomic_write(&path, &minimal(&[("a", ALICE)]));
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let before = store.reload_stats().reload_count;
    let s2 = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        s2.apply(None, UserEdit::Create(NewUser::new("api", secret(7))))
            .unwrap()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.reload_stats().reload_count, before + 1);
}

#[test]
fn out_of_range_values_and_if_match_spelling() {
    let (_d, path, store) = minimal_store(&[("a", ALICE)]);
    let before = read(&path);
    let mut n = NewUser::new("big", secret(1));
    n.data_quota_bytes = Some(u64::MAX);
    let r = store.apply(None, UserEdit::Create(n));
    assert!(matches!(r, Err(EditError::Invalid(m)) if m.contains("data_quota_bytes")));
    assert_eq!(read(&path), before);
    // Quoted / padded If-Match values are accepted (docs/DECISIONS.md #14).
    let quoted = format!(" \"{}\" ", store.current().revision);
    store
        .apply(
            Some(&quoted),
            UserEdit::Create(NewUser::new("b", secret(2))),
        )
        .unwrap();
    // A fresh store over the written file agrees with the published snapshot.
    let again = config::ConfigStore::open(&path).unwrap();
    assert_eq!(again.current().revision, store.current().revision);
    assert_eq!(*again.current().config, *store.current().config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_safety_net_catches_changes_without_events() {
    let (_d, path, store) = minimal_store(&[("a", ALICE)]);
    let opts = WatcherOptions {
        debounce: Duration::from_millis(10),
        poll_interval: Duration::from_millis(100),
    };
    let _w = store.spawn_watcher_with(opts);
    let mut rx = store.subscribe();
    std::fs::write(&path, minimal(&[("a", ALICE), ("p", BOB)])).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(store.current().config.access.users.contains_key("p"));
}

#[test]
fn included_file_changes_reload_and_included_users_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "more.toml", &format!("inc = \"{BOB}\"\n"));
    let main = format!("[access.users]\na = \"{ALICE}\"\ninclude = \"more.toml\"\n");
    let path = write(dir.path(), "config.toml", &main);
    let store = config::ConfigStore::open(&path).unwrap();
    assert!(store.current().config.access.users.contains_key("inc"));
    let r = store.apply(
        None,
        UserEdit::Delete {
            username: "inc".into(),
        },
    );
    assert!(matches!(r, Err(EditError::Invalid(m)) if m.contains("included")));
    // Edits go to the main file; the include line survives.
    store
        .apply(None, UserEdit::Create(NewUser::new("n", secret(3))))
        .unwrap();
    let text = read(&path);
    assert!(text.contains("include = \"more.toml\"\n"), "{text}");
    assert_eq!(
        read(&dir.path().join("more.toml")),
        format!("inc = \"{BOB}\"\n")
    );
    // Editing the included file alone is a config change (same main revision).
    let rev = store.current().revision.clone();
    write(
        dir.path(),
        "more.toml",
        &format!("inc = \"{BOB}\"\ninc2 = \"{BOB}\"\n"),
    );
    assert!(store.reload_from_disk().unwrap());
    assert!(store.current().config.access.users.contains_key("inc2"));
    assert_eq!(store.current().revision, rev);
}
