//! Direct-route relay (PROTOCOL.md §6.4): client ⇄ DC, re-encrypting in place.
//!
//! Owns: both copy directions of one session, fake-TLS de-framing / record wrapping, octet and
//! quota accounting, the idle policy, and half-close. Must not: allocate per chunk (each
//! direction allocates its buffer lazily on first readability and grows it at most twice),
//! hold a lock across `.await`, or parse MTProto framing.
//!
//! ```text
//!  client ─► [de-frame TLS] ─► client_dec ─► dc_enc ─► DC
//!  client ◄─ [17 03 03 LL LL] ◄─ client_enc ◄─ dc_dec ◄─ DC     (both skipped in fast mode:
//!                                                              the composition is identity)
//! ```

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::{AesCtr, CipherPair};
use stats::UserStats;
use tokio::net::TcpStream;

use crate::io_util::{shutdown_write, write_all};
use crate::policy::{IdlePolicy, UserRuntime};
use crate::tls_stream::Deframer;
use crate::upstream::stream::{self as dcio, DcRead, DcStream, DcWrite};

/// First buffer size of a direction; grows ×4 on full reads up to the maximum.
const BUF_INITIAL: usize = 4 * 1024;
const BUF_MAX: usize = 64 * 1024;
/// Largest record payload sent to a fake-TLS client.
const TLS_RECORD_MAX: usize = 16 * 1024;
const TLS_HEADER: usize = 5;

/// Why a relay ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both directions reached end of stream.
    Closed,
    /// The user's data quota was crossed.
    Quota,
    /// Idle policy.
    Idle,
    /// Socket error.
    Io(io::Error),
    /// The client broke the TLS record layer.
    Protocol(&'static str),
    /// The user was closed (deleted, rotated, expired) or the data plane shuts down.
    Cancelled(&'static str),
}

impl std::fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("closed"),
            Self::Quota => f.write_str("data quota reached"),
            Self::Idle => f.write_str("idle"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(label) => write!(f, "protocol error: {label}"),
            Self::Cancelled(why) => write!(f, "cancelled: {why}"),
        }
    }
}

impl From<io::Error> for RelayEnd {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Last activity per direction, in ms since the session start.
pub(crate) struct Activity {
    start: Instant,
    up_ms: AtomicU64,
    down_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            up_ms: AtomicU64::new(0),
            down_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self, up: bool) {
        let at = if up { &self.up_ms } else { &self.down_ms };
        at.store(self.now_ms(), Ordering::Relaxed);
    }
}

/// Everything one relay needs. Ciphers are boxed (1 KiB of key schedule each) so the
/// session future stays small.
pub(crate) struct Relay<'a> {
    pub(crate) client: &'a TcpStream,
    /// Client side: `decrypt` client → proxy, `encrypt` proxy → client.
    pub(crate) client_ciphers: Box<CipherPair>,
    /// DC side: `encrypt` proxy → DC, `decrypt` DC → proxy.
    pub(crate) dc_ciphers: Box<CipherPair>,
    /// Fast mode: DC → client bytes pass unchanged (both keystreams are the same).
    pub(crate) fast: bool,
    pub(crate) deframer: Option<Deframer>,
    pub(crate) user: &'a UserRuntime,
    pub(crate) user_stats: &'a UserStats,
    pub(crate) idle: IdlePolicy,
}

fn over_quota(user: &UserRuntime, stats: &UserStats) -> bool {
    stats.quota_used_bytes() >= user.quota_bytes.load(Ordering::Relaxed)
}

fn grow(buf: &mut Vec<u8>, filled: usize, max: usize) {
    if filled == buf.len() && buf.len() < max {
        let new = (buf.len() * 4).min(max);
        buf.resize(new, 0);
    }
}

