//! HTTP-level tests against `serve` on 127.0.0.1:0 with raw TCP clients: gates through the real
//! server, streaming body limit, malformed input, slow clients, concurrency and persistence.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api::ServeOptions;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(f: &Fixture, opts: ServeOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let state = f.state.clone();
        let task = tokio::spawn(async move {
            api::serve_with(
                listener,
                state,
                async {
                    let _ = rx.await;
                },
                opts,
            )
            .await
        });
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let res = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(
            matches!(res, Ok(Ok(Ok(())))),
            "serve must return after shutdown"
        );
    }
}

fn fast_opts() -> ServeOptions {
    ServeOptions {
        max_connections: 64,
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(2),
    }
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response(s: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Ok(RawResponse { status, head, body })
}

fn request(method: &str, path: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn roundtrip(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("timely response")
        .expect("response")
}

#[tokio::test]
async fn gates_over_tcp() {
    let f = Fixture::new(r#"auth_header = "Bearer tcp""#);
    let srv = Server::start(&f, fast_opts()).await;
    let r = roundtrip(srv.addr, &request("GET", "/unknown/path", "", "")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    assert!(r
        .head
        .to_ascii_lowercase()
        .contains("content-type: application/json; charset=utf-8"));
    let r = roundtrip(
        srv.addr,
        &request("GET", "/unknown/path", "Authorization: Bearer tcp\r\n", ""),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = roundtrip(
        srv.addr,
        &request(
            "PUT",
            "/v1/users/alice",
            "Authorization: Bearer tcp\r\n",
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 405);
    assert!(r.head.contains("allow: GET, PATCH, DELETE"), "{}", r.head);
    srv.stop().await;
}

#[tokio::test]
async fn whitelist_excluding_loopback_is_403_over_tcp() {
    let f = Fixture::with_text(&config_text(r#"auth_header = "x""#).replace(
        r#"whitelist = ["127.0.0.1/32", "::1/128"]"#,
        r#"whitelist = ["10.0.0.0/8", "::2/128"]"#,
    ));
    let srv = Server::start(&f, fast_opts()).await;
    // Whitelist is checked before Authorization.
    let r = roundtrip(srv.addr, &request("GET", "/v1/users", "", "")).await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    assert_eq!(r.json()["request_id"], 1);
    srv.stop().await;
}

#[tokio::test]
async fn huge_chunked_body_is_cut_off_with_413() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let s = TcpStream::connect(srv.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    const TOTAL: usize = 256 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head = "POST /v1/users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
        if wr.write_all(head.as_bytes()).await.is_err() {
            return 0usize;
        }
        let chunk = vec![b' '; 64 * 1024];
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        let mut sent = 0usize;
        while sent < TOTAL {
            match wr.write_all(&frame).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        sent
    });
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "response must arrive while the client is still sending"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    drop(rd);
    let sent = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("writer stops")
        .expect("join");
    assert!(
        sent < TOTAL / 4,
        "server must not read the whole body (sent {sent})"
    );
    assert_eq!(
        f.call("GET", "/v1/users", None)
            .await
            .assert_ok(200)
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    srv.stop().await;
}

#[tokio::test]
async fn malformed_input_over_tcp() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let r = roundtrip(
        srv.addr,
        &request("POST", "/v1/users", "", "{\"username\":"),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    assert_eq!(r.json()["error"]["message"], "Invalid JSON body");
    let r = roundtrip(
        srv.addr,
        &request(
            "PATCH",
            "/v1/users/alice",
            "Content-Type: text/plain\r\n",
            "[1,2",
        ),
    )
    .await;
    assert_eq!(r.status, 400);

    // Invalid UTF-8 bytes in the path: refused (by the HTTP parser or as an unknown route),
    // never a crash; the server keeps serving.
    let mut raw =
        b"GET /v1/users/\xff\xfe\xc3 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".to_vec();
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    s.write_all(&raw).await.expect("write");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 404") || resp.is_empty(),
        "{text}"
    );
    raw.clear();

    // 10k-character usernames: unknown user on every user route.
    let long = "u".repeat(10_000);
    let r = roundtrip(
        srv.addr,
        &request("GET", &format!("/v1/users/{long}"), "", ""),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = roundtrip(
        srv.addr,
        &request("PATCH", &format!("/v1/users/{long}"), "", "{}"),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = roundtrip(
        srv.addr,
        &request("DELETE", &format!("/v1/users/{long}"), "", ""),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let body = format!("{{\"username\":\"{long}\"}}");
    let r = roundtrip(srv.addr, &request("POST", "/v1/users", "", &body)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));

    let r = roundtrip(srv.addr, &request("GET", "/v1/health", "", "")).await;
    assert_eq!(r.status, 200);
    srv.stop().await;
}

#[tokio::test]
async fn slow_clients_are_dropped_and_others_served() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    // Half a header, then silence.
    let mut stalled = TcpStream::connect(srv.addr).await.expect("connect");
    stalled
        .write_all(b"GET /v1/users HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    // A trickler: one byte every 100 ms never completes its head in time either.
    let mut trickler = TcpStream::connect(srv.addr).await.expect("connect");
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        for b in b"GET /v1/users HTTP/1.1\r\nHost: slow-slow-slow\r\n".iter() {
            if trickler.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), trickler.read_to_end(&mut rest)).await;
        (started.elapsed(), rest)
    });
    // Others are served meanwhile.
    for _ in 0..5 {
        let r = roundtrip(srv.addr, &request("GET", "/v1/users", "", "")).await;
        assert_eq!(r.status, 200);
    }
    let started = Instant::now();
    let mut rest = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest)).await;
    assert!(res.is_ok(), "stalled client must be disconnected");
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let (elapsed, rest) = trickle.await.expect("join");
    assert!(
        elapsed < Duration::from_secs(4),
        "trickler dropped after {elapsed:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("\"ok\":true"));
    srv.stop().await;
}

#[tokio::test]
async fn keep_alive_then_idle_close() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    for _ in 0..3 {
        s.write_all(&request("GET", "/v1/health", "", ""))
            .await
            .expect("write");
        let r = read_response(&mut s).await.expect("response");
        assert_eq!(r.status, 200);
    }
    // An idle keep-alive connection is closed by the server.
    let mut rest = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(res.is_ok(), "idle connection must be closed");
    srv.stop().await;
}

