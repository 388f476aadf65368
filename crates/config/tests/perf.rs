//! Throughput check with 10,000 users (machine-dependent, so ignored by default):
//! `cargo test --release -p mtproxyd-config --test perf -- --ignored --nocapture`

use std::time::Instant;

use config::{ConfigStore, NewUser, UserEdit, UserSecret};

#[test]
#[ignore = "timing-dependent; run in release on an idle machine"]
fn creates_per_second_with_10k_users() {
    // A directory on the build disk (not tmpfs), so fsync costs are real.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("config.toml");
    let mut text = String::from("[server]\nport = 8443\n\n[access.users]\n");
    for i in 0..10_000 {
        text.push_str(&format!("user_{i:05} = \"{}\"\n", UserSecret::random()));
    }
    std::fs::write(&path, text).unwrap();
    let store = ConfigStore::open(&path).unwrap();
    let n = 200;
    let t = Instant::now();
    for i in 0..n {
        store
            .apply(
                None,
                UserEdit::Create(NewUser::new(format!("new_{i}"), UserSecret::random())),
            )
            .unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!("{rate:.0} creates/s with 10k users (each fsynced)");
    assert_eq!(
        config::load_file(&path).unwrap().config.access.users.len(),
        10_000 + n
    );
    assert!(rate >= 100.0, "{rate:.0} creates/s < 100");
}
