//! `MeClient`: the proxy's side of one ME link, for tests of [`super::TestMe`]
//! (and, later, of anything else that claims to be a middle proxy).
//!
//! Owns: connecting, the client handshake (`proto::me::ClientHandshake`),
//! sending RPC messages (optionally tampered) and receiving the middle
//! proxy's messages with automatic pong replies. Must not: pool links or map
//! clients (that is the data plane's job).
//!
//! ```text
//!  MeClient ── TCP ── nonce (clear) ⇄ ── handshake (CBC) ⇄ ── PROXY_REQ ► / ◄ PROXY_ANS …
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::me::{
    close_conn_payload, pid_bytes, pong_payload, write_proxy_req_header, Checksum, ClientHandshake,
    HandshakeError, HandshakeParams, MeMessage, RpcError, RpcLink,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default per-operation timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the test driver.
#[derive(Debug, thiserror::Error)]
pub enum MeClientError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The middle proxy closed the link.
    #[error("closed by the middle proxy")]
    Closed,
    /// The handshake failed on our side.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A frame or message from the middle proxy was invalid.
    #[error("rpc: {0}")]
    Rpc(#[from] RpcError),
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct MeClientOptions {
    /// The proxy secret.
    pub proxy_secret: Vec<u8>,
    /// Offer CRC-32C.
    pub crc32c: bool,
    /// Our address for the KDF; `None` = the socket's local address (no NAT).
    pub kdf_addr: Option<SocketAddr>,
    /// Per-operation timeout.
    pub timeout: Duration,
}

impl MeClientOptions {
    /// CRC-32C offered, no NAT, [`DEFAULT_TIMEOUT`].
    pub fn new(proxy_secret: Vec<u8>) -> Self {
        Self {
            proxy_secret,
            crc32c: true,
            kdf_addr: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// One message from the middle proxy with its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The parsed message (ranges index `payload`).
    pub msg: MeMessage,
    /// The whole packet payload.
    pub payload: Vec<u8>,
}

impl Received {
    /// `(conn_id, data)` when this is an RPC_PROXY_ANS.
    pub fn answer(&self) -> Option<(u64, &[u8])> {
        match &self.msg {
            MeMessage::ProxyAns { conn_id, data, .. } => {
                Some((*conn_id, self.payload.get(data.clone())?))
            }
            _ => None,
        }
    }
}

/// An established ME link, client side.
pub struct MeClient {
    stream: TcpStream,
    link: RpcLink,
    timeout: Duration,
    local: SocketAddr,
}

impl std::fmt::Debug for MeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeClient")
            .field("local", &self.local)
            .field("checksum", &self.link.checksum)
            .finish()
    }
}

impl MeClient {
    /// Connects and completes the handshake.
    pub async fn connect(addr: SocketAddr, opts: MeClientOptions) -> Result<Self, MeClientError> {
        let t = opts.timeout;
        let mut stream = tokio::time::timeout(t, TcpStream::connect(addr))
            .await
            .map_err(|_| MeClientError::Timeout)??;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let params = HandshakeParams {
            proxy_secret: opts.proxy_secret,
            proxy_addr: opts.kdf_addr.unwrap_or(local),
            me_addr: addr,
            now,
            nonce: rand::random(),
            crc32c: opts.crc32c,
            pid: pid_bytes(local, std::process::id() as u16, now),
            max_skew_secs: Some(proto::me::handshake::MAX_CLOCK_SKEW_SECS),
        };
        let mut out = Vec::new();
        let mut hs = ClientHandshake::start(params, &mut out)?;
        let mut buf = vec![0u8; 4096];
        let run = async {
            loop {
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(MeClientError::Closed);
                }
                if hs.feed(&buf[..n], &mut out)? {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(t, run)
            .await
            .map_err(|_| MeClientError::Timeout)??;
        let link = hs.into_link().ok_or(MeClientError::Closed)?;
        Ok(Self {
            stream,
            link,
            timeout: t,
            local,
        })
    }

    /// Our socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The data-packet checksum the handshake settled on.
    pub fn checksum(&self) -> Checksum {
        self.link.checksum
    }

    /// Sends one RPC payload.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), MeClientError> {
        self.send_tampered(payload, |_| {}).await
    }

    /// Sends one RPC payload after `tamper` rewrote the plaintext packet.
    pub async fn send_tampered(
        &mut self,
        payload: &[u8],
        tamper: impl FnOnce(&mut [u8]),
    ) -> Result<(), MeClientError> {
        let mut out = Vec::new();
        self.link.sender.send_tampered(payload, &mut out, tamper);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Sends an RPC_PROXY_REQ carrying one client packet.
    pub async fn send_proxy_req(
        &mut self,
        flags: u32,
        conn_id: u64,
        client: SocketAddr,
        ours: SocketAddr,
        ad_tag: Option<&[u8; 16]>,
        packet: &[u8],
    ) -> Result<(), MeClientError> {
        let mut p = Vec::with_capacity(84 + packet.len());
        write_proxy_req_header(flags, conn_id, client, ours, ad_tag, &mut p);
        p.extend_from_slice(packet);
        self.send(&p).await
    }

    /// Sends RPC_CLOSE_CONN.
    pub async fn close_conn(&mut self, conn_id: u64) -> Result<(), MeClientError> {
        self.send(&close_conn_payload(conn_id)).await
    }

    /// Next message from the middle proxy; pings are answered and skipped.
    pub async fn recv(&mut self) -> Result<Received, MeClientError> {
        let t = self.timeout;
        tokio::time::timeout(t, self.recv_inner())
            .await
            .map_err(|_| MeClientError::Timeout)?
    }

    async fn recv_inner(&mut self) -> Result<Received, MeClientError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(payload) = self.link.receiver.next_packet()? {
                let msg = MeMessage::parse(&payload)?;
                if let MeMessage::Ping { ping_id } = msg {
                    self.send(&pong_payload(ping_id)).await?;
                    continue;
                }
                return Ok(Received { msg, payload });
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(MeClientError::Closed);
            }
            self.link.receiver.feed(&buf[..n]);
        }
    }
}
