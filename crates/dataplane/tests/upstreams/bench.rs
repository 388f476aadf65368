//! Relay throughput through each upstream type vs direct (ignored by default; run with
//! `cargo test --release -p dataplane --test upstreams -- --ignored --nocapture bench`).
//! `MTP_BENCH_MB` sets the payload per run (default 32 MiB, echoed back = 2× on the wire),
//! pipelined with at most 1 MiB in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use testkit::client::Mode;

use crate::kinds::with_upstreams;
use crate::servers::*;
use crate::support::*;

async fn run(name: &str, tail: &str, data: &[u8]) {
    let h = Harness::start(with_upstreams(tail, "")).await;
    // Warm-up session (connect path, buffers).
    drop(
        echo_roundtrip(
            h.connect(Mode::Abridged, 0).await.into_split(),
            &data[..65536],
            65536,
        )
        .await,
    );
    // Pipelined with at most WINDOW bytes in flight: full-duplex saturation deadlocks
    // single-threaded blocking relays such as microsocks against an echo server, and
    // lock-step rounds would measure Nagle / delayed-ACK stalls instead of throughput.
    const WINDOW: u64 = 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let (mut rd, mut wr) = h.connect(Mode::Abridged, 0).await.into_split();
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let t0 = Instant::now();
    let writer = {
        let (received, progress) = (Arc::clone(&received), Arc::clone(&progress));
        let data = data.to_vec();
        tokio::spawn(async move {
            let mut sent = 0u64;
            for c in data.chunks(CHUNK) {
                while sent - received.load(Ordering::Acquire) > WINDOW {
                    progress.notified().await;
                }
                wr.send(c).await.expect("send");
                sent += c.len() as u64;
            }
            wr
        })
    };
    for expect in data.chunks(CHUNK) {
        let got = rd.recv_exact(expect.len()).await.expect("echo");
        assert!(got == expect, "echo differs");
        received.fetch_add(expect.len() as u64, Ordering::Release);
        progress.notify_one();
    }
    drop(writer.await.expect("writer"));
    let secs = t0.elapsed().as_secs_f64();
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    println!(
        "BENCH upstream={name:<22} {mib:.0} MiB echoed in {secs:.3}s = {:.1} MiB/s",
        mib / secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_relay_throughput_per_upstream_type() {
    let mb: usize = std::env::var("MTP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let data = random(mb * 1024 * 1024);
    run("direct", "", &data).await;
    let p = free_port();
    if let Some(_s) = microsocks(p, Some(("u", "p"))).await {
        let t = format!(
            "[[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:{p}\"\nusername = \"u\"\npassword = \"p\"\n"
        );
        run("socks5 (microsocks)", &t, &data).await;
    }
    let p = free_port();
    if let Some(_s) = dante(p).await {
        let t = format!("[[upstreams]]\ntype = \"socks4\"\naddress = \"127.0.0.1:{p}\"\n");
        run("socks4 (dante)", &t, &data).await;
    }
    let p = free_port();
    if let Some(_s) = ss_server(p, "k", "chacha20-ietf-poly1305").await {
        let t = format!(
            "[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"ss://chacha20-ietf-poly1305:k@127.0.0.1:{p}\"\n"
        );
        run("ss chacha20 (ss-server)", &t, &data).await;
    }
    let p = free_port();
    let url = format!(
        "ss://2022-blake3-aes-256-gcm:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=@127.0.0.1:{p}"
    );
    let _s = ss_in_process(&url).await;
    run(
        "ss 2022 (in-process)",
        &format!("[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"{url}\"\n"),
        &data,
    )
    .await;
}
