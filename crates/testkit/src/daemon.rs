//! A spawned `mtproxyd` process: start it on a config, wait until its API answers, send
//! signals, read its logs. Output goes to files (not pipes) so a chatty daemon can never block
//! on a full pipe, and the logs survive for failure messages.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http::HttpClient;

/// Picks a currently free TCP port on 127.0.0.1 (bind to port 0, read it, release it).
/// Another process may grab it before the daemon binds: callers retry on a bind failure.
pub fn free_port() -> u16 {
    // Binding 127.0.0.1:0 only fails when the machine is out of ports; fall back to a port from
    // the ephemeral range so the caller's retry loop still makes progress.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|_| 20_000 + rand::random::<u16>() % 20_000)
}

/// Daemon errors.
#[derive(Debug)]
pub enum DaemonError {
    /// Spawning or signalling failed.
    Io(io::Error),
    /// The process exited before becoming ready.
    Exited {
        /// Exit status.
        status: ExitStatus,
        /// Captured stdout+stderr.
        logs: String,
    },
    /// Not ready within the deadline.
    NotReady {
        /// Captured stdout+stderr.
        logs: String,
    },
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Exited { status, logs } => write!(f, "daemon exited ({status}):\n{logs}"),
            Self::NotReady { logs } => write!(f, "daemon not ready in time:\n{logs}"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<io::Error> for DaemonError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A running daemon. Dropping it SIGKILLs the process (tests never leak daemons).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Spawns `binary args...` in `workdir`, logging to `<workdir>/<log_name>.{out,err}`.
    /// `RUST_LOG` is passed through from `env` pairs only (the test's own env is inherited).
    pub fn spawn(
        binary: &Path,
        args: &[&str],
        workdir: &Path,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, DaemonError> {
        let stdout_path = workdir.join(format!("{log_name}.out"));
        let stderr_path = workdir.join(format!("{log_name}.err"));
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(File::create(&stdout_path)?))
            .stderr(Stdio::from(File::create(&stderr_path)?));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        Ok(Self {
            child: Some(child),
            stdout_path,
            stderr_path,
        })
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Captured stdout followed by stderr.
    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!("--- stdout ---\n{out}--- stderr ---\n{err}")
    }

    /// `Some(status)` if the process has exited.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, DaemonError> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// Waits until `GET /v1/health` on `api` answers (200, or 401 when an `Authorization`
    /// value is configured), the process exits, or `timeout`.
    pub async fn wait_ready(
        &mut self,
        api: SocketAddr,
        timeout: Duration,
    ) -> Result<(), DaemonError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Err(DaemonError::Exited {
                    status,
                    logs: self.logs(),
                });
            }
            let mut client = HttpClient::new(api).with_timeout(Duration::from_secs(2));
            if let Ok(r) = client.get("/v1/health").await {
                // 401: the API is up and wants the `Authorization` value the test did not
                // send; that is as ready as a 200.
                if r.status == 200 || r.status == 401 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NotReady { logs: self.logs() });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends `signal` (e.g. `"TERM"`, `"HUP"`, `"INT"`) via `kill(1)`.
    pub fn signal(&self, signal: &str) -> Result<(), DaemonError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(DaemonError::Io(io::Error::other(format!(
                "kill -{signal} {pid} failed: {status}"
            ))))
        }
    }

    /// Waits for the process to exit, up to `timeout`; SIGKILLs it on timeout and returns `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, DaemonError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let p = free_port();
        assert_ne!(p, 0);
        // Usually still free right after; the point is that it is a real, released port.
        let _ = TcpListener::bind(("127.0.0.1", p));
    }

    #[test]
    fn spawn_signal_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Daemon::spawn(
            Path::new("/bin/sh"),
            &["-c", "echo hello; exec sleep 30"],
            dir.path(),
            "sh",
            &[],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(d.try_exit_status().unwrap().is_none());
        d.signal("TERM").unwrap();
        let status = d.wait_exit(Duration::from_secs(5)).unwrap().unwrap();
        assert!(!status.success());
        assert!(d.logs().contains("hello"));
    }
}
