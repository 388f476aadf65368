//! The real binary's lifecycle: first start, hand edits, SIGHUP, restart persistence,
//! graceful shutdown.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{check, eventually, start_fixture, start_on, usernames, BIN};
use serde_json::json;
use sha2::Digest as _;
use testkit::{ConfigFixture, Daemon, HttpClient};

const WAIT: Duration = Duration::from_secs(15);

/// README: `mtproxyd run` with no config anywhere creates one in the user's config directory
/// (not the working directory: a source checkout stays clean), with the default user and the
/// API on 127.0.0.1:9091, logs the user's links and serves `/v1/health`; `check` without
/// `--config` finds the same file.
#[tokio::test]
async fn run_creates_default_config_and_serves_health() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let xdg_s = xdg.to_str().unwrap().to_owned();
    let env = [("XDG_CONFIG_HOME", xdg_s.as_str()), ("MTPROXYD_CONFIG", "")];
    let mut d = Daemon::spawn(Path::new(BIN), &["run"], dir.path(), "first", &env).unwrap();
    let config = xdg.join("mtproxyd").join("config.toml");
    let logs = eventually(WAIT, || {
        let logs = d.logs();
        async move {
            (logs.contains("link: tg://proxy?") || logs.contains("error")).then_some(logs)
        }
    })
    .await
    .expect("no link logged");
    assert!(config.exists(), "{logs}");
    assert!(
        !dir.path().join("config.toml").exists(),
        "nothing written to the cwd"
    );
    assert!(logs.contains("created default config"), "{logs}");
    let out = std::process::Command::new(BIN)
        .arg("check")
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", &xdg)
        .env_remove("MTPROXYD_CONFIG")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("is valid"), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:9091\""), "{text}");
    assert!(text.contains("[access.users]"), "{text}");
    let (ok, out) = check(&config);
    assert!(ok, "{out}");
    // 9091 may be taken on a shared machine: then the API must have logged the bind failure.
    if logs.contains("control-plane API listening") {
        let mut c = HttpClient::new(([127, 0, 0, 1], 9091).into());
        let info = c.get("/v1/system/info").await.unwrap().json().unwrap();
        assert_eq!(
            Path::new(info["data"]["config_path"].as_str().unwrap()),
            config.canonicalize().unwrap()
        );
    } else {
        assert!(logs.contains("cannot bind 127.0.0.1:9091"), "{logs}");
    }
    d.signal("TERM").unwrap();
    let status = d.wait_exit(WAIT).unwrap().expect("did not exit");
    assert!(status.success(), "{status}: {}", d.logs());

    // Second start on the created file (moved to a free port): health and the default user.
    let r = start_on(dir.path(), &config, None).await;
    let mut c = r.client();
    let health = c.get("/v1/health").await.unwrap();
    assert_eq!(health.status, 200);
    let body = health.json().unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["data"]["status"], "ok");
    assert_eq!(usernames(&mut c).await.unwrap(), vec!["default".to_owned()]);
    // Build metadata travels from the binary's build script through the runtime port.
    let info = system_info(&mut c).await;
    let rustc = info["rustc_version"].as_str().unwrap_or_default();
    assert!(rustc.starts_with("rustc "), "{info}");
    assert!(
        !info["build_profile"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{info}"
    );
}

async fn system_info(c: &mut HttpClient) -> serde_json::Value {
    c.get("/v1/system/info").await.unwrap().json().unwrap()["data"].clone()
}

