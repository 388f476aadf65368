//! TLS front emulation against a real origin (docs/PROTOCOL.md §4.9): an nginx on loopback
//! with TLS 1.3 and a self-signed certificate for the test domain is the mask host. A plain
//! TLS client through the proxy sees nginx's own flight; an ee client sees a flight with
//! nginx's suite, extension order and CCS and one record as long as nginx's encrypted flight;
//! the same holds after a restart with nginx down (stored profile).
//!
//! Needs `nginx` and `openssl` (scripts/install-test-deps.sh).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use config::ConfigStore;
use dataplane::{Dataplane, DataplaneHandle, DataplaneOptions};
use proto::{FlightParser, FlightShape, ProbeParams};
use stats::startup::{StartupTracker, TransportMode};
use stats::Stats;
use testkit::client::{Mode, TestClient, TlsOptions};
use testkit::dc::{DcMode, TestDc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOMAIN: &str = "front.test";
const SECRET: [u8; 16] = [0x42; 16];
/// Allowed difference between the emulated record and the origin's encrypted total.
const TOLERANCE: usize = 16;

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An nginx serving TLS for [`DOMAIN`] on 127.0.0.1; killed on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn make_cert(dir: &Path) {
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={DOMAIN}")])
        .args(["-addext", &format!("subjectAltName=DNS:{DOMAIN}")])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl req failed");
}

async fn start_nginx(bin: &Path, dir: &Path) -> Nginx {
    for _ in 0..5 {
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n  server_name {DOMAIN};\n\
             ssl_certificate {d}/cert.pem;\n  ssl_certificate_key {d}/key.pem;\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n  location / {{ return 200 \"front\\n\"; }}\n }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let ng = Nginx {
            child,
            addr: ([127, 0, 0, 1], port).into(),
        };
        for _ in 0..100 {
            if TcpStream::connect(ng.addr).await.is_ok() {
                return ng;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

/// Sends `hello` to `addr` and parses what comes back until it has been quiet for 500 ms.
/// Returns the shape and the raw bytes.
async fn flight_of(addr: SocketAddr, hello: &[u8]) -> (FlightShape, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(hello).await.expect("write hello");
    let mut p = FlightParser::default();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let r = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
        match r {
            Ok(Ok(n)) if n > 0 => {
                raw.extend_from_slice(&buf[..n]);
                p.push(&buf[..n]).expect("a TLS flight");
            }
            _ => break,
        }
    }
    (p.shape().cloned().expect("a ServerHello"), raw)
}

fn probe_hello() -> Vec<u8> {
    proto::build_probe_hello(&ProbeParams {
        sni: DOMAIN,
        random: &[7; 32],
        session_id: &[8; 32],
        key_share: &proto::x25519_public([9; 32]),
    })
    .expect("probe hello")
}

/// Every ee handshake gets the full flight: the checks below connect repeatedly from
/// 127.0.0.1, which `tls_full_cert_ttl_secs` would otherwise answer with the compact one.
fn config(dir: &Path, dc: SocketAddr, mask: SocketAddr) -> PathBuf {
    config_with(dir, dc, mask, "tls_full_cert_ttl_secs = 0")
}

fn config_with(dir: &Path, dc: SocketAddr, mask: SocketAddr, censorship: &str) -> PathBuf {
    let text = format!(
        "[general]\nuse_middle_proxy = false\n\n[general.modes]\nclassic = false\nsecure = false\ntls = true\n\n\
         [server]\nport = 443\n\n[[server.listeners]]\nip = \"127.0.0.1\"\n\n\
         [censorship]\ntls_domain = \"{DOMAIN}\"\nmask = true\nmask_host = \"{}\"\nmask_port = {}\n{censorship}\n\
         [access.users]\nalice = \"{}\"\n\n\
         [dc_overrides]\n\"2\" = [\"{dc}\"]\n\"-2\" = [\"{dc}\"]\n",
        mask.ip(),
        mask.port(),
        hex::encode(SECRET)
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn start_proxy(path: &Path) -> DataplaneHandle {
    start_proxy_with_store(path).1
}

fn start_proxy_with_store(path: &Path) -> (Arc<ConfigStore>, DataplaneHandle) {
    let (store, dp, _) = start_proxy_tracked(path);
    (store, dp)
}

/// A proxy whose stored profiles are in use: the `tls_front` startup component finishes
/// once they are loaded, before the first fetch.
async fn start_proxy_loaded(path: &Path) -> DataplaneHandle {
    let (_, dp, startup) = start_proxy_tracked(path);
    for _ in 0..200 {
        let snap = startup.snapshot();
        let done = snap
            .components
            .iter()
            .any(|c| c.id == "tls_front" && c.finished_at_epoch_ms.is_some());
        if done {
            return dp;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stored profiles never loaded");
}

fn start_proxy_tracked(path: &Path) -> (Arc<ConfigStore>, DataplaneHandle, Arc<StartupTracker>) {
    let store = ConfigStore::open(path).expect("config loads");
    let stats = Stats::new(SystemTime::now());
    let opts = DataplaneOptions {
        port_override: Some(0),
        ..DataplaneOptions::default()
    };
    let startup = Arc::new(StartupTracker::new(
        SystemTime::now(),
        TransportMode::Direct,
    ));
    let dp = Dataplane::start(Arc::clone(&store), stats, Arc::clone(&startup), opts)
        .expect("data plane");
    (store, dp, startup)
}

/// An ee client's flight, checked against the origin's; `Err` says what differs (the
/// profile may not be in use yet).
async fn check_ee_flight(proxy: SocketAddr, origin: &FlightShape) -> Result<(), String> {
    let conn = TestClient::connect(proxy, Mode::Tls(TlsOptions::new(DOMAIN)), SECRET, 2)
        .await
        .map_err(|e| format!("ee handshake: {e}"))?;
    let wire = conn.server_hello().ok_or("no ServerHello kept")?.to_vec();
    let mut p = FlightParser::default();
    p.push(&wire).map_err(|e| e.to_string())?;
    let got = p.shape().ok_or("no ServerHello")?;
    let app: Vec<_> = got
        .records
        .iter()
        .filter(|r| r.content_type == 0x17)
        .collect();
    let want = origin.app_data_total();
    let checks = [
        (got.hello.cipher == origin.hello.cipher, "cipher"),
        (
            got.hello.extensions == origin.hello.extensions,
            "extension order",
        ),
        (got.ccs_count == origin.ccs_count, "CCS count"),
        (
            app.len() == 1 && got.records.len() == 1,
            "one application-data record",
        ),
        (
            app.first()
                .is_some_and(|r| r.len.abs_diff(want) <= TOLERANCE),
            "record length",
        ),
    ];
    for (ok, what) in checks {
        if !ok {
            return Err(format!("{what}: got {got:?}, origin {origin:?}"));
        }
    }
    Ok(())
}

async fn wait_ee_flight(proxy: SocketAddr, origin: &FlightShape) {
    let mut last = String::new();
    for _ in 0..100 {
        match check_ee_flight(proxy, origin).await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ee flight never matched the origin: {last}");
}

/// Sends `n` bytes through the echo DC and returns the sizes of the records that carried
/// them back.
async fn download_record_sizes(proxy: SocketAddr, n: usize) -> Vec<usize> {
    let conn = TestClient::connect(proxy, Mode::Tls(TlsOptions::new(DOMAIN)), SECRET, 2)
        .await
        .expect("ee client");
    let (mut rd, mut wr) = conn.into_split();
    rd.timeout = Duration::from_secs(60);
    let writer = tokio::spawn(async move {
        let data = vec![0x33u8; n];
        for c in data.chunks(64 * 1024) {
            wr.send(c).await.expect("send");
        }
        wr
    });
    let got = rd.recv_exact(n).await.expect("echo");
    assert_eq!(got.len(), n);
    drop(writer.await);
    rd.record_sizes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ee_flight_follows_the_origin_and_survives_a_restart_without_it() {
    let Some(bin) = nginx_binary().filter(|_| have_openssl()) else {
        testkit::external::missing("nginx and openssl", "run scripts/install-test-deps.sh");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    make_cert(dir.path());
    let nginx = start_nginx(&bin, dir.path()).await;
    let dc = TestDc::start(DcMode::Echo).await.expect("test DC");

    // What nginx itself answers a browser with.
    let (origin, _) = flight_of(nginx.addr, &probe_hello()).await;
    eprintln!("origin flight: {origin:?}");
    assert_eq!(
        origin.hello.selected_version, 0x0304,
        "nginx speaks TLS 1.3"
    );
    assert!(
        origin.app_data_total() > 500,
        "certificate flight: {origin:?}"
    );

    let origin_addr = nginx.addr;
    let cfg = config(dir.path(), dc.addr(), origin_addr);
    let dp = start_proxy(&cfg);
    let proxy = dp.local_addrs()[0];
    let profile = dir.path().join("tlsfront").join(format!("{DOMAIN}.json"));
    for _ in 0..200 {
        if profile.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(profile.exists(), "profile stored at {}", profile.display());

    // A client without the secret is relayed to nginx: its flight passes unchanged.
    let (masked, _) = flight_of(proxy, &probe_hello()).await;
    assert_eq!(masked.hello.cipher, origin.hello.cipher);
    assert_eq!(masked.hello.extensions, origin.hello.extensions);
    assert_eq!(masked.ccs_count, origin.ccs_count);
    assert_eq!(masked.app_data_total(), origin.app_data_total());

    // An authenticated ee client gets the emulated flight (digest checked by the client).
    wait_ee_flight(proxy, &origin).await;

    // A 1 MiB download: small records first, like a web server ramping up, then 16 KiB.
    let sizes = download_record_sizes(proxy, 1024 * 1024).await;
    let first_full = sizes.iter().position(|&s| s == 16384);
    let Some(first_full) = first_full else {
        panic!("no 16 KiB record in {sizes:?}");
    };
    let small: usize = sizes[..first_full].iter().sum();
    assert!(
        sizes[..first_full].iter().all(|&s| s <= 1369) && small >= 400 * 1024,
        "small records first ({small} bytes before the first full one): {sizes:?}"
    );

    // Restart with the origin down: the stored profile is used from the start.
    dp.shutdown(Duration::from_millis(200)).await;
    drop(dp);
    drop(nginx);
    let dp = start_proxy(&cfg);
    wait_ee_flight(dp.local_addrs()[0], &origin).await;
    dp.shutdown(Duration::from_millis(200)).await;
    drop(dp);

    // With the full-flight TTL on (stored profile, origin still down): the first ee
    // handshake from 127.0.0.1 gets the full flight, a repeat nginx's resumed flight —
    // its own EncryptedExtensions and Finished records (OpenSSL writes one per message).
    let cfg = config_with(
        dir.path(),
        dc.addr(),
        origin_addr,
        "tls_full_cert_ttl_secs = 90",
    );
    let dp = start_proxy_loaded(&cfg).await;
    let proxy = dp.local_addrs()[0];
    check_ee_flight(proxy, &origin).await.expect("first: full");
    let app: Vec<usize> = origin
        .records
        .iter()
        .filter(|r| r.content_type == 0x17)
        .map(|r| r.len)
        .collect();
    assert!(
        app.len() >= 3,
        "nginx's messages in records of their own: {app:?}"
    );
    let (Some(ee), Some(fin)) = (app.first(), app.last()) else {
        unreachable!("checked above");
    };
    let lens = ee_flight_lens(proxy).await;
    eprintln!("origin records {app:?}, repeat flight {lens:?}");
    assert_eq!(lens, [ee + fin], "second: compact");
    dp.shutdown(Duration::from_millis(200)).await;
}

/// The application-data record lengths of one ee handshake's flight.
async fn ee_flight_lens(proxy: SocketAddr) -> Vec<usize> {
    let conn = TestClient::connect(proxy, Mode::Tls(TlsOptions::new(DOMAIN)), SECRET, 2)
        .await
        .expect("ee handshake");
    let mut p = FlightParser::default();
    p.push(conn.server_hello().expect("kept")).expect("flight");
    let shape = p.shape().expect("ServerHello");
    shape.records.iter().map(|r| r.len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_emulation_on_by_reload_fetches_at_once() {
    let Some(bin) = nginx_binary().filter(|_| have_openssl()) else {
        testkit::external::missing("nginx and openssl", "run scripts/install-test-deps.sh");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    make_cert(dir.path());
    let nginx = start_nginx(&bin, dir.path()).await;
    let dc = TestDc::start(DcMode::Echo).await.expect("test DC");
    let cfg = config_with(dir.path(), dc.addr(), nginx.addr, "tls_emulation = false");
    let (store, dp) = start_proxy_with_store(&cfg);
    let profile = dir.path().join("tlsfront").join(format!("{DOMAIN}.json"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!profile.exists(), "nothing fetched with emulation off");
    config_with(dir.path(), dc.addr(), nginx.addr, "tls_emulation = true");
    assert!(store.reload_from_disk().expect("reload"), "config changed");
    for _ in 0..100 {
        if profile.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(profile.exists(), "fetched right after the publish");
    dp.shutdown(Duration::from_millis(200)).await;
}
