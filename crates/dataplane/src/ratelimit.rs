//! Bandwidth caps (`access.user_rate_limits`, `access.cidr_rate_limits`): lock-free buckets
//! that the relay charges after each chunk, answering how long to pause.
//!
//! Each bucket is GCRA ("virtual scheduling"): one atomic holds the theoretical time at which
//! the bytes sent so far would have finished at the configured rate; a chunk moves it forward
//! by its cost and the sender waits for whatever lies beyond a small burst allowance. One CAS
//! per chunk, no lock, shared by every session of a user (or subnet), and a rate change applies
//! to live sessions at once.
//! Must not: read or write sockets (the relay sleeps), allocate on the hot path.
//!
//! ```text
//!  tat ──────────────┐ cost = bytes / rate
//!  now ──┐           ▼
//!        │ burst │ wait │
//!        ▼───────▼──────▼  new tat = max(tat, now) + cost; wait = new tat − now − burst
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use config::{CidrRateKey, RateLimitBps};
use ipnet::IpNet;
use parking_lot::Mutex;
use tokio::time::Instant;

/// How far ahead of its rate a sender may run before it is paused.
const BURST: Duration = Duration::from_millis(50);
/// Lazily created template buckets kept at most (idle ones are dropped first).
const MAX_TEMPLATE_BUCKETS: usize = 65_536;

/// One direction's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    origin: Instant,
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    /// Theoretical arrival time, in ns since `origin`.
    tat: AtomicU64,
}

impl Bucket {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            origin: Instant::now(),
            rate: AtomicU64::new(bytes_per_sec),
            tat: AtomicU64::new(0),
        }
    }

    fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Charges `n` bytes; the pause the sender owes, if any.
    pub(crate) fn charge(&self, n: usize) -> Option<Duration> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 || n == 0 {
            return None;
        }
        let cost = u64::try_from(n as u128 * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX);
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(cost);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    let burst = BURST.as_nanos() as u64;
                    let wait = next.saturating_sub(now.saturating_add(burst));
                    return (wait > 0).then(|| Duration::from_nanos(wait));
                }
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Both directions of one cap (config in bits/s, buckets in bytes/s).
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) up: Bucket,
    pub(crate) down: Bucket,
}

impl Pair {
    pub(crate) fn new(r: RateLimitBps) -> Self {
        Self {
            up: Bucket::new(r.up_bps / 8),
            down: Bucket::new(r.down_bps / 8),
        }
    }

    /// Applies a changed cap (0 = unlimited) to live sessions.
    pub(crate) fn set(&self, r: RateLimitBps) {
        self.up.set_rate(r.up_bps / 8);
        self.down.set_rate(r.down_bps / 8);
    }
}

/// `access.cidr_rate_limits` for one config publish.
#[derive(Debug, Default)]
pub(crate) struct CidrLimits {
    /// Explicit networks, longest prefix first.
    nets: Vec<(IpNet, Arc<Pair>)>,
    /// Templates: (IPv4 prefix, IPv6 prefix, cap).
    templates: Vec<(Option<u8>, Option<u8>, RateLimitBps)>,
    /// Per-subnet buckets of the templates.
    lazy: Mutex<HashMap<(usize, IpNet), Arc<Pair>>>,
}

