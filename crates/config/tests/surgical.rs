//! Byte-for-byte preservation of everything outside the edited keys, on both edit paths.

mod common;

use common::*;
use config::{AdTag, FieldPatch, NewUser, UserEdit, UserPatch};
use time::macros::datetime;

#[test]
fn create_only_adds_the_users_lines() {
    for_both(|orig, path, store, with_include| {
        let mut n = NewUser::new("carol", secret(3));
        n.max_tcp_conns = Some(9);
        let snap = store.apply(None, UserEdit::Create(n)).unwrap();
        let text = read(path);
        let without: String = text
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("carol"))
            .collect();
        assert_eq!(without, orig, "new file:\n{text}");
        assert!(text.contains("carol = \"03030303030303030303030303030303\""));
        assert!(text.contains("[access.users] # people"));
        assert_eq!(snap.revision, config::revision_of(text.as_bytes()));
        assert_eq!(snap.config.access.user_max_tcp_conns.get("carol"), Some(&9));
        let domain = if with_include {
            "example.com"
        } else {
            "petrovich.ru"
        };
        assert_eq!(snap.config.censorship.tls_domain, domain);
        // The published model equals a fresh load of the written file.
        let fresh = config::load_file(path).unwrap().config;
        assert_eq!(*snap.config, fresh);
    });
}

#[test]
fn create_with_new_tables_places_them_after_the_access_tables() {
    for_both(|orig, path, store, _| {
        let mut n = NewUser::new("dave.x", secret(4));
        n.user_ad_tag = Some(AdTag([0xab; 16]));
        n.expiration = Some(datetime!(2027-01-01 03:00 +03:00));
        n.data_quota_bytes = Some(1 << 40);
        let snap = store.apply(None, UserEdit::Create(n)).unwrap();
        let text = read(path);
        let expected = orig
            .replace(
                &format!("bob   = \"{BOB}\"\n"),
                &format!("bob   = \"{BOB}\"\n\"dave.x\" = \"{}\"\n", "04".repeat(16)),
            )
            .replace(
                "alice = 5 # five\n",
                &format!(
                    "alice = 5 # five\n\n[access.user_ad_tags]\n\"dave.x\" = \"{}\"\n\n\
                     [access.user_expirations]\n\"dave.x\" = \"2027-01-01T00:00:00Z\"\n\n\
                     [access.user_data_quota]\n\"dave.x\" = 1099511627776\n",
                    "ab".repeat(16)
                ),
            );
        assert_eq!(text, expected);
        assert!(
            !text.contains("[access.user_max_unique_ips]"),
            "no empty tables"
        );
        let cfg = config::load_file(path).unwrap().config;
        assert_eq!(cfg, *snap.config);
        assert_eq!(
            cfg.access.user_data_quota.get("dave.x"),
            Some(&(1u64 << 40))
        );
        assert_eq!(
            cfg.access.user_expirations["dave.x"],
            datetime!(2027-01-01 00:00 UTC)
        );
    });
}

#[test]
fn patch_set_and_clear_touch_only_that_value() {
    for_both(|orig, path, store, with_include| {
        let patch = UserPatch {
            max_tcp_conns: FieldPatch::Set(7),
            ..Default::default()
        };
        store
            .apply(
                None,
                UserEdit::Patch {
                    username: "alice".into(),
                    patch,
                },
            )
            .unwrap();
        assert_eq!(
            read(path),
            orig.replace("alice = 5 # five", "alice = 7 # five")
        );

        let patch = UserPatch {
            max_tcp_conns: FieldPatch::Clear,
            ..Default::default()
        };
        let snap = store
            .apply(
                None,
                UserEdit::Patch {
                    username: "alice".into(),
                    patch,
                },
            )
            .unwrap();
        // The table this edit emptied goes; everything else stays.
        let cleared = read(path);
        assert!(
            !cleared.contains("[access.user_max_tcp_conns]"),
            "{cleared}"
        );
        if !with_include {
            assert_eq!(
                cleared,
                orig.replace("[access.user_max_tcp_conns]\nalice = 5 # five\n", "")
            );
        }
        assert_eq!(snap.config.access.effective_max_tcp_conns("alice"), None);
        assert_eq!(*snap.config, config::load_file(path).unwrap().config);

        // Clearing a value that is not set changes nothing and creates no table.
        let patch = UserPatch {
            max_unique_ips: FieldPatch::Clear,
            ..Default::default()
        };
        store
            .apply(
                None,
                UserEdit::Patch {
                    username: "bob".into(),
                    patch,
                },
            )
            .unwrap();
        assert_eq!(read(path), cleared);

        // Setting the value again writes a new table.
        let patch = UserPatch {
            max_tcp_conns: FieldPatch::Set(1),
            ..Default::default()
        };
        let snap = store
            .apply(
                None,
                UserEdit::Patch {
                    username: "bob".into(),
                    patch,
                },
            )
            .unwrap();
        assert!(read(path).contains("[access.user_max_tcp_conns]\nbob = 1\n"));
        assert_eq!(snap.config.access.effective_max_tcp_conns("bob"), Some(1));
        assert_eq!(*snap.config, config::load_file(path).unwrap().config);
    });
}

#[test]
fn rotate_keeps_the_trailing_comment() {
    for_both(|orig, path, store, _| {
        let snap = store
            .apply(
                None,
                UserEdit::RotateSecret {
                    username: "alice".into(),
                    secret: secret(0xee),
                },
            )
            .unwrap();
        assert_eq!(read(path), orig.replace(ALICE, &"ee".repeat(16)));
        assert_eq!(snap.config.access.users["alice"], secret(0xee));
    });
}

#[test]
fn delete_removes_the_user_from_every_table_only() {
    for_both(|orig, path, store, with_include| {
        let snap = store
            .apply(
                None,
                UserEdit::Delete {
                    username: "bob".into(),
                },
            )
            .unwrap();
        assert_eq!(
            read(path),
            orig.replace(&format!("bob   = \"{BOB}\"\n"), "")
        );
        assert!(!snap.config.access.users.contains_key("bob"));

        // Deleting alice also empties [access.user_max_tcp_conns], which goes with her.
        store
            .apply(None, UserEdit::Create(NewUser::new("erin", secret(5))))
            .unwrap();
        let snap = store
            .apply(
                None,
                UserEdit::Delete {
                    username: "alice".into(),
                },
            )
            .unwrap();
        let text = read(path);
        assert!(!text.contains("alice"), "{text}");
        assert!(text.contains("[access.users] # people"));
        assert!(!text.contains("[access.user_max_tcp_conns]"), "{text}");
        assert!(text.contains("use_middle_proxy = false   # direct only"));
        assert_eq!(text.contains("include = \"extra.toml\""), with_include);
        if !with_include {
            // The splice path removes only the entry's own line; the comment above stays.
            assert!(
                text.contains("[access.users] # people\n# first user\nerin = "),
                "{text}"
            );
        }
        assert_eq!(*snap.config, config::load_file(path).unwrap().config);
    });
}

#[test]
fn a_table_written_empty_by_hand_stays() {
    for_both(|orig, path, store, _| {
        // Add an empty table by hand, then delete a user: only the API's own keys move.
        let with_empty = format!("{orig}\n[access.user_data_quota]\n");
        std::fs::write(path, &with_empty).unwrap();
        store.reload_from_disk().unwrap();
        store
            .apply(
                None,
                UserEdit::Delete {
                    username: "bob".into(),
                },
            )
            .unwrap();
        let text = read(path);
        assert!(text.contains("[access.user_data_quota]\n"), "{text}");
        assert!(!text.contains("bob"), "{text}");
    });
}