#[tokio::test]
async fn hand_edits_apply_without_restart_and_broken_edits_keep_the_old_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = ConfigFixture::new(0);
    let r = start_fixture(dir.path(), &mut f).await;
    let mut c = r.client();
    assert_eq!(usernames(&mut c).await.unwrap(), vec!["alice".to_owned()]);
    assert_eq!(system_info(&mut c).await["config_reload_count"], 0);

    // Hand edit: add bob, written in place like an editor would.
    f.users
        .push(("bob".to_owned(), testkit::random_secret_hex()));
    std::fs::write(&r.config, f.render()).unwrap();
    let names = eventually(WAIT, || {
        let mut c = HttpClient::new(r.api);
        async move { usernames(&mut c).await.filter(|n| n.len() == 2) }
    })
    .await
    .unwrap_or_else(|| panic!("hand edit not applied\n{}", r.daemon.logs()));
    assert_eq!(names, vec!["alice".to_owned(), "bob".to_owned()]);
    let info = system_info(&mut c).await;
    assert!(info["config_reload_count"].as_u64().unwrap() >= 1, "{info}");
    assert!(info["last_config_reload_epoch_secs"].is_u64(), "{info}");
    let good_revision = info["config_hash"].as_str().unwrap().to_owned();

    // Broken hand edit: reported, old config kept; the revision is the file's (docs/DECISIONS.md #13).
    let broken = b"this is [not toml\n";
    std::fs::write(&r.config, broken).unwrap();
    wait_for_reload_failures(&r, 1).await;
    assert_eq!(
        usernames(&mut c).await.unwrap(),
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    let health = c.get("/v1/health").await.unwrap().json().unwrap();
    let broken_revision = hex::encode(sha2::Sha256::digest(broken));
    assert_eq!(health["revision"], broken_revision.as_str());
    let info = system_info(&mut c).await;
    assert_eq!(info["config_hash"], broken_revision.as_str());
    // Writes say the file on disk is invalid and where; a stale If-Match is still a conflict.
    let r1 = c
        .send_json("POST", "/v1/users", &json!({"username": "carol"}))
        .await
        .unwrap();
    assert_eq!(r1.status, 503, "{}", r1.text());
    let body = r1.json().unwrap();
    assert_eq!(body["error"]["code"], "config_invalid_on_disk");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("config.toml"), "{message}");
    let stale = [("If-Match", good_revision.as_str())];
    let r2 = c
        .request("PATCH", "/v1/users/alice", &stale, Some(b"{}"))
        .await
        .unwrap();
    assert_eq!(r2.status, 409, "{}", r2.text());

    // One bad secret makes the whole file invalid: nobody is dropped.
    let good = f.render();
    let bad_secret = good.replacen(&f.users[1].1, "nothex", 1);
    assert_ne!(good, bad_secret);
    std::fs::write(&r.config, &bad_secret).unwrap();
    wait_for_reload_failures(&r, 2).await;
    assert_eq!(
        usernames(&mut c).await.unwrap(),
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    let (valid, out) = check(&r.config);
    assert!(!valid, "check accepted a bad secret: {out}");
    assert!(out.contains("access.users.bob"), "{out}");

    // Fixing the file applies again.
    f.users.retain(|(n, _)| n != "bob");
    std::fs::write(&r.config, f.render()).unwrap();
    let names = eventually(WAIT, || {
        let mut c = HttpClient::new(r.api);
        async move { usernames(&mut c).await.filter(|n| n.len() == 1) }
    })
    .await
    .expect("fixed file not applied");
    assert_eq!(names, vec!["alice".to_owned()]);
}

#[tokio::test]
async fn sighup_rereads_the_file_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = ConfigFixture::new(0);
    let mut r = start_fixture(dir.path(), &mut f).await;
    f.users
        .push(("carol".to_owned(), testkit::random_secret_hex()));
    std::fs::write(&r.config, f.render()).unwrap();
    r.daemon.signal("HUP").unwrap();
    let logs = eventually(WAIT, || {
        let logs = r.daemon.logs();
        async move { logs.contains("SIGHUP: ").then_some(logs) }
    })
    .await
    .expect("SIGHUP not handled");
    assert!(
        logs.contains("SIGHUP: re-reading the config file"),
        "{logs}"
    );
    let mut c = r.client();
    let names = eventually(WAIT, || {
        let mut c = HttpClient::new(r.api);
        async move { usernames(&mut c).await.filter(|n| n.len() == 2) }
    })
    .await
    .expect("SIGHUP reload not applied");
    assert_eq!(names, vec!["alice".to_owned(), "carol".to_owned()]);
    // A second SIGHUP with no change is harmless.
    r.daemon.signal("HUP").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.daemon.try_exit_status().unwrap().is_none());
    assert_eq!(c.get("/v1/health").await.unwrap().status, 200);
}

