//! The commented default config written on first start.

use crate::types::UserSecret;

/// A commented, telemt-compatible default config with one user and the API on 127.0.0.1:9091.
pub fn default_config_toml(username: &str, secret: &UserSecret) -> String {
    let user = if username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        username.to_string()
    } else {
        format!("{username:?}")
    };
    format!(
        r#"# mtproxyd configuration (telemt-compatible keys).
# Hand edits are picked up automatically (file watcher, SIGHUP); a file that fails to
# parse or validate is reported and the running config is kept.

[general]
# Direct to the Telegram DCs. Set true to go through Telegram's middle proxies (needed for a
# sponsored channel: ad_tag); the proxy then downloads their list from core.telegram.org.
use_middle_proxy = false
log_level = "normal"          # debug | verbose | normal | silent

[general.modes]
# classic and secure ("dd") are random bytes from the first byte on: fully-encrypted-traffic
# heuristics block them without probing. Keep them off unless old clients need them.
classic = false
secure = false
tls = true                    # FakeTLS ("ee") links: looks like an ordinary TLS connection

[general.links]
# public_host = "proxy.example.com"   # host written into tg:// links
# public_port = 443                   # port written into links (default: server.port)

[server]
# telemt's default is 443; this generated file uses the non-privileged port 8443 so the
# proxy can start without extra privileges. Change it to 443 in production.
port = 8443
listen_addr_ipv4 = "0.0.0.0"
# listen_addr_ipv6 = "::"

[server.api]
enabled = true
listen = "127.0.0.1:9091"
whitelist = ["127.0.0.1/32", "::1/128"]
# auth_header = "Bearer change-me"    # exact Authorization header value; empty = no auth
read_only = false

[censorship]
tls_domain = "www.google.com" # domain the FakeTLS handshake imitates
mask = true                   # forward non-proxy clients to the real tls_domain

[access]
# user_max_tcp_conns_global_each = 0  # default per-user connection cap (0 = none)
# user_max_unique_ips_global_each = 0 # default per-user unique IP cap (0 = none)

[access.users]
# username = "32 hex characters secret"
{user} = "{secret}"
"#,
        secret = secret.to_hex()
    )
}
