//! Shadowsocks upstreams (docs/PROTOCOL.md §9.4) through the `shadowsocks` crate (the library of
//! shadowsocks-rust): AEAD 2017 and 2022 ciphers, no plugins. We open the TCP connection to
//! the server ourselves (interface binding, our timeouts) and wrap it in a
//! `ProxyClientStream`, which sends the target address with the first payload.

use std::net::SocketAddr;

use shadowsocks::config::ServerType;
use shadowsocks::context::{Context, SharedContext};
use shadowsocks::{ProxyClientStream, ServerConfig};

use super::connect::{proxy_connect, Iface};
use super::UpstreamError;
use crate::outbound::OutboundStream;

/// A configured Shadowsocks server.
pub(crate) struct SsTarget {
    cfg: ServerConfig,
    /// Per-upstream context (2022 salt replay memory).
    ctx: SharedContext,
    server: String,
    pub(super) interface: Option<Iface>,
}

impl SsTarget {
    /// Parses a SIP002 URL (config validation has already checked it).
    pub(crate) fn parse(url: &str, interface: Option<Iface>) -> Result<Self, String> {
        let cfg = ServerConfig::from_url(url).map_err(|e| format!("bad shadowsocks URL: {e:?}"))?;
        if cfg.plugin().is_some() {
            return Err("shadowsocks plugins are not supported".into());
        }
        let server = cfg.addr().to_string();
        Ok(Self {
            cfg,
            ctx: Context::new_shared(ServerType::Local),
            server,
            interface,
        })
    }
}

/// Connects to the server; the tunnel to `target` is established by the first write.
pub(crate) async fn connect(
    t: &SsTarget,
    target: SocketAddr,
) -> Result<OutboundStream, UpstreamError> {
    let tcp = proxy_connect(&t.server, t.interface.as_ref()).await?;
    let _ = tcp.set_nodelay(true);
    let stream = ProxyClientStream::from_stream(t.ctx.clone(), tcp, &t.cfg, target);
    Ok(OutboundStream::Tunnel(Box::new(stream)))
}
