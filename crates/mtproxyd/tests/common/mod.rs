//! Shared helpers of the binary's integration tests: start the real `mtproxyd` on a temp
//! config with an ephemeral API port (retrying on a port collision), run one-shot commands.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{free_port, ConfigFixture, Daemon, DaemonError, HttpClient};

pub const BIN: &str = env!("CARGO_BIN_EXE_mtproxyd");

/// A started daemon with its API address and config path.
pub struct Running {
    pub daemon: Daemon,
    pub api: SocketAddr,
    pub config: PathBuf,
}

impl Running {
    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.api)
    }
}

/// Rewrites `[server.api] listen` of the config at `path` to a fresh port and starts the
/// daemon on it, until the API answers. Retries with another port when the bind collided.
pub async fn start_on(dir: &Path, path: &Path, fixture: Option<&mut ConfigFixture>) -> Running {
    let mut fixture = fixture;
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_port();
        match fixture.as_deref_mut() {
            Some(f) => {
                f.api_port = port;
                std::fs::write(path, f.render()).expect("write config");
            }
            None => {
                let text = std::fs::read_to_string(path).expect("read config");
                let replaced = replace_api_port(&text, port);
                std::fs::write(path, replaced).expect("write config");
            }
        }
        let api: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut daemon = Daemon::spawn(
            Path::new(BIN),
            &["run", "--config", path.to_str().expect("utf-8 path")],
            dir,
            &format!("daemon{attempt}"),
            &[("RUST_LOG", "info")],
        )
        .expect("spawn mtproxyd");
        match daemon.wait_ready(api, Duration::from_secs(20)).await {
            Ok(()) => {
                return Running {
                    daemon,
                    api,
                    config: path.to_path_buf(),
                }
            }
            Err(DaemonError::NotReady { logs }) if logs.contains("cannot bind") => {
                last = logs;
                daemon.kill();
            }
            Err(e) => panic!("mtproxyd did not start: {e}"),
        }
    }
    panic!("mtproxyd could not bind an API port after 5 attempts:\n{last}");
}

/// Replaces the port of `listen = "127.0.0.1:<port>"` under `[server.api]`.
pub fn replace_api_port(text: &str, port: u16) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_api = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_api = t == "[server.api]";
        }
        if in_api && t.starts_with("listen") && t.contains('=') {
            out.push_str(&format!("listen = \"127.0.0.1:{port}\""));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// A fixture config in `dir` (API port chosen at start).
pub async fn start_fixture(dir: &Path, fixture: &mut ConfigFixture) -> Running {
    let path = dir.join("config.toml");
    start_on(dir, &path, Some(fixture)).await
}

/// Runs `mtproxyd <args>` to completion.
pub fn run_cmd(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run mtproxyd")
}

/// `mtproxyd check --config path` exit status and combined output.
pub fn check(path: &Path) -> (bool, String) {
    let out = run_cmd(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        path.parent().unwrap_or(Path::new(".")),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls `f` every 50 ms until it returns `Some`, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Usernames from `GET /v1/users`.
pub async fn usernames(client: &mut HttpClient) -> Option<Vec<String>> {
    let r = client.get("/v1/users").await.ok()?;
    if r.status != 200 {
        return None;
    }
    let v = r.json().ok()?;
    Some(
        v["data"]
            .as_array()?
            .iter()
            .filter_map(|u| u["username"].as_str().map(str::to_owned))
            .collect(),
    )
}
