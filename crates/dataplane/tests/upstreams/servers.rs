//! Real proxy servers for the upstream tests, always on 127.0.0.1: Debian's `microsocks`
//! (SOCKS5 + username/password), `danted` (dante-server: SOCKS4/4a and SOCKS5) and
//! `ss-server` (shadowsocks-libev, AEAD), started as child processes and killed on drop; a
//! Shadowsocks 2022 server run in-process with the `shadowsocks` crate's server side; and
//! misbehaving fake SOCKS servers written here (silent, garbage replies).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Finds `name` on PATH (also /usr/sbin, where Debian puts danted). Missing: a hard failure
/// unless `MTPROXYD_SKIP_EXTERNAL` is set (then `None` with a printed notice: the test skips).
pub fn require_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/local/sbin".into());
    if let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(p);
    }
    testkit::external::missing(
        &format!("`{name}` (not on PATH)"),
        "run scripts/install-test-deps.sh (apt-get install microsocks dante-server shadowsocks-libev)",
    );
    None
}

/// A loopback port held by a bound but not listening socket: connections to it are refused,
/// and no other test can take it until the guard is dropped.
pub fn refusing_port() -> (u16, socket2::Socket) {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    s.bind(&addr.into()).expect("bind");
    let port = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local addr")
        .port();
    (port, s)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child server process, killed (by its own handle) on drop.
pub struct Proc {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn spawn(
    cmd: &mut Command,
    addr: SocketAddr,
    what: &str,
    dir: Option<tempfile::TempDir>,
) -> Proc {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    wait_listening(addr, &mut child, what).await;
    Proc { child, _dir: dir }
}

/// `microsocks -i 127.0.0.1 -p P [-u U -P PW]`.
pub async fn microsocks(port: u16, creds: Option<(&str, &str)>) -> Option<Proc> {
    let bin = require_binary("microsocks")?;
    let mut cmd = Command::new(bin);
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((u, p)) = creds {
        cmd.args(["-u", u, "-P", p]);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Some(spawn(&mut cmd, addr, "microsocks", None).await)
}

/// `danted` in the foreground with a minimal config: no authentication (SOCKS4 has none),
/// everything from and to loopback allowed.
pub async fn dante(port: u16) -> Option<Proc> {
    let bin = require_binary("danted")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("sockd.conf");
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
             clientmethod: none\nsocksmethod: none\nuser.unprivileged: nobody\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n"
        ),
    )
    .expect("write sockd.conf");
    let mut cmd = Command::new(bin);
    cmd.arg("-f").arg(&conf).args(["-N", "1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Some(spawn(&mut cmd, addr, "danted", Some(dir)).await)
}

/// `ss-server -s 127.0.0.1 -p P -k K -m METHOD`.
pub async fn ss_server(port: u16, key: &str, method: &str) -> Option<Proc> {
    let bin = require_binary("ss-server")?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "-s",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-k",
        key,
        "-m",
        method,
    ]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Some(spawn(&mut cmd, addr, "ss-server", None).await)
}

/// A Shadowsocks server in-process (the `shadowsocks` crate's server side), any cipher the
/// crate supports (used for the 2022 edition).
pub struct SsServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn ss_in_process(url: &str) -> SsServer {
    use shadowsocks::config::{ServerConfig, ServerType};
    use shadowsocks::context::Context;
    use shadowsocks::relay::Address;
    use shadowsocks::ProxyListener;

    let cfg = ServerConfig::from_url(url).expect("ss url");
    let ctx = Context::new_shared(ServerType::Server);
    let listener = ProxyListener::bind(ctx, &cfg).await.expect("ss bind");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(target) = stream.handshake().await else {
                    return;
                };
                let Address::SocketAddress(target) = target else {
                    return;
                };
                let Ok(mut out) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut out).await;
            });
        }
    });
    SsServer { task }
}

/// How a fake SOCKS server misbehaves.
#[derive(Clone, Copy)]
pub enum Fake {
    /// Accepts and never answers.
    Silent,
    /// Answers every request with bytes that are not SOCKS.
    Garbage,
}

/// A misbehaving SOCKS server; returns its address and how many connections it saw.
pub async fn fake_socks(kind: Fake) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                match kind {
                    Fake::Silent => {
                        let _ = s.read(&mut buf).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Fake::Garbage => {
                        let _ = s.read(&mut buf).await;
                        let _ =
                            tokio::io::AsyncWriteExt::write_all(&mut s, b"HTTP/1.1 400 x\r\n\r\n")
                                .await;
                    }
                }
            });
        }
    });
    (addr, task)
}
