//! One-shot commands of the real binary: `check` and `links`.

mod common;

use common::{check, run_cmd};
use testkit::ConfigFixture;

#[test]
fn check_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, ConfigFixture::new(9).render()).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(out.contains("ok:"), "{out}");
    assert!(out.contains("1 users"), "{out}");
}

#[test]
fn check_rejects_a_bad_value_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let mut f = ConfigFixture::new(9);
    f.extra = String::new();
    let text = f
        .render()
        .replace("runtime_edge_enabled = true", "runtime_edge_top_n = 0");
    std::fs::write(&path, text).unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("server.api.runtime_edge_top_n"), "{out}");
}

#[test]
fn check_rejects_broken_toml_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[server\nport = 1\n").unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("error"), "{out}");
    let (ok, out) = check(&dir.path().join("absent.toml"));
    assert!(!ok, "{out}");
}

#[test]
fn check_reports_unknown_keys_as_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let mut f = ConfigFixture::new(9);
    f.extra = "[general.no_such_section]\nfoo = 1\n".to_owned();
    std::fs::write(&path, f.render()).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(out.contains("warning:"), "{out}");
    assert!(out.contains("no_such_section"), "{out}");
}

#[test]
fn check_warns_about_detectable_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let f = ConfigFixture::new(9);
    std::fs::write(&path, f.render()).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(
        !out.contains("general.modes"),
        "tls alone must not warn: {out}"
    );

    let text = f.render().replace(
        "classic = false\nsecure = false",
        "classic = true\nsecure = true",
    );
    std::fs::write(&path, text).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "a warning is not an error: {out}");
    for key in ["general.modes.classic", "general.modes.secure"] {
        assert!(out.contains(&format!("warning: {key} = true")), "{out}");
    }
    assert!(out.contains("fully-encrypted-traffic"), "{out}");
}

#[test]
fn check_warns_that_session_tickets_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let f = ConfigFixture::new(9);
    std::fs::write(&path, f.render()).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(!out.contains("tls_new_session_tickets"), "{out}");
    let text = f.render().replace(
        "tls_domain = \"example.com\"",
        "tls_domain = \"example.com\"\ntls_new_session_tickets = 2",
    );
    std::fs::write(&path, text).unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "a warning is not an error: {out}");
    assert!(
        out.contains("warning: censorship.tls_new_session_tickets = 2 has no effect"),
        "{out}"
    );
}

#[test]
fn links_prints_tls_links_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let mut f = ConfigFixture::new(9);
    f.users
        .push(("bob".to_owned(), testkit::random_secret_hex()));
    std::fs::write(&path, f.render()).unwrap();
    let p = path.to_str().unwrap();

    let out = run_cmd(&["links", "--config", p], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let domain_hex = "6578616d706c652e636f6d"; // "example.com"
    for (name, secret) in &f.users {
        assert!(text.contains(&format!("# {name}\n")), "{text}");
        let link = format!(
            "tls tg://proxy?server=127.0.0.1&port={}&secret=ee{secret}{domain_hex}",
            f.server_port
        );
        assert!(text.contains(&link), "missing {link} in\n{text}");
    }

    let out = run_cmd(&["links", "--config", p, "bob"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# bob") && !text.contains("# alice"),
        "{text}"
    );

    let out = run_cmd(&["links", "--config", p, "nobody"], dir.path());
    assert!(!out.status.success());
}

#[test]
fn run_refuses_an_invalid_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = ConfigFixture::new(9).render().replace(
        "runtime_edge_enabled = true",
        "request_body_limit_bytes = 0",
    );
    std::fs::write(&path, &text).unwrap();
    let out = run_cmd(&["run", "--config", path.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.api.request_body_limit_bytes"),
        "{stderr}"
    );
    // The file is left exactly as it was.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// `mtproxyd user ...` drives the running proxy's API with the address and auth header of
/// the config file.
#[tokio::test]
async fn user_subcommands_go_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = testkit::ConfigFixture::new(0);
    let r = common::start_fixture(dir.path(), &mut f).await;
    let config = r.config.clone();
    // Turn on API auth by a hand edit: the CLI must read the header from the file.
    f.auth_header = "Bearer cli-secret".into();
    std::fs::write(&config, f.render()).unwrap();
    let locked = common::eventually(std::time::Duration::from_secs(10), || {
        let mut c = testkit::HttpClient::new(r.api);
        async move { (c.get("/v1/health").await.ok()?.status == 401).then_some(()) }
    })
    .await;
    assert!(locked.is_some(), "auth not applied\n{}", r.daemon.logs());
    let p = config.to_str().unwrap();
    let user = |args: &[&str]| {
        let mut all = vec!["user", "--config", p];
        all.extend_from_slice(args);
        let out = run_cmd(&all, dir.path());
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = user(&["add", "bob", "--max-conns", "3", "--quota", "1000000"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("created bob") && out.contains("tg://proxy?"),
        "{out}"
    );
    assert!(std::fs::read_to_string(&r.config)
        .unwrap()
        .contains("bob = 3"));
    let (ok, out) = user(&["disable", "bob"]);
    assert!(ok, "{out}");
    let (ok, out) = user(&["list"]);
    assert!(ok, "{out}");
    let bob = out
        .lines()
        .find(|l| l.starts_with("bob "))
        .unwrap_or_default();
    assert!(bob.contains("false") && bob.contains("1000000"), "{out}");
    let (ok, out) = user(&["enable", "bob"]);
    assert!(ok, "{out}");
    let (ok, out) = user(&["link", "bob"]);
    assert!(ok && out.contains("tg://proxy?"), "{out}");
    let (ok, out) = user(&["del", "bob"]);
    assert!(ok, "{out}");
    let (ok, out) = user(&["link", "bob"]);
    assert!(!ok && out.contains("not_found"), "{out}");
    drop(r);
    // No proxy running: a clear error, not a hang.
    let (ok, out) = user(&["list"]);
    assert!(!ok && out.contains("is mtproxyd running"), "{out}");
}

/// A loopback server that answers any first bytes with `reply` (kept running by the thread).
fn tiny_server(reply: &'static [u8]) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(&mut s, reply);
        }
    });
    addr
}

