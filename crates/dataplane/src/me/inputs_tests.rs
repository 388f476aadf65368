//! ME inputs against a loopback HTTP server (testkit `MeHttpFiles`) and cache files on disk.
//! Every URL points at 127.0.0.1: the server, or a closed port for "offline".

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;

use testkit::me::{
    proxy_config_text, random_proxy_secret, MeFiles, MeHttpFiles, Reply, CONFIG_V4_PATH,
    CONFIG_V6_PATH, SECRET_PATH,
};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn v4_text(port: u16) -> String {
    proxy_config_text(
        Some(2),
        &[
            (2, addr(&format!("127.0.0.1:{port}"))),
            (-2, addr(&format!("127.0.0.1:{port}"))),
        ],
    )
}

fn v6_text() -> String {
    proxy_config_text(Some(2), &[(2, addr("[::1]:8888"))])
}

/// A URL on a loopback port nobody listens on.
fn closed_url(path: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}{path}")
}

fn file(kind: InputKind, url: String, cache: PathBuf) -> InputFile {
    let (url_key, cache_key) = match kind {
        InputKind::Secret => ("general.proxy_secret_url", "general.proxy_secret_path"),
        InputKind::ConfigV4 => (
            "general.proxy_config_v4_url",
            "general.proxy_config_v4_cache_path",
        ),
        InputKind::ConfigV6 => (
            "general.proxy_config_v6_url",
            "general.proxy_config_v6_cache_path",
        ),
    };
    InputFile {
        kind,
        url,
        url_key,
        cache_path: cache,
        cache_key,
    }
}

/// telemt's defaults, as the config gives them.
fn default_rules() -> Rules {
    Rules::from_config(&config::General::default())
}

/// A config text checked under the default rules.
fn parsed(text: &str) -> ProxyConfigFile {
    check_config(text.as_bytes(), &default_rules()).expect("valid config")
}

/// Settings for tests: short timeouts and period, no environment proxy, no cooldown, else
/// telemt's default rules.
fn settings(urls: [String; 3], caches: [PathBuf; 3]) -> InputsSettings {
    let [su, u4, u6] = urls;
    let [sc, c4, c6] = caches;
    InputsSettings {
        secret: file(InputKind::Secret, su, sc),
        v4: file(InputKind::ConfigV4, u4, c4),
        v6: file(InputKind::ConfigV6, u6, c6),
        refresh_every: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_millis(700),
        rules: Rules {
            config_apply_cooldown: Duration::ZERO,
            ..default_rules()
        },
        env_proxy: false,
    }
}

fn server_urls(srv: &MeHttpFiles) -> [String; 3] {
    [
        srv.url(SECRET_PATH),
        srv.url(CONFIG_V4_PATH),
        srv.url(CONFIG_V6_PATH),
    ]
}

fn closed_urls() -> [String; 3] {
    [
        closed_url(SECRET_PATH),
        closed_url(CONFIG_V4_PATH),
        closed_url(CONFIG_V6_PATH),
    ]
}

/// Cache paths under `dir/cache/` (a directory that does not exist yet).
fn fresh_caches(dir: &Path) -> [PathBuf; 3] {
    let c = dir.join("cache");
    [
        c.join("proxy-secret"),
        c.join("proxy-config-v4.txt"),
        c.join("proxy-config-v6.txt"),
    ]
}

fn file_caches(f: &MeFiles) -> [PathBuf; 3] {
    [
        f.secret_path.clone(),
        f.config_v4_path.clone(),
        f.config_v6_path.clone(),
    ]
}

async fn serving(secret: &[u8]) -> MeHttpFiles {
    let srv = MeHttpFiles::start().await.expect("server");
    srv.set_body(SECRET_PATH, secret.to_vec());
    srv.set_body(CONFIG_V4_PATH, v4_text(8888));
    srv.set_body(CONFIG_V6_PATH, v6_text());
    srv
}

fn temps_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

