//! Protocol-level test client for an MTProto proxy: classic (abridged / intermediate tags),
//! secure (`dd`, padded intermediate) and fake-TLS (`ee`), built from docs/PROTOCOL.md alone (no
//! `proto` dependency), plus helpers to craft active-probe traffic.
//!
//! A [`TestConn`] carries an opaque byte stream: `send` encrypts (and wraps into TLS records in
//! ee mode), `recv_exact` returns decrypted bytes. Framing is the caller's business, with
//! [`TestConn::send_packet`] / [`TestConn::recv_packet`] as a convenience.

pub mod faketls;
pub mod obfs;
pub mod probe;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::StreamCipher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub use faketls::HelloShape;
pub use obfs::Tag;

/// Client transport to use.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Classic secret, abridged tag (`ef`).
    Abridged,
    /// Classic secret, intermediate tag (`ee`).
    Intermediate,
    /// `dd` secret: padded intermediate tag.
    Secure,
    /// `ee` secret: fake-TLS, then obfuscated2 inside records.
    Tls(TlsOptions),
}

impl Mode {
    /// The protocol tag carried in the obfuscated2 init.
    pub fn tag(&self) -> Tag {
        match self {
            Self::Abridged => Tag::Abridged,
            Self::Intermediate => Tag::Intermediate,
            Self::Secure => Tag::Padded,
            Self::Tls(o) => o.inner_tag,
        }
    }
}

/// Knobs of the fake-TLS handshake (§4, §12).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// SNI host name (`None`: no SNI extension).
    pub sni: Option<String>,
    /// ClientHello layout.
    pub shape: HelloShape,
    /// Send the fake ChangeCipherSpec record before the first data record.
    pub send_ccs: bool,
    /// Send the 64-byte init in the same record as the first data (`true`, tdlib/Kurigram) or in
    /// its own record right after the handshake (`false`, ferogram/TelethonFakeTLS).
    pub init_merged: bool,
    /// ALPN protocols offered (empty: no ALPN extension).
    pub alpn: Vec<String>,
    /// Tag inside TLS (normally padded).
    pub inner_tag: Tag,
    /// Timestamp to embed (`None`: now).
    pub timestamp: Option<u32>,
    /// Flip one digest byte after signing (an active probe that does not know the secret).
    pub corrupt_digest: bool,
    /// Max payload per client → proxy record.
    pub record_payload: usize,
}

impl TlsOptions {
    /// tdlib-like defaults: large hello, CCS, init merged with data, ALPN h2 + http/1.1.
    pub fn new(sni: &str) -> Self {
        Self {
            sni: Some(sni.to_owned()),
            shape: HelloShape::Large,
            send_ccs: true,
            init_merged: true,
            alpn: vec!["h2".into(), "http/1.1".into()],
            inner_tag: Tag::Padded,
            timestamp: None,
            corrupt_digest: false,
            record_payload: 2878,
        }
    }
}

/// Client errors.
#[derive(Debug)]
pub enum ClientError {
    /// Socket error.
    Io(io::Error),
    /// The peer closed the stream.
    Eof,
    /// No answer in time.
    Timeout,
    /// In ee mode the first answer was not a ServerHello (e.g. the mask server's bytes); holds
    /// what was received.
    NotServerHello(Vec<u8>),
    /// ServerHello digest did not verify.
    BadServerDigest,
    /// Malformed data from the peer.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Eof => f.write_str("peer closed the connection"),
            Self::Timeout => f.write_str("timed out"),
            Self::NotServerHello(b) => write!(
                f,
                "expected a ServerHello, got {} bytes: {:?}",
                b.len(),
                String::from_utf8_lossy(&b[..b.len().min(64)])
            ),
            Self::BadServerDigest => f.write_str("ServerHello digest mismatch"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Eof
        } else {
            Self::Io(e)
        }
    }
}

/// Default read timeout of a connection.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

/// Entry points.
#[derive(Debug)]
pub struct TestClient;

impl TestClient {
    /// Connects to a proxy with a user `secret`, asking for DC `dc`.
    pub async fn connect(
        addr: SocketAddr,
        mode: Mode,
        secret: [u8; 16],
        dc: i16,
    ) -> Result<TestConn, ClientError> {
        Self::connect_after(addr, &[], mode, secret, dc).await
    }

