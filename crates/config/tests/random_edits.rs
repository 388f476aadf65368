//! Random edit sequences: after every step the published model must equal a fresh load of the
//! written file (catches any drift of the splice index), on both edit paths.

mod common;

use common::*;
use config::{AdTag, EditError, FieldPatch, NewUser, UserEdit, UserPatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create(u8, Option<u8>, Option<u16>),
    Patch(
        u8,
        Option<Option<u16>>,
        Option<Option<u8>>,
        Option<Option<u32>>,
    ),
    Rotate(u8, u8),
    Delete(u8),
}

fn name(i: u8) -> String {
    if i % 3 == 0 {
        format!("u.{i}")
    } else {
        format!("u{i}")
    }
}

fn fp<T>(v: Option<Option<T>>) -> FieldPatch<T> {
    match v {
        None => FieldPatch::Keep,
        Some(None) => FieldPatch::Clear,
        Some(Some(x)) => FieldPatch::Set(x),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0u8..8;
    prop_oneof![
        (u.clone(), any::<Option<u8>>(), any::<Option<u16>>())
            .prop_map(|(a, b, c)| Op::Create(a, b, c)),
        (
            u.clone(),
            any::<Option<Option<u16>>>(),
            any::<Option<Option<u8>>>(),
            any::<Option<Option<u32>>>()
        )
            .prop_map(|(a, b, c, d)| Op::Patch(a, b, c, d)),
        (u.clone(), any::<u8>()).prop_map(|(a, b)| Op::Rotate(a, b)),
        u.prop_map(Op::Delete),
    ]
}

fn to_edit(op: &Op) -> UserEdit {
    match op {
        Op::Create(u, tag, conns) => {
            let mut n = NewUser::new(name(*u), secret(*u));
            n.user_ad_tag = tag.map(|t| AdTag([t; 16]));
            n.max_tcp_conns = conns.map(usize::from);
            UserEdit::Create(n)
        }
        Op::Patch(u, conns, tag, quota) => UserEdit::Patch {
            username: name(*u),
            patch: UserPatch {
                max_tcp_conns: fp(conns.map(|o| o.map(usize::from))),
                user_ad_tag: fp(tag.map(|o| o.map(|t| AdTag([t; 16])))),
                data_quota_bytes: fp(quota.map(|o| o.map(u64::from))),
                ..Default::default()
            },
        },
        Op::Rotate(u, s) => UserEdit::RotateSecret {
            username: name(*u),
            secret: secret(*s),
        },
        Op::Delete(u) => UserEdit::Delete { username: name(*u) },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn model_always_matches_the_file(ops in proptest::collection::vec(op(), 1..25)) {
        for_both(|_, path, store, _| {
            for op in &ops {
                match store.apply(None, to_edit(op)) {
                    Ok(snap) => {
                        let fresh = config::load_file(path).unwrap().config;
                        assert_eq!(*snap.config, fresh, "after {op:?}\n{}", read(path));
                    }
                    Err(EditError::UserExists | EditError::UserNotFound | EditError::LastUser) => {}
                    Err(e) => panic!("{op:?}: {e}"),
                }
            }
            // Untouched parts of the fixture survive any sequence.
            let text = read(path);
            assert!(text.contains("[access.users] # people"));
            assert!(text.contains("user_max_unique_ips_mode = \"time_window\"   # odd place"));
        });
    }
}