#[tokio::test]
async fn a_download_is_used_and_cached_atomically() {
    let secret = random_proxy_secret();
    let srv = serving(&secret).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let caches = fresh_caches(dir.path());
    // An older v4 cache exists: it must be replaced by rename (new inode), not rewritten in
    // place, so a reader never sees half a file.
    std::fs::create_dir_all(caches[1].parent().expect("dir")).expect("mkdir");
    std::fs::write(&caches[1], v4_text(1)).expect("old cache");
    let old_inode = std::fs::metadata(&caches[1]).expect("meta").ino();

    let s = settings(server_urls(&srv), caches.clone());
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");

    assert_eq!(&inputs.secret[..], &secret[..]);
    assert_eq!(inputs.v4, parsed(&v4_text(8888)));
    assert_eq!(inputs.v6, Some(parsed(&v6_text())));
    assert_eq!(
        inputs.source,
        InputsSource {
            secret: Origin::Fetched,
            v4: Origin::Fetched,
            v6: Some(Origin::Fetched)
        }
    );
    assert!(inputs.http_date.is_some());
    assert!(!format!("{inputs:?}").contains(&format!("{:?}", &secret[..4])));

    assert_eq!(std::fs::read(&caches[0]).expect("secret cache"), secret);
    assert_eq!(
        std::fs::read_to_string(&caches[1]).expect("v4 cache"),
        v4_text(8888)
    );
    assert_eq!(
        std::fs::read_to_string(&caches[2]).expect("v6 cache"),
        v6_text()
    );
    assert_ne!(
        std::fs::metadata(&caches[1]).expect("meta").ino(),
        old_inode
    );
    assert_eq!(
        std::fs::metadata(&caches[0]).expect("meta").mode() & 0o777,
        0o600,
        "the secret cache is key material"
    );
    assert!(temps_in(caches[0].parent().expect("dir")).is_empty());
    for p in [SECRET_PATH, CONFIG_V4_PATH, CONFIG_V6_PATH] {
        assert_eq!(srv.requests(p), 1, "{p}");
    }

    // Same bodies again: the caches are left alone.
    let inode = std::fs::metadata(&caches[1]).expect("meta").ino();
    load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert_eq!(std::fs::metadata(&caches[1]).expect("meta").ino(), inode);
}

#[tokio::test]
async fn offline_start_uses_the_caches() {
    let files = MeFiles::write(
        &random_proxy_secret(),
        Some(2),
        &[(2, addr("127.0.0.1:8888")), (2, addr("[::1]:8888"))],
    )
    .expect("files");
    let s = settings(closed_urls(), file_caches(&files));
    let inputs = load_initial(&s, &SkewLog::default())
        .await
        .expect("loaded from cache");
    assert_eq!(&inputs.secret[..], &files.secret[..]);
    assert_eq!(
        inputs.v4.endpoints(2).collect::<Vec<_>>(),
        vec![addr("127.0.0.1:8888")]
    );
    assert_eq!(
        inputs
            .v6
            .as_ref()
            .map(|c| c.endpoints(2).collect::<Vec<_>>()),
        Some(vec![addr("[::1]:8888")])
    );
    assert_eq!(
        inputs.source,
        InputsSource {
            secret: Origin::Cache,
            v4: Origin::Cache,
            v6: Some(Origin::Cache)
        }
    );
    assert_eq!(inputs.http_date, None);
}

#[tokio::test]
async fn bad_answers_fall_back_to_the_caches() {
    let files = MeFiles::write(&random_proxy_secret(), Some(2), &[(2, addr("127.0.0.1:1"))])
        .expect("files");
    let srv = MeHttpFiles::start().await.expect("server");
    // Error status, a config without proxy_for, an empty body.
    srv.set(SECRET_PATH, Reply::Status(500));
    srv.set_body(CONFIG_V4_PATH, proxy_config_text(Some(2), &[]));
    srv.set_body(CONFIG_V6_PATH, Vec::new());
    let s = settings(server_urls(&srv), file_caches(&files));
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert_eq!(&inputs.secret[..], &files.secret[..]);
    assert_eq!(inputs.source.secret, Origin::Cache);
    assert_eq!(inputs.source.v4, Origin::Cache);
    // The v6 cache file written by MeFiles has no entry (no IPv6 address given): no v6.
    assert_eq!(inputs.v6, None);
    assert_eq!(inputs.source.v6, None);
    // A rejected download does not overwrite the cache.
    assert_eq!(
        std::fs::read_to_string(&files.config_v4_path).expect("read"),
        proxy_config_text(Some(2), &[(2, addr("127.0.0.1:1"))])
    );

    // Secrets outside 32..=256 bytes (the default limit) are rejected, and a hanging server
    // times out.
    srv.set_body(SECRET_PATH, vec![7u8; 31]);
    srv.set_body(CONFIG_V4_PATH, v4_text(8888));
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert_eq!(inputs.source.secret, Origin::Cache);
    assert_eq!(inputs.source.v4, Origin::Fetched);
    srv.set_body(SECRET_PATH, vec![7u8; 257]);
    srv.set(CONFIG_V4_PATH, Reply::Hang);
    let started = Instant::now();
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(inputs.source.secret, Origin::Cache);
    assert_eq!(inputs.source.v4, Origin::Cache);
}

