//! Serde helpers for fields whose TOML form needs conversion. Errors name the key. Lenient
//! helpers (telemt drops such values with a warning) skip bad entries silently here; the loader
//! reports them as warnings by re-inspecting the raw TOML (see `load::lenient_warnings`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::{UpstreamConfig, UpstreamKind};
use crate::types::{AdTag, UserSecret};

pub(crate) fn lenient_ad_tag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdTag>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    Ok(raw.and_then(|s| s.parse().ok()))
}

pub(crate) fn users<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, UserSecret>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| v.as_str().and_then(|s| s.parse().ok()).map(|s| (k, s)))
        .collect())
}

pub(crate) fn user_ad_tags<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, AdTag>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| v.as_str().and_then(|s| s.parse().ok()).map(|s| (k, s)))
        .collect())
}

/// Parses an expiration given either as a quoted RFC 3339 string or a TOML offset datetime.
pub(crate) fn parse_expiration(v: &toml::Value) -> Option<OffsetDateTime> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(dt) => dt.to_string(),
        _ => return None,
    };
    OffsetDateTime::parse(&text, &Rfc3339).ok()
}

pub(crate) fn user_expirations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, OffsetDateTime>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (user, v) in raw {
        let at = parse_expiration(&v).ok_or_else(|| {
            D::Error::custom(format!(
                "access.user_expirations.{user} must be an RFC 3339 timestamp with an offset, got {v}"
            ))
        })?;
        out.insert(user, at);
    }
    Ok(out)
}

pub(crate) fn quota_resets<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, crate::schedule::QuotaResetSchedule>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (user, v) in raw {
        let s = v
            .parse()
            .map_err(|e| D::Error::custom(format!("access.user_quota_reset.{user}: {e}")))?;
        out.insert(user, s);
    }
    Ok(out)
}

pub(crate) fn api_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse().map_err(|_| {
        D::Error::custom(format!(
            "server.api.listen must be a valid IP:PORT, got {s:?}"
        ))
    })
}

/// A CIDR or a bare IP (read as a host route).
pub(crate) fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn cidr_list<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            parse_cidr(s)
                .ok_or_else(|| D::Error::custom(format!("{key} contains an invalid CIDR: {s:?}")))
        })
        .collect()
}

pub(crate) fn api_whitelist<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    cidr_list(d, "server.api.whitelist")
}

pub(crate) fn trusted_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    cidr_list(d, "server.proxy_protocol_trusted_cidrs")
}

pub(crate) fn metrics_whitelist<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    cidr_list(d, "server.metrics_whitelist")
}

pub(crate) fn dc_overrides<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let raw = BTreeMap::<String, OneOrMany>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (dc, v) in raw {
        let mut addrs = match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        addrs.retain(|s| !s.trim().is_empty());
        if !addrs.is_empty() {
            out.insert(dc, addrs);
        }
    }
    Ok(out)
}

/// The TOML shape of one `[[upstreams]]` entry before its `type` is checked.
#[derive(Debug, Deserialize)]
pub(crate) struct RawUpstream {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    bind_addresses: Option<Vec<String>>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default = "default_weight")]
    weight: u16,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default)]
    scopes: String,
}

fn default_weight() -> u16 {
    1
}

fn default_true() -> bool {
    true
}

impl TryFrom<RawUpstream> for UpstreamConfig {
    type Error = String;

    fn try_from(r: RawUpstream) -> Result<Self, String> {
        let need = |v: Option<String>, key: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| format!("upstreams: type = \"{}\" requires `{key}`", r.kind))
        };
        let kind = match r.kind.as_str() {
            "direct" => UpstreamKind::Direct {
                interface: r.interface,
                bind_addresses: r.bind_addresses,
            },
            "socks4" => UpstreamKind::Socks4 {
                address: need(r.address.clone(), "address")?,
                interface: r.interface,
                user_id: r.user_id,
            },
            "socks5" => UpstreamKind::Socks5 {
                address: need(r.address.clone(), "address")?,
                interface: r.interface,
                username: r.username,
                password: r.password,
            },
            "shadowsocks" => UpstreamKind::Shadowsocks {
                url: need(r.url.clone(), "url")?,
                interface: r.interface,
            },
            other => {
                return Err(format!(
                "upstreams: type must be one of direct, socks4, socks5, shadowsocks; got {other:?}"
            ))
            }
        };
        Ok(UpstreamConfig {
            kind,
            weight: r.weight,
            enabled: r.enabled,
            scopes: r.scopes,
        })
    }
}
