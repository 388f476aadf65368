//! The built-in admin page in a real headless browser (Debian's `chromium` driven by
//! Playwright, `tests-py/admin_browser.py`): create → copy the link → disable → enable →
//! edit limits (set, refused, cleared) → delete, and after each click the proxy's behaviour
//! is checked with a real client on the link's secret (relays / is refused) and through the
//! API.

mod common;

use std::path::Path;
use std::time::Duration;

use common::start_on;
use testkit::client::{Mode, TestClient, TestConn, TlsOptions};
use testkit::dc::{DcMode, TestDc};
use testkit::{ConfigFixture, HttpClient};

const CHROMIUM: &str = "/usr/bin/chromium";

fn script() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests-py/admin_browser.py")
}

/// Runs one step of the browser script; returns its `ADMIN {json}` report.
async fn step(api: std::net::SocketAddr, what: &str, user: &str) -> serde_json::Value {
    step_with(api, what, user, &[]).await
}

/// [`step`] with the step's own options (`--field`, `--value`, ...).
async fn step_with(
    api: std::net::SocketAddr,
    what: &str,
    user: &str,
    extra: &[&str],
) -> serde_json::Value {
    let out = tokio::process::Command::new(testkit::py::python())
        .arg(script())
        .args([
            "--url",
            &format!("http://{api}"),
            "--chromium",
            CHROMIUM,
            what,
            user,
        ])
        .args(extra)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ADMIN "))
        .unwrap_or_else(|| {
            panic!(
                "{what}: no report\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("report json");
    assert!(out.status.success() && v["ok"] == true, "{what}: {v}");
    v
}

/// A fake-TLS client with `secret` whose bytes were echoed through the proxy, still open.
async fn relaying(proxy: std::net::SocketAddr, secret: [u8; 16]) -> Option<TestConn> {
    let mode = Mode::Tls(TlsOptions::new("example.com"));
    let mut c = TestClient::connect(proxy, mode, secret, 2).await.ok()?;
    c.set_timeout(Duration::from_secs(3));
    let msg = b"ping through the admin page";
    let echoed = c.send(msg).await.is_ok() && c.recv_exact(msg.len()).await.is_ok_and(|b| b == msg);
    echoed.then_some(c)
}

/// Whether a fake-TLS client with `secret` gets its bytes echoed through the proxy.
async fn relays(proxy: std::net::SocketAddr, secret: [u8; 16]) -> bool {
    relaying(proxy, secret).await.is_some()
}

/// `GET /v1/users/{user}`'s data.
async fn user_data(c: &mut HttpClient, user: &str) -> serde_json::Value {
    let r = c.get(&format!("/v1/users/{user}")).await.expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().expect("json")["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_drives_the_proxy_in_a_real_browser() {
    if !Path::new(CHROMIUM).exists() || !testkit::py::has_modules(&["playwright"]).await {
        testkit::external::missing(
            "chromium and the playwright Python package",
            "run scripts/install-test-deps.sh and scripts/test.sh (tests-py/requirements.txt)",
        );
        return;
    }
    let dc = TestDc::start(DcMode::Echo).await.expect("test DC");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = ConfigFixture::new(0);
    let overrides: String = (1..=5)
        .map(|i| format!("\"{i}\" = \"{0}\"\n\"-{i}\" = \"{0}\"\n", dc.addr()))
        .collect();
    f.extra = format!("[dc_overrides]\n{overrides}");
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], f.server_port).into();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        f.render()
            .replace("[censorship]\n", "[censorship]\ntls_emulation = false\n"),
    )
    .expect("write");
    let r = start_on(dir.path(), &path, None).await;

    let created = step(r.api, "create", "webuser").await;
    let link = created["link"].as_str().expect("link").to_owned();
    assert!(created["qr"] == true, "{created}");
    if let Some(copied) = created["copied"].as_str() {
        assert_eq!(copied, link, "the copy button copies the first link");
    }
    let ee = link
        .split("secret=")
        .nth(1)
        .and_then(|s| s.strip_prefix("ee"))
        .expect("an ee link");
    let mut secret = [0u8; 16];
    hex::decode_to_slice(&ee[..32], &mut secret).expect("hex secret");
    assert!(relays(proxy, secret).await, "{}", r.daemon.logs());

    step(r.api, "disable", "webuser").await;
    let mut c = HttpClient::new(r.api);
    let u = c
        .get("/v1/users/webuser")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(u["data"]["enabled"], false);
    assert!(
        !relays(proxy, secret).await,
        "a disabled user's client must not relay"
    );

    step(r.api, "enable", "webuser").await;
    assert!(relays(proxy, secret).await, "re-enabled");

    // Limits through the page's edit form: at most one TCP connection...
    let set = ["--field", "max_tcp_conns", "--value", "1"];
    let edited = step_with(r.api, "edit", "webuser", &set).await;
    assert_eq!(
        user_data(&mut c, "webuser").await["max_tcp_conns"],
        1,
        "{edited}"
    );
    assert!(
        edited["summary"].to_string().contains("max 1 conns"),
        "{edited}"
    );
    // ... which the proxy applies: a second client is refused while the first relays (the
    // earlier clients' sessions may take a moment to end).
    let mut first = None;
    for _ in 0..20 {
        first = relaying(proxy, secret).await;
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        first.is_some(),
        "one connection is allowed\n{}",
        r.daemon.logs()
    );
    assert!(
        !relays(proxy, secret).await,
        "a second connection over max_tcp_conns = 1 must not relay"
    );
    drop(first);
    // A value the API refuses: the form stays open with the API's message, nothing changes.
    let bad = [
        "--field",
        "expiration_rfc3339",
        "--value",
        "next tuesday",
        "--expect-error",
    ];
    let refused = step_with(r.api, "edit", "webuser", &bad).await;
    let msg = refused["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("bad_request") && msg.contains("expiration_rfc3339"),
        "{refused}"
    );
    assert_eq!(
        refused["invalid"], true,
        "the refused field is marked: {refused}"
    );
    assert_eq!(
        user_data(&mut c, "webuser").await["expiration_rfc3339"],
        serde_json::Value::Null
    );
    // Emptying the field clears the limit.
    let clear = ["--field", "max_tcp_conns", "--value", ""];
    let cleared = step_with(r.api, "edit", "webuser", &clear).await;
    assert_eq!(cleared["before"], "1", "{cleared}");
    assert_eq!(
        user_data(&mut c, "webuser").await["max_tcp_conns"],
        serde_json::Value::Null,
        "{cleared}"
    );

    step(r.api, "delete", "webuser").await;
    assert_eq!(c.get("/v1/users/webuser").await.expect("get").status, 404);
    assert!(!relays(proxy, secret).await);
}