#[tokio::test]
async fn api_writes_persist_across_a_restart_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = ConfigFixture::new(0);
    let mut r = start_fixture(dir.path(), &mut f).await;
    let mut c = r.client();
    let created = c
        .send_json(
            "POST",
            "/v1/users",
            &json!({"username": "dave", "max_tcp_conns": 3}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json().unwrap()["data"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let patched = c
        .send_json(
            "PATCH",
            "/v1/users/alice",
            &json!({"data_quota_bytes": 1000}),
        )
        .await
        .unwrap();
    assert_eq!(patched.status, 200, "{}", patched.text());

    r.daemon.signal("TERM").unwrap();
    let status = r.daemon.wait_exit(WAIT).unwrap().expect("no exit");
    assert!(status.success(), "{status}\n{}", r.daemon.logs());
    assert!(r.daemon.logs().contains("SIGTERM: shutting down"));
    // Quota state flushed on shutdown, next to the config (default general.quota_state_path).
    assert!(dir.path().join("mtproxyd.quota.json").exists());

    let r2 = start_on(dir.path(), &r.config, None).await;
    let mut c = r2.client();
    let dave = c.get("/v1/users/dave").await.unwrap();
    assert_eq!(dave.status, 200, "{}", dave.text());
    let v = dave.json().unwrap();
    assert_eq!(v["data"]["max_tcp_conns"], 3);
    let tls = v["data"]["links"]["tls"][0].as_str().unwrap();
    assert!(tls.contains(&format!("secret=ee{secret}")), "{tls}");
    let alice = c.get("/v1/users/alice").await.unwrap().json().unwrap();
    assert_eq!(alice["data"]["data_quota_bytes"], 1000);
}

#[tokio::test]
async fn sigint_is_graceful_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = ConfigFixture::new(0);
    let mut r = start_fixture(dir.path(), &mut f).await;
    r.daemon.signal("INT").unwrap();
    let status = r.daemon.wait_exit(WAIT).unwrap().expect("no exit");
    assert!(status.success(), "{status}\n{}", r.daemon.logs());
    // The API is gone.
    let mut c = HttpClient::new(r.api).with_timeout(Duration::from_secs(2));
    assert!(c.get("/v1/health").await.is_err());
}

/// What the binary feeds the runtime views: data plane up, upstream rows from config, the
/// not-built ME pool and STUN probe reported as unavailable, startup components.
#[tokio::test]
async fn runtime_views_reflect_the_wired_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = ConfigFixture::new(0);
    f.extra = "[[upstreams]]\ntype = \"direct\"\nweight = 3\n".to_owned();
    let r = start_fixture(dir.path(), &mut f).await;
    let mut c = r.client();

    let gates = c.get("/v1/runtime/gates").await.unwrap().json().unwrap();
    assert_eq!(gates["data"]["accepting_new_connections"], true, "{gates}");
    assert_eq!(gates["data"]["startup_status"], "ready", "{gates}");

    let init = c
        .get("/v1/runtime/initialization")
        .await
        .unwrap()
        .json()
        .unwrap();
    let comps = init["data"]["components"].as_array().unwrap();
    let status_of = |id: &str| {
        comps
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of("config").as_deref(), Some("ready"));
    assert_eq!(status_of("listeners").as_deref(), Some("ready"), "{init}");
    assert_eq!(status_of("api").as_deref(), Some("ready"));
    assert_eq!(init["data"]["transport_mode"], "direct");

    let uq = c
        .get("/v1/runtime/upstream_quality")
        .await
        .unwrap()
        .json()
        .unwrap();
    let rows = uq["data"]["upstreams"].as_array().expect("upstream rows");
    assert_eq!(rows.len(), 1, "{uq}");
    assert_eq!(rows[0]["route_kind"], "direct");
    assert_eq!(rows[0]["weight"], 3);

    let me = c
        .get("/v1/runtime/me_pool_state")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["data"]["reason"], "source_unavailable", "{me}");

    // A client connection that is not MTProto is counted (and masked/dropped).
    let before = c.get("/v1/stats/summary").await.unwrap().json().unwrap()["data"]
        ["connections_total"]
        .as_u64()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", f.server_port))
            .await
            .unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    }
    let counted = eventually(WAIT, || {
        let mut c = HttpClient::new(r.api);
        async move {
            let v = c.get("/v1/stats/summary").await.ok()?.json().ok()?;
            (v["data"]["connections_total"].as_u64()? > before).then_some(())
        }
    })
    .await;
    assert!(
        counted.is_some(),
        "client connection not counted\n{}",
        r.daemon.logs()
    );
}

/// Waits until the events ring holds `n` `config.reload.failed` events.
async fn wait_for_reload_failures(r: &common::Running, n: usize) {
    let seen = eventually(WAIT, || {
        let mut c = HttpClient::new(r.api);
        async move {
            let v = c.get("/v1/runtime/events/recent").await.ok()?.json().ok()?;
            let failures = v["data"]["data"]["events"]
                .as_array()?
                .iter()
                .filter(|e| e["event_type"] == "config.reload.failed")
                .count();
            (failures >= n).then_some(())
        }
    })
    .await;
    assert!(
        seen.is_some(),
        "no reload failure event #{n}\n{}",
        r.daemon.logs()
    );
}
