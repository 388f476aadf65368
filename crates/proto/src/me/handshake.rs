//! The ME link handshake for both roles (docs/PROTOCOL.md §7.3, §7.4):
//! [`ClientHandshake`] is the proxy's side, [`ServerHandshake`] the middle
//! proxy's. Both are sans-IO: feed received bytes, write what they append to
//! `out`, and take the established [`RpcLink`] once `feed` says done.
//!
//! Owns: the nonce exchange checks, choosing KDF inputs per role, turning
//! encryption on at the right byte, the RPC_HANDSHAKE exchange and the
//! CRC-32C decision. Must not: read clocks, draw randomness or learn
//! addresses (NAT/STUN, §7.5): the caller passes `now`, the nonce and the
//! addresses as the middle proxy sees them.
//!
//! ```text
//!  proxy (clt)                                   middle proxy (srv)
//!   seq −2 RPC_NONCE (clear)            ──►      check key_select, schema, clock
//!                                       ◄──      seq −2 RPC_NONCE (clear)
//!   keys: write "CLIENT", read "SERVER"          keys: write "SERVER", read "CLIENT"
//!   seq −1 RPC_HANDSHAKE (CBC, padded)  ──►
//!                                       ◄──      seq −1 RPC_HANDSHAKE (CBC, padded)
//!   CRC-32C from here on iff both handshakes carry flag 0x800
//! ```

use std::net::{IpAddr, SocketAddr};

use super::crc::Checksum;
use super::kdf::{derive_key_iv, KdfInput, MixedFamilies, Purpose};
use super::link::{RpcReceiver, RpcSender};
use super::msg::{handshake_error_payload, Handshake};
use super::rpc::{handshake_payload, RpcError, RpcNonce, HANDSHAKE_FLAG_CRC32C};

/// Crypto schema 1: AES-256-CBC keys from the §7.4 KDF.
pub const CRYPTO_SCHEMA_AES: u32 = 1;
/// Largest accepted difference between the two nonce timestamps.
pub const MAX_CLOCK_SKEW_SECS: u32 = 30;
/// Accepted proxy-secret lengths (docs/PROTOCOL.md §7.1).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 32..=256;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Framing, checksum or message error (a wrong key shows up here: the
    /// first encrypted packet decrypts to garbage).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The proxy secret has a length outside 32..=256.
    #[error("proxy secret of {0} bytes")]
    SecretLength(usize),
    /// The peer selected another proxy secret.
    #[error("peer key_select {0:02x?} does not match our secret")]
    KeySelect([u8; 4]),
    /// The peer asked for a crypto schema other than AES.
    #[error("unsupported crypto schema {0}")]
    Schema(u32),
    /// The nonce timestamps differ by more than the allowed skew.
    #[error("clock skew: ours {ours}, peer {theirs}")]
    ClockSkew {
        /// Our unix time.
        ours: u32,
        /// The peer's crypto_ts.
        theirs: u32,
    },
    /// The two link addresses are of different families.
    #[error(transparent)]
    MixedFamilies(#[from] MixedFamilies),
}

impl HandshakeError {
    /// Stable label for statistics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Rpc(e) => e.label(),
            Self::SecretLength(_) => "me_secret_length",
            Self::KeySelect(_) => "me_key_select",
            Self::Schema(_) => "me_crypto_schema",
            Self::ClockSkew { .. } => "me_clock_skew",
            Self::MixedFamilies(_) => "me_mixed_families",
        }
    }
}

/// Inputs of one handshake, same shape for both roles.
#[derive(Clone)]
pub struct HandshakeParams {
    /// The proxy secret (32..=256 bytes).
    pub proxy_secret: Vec<u8>,
    /// The proxy's address as the middle proxy sees it ("clt" in §7.4).
    pub proxy_addr: SocketAddr,
    /// The middle proxy's address ("srv" in §7.4).
    pub me_addr: SocketAddr,
    /// Our unix time (sent as crypto_ts and used for the skew check).
    pub now: u32,
    /// Our random nonce.
    pub nonce: [u8; 16],
    /// Offer (client) or accept (server) CRC-32C.
    pub crc32c: bool,
    /// Our PID for the RPC_HANDSHAKE (informational, see [`pid_bytes`]).
    pub pid: [u8; 12],
    /// Skew limit; `None` skips the check.
    pub max_skew_secs: Option<u32>,
}

impl std::fmt::Debug for HandshakeParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("HandshakeParams")
            .field("proxy_addr", &self.proxy_addr)
            .field("me_addr", &self.me_addr)
            .field("now", &self.now)
            .field("crc32c", &self.crc32c)
            .finish_non_exhaustive()
    }
}