#[tokio::test]
async fn neither_download_nor_cache_names_the_file_and_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let caches = fresh_caches(dir.path());
    let s = settings(closed_urls(), caches.clone());
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("nothing to load")
        .to_string();
    for needle in [
        "proxy secret unavailable",
        "general.proxy_secret_url",
        "general.proxy_secret_path",
        &caches[0].display().to_string(),
        &s.secret.url,
        "no such file",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in {err}");
    }

    // Only the IPv4 config missing: the error is about it.
    let secret = random_proxy_secret();
    let srv = serving(&secret).await;
    srv.set(CONFIG_V4_PATH, Reply::Status(503));
    let s = settings(server_urls(&srv), caches.clone());
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("no v4")
        .to_string();
    for needle in [
        "proxy config (IPv4) unavailable",
        "general.proxy_config_v4_url",
        "general.proxy_config_v4_cache_path",
        "HTTP status 503",
        &caches[1].display().to_string(),
    ] {
        assert!(err.contains(needle), "{needle:?} missing in {err}");
    }

    // Only the IPv6 config missing: not an error.
    srv.set_body(CONFIG_V4_PATH, v4_text(8888));
    srv.set(CONFIG_V6_PATH, Reply::Status(404));
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    // The failed load above still cached the v6 config it downloaded.
    assert_eq!(inputs.source.v6, Some(Origin::Cache));
    std::fs::remove_file(&caches[2]).expect("rm v6 cache");
    let inputs = load_initial(&s, &SkewLog::default())
        .await
        .expect("v6 is optional");
    assert_eq!((inputs.v6, inputs.source.v6), (None, None));
}

/// A settings source that never changes.
fn fixed(s: InputsSettings) -> SettingsSource {
    Box::new(move || s.clone())
}

async fn changed(rx: &mut watch::Receiver<Option<Arc<MeInputs>>>) -> Arc<MeInputs> {
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("published in time")
        .expect("sender alive");
    rx.borrow_and_update().clone().expect("a snapshot")
}

/// Waits until `srv` has answered `n` more requests on `path` (so that many rounds ran).
async fn rounds(srv: &MeHttpFiles, path: &str, n: usize) {
    let target = srv.requests(path) + n;
    assert!(
        testkit::poll_until(WAIT, Duration::from_millis(10), || srv.requests(path)
            >= target)
        .await
    );
}

#[tokio::test]
async fn refresh_publishes_stable_changes_and_keeps_the_old_snapshot_on_bad_answers() {
    let secret = random_proxy_secret();
    let srv = serving(&secret).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let caches = fresh_caches(dir.path());
    let s = settings(server_urls(&srv), caches.clone());
    let skew = SkewLog::default();
    let first = Arc::new(load_initial(&s, &skew).await.expect("loaded"));
    let (tx, mut rx) = watch::channel(Some(Arc::clone(&first)));
    rx.borrow_and_update();
    let cancel = CancellationToken::new();
    let task = spawn_refresh(fixed(s.clone()), skew.clone(), tx, cancel.clone());

    // Unchanged files: nothing is published.
    rounds(&srv, CONFIG_V4_PATH, 3).await;
    assert!(!rx.has_changed().expect("sender alive"));

    // A new IPv4 config is published once it came back identical twice.
    let before = srv.requests(CONFIG_V4_PATH);
    srv.set_body(CONFIG_V4_PATH, v4_text(9999));
    let next = changed(&mut rx).await;
    assert!(srv.requests(CONFIG_V4_PATH) >= before + 2, "seen twice");
    assert_eq!(next.v4, parsed(&v4_text(9999)));
    assert_eq!(next.secret, first.secret);
    assert_eq!(next.v6, first.v6);
    assert!(next.loaded_at >= first.loaded_at);
    assert_eq!(
        std::fs::read_to_string(&caches[1]).expect("v4 cache"),
        v4_text(9999)
    );

    // Error status, empty config, unparsable config, hang: the snapshot stays.
    for bad in [
        Reply::Status(500),
        Reply::Body(proxy_config_text(Some(2), &[]).into_bytes()),
        Reply::Body(Vec::new()),
        Reply::Body(b"proxy_for 2 nowhere;".to_vec()),
    ] {
        srv.set(CONFIG_V4_PATH, bad.clone());
        rounds(&srv, CONFIG_V4_PATH, 3).await;
        assert!(!rx.has_changed().expect("sender alive"), "{bad:?}");
    }
    srv.set(CONFIG_V4_PATH, Reply::Hang);
    rounds(&srv, CONFIG_V4_PATH, 2).await;
    assert!(!rx.has_changed().expect("sender alive"));
    assert_eq!(
        rx.borrow().as_ref().expect("snapshot").v4,
        next.v4,
        "the last good config stays"
    );
    assert_eq!(
        std::fs::read_to_string(&caches[1]).expect("v4 cache"),
        v4_text(9999)
    );

    // A rotated secret is published the same way.
    srv.set_body(CONFIG_V4_PATH, v4_text(9999));
    let rotated = random_proxy_secret();
    srv.set_body(SECRET_PATH, rotated.clone());
    let next = changed(&mut rx).await;
    assert_eq!(&next.secret[..], &rotated[..]);
    assert_eq!(std::fs::read(&caches[0]).expect("secret cache"), rotated);

    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops on cancel")
        .expect("no panic");
}

