//! `StunResponder`: a STUN server on 127.0.0.1 for NAT-probe tests (docs/PROTOCOL.md §7.5).
//!
//! Answers RFC 5389 binding requests over UDP and TCP on the same port number with a
//! configurable reflected IP (so a test can pretend the proxy's public address is, say,
//! 203.0.113.7) and the request's real source port. Switches make either transport go
//! silent (requests are read, counted and dropped) and counters tell how many requests
//! arrived. The wire encoding here is written independently of `proto::stun`, so the two
//! check each other.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::AbortHandle;

const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

struct State {
    reflect_ip: Mutex<IpAddr>,
    silent_udp: AtomicBool,
    silent_tcp: AtomicBool,
    /// Answer with MAPPED-ADDRESS (RFC 3489 style) instead of XOR-MAPPED-ADDRESS.
    plain_mapped: AtomicBool,
    udp_requests: AtomicUsize,
    tcp_requests: AtomicUsize,
}

impl State {
    /// The answer to `req` (a whole message) from `peer`, or `None` when it is not a
    /// binding request.
    fn answer(&self, req: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        if req.len() < 20 || req[0..2] != [0x00, 0x01] || req[4..8] != COOKIE {
            return None;
        }
        let txid = &req[8..20];
        let ip = *self.reflect_ip.lock().unwrap_or_else(|e| e.into_inner());
        let plain = self.plain_mapped.load(Ordering::Relaxed);
        let (family, mut addr) = match ip {
            IpAddr::V4(v4) => (1u8, v4.octets().to_vec()),
            IpAddr::V6(v6) => (2u8, v6.octets().to_vec()),
        };
        let mut port = peer.port().to_be_bytes();
        if !plain {
            port[0] ^= COOKIE[0];
            port[1] ^= COOKIE[1];
            let key: Vec<u8> = COOKIE.iter().chain(txid).copied().collect();
            for (b, k) in addr.iter_mut().zip(key) {
                *b ^= k;
            }
        }
        let attr_type: [u8; 2] = if plain { [0x00, 0x01] } else { [0x00, 0x20] };
        let value_len = 4 + addr.len();
        let mut out = vec![0x01, 0x01, 0x00, (4 + value_len) as u8];
        out.extend_from_slice(&COOKIE);
        out.extend_from_slice(txid);
        out.extend_from_slice(&attr_type);
        out.extend_from_slice(&[0x00, value_len as u8, 0x00, family]);
        out.extend_from_slice(&port);
        out.extend_from_slice(&addr);
        Some(out)
    }
}

/// A running loopback STUN server; stops when dropped.
pub struct StunResponder {
    addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<AbortHandle>,
}

impl StunResponder {
    /// Binds UDP and TCP on one 127.0.0.1 port and answers with `reflect_ip`.
    pub async fn start(reflect_ip: IpAddr) -> io::Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(State {
            reflect_ip: Mutex::new(reflect_ip),
            silent_udp: AtomicBool::new(false),
            silent_tcp: AtomicBool::new(false),
            plain_mapped: AtomicBool::new(false),
            udp_requests: AtomicUsize::new(0),
            tcp_requests: AtomicUsize::new(0),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&state))).abort_handle(),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&state))).abort_handle(),
        ];
        Ok(Self { addr, state, tasks })
    }

    /// The port both transports listen on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as a `network.stun_servers` entry.
    pub fn server_entry(&self) -> String {
        self.addr.to_string()
    }

    /// Changes the reflected IP of later answers.
    pub fn set_reflected_ip(&self, ip: IpAddr) {
        *self
            .state
            .reflect_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = ip;
    }

    /// UDP requests are counted and dropped while set.
    pub fn set_silent_udp(&self, silent: bool) {
        self.state.silent_udp.store(silent, Ordering::Relaxed);
    }

    /// TCP requests are counted and dropped (the connection stays open) while set.
    pub fn set_silent_tcp(&self, silent: bool) {
        self.state.silent_tcp.store(silent, Ordering::Relaxed);
    }

    /// Both transports silent (or not).
    pub fn set_silent(&self, silent: bool) {
        self.set_silent_udp(silent);
        self.set_silent_tcp(silent);
    }

    /// Answer with MAPPED-ADDRESS only, as an RFC 3489 server does.
    pub fn set_plain_mapped(&self, plain: bool) {
        self.state.plain_mapped.store(plain, Ordering::Relaxed);
    }

    /// UDP binding requests received (answered or not).
    pub fn udp_requests(&self) -> usize {
        self.state.udp_requests.load(Ordering::Relaxed)
    }

    /// TCP binding requests received (answered or not).
    pub fn tcp_requests(&self) -> usize {
        self.state.tcp_requests.load(Ordering::Relaxed)
    }

    /// Both counters together.
    pub fn requests(&self) -> usize {
        self.udp_requests() + self.tcp_requests()
    }
}

impl Drop for StunResponder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback port (retried: the TCP port may be
/// taken by someone else).
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port pair")))
}

async fn serve_udp(sock: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some(answer) = state.answer(&buf[..n], peer) else {
            continue;
        };
        state.udp_requests.fetch_add(1, Ordering::Relaxed);
        if !state.silent_udp.load(Ordering::Relaxed) {
            let _ = sock.send_to(&answer, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    while let Ok((stream, peer)) = listener.accept().await {
        tokio::spawn(serve_tcp_conn(stream, peer, Arc::clone(&state)));
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, peer: SocketAddr, state: Arc<State>) {
    loop {
        let mut msg = vec![0u8; 20];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
        msg.resize(20 + len, 0);
        if stream.read_exact(&mut msg[20..]).await.is_err() {
            return;
        }
        let Some(answer) = state.answer(&msg, peer) else {
            return;
        };
        state.tcp_requests.fetch_add(1, Ordering::Relaxed);
        if !state.silent_tcp.load(Ordering::Relaxed) && stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}
