//! telemt's own API client (`telemt_api.py` from telemt 3.4.25, a real client of a
//! telemt-compatible proxy) runs every subcommand against the real binary.
//!
//! The script is a test input kept unchanged in `tests/data/telemt-3.4.25` (with telemt's
//! license), or `$MTPROXYD_TELEMT_API_PY`. Missing script or Python: the test fails unless
//! `MTPROXYD_SKIP_EXTERNAL=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::start_fixture;
use testkit::ConfigFixture;

fn script() -> Option<PathBuf> {
    let from_env = std::env::var_os("MTPROXYD_TELEMT_API_PY").map(PathBuf::from);
    let beside =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/telemt-3.4.25/telemt_api.py");
    from_env.or(Some(beside)).filter(|p| p.is_file())
}

fn run(script: &PathBuf, url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(testkit::py::python())
        .arg(script)
        .args(["-u", url])
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemt_api_py_runs_every_subcommand() {
    let Some(script) = script() else {
        testkit::external::missing(
            "telemt_api.py (telemt 3.4.25)",
            "restore crates/mtproxyd/tests/data/telemt-3.4.25 or set MTPROXYD_TELEMT_API_PY",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = ConfigFixture::new(0);
    let r = start_fixture(dir.path(), &mut f).await;
    let url = format!("http://{}", r.api);
    let reads = [
        "health",
        "info",
        "status",
        "init",
        "limits",
        "posture",
        "whitelist",
        "summary",
        "zero",
        "upstreams",
        "minimal",
        "me-writers",
        "dcs",
        "me-pool",
        "me-quality",
        "upstream-quality",
        "nat-stun",
        "me-selftest",
        "connections",
        "users",
        "gen-secret",
    ];
    for cmd in reads {
        let (ok, out) = run(&script, &url, &[cmd]);
        assert!(ok, "`{cmd}` failed:\n{out}\n{}", r.daemon.logs());
    }
    let (ok, out) = run(&script, &url, &["events", "--limit", "5"]);
    assert!(ok, "events: {out}");
    assert!(out.contains("\"events\""), "{out}");

    let secret = testkit::random_secret_hex();
    let writes: Vec<Vec<&str>> = vec![
        vec![
            "create",
            "bob",
            "--secret",
            &secret,
            "--max-conns",
            "5",
            "--quota",
            "1000000",
            "--max-ips",
            "3",
            "--expires",
            "2031-01-01T00:00:00Z",
        ],
        vec!["user", "bob"],
        vec![
            "patch",
            "bob",
            "--max-conns",
            "7",
            "--ad-tag",
            "00112233445566778899aabbccddeeff",
        ],
        vec!["secret", "bob"],
        vec!["delete", "bob"],
    ];
    for args in &writes {
        let (ok, out) = run(&script, &url, args);
        assert!(ok, "{args:?} failed:\n{out}\n{}", r.daemon.logs());
    }
    let (_, out) = run(&script, &url, &["users"]);
    assert!(out.contains("alice") && !out.contains("\"bob\""), "{out}");
    // The client shows our errors as telemt's would: unknown user → 404 not_found.
    let (ok, out) = run(&script, &url, &["user", "nobody"]);
    assert!(!ok, "{out}");
    assert!(out.contains("not_found"), "{out}");
}
