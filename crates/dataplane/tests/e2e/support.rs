//! Test harness: a real `ConfigStore` on a temp file, real `Stats`, the data plane on
//! 127.0.0.1 (and ::1) with ephemeral ports, a testkit DC and mask server.

// Shared by the `e2e` and `upstreams` test binaries; each uses a subset.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use config::ConfigStore;
use dataplane::{Dataplane, DataplaneHandle, DataplaneOptions};
use stats::startup::{StartupTracker, TransportMode};
use stats::Stats;
use testkit::client::{Mode, TestClient, TestConn, TlsOptions};
use testkit::dc::{DcMode, TestDc};
use testkit::mask::{MaskReply, MaskServer};

pub const DOMAIN: &str = "example.com";

/// Knobs of the generated config.
#[derive(Clone)]
pub struct Cfg {
    pub users: Vec<(String, [u8; 16])>,
    pub classic: bool,
    pub secure: bool,
    pub tls: bool,
    pub fast_mode: bool,
    /// Extra lines of `[general]`.
    pub general: String,
    /// Extra `key = value` lines of `[access]`.
    pub access: String,
    /// Extra lines of `[censorship]`.
    pub censorship: String,
    /// Extra lines of `[server]`.
    pub server: String,
    /// Extra lines of `[timeouts]`.
    pub timeouts: String,
    /// Extra tables appended at the end.
    pub tail: String,
    pub mask: bool,
    /// `timeouts.client_handshake`.
    pub handshake_secs: u64,
    /// `server.port`; `None` = an ephemeral port chosen at start (fixed for the test).
    pub port: Option<u16>,
    /// `Some(keys)`: `use_middle_proxy = true` plus these `[general]` lines.
    pub middle_proxy: Option<String>,
}

impl Default for Cfg {
    fn default() -> Self {
        Self {
            users: vec![("alice".into(), secret(1)), ("bob".into(), secret(2))],
            classic: true,
            secure: true,
            tls: true,
            fast_mode: true,
            general: String::new(),
            access: String::new(),
            censorship: String::new(),
            server: String::new(),
            timeouts: String::new(),
            tail: String::new(),
            mask: true,
            handshake_secs: 10,
            port: None,
            middle_proxy: None,
        }
    }
}

/// A deterministic per-test secret.
pub fn secret(n: u8) -> [u8; 16] {
    let mut s = [0x5au8; 16];
    s[0] = n;
    s[15] = n.wrapping_mul(31);
    s
}

