//! `proto`: the sans-IO wire truth of the MTProto proxy (docs/PROTOCOL.md).
//!
//! Owns: constants, key derivation, AES-CTR applied in place, parse/build of
//! every client-facing wire format (obfuscated2 init, abridged / intermediate /
//! padded framings, fake-TLS ClientHello / ServerHello / record layer, PROXY
//! protocol v1/v2, middle-proxy RPC packets / messages / KDF / CBC and the
//! proxy-config text in [`me`], SOCKS4/5 upstream codecs in [`socks`], the
//! DC table in [`dc`], the STUN binding used by the NAT probe in [`stun`];
//! tg:// links are built by the API, which owns their host rules)
//! and pure handshake helpers with time and randomness injected, the replay-cache
//! primitive, the whole server-side client handshake as a state machine in
//! [`server_handshake`] and the closed set of [`RejectReason`]s.
//!
//! Must not: depend on tokio, sockets, clocks or config. Callers pass `now`,
//! random bytes ([`RandomSource`]) and policy values; every parser returns a
//! precise error whose [`label`](InitReject::label)-style name doubles as a
//! bad-connection statistics label, and never panics on network input.
//!
//! Robustness: every parser has a "never panics on arbitrary bytes" proptest
//! and a cargo-fuzz target in `/fuzz` (outside the workspace, nightly only).
//!
//! Not here: Shadowsocks (§9.4; the data plane uses the `shadowsocks` crate).

#![forbid(unsafe_code)]

pub mod cipher;
pub mod dc;
pub mod framing;
pub mod me;
pub mod obfs2;
pub mod proxy_header;
pub mod reject;
pub mod replay;
pub mod server_handshake;
mod sha;
pub mod socks;
pub mod stun;
pub mod tls;
pub mod users;

pub use cipher::{AesCtr, CipherPair};
pub use dc::DcSet;
pub use framing::{
    encode_frame, encode_header, quick_ack_answer, Decoded, Frame, FrameDecoder, FrameError,
    FrameHeader, Framing, StreamSide,
};
pub use obfs2::{
    build_client_init, build_dc_init, generate_plain_init, is_forbidden_prefix, seal_init,
    starts_forbidden, FastModeKeys, InitError, InitKeys, ObfuscatedInit, OpenedInit, ProtoTag,
    RandomSource, SealedInit, Secret, TagSet, Transport, INIT_LEN, SECRET_LEN,
};
pub use proxy_header::{ProxyError, ProxyHeader, ProxyVersion};
pub use reject::{Disposition, RejectReason};
pub use replay::{
    ReplayCache, ReplayVerdict, ShardedReplayCache, OBFS_REPLAY_KEY_LEN, TLS_REPLAY_KEY_LEN,
};
pub use server_handshake::{
    Accepted, HandshakeContext, Now, Rejection, ServerHandshake, Step, MAX_HANDSHAKE_BYTES,
};
pub use tls::client::{build_client_hello, ClientHelloError, ClientHelloParams};
pub use tls::deframe::{Deframed, Deframer};
pub use tls::emulate::{resumed_flight_len, FlightPlan, FlightTable};
pub use tls::full_flight::{FullFlightBudget, FULL_FLIGHT_CAPACITY};

/// The X25519 public key of `scalar` (a genuine curve point for key shares). Goes through
/// the fixed-base precomputed table (the generic Montgomery ladder was the largest single cost
/// of a handshake). [`RandomSource::x25519_key_share`]'s default; the data plane hands out keys
/// computed ahead instead and falls back to this.
pub fn x25519_public(scalar: [u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(scalar)).to_bytes()
}

pub use tls::fingerprint::{fingerprint as tls_fingerprint, FingerprintError, TlsFingerprint};
pub use tls::hello::{
    parse_client_hello, Alpn, ClientHelloInfo, FakeTlsHello, HelloError, TimeWindow, TlsPolicy,
    UnknownSniAction,
};
pub use tls::origin::{
    build_probe_hello, FlightParser, FlightProgress, FlightShape, OriginError, ProbeParams,
    RecordShape, ServerHelloShape,
};
pub use tls::record::{
    app_data_header, write_app_data, Record, RecordError, RecordHeader, RecordKind, TlsRecordReader,
};
pub use tls::server_hello::{
    build_server_hello, verify_server_hello, write_server_hello, write_server_hello_with,
    ServerHelloError, ServerHelloParams, DEFAULT_CIPHER,
};
pub use tls::{detect as detect_tls, Detection, ALERT_UNRECOGNIZED_NAME};
pub use users::{
    match_init, match_init_with, InitReject, MatchOptions, Matched, UserKey, UserTable,
};

#[cfg(test)]
mod x25519_tests {
    #[test]
    fn fixed_base_table_matches_the_ladder() {
        for seed in 0u8..32 {
            let scalar: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            assert_eq!(
                super::x25519_public(scalar),
                x25519_dalek::x25519(scalar, x25519_dalek::X25519_BASEPOINT_BYTES)
            );
        }
    }
}