    /// [`Self::connect`] after sending `prefix` as is (a PROXY protocol header, like a load
    /// balancer in front of the proxy would).
    pub async fn connect_after(
        addr: SocketAddr,
        prefix: &[u8],
        mode: Mode,
        secret: [u8; 16],
        dc: i16,
    ) -> Result<TestConn, ClientError> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        if !prefix.is_empty() {
            stream.write_all(prefix).await?;
        }
        match mode {
            Mode::Tls(opts) => connect_tls(stream, opts, secret, dc).await,
            m => {
                let init = obfs::new_init(m.tag(), dc, Some(&secret));
                finish_plain(stream, m.tag(), init).await
            }
        }
    }

    /// Connects straight to a DC-side peer (a `TestDc`): obfuscated2 without a secret (§6.3),
    /// the way a proxy links to a DC. Used for no-proxy baselines.
    pub async fn connect_dc(addr: SocketAddr, tag: Tag, dc: i16) -> Result<TestConn, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        finish_plain(stream, tag, obfs::new_init(tag, dc, None)).await
    }
}

async fn finish_plain(
    mut stream: TcpStream,
    tag: Tag,
    init: obfs::SenderInit,
) -> Result<TestConn, ClientError> {
    stream.write_all(&init.wire).await?;
    let (rd, wr) = stream.into_split();
    Ok(TestConn {
        reader: ConnReader::new(rd, init.dec, false, tag),
        writer: ConnWriter {
            wr,
            enc: init.enc,
            tls: None,
            tag,
        },
        init_wire: init.wire,
        client_hello: None,
        server_hello: None,
    })
}

fn now_ts() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

async fn connect_tls(
    mut stream: TcpStream,
    opts: TlsOptions,
    secret: [u8; 16],
    dc: i16,
) -> Result<TestConn, ClientError> {
    let alpn: Vec<&str> = opts.alpn.iter().map(String::as_str).collect();
    let mut hello = faketls::client_hello_template(opts.sni.as_deref(), &alpn, opts.shape);
    let digest =
        faketls::sign_client_hello(&secret, &mut hello, opts.timestamp.unwrap_or_else(now_ts));
    if opts.corrupt_digest {
        hello[11] ^= 0x5a;
    }
    stream.write_all(&hello).await?;
    let response = timed(DEFAULT_TIMEOUT, read_server_hello(&mut stream)).await?;
    if !faketls::verify_server_hello(&secret, &digest, &response) {
        return Err(ClientError::BadServerDigest);
    }
    let init = obfs::new_init(opts.inner_tag, dc, Some(&secret));
    let (rd, wr) = stream.into_split();
    let mut writer = ConnWriter {
        wr,
        enc: init.enc,
        tls: Some(TlsWrite {
            pending_init: Some(init.wire),
            ccs_pending: opts.send_ccs,
            record_payload: opts.record_payload,
        }),
        tag: opts.inner_tag,
    };
    if !opts.init_merged {
        writer.flush_init().await?;
    }
    Ok(TestConn {
        reader: ConnReader::new(rd, init.dec, true, opts.inner_tag),
        writer,
        init_wire: init.wire,
        client_hello: Some(hello),
        server_hello: Some(response),
    })
}

/// Reads the three records of §4.5; on anything else returns what arrived (up to ~1 s worth).
async fn read_server_hello(stream: &mut TcpStream) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    let mut hdr = [0u8; 5];
    let n = read_up_to(stream, &mut hdr).await?;
    out.extend_from_slice(&hdr[..n]);
    if n < 5 || hdr[..3] != [0x16, 0x03, 0x03] {
        // Not a ServerHello: collect whatever else the peer sends shortly (mask server reply).
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest)).await;
        out.extend_from_slice(&rest);
        return Err(ClientError::NotServerHello(out));
    }
    for expected_type in [None, Some(0x14u8), Some(0x17u8)] {
        if let Some(t) = expected_type {
            stream.read_exact(&mut hdr).await?;
            if hdr[0] != t || hdr[1..3] != [0x03, 0x03] {
                return Err(ClientError::Protocol(format!(
                    "unexpected record header {hdr:02x?} in server flight"
                )));
            }
            out.extend_from_slice(&hdr);
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        let start = out.len();
        out.resize(start + len, 0);
        stream.read_exact(&mut out[start..]).await?;
    }
    Ok(out)
}

