//! Control-plane API throughput against the real binary (bench profile) with 10,000 users.
//!
//! Run: `cargo bench -p mtproxyd --bench api_bench`. Each phase uses its own keep-alive
//! HTTP/1.1 clients (testkit) and reports requests per second next to its target:
//! GET /v1/users (4 clients) ≥ 120, GET /v1/users/{u} (8) ≥ 4000, GET /v1/health (8) ≥ 4000,
//! POST /v1/users sequential ≥ 100 and with 8 parallel clients ≥ 100.
//! `API_BENCH_SECS` (default 3) sets the length of the GET phases, `API_BENCH_CREATES`
//! (default 300) the number of users created per POST phase. `API_BENCH_STRICT=1` makes a
//! missed target a failing exit status.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{free_port, ConfigFixture, Daemon, HttpClient};

const USERS: usize = 10_000;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    name: &'static str,
    rate: f64,
    target: f64,
    detail: String,
}

/// `clients` tasks issue GETs produced by `path(client, i)` for `secs`; returns req/s.
async fn get_phase(
    api: SocketAddr,
    clients: usize,
    secs: u64,
    path: impl Fn(usize, u64) -> String + Send + Sync + 'static,
) -> (f64, u64, u64) {
    let path = Arc::new(path);
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (path, ok, bad, bytes) = (path.clone(), ok.clone(), bad.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::new(api).with_timeout(Duration::from_secs(30));
            let mut i = 0u64;
            while Instant::now() < deadline {
                match client.get(&path(c, i)).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(r.body.len() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    let avg = bytes.load(Ordering::Relaxed) / n.max(1);
    (n as f64 / elapsed, bad.load(Ordering::Relaxed), avg)
}

/// Creates `total` users with `clients` parallel clients; returns creates/s.
async fn create_phase(api: SocketAddr, clients: usize, total: usize, tag: &str) -> (f64, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, bad) = (next.clone(), bad.clone());
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::new(api).with_timeout(Duration::from_secs(30));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = json!({"username": format!("bench_{tag}_{i}")});
                match client.send_json("POST", "/v1/users", &body).await {
                    Ok(r) if r.status == 201 => {}
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        total as f64 / start.elapsed().as_secs_f64(),
        bad.load(Ordering::Relaxed),
    )
}

async fn start(dir: &Path) -> (Daemon, SocketAddr) {
    let mut fixture = ConfigFixture::new(0).with_generated_users(USERS);
    for attempt in 0..5 {
        fixture.api_port = free_port();
        let path = dir.join("config.toml");
        std::fs::write(&path, fixture.render()).expect("write config");
        let api: SocketAddr = ([127, 0, 0, 1], fixture.api_port).into();
        let mut d = Daemon::spawn(
            Path::new(env!("CARGO_BIN_EXE_mtproxyd")),
            &["run", "--config", "config.toml"],
            dir,
            &format!("bench{attempt}"),
            &[("RUST_LOG", "warn")],
        )
        .expect("spawn mtproxyd");
        match d.wait_ready(api, Duration::from_secs(60)).await {
            Ok(()) => return (d, api),
            Err(e) => eprintln!("start attempt {attempt} failed: {e}"),
        }
    }
    panic!("mtproxyd did not start");
}

async fn bench() -> Vec<Outcome> {
    let secs = env_num("API_BENCH_SECS", 3);
    let creates = env_num("API_BENCH_CREATES", 300) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, api) = start(dir.path()).await;
    let mut out = Vec::new();

    // Warm-up (first list render, page cache).
    let mut c = HttpClient::new(api).with_timeout(Duration::from_secs(30));
    for _ in 0..3 {
        let r = c.get("/v1/users").await.expect("GET /v1/users");
        assert_eq!(r.status, 200);
        let n = r.json().expect("json")["data"]
            .as_array()
            .map_or(0, |a| a.len());
        assert_eq!(n, USERS, "unexpected user count");
    }

    let (rate, bad, avg) = get_phase(api, 4, secs, |_, _| "/v1/users".to_owned()).await;
    out.push(Outcome {
        name: "GET /v1/users (4 clients, 10k users)",
        rate,
        target: 120.0,
        detail: format!("errors={bad} avg_body={}KiB", avg / 1024),
    });

    let (rate, bad, _) = get_phase(api, 8, secs, |c, i| {
        format!(
            "/v1/users/user{:05}",
            (c as u64 * 1_237 + i * 7) % USERS as u64
        )
    })
    .await;
    out.push(Outcome {
        name: "GET /v1/users/{u} (8 clients)",
        rate,
        target: 4000.0,
        detail: format!("errors={bad}"),
    });

    let (rate, bad, _) = get_phase(api, 8, secs, |_, _| "/v1/health".to_owned()).await;
    out.push(Outcome {
        name: "GET /v1/health (8 clients)",
        rate,
        target: 4000.0,
        detail: format!("errors={bad}"),
    });

    let (rate, bad) = create_phase(api, 1, creates, "seq").await;
    out.push(Outcome {
        name: "POST /v1/users sequential",
        rate,
        target: 100.0,
        detail: format!("creates={creates} errors={bad}"),
    });

    let (rate, bad) = create_phase(api, 8, creates, "par").await;
    out.push(Outcome {
        name: "POST /v1/users (8 parallel clients)",
        rate,
        target: 100.0,
        detail: format!("creates={creates} errors={bad}"),
    });

    daemon.signal("TERM").expect("SIGTERM");
    let _ = daemon.wait_exit(Duration::from_secs(15));
    out
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special. Either way
    // run once. Skip quickly when invoked as a test (`cargo test --all-targets` builds benches
    // but only runs them with `--bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!("api_bench: run with `cargo bench -p mtproxyd --bench api_bench`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results = rt.block_on(bench());
    let mut missed = 0;
    println!("\n{:<42} {:>12} {:>10}  result", "phase", "req/s", "target");
    for r in &results {
        let pass = r.rate >= r.target;
        if !pass {
            missed += 1;
        }
        println!(
            "{:<42} {:>12.1} {:>10.0}  {}  {}",
            r.name,
            r.rate,
            r.target,
            if pass { "PASS" } else { "MISS" },
            r.detail
        );
    }
    if missed > 0 && std::env::var("API_BENCH_STRICT").is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
}
