//! The pre-routing gates (whitelist, Authorization) and the If-Match header reader.

use std::net::IpAddr;

use http::header::{AUTHORIZATION, IF_MATCH};
use http::HeaderMap;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

/// Whitelist gate (docs/DECISIONS.md #2): an empty list allows everyone; an IPv4-mapped IPv6 peer is
/// matched as its IPv4 address (and still as itself). A request without a known peer is only
/// allowed by an empty list.
pub fn whitelist_allows(whitelist: &[IpNet], peer: Option<IpAddr>) -> bool {
    if whitelist.is_empty() {
        return true;
    }
    let Some(peer) = peer else {
        return false;
    };
    let mapped = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    whitelist
        .iter()
        .any(|net| net.contains(&peer) || mapped.is_some_and(|v4| net.contains(&v4)))
}

/// Authorization gate (docs/DECISIONS.md #3): exact byte equality with the configured value, compared
/// in constant time. An empty configured value disables the gate. Only the first header counts.
pub fn authorized(expected: &str, headers: &HeaderMap) -> bool {
    if expected.is_empty() {
        return true;
    }
    match headers.get(AUTHORIZATION) {
        Some(value) => bool::from(value.as_bytes().ct_eq(expected.as_bytes())),
        None => false,
    }
}

/// If-Match (docs/DECISIONS.md #14): first header only, surrounding whitespace then surrounding double
/// quotes trimmed. A header that is not visible ASCII, or empty after trimming, is treated as a
/// revision that can never match (so the write is refused with 409 rather than done blindly).
pub fn if_match(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(IF_MATCH)?;
    let Ok(text) = raw.to_str() else {
        return Some(String::from("\u{0}invalid"));
    };
    let trimmed = text.trim();
    let unquoted = trimmed
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(trimmed)
        .trim();
    Some(unquoted.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn whitelist() {
        let wl = nets(&["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
        assert!(whitelist_allows(
            &wl,
            Some("127.0.0.1".parse().expect("ip"))
        ));
        assert!(whitelist_allows(&wl, Some("10.2.3.4".parse().expect("ip"))));
        assert!(whitelist_allows(&wl, Some("::1".parse().expect("ip"))));
        assert!(whitelist_allows(
            &wl,
            Some("::ffff:127.0.0.1".parse().expect("ip"))
        ));
        assert!(whitelist_allows(
            &wl,
            Some("::ffff:10.9.9.9".parse().expect("ip"))
        ));
        assert!(!whitelist_allows(
            &wl,
            Some("::ffff:11.0.0.1".parse().expect("ip"))
        ));
        assert!(!whitelist_allows(
            &wl,
            Some("192.168.0.1".parse().expect("ip"))
        ));
        assert!(!whitelist_allows(&wl, Some("::2".parse().expect("ip"))));
        assert!(!whitelist_allows(&wl, None));
        assert!(whitelist_allows(&[], None));
        assert!(whitelist_allows(&[], Some("8.8.8.8".parse().expect("ip"))));
    }

    #[test]
    fn auth() {
        let mut h = HeaderMap::new();
        assert!(authorized("", &h));
        assert!(!authorized("Bearer x", &h));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(authorized("Bearer x", &h));
        assert!(!authorized("Bearer X", &h));
        assert!(!authorized("Bearer x ", &h));
        assert!(!authorized("Bearer", &h));
    }

    #[test]
    fn if_match_trimming() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h), None);
        h.insert(IF_MATCH, HeaderValue::from_static("  \"abc\"  "));
        assert_eq!(if_match(&h).as_deref(), Some("abc"));
        h.insert(IF_MATCH, HeaderValue::from_static("abc"));
        assert_eq!(if_match(&h).as_deref(), Some("abc"));
        h.append(IF_MATCH, HeaderValue::from_static("zzz"));
        assert_eq!(if_match(&h).as_deref(), Some("abc"), "first header wins");
    }
}
