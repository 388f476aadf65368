//! `tg://proxy` link generation (docs/API.md "Link generation", docs/DECISIONS.md #21).
//!
//! Everything that depends only on the config snapshot and detected addresses (hosts, port,
//! modes, TLS domain hex) is computed once per request into a [`LinkPlan`]; per user only the
//! secret changes, and links are copied into the response buffer without intermediate strings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Per-request link plan: one prefix per host, the enabled modes and the TLS domain suffixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    /// `tg://proxy?server=<host>&port=<port>&secret=` for each resolved host, in order, already
    /// escaped as JSON string contents.
    prefixes: Vec<String>,
    classic: bool,
    secure: bool,
    /// Lowercase hex of each TLS domain (empty when TLS mode is off).
    tls_domain_hex: Vec<String>,
}

/// Inputs of link generation, extracted from the config so the rules are testable alone.
#[derive(Debug, Clone, Default)]
pub struct LinkInputs<'a> {
    pub public_host: Option<&'a str>,
    pub public_port: Option<u16>,
    pub server_port: u16,
    /// `(announce, announce_ip, ip)` of each listener, in config order.
    pub listeners: Vec<(Option<&'a str>, Option<IpAddr>, IpAddr)>,
    pub listen_addr_ipv4: Option<&'a str>,
    pub listen_addr_ipv6: Option<&'a str>,
    pub classic: bool,
    pub secure: bool,
    pub tls: bool,
    /// `censorship.tls_domain` first, then `censorship.tls_domains`.
    pub tls_domains: Vec<&'a str>,
    pub detected_v4: Option<Ipv4Addr>,
    pub detected_v6: Option<Ipv6Addr>,
}

impl LinkInputs<'_> {
    /// Builds the inputs from a config snapshot and the runtime's detected addresses.
    pub fn from_config(
        cfg: &config::Config,
        detected: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ) -> LinkInputs<'_> {
        let mut tls_domains = Vec::with_capacity(1 + cfg.censorship.tls_domains.len());
        tls_domains.push(cfg.censorship.tls_domain.as_str());
        tls_domains.extend(cfg.censorship.tls_domains.iter().map(String::as_str));
        LinkInputs {
            public_host: cfg.general.links.public_host.as_deref(),
            public_port: cfg.general.links.public_port,
            server_port: cfg.server.port,
            listeners: cfg
                .server
                .listeners
                .iter()
                .map(|l| (l.announce.as_deref(), l.announce_ip, l.ip))
                .collect(),
            listen_addr_ipv4: cfg.server.listen_addr_ipv4.as_deref(),
            listen_addr_ipv6: cfg.server.listen_addr_ipv6.as_deref(),
            classic: cfg.general.modes.classic,
            secure: cfg.general.modes.secure,
            tls: cfg.general.modes.tls,
            tls_domains,
            detected_v4: detected.0,
            detected_v6: detected.1,
        }
    }
}

/// Writes a host for a URL: IPv6 literals in brackets, everything else as given.
fn host_text(host: &str) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => host.to_owned(),
    }
}

fn push_unique(hosts: &mut Vec<String>, host: String) {
    if !hosts.contains(&host) {
        hosts.push(host);
    }
}

/// Resolves link hosts by docs/API.md's rules; the result is never empty.
pub fn resolve_hosts(inp: &LinkInputs<'_>) -> Vec<String> {
    if let Some(host) = inp.public_host.map(str::trim).filter(|h| !h.is_empty()) {
        return vec![host_text(host)];
    }
    let mut hosts = Vec::new();
    for (announce, announce_ip, ip) in &inp.listeners {
        if let Some(a) = announce.map(str::trim).filter(|a| !a.is_empty()) {
            push_unique(&mut hosts, host_text(a));
        } else if let Some(aip) = announce_ip.filter(|a| !a.is_unspecified()) {
            push_unique(&mut hosts, host_text(&aip.to_string()));
        } else if ip.is_unspecified() {
            // A wildcard bind is only useful through the detected address of its family; with
            // none detected the listener yields no host (the fallbacks below apply).
            let detected = match ip {
                IpAddr::V4(_) => inp.detected_v4.map(IpAddr::V4),
                IpAddr::V6(_) => inp.detected_v6.map(IpAddr::V6),
            };
            if let Some(d) = detected {
                push_unique(&mut hosts, host_text(&d.to_string()));
            }
        } else {
            push_unique(&mut hosts, host_text(&ip.to_string()));
        }
    }
    if !hosts.is_empty() {
        return hosts;
    }
    if let Some(v4) = inp.detected_v4 {
        return vec![v4.to_string()];
    }
    if let Some(v6) = inp.detected_v6 {
        return vec![format!("[{v6}]")];
    }
    for legacy in [inp.listen_addr_ipv4, inp.listen_addr_ipv6]
        .into_iter()
        .flatten()
    {
        let candidate = legacy.trim();
        if candidate.is_empty() {
            continue;
        }
        match candidate.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {}
            _ => push_unique(&mut hosts, host_text(candidate)),
        }
    }
    if hosts.is_empty() {
        hosts.push("UNKNOWN".to_owned());
    }
    hosts
}

