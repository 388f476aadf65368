//! `TlsFingerprints`: bounded JA3/JA4 leaderboards of complete ClientHellos behind
//! `/v1/runtime/tls-fingerprints` (telemt's `RuntimeEdgeTlsFingerprintsPayload`): global, by
//! source IP, by source CIDR (`/24` IPv4, `/56` IPv6) and by authenticated user, each row
//! split into TLS-authenticated and bad/probe observations.
//!
//! Owns: the four boards, their fixed capacity and eviction. Must not: compute fingerprints
//! (the caller passes `proto`'s strings) or grow without bound: a board at capacity first
//! drops rows outside the retention window, then the least-counted row (oldest on a tie),
//! and counts the drop. A scan of unique fingerprints costs one O(capacity) pass per new
//! row, under a mutex held for no I/O.
//!
//! ```text
//!  record(fp, ip, user?, authenticated, now)
//!    ├─ by_fingerprint  key (ja3, ja4)
//!    ├─ by_ip           key (ip, ja3, ja4)
//!    ├─ by_cidr         key (ip/24 | ip/56, ja3, ja4)
//!    └─ by_user         key (user, ja3, ja4)     only once the user is known
//!  row: total += 1; auth_success or bad_or_probe += 1; first/last seen
//! ```

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;
use serde::Serialize;

/// Rows kept per board.
pub const TLS_FINGERPRINT_CAPACITY: usize = 1024;

/// One fingerprint as computed by the caller (`proto::TlsFingerprint`'s strings).
#[derive(Debug, Clone, Copy)]
pub struct FingerprintRef<'a> {
    /// JA3 MD5 hash.
    pub ja3: &'a str,
    /// Raw JA3 string.
    pub ja3_raw: &'a str,
    /// JA4.
    pub ja4: &'a str,
    /// Raw JA4 (`JA4_r`).
    pub ja4_raw: &'a str,
}

/// One leaderboard row (`RuntimeEdgeTlsFingerprintRow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TlsFingerprintRow {
    /// IP, CIDR or username; absent in `by_fingerprint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub scope: Option<String>,
    /// JA3 MD5 hash.
    pub ja3: String,
    /// Raw JA3 string.
    pub ja3_raw: String,
    /// JA4.
    pub ja4: String,
    /// Raw JA4 material.
    pub ja4_raw: String,
    /// Complete ClientHello observations.
    pub total: u64,
    /// Observations that authenticated (the digest matched a user).
    pub auth_success: u64,
    /// Observations refused (probes, bad clients).
    pub bad_or_probe: u64,
    /// First observation (Unix seconds).
    pub first_seen_epoch_secs: u64,
    /// Last observation (Unix seconds).
    pub last_seen_epoch_secs: u64,
}

/// The four leaderboards, top `limit` rows each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFingerprintSnapshot {
    /// Rows kept per board.
    pub capacity: usize,
    /// Rows evicted because a board was full.
    pub dropped_total: u64,
    /// Complete ClientHello records that could not be fingerprinted.
    pub parse_error_total: u64,
    /// Global board.
    pub by_fingerprint: Vec<TlsFingerprintRow>,
    /// By source IP.
    pub by_ip: Vec<TlsFingerprintRow>,
    /// By source CIDR.
    pub by_cidr: Vec<TlsFingerprintRow>,
    /// By authenticated user.
    pub by_user: Vec<TlsFingerprintRow>,
}

#[derive(Debug, Default)]
struct Board {
    rows: HashMap<(Option<String>, String, String), TlsFingerprintRow>,
}

