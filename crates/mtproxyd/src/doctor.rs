//! `mtproxyd doctor`: checks the prerequisites of a working proxy and prints one line per
//! check — `ok`, `warn` or `FAIL` — with the fix. Exit 1 when anything failed.
//!
//! Must not: change anything (no config writes, no listener left bound); talk to any host
//! the config does not name (DCs, the mask host).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use config::Config;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Below this soft open-files limit a busy proxy runs out of sockets.
const WANT_NOFILE: u64 = 65_536;

#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        println!("warn  {what}: {detail}\n      fix: {fix}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.failed = true;
        println!("FAIL  {what}: {detail}\n      fix: {fix}");
    }
}

fn bind_check(r: &mut Report, what: &str, addr: SocketAddr) {
    match TcpListener::bind(addr) {
        Ok(_) => r.ok(what, format!("{addr} can be bound")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.warn(
            what,
            format!("{addr} is in use"),
            "stop the other process, or ignore this if it is mtproxyd itself running",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => r.fail(
            what,
            format!("{addr}: {e}"),
            "ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it) or root",
        ),
        Err(e) => r.fail(
            what,
            format!("{addr}: {e}"),
            "check the address in the config",
        ),
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    s.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    Ok(s)
}

/// The mask host must answer a TLS handshake for `tls_domain` the way a browser sees it.
fn mask_check(r: &mut Report, cfg: &Config) {
    let c = &cfg.censorship;
    if !c.mask {
        r.warn(
            "mask host",
            "masking is off (censorship.mask = false)",
            "probes then see a closed connection; turn masking on",
        );
        return;
    }
    let host = c.mask_host.clone().unwrap_or_else(|| c.tls_domain.clone());
    let target = format!("{host}:{}", c.mask_port);
    let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => {
            return r.fail(
                "mask host",
                format!("{target} does not resolve"),
                "set censorship.mask_host (default: tls_domain) to a resolvable HTTPS host",
            )
        }
    };
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => {
            return r.fail(
                "mask host",
                format!("{target} ({addr}): {e}"),
                "bad clients are relayed there: set censorship.mask_host/mask_port to a reachable HTTPS server",
            )
        }
    };
    let params = proto::ClientHelloParams {
        timestamp: 0,
        session_id: &[0x5a; 32],
        sni: Some(&c.tls_domain),
        alpn: &[b"h2", b"http/1.1"],
        key_share: &[9; 32],
        total_len: Some(517),
    };
    let Ok(hello) = proto::build_client_hello(&[0; 16], &params) else {
        return r.warn(
            "mask host",
            "cannot build a test ClientHello",
            "report this bug",
        );
    };
    let mut head = [0u8; 5];
    let answer = s.write_all(&hello).and_then(|()| s.read_exact(&mut head));
    match (answer, head[0]) {
        (Ok(()), 0x16) => r.ok(
            "mask host",
            format!("{target} answers TLS for {} (its certificate is encrypted in TLS 1.3 and not checked here)", c.tls_domain),
        ),
        (Ok(()), 0x15) => r.fail(
            "mask host",
            format!("{target} refuses a TLS handshake for {} (alert)", c.tls_domain),
            "point mask_host at a server that serves tls_domain, or change censorship.tls_domain",
        ),
        (Ok(()), _) => r.fail(
            "mask host",
            format!("{target} does not speak TLS"),
            "mask_host must be an HTTPS server (port 443)",
        ),
        (Err(e), _) => r.fail(
            "mask host",
            format!("{target}: no TLS answer ({e})"),
            "mask_host must be an HTTPS server that answers for tls_domain",
        ),
    }
}

/// Telegram DCs (or their `dc_overrides`) must be reachable directly when no upstream is set.
fn dc_check(r: &mut Report, cfg: &Config) {
    if cfg
        .upstreams
        .iter()
        .any(|u| u.enabled && u.route_kind() != "direct")
    {
        return r.ok("DCs", "reached through [[upstreams]] (not probed here)");
    }
    let mut reached = 0;
    let mut tried = Vec::new();
    for dc in 1..=5i16 {
        let addr = cfg
            .dc_overrides
            .get(&dc.to_string())
            .and_then(|l| l.first())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .or_else(|| proto::dc::dc_table_addr(dc, false));
        let Some(addr) = addr else { continue };
        match connect(addr) {
            Ok(_) => reached += 1,
            Err(e) => tried.push(format!("DC {dc} {addr}: {e}")),
        }
    }
    if tried.is_empty() {
        r.ok("DCs", format!("{reached} of 5 reachable"));
    } else if reached > 0 {
        r.warn(
            "DCs",
            format!("{reached} of 5 reachable; {}", tried.join("; ")),
            "clients of the unreachable DCs will fail: check the outbound firewall",
        );
    } else {
        r.fail(
            "DCs",
            tried.join("; "),
            "no DC is reachable: open outbound TCP 443, or chain through [[upstreams]]",
        );
    }
}

/// With the middle-proxy route on: the cached proxy config must list reachable middle proxies.
fn me_check(r: &mut Report, cfg: &Config, path: &Path) {
    if !cfg.general.use_middle_proxy {
        return;
    }
    let key = "general.proxy_config_v4_cache_path";
    let file = cfg.general.proxy_config_v4_file(path);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            return r.warn(
                "middle proxies",
                format!("no proxy config cache at {} ({key}): {e}", file.display()),
                "the proxy downloads it at start; without network access to core.telegram.org, put a copy there",
            )
        }
    };
    let parsed = match proto::me::parse_proxy_config(&text) {
        Ok(p) if !p.proxy_for.is_empty() => p,
        Ok(_) => {
            return r.fail(
                "middle proxies",
                format!("{} lists no proxy_for lines", file.display()),
                "delete the file so the proxy downloads a fresh one",
            )
        }
        Err(e) => {
            return r.fail(
                "middle proxies",
                format!("{}: {e}", file.display()),
                "delete the file so the proxy downloads a fresh one",
            )
        }
    };
    let mut endpoints: Vec<SocketAddr> = parsed.proxy_for.iter().map(|(_, a)| *a).collect();
    endpoints.sort();
    endpoints.dedup();
    let total = endpoints.len();
    let failed: Vec<String> = endpoints
        .iter()
        .take(8)
        .filter_map(|a| connect(*a).err().map(|e| format!("{a}: {e}")))
        .collect();
    let tried = total.min(8);
    if failed.is_empty() {
        r.ok(
            "middle proxies",
            format!("{tried} of {total} probed, all reachable"),
        );
    } else if failed.len() < tried {
        r.warn(
            "middle proxies",
            format!(
                "{} of {tried} probed unreachable: {}",
                failed.len(),
                failed.join("; ")
            ),
            "the pool avoids dead endpoints; check the outbound firewall if this persists",
        );
    } else {
        r.fail(
            "middle proxies",
            format!("none reachable: {}", failed.join("; ")),
            "open outbound TCP to the middle proxies (port 8888), or set use_middle_proxy = false",
        );
    }
}