impl LinkPlan {
    pub fn new(inp: &LinkInputs<'_>) -> Self {
        let port = inp.public_port.unwrap_or(inp.server_port);
        let prefixes = resolve_hosts(inp)
            .into_iter()
            .map(|h| json_escaped(&format!("tg://proxy?server={h}&port={port}&secret=")))
            .collect();
        let mut tls_domain_hex: Vec<String> = Vec::new();
        if inp.tls {
            for d in &inp.tls_domains {
                let hexed = hex::encode(d.as_bytes());
                if !d.is_empty() && !tls_domain_hex.contains(&hexed) {
                    tls_domain_hex.push(hexed);
                }
            }
        }
        Self {
            prefixes,
            classic: inp.classic,
            secure: inp.secure,
            tls_domain_hex,
        }
    }

    pub fn from_config(
        cfg: &config::Config,
        detected: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ) -> Self {
        Self::new(&LinkInputs::from_config(cfg, detected))
    }

    /// Appends the `links` object of one user (`secret_hex` = 32 lowercase hex characters) as
    /// JSON. Prefixes and suffixes were JSON-escaped once in [`LinkPlan::new`] and hex needs no
    /// escaping, so this is plain copying.
    pub fn write_links(&self, buf: &mut Vec<u8>, secret_hex: &str) {
        buf.extend_from_slice(b"{\"classic\":[");
        if self.classic {
            self.write_kind(buf, "", secret_hex);
        }
        buf.extend_from_slice(b"],\"secure\":[");
        if self.secure {
            self.write_kind(buf, "dd", secret_hex);
        }
        buf.extend_from_slice(b"],\"tls\":[");
        let mut first = true;
        for prefix in &self.prefixes {
            for domain in &self.tls_domain_hex {
                if !first {
                    buf.push(b',');
                }
                first = false;
                write_link(buf, prefix, "ee", secret_hex, domain);
            }
        }
        buf.extend_from_slice(b"]}");
    }

    /// The owned `UserLinks` of one user (for the CLI and tests; the API streams instead).
    pub fn user_links(&self, secret_hex: &str) -> crate::users::dto::UserLinks {
        let link = |prefix: &str, tag: &str, suffix: &str| {
            let mut buf = Vec::new();
            write_link(&mut buf, prefix, tag, secret_hex, suffix);
            // The prefix is stored JSON-escaped; decode the complete string literal back.
            serde_json::from_slice::<String>(&buf).unwrap_or_default()
        };
        let per_host = |enabled: bool, tag: &str| -> Vec<String> {
            if !enabled {
                return Vec::new();
            }
            self.prefixes.iter().map(|p| link(p, tag, "")).collect()
        };
        crate::users::dto::UserLinks {
            classic: per_host(self.classic, ""),
            secure: per_host(self.secure, "dd"),
            tls: self
                .prefixes
                .iter()
                .flat_map(|p| self.tls_domain_hex.iter().map(move |d| (p, d)))
                .map(|(p, d)| link(p, "ee", d))
                .collect(),
        }
    }

    fn write_kind(&self, buf: &mut Vec<u8>, tag: &str, secret_hex: &str) {
        for (i, prefix) in self.prefixes.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_link(buf, prefix, tag, secret_hex, "");
        }
    }
}

/// `"` + escaped prefix + tag + secret + suffix + `"` (all but the prefix are hex/ASCII tags).
fn write_link(buf: &mut Vec<u8>, escaped_prefix: &str, tag: &str, secret_hex: &str, suffix: &str) {
    buf.push(b'"');
    buf.extend_from_slice(escaped_prefix.as_bytes());
    buf.extend_from_slice(tag.as_bytes());
    buf.extend_from_slice(secret_hex.as_bytes());
    buf.extend_from_slice(suffix.as_bytes());
    buf.push(b'"');
}

