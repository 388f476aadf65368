//! A loopback HTTP/1.1 server standing in for `core.telegram.org`'s
//! getProxySecret / getProxyConfig / getProxyConfigV6 (docs/PROTOCOL.md §7.1),
//! for tests of the proxy's download, cache and refresh of its ME inputs.
//!
//! Owns: one [`Reply`] per path (a body, a status with or without a body, or
//! a hang), the `Date` header it sends (the server's clock, shifted on demand),
//! and per-path request counts. Must not: listen beyond 127.0.0.1, keep connections alive
//! (each answer closes its connection), or parse more than the request line.
//!
//! ```text
//!  GET /getProxySecret HTTP/1.1      ─►  HTTP/1.1 200 OK
//!                                        Date: Tue, 03 Nov 2026 10:00:00 GMT
//!                                        Content-Length: 128
//!                                        Connection: close
//!                                        <body>
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Path of the proxy secret (as on core.telegram.org).
pub const SECRET_PATH: &str = "/getProxySecret";
/// Path of the IPv4 proxy config.
pub const CONFIG_V4_PATH: &str = "/getProxyConfig";
/// Path of the IPv6 proxy config.
pub const CONFIG_V6_PATH: &str = "/getProxyConfigV6";

/// Longest request head read before answering 400.
const MAX_HEAD: usize = 8 * 1024;

/// What the server answers on one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `200 OK` with this body (an empty one is a valid reply too).
    Body(Vec<u8>),
    /// This status with an empty body.
    Status(u16),
    /// This status with this body (a config served with a non-2xx status).
    StatusBody(u16, Vec<u8>),
    /// Read the request, then never answer (until the client goes away).
    Hang,
}

#[derive(Debug)]
struct Shared {
    replies: HashMap<String, Reply>,
    /// `None`: no `Date` header; `Some(s)`: the local clock shifted by `s` seconds.
    date_offset_secs: Option<i64>,
    requests: HashMap<String, usize>,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct MeHttpFiles {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl MeHttpFiles {
    /// Binds 127.0.0.1 on an ephemeral port. Every path answers 404 until set.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            replies: HashMap::new(),
            date_offset_secs: Some(0),
            requests: HashMap::new(),
        }));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sets the answer for `path` (from the next request on).
    pub fn set(&self, path: &str, reply: Reply) {
        self.lock().replies.insert(path.to_owned(), reply);
    }

    /// Serves the same body on `path` (shorthand for [`Reply::Body`]).
    pub fn set_body(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.set(path, Reply::Body(body.into()));
    }

    /// `Date` header: the local clock shifted by `offset_secs`, or none at all.
    pub fn set_date_offset(&self, offset_secs: Option<i64>) {
        self.lock().date_offset_secs = offset_secs;
    }

    /// Requests seen on `path` so far (counted when the request head is read).
    pub fn requests(&self, path: &str) -> usize {
        self.lock().requests.get(path).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic in a test thread must not hide the state from the others.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for MeHttpFiles {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = serve(stream, shared).await;
        });
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return answer(&mut stream, 400, b"", None).await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_owned();
    let (reply, date) = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        *s.requests.entry(path.clone()).or_insert(0) += 1;
        let date = s.date_offset_secs.map(|off| http_date(unix_now() + off));
        (s.replies.get(&path).cloned(), date)
    };
    match (method, reply) {
        ("GET", Some(Reply::Body(body))) => answer(&mut stream, 200, &body, date).await,
        ("GET", Some(Reply::Status(code))) => answer(&mut stream, code, b"", date).await,
        ("GET", Some(Reply::StatusBody(code, body))) => {
            answer(&mut stream, code, &body, date).await
        }
        ("GET", Some(Reply::Hang)) => {
            // Hold the connection until the client gives up.
            while stream.read(&mut buf).await? > 0 {}
            Ok(())
        }
        ("GET", None) => answer(&mut stream, 404, b"", date).await,
        _ => answer(&mut stream, 405, b"", date).await,
    }
}

async fn answer(
    stream: &mut TcpStream,
    code: u16,
    body: &[u8],
    date: Option<String>,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(code),
        body.len()
    );
    if let Some(d) = date {
        out.push_str(&format!("Date: {d}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix_secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_match_known_instants() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[tokio::test]
    async fn serves_counts_and_fails_on_demand() {
        let srv = MeHttpFiles::start().await.expect("start");
        srv.set_body(SECRET_PATH, b"abc".to_vec());
        srv.set(CONFIG_V4_PATH, Reply::Status(500));
        let addr = srv.addr();
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path}?x=1 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get(SECRET_PATH).await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\r\nDate: ") && ok.ends_with("\r\n\r\nabc"),
            "{ok}"
        );
        assert!(get(CONFIG_V4_PATH).await.starts_with("HTTP/1.1 500 "));
        srv.set(CONFIG_V4_PATH, Reply::StatusBody(203, b"xyz".to_vec()));
        let with_body = get(CONFIG_V4_PATH).await;
        assert!(
            with_body.starts_with("HTTP/1.1 203 ") && with_body.ends_with("\r\n\r\nxyz"),
            "{with_body}"
        );
        srv.set_date_offset(None);
        let missing = get(CONFIG_V6_PATH).await;
        assert!(missing.starts_with("HTTP/1.1 404 ") && !missing.contains("Date:"));
        assert_eq!(srv.requests(SECRET_PATH), 1);
        assert_eq!(srv.requests(CONFIG_V4_PATH), 2);
        assert_eq!(srv.requests(CONFIG_V6_PATH), 1);
    }
}
