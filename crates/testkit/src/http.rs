//! A deliberately small HTTP/1.1 client: one keep-alive connection, `Content-Length` or
//! `chunked` response bodies, JSON helpers. Enough to talk to the control-plane API exactly
//! as curl would, without pulling an HTTP stack into the tests.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client errors.
#[derive(Debug)]
pub enum HttpError {
    /// Socket error (including the peer closing mid-response).
    Io(io::Error),
    /// The response could not be parsed.
    Protocol(String),
    /// No complete response within the deadline.
    Timeout,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
            Self::Timeout => f.write_str("timeout"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header (name lowercased, value trimmed) pairs in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::Protocol(format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            ))
        })
    }

    /// Body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection to `addr`. Reconnects transparently when the server closed it.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
    /// Extra headers sent with every request (e.g. `Authorization`).
    pub default_headers: Vec<(String, String)>,
}

impl HttpClient {
    /// A client for `addr`; connects lazily.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            timeout: Duration::from_secs(10),
            default_headers: Vec::new(),
        }
    }

    /// Per-request deadline (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<HttpResponse, HttpError> {
        self.request("GET", path, &[], None).await
    }

    /// `DELETE path`.
    pub async fn delete(&mut self, path: &str) -> Result<HttpResponse, HttpError> {
        self.request("DELETE", path, &[], None).await
    }

    /// `method path` with a JSON body.
    pub async fn send_json(
        &mut self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<HttpResponse, HttpError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| HttpError::Protocol(format!("cannot encode body: {e}")))?;
        self.request(
            method,
            path,
            &[("Content-Type", "application/json")],
            Some(&bytes),
        )
        .await
    }

    /// Sends one request and reads its response. A request on a reused connection that fails
    /// before any response byte arrives is retried once on a fresh connection (the server may
    /// have closed an idle keep-alive connection).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, HttpError> {
        let wire = self.encode(method, path, headers, body);
        let reused = self.stream.is_some();
        match tokio::time::timeout(self.timeout, self.round_trip(&wire)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(RoundTripError::BeforeResponse(_))) if reused => {
                self.stream = None;
                match tokio::time::timeout(self.timeout, self.round_trip(&wire)).await {
                    Ok(r) => r.map_err(RoundTripError::into_http),
                    Err(_) => {
                        self.stream = None;
                        Err(HttpError::Timeout)
                    }
                }
            }
            Ok(Err(e)) => Err(e.into_http()),
            Err(_) => {
                self.stream = None;
                Err(HttpError::Timeout)
            }
        }
    }

    fn encode(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (n, v) in &self.default_headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let body = body.unwrap_or(&[]);
        if !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(body);
        wire
    }

    async fn round_trip(&mut self, wire: &[u8]) -> Result<HttpResponse, RoundTripError> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| RoundTripError::Fatal(e.into()))?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        let result = self.exchange(wire).await;
        match &result {
            Ok(resp) => {
                let close = resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if close {
                    self.stream = None;
                }
            }
            Err(_) => self.stream = None,
        }
        result
    }

    async fn exchange(&mut self, wire: &[u8]) -> Result<HttpResponse, RoundTripError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(RoundTripError::Fatal(HttpError::Protocol(
                "no connection".into(),
            )));
        };
        stream
            .write_all(wire)
            .await
            .map_err(|e| RoundTripError::BeforeResponse(e.into()))?;
        let buf = &mut self.buf;
        // Head.
        let head_end = loop {
            if let Some(pos) = find(buf, b"\r\n\r\n") {
                break pos + 4;
            }
            let n = read_more(stream, buf).await.map_err(|e| {
                if buf.is_empty() {
                    RoundTripError::BeforeResponse(e)
                } else {
                    RoundTripError::Fatal(e)
                }
            })?;
            if n == 0 {
                let e = HttpError::Io(io::ErrorKind::UnexpectedEof.into());
                return Err(if buf.is_empty() {
                    RoundTripError::BeforeResponse(e)
                } else {
                    RoundTripError::Fatal(e)
                });
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| RoundTripError::Fatal(HttpError::Protocol("non-UTF-8 head".into())))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                RoundTripError::Fatal(HttpError::Protocol(format!(
                    "bad status line {status_line:?}"
                )))
            })?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect();
        buf.drain(..head_end);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let body = if chunked {
            read_chunked(stream, buf)
                .await
                .map_err(RoundTripError::Fatal)?
        } else {
            let len = match get("content-length") {
                Some(v) => v.parse::<usize>().map_err(|_| {
                    RoundTripError::Fatal(HttpError::Protocol(format!("bad content-length {v}")))
                })?,
                None => 0,
            };
            // Bytes already buffered, then read the rest straight into the body (large list
            // responses must not be copied around; no pipelining, so nothing follows).
            let have = buf.len().min(len);
            let mut body = Vec::with_capacity(len);
            body.extend_from_slice(&buf[..have]);
            buf.drain(..have);
            while body.len() < len {
                let remaining = (len - body.len()) as u64;
                let n = (&mut *stream)
                    .take(remaining)
                    .read_buf(&mut body)
                    .await
                    .map_err(|e| RoundTripError::Fatal(e.into()))?;
                if n == 0 {
                    return Err(RoundTripError::Fatal(HttpError::Io(
                        io::ErrorKind::UnexpectedEof.into(),
                    )));
                }
            }
            body
        };
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

enum RoundTripError {
    /// Failed before any response byte: safe to retry on a new connection.
    BeforeResponse(HttpError),
    Fatal(HttpError),
}

impl RoundTripError {
    fn into_http(self) -> HttpError {
        match self {
            Self::BeforeResponse(e) | Self::Fatal(e) => e,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HttpError> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = find(buf, b"\r\n") {
                break p;
            }
            if read_more(stream, buf).await? == 0 {
                return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        };
        let size_text = std::str::from_utf8(&buf[..line_end])
            .map_err(|_| HttpError::Protocol("bad chunk size".into()))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Protocol(format!("bad chunk size {size_text:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(p) = find(buf, b"\r\n") {
                    let empty = p == 0;
                    buf.drain(..p + 2);
                    if empty {
                        return Ok(body);
                    }
                    continue;
                }
                if read_more(stream, buf).await? == 0 {
                    return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
        while buf.len() < size + 2 {
            if read_more(stream, buf).await? == 0 {
                return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(responses: Vec<&'static [u8]>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            for r in responses {
                let mut seen = Vec::new();
                let mut b = [0u8; 1024];
                while find(&seen, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&b[..n]);
                }
                s.write_all(r).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn content_length_and_chunked_on_one_connection() {
        let addr = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\n{\"ok\":true}",
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        ])
        .await;
        let mut c = HttpClient::new(addr);
        let r = c.get("/x").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.json().unwrap()["ok"], true);
        let r = c.get("/y").await.unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json().unwrap()["a"], 1);
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let addr = serve_once(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"]).await;
        let mut c = HttpClient::new(addr).with_timeout(Duration::from_secs(2));
        assert!(c.get("/").await.is_err());
    }
}