/// JSON string contents of `s` (escaped, without the surrounding quotes).
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""));
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff";

    fn base() -> LinkInputs<'static> {
        LinkInputs {
            server_port: 443,
            classic: true,
            secure: true,
            tls: true,
            tls_domains: vec!["example.com"],
            ..LinkInputs::default()
        }
    }

    fn links(inp: &LinkInputs<'_>) -> serde_json::Value {
        let mut buf = Vec::new();
        LinkPlan::new(inp).write_links(&mut buf, SECRET);
        serde_json::from_slice(&buf).expect("json")
    }

    #[test]
    fn formats_all_modes() {
        let mut inp = base();
        inp.public_host = Some("proxy.example.org");
        inp.tls_domains = vec!["a.com", "b.com", "a.com", ""];
        let v = links(&inp);
        assert_eq!(
            v["classic"][0],
            format!("tg://proxy?server=proxy.example.org&port=443&secret={SECRET}")
        );
        assert_eq!(
            v["secure"][0],
            format!("tg://proxy?server=proxy.example.org&port=443&secret=dd{SECRET}")
        );
        let tls = v["tls"].as_array().expect("array");
        assert_eq!(tls.len(), 2);
        assert_eq!(
            tls[0],
            format!("tg://proxy?server=proxy.example.org&port=443&secret=ee{SECRET}612e636f6d")
        );
        assert!(tls[1].as_str().expect("str").ends_with("622e636f6d"));
    }

    #[test]
    fn disabled_modes_are_empty_and_public_port_wins() {
        let mut inp = base();
        inp.classic = false;
        inp.tls = false;
        inp.public_port = Some(8443);
        inp.public_host = Some("h");
        let v = links(&inp);
        assert_eq!(v["classic"], serde_json::json!([]));
        assert_eq!(v["tls"], serde_json::json!([]));
        assert_eq!(
            v["secure"],
            serde_json::json!([format!("tg://proxy?server=h&port=8443&secret=dd{SECRET}")])
        );
    }

    #[test]
    fn host_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut inp = base();
        inp.listeners = vec![
            (Some("a.example"), None, ip("0.0.0.0")),
            (None, Some(ip("198.51.100.1")), ip("0.0.0.0")),
            (None, None, ip("0.0.0.0")),
            (None, None, ip("::")),
            (None, None, ip("203.0.113.5")),
            (None, None, ip("2001:db8::1")),
            (Some("a.example"), None, ip("10.0.0.1")),
        ];
        inp.detected_v4 = Some("192.0.2.7".parse().expect("v4"));
        assert_eq!(
            resolve_hosts(&inp),
            vec![
                "a.example",
                "198.51.100.1",
                "192.0.2.7",
                "203.0.113.5",
                "[2001:db8::1]"
            ]
        );
        inp.detected_v6 = Some("2001:db8::9".parse().expect("v6"));
        assert_eq!(resolve_hosts(&inp)[3], "[2001:db8::9]");

        // public_host overrides everything (an IPv6 literal gets brackets).
        inp.public_host = Some(" 2001:db8::5 ");
        assert_eq!(resolve_hosts(&inp), vec!["[2001:db8::5]"]);
    }

    #[test]
    fn owned_links_match_streamed_links() {
        let mut inp = base();
        inp.public_host = Some("we\"ird");
        inp.tls_domains = vec!["a.com", "b.com"];
        let plan = LinkPlan::new(&inp);
        let owned = serde_json::to_value(plan.user_links(SECRET)).expect("json");
        assert_eq!(owned, links(&inp));
        assert_eq!(owned["tls"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn hosts_are_json_escaped() {
        let mut inp = base();
        inp.public_host = Some("we\"ird\\host");
        let v = links(&inp);
        assert_eq!(
            v["classic"][0],
            format!("tg://proxy?server=we\"ird\\host&port=443&secret={SECRET}")
        );
    }

    #[test]
    fn fallbacks() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut inp = base();
        inp.listeners = vec![(None, None, ip("0.0.0.0"))];
        inp.listen_addr_ipv4 = Some("0.0.0.0");
        assert_eq!(resolve_hosts(&inp), vec!["UNKNOWN"]);
        inp.listen_addr_ipv6 = Some("2001:db8::3");
        assert_eq!(resolve_hosts(&inp), vec!["[2001:db8::3]"]);
        inp.detected_v6 = Some("2001:db8::4".parse().expect("v6"));
        assert_eq!(resolve_hosts(&inp), vec!["[2001:db8::4]"]);
        inp.detected_v4 = Some("192.0.2.1".parse().expect("v4"));
        // The v4 detected address now also resolves the wildcard listener itself.
        assert_eq!(resolve_hosts(&inp), vec!["192.0.2.1"]);
        inp.listeners.clear();
        assert_eq!(resolve_hosts(&inp), vec!["192.0.2.1"]);
        let v = links(&inp);
        assert_eq!(v["classic"].as_array().map(Vec::len), Some(1));
    }
}
