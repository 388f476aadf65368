//! The real binary against its own `GET /v1/openapi.json`: `tests-py/schema_fuzz.py` drives
//! schemathesis over every documented operation (positive and negative inputs, a fixed seed)
//! and must find no 5xx and no response the document does not describe. The API has an
//! `Authorization` value configured, so the optional security scheme is exercised too.
//! Missing Python or schemathesis: the test fails unless `MTPROXYD_SKIP_EXTERNAL=1`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::start_fixture;
use testkit::ConfigFixture;

/// `[server.api] auth_header` during the run.
const AUTH: &str = "Bearer fuzz";

/// The run takes seconds; the bound only stops a wedged one.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if !testkit::py::has_modules(&["schemathesis"]).await {
        testkit::external::missing(
            "Python package schemathesis",
            "pip install -r tests-py/requirements.txt and set MTPROXYD_PY",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = ConfigFixture::new(0);
    f.auth_header = AUTH.to_owned();
    let r = start_fixture(dir.path(), &mut f).await;
    let mut client = r.client();
    let anonymous = client.get("/v1/health").await.expect("health");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let script = testkit::py::scripts_dir().join("schema_fuzz.py");
    let child = tokio::process::Command::new(testkit::py::python())
        .arg(&script)
        .args(["--url", &format!("http://{}", r.api)])
        .args(["--auth", AUTH, "--seed", "1", "--max-examples", "20"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("schema_fuzz.py finished in time")
        .expect("schema_fuzz.py output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        r.daemon.logs()
    );
    // Every documented operation was exercised: an empty run would also exit 0.
    let selected = number_after(&text, "Selected: ", '/');
    let tested = number_after(&text, "Tested: ", '\n');
    assert!(selected.is_some_and(|n| n > 30), "{text}");
    assert_eq!(tested, selected, "{text}");
    assert!(!r.daemon.logs().contains("panicked"), "{}", r.daemon.logs());
}

/// The integer between `label` and `end` in schemathesis's summary.
fn number_after(text: &str, label: &str, end: char) -> Option<u32> {
    text.split(label)
        .nth(1)?
        .split(end)
        .next()?
        .trim()
        .parse()
        .ok()
}
