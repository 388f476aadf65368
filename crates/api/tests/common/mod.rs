//! Shared fixtures: a real `ConfigStore` on a temp file and a fake `Runtime`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use api::runtime::{
    GatesSnapshot, MePoolSnapshot, NatStunSnapshot, ReloadStats, Runtime, StartupSnapshot,
    StartupTracker, TransportMode, UpstreamsSnapshot,
};
use api::{ApiBody, ApiState, PeerAddr};
use bytes::Bytes;
use config::ConfigStore;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

pub const ALICE_SECRET: &str = "00112233445566778899aabbccddeeff";
pub const BOB_SECRET: &str = "ffeeddccbbaa99887766554433221100";

pub struct FakeRuntime {
    pub stats: Arc<stats::Stats>,
    pub tracker: StartupTracker,
    pub detected: (Option<Ipv4Addr>, Option<Ipv6Addr>),
}

impl FakeRuntime {
    pub fn new() -> Self {
        let now = SystemTime::now();
        Self {
            stats: stats::Stats::new(now),
            tracker: StartupTracker::new(now, TransportMode::Direct),
            detected: (None, None),
        }
    }
}

impl Runtime for FakeRuntime {
    fn stats(&self) -> &stats::Stats {
        &self.stats
    }
    fn startup(&self) -> StartupSnapshot {
        self.tracker.snapshot()
    }
    fn gates(&self) -> GatesSnapshot {
        GatesSnapshot::default()
    }
    fn me_pool(&self) -> Option<MePoolSnapshot> {
        None
    }
    fn upstreams(&self) -> Option<UpstreamsSnapshot> {
        None
    }
    fn nat_stun(&self) -> Option<NatStunSnapshot> {
        None
    }
    fn detected_ips(&self) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        self.detected
    }
    fn process_started_at(&self) -> SystemTime {
        SystemTime::now()
    }
    fn config_reload_stats(&self) -> ReloadStats {
        ReloadStats::default()
    }
    fn reset_user_quota(&self, username: &str) -> u64 {
        self.stats
            .users()
            .handle(username)
            .reset_quota(1_800_000_000);
        1_800_000_000
    }
}

/// Config text with two users, API enabled, given `[server.api]` extra lines.
pub fn config_text(api_extra: &str) -> String {
    format!(
        r#"# top comment survives
[general]
use_middle_proxy = false

[general.modes]
classic = true
secure = true
tls = true

[general.links]
public_host = "proxy.example.com"

[server]
port = 8443

[server.api]
enabled = true
whitelist = ["127.0.0.1/32", "::1/128"]
{api_extra}

[censorship]
tls_domain = "example.com"

[access.users]
alice = "{ALICE_SECRET}"
bob = "{BOB_SECRET}"
"#
    )
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub store: Arc<ConfigStore>,
    pub runtime: Arc<FakeRuntime>,
    pub state: ApiState,
}

impl Fixture {
    pub fn new(api_extra: &str) -> Self {
        Self::with_text(&config_text(api_extra))
    }

    pub fn with_text(text: &str) -> Self {
        Self::with_runtime(text, FakeRuntime::new())
    }

    pub fn with_runtime(text: &str, runtime: FakeRuntime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        let store = ConfigStore::open(&path).expect("open store");
        let runtime = Arc::new(runtime);
        let state = ApiState::new(store.clone(), runtime.clone());
        Self {
            dir,
            path,
            store,
            runtime,
            state,
        }
    }

    pub fn file(&self) -> String {
        std::fs::read_to_string(&self.path).expect("read config")
    }

    /// Rewrites the file and reloads it (simulates a hand edit).
    pub fn rewrite(&self, text: &str) {
        std::fs::write(&self.path, text).expect("write config");
        self.store.reload_from_disk().expect("reload");
    }

    pub fn revision(&self) -> String {
        self.store.current().revision.clone()
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = api::router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        Reply::from(resp).await
    }

    /// The raw response (for non-JSON resources such as the admin page).
    pub async fn send_raw(&self, req: Request<Full<Bytes>>) -> Response<ApiBody> {
        api::router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible")
    }

    /// `method path` with an optional JSON body, from 127.0.0.1.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.send(req(method, path, body)).await
    }
}

pub fn req(method: &str, path: &str, body: Option<&str>) -> Request<Full<Bytes>> {
    req_from(method, path, body, "127.0.0.1:50000")
}

pub fn req_from(method: &str, path: &str, body: Option<&str>, peer: &str) -> Request<Full<Bytes>> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .expect("request");
    let peer: SocketAddr = peer.parse().expect("peer");
    r.extensions_mut().insert(PeerAddr(peer));
    r
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub json: serde_json::Value,
}

impl Reply {
    pub async fn from(resp: Response<ApiBody>) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes).expect("json body");
        Self {
            status,
            headers,
            json,
        }
    }

    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts an error envelope with `status` and `code` and returns the request id.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> u64 {
        assert_eq!(self.status, status, "body: {}", self.json);
        assert_eq!(self.json["ok"], false);
        assert_eq!(self.code(), code, "body: {}", self.json);
        assert!(self.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(
            self.json.get("revision").is_none(),
            "errors carry no revision"
        );
        assert_eq!(
            self.headers["content-type"],
            "application/json; charset=utf-8"
        );
        self.json["request_id"].as_u64().expect("request_id")
    }

    #[track_caller]
    pub fn assert_ok(&self, status: u16) -> &serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.json);
        assert_eq!(self.json["ok"], true);
        assert!(self.json["revision"]
            .as_str()
            .is_some_and(|r| r.len() == 64));
        assert!(self.json.get("request_id").is_none());
        assert_eq!(
            self.headers["content-type"],
            "application/json; charset=utf-8"
        );
        &self.json["data"]
    }
}