/// `mtproxyd doctor` names each broken prerequisite with its fix and exits 1; on a sound
/// setup every line is ok (only loopback peers are contacted: DCs and mask are overridden).
#[test]
fn doctor_names_broken_prerequisites() {
    let dir = tempfile::tempdir().unwrap();
    let dc = tiny_server(b"");
    let mask = tiny_server(&[0x16, 0x03, 0x03, 0x00, 0x00]);
    let mut f = ConfigFixture::new(testkit::free_port());
    let overrides: String = (1..=5).map(|i| format!("\"{i}\" = \"{dc}\"\n")).collect();
    f.extra = format!("[dc_overrides]\n{overrides}");
    let text = |mask: std::net::SocketAddr| {
        f.render().replace(
            "tls_domain = \"example.com\"\n",
            &format!(
                "tls_domain = \"example.com\"\nmask_host = \"127.0.0.1\"\nmask_port = {}\n",
                mask.port()
            ),
        )
    };
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text(mask)).unwrap();
    let p = path.to_str().unwrap();
    let out = run_cmd(&["doctor", "--config", p], dir.path());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    for want in [
        "ok    config",
        "ok    client listener",
        "ok    mask host",
        "ok    DCs: 5 of 5",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    // The mask host gone: one FAIL line naming it, with the fix; exit 1.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(&path, text(closed)).unwrap();
    let out = run_cmd(&["doctor", "--config", p], dir.path());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("FAIL  mask host") && said.contains("fix: "),
        "{said}"
    );
    // A broken config stops there.
    std::fs::write(&path, "[broken").unwrap();
    let out = run_cmd(&["doctor", "--config", p], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  config"));
}

/// With the middle-proxy route on, `doctor` probes the middle proxies the cached proxy config
/// lists, and says so when none answers.
#[test]
fn doctor_probes_the_cached_middle_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let dc = tiny_server(b"");
    let me = tiny_server(b"");
    let mask = tiny_server(&[0x16, 0x03, 0x03, 0x00, 0x00]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut f = ConfigFixture::new(testkit::free_port());
    let overrides: String = (1..=5).map(|i| format!("\"{i}\" = \"{dc}\"\n")).collect();
    f.extra = format!("[dc_overrides]\n{overrides}");
    let cache = dir.path().join("proxy-config-v4.txt");
    let text = f
        .render()
        .replace(
            "use_middle_proxy = false\n",
            &format!(
                "use_middle_proxy = true\nproxy_config_v4_cache_path = {:?}\n",
                cache.display().to_string()
            ),
        )
        .replace(
            "tls_domain = \"example.com\"\n",
            &format!(
                "tls_domain = \"example.com\"\nmask_host = \"127.0.0.1\"\nmask_port = {}\n",
                mask.port()
            ),
        );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let doctor = |listed: std::net::SocketAddr| {
        std::fs::write(&cache, format!("default 2;\nproxy_for 2 {listed};\n")).unwrap();
        let out = run_cmd(&["doctor", "--config", p], dir.path());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, said) = doctor(me);
    assert!(ok, "{said}");
    assert!(
        said.contains("ok    middle proxies: 1 of 1 probed, all reachable"),
        "{said}"
    );
    let (ok, said) = doctor(closed);
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  middle proxies: none reachable"),
        "{said}"
    );
}
