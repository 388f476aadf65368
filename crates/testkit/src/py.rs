//! Runs the Python interop scripts of `tests-py/` (real third-party client libraries) and parses
//! their machine-readable result line.
//!
//! Interpreter: `$MTPROXYD_PY` if set, else `python3`. It must have the packages of
//! `tests-py/requirements.txt`, e.g.
//! `python3 -m venv /tmp/pyvenv && /tmp/pyvenv/bin/pip install -r tests-py/requirements.txt`
//! then `export MTPROXYD_PY=/tmp/pyvenv/bin/python`.
//!
//! Each script prints exactly one line `INTEROP {json}` with at least `"ok": bool`.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Prefix of the result line.
pub const RESULT_PREFIX: &str = "INTEROP ";

/// Errors running a script.
#[derive(Debug)]
pub enum PyError {
    /// The interpreter could not be started.
    Spawn(std::io::Error),
    /// The script did not finish in time (it was killed).
    Timeout {
        /// Captured output so far is not available after a kill; the script name.
        script: String,
    },
    /// No `INTEROP` line, or it was not JSON.
    NoResult {
        /// Exit status text.
        status: String,
        /// Captured stdout.
        stdout: String,
        /// Captured stderr.
        stderr: String,
    },
}

impl fmt::Display for PyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start {}: {e}", python()),
            Self::Timeout { script } => write!(f, "{script} timed out"),
            Self::NoResult {
                status,
                stdout,
                stderr,
            } => write!(
                f,
                "no result line ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ),
        }
    }
}

impl std::error::Error for PyError {}

/// A finished script's result.
#[derive(Debug, Clone)]
pub struct InteropResult {
    /// `ok` member of the result JSON.
    pub ok: bool,
    /// The whole result JSON.
    pub json: serde_json::Value,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr (library logs).
    pub stderr: String,
}

/// The interpreter used: `$MTPROXYD_PY` or `python3`.
pub fn python() -> String {
    std::env::var("MTPROXYD_PY")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Absolute path of the `tests-py/` folder of this workspace.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests-py")
}

/// True if the interpreter starts and can import every module in `modules`.
pub async fn has_modules(modules: &[&str]) -> bool {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    Command::new(python())
        .args(["-c", &code])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Runs `tests-py/<script> args...` with a deadline and returns its result line.
/// A script that ran but reported `"ok": false` is `Ok` with `ok == false` (the JSON says why).
pub async fn run_interop(
    script: &str,
    args: &[String],
    timeout: Duration,
) -> Result<InteropResult, PyError> {
    let path = scripts_dir().join(script);
    let child = Command::new(python())
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(PyError::Spawn)?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(PyError::Spawn)?,
        Err(_) => {
            return Err(PyError::Timeout {
                script: script.to_owned(),
            })
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
    match json {
        Some(json) => Ok(InteropResult {
            ok: json.get("ok").and_then(serde_json::Value::as_bool) == Some(true),
            json,
            stdout,
            stderr,
        }),
        None => Err(PyError::NoResult {
            status: out.status.to_string(),
            stdout,
            stderr,
        }),
    }
}
