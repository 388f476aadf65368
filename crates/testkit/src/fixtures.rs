//! Config fixtures: a small telemt-compatible `config.toml` with the API enabled on a given
//! port and a given set of users.

use std::fmt::Write as _;

/// 32 random lowercase hex characters (a user secret or ad tag).
pub fn random_secret_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Builder for a test config file.
#[derive(Debug, Clone)]
pub struct ConfigFixture {
    /// `[server.api] listen` port.
    pub api_port: u16,
    /// `[server] port` (client listener).
    pub server_port: u16,
    /// `[access.users]`, in order.
    pub users: Vec<(String, String)>,
    /// `[server.api] read_only`.
    pub read_only: bool,
    /// `[server.api] auth_header` (empty = none).
    pub auth_header: String,
    /// Lines appended verbatim at the end (extra tables).
    pub extra: String,
}

impl ConfigFixture {
    /// API on `api_port`, one user `alice` with a random secret, client listener on a free port.
    pub fn new(api_port: u16) -> Self {
        Self {
            api_port,
            server_port: crate::free_port(),
            users: vec![("alice".to_owned(), random_secret_hex())],
            read_only: false,
            auth_header: String::new(),
            extra: String::new(),
        }
    }

    /// Replaces the users with `n` generated ones (`user00000`, ...).
    pub fn with_generated_users(mut self, n: usize) -> Self {
        self.users = (0..n)
            .map(|i| (format!("user{i:05}"), random_secret_hex()))
            .collect();
        self
    }

    /// Renders the TOML text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# mtproxyd test config");
        let _ = writeln!(
            s,
            "[general]\nuse_middle_proxy = false\nlog_level = \"normal\"\n"
        );
        let _ = writeln!(
            s,
            "[general.modes]\nclassic = false\nsecure = false\ntls = true\n"
        );
        let _ = writeln!(
            s,
            "[server]\nport = {}\n\n[[server.listeners]]\nip = \"127.0.0.1\"\n",
            self.server_port
        );
        let _ = writeln!(
            s,
            "[server.api]\nenabled = true\nlisten = \"127.0.0.1:{}\"\nwhitelist = [\"127.0.0.1/32\", \"::1/128\"]\nread_only = {}\nauth_header = \"{}\"\nruntime_edge_enabled = true\n",
            self.api_port, self.read_only, self.auth_header
        );
        let _ = writeln!(s, "[censorship]\ntls_domain = \"example.com\"\n");
        let _ = writeln!(s, "[access.users]");
        for (name, secret) in &self.users {
            let _ = writeln!(s, "{name} = \"{secret}\"");
        }
        if !self.extra.is_empty() {
            let _ = writeln!(s, "\n{}", self.extra);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_users_and_api_port() {
        let f = ConfigFixture::new(4321).with_generated_users(3);
        let text = f.render();
        assert!(text.contains("listen = \"127.0.0.1:4321\""));
        assert!(text.contains("user00002 = \""));
        assert_eq!(f.users.len(), 3);
        assert_eq!(random_secret_hex().len(), 32);
        assert_ne!(random_secret_hex(), random_secret_hex());
    }
}
