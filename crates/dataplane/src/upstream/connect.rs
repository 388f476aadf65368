//! One connect attempt through an upstream: the TCP connect (optionally bound to an
//! interface / source address) and the SOCKS or Shadowsocks handshake on top.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use config::UpstreamKind;
use proto::socks::BoundAddr;
use tokio::net::{TcpSocket, TcpStream};

use super::{socks, ss, UpstreamError, UpstreamRouteKind};
use crate::outbound::OutboundStream;

/// Parsed connection settings of one upstream.
pub(super) enum Route {
    Direct {
        /// Interface given as an IP literal, or a device name (SO_BINDTODEVICE).
        interface: Option<Iface>,
        bind: Vec<IpAddr>,
        rr: AtomicUsize,
    },
    Socks4 {
        address: String,
        interface: Option<Iface>,
        user_id: Vec<u8>,
    },
    Socks5 {
        address: String,
        interface: Option<Iface>,
        creds: Option<(Vec<u8>, Vec<u8>)>,
    },
    Shadowsocks(Box<ss::SsTarget>),
}

pub(super) enum Iface {
    Ip(IpAddr),
    Device(String),
}

fn iface(v: &Option<String>) -> Option<Iface> {
    let v = v.as_deref().map(str::trim).filter(|s| !s.is_empty())?;
    Some(match v.parse::<IpAddr>() {
        Ok(ip) => Iface::Ip(ip),
        Err(_) => Iface::Device(v.to_string()),
    })
}

impl Route {
    pub(super) fn from_kind(kind: &UpstreamKind) -> Result<Self, String> {
        Ok(match kind {
            UpstreamKind::Direct {
                interface,
                bind_addresses,
            } => Route::Direct {
                interface: iface(interface),
                bind: bind_addresses
                    .iter()
                    .flatten()
                    .filter_map(|a| a.trim().parse().ok())
                    .collect(),
                rr: AtomicUsize::new(0),
            },
            UpstreamKind::Socks4 {
                address,
                interface,
                user_id,
            } => Route::Socks4 {
                address: address.clone(),
                interface: iface(interface),
                user_id: user_id.clone().unwrap_or_default().into_bytes(),
            },
            UpstreamKind::Socks5 {
                address,
                interface,
                username,
                password,
            } => Route::Socks5 {
                address: address.clone(),
                interface: iface(interface),
                creds: username.as_ref().map(|u| {
                    (
                        u.clone().into_bytes(),
                        password.clone().unwrap_or_default().into_bytes(),
                    )
                }),
            },
            UpstreamKind::Shadowsocks { url, interface } => {
                Route::Shadowsocks(Box::new(ss::SsTarget::parse(url, iface(interface))?))
            }
        })
    }

    pub(super) fn kind(&self) -> UpstreamRouteKind {
        match self {
            Route::Direct { .. } => UpstreamRouteKind::Direct,
            Route::Socks4 { .. } => UpstreamRouteKind::Socks4,
            Route::Socks5 { .. } => UpstreamRouteKind::Socks5,
            Route::Shadowsocks(_) => UpstreamRouteKind::Shadowsocks,
        }
    }
}

async fn tcp_connect(
    addr: SocketAddr,
    interface: Option<&Iface>,
    bind: Option<IpAddr>,
) -> Result<TcpStream, UpstreamError> {
    let err = |source| UpstreamError::Connect {
        addr: addr.to_string(),
        source,
    };
    let local = match (bind, interface) {
        (Some(ip), _) => Some(ip),
        (None, Some(Iface::Ip(ip))) if ip.is_ipv6() == addr.is_ipv6() => Some(*ip),
        _ => None,
    };
    let device = match interface {
        Some(Iface::Device(d)) => Some(d.as_str()),
        _ => None,
    };
    if local.is_none() && device.is_none() {
        return TcpStream::connect(addr).await.map_err(err);
    }
    let sock = if addr.is_ipv6() {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
    .map_err(err)?;
    if let Some(d) = device {
        sock.bind_device(Some(d.as_bytes())).map_err(err)?;
    }
    if let Some(ip) = local {
        sock.bind(SocketAddr::new(ip, 0)).map_err(err)?;
    }
    sock.connect(addr).await.map_err(err)
}

pub(super) async fn proxy_connect(
    address: &str,
    interface: Option<&Iface>,
) -> Result<TcpStream, UpstreamError> {
    let err = |source| UpstreamError::Connect {
        addr: address.to_string(),
        source,
    };
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return tcp_connect(sa, interface, None).await;
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(err)?
        .collect();
    let mut last = None;
    for sa in addrs {
        match tcp_connect(sa, interface, None).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| err(std::io::Error::other("name resolved to no address"))))
}

/// One attempt through `route`; returns the stream and the SOCKS bound address (if any).
pub(super) async fn connect_via(
    route: &Route,
    target: SocketAddr,
) -> Result<(OutboundStream, Option<BoundAddr>), UpstreamError> {
    match route {
        Route::Direct {
            interface,
            bind,
            rr,
        } => {
            let family: Vec<IpAddr> = bind
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv6() == target.is_ipv6())
                .collect();
            if !bind.is_empty() && family.is_empty() {
                return Err(UpstreamError::NoBindAddress(target));
            }
            let local = (!family.is_empty())
                .then(|| family[rr.fetch_add(1, Ordering::Relaxed) % family.len()]);
            let s = tcp_connect(target, interface.as_ref(), local).await?;
            Ok((OutboundStream::Tcp(s), None))
        }
        Route::Socks4 {
            address,
            interface,
            user_id,
        } => {
            let mut s = proxy_connect(address, interface.as_ref()).await?;
            let bound = socks::socks4(&mut s, target, user_id).await?;
            let _ = s.set_nodelay(true);
            Ok((OutboundStream::Tcp(s), Some(bound)))
        }
        Route::Socks5 {
            address,
            interface,
            creds,
        } => {
            let mut s = proxy_connect(address, interface.as_ref()).await?;
            let c = creds.as_ref().map(|(u, p)| (u.as_slice(), p.as_slice()));
            let bound = socks::socks5(&mut s, target, c).await?;
            let _ = s.set_nodelay(true);
            Ok((OutboundStream::Tcp(s), Some(bound)))
        }
        Route::Shadowsocks(t) => {
            let stream = ss::connect(t, target).await?;
            Ok((stream, None))
        }
    }
}