#[tokio::test]
async fn refresh_recovers_from_an_offline_start() {
    let srv = MeHttpFiles::start().await.expect("server");
    srv.set(SECRET_PATH, Reply::Status(502));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(server_urls(&srv), fresh_caches(dir.path()));
    assert!(load_initial(&s, &SkewLog::default()).await.is_err());
    let (tx, mut rx) = watch::channel(None);
    let cancel = CancellationToken::new();
    let task = spawn_refresh(fixed(s), SkewLog::default(), tx, cancel.clone());
    rounds(&srv, SECRET_PATH, 2).await;
    assert!(rx.borrow().is_none());
    let secret = random_proxy_secret();
    srv.set_body(SECRET_PATH, secret.clone());
    srv.set_body(CONFIG_V4_PATH, v4_text(8888));
    // No stability wait for a first load: there is nothing running to protect.
    let got = changed(&mut rx).await;
    assert_eq!(&got.secret[..], &secret[..]);
    assert_eq!(got.v6, None);
    cancel.cancel();
    task.await.expect("no panic");
}

#[tokio::test]
async fn skew_is_recorded_from_the_date_header() {
    let srv = serving(&random_proxy_secret()).await;
    srv.set_date_offset(Some(120));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(server_urls(&srv), fresh_caches(dir.path()));
    let skew = SkewLog::default();
    let inputs = load_initial(&s, &skew).await.expect("loaded");
    let snap = skew.snapshot();
    assert_eq!(snap.samples_15m, 3);
    let last = snap.last_skew_secs.expect("a sample");
    assert!((119..=121).contains(&last), "{last}");
    assert!(snap.max_skew_secs_15m.is_some_and(|m| m >= 119));
    assert!(snap
        .last_source
        .as_deref()
        .is_some_and(|src| src.starts_with("http://127.0.0.1:")));
    assert_eq!(snap.last_seen_age_secs, Some(0));
    let date = inputs.http_date.expect("Date kept");
    let ahead = date
        .duration_since(SystemTime::now())
        .expect("server clock ahead");
    assert!(ahead > Duration::from_secs(100), "{ahead:?}");

    // No Date header, or an error page: no sample.
    srv.set_date_offset(None);
    load_initial(&s, &skew).await.expect("loaded");
    srv.set_date_offset(Some(0));
    srv.set(SECRET_PATH, Reply::Status(500));
    let _ = load_initial(&s, &skew).await;
    assert_eq!(skew.snapshot().samples_15m, 5);
}

#[test]
fn skew_window_keeps_fifteen_minutes_and_the_last_sample() {
    let log = SkewLog::default();
    let t0 = Instant::now();
    log.record_at(40, "a", t0);
    log.record_at(3, "b", t0 + Duration::from_secs(600));
    let s = log.snapshot_at(t0 + Duration::from_secs(610));
    assert_eq!(s.max_skew_secs_15m, Some(40));
    assert_eq!(s.samples_15m, 2);
    assert_eq!(s.last_skew_secs, Some(3));
    assert_eq!(s.last_source.as_deref(), Some("b"));
    assert_eq!(s.last_seen_age_secs, Some(10));
    let s = log.snapshot_at(t0 + Duration::from_secs(1000));
    assert_eq!((s.max_skew_secs_15m, s.samples_15m), (Some(3), 1));
    let s = log.snapshot_at(t0 + Duration::from_secs(3600));
    assert_eq!((s.max_skew_secs_15m, s.samples_15m), (None, 0));
    assert_eq!(s.last_skew_secs, Some(3));
    assert_eq!(s.last_seen_age_secs, Some(3000));
    assert_eq!(SkewLog::default().snapshot(), SkewSnapshot::default());

    let now = SystemTime::now();
    assert_eq!(log.record(now - Duration::from_secs(45), now, "c"), 45);
    assert_eq!(log.record(now + Duration::from_secs(2), now, "c"), 2);
}