pub fn hex(s: &[u8; 16]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cfg {
    pub fn render(&self, dc: SocketAddr, mask: SocketAddr) -> String {
        let mut users = String::new();
        for (n, s) in &self.users {
            users.push_str(&format!("{n} = \"{}\"\n", hex(s)));
        }
        format!(
            "[general]\n{me}\nfast_mode = {fast}\n{general}\n\n\
             [general.modes]\nclassic = {c}\nsecure = {s}\ntls = {t}\n\n\
             [server]\nport = {port}\n{server}\n\n[[server.listeners]]\nip = \"127.0.0.1\"\n\n\
             [timeouts]\nclient_handshake = {hs}\ntg_connect = 3\n{timeouts}\n\n\
             [censorship]\ntls_domain = \"{DOMAIN}\"\nmask = {m}\nmask_host = \"{mh}\"\nmask_port = {mp}\n\
             server_hello_delay_min_ms = 0\nserver_hello_delay_max_ms = 0\n{emu}{cens}\n\n\
             [access]\n{access}\n\n[access.users]\n{users}\n\
             [dc_overrides]\n\"2\" = [\"{dc}\"]\n\"-2\" = [\"{dc}\"]\n\"4\" = [\"{dc}\"]\n\n{tail}\n",
            fast = self.fast_mode,
            me = match &self.middle_proxy {
                Some(keys) => format!("use_middle_proxy = true\n{keys}"),
                None => "use_middle_proxy = false".into(),
            },
            general = self.general,
            c = self.classic,
            s = self.secure,
            t = self.tls,
            server = self.server,
            timeouts = self.timeouts,
            hs = self.handshake_secs,
            port = self.port.unwrap_or(443),
            m = self.mask,
            mh = mask.ip(),
            mp = mask.port(),
            cens = self.censorship,
            // The profile fetch would be one more connection to the recording mask host:
            // off unless a test asks for it (docs/PROTOCOL.md §4.9).
            emu = if self.censorship.contains("tls_emulation") {
                ""
            } else {
                "tls_emulation = false\n"
            },
            access = self.access,
            tail = self.tail,
        )
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub cfg: Cfg,
    pub store: Arc<ConfigStore>,
    pub stats: Arc<Stats>,
    pub dp: DataplaneHandle,
    pub dc: TestDc,
    pub mask: MaskServer,
}

impl Harness {
    pub async fn start(cfg: Cfg) -> Self {
        Self::start_with(cfg, DcMode::Echo, MaskReply::Http, None).await
    }

    pub async fn start_with(
        cfg: Cfg,
        dc_mode: DcMode,
        reply: MaskReply,
        listen: Option<Vec<IpAddr>>,
    ) -> Self {
        let dc = TestDc::start(dc_mode).await.expect("test DC");
        let mask = MaskServer::start(reply).await.expect("mask server");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, cfg.render(dc.addr(), mask.addr())).expect("write config");
        let store = ConfigStore::open(&path).expect("config loads");
        let stats = Stats::new(SystemTime::now());
        let opts = DataplaneOptions {
            port_override: if cfg.port.is_some() { None } else { Some(0) },
            listen_override: listen,
            expiry_check_interval: Duration::from_millis(100),
            upstream_recovery_interval: Duration::from_millis(200),
            ..DataplaneOptions::default()
        };
        let startup = Arc::new(StartupTracker::new(
            SystemTime::now(),
            TransportMode::Direct,
        ));
        let dp =
            Dataplane::start(Arc::clone(&store), Arc::clone(&stats), startup, opts).expect("start");
        Self {
            dir,
            cfg,
            store,
            stats,
            dp,
            dc,
            mask,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.dp.local_addrs()[0]
    }

    /// Rewrites the config file from `cfg` and reloads it (like a hand edit + SIGHUP).
    pub fn rewrite(&mut self, cfg: Cfg) {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, cfg.render(self.dc.addr(), self.mask.addr())).expect("write");
        assert!(
            self.store.reload_from_disk().expect("reload"),
            "config changed"
        );
        self.cfg = cfg;
    }

    pub async fn connect(&self, mode: Mode, user: usize) -> TestConn {
        self.connect_to(self.addr(), mode, user).await
    }

    pub async fn connect_to(&self, addr: SocketAddr, mode: Mode, user: usize) -> TestConn {
        let s = self.cfg.users[user].1;
        let mut conn = TestClient::connect(addr, mode, s, 2)
            .await
            .expect("client handshake");
        // Debug builds of AES are slow and the test machine is shared.
        conn.set_timeout(Duration::from_secs(60));
        conn
    }

    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn tls_mode() -> Mode {
    Mode::Tls(TlsOptions::new(DOMAIN))
}

pub fn all_modes() -> Vec<(&'static str, Mode)> {
    let mut separate = TlsOptions::new(DOMAIN);
    separate.init_merged = false;
    separate.send_ccs = false;
    separate.shape = testkit::client::HelloShape::Small517;
    separate.record_payload = 16384;
    vec![
        ("abridged", Mode::Abridged),
        ("intermediate", Mode::Intermediate),
        ("secure", Mode::Secure),
        ("tls", tls_mode()),
        ("tls-separate-init", Mode::Tls(separate)),
    ]
}

pub type Halves = (testkit::client::ConnReader, testkit::client::ConnWriter);

/// Sends `data` and reads the echo concurrently; asserts byte equality.
pub async fn echo_roundtrip(conn: Halves, data: &[u8], chunk: usize) -> Halves {
    let (mut rd, mut wr) = conn;
    let payload = data.to_vec();
    let writer = tokio::spawn(async move {
        for c in payload.chunks(chunk) {
            wr.send(c).await.expect("send");
        }
        wr
    });
    let got = rd.recv_exact(data.len()).await.expect("echo");
    assert!(got == data, "echo differs");
    let wr = writer.await.expect("writer");
    (rd, wr)
}

pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut v);
    v
}

/// Random bytes that look like an obfuscated2 init to the proxy: not a TLS record and not
/// one of the forbidden first bytes of docs/PROTOCOL.md §2.2 (which are masked at once).
/// The 4-byte rules hit with probability ~2^-30, left to chance.
pub fn random_probe(n: usize) -> Vec<u8> {
    let mut v = random(n);
    if let Some(b) = v.first_mut() {
        if *b == 0xef || *b == 0x16 {
            *b = 0x42;
        }
    }
    v
}
