//! A hand edit that lands between our read and our rename (via the test seam).

use std::sync::Arc;

use crate::edit::{EditError, NewUser, UserEdit};
use crate::store::ConfigStore;
use crate::types::UserSecret;

const A: &str = "0123456789abcdef0123456789abcdef";
const B: &str = "fedcba9876543210fedcba9876543210";

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Arc<ConfigStore>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("[access.users]\na = \"{A}\" # keep\n")).unwrap();
    let store = ConfigStore::open(&path).unwrap();
    (dir, path, store)
}

fn arm_hand_edit(store: &ConfigStore, path: &std::path::Path) {
    let p = path.to_path_buf();
    let mut fired = false;
    *store.before_recheck.lock() = Some(Box::new(move || {
        if !fired {
            fired = true;
            let mut t = std::fs::read_to_string(&p).unwrap();
            t.push_str(&format!("hand = \"{B}\"\n"));
            std::fs::write(&p, t).unwrap();
        }
    }));
}

#[test]
fn hand_edit_during_write_is_not_lost_without_if_match() {
    let (_d, path, store) = setup();
    arm_hand_edit(&store, &path);
    let snap = store
        .apply(
            None,
            UserEdit::Create(NewUser::new("api", UserSecret([7; 16]))),
        )
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("hand = "), "{text}");
    assert!(text.contains("api = "), "{text}");
    assert!(text.contains("a = \"0123456789abcdef0123456789abcdef\" # keep"));
    assert!(snap.config.access.users.contains_key("hand"));
    assert!(snap.config.access.users.contains_key("api"));
    // Hand edit + API write are both counted.
    assert_eq!(store.reload_stats().reload_count, 2);
}

#[test]
fn hand_edit_during_write_with_if_match_is_a_conflict() {
    let (_d, path, store) = setup();
    let rev = store.current().revision.clone();
    arm_hand_edit(&store, &path);
    let r = store.apply(
        Some(&rev),
        UserEdit::Create(NewUser::new("api", UserSecret([7; 16]))),
    );
    assert!(matches!(r, Err(EditError::RevisionConflict)));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("hand = ") && !text.contains("api = "),
        "{text}"
    );
    // The next write (no If-Match) sees the hand edit and keeps it.
    store
        .apply(
            None,
            UserEdit::Create(NewUser::new("api", UserSecret([7; 16]))),
        )
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("hand = ") && text.contains("api = "),
        "{text}"
    );
}