#[test]
fn http_dates_and_urls_for_logs() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
    );
    assert_eq!(
        parse_http_date(&testkit::me::http_date(1_800_000_000)),
        Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    );
    assert_eq!(parse_http_date("yesterday"), None);
    assert_eq!(
        display_url("https://u:p@example.org:8443/x?y=@"),
        "https://example.org:8443/x?y=@"
    );
    assert_eq!(display_url("http://127.0.0.1:1/s"), "http://127.0.0.1:1/s");
}

#[test]
fn a_change_needs_identical_snapshots_in_a_row() {
    let got = |v: u8| Got {
        value: v,
        body: vec![v],
        date: None,
    };
    let mut p = Pending(None);
    assert!(!p.observe(Some(&1), got(1), 2), "same as running");
    assert!(!p.observe(Some(&1), got(2), 2));
    assert!(
        !p.observe(Some(&1), got(3), 2),
        "a different candidate restarts"
    );
    assert!(p.observe(Some(&1), got(3), 2));
    assert_eq!(p.0.as_ref().map(|c| (c.value, c.seen)), Some((3, 2)));
    assert!(!p.observe(Some(&1), got(1), 2));
    assert!(
        p.0.is_none(),
        "back to the running value forgets the candidate"
    );
    assert!(
        p.observe(None, got(4), 1),
        "one snapshot is enough when asked"
    );
}

#[test]
fn settings_follow_the_config() {
    let text = "[general]\nupdate_every = 120\nproxy_config_v6_url = \"http://127.0.0.1:1/v6\"\n\
        proxy_secret_path = \"/var/lib/x/secret\"\n[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n";
    let cfg = config::parse_str(text).expect("config").config;
    let s = InputsSettings::from_config(&cfg, Path::new("/etc/mtproxyd/config.toml"));
    assert_eq!(s.secret.url, config::DEFAULT_PROXY_SECRET_URL);
    assert_eq!(s.v4.url, config::DEFAULT_PROXY_CONFIG_V4_URL);
    assert_eq!(s.v6.url, "http://127.0.0.1:1/v6");
    assert_eq!(s.secret.cache_path, Path::new("/var/lib/x/secret"));
    assert_eq!(
        s.v4.cache_path,
        Path::new("/etc/mtproxyd/cache/proxy-config-v4.txt")
    );
    assert_eq!(s.refresh_every, Duration::from_secs(120));
    assert_eq!(
        s.rules,
        Rules {
            require_http_2xx: true,
            reject_empty_map: true,
            min_proxy_for_lines: 1,
            config_stable_snapshots: 2,
            secret_stable_snapshots: 2,
            config_apply_cooldown: Duration::from_secs(300),
            secret_len_max: 256,
            rotate_secret: true,
        }
    );
    assert!(s.env_proxy);

    let text = "[general]\nme_config_stable_snapshots = 3\nproxy_secret_stable_snapshots = 1\n\
        me_config_apply_cooldown_secs = 0\nme_snapshot_require_http_2xx = false\n\
        me_snapshot_reject_empty_map = false\nme_snapshot_min_proxy_for_lines = 4\n\
        proxy_secret_len_max = 100\nproxy_secret_rotate_runtime = false\n\
        [access.users]\nu = \"00112233445566778899aabbccddeeff\"\n";
    let cfg = config::parse_str(text).expect("config").config;
    let r = InputsSettings::from_config(&cfg, Path::new("/c.toml")).rules;
    assert_eq!(
        r,
        Rules {
            require_http_2xx: false,
            reject_empty_map: false,
            min_proxy_for_lines: 4,
            config_stable_snapshots: 3,
            secret_stable_snapshots: 1,
            config_apply_cooldown: Duration::ZERO,
            secret_len_max: 100,
            rotate_secret: false,
        }
    );

    // Above the handshake's limit: capped, never more than the handshake takes.
    let text = "[general]\nproxy_secret_len_max = 4096\n\
        [access.users]\nu = \"00112233445566778899aabbccddeeff\"\n";
    let cfg = config::parse_str(text).expect("config").config;
    let r = InputsSettings::from_config(&cfg, Path::new("/c.toml")).rules;
    assert_eq!(r.secret_len_max, 256);
    assert_eq!(config::ME_HANDSHAKE_SECRET_LEN_MAX, *SECRET_LEN.end());
}

// ---------------------------------------------------------------------------------------------
// The acceptance rules, one key at a time (telemt's defaults are covered above).

/// A refresher driven round by round (no timer), on `s`.
fn refresher(s: InputsSettings) -> Refresher {
    let client = build_client(&s).expect("client");
    Refresher::new(s, client, SkewLog::default())
}

