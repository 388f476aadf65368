//! Throughput smoke check with 10,000 users (ignored by default; run in release):
//! `cargo test -p api --release --test perf -- --ignored --nocapture`
//! Targets: GET /v1/users >= 120 req/s at 4 clients; GET /v1/users/{u} and /v1/health
//! >= 4,000 req/s.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn big_config(n: usize) -> String {
    let mut text = config_text("");
    for i in 0..n {
        let _ = writeln!(text, "user{i:05} = \"{:032x}\"", i as u128 + 1);
    }
    text
}

async fn read_one(s: &mut TcpStream, buf: &mut Vec<u8>, tmp: &mut [u8]) -> u16 {
    buf.clear();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(tmp).await.expect("read");
        assert!(n > 0, "eof");
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    // Count the body without keeping it: the client should cost as little as possible.
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(tmp).await.expect("read");
        assert!(n > 0, "eof in body");
        have += n;
    }
    status
}

async fn measure(addr: SocketAddr, path: &str, clients: usize, dur: Duration) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let path = path.replace("{c}", &format!("{:05}", c * 997 % 10_000));
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let req = format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").into_bytes();
            let mut buf = Vec::new();
            let mut tmp = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            while started.elapsed() < dur {
                s.write_all(&req).await.expect("write");
                assert_eq!(read_one(&mut s, &mut buf, &mut tmp).await, 200);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput check; run in release"]
async fn throughput_with_10k_users() {
    let f = Fixture::with_text(&big_config(10_000));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = f.state.clone();
    tokio::spawn(async move { api::serve(listener, state, std::future::pending()).await });
    let d = Duration::from_secs(3);
    // PERF_ONLY=list|one|health runs one phase (handy under `perf stat`).
    let only = std::env::var("PERF_ONLY").unwrap_or_default();
    for (name, path) in [
        ("list", "/v1/users"),
        ("one", "/v1/users/user{c}"),
        ("health", "/v1/health"),
    ] {
        if only.is_empty() || only == name {
            let rate = measure(addr, path, 4, d).await;
            println!("GET {path}: {rate:.0} req/s");
        }
    }
}

#[test]
#[ignore = "render cost check; run in release"]
fn render_list_cost() {
    let f = Fixture::with_text(&big_config(10_000));
    let snap = f.store.current();
    let rt: &dyn api::runtime::Runtime = f.runtime.as_ref();
    let mut total = 0usize;
    let started = Instant::now();
    let n = 50;
    for _ in 0..n {
        let r = api::users::info::UserRenderer::new(&snap.config, rt);
        let mut buf = Vec::with_capacity(r.size_hint());
        r.write_list(&mut buf).expect("render");
        total += buf.len();
    }
    let per = started.elapsed() / n;
    println!(
        "render 10k users: {per:?} per list, {} bytes",
        total / n as usize
    );
}
