//! End-to-end checks of the real `mtproxyd` binary with testkit's independent peers: every
//! client mode through the proxy to a TestDc, active probes ending at the MaskServer, and the
//! real third-party client libraries of tests-py/.
//!
//! The Python test needs `$MTPROXYD_PY` with tests-py/requirements.txt installed
//! (`scripts/test.sh` prepares it); without it the test fails, unless
//! `MTPROXYD_SKIP_EXTERNAL=1` opts out (see `testkit::external`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use testkit::client::probe::{bad_digest_hello, send_probe};
use testkit::client::{ClientError, HelloShape, Mode, Tag, TestClient, TestConn, TlsOptions};
use testkit::dc::mtproto;
use testkit::dc::{DcMessage, DcMode, TestDc};
use testkit::mask::{http_reply, MaskReply, MaskServer};
use testkit::{free_port, Daemon, HttpClient};

const T: Duration = Duration::from_secs(10);
const DOMAIN: &str = "example.com";

#[path = "real_clients/front.rs"]
mod front;

#[path = "real_clients/me.rs"]
mod me;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mtproxyd"))
}

struct Setup {
    proxy: SocketAddr,
    api: SocketAddr,
    secret: [u8; 16],
    dc: TestDc,
    mask: MaskServer,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

fn config(
    port: u16,
    api: u16,
    secret: &[u8; 16],
    dc: SocketAddr,
    mask: SocketAddr,
    general: &str,
    censorship: &str,
) -> String {
    let mut overrides = String::new();
    for i in 1..=5 {
        overrides.push_str(&format!("\"{i}\" = \"{dc}\"\n\"-{i}\" = \"{dc}\"\n"));
    }
    // A test that sets the route itself says so in `general`.
    let route = if general.contains("use_middle_proxy") {
        ""
    } else {
        "use_middle_proxy = false\n"
    };
    format!(
        "[general]\n{route}log_level = \"debug\"\n{general}\n\n\
         [general.modes]\nclassic = true\nsecure = true\ntls = true\n\n\
         [server]\nport = {port}\n\n[[server.listeners]]\nip = \"127.0.0.1\"\n\n\
         [server.api]\nenabled = true\nlisten = \"127.0.0.1:{api}\"\nwhitelist = [\"127.0.0.1/32\"]\n\
         runtime_edge_enabled = true\nruntime_edge_cache_ttl_ms = 0\nminimal_runtime_enabled = true\n\n\
         [censorship]\ntls_domain = \"{DOMAIN}\"\nmask = true\nmask_host = \"{}\"\nmask_port = {}\n\
         unknown_sni_action = \"mask\"\n{censorship}\n\
         [access.users]\nalice = \"{}\"\n\n[dc_overrides]\n{overrides}",
        mask.ip(),
        mask.port(),
        hex::encode(secret)
    )
}

async fn setup() -> Setup {
    setup_with(DcMode::MtProto).await
}

/// The TLS front profile fetch would be one more connection to the recording mask server:
/// off here, on in [`setup_emulated`].
const NO_EMULATION: &str = "tls_emulation = false\n";

async fn setup_with(dc_mode: DcMode) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    setup_in(dc_mode, dir, "", NO_EMULATION, rand::random()).await
}

/// `tls_emulation` on with a stored TLS front profile ([`front::write_profile`]).
async fn setup_emulated() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    front::write_profile(dir.path(), DOMAIN);
    setup_in(DcMode::MtProto, dir, "", "", rand::random()).await
}