fn fd_check(r: &mut Report) {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if hard < WANT_NOFILE => r.warn(
            "open files",
            format!("hard limit {hard} (soft {soft})"),
            "raise it (systemd: LimitNOFILE=1048576; shell: ulimit -Hn); every client holds two sockets",
        ),
        Ok((soft, hard)) => r.ok(
            "open files",
            format!("soft {soft}, hard {hard} (mtproxyd raises soft to hard at start)"),
        ),
        Err(e) => r.warn("open files", e, "check ulimit -n"),
    }
}

/// `mtproxyd doctor --config PATH`.
pub fn run(path: &Path) -> ExitCode {
    let mut r = Report::default();
    let cfg = match config::load_file(path) {
        Ok(l) => {
            r.ok(
                "config",
                format!(
                    "{} is valid ({} users)",
                    path.display(),
                    l.config.access.users.len()
                ),
            );
            for w in &l.warnings {
                r.warn("config", w, "see the key named above");
            }
            l.config
        }
        Err(e) => {
            r.fail(
                "config",
                format!("{}: {e}", path.display()),
                "fix the key named above; `mtproxyd check` re-validates",
            );
            return ExitCode::FAILURE;
        }
    };
    for l in &cfg.server.listeners {
        bind_check(
            &mut r,
            "client listener",
            SocketAddr::new(l.ip, cfg.server.port),
        );
    }
    if cfg.server.api.enabled {
        bind_check(&mut r, "API listener", cfg.server.api.listen);
    }
    mask_check(&mut r, &cfg);
    dc_check(&mut r, &cfg);
    me_check(&mut r, &cfg, path);
    fd_check(&mut r);
    println!(
        "skip  clock: no time source is configured to compare with; keep NTP running (timedatectl)"
    );
    if r.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