async fn read_up_to(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, ClientError> {
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct TlsWrite {
    pending_init: Option<[u8; 64]>,
    ccs_pending: bool,
    record_payload: usize,
}

/// Sending half of a [`TestConn`].
pub struct ConnWriter {
    wr: OwnedWriteHalf,
    enc: obfs::Ctr,
    tls: Option<TlsWrite>,
    tag: Tag,
}

impl fmt::Debug for ConnWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnWriter")
            .field("tag", &self.tag)
            .finish()
    }
}

impl ConnWriter {
    /// Encrypts and sends `data` (inside TLS records in ee mode).
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let mut plain = data.to_vec();
        self.enc.apply_keystream(&mut plain);
        self.send_encrypted(plain).await
    }

    async fn send_encrypted(&mut self, enc: Vec<u8>) -> Result<(), ClientError> {
        let Some(tls) = self.tls.as_mut() else {
            self.wr.write_all(&enc).await?;
            return Ok(());
        };
        let mut out = Vec::with_capacity(enc.len() + 128);
        if std::mem::take(&mut tls.ccs_pending) {
            out.extend_from_slice(&faketls::CCS_RECORD);
        }
        let stream = match tls.pending_init.take() {
            Some(init) => {
                let mut s = init.to_vec();
                s.extend_from_slice(&enc);
                s
            }
            None => enc,
        };
        faketls::wrap_app_data(&stream, tls.record_payload, &mut out);
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// In ee mode with the init held back for merging: sends it now in its own record.
    pub async fn flush_init(&mut self) -> Result<(), ClientError> {
        if self.tls.as_ref().is_some_and(|t| t.pending_init.is_some()) {
            self.send_encrypted(Vec::new()).await?;
        }
        Ok(())
    }

    /// Frames `payload` for this connection's tag and sends it.
    pub async fn send_packet(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.send(&obfs::frame(self.tag, payload)).await
    }

    /// Half-closes the connection (FIN).
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.wr.shutdown().await?;
        Ok(())
    }
}

/// Receiving half of a [`TestConn`].
pub struct ConnReader {
    rd: OwnedReadHalf,
    dec: obfs::Ctr,
    tls: bool,
    raw: Vec<u8>,
    plain: Vec<u8>,
    eof: bool,
    /// Timeout for each receive call.
    pub timeout: Duration,
    tag: Tag,
    /// Payload length of every application-data record received (ee mode).
    record_sizes: Vec<usize>,
}

impl fmt::Debug for ConnReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnReader")
            .field("buffered", &self.plain.len())
            .finish()
    }
}

impl ConnReader {
    fn new(rd: OwnedReadHalf, dec: obfs::Ctr, tls: bool, tag: Tag) -> Self {
        Self {
            rd,
            dec,
            tls,
            raw: Vec::new(),
            plain: Vec::new(),
            eof: false,
            timeout: DEFAULT_TIMEOUT,
            tag,
            record_sizes: Vec::new(),
        }
    }

    /// Payload lengths of the application-data records received so far (ee mode), in order.
    pub fn record_sizes(&self) -> &[usize] {
        &self.record_sizes
    }

