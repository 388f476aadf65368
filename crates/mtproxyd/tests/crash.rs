//! Crash safety: SIGKILL the daemon at random moments while API writes stream in. After every
//! kill the config file must still parse and validate (`mtproxyd check`), and temp files of
//! the dead writer must be swept by the next start (never mistaken for the config).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{check, start_fixture, start_on};
use serde_json::json;
use testkit::{ConfigFixture, HttpClient};

const ITERATIONS: usize = 30;

/// Streams create/patch/delete writes until the connection fails (the daemon died).
async fn write_storm(api: std::net::SocketAddr, round: usize) -> usize {
    let mut c = HttpClient::new(api).with_timeout(Duration::from_secs(5));
    let mut done = 0;
    for i in 0.. {
        let name = format!("u{round}_{i}");
        let ops = [
            c.send_json("POST", "/v1/users", &json!({"username": name}))
                .await,
            c.send_json(
                "PATCH",
                &format!("/v1/users/{name}"),
                &json!({"max_tcp_conns": i, "data_quota_bytes": 1_000_000}),
            )
            .await,
        ];
        if ops.iter().any(|r| r.is_err()) {
            break;
        }
        done += 2;
        if i % 2 == 0 {
            if c.delete(&format!("/v1/users/{name}")).await.is_err() {
                break;
            }
            done += 1;
        }
    }
    done
}

fn temp_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.contains(".init."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_never_corrupts_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = ConfigFixture::new(0);
    let first = start_fixture(dir.path(), &mut f).await;
    let config = first.config.clone();
    drop(first); // SIGKILL

    let mut total_writes = 0;
    for round in 0..ITERATIONS {
        let mut r = start_on(dir.path(), &config, None).await;
        // The previous daemon's leftovers were swept at start.
        let left = temp_files(dir.path());
        assert!(
            left.is_empty(),
            "round {round}: stale temp files after restart: {left:?}"
        );
        let storm = tokio::spawn(write_storm(r.api, round));
        let delay = rand::random::<u64>() % 400 + 20;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        r.daemon.kill();
        total_writes += storm.await.unwrap();

        let (ok, out) = check(&config);
        assert!(ok, "round {round}: config broken after SIGKILL: {out}");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("[access.users]"), "round {round}: {text}");
        assert!(text.contains("alice = "), "round {round}: {text}");
    }
    assert!(
        total_writes > ITERATIONS,
        "too few writes landed: {total_writes}"
    );

    // A final clean start/stop leaves only the config, the counters state file and logs.
    let mut r = start_on(dir.path(), &config, None).await;
    r.daemon.signal("TERM").unwrap();
    let status = r.daemon.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(status.is_some_and(|s| s.success()));
    assert!(temp_files(dir.path()).is_empty());
}