impl Board {
    /// Adds one observation; returns how many rows were evicted to make room.
    fn record(
        &mut self,
        scope: Option<String>,
        fp: FingerprintRef<'_>,
        authenticated: bool,
        now: u64,
        capacity: usize,
        retention_secs: u64,
    ) -> u64 {
        let key = (scope, fp.ja3.to_owned(), fp.ja4.to_owned());
        let before = self.rows.len();
        if !self.rows.contains_key(&key) && before >= capacity.max(1) {
            let horizon = now.saturating_sub(retention_secs);
            self.rows.retain(|_, r| r.last_seen_epoch_secs >= horizon);
            if self.rows.len() >= capacity.max(1) {
                let victim = self
                    .rows
                    .iter()
                    .min_by_key(|(_, r)| (r.total, r.last_seen_epoch_secs))
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    self.rows.remove(&k);
                }
            }
        }
        let evicted = before.saturating_sub(self.rows.len()) as u64;
        let row = self
            .rows
            .entry(key)
            .or_insert_with_key(|(scope, _, _)| TlsFingerprintRow {
                scope: scope.clone(),
                ja3: fp.ja3.to_owned(),
                ja3_raw: fp.ja3_raw.to_owned(),
                ja4: fp.ja4.to_owned(),
                ja4_raw: fp.ja4_raw.to_owned(),
                total: 0,
                auth_success: 0,
                bad_or_probe: 0,
                first_seen_epoch_secs: now,
                last_seen_epoch_secs: now,
            });
        row.total += 1;
        if authenticated {
            row.auth_success += 1;
        } else {
            row.bad_or_probe += 1;
        }
        row.last_seen_epoch_secs = now;
        evicted
    }

    /// Rows seen within the retention window, most observed first, at most `limit`.
    fn top(&self, limit: usize, now: u64, retention_secs: u64) -> Vec<TlsFingerprintRow> {
        let horizon = now.saturating_sub(retention_secs);
        let mut rows: Vec<_> = self
            .rows
            .values()
            .filter(|r| r.last_seen_epoch_secs >= horizon)
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            (b.total, b.last_seen_epoch_secs, &a.scope, &a.ja4, &a.ja3).cmp(&(
                a.total,
                a.last_seen_epoch_secs,
                &b.scope,
                &b.ja4,
                &b.ja3,
            ))
        });
        rows.truncate(limit);
        rows
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_fingerprint: Board,
    by_ip: Board,
    by_cidr: Board,
    by_user: Board,
    dropped_total: u64,
    parse_error_total: u64,
}

/// The fingerprint leaderboards.
#[derive(Debug)]
pub struct TlsFingerprints {
    capacity: usize,
    /// Rows older than this are dropped first when a board is full.
    retention_secs: u64,
    inner: Mutex<Inner>,
}

impl Default for TlsFingerprints {
    fn default() -> Self {
        Self::new(TLS_FINGERPRINT_CAPACITY, 600)
    }
}

/// The `/24` (IPv4) or `/56` (IPv6) network of `ip`, as `a.b.c.0/24` / `x:y:z:w::/56`.
pub fn source_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 72) - 1);
            format!("{}/56", std::net::Ipv6Addr::from(bits))
        }
    }
}

