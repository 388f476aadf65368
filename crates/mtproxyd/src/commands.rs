//! The one-shot commands: `check` (validate a config file) and `links` (print tg:// links).
//! Both only read the file; output goes to stdout, errors to stderr.

use std::path::Path;
use std::process::ExitCode;

use config::ConfigStore;

use crate::netinfo;

/// `mtproxyd check --config PATH`: prints warnings and the verdict; exit 0 when valid.
pub fn check(path: &Path) -> ExitCode {
    match ConfigStore::open(path) {
        Ok(store) => {
            let snap = store.current();
            for w in store.warnings() {
                println!("warning: {w}");
            }
            for w in mode_warnings(&snap.config) {
                println!("warning: {w}");
            }
            println!(
                "ok: {} is valid ({} users, revision {})",
                path.display(),
                snap.config.access.users.len(),
                snap.revision
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Warnings about enabled modes that a censor can detect passively (docs/PROTOCOL.md §2.2,
/// docs/DECISIONS.md #33): only fake TLS looks like ordinary HTTPS on the wire.
pub fn mode_warnings(cfg: &config::Config) -> Vec<String> {
    let modes = &cfg.general.modes;
    let mut out = Vec::new();
    for (on, key, what) in [
        (modes.classic, "classic", "classic (plain obfuscated2)"),
        (modes.secure, "secure", "secure (\"dd\")"),
    ] {
        if on {
            out.push(format!(
                "general.modes.{key} = true: {what} connections are uniformly random bytes \
                 from the first byte, which fully-encrypted-traffic heuristics detect and block; \
                 only tls (\"ee\") looks like ordinary TLS. Prefer tls alone"
            ));
        }
    }
    out
}

/// The links of one user as `(mode, link)` pairs, in API order (classic, secure, tls).
pub fn user_links(
    cfg: &config::Config,
    detected: (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
    secret_hex: &str,
) -> Vec<(String, String)> {
    let plan = api::links::LinkPlan::from_config(cfg, detected);
    let mut buf = Vec::new();
    plan.write_links(&mut buf, secret_hex);
    let value: serde_json::Value = serde_json::from_slice(&buf).unwrap_or_default();
    let mut out = Vec::new();
    for mode in ["classic", "secure", "tls"] {
        if let Some(list) = value.get(mode).and_then(|v| v.as_array()) {
            for link in list.iter().filter_map(|l| l.as_str()) {
                out.push((mode.to_owned(), link.to_owned()));
            }
        }
    }
    out
}

/// `mtproxyd links --config PATH [USER]`: one block per user (`# user`, then `mode link`
/// lines). Exit 1 when the config is invalid or `USER` is unknown.
pub fn links(path: &Path, user: Option<&str>) -> ExitCode {
    let store = match ConfigStore::open(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let snap = store.current();
    let cfg = &snap.config;
    let detected = netinfo::local_interface_addrs();
    if let Some(u) = user {
        if !cfg.access.users.contains_key(u) {
            eprintln!("error: no user {u:?} in {}", path.display());
            return ExitCode::FAILURE;
        }
    }
    for (name, secret) in &cfg.access.users {
        if user.is_some_and(|u| u != name) {
            continue;
        }
        println!("# {name}");
        for (mode, link) in user_links(cfg, detected, &secret.to_hex()) {
            println!("{mode} {link}");
        }
    }
    ExitCode::SUCCESS
}

/// Username of the user put into a freshly created default config.
pub const DEFAULT_USER: &str = "default";

/// Writes the commented default config (one random user, API on 127.0.0.1:9091) when `path`
/// does not exist. Returns whether it was created. The file is created 0600 (it holds
/// secrets) via a temp file + rename, so a crash never leaves a partial config behind.
pub fn ensure_default_config(path: &Path) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    if path.exists() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = config::default_config_toml(DEFAULT_USER, &config::UserSecret::random());
    config::create_file_atomically(path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(true)
}

/// Logs the links of `user` (after a default config was created: the operator's first link).
pub fn log_links(
    cfg: &config::Config,
    detected: (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
    user: &str,
) {
    let secret = cfg
        .access
        .users
        .get(user)
        .map(|s| s.to_hex())
        .unwrap_or_default();
    for (mode, link) in user_links(cfg, detected, &secret) {
        tracing::info!(user, mode = %mode, "link: {link}");
    }
}
