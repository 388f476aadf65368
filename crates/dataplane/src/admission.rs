//! Admission after the user is identified: expiration, data quota, max TCP connections and
//! unique-IP limits (`[access]`). A refused client is masked, never told why.
//!
//! Owns: the checks and the resources an admitted session holds (per-user connection count,
//! unique-IP slot), released on drop. Must not: read the config directly (limits come from
//! the policy's [`UserRuntime`] atomics, updated on every publish).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use proto::RejectReason;
use stats::{Stats, UserSessionGuard};

use crate::policy::{Policy, UserRuntime};

/// Why a user's connection was refused (counted under [`Refusal::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Expired,
    QuotaExhausted,
    MaxTcpConns,
    UniqueIps,
}

impl Refusal {
    /// Statistics class.
    pub(crate) fn reason(self) -> RejectReason {
        match self {
            Self::Expired => RejectReason::UserExpired,
            Self::QuotaExhausted => RejectReason::UserQuotaExhausted,
            Self::MaxTcpConns => RejectReason::UserMaxTcpConns,
            Self::UniqueIps => RejectReason::UserMaxUniqueIps,
        }
    }
}

/// An admitted session's hold on its user's limits.
pub(crate) struct Admitted {
    pub(crate) session: UserSessionGuard,
    stats: Arc<Stats>,
    user: Arc<UserRuntime>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.stats
            .ips()
            .release(&self.user.name, self.ip, Instant::now());
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Checks every limit of `user` for a client from `ip`.
pub(crate) fn admit(
    stats: &Arc<Stats>,
    policy: &Policy,
    user: &Arc<UserRuntime>,
    ip: IpAddr,
) -> Result<Admitted, Refusal> {
    if user.expired(unix_now()) {
        return Err(Refusal::Expired);
    }
    let counters = stats.users().handle(&user.name);
    if counters.quota_used_bytes() >= user.quota_bytes.load(Ordering::Relaxed) {
        return Err(Refusal::QuotaExhausted);
    }
    // Count first, then compare: concurrent admissions can never overshoot the cap.
    let session = counters.open_session();
    let max_conns = user.max_tcp_conns.load(Ordering::Relaxed);
    if max_conns > 0 && counters.current_connections() > max_conns as u64 {
        return Err(Refusal::MaxTcpConns);
    }
    let max_ips = user.max_unique_ips.load(Ordering::Relaxed);
    let admitted = stats.ips().try_admit(
        &user.name,
        ip,
        (max_ips > 0).then_some(max_ips),
        policy.ip_mode,
        policy.ip_window,
        Instant::now(),
    );
    if !admitted {
        return Err(Refusal::UniqueIps);
    }
    Ok(Admitted {
        session,
        stats: Arc::clone(stats),
        user: Arc::clone(user),
        ip,
    })
}