/// Serves the three files and loads them: the running snapshot and the settings.
async fn running(
    secret: &[u8],
) -> (
    MeHttpFiles,
    tempfile::TempDir,
    InputsSettings,
    Arc<MeInputs>,
) {
    let srv = serving(secret).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(server_urls(&srv), fresh_caches(dir.path()));
    let cur = Arc::new(load_initial(&s, &SkewLog::default()).await.expect("loaded"));
    (srv, dir, s, cur)
}

#[tokio::test]
async fn config_stable_snapshots_is_the_number_of_sightings_before_a_change_applies() {
    for need in [1u8, 3] {
        let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
        s.rules.config_stable_snapshots = need;
        let mut r = refresher(s);
        srv.set_body(CONFIG_V4_PATH, v4_text(9999));
        for seen in 1..need {
            assert!(
                r.round(Some(Arc::clone(&cur))).await.is_none(),
                "need {need}: applied after {seen} sightings"
            );
        }
        let next = r
            .round(Some(Arc::clone(&cur)))
            .await
            .unwrap_or_else(|| panic!("need {need}: not applied at sighting {need}"));
        assert_eq!(next.v4, parsed(&v4_text(9999)));
        assert_eq!(next.secret, cur.secret);
    }
}

#[tokio::test]
async fn secret_stable_snapshots_counts_apart_from_the_config_one() {
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.secret_stable_snapshots = 1;
    s.rules.config_stable_snapshots = 3;
    let mut r = refresher(s);
    let rotated = random_proxy_secret();
    srv.set_body(SECRET_PATH, rotated.clone());
    srv.set_body(CONFIG_V4_PATH, v4_text(9999));
    let next = r
        .round(Some(Arc::clone(&cur)))
        .await
        .expect("the secret applies at once");
    assert_eq!(&next.secret[..], &rotated[..]);
    assert_eq!(next.v4, cur.v4, "the config change needs three sightings");

    // And the other way round: the secret waits for its third sighting.
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.secret_stable_snapshots = 3;
    s.rules.config_stable_snapshots = 1;
    let mut r = refresher(s);
    srv.set_body(SECRET_PATH, random_proxy_secret());
    let next = r.round(Some(Arc::clone(&cur))).await;
    assert!(next.is_none(), "secret applied on its first sighting");
    assert!(r.round(Some(Arc::clone(&cur))).await.is_none());
    let next = r
        .round(Some(Arc::clone(&cur)))
        .await
        .expect("third sighting");
    assert_ne!(next.secret, cur.secret);
}

#[tokio::test]
async fn the_apply_cooldown_holds_a_second_config_change_and_zero_disables_it() {
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.config_stable_snapshots = 1;
    s.rules.config_apply_cooldown = Duration::from_secs(300);
    let mut r = refresher(s);
    srv.set_body(CONFIG_V4_PATH, v4_text(9999));
    let first = Arc::new(
        r.round(Some(Arc::clone(&cur)))
            .await
            .expect("nothing applied yet: no cooldown"),
    );
    assert_eq!(first.v4, parsed(&v4_text(9999)));

    srv.set_body(CONFIG_V4_PATH, v4_text(7777));
    for _ in 0..3 {
        assert!(
            r.round(Some(Arc::clone(&first))).await.is_none(),
            "applied within the cooldown"
        );
    }
    // The secret is not under the cooldown.
    let rotated = random_proxy_secret();
    srv.set_body(SECRET_PATH, rotated.clone());
    r.s.rules.secret_stable_snapshots = 1;
    let next = Arc::new(r.round(Some(Arc::clone(&first))).await.expect("secret"));
    assert_eq!(&next.secret[..], &rotated[..]);
    assert_eq!(next.v4, first.v4, "the config change is still held");

    // Cooldown 0: the held change applies at once, and the next one right after it.
    r.s.rules.config_apply_cooldown = Duration::ZERO;
    let second = Arc::new(r.round(Some(Arc::clone(&next))).await.expect("held change"));
    assert_eq!(second.v4, parsed(&v4_text(7777)));
    srv.set_body(CONFIG_V4_PATH, v4_text(6666));
    let third = r
        .round(Some(Arc::clone(&second)))
        .await
        .expect("back-to-back change");
    assert_eq!(third.v4, parsed(&v4_text(6666)));
}