#[tokio::test]
async fn connection_cap_queues_extra_clients() {
    let f = Fixture::new("");
    let opts = ServeOptions {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(800),
        ..fast_opts()
    };
    let srv = Server::start(&f, opts).await;
    let mut hog = TcpStream::connect(srv.addr).await.expect("connect");
    hog.write_all(b"GET /v1/users HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The second client is only served once the hog's slot is freed by the header timeout.
    let started = Instant::now();
    let r = roundtrip(srv.addr, &request("GET", "/v1/health", "", "")).await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    srv.stop().await;
}

#[tokio::test]
async fn parallel_creates_all_land() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let body = format!("{{\"username\":\"user{i:02}\"}}");
            roundtrip(addr, &request("POST", "/v1/users", "", &body))
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 201);
    }
    let r = roundtrip(srv.addr, &request("GET", "/v1/users", "", "")).await;
    let users = r.json()["data"].as_array().cloned().expect("array");
    assert_eq!(users.len(), 52);
    let file = f.file();
    for i in 0..50 {
        assert!(
            file.contains(&format!("user{i:02} = \"")),
            "user{i:02} missing on disk"
        );
    }
    // What is on disk is what a fresh store reads.
    let reopened = config::ConfigStore::open(&f.path).expect("reopen");
    assert_eq!(reopened.current().config.access.users.len(), 52);
    assert_eq!(reopened.current().revision, f.revision());
    srv.stop().await;
}

#[tokio::test]
async fn parallel_patches_with_same_if_match_one_wins() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let rev = f.revision();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = srv.addr;
        let extra = format!("If-Match: \"{rev}\"\r\n");
        tasks.push(tokio::spawn(async move {
            let body = format!("{{\"data_quota_bytes\":{}}}", 1000 + i);
            let r = roundtrip(addr, &request("PATCH", "/v1/users/alice", &extra, &body)).await;
            (r.status, r.code())
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.expect("join") {
            (200, _) => ok += 1,
            (409, code) if code == "revision_conflict" => conflicts += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 19));
    let file = f.file();
    assert_eq!(file.matches("alice = 10").count(), 1, "{file}");
    srv.stop().await;
}

#[tokio::test]
async fn ipv4_mapped_peer_matches_ipv4_whitelist() {
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1 (docs/DECISIONS.md #2).
    let Ok(listener) = TcpListener::bind("[::]:0").await else {
        return; // no IPv6 on this host: nothing to check
    };
    let f = Fixture::with_text(&config_text("").replace(
        r#"whitelist = ["127.0.0.1/32", "::1/128"]"#,
        r#"whitelist = ["127.0.0.1/32"]"#,
    ));
    let port = listener.local_addr().expect("addr").port();
    let state = f.state.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(api::serve_with(
        listener,
        state,
        async {
            let _ = rx.await;
        },
        fast_opts(),
    ));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    if TcpStream::connect(addr).await.is_err() {
        let _ = tx.send(());
        return; // IPV6_V6ONLY host: no mapped peers possible
    }
    let r = roundtrip(addr, &request("GET", "/v1/users", "", "")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let _ = tx.send(());
    let _ = task.await;
}

#[tokio::test]
async fn broken_chunked_framing_is_400_invalid_request_body() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let raw = b"POST /v1/users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"use\r\nzz\r\n";
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("Invalid request body"), "{text}");
    srv.stop().await;
}

/// `nc -N` style clients shut their write side after the request: the response (success or
/// conflict) must still arrive.
#[tokio::test]
async fn half_closed_requests_get_their_response() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let send_half_closed = |raw: Vec<u8>| async move {
        let mut s = TcpStream::connect(srv.addr).await.expect("connect");
        s.write_all(&raw).await.expect("write");
        s.shutdown().await.expect("shutdown(SHUT_WR)");
        tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
            .await
            .expect("timely response")
            .expect("response")
    };
    let r = send_half_closed(request("POST", "/v1/users", "", r#"{"username":"carol"}"#)).await;
    assert_eq!(r.status, 201, "{}", r.head);
    let r = send_half_closed(request(
        "PATCH",
        "/v1/users/carol",
        "If-Match: stale\r\n",
        "{}",
    ))
    .await;
    assert_eq!((r.status, r.code().as_str()), (409, "revision_conflict"));
    assert!(f.file().contains("carol"));
    srv.stop().await;
}

/// A client that writes its whole over-limit body before reading (what curl does with a
/// small upload) must read the 413, not a connection reset.
#[tokio::test]
async fn over_limit_body_written_in_full_still_reads_413() {
    let f = Fixture::new("");
    let srv = Server::start(&f, fast_opts()).await;
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    let mut raw =
        b"POST /v1/users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // 8 MiB: more than the socket buffers hold, so the write completes only if the server
    // keeps reading after it answered.
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..128 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    tokio::time::timeout(Duration::from_secs(10), s.write_all(&raw))
        .await
        .expect("the server drains what it will not parse")
        .expect("whole body written");
    let r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("timely response")
        .expect("a response, not a reset");
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    srv.stop().await;
}
