#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::{ConfigStore, UserSecret};

pub const ALICE: &str = "0123456789abcdef0123456789abcdef";
pub const BOB: &str = "fedcba9876543210fedcba9876543210";

/// A main file with comments, blank lines, an include, odd key order and a header comment.
pub const FIXTURE: &str = r#"# Main config — hand written
include = "extra.toml"

[general]
use_middle_proxy = false   # direct only
log_level = "normal"

[server]
port = 8443

[access.users] # people
# first user
alice = "0123456789abcdef0123456789abcdef"  # alice's secret
bob   = "fedcba9876543210fedcba9876543210"

[server.api]
enabled = true
listen = "127.0.0.1:9091"

# per-user limits
[access.user_max_tcp_conns]
alice = 5 # five

[access]
user_max_unique_ips_mode = "time_window"   # odd place for the parent table
"#;

pub const EXTRA: &str = "[censorship]\ntls_domain = \"example.com\"\n";

/// `FIXTURE` without its include line (takes the store's fast splice path).
pub fn fixture_plain() -> String {
    FIXTURE.replace("include = \"extra.toml\"\n", "")
}

/// Runs `f` on both layouts: with the include line (document path) and without (splice path).
pub fn for_both(f: impl Fn(&str, &Path, &Arc<ConfigStore>, bool)) {
    for with_include in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "extra.toml", EXTRA);
        let text = if with_include {
            FIXTURE.to_string()
        } else {
            fixture_plain()
        };
        let path = write(dir.path(), "config.toml", &text);
        let store = ConfigStore::open(&path).unwrap();
        assert_eq!(store.splice_path_active(), !with_include);
        f(&text, &path, &store, with_include);
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn fixture_store() -> (tempfile::TempDir, PathBuf, Arc<ConfigStore>) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "extra.toml", EXTRA);
    let path = write(dir.path(), "config.toml", FIXTURE);
    let store = ConfigStore::open(&path).unwrap();
    (dir, path, store)
}

pub fn minimal(users: &[(&str, &str)]) -> String {
    let mut s = String::from("[server]\nport = 8443\n\n[access.users]\n");
    for (u, k) in users {
        s.push_str(&format!("{u} = \"{k}\"\n"));
    }
    s
}

pub fn minimal_store(users: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Arc<ConfigStore>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "config.toml", &minimal(users));
    let store = ConfigStore::open(&path).unwrap();
    (dir, path, store)
}

pub fn secret(n: u8) -> UserSecret {
    UserSecret([n; 16])
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