/// A 12-byte PID: `ip(4, octets reversed; 0 for IPv6) | LE16 port | LE16 pid | LE32 utime`.
pub fn pid_bytes(addr: SocketAddr, pid: u16, utime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    if let IpAddr::V4(v4) = addr.ip() {
        b[..4].copy_from_slice(&u32::from(v4).to_le_bytes());
    }
    b[4..6].copy_from_slice(&addr.port().to_le_bytes());
    b[6..8].copy_from_slice(&pid.to_le_bytes());
    b[8..].copy_from_slice(&utime.to_le_bytes());
    b
}

/// An established link: both stream halves plus what the peer said.
#[derive(Debug)]
pub struct RpcLink {
    /// Our sending half (next seq 0).
    pub sender: RpcSender,
    /// Our receiving half; may already hold bytes that followed the handshake.
    pub receiver: RpcReceiver,
    /// Checksum in use for data packets.
    pub checksum: Checksum,
    /// The peer's RPC_HANDSHAKE.
    pub peer: Handshake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitNonce,
    AwaitHandshake,
    Done,
}

fn check_secret(p: &HandshakeParams) -> Result<[u8; 4], HandshakeError> {
    if !SECRET_LEN.contains(&p.proxy_secret.len()) {
        return Err(HandshakeError::SecretLength(p.proxy_secret.len()));
    }
    let s = &p.proxy_secret;
    Ok([s[0], s[1], s[2], s[3]])
}

fn check_peer_nonce(
    p: &HandshakeParams,
    key_select: [u8; 4],
    theirs: &RpcNonce,
) -> Result<(), HandshakeError> {
    if theirs.key_select != key_select {
        return Err(HandshakeError::KeySelect(theirs.key_select));
    }
    if theirs.schema != CRYPTO_SCHEMA_AES {
        return Err(HandshakeError::Schema(theirs.schema));
    }
    if let Some(max) = p.max_skew_secs {
        if i64::from(p.now).abs_diff(i64::from(theirs.ts)) > u64::from(max) {
            return Err(HandshakeError::ClockSkew {
                ours: p.now,
                theirs: theirs.ts,
            });
        }
    }
    Ok(())
}

/// One direction's AES-256-CBC key and IV.
type KeyIv = ([u8; 32], [u8; 16]);

/// Derives both directions and returns (write, read) for our role.
fn keys(k: &KdfInput<'_>, we_are_client: bool) -> Result<(KeyIv, KeyIv), MixedFamilies> {
    let client = derive_key_iv(k, Purpose::Client)?;
    let server = derive_key_iv(k, Purpose::Server)?;
    Ok(if we_are_client {
        (client, server)
    } else {
        (server, client)
    })
}

fn flags(crc32c: bool) -> u32 {
    if crc32c {
        HANDSHAKE_FLAG_CRC32C
    } else {
        0
    }
}

impl RpcLink {
    /// The link once a handshake of either role has settled (`result` set).
    fn assemble(
        sender: RpcSender,
        receiver: RpcReceiver,
        result: Option<(Checksum, Handshake)>,
    ) -> Option<Self> {
        let (checksum, peer) = result?;
        Some(Self {
            sender,
            receiver,
            checksum,
            peer,
        })
    }
}

fn settle_checksum(sender: &mut RpcSender, receiver: &mut RpcReceiver, on: bool) -> Checksum {
    let c = if on {
        Checksum::Crc32c
    } else {
        Checksum::Crc32
    };
    sender.set_checksum(c);
    receiver.set_checksum(c);
    c
}

/// The proxy's side.
#[derive(Debug)]
pub struct ClientHandshake {
    p: HandshakeParams,
    ours: RpcNonce,
    sender: RpcSender,
    receiver: RpcReceiver,
    state: State,
    result: Option<(Checksum, Handshake)>,
}

impl ClientHandshake {
    /// Validates the inputs and appends our clear RPC_NONCE packet to `out`.
    pub fn start(p: HandshakeParams, out: &mut Vec<u8>) -> Result<Self, HandshakeError> {
        let key_select = check_secret(&p)?;
        let ours = RpcNonce {
            key_select,
            schema: CRYPTO_SCHEMA_AES,
            ts: p.now,
            nonce: p.nonce,
        };
        let mut sender = RpcSender::new();
        sender.send(&ours.to_bytes(), out);
        Ok(Self {
            p,
            ours,
            sender,
            receiver: RpcReceiver::new(),
            state: State::AwaitNonce,
            result: None,
        })
    }