/// Starts the daemon in `dir` with extra `[general]` lines and alice's `secret`.
async fn setup_in(
    dc_mode: DcMode,
    dir: tempfile::TempDir,
    general: &str,
    censorship: &str,
    secret: [u8; 16],
) -> Setup {
    let bin = binary();
    let dc = TestDc::start(dc_mode).await.unwrap();
    let mask = MaskServer::start(MaskReply::Http).await.unwrap();
    let mut last = String::new();
    for _ in 0..3 {
        let (port, api) = (free_port(), free_port());
        let cfg = dir.path().join("config.toml");
        let text = config(
            port,
            api,
            &secret,
            dc.addr(),
            mask.addr(),
            general,
            censorship,
        );
        std::fs::write(&cfg, text).unwrap();
        let cfg_s = cfg.to_string_lossy().into_owned();
        let mut daemon = Daemon::spawn(
            &bin,
            &["run", "--config", &cfg_s],
            dir.path(),
            "mtproxyd",
            &[],
        )
        .unwrap();
        match daemon
            .wait_ready(([127, 0, 0, 1], api).into(), Duration::from_secs(30))
            .await
        {
            Ok(()) => {
                return Setup {
                    proxy: ([127, 0, 0, 1], port).into(),
                    api: ([127, 0, 0, 1], api).into(),
                    secret,
                    dc,
                    mask,
                    daemon,
                    _dir: dir,
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    panic!("mtproxyd did not start: {last}");
}

async fn req_pq(c: &mut TestConn, dc: &TestDc) -> Result<(), String> {
    let nonce: [u8; 16] = rand::random();
    c.send_packet(&mtproto::req_pq_multi_message(&nonce))
        .await
        .map_err(|e| e.to_string())?;
    let reply = c.recv_packet().await.map_err(|e| e.to_string())?;
    let msg = mtproto::parse_plain(&reply)?;
    let res = mtproto::parse_res_pq(&msg.body)?;
    let seen = dc.messages().into_iter().any(|m| {
        matches!(m, DcMessage::ReqPq { nonce: n, server_nonce, .. }
            if n == nonce && server_nonce == res.server_nonce)
    });
    if res.nonce == nonce && seen {
        Ok(())
    } else {
        Err(format!("resPQ mismatch: {res:?}"))
    }
}

#[tokio::test]
async fn every_client_mode_reaches_the_dc() {
    let s = setup().await;
    let mut small = TlsOptions::new(DOMAIN);
    small.shape = HelloShape::Small517;
    small.send_ccs = false;
    small.init_merged = false;
    let cases = [
        (Mode::Abridged, 2i16),
        (Mode::Intermediate, -3),
        (Mode::Secure, 4),
        (Mode::Tls(TlsOptions::new(DOMAIN)), 2),
        (Mode::Tls(small), 5),
    ];
    for (i, (mode, dc_idx)) in cases.into_iter().enumerate() {
        let what = format!("{mode:?}");
        let tag = mode.tag();
        let mut c = TestClient::connect(s.proxy, mode, s.secret, dc_idx)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", s.daemon.logs()));
        for _ in 0..2 {
            req_pq(&mut c, &s.dc)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", s.daemon.logs()));
        }
        let sess = &s.dc.sessions()[i];
        assert_eq!(sess.tag, Some(tag), "{what}");
        assert_eq!(sess.dc, dc_idx, "{what}");
    }
    assert!(s.mask.connections().is_empty());
}

#[tokio::test]
async fn probes_end_at_the_mask_server() {
    let s = setup().await;
    let logs = |s: &Setup| s.daemon.logs();

    // 1. ClientHello with a wrong digest: forwarded unchanged, prober sees the mask's reply.
    let hello = bad_digest_hello(&s.secret, Some(DOMAIN));
    let out = send_probe(s.proxy, &hello, T, false).await.unwrap();
    assert_eq!(out.received, http_reply(), "bad digest\n{}", logs(&s));
    let got = s.mask.wait_received(0, hello.len(), T).await;
    assert_eq!(got, Some(hello), "bad digest hello forwarded unchanged");

    // 2. Valid digest but an SNI the proxy does not serve (unknown_sni_action = mask).
    let mut wrong_sni = TlsOptions::new("not-configured.example.org");
    wrong_sni.shape = HelloShape::Small517;
    match TestClient::connect(s.proxy, Mode::Tls(wrong_sni), s.secret, 2).await {
        Err(ClientError::NotServerHello(got)) => assert_eq!(got, http_reply(), "wrong SNI"),
        Err(e) => panic!("wrong SNI: {e}\n{}", logs(&s)),
        Ok(_) => panic!("wrong SNI was served\n{}", logs(&s)),
    }
    let got = s.mask.wait_received(1, 517, T).await;
    assert_eq!(got.map(|g| g.len()), Some(517), "wrong-SNI hello forwarded");

    // 3. Replay of an exact obfuscated2 init (classic): first served, second masked.
    let mut c = TestClient::connect(s.proxy, Mode::Intermediate, s.secret, 2)
        .await
        .unwrap();
    req_pq(&mut c, &s.dc).await.unwrap();
    let init = c.init_wire();
    let out = send_probe(s.proxy, &init, Duration::from_secs(3), false)
        .await
        .unwrap();
    assert_eq!(out.received, http_reply(), "replayed init\n{}", logs(&s));
    let got = s.mask.wait_received(2, 64, T).await;
    assert_eq!(
        got.as_deref(),
        Some(&init[..]),
        "replayed init forwarded unchanged"
    );

    // 4. Replay of an exact, valid ClientHello.
    let c = TestClient::connect(s.proxy, Mode::Tls(TlsOptions::new(DOMAIN)), s.secret, 2)
        .await
        .unwrap();
    let hello = c.client_hello().unwrap().to_vec();
    let out = send_probe(s.proxy, &hello, Duration::from_secs(3), false)
        .await
        .unwrap();
    assert_eq!(
        out.received,
        http_reply(),
        "replayed ClientHello\n{}",
        logs(&s)
    );
    let got = s.mask.wait_received(3, hello.len(), T).await;
    assert_eq!(got, Some(hello), "replayed hello forwarded unchanged");

    // 5. Correct digest, but a timestamp an hour old (outside the ±120 s skew window).
    let mut stale = TlsOptions::new(DOMAIN);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    stale.timestamp = Some(now - 3600);
    match TestClient::connect(s.proxy, Mode::Tls(stale), s.secret, 2).await {
        Err(ClientError::NotServerHello(got)) => assert_eq!(got, http_reply(), "stale hello"),
        Err(e) => panic!("stale hello: {e}\n{}", logs(&s)),
        Ok(_) => panic!("stale hello was served\n{}", logs(&s)),
    }
    assert!(s.mask.wait_received(4, 517, T).await.is_some());

    // Each probe is counted under its own class.
    let mut c = HttpClient::new(s.api);
    let summary = wait_bad_total(&mut c, 5).await;
    assert_eq!(
        summary["connections_bad_by_class"],
        serde_json::json!([
            {"class": "obfs2_replay", "total": 1},
            {"class": "tls_no_matching_secret", "total": 1},
            {"class": "tls_replay", "total": 1},
            {"class": "tls_stale_timestamp", "total": 1},
            {"class": "tls_unknown_sni", "total": 1},
        ]),
        "{summary}"
    );
}

/// Polls `/v1/stats/summary` until `connections_bad_total` is `want`; returns that summary.
async fn wait_bad_total(c: &mut HttpClient, want: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let summary = api_data(c, "/v1/stats/summary").await;
        if summary["connections_bad_total"] == want {
            return summary;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bad connections not counted: {summary}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until an ee handshake answers with the stored profile's shape. The client sends no
/// init, so the DC sees no session.
async fn wait_emulated_flight(s: &Setup) {
    let mut last = String::new();
    for _ in 0..50 {
        let opts = TlsOptions::new(DOMAIN);
        let checked = match TestClient::connect(s.proxy, Mode::Tls(opts), s.secret, 2).await {
            Ok(c) => front::check_flight(c.server_hello().unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        };
        match checked {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "stored TLS front profile not in use: {last}\n{}",
        s.daemon.logs()
    );
}

/// Whether the Python client libraries are installed; missing, the test fails unless
/// `MTPROXYD_SKIP_EXTERNAL=1` (then `false`: skip).
async fn client_libraries_present() -> bool {
    if testkit::py::has_modules(&["telethon", "pyrogram"]).await {
        return true;
    }
    testkit::external::missing(
        &format!("telethon/kurigram for {}", testkit::py::python()),
        "run scripts/test.sh, or pip install -r tests-py/requirements.txt and set MTPROXYD_PY",
    );
    false
}

/// The real client libraries' runs: script, its arguments for `secret`, the tag it sends.
fn client_library_cases(secret: &[u8; 16]) -> Vec<(&'static str, Vec<String>, Tag)> {
    let hex_secret = hex::encode(secret);
    let ee = format!("ee{hex_secret}{}", hex::encode(DOMAIN));
    let dd = format!("dd{hex_secret}");
    let telethon = |conn: &str, secret: &str| {
        let args = ["--conn", conn, "--secret", secret];
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let kurigram = |secret: &str| vec!["--secret".to_owned(), secret.to_owned()];
    vec![
        (
            "telethon_interop.py",
            telethon("abridged", &hex_secret),
            Tag::Abridged,
        ),
        (
            "telethon_interop.py",
            telethon("intermediate", &hex_secret),
            Tag::Intermediate,
        ),
        (
            "telethon_interop.py",
            telethon("randomized", &dd),
            Tag::Padded,
        ),
        ("kurigram_interop.py", kurigram(&dd), Tag::Padded),
        ("kurigram_interop.py", kurigram(&ee), Tag::Padded),
    ]
}

/// Runs one client-library script against `s`'s proxy (DC 2); its JSON report, or a test
/// failure with the script's stderr and the proxy's log.
async fn run_client_library(s: &Setup, script: &str, args: &[String]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend([
        "--port".into(),
        s.proxy.port().to_string(),
        "--dc".into(),
        "2".into(),
    ]);
    let r = testkit::py::run_interop(script, &args, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        r.ok,
        "{script} {args:?}: {}\n{}\n{}",
        r.json,
        r.stderr,
        s.daemon.logs()
    );
    r.json
}

#[tokio::test]
async fn real_client_libraries_reach_the_dc() {
    if !client_libraries_present().await {
        return;
    }
    let s = setup_emulated().await;
    wait_emulated_flight(&s).await;
    for (i, (script, args, tag)) in client_library_cases(&s.secret).into_iter().enumerate() {
        let r = run_client_library(&s, script, &args).await;
        let sess = &s.dc.sessions()[i];
        assert_eq!((sess.tag, sess.dc), (Some(tag), 2), "{script} {args:?}");
        let logged = s.dc.messages().into_iter().find_map(|m| match m {
            DcMessage::ReqPq {
                session,
                nonce,
                server_nonce,
                ..
            } if session == sess.id => Some((hex::encode(nonce), hex::encode(server_nonce))),
            _ => None,
        });
        let reported = (
            r["nonce"].as_str().unwrap_or_default().to_owned(),
            r["server_nonce"].as_str().unwrap_or_default().to_owned(),
        );
        assert_eq!(logged, Some(reported), "{script}: {r}");
    }
}

async fn api_data(c: &mut HttpClient, path: &str) -> serde_json::Value {
    let r = c.get(path).await.unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json().unwrap()["data"].clone()
}

/// The API reports the traffic that really went through the proxy: live connections (per user,
/// per route, leaderboard), octets in both directions, unique IPs, totals and bad connections.
#[tokio::test]
async fn api_reports_the_real_traffic() {
    const SESSIONS: usize = 3;
    const K: usize = 100_000;
    let s = setup_with(DcMode::Echo).await;
    let mut c = HttpClient::new(s.api);

    let mut conns = Vec::new();
    for i in 0..SESSIONS {
        let mut conn = TestClient::connect(s.proxy, Mode::Intermediate, s.secret, 2)
            .await
            .unwrap_or_else(|e| panic!("session {i}: {e}\n{}", s.daemon.logs()));
        conn.flush_init().await.unwrap();
        let payload: Vec<u8> = (0..K).map(|b| (b * 7 + i) as u8).collect();
        conn.send(&payload).await.unwrap();
        assert_eq!(conn.recv_exact(K).await.unwrap(), payload, "echo {i}");
        conns.push(conn);
    }

    let user = api_data(&mut c, "/v1/users/alice").await;
    assert_eq!(user["current_connections"], SESSIONS as u64, "{user}");
    assert_eq!(user["active_unique_ips"], 1, "{user}");
    assert_eq!(
        user["active_unique_ips_list"],
        serde_json::json!(["127.0.0.1"])
    );
    let octets = user["total_octets"].as_u64().unwrap();
    // Both directions count; the 64-byte init may or may not arrive in the same read as data.
    let exact = (2 * K * SESSIONS) as u64;
    assert!(
        (exact..=exact + 64 * SESSIONS as u64).contains(&octets),
        "total_octets {octets}, expected ~{exact}"
    );
    let listed = api_data(&mut c, "/v1/users").await;
    assert_eq!(listed[0]["total_octets"], user["total_octets"], "{listed}");

    let edge = api_data(&mut c, "/v1/runtime/connections/summary").await;
    let totals = &edge["data"]["totals"];
    assert_eq!(totals["current_connections"], SESSIONS as u64, "{edge}");
    assert_eq!(
        totals["current_connections_direct"], SESSIONS as u64,
        "{edge}"
    );
    assert_eq!(totals["current_connections_me"], 0, "{edge}");
    assert_eq!(totals["active_users"], 1, "{edge}");
    let top = &edge["data"]["top"]["by_connections"][0];
    assert_eq!(top["username"], "alice", "{edge}");
    assert_eq!(top["current_connections"], SESSIONS as u64, "{edge}");
    assert_eq!(
        edge["data"]["top"]["by_throughput"][0]["total_octets"],
        octets
    );

    let summary = api_data(&mut c, "/v1/stats/summary").await;
    assert_eq!(summary["connections_total"], SESSIONS as u64, "{summary}");
    assert_eq!(summary["connections_bad_total"], 0, "{summary}");
    assert_eq!(
        summary["connections_bad_by_class"],
        serde_json::json!([]),
        "{summary}"
    );

    // A probe of random bytes is masked and counted as bad, under its class.
    let junk: Vec<u8> = (0..200u32).map(|i| (i * 31 + 5) as u8).collect();
    send_probe(s.proxy, &junk, Duration::from_secs(3), false)
        .await
        .unwrap();
    let summary = wait_bad_total(&mut c, 1).await;
    assert_eq!(
        summary["connections_total"],
        SESSIONS as u64 + 1,
        "{summary}"
    );
    assert_eq!(
        summary["connections_bad_by_class"],
        serde_json::json!([{"class": "obfs2_no_matching_secret", "total": 1}]),
        "{summary}"
    );
    // A short HTTP request followed by FIN: too short for an init (a method §2.2 does not
    // forbid, so it is undecided until the FIN).
    send_probe(
        s.proxy,
        b"PUT / HTTP/1.1\r\n\r\n",
        Duration::from_secs(3),
        true,
    )
    .await
    .unwrap();
    let summary = wait_bad_total(&mut c, 2).await;
    let expect = serde_json::json!([
        {"class": "obfs2_no_matching_secret", "total": 1},
        {"class": "obfs2_truncated", "total": 1},
    ]);
    assert_eq!(summary["connections_bad_by_class"], expect, "{summary}");
    let zero = api_data(&mut c, "/v1/stats/zero/all").await;
    assert_eq!(zero["core"]["connections_bad_by_class"], expect, "{zero}");

    // Closing the sessions empties the gauges; the IP stays in the recent window.
    drop(conns);
    let deadline = std::time::Instant::now() + T;
    loop {
        let user = api_data(&mut c, "/v1/users/alice").await;
        if user["current_connections"] == 0 {
            assert_eq!(user["active_unique_ips"], 0, "{user}");
            assert_eq!(
                user["recent_unique_ips_list"],
                serde_json::json!(["127.0.0.1"])
            );
            assert_eq!(user["total_octets"], octets, "{user}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions not released: {user}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let edge = api_data(&mut c, "/v1/runtime/connections/summary").await;
    assert_eq!(edge["data"]["totals"]["current_connections"], 0, "{edge}");
}

/// Quota state: the older `<config>.stats.json` is read once and migrated to
/// `general.quota_state_path`; traffic is flushed on the interval, so a SIGKILL loses at most
/// one interval, and a restart carries on from the file.
#[tokio::test]
async fn quota_state_migrates_and_survives_sigkill() {
    const K: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("config.toml.stats.json");
    std::fs::write(
        &legacy,
        r#"{"version":1,"users":{"alice":{"octets_from_client":1000,"octets_to_client":2000,"quota_used_bytes":3000}}}"#,
    )
    .unwrap();
    let general = "quota_state_path = \"state/quota.json\"\nquota_state_flush_secs = 1";
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let secret: [u8; 16] = rand::random();
    let path = dir.path().to_path_buf();
    let mut s = setup_in(DcMode::Echo, dir, general, NO_EMULATION, secret).await;
    let state = path.join("state/quota.json");
    assert!(state.exists(), "migrated file written\n{}", s.daemon.logs());
    assert!(!legacy.exists() && path.join("config.toml.stats.json.migrated").exists());
    let mut c = HttpClient::new(s.api);
    assert_eq!(
        api_data(&mut c, "/v1/users/alice").await["total_octets"],
        3000
    );

    let mut conn = TestClient::connect(s.proxy, Mode::Intermediate, s.secret, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.daemon.logs()));
    conn.flush_init().await.unwrap();
    let payload: Vec<u8> = (0..K).map(|b| (b * 13) as u8).collect();
    conn.send(&payload).await.unwrap();
    assert_eq!(conn.recv_exact(K).await.unwrap(), payload);
    // Two flush intervals, then the hardest stop there is.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.daemon.kill();
    drop(conn);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let used = saved["users"]["alice"]["quota_used_bytes"]
        .as_u64()
        .unwrap();
    assert!(used >= 3000 + 2 * K as u64, "{saved}");

    // A restart carries on from the file.
    let s2 = restart_in(&path, &s).await;
    let mut c = HttpClient::new(s2.1);
    let total = api_data(&mut c, "/v1/users/alice").await["total_octets"]
        .as_u64()
        .unwrap();
    assert!(total >= 3000 + 2 * K as u64, "{total}");
}

/// Starts the same config again (same ports) in `dir`; returns the daemon and its API.
async fn restart_in(dir: &std::path::Path, s: &Setup) -> (Daemon, SocketAddr) {
    let cfg = dir.join("config.toml");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let mut daemon = Daemon::spawn(
        &binary(),
        &["run", "--config", &cfg_s],
        dir,
        "mtproxyd",
        &[],
    )
    .unwrap();
    daemon
        .wait_ready(s.api, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("restart: {e}\n{}", daemon.logs()));
    (daemon, s.api)
}

/// `/v1/runtime/tls-fingerprints` lists the testkit client's ClientHello (JA3/JA4 as `proto`
/// computes them), split into authenticated and probe observations.
#[tokio::test]
async fn tls_fingerprints_count_the_testkit_hello() {
    let s = setup().await;
    let mut hellos = Vec::new();
    for _ in 0..2 {
        let mode = Mode::Tls(TlsOptions::new(DOMAIN));
        let mut c = TestClient::connect(s.proxy, mode, s.secret, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", s.daemon.logs()));
        req_pq(&mut c, &s.dc).await.unwrap();
        hellos.push(c.client_hello().expect("hello").to_vec());
    }
    let probe = bad_digest_hello(&s.secret, Some(DOMAIN));
    send_probe(s.proxy, &probe, T, true).await.unwrap();

    let good = proto::tls_fingerprint(&hellos[0]).expect("fingerprint");
    let bad = proto::tls_fingerprint(&probe).expect("fingerprint");
    let want_good = (2 + u64::from(bad == good), 2, u64::from(bad == good));
    let mut c = HttpClient::new(s.api);
    let deadline = std::time::Instant::now() + T;
    loop {
        let v = api_data(&mut c, "/v1/runtime/tls-fingerprints?limit=50").await;
        assert_eq!(v["enabled"], true, "{v}");
        let d = &v["data"];
        let rows = d["by_fingerprint"].as_array().cloned().unwrap_or_default();
        let find = |fp: &proto::TlsFingerprint| {
            rows.iter()
                .find(|r| r["ja3"] == fp.ja3.as_str() && r["ja4"] == fp.ja4.as_str())
                .map(|r| {
                    assert_eq!(r["ja3_raw"], fp.ja3_raw.as_str(), "{r}");
                    assert_eq!(r["ja4_raw"], fp.ja4_raw.as_str(), "{r}");
                    let n = |k: &str| r[k].as_u64().unwrap_or(0);
                    (n("total"), n("auth_success"), n("bad_or_probe"))
                })
        };
        let got_good = find(&good);
        let got_bad = find(&bad);
        let users = d["by_user"].as_array().cloned().unwrap_or_default();
        let done = got_good == Some(want_good)
            && (bad == good || got_bad == Some((1, 0, 1)))
            && users
                .iter()
                .any(|r| r["scope"] == "alice" && r["auth_success"] == 2);
        if done {
            // Each row is also scoped by the client address and its /24.
            assert!(d["by_ip"].to_string().contains("127.0.0.1"), "{d}");
            assert!(d["by_cidr"].to_string().contains("127.0.0.0/24"), "{d}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "good {got_good:?} (want {want_good:?}), bad {got_bad:?}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
