//! Bad (refused) client connections by class: one fixed, lock-free counter per class label.
//!
//! Owns: [`BAD_CLASSES`], the sorted list of class labels the data plane reports (they are
//! `proto::RejectReason` labels; the data plane's tests check both lists agree, so this crate
//! needs no dependency on `proto`), and [`BadClassCounters`]. Must not: allocate or lock when
//! counting (a scan or flood of bad clients must stay cheap) or invent labels at run time (an
//! unknown label is counted as [`OTHER_CLASS`]).
//!
//! ```text
//!  "tls_replay" ─ binary search in BAD_CLASSES ─► index 27 ─► counters[27] += 1
//!  snapshot: BAD_CLASSES zipped with counters, zero rows omitted, already sorted by class
//! ```

use serde::Serialize;

use crate::Counter;

/// Label counted when a caller reports a class not in [`BAD_CLASSES`].
pub const OTHER_CLASS: &str = "other";

/// Every class label, sorted (binary search; the API lists rows in this order).
pub const BAD_CLASSES: &[&str] = &[
    "eof_before_detection",
    "handshake_timeout",
    "internal_error",
    "io_error",
    "max_connections",
    "no_users",
    "obfs2_forbidden_prefix",
    "obfs2_no_matching_secret",
    "obfs2_replay",
    "obfs2_tag_not_allowed",
    "obfs2_truncated",
    OTHER_CLASS,
    "plain_disabled",
    "proxy_header_eof",
    "proxy_header_invalid",
    "proxy_header_timeout",
    "proxy_header_untrusted_peer",
    "tls_alert_before_init",
    "tls_alpn_not_allowed",
    "tls_bad_record",
    "tls_bad_record_length",
    "tls_disabled",
    "tls_hello_truncated",
    "tls_init_too_far",
    "tls_init_truncated",
    "tls_malformed_hello",
    "tls_no_matching_secret",
    "tls_replay",
    "tls_stale_timestamp",
    "tls_unknown_sni",
    "user_expired",
    "user_max_tcp_conns",
    "user_max_unique_ips",
    "user_quota_exhausted",
];

const N: usize = BAD_CLASSES.len();

/// One row of `connections_bad_by_class` (telemt's `ClassCount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassCount {
    /// Class label.
    pub class: &'static str,
    /// Connections refused for this class.
    pub total: u64,
}

/// Per-class bad-connection counters.
#[derive(Debug)]
pub struct BadClassCounters {
    counters: [Counter; N],
}

impl Default for BadClassCounters {
    fn default() -> Self {
        Self {
            counters: std::array::from_fn(|_| Counter::default()),
        }
    }
}

impl BadClassCounters {
    /// Index of `class` in [`BAD_CLASSES`], if listed.
    pub fn index_of(class: &str) -> Option<usize> {
        BAD_CLASSES.binary_search(&class).ok()
    }

    /// Counts one connection under `class` ([`OTHER_CLASS`] if unknown).
    pub fn inc(&self, class: &str) {
        let i = Self::index_of(class)
            .or_else(|| Self::index_of(OTHER_CLASS))
            .unwrap_or(0);
        if let Some(c) = self.counters.get(i) {
            c.inc();
        }
    }

    /// Non-zero classes, sorted by class.
    pub fn rows(&self) -> Vec<ClassCount> {
        BAD_CLASSES
            .iter()
            .zip(&self.counters)
            .map(|(&class, c)| ClassCount {
                class,
                total: c.get(),
            })
            .filter(|r| r.total > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_counts_unknown_as_other() {
        assert!(BAD_CLASSES.windows(2).all(|w| w[0] < w[1]));
        let c = BadClassCounters::default();
        assert!(c.rows().is_empty());
        c.inc("tls_replay");
        c.inc("tls_replay");
        c.inc("no_such_class");
        c.inc("eof_before_detection");
        assert_eq!(
            c.rows(),
            vec![
                ClassCount {
                    class: "eof_before_detection",
                    total: 1
                },
                ClassCount {
                    class: OTHER_CLASS,
                    total: 1
                },
                ClassCount {
                    class: "tls_replay",
                    total: 2
                },
            ]
        );
    }
}