impl CidrLimits {
    /// Builds the rules, reusing `prev`'s buckets for unchanged networks (their pacing state
    /// carries over a reload).
    pub(crate) fn build(
        rules: &std::collections::BTreeMap<String, RateLimitBps>,
        prev: Option<&Self>,
    ) -> Self {
        let mut nets = Vec::new();
        let mut templates = Vec::new();
        for (key, cap) in rules {
            match CidrRateKey::parse(key) {
                Ok(CidrRateKey::Net(net)) => {
                    let pair = prev
                        .and_then(|p| p.nets.iter().find(|(n, _)| *n == net))
                        .map(|(_, pair)| {
                            pair.set(*cap);
                            Arc::clone(pair)
                        })
                        .unwrap_or_else(|| Arc::new(Pair::new(*cap)));
                    nets.push((net, pair));
                }
                Ok(CidrRateKey::Template(v4, v6)) => templates.push((v4, v6, *cap)),
                // Validation refuses these; a stale entry must not break the data plane.
                Err(e) => tracing::warn!(key, error = %e, "cidr_rate_limits entry ignored"),
            }
        }
        nets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        Self {
            nets,
            templates,
            lazy: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket pair a client from `ip` is paced by: the longest matching explicit
    /// network, else the first matching template's per-subnet bucket. Called once per
    /// session, not per chunk.
    pub(crate) fn for_ip(&self, ip: IpAddr) -> Option<Arc<Pair>> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some((_, pair)) = self.nets.iter().find(|(n, _)| n.contains(&ip)) {
            return Some(Arc::clone(pair));
        }
        for (i, (v4, v6, cap)) in self.templates.iter().enumerate() {
            let len = match ip {
                IpAddr::V4(_) => *v4,
                IpAddr::V6(_) => *v6,
            };
            let Some(len) = len else { continue };
            let Ok(net) = IpNet::new(ip, len).map(|n| n.trunc()) else {
                continue;
            };
            let mut lazy = self.lazy.lock();
            if lazy.len() >= MAX_TEMPLATE_BUCKETS {
                // Bounded memory: forget buckets no live session holds.
                lazy.retain(|_, p| Arc::strong_count(p) > 1);
            }
            let pair = lazy
                .entry((i, net))
                .or_insert_with(|| Arc::new(Pair::new(*cap)));
            return Some(Arc::clone(pair));
        }
        None
    }
}

/// What one session is paced by: its user's cap and its source's.
pub(crate) struct Throttle {
    pub(crate) cidr: Option<Arc<Pair>>,
}

impl Throttle {
    /// The pause owed after moving `n` bytes client → DC (`up`) or DC → client.
    pub(crate) fn charge(&self, user: &Pair, up: bool, n: usize) -> Option<Duration> {
        let pick = |p: &Pair| if up { p.up.charge(n) } else { p.down.charge(n) };
        let a = pick(user);
        let b = self.cidr.as_deref().and_then(pick);
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gcra_holds_the_rate_after_a_small_burst() {
        let b = Bucket::new(1_000_000); // 1 MB/s
                                        // 50 ms of burst pass without waiting.
        assert_eq!(b.charge(40_000), None);
        // The next 100 kB cost 100 ms; 90 ms past the burst allowance.
        let wait = b.charge(100_000).expect("paced");
        assert_eq!(wait, Duration::from_millis(90));
        tokio::time::advance(Duration::from_secs(2)).await;
        // Idle time is not banked beyond the burst.
        assert_eq!(b.charge(50_000), None);
        assert!(b.charge(10_000).is_some());
        b.set_rate(0);
        assert_eq!(b.charge(10_000_000), None, "0 = unlimited");
    }

    #[test]
    fn explicit_networks_win_over_templates_and_templates_split_by_subnet() {
        let rules: std::collections::BTreeMap<String, RateLimitBps> = [
            ("203.0.113.0/24", 8_000),
            ("203.0.113.128/25", 16_000),
            ("*4/32", 80_000),
            ("*6/64", 800_000),
        ]
        .into_iter()
        .map(|(k, r)| {
            (
                k.to_owned(),
                RateLimitBps {
                    up_bps: r,
                    down_bps: r,
                },
            )
        })
        .collect();
        let c = CidrLimits::build(&rules, None);
        let rate = |ip: &str| {
            c.for_ip(ip.parse().expect("ip"))
                .map(|p| p.up.rate.load(Ordering::Relaxed))
        };
        assert_eq!(rate("203.0.113.200"), Some(2_000), "longest prefix");
        assert_eq!(rate("203.0.113.5"), Some(1_000));
        assert_eq!(rate("::ffff:203.0.113.5"), Some(1_000), "mapped v4");
        assert_eq!(rate("198.51.100.7"), Some(10_000));
        let a = c.for_ip("198.51.100.7".parse().expect("ip")).expect("a");
        let b = c.for_ip("198.51.100.8".parse().expect("ip")).expect("b");
        assert!(!Arc::ptr_eq(&a, &b), "one bucket per /32");
        let x = c.for_ip("2001:db8::1".parse().expect("ip")).expect("x");
        let y = c.for_ip("2001:db8::2".parse().expect("ip")).expect("y");
        assert!(Arc::ptr_eq(&x, &y), "same /64");
        // A reload keeps explicit buckets (and their pacing) and applies new rates.
        let mut rules2 = rules.clone();
        rules2.insert(
            "203.0.113.0/24".into(),
            RateLimitBps {
                up_bps: 800,
                down_bps: 800,
            },
        );
        let c2 = CidrLimits::build(&rules2, Some(&c));
        assert_eq!(
            c2.for_ip("203.0.113.5".parse().expect("ip"))
                .map(|p| p.up.rate.load(Ordering::Relaxed)),
            Some(100)
        );
    }
}
