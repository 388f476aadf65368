//! Direct route: choosing a Telegram DC address from the client's DC index (docs/PROTOCOL.md
//! §6.1–§6.2) and opening the proxy's own obfuscated2 link to it (§6.3).
//!
//! Owns: the built-in DC table, `[dc_overrides]`, `default_dc`, `[network]` family choice,
//! the set of DC indexes a client init may name (the handshake's matcher skips a candidate
//! secret whose decrypted index is outside it), and writing the 64-byte init (fast mode when `general.fast_mode`). The connect itself
//! (upstream choice, retries, timeouts) is `upstream`'s. Must not: relay bytes (see `relay`).

use config::Config;
use proto::{build_dc_init, CipherPair, DcSet, FastModeKeys, ProtoTag};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::outbound::OutboundStream;
use crate::upstream::Upstreams;

/// DC port on the direct route.
pub(crate) const DC_PORT: u16 = 443;

/// Built-in DC table (§6.1): index 1..=5.
const DC_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(149, 154, 175, 50),
    Ipv4Addr::new(149, 154, 167, 51),
    Ipv4Addr::new(149, 154, 175, 100),
    Ipv4Addr::new(149, 154, 167, 91),
    Ipv4Addr::new(149, 154, 171, 5),
];
const DC_V6: [Ipv6Addr; 5] = [
    Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf004, 0, 0, 0, 0xa),
    Ipv6Addr::new(0x2001, 0xb28, 0xf23f, 0xf005, 0, 0, 0, 0xa),
];

/// DC address selection inputs from one config.
#[derive(Clone, Debug, Default)]
pub(crate) struct DcRouting {
    prefer_v6: bool,
    v4: bool,
    v6: bool,
    overrides: HashMap<i32, Vec<SocketAddr>>,
    default_dc: i32,
    /// Indexes real clients send (`±1..=5`, `±203`, test DCs `±(10000 + n)`), every
    /// `[dc_overrides]` key and `±default_dc`. Any other index would still be routed to
    /// `default_dc`, but no real client sends one, so requiring membership costs nothing
    /// and makes a wrong secret's chance tag match ~2700 times less likely to be accepted.
    accepted: DcSet,
}

impl DcRouting {
    /// Reads `[network]`, `[dc_overrides]` and `default_dc`; malformed override entries are
    /// skipped with a warning (config validation should already have refused them).
    pub(crate) fn from_config(cfg: &Config) -> Self {
        let mut overrides: HashMap<i32, Vec<SocketAddr>> = HashMap::new();
        for (k, addrs) in &cfg.dc_overrides {
            let Ok(idx) = k.trim().parse::<i32>() else {
                tracing::warn!(key = %k, "dc_overrides: key is not a DC index; ignored");
                continue;
            };
            for a in addrs {
                match a.parse::<SocketAddr>() {
                    Ok(sa) => overrides.entry(idx).or_default().push(sa),
                    Err(_) => {
                        tracing::warn!(dc = idx, addr = %a, "dc_overrides: not ip:port; ignored")
                    }
                }
            }
        }
        let n = &cfg.network;
        let v6 = n.ipv6 != Some(false);
        let default_dc = cfg.default_dc.map_or(2, i32::from);
        let extra = overrides
            .keys()
            .copied()
            .chain([default_dc, -default_dc])
            .filter_map(|k| i16::try_from(k).ok());
        Self {
            prefer_v6: n.prefer == 6 && v6,
            v4: n.ipv4,
            v6,
            accepted: DcSet::standard().with(extra),
            overrides,
            default_dc,
        }
    }

    /// DC indexes a client init may name.
    pub(crate) fn accepted(&self) -> &DcSet {
        &self.accepted
    }

    fn ordered(&self, mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        // Preferred family first; the other kept as a fallback (stable order otherwise).
        addrs.sort_by_key(|a| a.is_ipv6() != self.prefer_v6);
        addrs
    }

    fn lookup(&self, dc: i32) -> Option<Vec<SocketAddr>> {
        if let Some(list) = self.overrides.get(&dc).filter(|l| !l.is_empty()) {
            return Some(self.ordered(list.clone()));
        }
        let i = usize::try_from(dc.unsigned_abs()).ok()?.checked_sub(1)?;
        let v4 = *DC_V4.get(i)?;
        let v6 = *DC_V6.get(i)?;
        let mut out = Vec::with_capacity(2);
        if self.v4 || !self.v6 {
            out.push(SocketAddr::new(IpAddr::V4(v4), DC_PORT));
        }
        if self.v6 {
            out.push(SocketAddr::new(IpAddr::V6(v6), DC_PORT));
        }
        Some(self.ordered(out))
    }

