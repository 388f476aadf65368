//! The getProxyConfig / getProxyConfigV6 text format (docs/PROTOCOL.md §7.1).
//!
//! Owns: parsing the statement list into DC → ME endpoints and the default
//! cluster. Must not: fetch, cache or decide refresh policy.
//!
//! ```text
//!  # comment to end of line
//!  default 2;
//!  proxy_for <dc:i16> <host>:<port>;      host: IPv4, [IPv6] or bare IPv6 (split at last ':')
//!  <anything else>;                        ignored (timeout, min_connections, …)
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A parsed proxy config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfigFile {
    /// `default <dc>;` (the caller falls back to 2 when absent).
    pub default_dc: Option<i16>,
    /// `proxy_for` entries in file order.
    pub proxy_for: Vec<(i16, SocketAddr)>,
}

impl ProxyConfigFile {
    /// Endpoints for one DC index.
    pub fn endpoints(&self, dc: i16) -> impl Iterator<Item = SocketAddr> + '_ {
        self.proxy_for
            .iter()
            .filter(move |(d, _)| *d == dc)
            .map(|(_, a)| *a)
    }
}

/// A malformed known statement (1-based statement number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy config statement {statement}: {reason}")]
pub struct ProxyConfigError {
    /// Statement number.
    pub statement: usize,
    /// What is wrong.
    pub reason: &'static str,
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let ip: Ipv6Addr = host.parse().ok()?;
    Some(SocketAddr::new(IpAddr::V6(ip), port.parse().ok()?))
}

/// Parses the whole file.
pub fn parse_proxy_config(text: &str) -> Result<ProxyConfigFile, ProxyConfigError> {
    let cleaned: String = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = ProxyConfigFile::default();
    for (i, stmt) in cleaned.split(';').enumerate() {
        let err = |reason| ProxyConfigError {
            statement: i + 1,
            reason,
        };
        let words: Vec<&str> = stmt.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["default", dc] => {
                out.default_dc = Some(dc.parse().map_err(|_| err("bad default dc"))?);
            }
            ["default", ..] => return Err(err("default takes one value")),
            ["proxy_for", dc, addr] => {
                let dc: i16 = dc.parse().map_err(|_| err("bad dc index"))?;
                let addr = parse_addr(addr).ok_or_else(|| err("bad address"))?;
                out.proxy_for.push((dc, addr));
            }
            ["proxy_for", ..] => return Err(err("proxy_for takes a dc and an address")),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_shape() {
        let text = "# comment lines start with '#'\ndefault 2;\nproxy_for 1 149.154.175.50:8888;\n\
            proxy_for -1 149.154.175.50:8888; # trailing\nproxy_for 2 149.154.161.144:8888;\n\
            timeout 5000; min_connections 4;\nproxy_for 2 [2001:67c:4e8:f002::d]:80;\n\
            proxy_for -4 2001:67c:4e8:f004::d:8888;\n";
        let c = parse_proxy_config(text).expect("valid");
        assert_eq!(c.default_dc, Some(2));
        assert_eq!(c.proxy_for.len(), 5);
        let dc2: Vec<SocketAddr> = c.endpoints(2).collect();
        assert_eq!(
            dc2,
            vec![
                "149.154.161.144:8888".parse().expect("literal"),
                "[2001:67c:4e8:f002::d]:80".parse().expect("literal")
            ]
        );
        assert_eq!(
            c.endpoints(-4).next(),
            Some("[2001:67c:4e8:f004::d]:8888".parse().expect("literal"))
        );
    }

    #[test]
    fn malformed_known_statements() {
        assert_eq!(
            parse_proxy_config("default x;"),
            Err(ProxyConfigError {
                statement: 1,
                reason: "bad default dc"
            })
        );
        assert_eq!(
            parse_proxy_config("default 2; proxy_for 70000 1.2.3.4:1;"),
            Err(ProxyConfigError {
                statement: 2,
                reason: "bad dc index"
            })
        );
        assert_eq!(
            parse_proxy_config("proxy_for 1 host:1;"),
            Err(ProxyConfigError {
                statement: 1,
                reason: "bad address"
            })
        );
        assert_eq!(parse_proxy_config(""), Ok(ProxyConfigFile::default()));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse_proxy_config(&s);
        }
    }
}
