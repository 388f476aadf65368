//! Learning a profile: one TLS connection to the origin per domain, and the periodic refresh
//! task (docs/PROTOCOL.md §4.9).
//!
//! Owns: the probe connection (connect, optional PROXY header like the mask relay sends,
//! browser-like ClientHello, read of the flight until it goes quiet) and the refresh loop
//! with its jitter, cancelled with the data plane. Must not: complete the TLS handshake
//! (the origin sees a browser that went away) or touch live sessions.
//!
//! ```text
//!  t0 connect ─ t1 ClientHello ─► origin
//!                 ◄─ ServerHello | CCS | 17…(EE,Cert,CV,Fin) … [quiet QUIET] ─ close
//!  connect_ms = t1 - t0      flight_ms = last flight record - t1
//!  records after a pause ≥ TAIL_GAP are counted as ticket-like tail records
//! ```

use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::{FlightParser, FlightProgress, ProbeParams};
use rand::{Rng, RngCore};
use stats::startup::{ComponentStatus, StartupTracker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{load_profile, store_profile, Profile};
use crate::policy::MaskTarget;
use crate::Inner;

/// Whole-fetch bound.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The flight is over once the origin stays quiet this long after an encrypted record.
const QUIET: Duration = Duration::from_millis(300);
/// A record after a pause this long is a tail record, not part of the first flight.
const TAIL_GAP: Duration = Duration::from_millis(40);
/// Bytes read from the origin at most.
const MAX_READ: usize = 64 * 1024;
/// Refresh period (±20 % jitter so many proxies of one operator do not probe in step).
pub(crate) const REFRESH: Duration = Duration::from_secs(3600);
/// Retry period after a failed fetch.
const RETRY: Duration = Duration::from_secs(300);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("origin: {0}")]
    Origin(#[from] proto::OriginError),
    #[error("origin closed before its flight")]
    Closed,
}

/// Where and how to probe.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// PROXY header version the origin expects (`mask_proxy_protocol`).
    pub(crate) proxy_protocol: u8,
}