impl Relay<'_> {
    /// Runs over the session's DC stream: a TCP socket is shared by reference by both
    /// directions; a tunnel (Shadowsocks) is split once, and its relay future boxed so the
    /// session future stays small.
    pub(crate) async fn run_on(self, stream: DcStream) -> RelayEnd {
        match stream {
            DcStream::Tcp(s) => self.run(&s, &s).await,
            DcStream::Tunnel(t) => {
                let (r, w) = tokio::io::split(t);
                Box::pin(self.run(r, w)).await
            }
        }
    }

    /// Runs until both directions close, or an error / quota / idle end.
    async fn run<R: DcRead, W: DcWrite>(self, dc_read: R, dc_write: W) -> RelayEnd {
        let activity = Activity::new();
        let Relay {
            client,
            mut client_ciphers,
            mut dc_ciphers,
            fast,
            deframer,
            user,
            user_stats,
            idle,
        } = self;
        let tls = deframer.is_some();
        let CipherPair {
            decrypt: client_dec,
            encrypt: client_enc,
        } = &mut *client_ciphers;
        let CipherPair {
            decrypt: dc_dec,
            encrypt: dc_enc,
        } = &mut *dc_ciphers;
        let down_ciphers = (!fast).then_some((dc_dec, client_enc));
        let up = upstream(
            client, dc_write, client_dec, dc_enc, deframer, user, user_stats, &activity,
        );
        let down = downstream(
            dc_read,
            client,
            down_ciphers,
            tls,
            user,
            user_stats,
            &activity,
        );
        let both = async { tokio::try_join!(up, down) };
        tokio::select! {
            r = both => match r {
                Ok(_) => RelayEnd::Closed,
                Err(e) => e,
            },
            end = idle_watch(&activity, idle) => end,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn upstream<W: DcWrite>(
    client: &TcpStream,
    mut dc: W,
    dec: &mut AesCtr,
    enc: &mut AesCtr,
    mut deframer: Option<Deframer>,
    user: &UserRuntime,
    stats: &UserStats,
    activity: &Activity,
) -> Result<(), RelayEnd> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        client.readable().await?;
        if buf.is_empty() {
            buf = vec![0u8; BUF_INITIAL];
        }
        let n = match client.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            dcio::shutdown(&mut dc).await;
            return Ok(());
        }
        activity.touch(true);
        stats.add_octets_from_client(n as u64);
        let (len, closed) = match deframer.as_mut() {
            Some(d) => match d.deframe(&mut buf[..n]) {
                Ok(r) => (r.len, r.closed),
                Err(e) => return Err(RelayEnd::Protocol(e.label())),
            },
            None => (n, false),
        };
        let data = &mut buf[..len];
        dec.apply_in_place(data);
        enc.apply_in_place(data);
        dcio::write_all(&mut dc, data).await?;
        if over_quota(user, stats) {
            return Err(RelayEnd::Quota);
        }
        if closed {
            dcio::shutdown(&mut dc).await;
            return Ok(());
        }
        grow(&mut buf, n, BUF_MAX);
    }
}

async fn downstream<R: DcRead>(
    mut dc: R,
    client: &TcpStream,
    mut ciphers: Option<(&mut AesCtr, &mut AesCtr)>,
    tls: bool,
    user: &UserRuntime,
    stats: &UserStats,
    activity: &Activity,
) -> Result<(), RelayEnd> {
    let off = if tls { TLS_HEADER } else { 0 };
    let max = if tls {
        TLS_HEADER + TLS_RECORD_MAX
    } else {
        BUF_MAX
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        dcio::ready(&mut dc).await?;
        if buf.is_empty() {
            buf = vec![0u8; off + BUF_INITIAL];
        }
        let n = match dcio::read(&mut dc, &mut buf[off..]).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            shutdown_write(client);
            return Ok(());
        }
        activity.touch(false);
        if let Some((dc_dec, client_enc)) = ciphers.as_mut() {
            dc_dec.apply_in_place(&mut buf[off..off + n]);
            client_enc.apply_in_place(&mut buf[off..off + n]);
        }
        if tls {
            // n ≤ TLS_RECORD_MAX by the buffer bound.
            let len = (n as u16).to_be_bytes();
            buf[..TLS_HEADER].copy_from_slice(&[0x17, 0x03, 0x03, len[0], len[1]]);
        }
        write_all(client, &buf[..off + n]).await?;
        stats.add_octets_to_client((off + n) as u64);
        if over_quota(user, stats) {
            return Err(RelayEnd::Quota);
        }
        grow(&mut buf, off + n, max);
    }
}

/// Resolves when the idle policy says the session is dead.
async fn idle_watch(activity: &Activity, idle: IdlePolicy) -> RelayEnd {
    let ms = |d: Duration| d.as_millis() as u64;
    loop {
        let now = activity.now_ms();
        let up_idle = now.saturating_sub(activity.up_ms.load(Ordering::Relaxed));
        let down_idle = now.saturating_sub(activity.down_ms.load(Ordering::Relaxed));
        let wait_ms = if idle.v2 {
            // Client silent for `hard`, or for `soft` with no downstream activity within
            // `grace`.
            if up_idle >= ms(idle.hard) || (up_idle >= ms(idle.soft) && down_idle >= ms(idle.grace))
            {
                return RelayEnd::Idle;
            }
            let to_hard = ms(idle.hard) - up_idle;
            let to_soft = ms(idle.soft).saturating_sub(up_idle);
            let to_grace = ms(idle.grace).saturating_sub(down_idle);
            to_hard.min(to_soft.max(to_grace))
        } else {
            let both = up_idle.min(down_idle);
            if both >= ms(idle.hard) {
                return RelayEnd::Idle;
            }
            ms(idle.hard) - both
        };
        tokio::time::sleep(Duration::from_millis(wait_ms.max(50))).await;
    }
}