    /// Reads more from the socket into `plain`; returns false on EOF.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        if self.eof {
            return Ok(false);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.rd.read(&mut buf).await?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        if !self.tls {
            let data = &mut buf[..n];
            self.dec.apply_keystream(data);
            self.plain.extend_from_slice(data);
            return Ok(true);
        }
        self.raw.extend_from_slice(&buf[..n]);
        while self.raw.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([self.raw[3], self.raw[4]]));
            if self.raw.len() < 5 + len {
                break;
            }
            let ty = self.raw[0];
            let mut body: Vec<u8> = self.raw.drain(..5 + len).skip(5).collect();
            match ty {
                0x17 => {
                    self.record_sizes.push(len);
                    self.dec.apply_keystream(&mut body);
                    self.plain.extend_from_slice(&body);
                }
                0x14 => {}
                0x15 => {
                    self.eof = true;
                    return Ok(!self.plain.is_empty());
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected TLS record type {other:#04x} from proxy"
                    )))
                }
            }
        }
        Ok(true)
    }

    /// Receives exactly `n` decrypted bytes.
    pub async fn recv_exact(&mut self, n: usize) -> Result<Vec<u8>, ClientError> {
        let timeout = self.timeout;
        timed(timeout, async {
            while self.plain.len() < n {
                if !self.fill().await? {
                    return Err(ClientError::Eof);
                }
            }
            Ok(self.plain.drain(..n).collect())
        })
        .await
    }

    /// Receives whatever is available next (at least one byte), or `Eof`.
    pub async fn recv_some(&mut self) -> Result<Vec<u8>, ClientError> {
        let timeout = self.timeout;
        timed(timeout, async {
            while self.plain.is_empty() {
                if !self.fill().await? {
                    return Err(ClientError::Eof);
                }
            }
            Ok(std::mem::take(&mut self.plain))
        })
        .await
    }

    /// Receives one transport packet per this connection's tag (§3), padding removed.
    pub async fn recv_packet(&mut self) -> Result<Vec<u8>, ClientError> {
        let timeout = self.timeout;
        let tag = self.tag;
        timed(timeout, async {
            loop {
                match obfs::deframe(tag, &self.plain) {
                    obfs::Deframed::Packet {
                        consumed, payload, ..
                    } => {
                        self.plain.drain(..consumed);
                        return Ok(payload);
                    }
                    obfs::Deframed::Invalid(m) => return Err(ClientError::Protocol(m)),
                    obfs::Deframed::Incomplete => {
                        if !self.fill().await? {
                            return Err(ClientError::Eof);
                        }
                    }
                }
            }
        })
        .await
    }

    /// Waits for the peer to close; returns the number of bytes discarded meanwhile.
    pub async fn wait_eof(&mut self) -> Result<usize, ClientError> {
        let timeout = self.timeout;
        timed(timeout, async {
            let mut total = 0;
            loop {
                total += std::mem::take(&mut self.plain).len();
                match self.fill().await {
                    Ok(true) => {}
                    Ok(false) => return Ok(total + std::mem::take(&mut self.plain).len()),
                    Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                        return Ok(total)
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }
}

/// An established client connection.
#[derive(Debug)]
pub struct TestConn {
    reader: ConnReader,
    writer: ConnWriter,
    init_wire: [u8; 64],
    client_hello: Option<Vec<u8>>,
    server_hello: Option<Vec<u8>>,
}

impl TestConn {
    /// The proxy's ServerHello + CCS + application-data flight as received (ee mode only).
    pub fn server_hello(&self) -> Option<&[u8]> {
        self.server_hello.as_deref()
    }

    /// See [`ConnReader::record_sizes`].
    pub fn record_sizes(&self) -> &[usize] {
        self.reader.record_sizes()
    }

    /// The 64 init bytes as sent on the wire (inside TLS in ee mode): replay probes resend them.
    pub fn init_wire(&self) -> [u8; 64] {
        self.init_wire
    }

    /// The exact ClientHello record sent (ee mode only).
    pub fn client_hello(&self) -> Option<&[u8]> {
        self.client_hello.as_deref()
    }

    /// Protocol tag in use.
    pub fn tag(&self) -> Tag {
        self.writer.tag
    }

    /// Our end of the TCP connection (what the proxy reports as the client's address).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.writer
            .wr
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Sets the per-call receive timeout.
    pub fn set_timeout(&mut self, d: Duration) {
        self.reader.timeout = d;
    }

    /// See [`ConnWriter::send`].
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.writer.send(data).await
    }

    /// See [`ConnWriter::send_packet`].
    pub async fn send_packet(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.writer.send_packet(payload).await
    }

    /// See [`ConnWriter::flush_init`].
    pub async fn flush_init(&mut self) -> Result<(), ClientError> {
        self.writer.flush_init().await
    }

    /// See [`ConnReader::recv_exact`].
    pub async fn recv_exact(&mut self, n: usize) -> Result<Vec<u8>, ClientError> {
        self.reader.recv_exact(n).await
    }

    /// See [`ConnReader::recv_some`].
    pub async fn recv_some(&mut self) -> Result<Vec<u8>, ClientError> {
        self.reader.recv_some().await
    }

    /// See [`ConnReader::recv_packet`].
    pub async fn recv_packet(&mut self) -> Result<Vec<u8>, ClientError> {
        self.reader.recv_packet().await
    }

    /// See [`ConnReader::wait_eof`].
    pub async fn wait_eof(&mut self) -> Result<usize, ClientError> {
        self.reader.wait_eof().await
    }

    /// Half-closes the connection (FIN); receiving still works.
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.writer.shutdown().await
    }

    /// Splits into independently usable halves (for full-duplex benchmarks).
    pub fn into_split(self) -> (ConnReader, ConnWriter) {
        (self.reader, self.writer)
    }
}