    /// Feeds bytes from the middle proxy, appending our answers to `out`;
    /// `Ok(true)` once the link is established.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, HandshakeError> {
        self.receiver.feed(input);
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::AwaitNonce => {
                    let Some(pkt) = self.receiver.next_packet()? else {
                        return Ok(false);
                    };
                    let theirs = RpcNonce::parse(&pkt)?;
                    check_peer_nonce(&self.p, self.ours.key_select, &theirs)?;
                    let k = KdfInput {
                        nonce_srv: theirs.nonce,
                        nonce_clt: self.ours.nonce,
                        clt_ts: self.ours.ts,
                        clt: self.p.proxy_addr,
                        srv: self.p.me_addr,
                        proxy_secret: &self.p.proxy_secret,
                    };
                    let ((wk, wiv), (rk, riv)) = keys(&k, true)?;
                    self.sender.start_encryption(&wk, &wiv);
                    self.receiver.start_decryption(&rk, &riv);
                    let peer_pid = pid_bytes(self.p.me_addr, 0, 0);
                    let hs = handshake_payload(flags(self.p.crc32c), &self.p.pid, &peer_pid);
                    self.sender.send(&hs, out);
                    self.state = State::AwaitHandshake;
                }
                State::AwaitHandshake => {
                    let Some(pkt) = self.receiver.next_packet()? else {
                        return Ok(false);
                    };
                    let peer = Handshake::parse(&pkt)?;
                    let on = self.p.crc32c && peer.flags & HANDSHAKE_FLAG_CRC32C != 0;
                    let c = settle_checksum(&mut self.sender, &mut self.receiver, on);
                    self.result = Some((c, peer));
                    self.state = State::Done;
                }
            }
        }
    }

    /// The established link (`None` before `feed` returned `Ok(true)`).
    pub fn into_link(self) -> Option<RpcLink> {
        RpcLink::assemble(self.sender, self.receiver, self.result)
    }
}

/// The middle proxy's side.
#[derive(Debug)]
pub struct ServerHandshake {
    p: HandshakeParams,
    key_select: [u8; 4],
    sender: RpcSender,
    receiver: RpcReceiver,
    state: State,
    result: Option<(Checksum, Handshake)>,
    reject: Option<i32>,
}

impl ServerHandshake {
    /// Validates the inputs; nothing is sent before the proxy's nonce.
    pub fn new(p: HandshakeParams) -> Result<Self, HandshakeError> {
        let key_select = check_secret(&p)?;
        Ok(Self {
            p,
            key_select,
            sender: RpcSender::new(),
            receiver: RpcReceiver::new(),
            state: State::AwaitNonce,
            result: None,
            reject: None,
        })
    }

    /// Answers the proxy's RPC_HANDSHAKE with RPC_HANDSHAKE_ERROR `code`
    /// instead (a refusing middle proxy); `feed` then appends that packet and
    /// returns [`RpcError::HandshakeRejected`].
    pub fn reject_with(&mut self, code: i32) {
        self.reject = Some(code);
    }

    /// Feeds bytes from the proxy, appending our answers to `out`;
    /// `Ok(true)` once the link is established.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, HandshakeError> {
        self.receiver.feed(input);
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::AwaitNonce => {
                    let Some(pkt) = self.receiver.next_packet()? else {
                        return Ok(false);
                    };
                    let theirs = RpcNonce::parse(&pkt)?;
                    check_peer_nonce(&self.p, self.key_select, &theirs)?;
                    let ours = RpcNonce {
                        key_select: self.key_select,
                        schema: CRYPTO_SCHEMA_AES,
                        ts: self.p.now,
                        nonce: self.p.nonce,
                    };
                    self.sender.send(&ours.to_bytes(), out);
                    // The KDF is the proxy's view: its nonce and crypto_ts are "clt".
                    let k = KdfInput {
                        nonce_srv: ours.nonce,
                        nonce_clt: theirs.nonce,
                        clt_ts: theirs.ts,
                        clt: self.p.proxy_addr,
                        srv: self.p.me_addr,
                        proxy_secret: &self.p.proxy_secret,
                    };
                    let ((wk, wiv), (rk, riv)) = keys(&k, false)?;
                    self.sender.start_encryption(&wk, &wiv);
                    self.receiver.start_decryption(&rk, &riv);
                    self.state = State::AwaitHandshake;
                }
                State::AwaitHandshake => {
                    let Some(pkt) = self.receiver.next_packet()? else {
                        return Ok(false);
                    };
                    let peer = Handshake::parse(&pkt)?;
                    if let Some(code) = self.reject {
                        self.sender
                            .send(&handshake_error_payload(code, &self.p.pid), out);
                        return Err(RpcError::HandshakeRejected(code).into());
                    }
                    let on = self.p.crc32c && peer.flags & HANDSHAKE_FLAG_CRC32C != 0;
                    // The answer echoes the proxy's PID as the peer PID (a
                    // client may check it) and is itself still CRC-32.
                    let hs = handshake_payload(flags(on), &self.p.pid, &peer.sender_pid);
                    self.sender.send(&hs, out);
                    let c = settle_checksum(&mut self.sender, &mut self.receiver, on);
                    self.result = Some((c, peer));
                    self.state = State::Done;
                }
            }
        }
    }

    /// The established link (`None` before `feed` returned `Ok(true)`).
    pub fn into_link(self) -> Option<RpcLink> {
        RpcLink::assemble(self.sender, self.receiver, self.result)
    }
}