    /// Candidate addresses for DC index `dc`, best first: an override for the exact index,
    /// else the table row `|dc|` (media DCs share the main address), else `default_dc`.
    pub(crate) fn targets(&self, dc: i16) -> Vec<SocketAddr> {
        if let Some(t) = self.lookup(i32::from(dc)) {
            return t;
        }
        tracing::debug!(
            dc,
            default = self.default_dc,
            "unknown DC index; using default_dc"
        );
        self.lookup(self.default_dc)
            .or_else(|| self.lookup(2))
            .unwrap_or_default()
    }
}

/// Why the DC link could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DcError {
    #[error("no address known for DC {0}")]
    NoAddress(i16),
    #[error("connecting to DC {dc} failed: {source}")]
    Connect {
        dc: i16,
        source: crate::upstream::UpstreamError,
    },
    #[error("building the DC init failed: {0}")]
    Init(#[from] proto::InitError),
    #[error("writing the DC init failed: {0}")]
    Write(std::io::Error),
}

/// An open, initialised link to a DC.
pub(crate) struct DcLink {
    pub(crate) stream: OutboundStream,
    /// `encrypt` continues after the init; `decrypt` starts at 0. Boxed so the key
    /// schedules stay out of the session future.
    pub(crate) ciphers: Box<CipherPair>,
    /// Fast mode: the DC → client transform is the identity (§6.4), both ciphers skipped.
    pub(crate) fast: bool,
}

/// Connects to the DC for `dc` through a selected upstream (which feeds the upstream
/// counters), sends the init (+ `first_data`, already client-decrypted), and returns the
/// link. `client_enc` (key, iv) enables fast mode.
pub(crate) async fn open(
    routing: &DcRouting,
    upstreams: &Upstreams,
    tag: ProtoTag,
    dc: i16,
    fast_mode: Option<(&[u8; 32], &[u8; 16])>,
    first_data: &[u8],
) -> Result<DcLink, DcError> {
    let targets = routing.targets(dc);
    if targets.is_empty() {
        return Err(DcError::NoAddress(dc));
    }
    let mut stream = upstreams
        .connect(dc, &targets)
        .await
        .map_err(|source| DcError::Connect { dc, source })?;
    if let OutboundStream::Tcp(s) = &stream {
        let _ = s.set_nodelay(true);
    }
    let fm = fast_mode.map(|(key, iv)| FastModeKeys { key, iv });
    let (mut ciphers, mut first) = {
        let sealed = build_dc_init(&mut crate::rng::ThreadRandom, tag, dc, fm)?;
        // One write for the init and any data the client already sent (§6.4).
        let mut first = Vec::with_capacity(64 + first_data.len());
        first.extend_from_slice(&sealed.wire);
        (Box::new(sealed.ciphers), first)
    };
    let start = first.len();
    first.extend_from_slice(first_data);
    ciphers.encrypt.apply_in_place(&mut first[start..]);
    stream.write_all(&first).await.map_err(DcError::Write)?;
    Ok(DcLink {
        stream,
        ciphers,
        fast: fast_mode.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(toml: &str) -> DcRouting {
        let cfg = config::parse_str(toml).expect("config").config;
        DcRouting::from_config(&cfg)
    }

    #[test]
    fn table_overrides_media_and_default() {
        let base = "[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n";
        let r = routing(base);
        assert_eq!(r.targets(2), vec!["149.154.167.51:443".parse().unwrap()]);
        assert_eq!(r.targets(-4), vec!["149.154.167.91:443".parse().unwrap()]);
        assert_eq!(r.targets(0), r.targets(2));
        assert_eq!(r.targets(999), r.targets(2));
        let r = routing(&format!(
            "default_dc = 4\n{base}[dc_overrides]\n\"2\" = [\"127.0.0.1:9\"]\n\"-2\" = [\"[::1]:7\", \"127.0.0.1:8\"]\n"
        ));
        assert_eq!(r.targets(2), vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(
            r.targets(-2),
            vec!["127.0.0.1:8".parse().unwrap(), "[::1]:7".parse().unwrap()]
        );
        assert_eq!(r.targets(42), vec!["149.154.167.91:443".parse().unwrap()]);
        let acc = r.accepted();
        assert!(acc.contains(-2) && acc.contains(4) && acc.contains(-4) && acc.contains(203));
        assert!(!acc.contains(42) && !acc.contains(0));
        let r = routing(&format!("[network]\nprefer = 6\nipv6 = true\n{base}"));
        assert_eq!(
            r.targets(1),
            vec![
                "[2001:b28:f23d:f001::a]:443".parse().unwrap(),
                "149.154.175.50:443".parse().unwrap()
            ]
        );
    }
}