impl Target {
    pub(crate) fn from_mask(mask: &MaskTarget, proxy_protocol: u8) -> Option<Self> {
        match mask {
            MaskTarget::Tcp { host, port } => Some(Self {
                host: host.clone(),
                port: *port,
                proxy_protocol,
            }),
            MaskTarget::Unix(_) | MaskTarget::Discard => None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Probes `target` as a browser asking for `domain`.
pub(crate) async fn fetch(domain: &str, target: &Target) -> Result<Profile, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(domain, target))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn fetch_inner(domain: &str, target: &Target) -> Result<Profile, FetchError> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(FetchError::Connect)?;
    let _ = s.set_nodelay(true);
    let connected = t0.elapsed();
    let (mut random, mut sid, mut scalar) = ([0u8; 32], [0u8; 32], [0u8; 32]);
    {
        // Not held across an await: the thread RNG is not Send.
        let mut rng = rand::thread_rng();
        rng.fill_bytes(&mut random);
        rng.fill_bytes(&mut sid);
        rng.fill_bytes(&mut scalar);
    }
    let key_share = proto::x25519_public(scalar);
    let hello = proto::build_probe_hello(&ProbeParams {
        sni: domain,
        random: &random,
        session_id: &sid,
        key_share: &key_share,
    })?;
    let mut wire = match target.proxy_protocol {
        1 => proto::ProxyHeader::v1_bytes(s.local_addr().ok().zip(s.peer_addr().ok())),
        2 => proto::ProxyHeader::v2_bytes(s.local_addr().ok().zip(s.peer_addr().ok())),
        _ => Vec::new(),
    };
    wire.extend_from_slice(&hello);
    let t1 = Instant::now();
    s.write_all(&wire).await?;

    let mut parser = FlightParser::default();
    let mut buf = vec![0u8; 16 * 1024];
    let (mut total, mut seen) = (0usize, 0usize);
    let mut last_flight: Option<Instant> = None;
    let mut last_record: Option<Instant> = None;
    let mut tail = 0usize;
    loop {
        let read = match last_record {
            // Past the ServerHello and at least one more record: wait for more only
            // briefly (the origin waits for our Finished and will not send on its own).
            Some(_) => match tokio::time::timeout(QUIET, s.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => break,
            },
            None => s.read(&mut buf).await?,
        };
        if read == 0 {
            if parser.shape().is_some_and(|sh| !sh.records.is_empty()) {
                break;
            }
            return Err(FetchError::Closed);
        }
        total += read;
        let now = Instant::now();
        if let FlightProgress::Records(n) = parser.push(&buf[..read])? {
            if n > seen {
                let gap = last_record.map(|l| now.duration_since(l));
                if gap.is_some_and(|g| g >= TAIL_GAP) || tail > 0 {
                    tail += n - seen;
                } else {
                    last_flight = Some(now);
                }
                last_record = Some(now);
                seen = n;
            }
        }
        if total >= MAX_READ {
            break;
        }
    }
    let shape = parser.shape().ok_or(FetchError::Closed)?;
    let ms = |d: Duration| d.as_millis() as u64;
    let flight = last_flight.map_or(Duration::ZERO, |l| l.duration_since(t1));
    let origin = format!("{}:{}", target.host, target.port);
    Ok(Profile::from_shape(
        domain,
        &origin,
        shape,
        tail,
        (ms(connected), ms(flight)),
        unix_now(),
    ))
}

/// Loads the stored profiles (reported as the `tls_front` startup component), then fetches
/// every domain now and again every [`REFRESH`] ± 20 %, until `cancel`.
pub(crate) async fn refresher(
    inner: Weak<Inner>,
    startup: std::sync::Arc<StartupTracker>,
    dir: std::path::PathBuf,
    cancel: CancellationToken,
) {
    startup.register("tls_front", "TLS front profiles", true);
    startup.begin("tls_front", SystemTime::now());
    let Some(i) = inner.upgrade() else {
        return;
    };
    let waker = i.fronts.waker();
    let (domains, emulation) = {
        let p = i.policy.load();
        (p.tls.allowed_domains.clone(), p.tls_emulation)
    };
    // Loaded even with emulation off: a config publish may turn it on.
    let mut loaded = 0;
    for d in &domains {
        // Small files read once at start.
        match load_profile(&dir, d) {
            Ok(Some(p)) => {
                loaded += 1;
                i.fronts.set_profile(p);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(domain = %d, error = %e, "stored TLS front profile ignored"),
        }
    }
    drop(i);
    let (status, details) = if emulation {
        let d = format!(
            "{loaded}/{} profiles loaded from {}; fetching from the origin",
            domains.len(),
            dir.display()
        );
        (ComponentStatus::Ready, d)
    } else {
        let d = "censorship.tls_emulation = false".to_owned();
        (ComponentStatus::Skipped, d)
    };
    tracing::info!("TLS front: {details}");
    startup.finish("tls_front", status, Some(details), SystemTime::now());

    loop {
        let Some(i) = inner.upgrade() else {
            return;
        };
        let policy = i.policy.load_full();
        drop(i);
        let mut all_ok = true;
        let target = Target::from_mask(&policy.mask, policy.mask_proxy_protocol);
        if !policy.tls_emulation {
            // Nothing to learn; a publish turning emulation on wakes the task.
        } else if let Some(target) = target {
            for d in &policy.tls.allowed_domains {
                let r = tokio::select! {
                    r = fetch(d, &target) => r,
                    _ = cancel.cancelled() => return,
                };
                all_ok &= record(&inner, &dir, d, &target, r).await;
            }
        } else {
            tracing::info!("TLS front profiles not fetched: the mask target is not a TCP host");
        }
        let base = if all_ok || !policy.tls_emulation {
            REFRESH
        } else {
            RETRY
        };
        let wait = base.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = waker.notified() => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Logs, stores and publishes one fetch result; `true` on success.
async fn record(
    inner: &Weak<Inner>,
    dir: &std::path::Path,
    domain: &str,
    target: &Target,
    r: Result<Profile, FetchError>,
) -> bool {
    let Some(i) = inner.upgrade() else {
        return false;
    };
    match r {
        Ok(p) => {
            tracing::info!(
                domain,
                origin = %p.origin,
                cipher = format_args!("{:04x}", p.cipher),
                flight_total = p.flight_total,
                flight_ms = p.flight_ms,
                "TLS front profile fetched"
            );
            i.stats.events().push(
                "tls_front.fetch",
                &format!("domain={domain} ok flight_total={}", p.flight_total),
            );
            let (dir2, p2) = (dir.to_path_buf(), p.clone());
            match tokio::task::spawn_blocking(move || store_profile(&dir2, &p2)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(domain, error = %e, "cannot store TLS front profile"),
                Err(e) => tracing::warn!(domain, error = %e, "profile store task failed"),
            }
            i.fronts.set_profile(p);
            true
        }
        Err(e) => {
            tracing::warn!(domain, origin = %format!("{}:{}", target.host, target.port), error = %e,
                "TLS front profile fetch failed; keeping the previous or a randomized shape");
            i.stats
                .events()
                .push("tls_front.fetch", &format!("domain={domain} error={e}"));
            false
        }
    }
}
