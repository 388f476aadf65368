//! `mtproxyd user add|del|list|link|enable|disable`: the users API driven from the shell. The
//! API address and `Authorization` value come from the config file, so the CLI goes through
//! the same gates, validation, surgical write and live apply as any panel.
//!
//! Must not: edit the config file itself (a running proxy would then see a hand edit instead
//! of an API write; without a running proxy the commands say so).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A `user` subcommand.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// List users with their state and traffic.
    List,
    /// Create a user (secret generated unless given) and print its links.
    Add {
        name: String,
        /// 32 hex characters.
        #[arg(long)]
        secret: Option<String>,
        /// Max concurrent TCP connections.
        #[arg(long)]
        max_conns: Option<u64>,
        /// Data quota in bytes.
        #[arg(long)]
        quota: Option<u64>,
        /// Expiration, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
        /// Unique source IPs.
        #[arg(long)]
        max_ips: Option<u64>,
    },
    /// Delete a user.
    Del { name: String },
    /// Print a user's tg:// links.
    Link { name: String },
    /// Re-enable a disabled user.
    Enable { name: String },
    /// Disable a user (kept in the config; clients are refused).
    Disable { name: String },
}

/// Where the API of the proxy using `config` listens, and its `Authorization` value.
fn endpoint(config: &Path) -> anyhow::Result<(SocketAddr, String)> {
    let loaded = config::load_file(config).map_err(|e| anyhow!("{}: {e}", config.display()))?;
    let api = &loaded.config.server.api;
    if !api.enabled {
        bail!(
            "the API is disabled in {} ([server.api] enabled = false)",
            config.display()
        );
    }
    let mut addr = api.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok((addr, api.auth_header.clone()))
}

async fn call(
    addr: SocketAddr,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("the API at {addr} did not answer"))?
        .with_context(|| format!("cannot reach the API at {addr}: is mtproxyd running?"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the API")?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json");
    if !auth.is_empty() {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::from(bytes)))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), tx.send_request(req))
        .await
        .map_err(|_| anyhow!("the API did not answer in time"))??;
    let status = resp.status();
    let raw = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&raw)
        .with_context(|| format!("the API answered {status} with a non-JSON body"))?;
    if v["ok"] != true {
        bail!(
            "{} ({}): {}",
            v["error"]["code"].as_str().unwrap_or("error"),
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(v["data"].clone())
}

fn print_links(user: &Value) {
    for mode in ["tls", "secure", "classic"] {
        for link in user["links"][mode].as_array().into_iter().flatten() {
            if let Some(l) = link.as_str() {
                println!("{mode:7} {l}");
            }
        }
    }
}

async fn run_async(config: &Path, cmd: UserCommand) -> anyhow::Result<()> {
    let (addr, auth) = endpoint(config)?;
    let user_path = |n: &str, tail: &str| format!("/v1/users/{n}{tail}");
    match cmd {
        UserCommand::List => {
            let users = call(addr, &auth, "GET", "/v1/users", None).await?;
            println!(
                "{:24} {:8} {:>6} {:>14} {:>14}",
                "USER", "ENABLED", "CONNS", "OCTETS", "QUOTA"
            );
            for u in users.as_array().into_iter().flatten() {
                println!(
                    "{:24} {:8} {:>6} {:>14} {:>14}",
                    u["username"].as_str().unwrap_or(""),
                    u["enabled"].as_bool().unwrap_or(true),
                    u["current_connections"].as_u64().unwrap_or(0),
                    u["total_octets"].as_u64().unwrap_or(0),
                    u["data_quota_bytes"]
                        .as_u64()
                        .map_or_else(|| "-".to_owned(), |q| q.to_string()),
                );
            }
        }
        UserCommand::Add {
            name,
            secret,
            max_conns,
            quota,
            expires,
            max_ips,
        } => {
            let mut body = json!({"username": name});
            for (k, v) in [
                ("secret", secret.map(Value::from)),
                ("max_tcp_conns", max_conns.map(Value::from)),
                ("data_quota_bytes", quota.map(Value::from)),
                ("expiration_rfc3339", expires.map(Value::from)),
                ("max_unique_ips", max_ips.map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let created = call(addr, &auth, "POST", "/v1/users", Some(body)).await?;
            println!(
                "created {name}; secret {}",
                created["secret"].as_str().unwrap_or("")
            );
            print_links(&created["user"]);
        }
        UserCommand::Del { name } => {
            call(addr, &auth, "DELETE", &user_path(&name, ""), None).await?;
            println!("deleted {name}");
        }
        UserCommand::Link { name } => {
            let u = call(addr, &auth, "GET", &user_path(&name, ""), None).await?;
            print_links(&u);
        }
        UserCommand::Enable { name } => {
            call(addr, &auth, "POST", &user_path(&name, "/enable"), None).await?;
            println!("enabled {name}");
        }
        UserCommand::Disable { name } => {
            call(addr, &auth, "POST", &user_path(&name, "/disable"), None).await?;
            println!("disabled {name}");
        }
    }
    Ok(())
}

/// Runs one `user` subcommand against the proxy that uses `config`.
pub fn run(config: &Path, cmd: UserCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_async(config, cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
