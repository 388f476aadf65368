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

/// Users whose links are logged at start (the rest: `mtproxyd links`).
const LOGGED_USERS: usize = 3;

/// Logs the links of the first users at every start, and warns when the only address the
/// links can use is one clients on the Internet cannot reach.
pub fn log_links(
    cfg: &config::Config,
    detected: (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
) {
    for (user, secret) in cfg.access.users.iter().take(LOGGED_USERS) {
        for (mode, link) in user_links(cfg, detected, &secret.to_hex()) {
            tracing::info!(user = %user, mode = %mode, "link: {link}");
        }
    }
    let more = cfg.access.users.len().saturating_sub(LOGGED_USERS);
    if more > 0 {
        tracing::info!("{more} more users: `mtproxyd links` prints every link");
    }
    if cfg.general.public_host().is_none() {
        if let Some(why) = unreachable_from_outside(detected) {
            tracing::warn!(
                "links use {why}; clients outside this network cannot reach it: set general.links.public_host (and public_port) to the address they use"
            );
        }
    }
}

/// Describes the detected addresses when none is public (private, loopback, link-local,
/// shared or documentation ranges).
fn unreachable_from_outside(
    detected: (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
) -> Option<String> {
    let v4_public = detected.0.filter(|ip| {
        let o = ip.octets();
        !(ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_documentation()
            || (o[0] == 100 && (64..128).contains(&o[1])))
    });
    let v6_public = detected.1.filter(|ip| {
        let s = ip.segments();
        // Global unicast (2000::/3) outside the documentation range 2001:db8::/32.
        (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
    });
    if v4_public.is_some() || v6_public.is_some() {
        return None;
    }
    let shown: Vec<String> = [
        detected.0.map(|a| a.to_string()),
        detected.1.map(|a| a.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    Some(if shown.is_empty() {
        "no detected address".to_owned()
    } else {
        format!("only non-public addresses ({})", shown.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_documentation_addresses_are_not_reachable() {
        let v4 = |s: &str| Some(s.parse().expect("v4"));
        let v6 = |s: &str| Some(s.parse().expect("v6"));
        assert!(unreachable_from_outside((v4("10.0.0.5"), None)).is_some());
        assert!(unreachable_from_outside((v4("100.64.1.1"), v6("fe80::1"))).is_some());
        assert!(unreachable_from_outside((v4("192.0.2.7"), v6("2001:db8::1"))).is_some());
        assert!(unreachable_from_outside((None, None)).is_some());
        assert!(unreachable_from_outside((v4("203.0.114.9"), None)).is_none());
        assert!(unreachable_from_outside((v4("10.0.0.5"), v6("2a01:4f8::1"))).is_none());
    }
}