#[tokio::test]
async fn a_non_2xx_config_counts_only_when_the_2xx_rule_is_off() {
    let secret = random_proxy_secret();
    let srv = serving(&secret).await;
    srv.set(
        CONFIG_V4_PATH,
        Reply::StatusBody(404, v4_text(9999).into_bytes()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(server_urls(&srv), fresh_caches(dir.path()));
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("a 404 is not a config by default")
        .to_string();
    assert!(err.contains("HTTP status 404"), "{err}");

    s.rules.require_http_2xx = false;
    let skew = SkewLog::default();
    let inputs = load_initial(&s, &skew).await.expect("the body is a config");
    assert_eq!(inputs.v4, parsed(&v4_text(9999)));
    assert_eq!(inputs.source.v4, Origin::Fetched);
    assert_eq!(skew.snapshot().samples_15m, 2, "no skew sample from a 404");

    // An error page is still rejected, by its content, and said so.
    std::fs::remove_file(&s.v4.cache_path).expect("rm v4 cache");
    srv.set(
        CONFIG_V4_PATH,
        Reply::StatusBody(503, b"<html>busy</html>".to_vec()),
    );
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("no proxy_for in an error page")
        .to_string();
    assert!(
        err.contains("HTTP status 503, and the body is not usable: no proxy_for entry"),
        "{err}"
    );

    // The rule is about proxy configs: the secret always needs a 2xx.
    srv.set_body(CONFIG_V4_PATH, v4_text(8888));
    srv.set(SECRET_PATH, Reply::StatusBody(404, random_proxy_secret()));
    std::fs::remove_file(&s.secret.cache_path).expect("rm secret cache");
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("secret from a 404")
        .to_string();
    assert!(
        err.contains("proxy secret unavailable") && err.contains("HTTP status 404"),
        "{err}"
    );

    // At refresh too: with the rule on a non-2xx change is never applied, off it is.
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.config_stable_snapshots = 1;
    let mut r = refresher(s);
    srv.set(
        CONFIG_V4_PATH,
        Reply::StatusBody(500, v4_text(9999).into_bytes()),
    );
    assert!(r.round(Some(Arc::clone(&cur))).await.is_none());
    r.s.rules.require_http_2xx = false;
    let next = r.round(Some(Arc::clone(&cur))).await.expect("applied");
    assert_eq!(next.v4, parsed(&v4_text(9999)));
}

#[tokio::test]
async fn min_proxy_for_lines_rejects_configs_with_fewer_rows() {
    // v4_text has two proxy_for rows, v6_text one.
    let srv = serving(&random_proxy_secret()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(server_urls(&srv), fresh_caches(dir.path()));
    s.rules.min_proxy_for_lines = 2;
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert_eq!(inputs.v4.proxy_for.len(), 2);
    assert_eq!(inputs.v6, None, "one row is below the floor of 2");

    s.rules.min_proxy_for_lines = 3;
    std::fs::remove_file(&s.v4.cache_path).expect("rm v4 cache");
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("two rows, three needed")
        .to_string();
    assert!(
        err.contains("2 proxy_for entries, fewer than general.me_snapshot_min_proxy_for_lines = 3"),
        "{err}"
    );

    // At refresh: a 2-row change is rejected under a floor of 3, a 3-row one applies.
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.config_stable_snapshots = 1;
    s.rules.min_proxy_for_lines = 3;
    let mut r = refresher(s);
    srv.set_body(CONFIG_V4_PATH, v4_text(9999));
    assert!(r.round(Some(Arc::clone(&cur))).await.is_none());
    let three = proxy_config_text(
        Some(2),
        &[
            (1, addr("127.0.0.1:1")),
            (2, addr("127.0.0.1:2")),
            (3, addr("127.0.0.1:3")),
        ],
    );
    srv.set_body(CONFIG_V4_PATH, three.clone());
    let next = r.round(Some(Arc::clone(&cur))).await.expect("three rows");
    assert_eq!(next.v4, parsed(&three));
}

#[test]
fn an_empty_config_is_rejected_whatever_reject_empty_map_says() {
    let empty = proxy_config_text(Some(2), &[]);
    assert!(matches!(
        check_config(empty.as_bytes(), &default_rules()),
        Err(SourceError::Empty)
    ));
    // Off, the proxy_for floor (at least 1) is what rejects it.
    let rules = Rules {
        reject_empty_map: false,
        ..default_rules()
    };
    assert!(matches!(
        check_config(empty.as_bytes(), &rules),
        Err(SourceError::TooFewRows { rows: 0, min: 1 })
    ));
    assert!(check_config(v6_text().as_bytes(), &rules).is_ok());
}

#[tokio::test]
async fn proxy_secret_len_max_bounds_the_secret_at_start_and_at_refresh() {
    // Served: 128 bytes. Cached: 64 bytes.
    let srv = serving(&random_proxy_secret()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(server_urls(&srv), fresh_caches(dir.path()));
    std::fs::create_dir_all(dir.path().join("cache")).expect("mkdir");
    std::fs::write(&s.secret.cache_path, [9u8; 64]).expect("cache");
    s.rules.secret_len_max = 100;
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert_eq!(inputs.source.secret, Origin::Cache, "128 > 100");
    assert_eq!(&inputs.secret[..], &[9u8; 64][..]);

    s.rules.secret_len_max = 63;
    let err = load_initial(&s, &SkewLog::default())
        .await
        .expect_err("neither fits")
        .to_string();
    assert!(
        err.contains(
            "128 bytes; a proxy secret is accepted with 32..=63 bytes (general.proxy_secret_len_max)"
        ) && err.contains("64 bytes"),
        "{err}"
    );

    s.rules.secret_len_max = 128;
    let inputs = load_initial(&s, &SkewLog::default()).await.expect("loaded");
    assert_eq!(inputs.source.secret, Origin::Fetched, "128 fits");

    // At refresh: a longer rotated secret is not applied, one within the limit is.
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.secret_stable_snapshots = 1;
    s.rules.secret_len_max = 128;
    let mut r = refresher(s);
    srv.set_body(SECRET_PATH, vec![5u8; 129]);
    assert!(r.round(Some(Arc::clone(&cur))).await.is_none());
    srv.set_body(SECRET_PATH, vec![5u8; 40]);
    let next = r.round(Some(Arc::clone(&cur))).await.expect("40 bytes fit");
    assert_eq!(&next.secret[..], &[5u8; 40][..]);
}

#[tokio::test]
async fn with_rotate_runtime_off_the_running_secret_stays() {
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.rotate_secret = false;
    s.rules.secret_stable_snapshots = 1;
    s.rules.config_stable_snapshots = 1;
    let mut r = refresher(s);
    srv.set_body(SECRET_PATH, random_proxy_secret());
    srv.set_body(CONFIG_V4_PATH, v4_text(9999));
    let secret_requests = srv.requests(SECRET_PATH);
    let next = Arc::new(
        r.round(Some(Arc::clone(&cur)))
            .await
            .expect("the config change applies"),
    );
    assert_eq!(next.v4, parsed(&v4_text(9999)));
    assert_eq!(next.secret, cur.secret, "secret rotated");
    assert!(r.round(Some(Arc::clone(&next))).await.is_none());
    assert_eq!(
        srv.requests(SECRET_PATH),
        secret_requests,
        "the secret is not even downloaded"
    );

    // Switched back on (a config publish): the new secret applies.
    r.s.rules.rotate_secret = true;
    let rotated = r.round(Some(Arc::clone(&next))).await.expect("rotated");
    assert_ne!(rotated.secret, cur.secret);

    // A start without a running snapshot still loads the secret.
    let (srv, dir, mut s, _) = running(&random_proxy_secret()).await;
    s.rules.rotate_secret = false;
    std::fs::remove_dir_all(dir.path().join("cache")).expect("rm caches");
    let mut r = refresher(s);
    let first = r.round(None).await.expect("a first load");
    assert_eq!(first.secret.len(), testkit::me::PROXY_SECRET_LEN);
    assert_eq!(srv.requests(SECRET_PATH), 2);
}

#[tokio::test]
async fn the_refresh_task_reads_its_settings_at_every_round() {
    let (srv, _dir, mut s, cur) = running(&random_proxy_secret()).await;
    s.rules.rotate_secret = false;
    let shared = Arc::new(Mutex::new(s));
    let source: SettingsSource = {
        let shared = Arc::clone(&shared);
        Box::new(move || shared.lock().clone())
    };
    let (tx, mut rx) = watch::channel(Some(Arc::clone(&cur)));
    rx.borrow_and_update();
    let cancel = CancellationToken::new();
    let task = spawn_refresh(source, SkewLog::default(), tx, cancel.clone());

    let rotated = random_proxy_secret();
    srv.set_body(SECRET_PATH, rotated.clone());
    let secret_requests = srv.requests(SECRET_PATH);
    rounds(&srv, CONFIG_V4_PATH, 3).await;
    assert!(!rx.has_changed().expect("sender alive"));
    assert_eq!(srv.requests(SECRET_PATH), secret_requests);

    // A config publish switches rotation on: the next rounds fetch and apply the secret.
    shared.lock().rules.rotate_secret = true;
    let next = changed(&mut rx).await;
    assert_eq!(&next.secret[..], &rotated[..]);
    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops on cancel")
        .expect("no panic");
}
