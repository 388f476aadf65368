//! Why a client connection was refused: one closed set of reasons shared by the sans-IO
//! handshake ([`crate::server_handshake`]), which produces most of them, and the data plane,
//! which adds the ones only it can see (timeouts, I/O errors, admission limits, PROXY
//! headers, the accept limit).
//!
//! Owns: [`RejectReason`], its stable snake_case class labels (statistics and API keys: never
//! rename one) and the mask, drop or alert [`Disposition`]. Must not: count anything (the stats crate
//! does) or carry per-connection detail (the handshake's [`Rejection`](crate::Rejection)
//! carries a fine-grained label beside the reason for logs).
//!
//! ```text
//!  stage             reasons
//!  accept            max_connections
//!  PROXY header      proxy_header_untrusted_peer | _invalid | _eof | _timeout
//!  detection (5 B)   eof_before_detection, tls_bad_record_length, tls_disabled, plain_disabled
//!  ClientHello       tls_hello_truncated, tls_malformed_hello, tls_unknown_sni,
//!                    tls_alpn_not_allowed, tls_no_matching_secret, tls_stale_timestamp,
//!                    tls_replay
//!  inner records     tls_bad_record, tls_alert_before_init, tls_init_too_far, tls_init_truncated
//!  64-byte init      obfs2_forbidden_prefix (from the first byte on), obfs2_truncated,
//!                    obfs2_no_matching_secret, obfs2_tag_not_allowed, obfs2_replay, no_users
//!  any               handshake_timeout, io_error, internal_error
//!  admission         user_expired, user_quota_exhausted, user_max_tcp_conns, user_max_unique_ips
//! ```

/// What the data plane does with a refused client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Relay to the mask host with every byte read so far (docs/PROTOCOL.md §4.8).
    Mask,
    /// Close without answering (unknown SNI with `drop`, a vanished client).
    Drop,
    /// Write these bytes at once, then close (unknown SNI with `reject_handshake`: a TLS
    /// alert, PROTOCOL.md §4.4).
    Alert(&'static [u8]),
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, )+) => {
        /// Why a client connection was refused. Every variant has a stable class label
        /// ([`RejectReason::label`]); [`RejectReason::ALL`] lists them in declaration order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum RejectReason {
            $( $(#[$doc])* $variant, )+
        }

        impl RejectReason {
            /// Every reason, in declaration order ([`RejectReason::index`] order).
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$variant,)+];

            /// Stable snake_case class label (statistics, API `connections_bad_by_class`).
            pub const fn label(self) -> &'static str {
                match self {
                    $( RejectReason::$variant => $label, )+
                }
            }
        }
    };
}

reasons! {
    /// `server.max_connections` reached and no permit freed in time.
    MaxConnections => "max_connections",
    /// A PROXY header from a peer outside `proxy_protocol_trusted_cidrs`.
    ProxyHeaderUntrustedPeer => "proxy_header_untrusted_peer",
    /// The PROXY header did not parse.
    ProxyHeaderInvalid => "proxy_header_invalid",
    /// The peer closed (or failed) before a complete PROXY header.
    ProxyHeaderEof => "proxy_header_eof",
    /// No complete PROXY header within `proxy_protocol_header_timeout_ms`.
    ProxyHeaderTimeout => "proxy_header_timeout",
    /// EOF before the 5 bytes that tell TLS from obfuscated2.
    EofBeforeDetection => "eof_before_detection",
    /// A TLS handshake record header whose length is outside 100..=16384.
    TlsBadRecordLength => "tls_bad_record_length",
    /// A ClientHello while fake TLS is disabled.
    TlsDisabled => "tls_disabled",
    /// An obfuscated2 init while classic and secure are disabled.
    PlainDisabled => "plain_disabled",
    /// EOF inside the ClientHello record.
    TlsHelloTruncated => "tls_hello_truncated",
    /// A complete ClientHello record that does not parse.
    TlsMalformedHello => "tls_malformed_hello",
    /// SNI not among the served domains (`unknown_sni_action` other than `accept`).
    TlsUnknownSni => "tls_unknown_sni",
    /// ALPN offered without `h2` / `http/1.1` while `alpn_enforce` is on.
    TlsAlpnNotAllowed => "tls_alpn_not_allowed",
    /// No user secret reproduces the ClientHello digest.
    TlsNoMatchingSecret => "tls_no_matching_secret",
    /// The digest matched but the timestamp is outside the accepted window.
    TlsStaleTimestamp => "tls_stale_timestamp",
    /// A ClientHello digest seen within the replay window.
    TlsReplay => "tls_replay",
    /// A malformed TLS record after the ServerHello.
    TlsBadRecord => "tls_bad_record",
    /// A TLS alert before the inner init.
    TlsAlertBeforeInit => "tls_alert_before_init",
    /// 64 KiB read without a complete inner init.
    TlsInitTooFar => "tls_init_too_far",
    /// EOF before the inner init was complete.
    TlsInitTruncated => "tls_init_truncated",
    /// EOF before 64 obfuscated2 init bytes.
    Obfs2Truncated => "obfs2_truncated",
    /// First bytes no real client's init starts with (an HTTP method, another transport's
    /// marker: PROTOCOL.md §2.2), masked without waiting for 64 bytes.
    Obfs2ForbiddenPrefix => "obfs2_forbidden_prefix",
    /// No user secret decrypts the init to a valid tag and a routable DC.
    Obfs2NoMatchingSecret => "obfs2_no_matching_secret",
    /// A secret matched but its tag is not admitted by the enabled modes.
    Obfs2TagNotAllowed => "obfs2_tag_not_allowed",
    /// An obfuscated2 init seen within the replay window.
    Obfs2Replay => "obfs2_replay",
    /// No user is configured.
    NoUsers => "no_users",
    /// `timeouts.client_handshake` elapsed.
    HandshakeTimeout => "handshake_timeout",
    /// Reading from or writing to the client failed.
    IoError => "io_error",
    /// The proxy could not build its own reply (a bug, never the client's fault).
    InternalError => "internal_error",
    /// The user's expiration date has passed.
    UserExpired => "user_expired",
    /// The user's data quota is used up.
    UserQuotaExhausted => "user_quota_exhausted",
    /// The user has `max_tcp_conns` live connections.
    UserMaxTcpConns => "user_max_tcp_conns",
    /// The user has `max_unique_ips` other client addresses.
    UserMaxUniqueIps => "user_max_unique_ips",
}

impl RejectReason {
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index in `0..COUNT` (position in [`RejectReason::ALL`]).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case_and_indexed_in_order() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            let l = r.label();
            assert!(seen.insert(l), "duplicate label {l}");
            assert!(
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{l}"
            );
        }
        assert_eq!(RejectReason::COUNT, RejectReason::ALL.len());
    }
}