impl TlsFingerprints {
    /// Boards of `capacity` rows each; `retention_secs` is the preferred eviction horizon.
    pub fn new(capacity: usize, retention_secs: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            retention_secs,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Rows kept per board.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One complete ClientHello from `ip`: `user` when it authenticated.
    pub fn record(
        &self,
        fp: FingerprintRef<'_>,
        ip: IpAddr,
        user: Option<&str>,
        authenticated: bool,
        now: u64,
    ) {
        let (cap, ret) = (self.capacity, self.retention_secs);
        let mut g = self.inner.lock();
        let mut dropped = 0u64;
        dropped += g
            .by_fingerprint
            .record(None, fp, authenticated, now, cap, ret);
        let ip_scope = Some(ip.to_string());
        dropped += g.by_ip.record(ip_scope, fp, authenticated, now, cap, ret);
        let cidr = Some(source_cidr(ip));
        dropped += g.by_cidr.record(cidr, fp, authenticated, now, cap, ret);
        if let Some(u) = user {
            let scope = Some(u.to_owned());
            dropped += g.by_user.record(scope, fp, authenticated, now, cap, ret);
        }
        g.dropped_total += dropped;
    }

    /// A complete ClientHello record that could not be fingerprinted.
    pub fn record_parse_error(&self) {
        self.inner.lock().parse_error_total += 1;
    }

    /// The top `limit` rows of each board seen within `retention_secs` of `now`.
    pub fn snapshot(&self, limit: usize, now: u64, retention_secs: u64) -> TlsFingerprintSnapshot {
        let g = self.inner.lock();
        TlsFingerprintSnapshot {
            capacity: self.capacity,
            dropped_total: g.dropped_total,
            parse_error_total: g.parse_error_total,
            by_fingerprint: g.by_fingerprint.top(limit, now, retention_secs),
            by_ip: g.by_ip.top(limit, now, retention_secs),
            by_cidr: g.by_cidr.top(limit, now, retention_secs),
            by_user: g.by_user.top(limit, now, retention_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u32) -> (String, String) {
        (format!("ja3-{n}"), format!("t13d-{n}"))
    }

    fn rec(b: &TlsFingerprints, n: u32, ip: &str, user: Option<&str>, ok: bool, now: u64) {
        let (ja3, ja4) = fp(n);
        let f = FingerprintRef {
            ja3: &ja3,
            ja3_raw: "raw3",
            ja4: &ja4,
            ja4_raw: "raw4",
        };
        b.record(f, ip.parse().expect("ip"), user, ok, now);
    }

    #[test]
    fn counts_split_by_outcome_and_scope() {
        let b = TlsFingerprints::new(8, 600);
        rec(&b, 1, "10.0.0.1", Some("alice"), true, 100);
        rec(&b, 1, "10.0.0.2", None, false, 101);
        rec(&b, 2, "10.0.1.9", None, false, 102);
        let s = b.snapshot(10, 110, 600);
        let top = &s.by_fingerprint[0];
        assert_eq!((top.ja3.as_str(), top.total), ("ja3-1", 2));
        assert_eq!((top.auth_success, top.bad_or_probe), (1, 1));
        assert_eq!(
            (top.first_seen_epoch_secs, top.last_seen_epoch_secs),
            (100, 101)
        );
        assert!(top.scope.is_none());
        assert_eq!(s.by_fingerprint.len(), 2);
        assert_eq!(s.by_ip.len(), 3);
        let cidrs: Vec<_> = s.by_cidr.iter().map(|r| r.scope.clone()).collect();
        assert_eq!(cidrs[0].as_deref(), Some("10.0.0.0/24"));
        assert_eq!(s.by_cidr.len(), 2);
        assert_eq!(s.by_user.len(), 1);
        assert_eq!(s.by_user[0].scope.as_deref(), Some("alice"));
        assert_eq!(b.snapshot(1, 110, 600).by_ip.len(), 1);
        // Outside the retention window: not listed.
        assert!(b.snapshot(10, 10_000, 600).by_fingerprint.is_empty());
    }

    #[test]
    fn boards_stay_bounded_and_evict_the_least_counted() {
        let b = TlsFingerprints::new(4, 600);
        for _ in 0..5 {
            rec(&b, 0, "10.0.0.1", None, true, 100);
        }
        for n in 1..50 {
            rec(&b, n, "10.0.0.1", None, false, 100 + u64::from(n));
        }
        let s = b.snapshot(100, 200, 600);
        assert_eq!(s.by_fingerprint.len(), 4);
        assert_eq!(
            s.by_fingerprint[0].ja3, "ja3-0",
            "the heavy hitter survives"
        );
        assert_eq!(s.by_fingerprint[0].total, 5);
        assert!(s.dropped_total >= 45, "{}", s.dropped_total);
    }

    #[test]
    fn cidr_scopes() {
        assert_eq!(source_cidr("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(
            source_cidr("2001:db8:1:2ff:3::4".parse().unwrap()),
            "2001:db8:1:200::/56"
        );
    }
}
