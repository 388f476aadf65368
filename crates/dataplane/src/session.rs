//! One client connection from accept to close: optional PROXY header, handshake (with
//! `timeouts.client_handshake`), masking of bad clients, admission, the DC link and the relay,
//! all cancellable by user close (delete / rotate / expiry) and process shutdown.
//!
//! Owns: the order of those steps and the connection-level counters. Must not: hold the
//! policy lock (there is none: a session pins one `Arc<Policy>` for its handshake).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use proto::RejectReason;
use tokio::net::TcpStream;

use crate::admission;
use crate::handshake::{self, Rejected};
use crate::io_util::read_some;
use crate::masking::{self, MaskJob};
use crate::me::Route;
use crate::policy::Policy;
use crate::relay::direct::DirectRelay;
use crate::relay::me::MeRelay;
use crate::relay::RelayEnd;
use crate::Inner;

type HeaderAddrs = Option<(SocketAddr, SocketAddr)>;

/// Reads a PROXY header (`proto::ProxyHeader`); returns the (source, destination) it carries,
/// if any, and leaves the bytes after it in `raw`.
async fn read_proxy_header(
    stream: &TcpStream,
    raw: &mut Vec<u8>,
) -> Result<HeaderAddrs, (RejectReason, &'static str)> {
    let mut chunk = [0u8; 256];
    loop {
        match proto::ProxyHeader::parse(raw) {
            Ok(Some((header, consumed))) => {
                raw.drain(..consumed);
                return Ok(header.addresses);
            }
            Ok(None) => {}
            Err(e) => return Err((RejectReason::ProxyHeaderInvalid, e.label())),
        }
        // Bytes read past the header stay in `raw`, in order, for the handshake.
        match read_some(stream, &mut chunk).await {
            Ok(0) | Err(_) => {
                let r = RejectReason::ProxyHeaderEof;
                return Err((r, r.label()));
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Counts a refused connection under its class; `detail` is a finer label for the log only.
fn bad(inner: &Inner, peer: IpAddr, reason: RejectReason, detail: &'static str) {
    inner.stats.inc_connections_bad_class(reason.label());
    tracing::debug!(%peer, %reason, detail, "bad client connection");
}

async fn mask(
    inner: &Inner,
    policy: &Policy,
    stream: TcpStream,
    raw: Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let own = inner.listeners.local_addrs();
    let job = MaskJob {
        target: &policy.mask,
        proxy_protocol: policy.mask_proxy_protocol,
        peer,
        local,
        own_listeners: &own,
    };
    masking::run(stream, raw, job).await;
}

/// Writes a TLS alert and closes with a FIN, like a web server refusing the handshake
/// (PROTOCOL.md §4.4). Bounded: a client that does not read cannot hold the task.
async fn send_alert_and_close(stream: TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = stream;
    let write = async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(ALERT_WRITE_TIMEOUT, write).await;
}

/// Bound on writing the 7-byte alert (it fits any socket buffer; this only guards a peer
/// that vanished without a reset).
const ALERT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves one accepted connection.
pub(crate) async fn handle(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    inner.stats.inc_connections_total();
    let _ = stream.set_nodelay(true);
    let policy = inner.policy.load_full();
    let mut peer = peer;
    let mut local = local;
    let mut raw = Vec::new();
    let pp = &policy.proxy_protocol;
    if pp.enabled_for(&local) {
        if !pp.trusts(peer.ip()) {
            let r = RejectReason::ProxyHeaderUntrustedPeer;
            return bad(&inner, peer.ip(), r, r.label());
        }
        let read = tokio::time::timeout(pp.header_timeout, read_proxy_header(&stream, &mut raw));
        match read.await {
            Ok(Ok(addrs)) => {
                // The balancer's view replaces ours (limits, stats, mask PROXY header).
                if let Some((src, dst)) = addrs {
                    peer = src;
                    local = dst;
                }
            }
            Ok(Err((reason, detail))) => return bad(&inner, peer.ip(), reason, detail),
            Err(_) => {
                let r = RejectReason::ProxyHeaderTimeout;
                return bad(&inner, peer.ip(), r, r.label());
            }
        }
    }

    let mut cut = inner.cut.subscribe();
    let deadline = tokio::time::Instant::now() + policy.client_handshake;
    let flights = inner.fronts.flights();
    let observer = handshake::Observer {
        stats: &inner.stats,
        flights: &flights,
        key_shares: &inner.key_shares,
    };
    let hs = handshake::run(
        &stream,
        &policy,
        &inner.hints,
        peer.ip(),
        raw,
        deadline,
        observer,
    );
    let outcome = tokio::select! {
        r = hs => r,
        _ = cut.wait_for(|c| *c) => return,
    };
    let auth = match outcome {
        Err(rej) => {
            if rej.reason() == RejectReason::HandshakeTimeout {
                // Also a bad connection (class `handshake_timeout`), so the per-class totals
                // add up to `connections_bad_total`.
                inner.stats.inc_handshake_timeouts();
            }
            bad(&inner, peer.ip(), rej.reason(), rej.detail());
            match rej {
                Rejected::Mask { raw, .. } => mask(&inner, &policy, stream, raw, peer, local).await,
                Rejected::Alert { bytes, .. } => send_alert_and_close(stream, bytes).await,
                Rejected::Drop { .. } => {}
            }
            return;
        }
        Ok(auth) => auth,
    };

    // Subscribe before the admission check so a close racing with it is not missed.
    let mut close_rx = auth.user.close_gen.subscribe();
    let start_gen = *close_rx.borrow_and_update();
    let admitted = match admission::admit(&inner.stats, &policy, &auth.user, peer.ip()) {
        Ok(a) => a,
        Err(refusal) => {
            drop(close_rx);
            let r = refusal.reason();
            bad(&inner, peer.ip(), r, r.label());
            mask(&inner, &policy, stream, auth.raw, peer, local).await;
            return;
        }
    };
    let handshake::Authenticated {
        user,
        tag,
        dc,
        ciphers,
        enc_key,
        enc_iv,
        deframer,
        pending,
        raw,
    } = auth;
    drop(raw);

    let throttle = crate::ratelimit::Throttle {
        cidr: policy.cidr_rates.for_ip(peer.ip()),
    };
    // The cut / close selects below stay inline on purpose: a generic "unless cut" wrapper
    // grew the session future from under 6 KiB to 9 KiB (`session_future_is_small`).
    let queue = inner.me.as_ref().map_or(1, |p| p.flow().session_queue);
    let (down_tx, down_rx) = crate::me::writer::session_queue(queue);
    let route = match inner.me.as_ref() {
        None => Route::Direct,
        Some(pool) => {
            tokio::select! {
                r = pool.route(dc, &down_tx) => r,
                _ = cut.wait_for(|c| *c) => return,
                _ = close_rx.wait_for(|g| *g != start_gen) => return,
            }
        }
    };
    drop(down_tx);
    let end = match route {
        Route::Unavailable => {
            tracing::debug!(%peer, user = %user.name, dc, "no middle-proxy writer and fallback off");
            return;
        }
        Route::Me {
            writer,
            conn_id,
            cluster,
        } => {
            tracing::debug!(%peer, user = %user.name, dc, cluster, conn_id, "session via middle proxy");
            let guard = inner.stats.open_route(stats::Route::MiddleProxy);
            let our_addr = inner.me.as_ref().map_or(local, |p| p.our_addr(local));
            let relay = MeRelay {
                client: &stream,
                client_ciphers: ciphers,
                deframer,
                framing: tag.into(),
                pending,
                user: &user,
                user_stats: admitted.session.stats(),
                stats: &inner.stats,
                idle: policy.idle,
                throttle: &throttle,
                shaping: policy.tls_record_shaping,
                max_frame: policy.max_client_frame.min(proto::me::MAX_PROXY_REQ_DATA),
                writer,
                conn_id,
                down: down_rx,
                flow: inner.me.as_ref().map(|p| p.flow()).unwrap_or_default(),
                client_addr: peer,
                our_addr,
                ad_tag: policy.ad_tags.for_user(&user.name),
            }
            .run();
            drop(policy);
            let end = tokio::select! {
                end = relay => end,
                _ = cut.wait_for(|c| *c) => RelayEnd::Cancelled("shutdown"),
                _ = close_rx.wait_for(|g| *g != start_gen) => RelayEnd::Cancelled("user closed"),
            };
            drop(guard);
            end
        }
        Route::Direct => {
            drop(down_rx);
            let fast = policy.fast_mode.then_some((&enc_key, &enc_iv));
            let link = crate::dc::open(&policy.dc, &inner.upstreams, tag, dc, fast, &pending);
            let link = tokio::select! {
                r = link => r,
                _ = cut.wait_for(|c| *c) => return,
                _ = close_rx.wait_for(|g| *g != start_gen) => return,
            };
            let link = match link {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(%peer, user = %user.name, error = %e, "DC link failed");
                    return;
                }
            };
            drop(pending);
            let guard = inner.stats.open_route(stats::Route::Direct);
            let relay = DirectRelay {
                client: &stream,
                client_ciphers: ciphers,
                dc_ciphers: link.ciphers,
                fast: link.fast,
                deframer,
                user: &user,
                user_stats: admitted.session.stats(),
                idle: policy.idle,
                throttle: &throttle,
                shaping: policy.tls_record_shaping,
            }
            .run_on(link.stream);
            drop(policy);
            let end = tokio::select! {
                end = relay => end,
                _ = cut.wait_for(|c| *c) => RelayEnd::Cancelled("shutdown"),
                _ = close_rx.wait_for(|g| *g != start_gen) => RelayEnd::Cancelled("user closed"),
            };
            drop(guard);
            end
        }
    };
    tracing::debug!(%peer, user = %user.name, %end, "session ended");
    drop(admitted);
}

#[cfg(test)]
mod tests {
    use proto::RejectReason;

    #[test]
    fn every_reject_reason_has_its_own_stats_class() {
        for r in RejectReason::ALL {
            assert!(
                stats::BadClassCounters::index_of(r.label()).is_some(),
                "{} missing from stats::BAD_CLASSES",
                r.label()
            );
        }
        // The table holds exactly the reasons plus the catch-all.
        assert_eq!(stats::BAD_CLASSES.len(), RejectReason::COUNT + 1);
    }
}
