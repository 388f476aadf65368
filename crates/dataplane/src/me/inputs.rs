//! The ME route's inputs (docs/PROTOCOL.md §7.1, docs/ME-MODEL.md "Inputs"): the proxy secret
//! and the IPv4 / IPv6 proxy configs — downloaded, cached on disk, refreshed — and the
//! clock-skew log fed by the `Date` headers of those downloads.
//!
//! Owns: the HTTP fetches (connect and whole-request timeouts, body caps, the status rule),
//! the content checks (secret length, parse, `proxy_for` floor), the cache files (read when a
//! download fails, replaced atomically with what was accepted), the refresh task and its
//! acceptance [`Rules`], and [`SkewLog`]. Must not: open ME links, pick endpoints, or hold a
//! lock across `.await`; the pool reads the published [`MeInputs`] and nothing else.
//!
//! ```text
//!  load_initial, per file:  download ─ok─► use it, write the cache if it differs
//!                              └─ failed / non-2xx / empty / invalid ─► cache file ─ok─► use it
//!                                                                          └─► secret, v4: error naming
//!                                                                              file + keys; v6: none (warn)
//!  refresh, every update_every:  settings read from the current config, then download the
//!                                 files (the secret only with proxy_secret_rotate_runtime)
//!     failed / rejected        ─► keep the current snapshot (warn)
//!     same as current          ─► nothing
//!     different                ─► must come back identical `*_stable_snapshots` times in a
//!                                 row (config changes also wait out the apply cooldown)
//!                                 ─► publish a new Arc<MeInputs> on the watch channel, write
//!                                 its cache
//! ```
//!
//! The acceptance rules are telemt's `[general]` keys ([`Rules`], docs/DECISIONS.md #41); the
//! refresh task reads them, like the URLs and the period, from the config at every round, so a
//! config publish applies from the next round on.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use proto::me::config::{parse_proxy_config, ProxyConfigError, ProxyConfigFile};
use proto::me::handshake::SECRET_LEN;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Largest proxy-secret body read (the top of telemt's `proxy_secret_len_max` range). Only
/// bounds memory: [`Rules::secret_len_max`] decides what is accepted, and says why.
pub(crate) const SECRET_DOWNLOAD_MAX: usize = 4096;
/// Largest proxy config accepted. Telegram's is a few KiB; this only bounds memory.
pub(crate) const CONFIG_MAX_LEN: usize = 1024 * 1024;
/// TCP (+ TLS) connect bound per download.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-download bound (connect, headers and body).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Window of [`SkewSnapshot::max_skew_secs_15m`].
pub(crate) const SKEW_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Skew above this is logged as a warning (the ME handshake carries our clock).
pub(crate) const SKEW_WARN_SECS: u64 = 30;
/// Samples kept in the window at most (three per refresh; this only bounds memory).
const SKEW_SAMPLES_MAX: usize = 1024;

/// Which of the three files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputKind {
    Secret,
    ConfigV4,
    ConfigV6,
}

impl InputKind {
    /// Name used in logs and errors.
    pub(crate) fn what(self) -> &'static str {
        match self {
            InputKind::Secret => "proxy secret",
            InputKind::ConfigV4 => "proxy config (IPv4)",
            InputKind::ConfigV6 => "proxy config (IPv6)",
        }
    }

    fn max_len(self) -> usize {
        match self {
            InputKind::Secret => SECRET_DOWNLOAD_MAX,
            InputKind::ConfigV4 | InputKind::ConfigV6 => CONFIG_MAX_LEN,
        }
    }

    /// Cache file mode: the secret is key material, the configs are public.
    fn cache_mode(self) -> u32 {
        match self {
            InputKind::Secret => 0o600,
            InputKind::ConfigV4 | InputKind::ConfigV6 => 0o644,
        }
    }
}

/// Where one file comes from and where it is cached, with the config keys that say so (for
/// error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InputFile {
    pub kind: InputKind,
    pub url: String,
    pub url_key: &'static str,
    pub cache_path: PathBuf,
    pub cache_key: &'static str,
}

/// When a downloaded (or cached) file is accepted, and when a changed one is applied
/// (telemt's `[general]` keys of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rules {
    /// `me_snapshot_require_http_2xx`: a proxy config counts only with a 2xx status; when
    /// false, a non-2xx body is checked like any other. The secret always needs a 2xx.
    pub require_http_2xx: bool,
    /// `me_snapshot_reject_empty_map`: a config without `proxy_for` is rejected. When false
    /// the `proxy_for` floor (at least 1) still rejects it (docs/DECISIONS.md #41).
    pub reject_empty_map: bool,
    /// `me_snapshot_min_proxy_for_lines`: least `proxy_for` rows of an accepted config.
    pub min_proxy_for_lines: u32,
    /// `me_config_stable_snapshots`: identical downloads in a row before a changed config
    /// replaces the running one (one odd answer from a CDN edge must not rebuild the pool).
    pub config_stable_snapshots: u8,
    /// `proxy_secret_stable_snapshots`: the same for the secret.
    pub secret_stable_snapshots: u8,
    /// `me_config_apply_cooldown_secs`: least time between two applied config changes
    /// (zero: none).
    pub config_apply_cooldown: Duration,
    /// `proxy_secret_len_max`, capped at what the handshake takes: longest accepted secret,
    /// at start (download and cache) and at refresh.
    pub secret_len_max: usize,
    /// `proxy_secret_rotate_runtime`: a changed secret is applied while running; when false
    /// the refresh does not download it at all (the start still loads one).
    pub rotate_secret: bool,
}

impl Rules {
    pub(crate) fn from_config(g: &config::General) -> Self {
        Rules {
            require_http_2xx: g.me_snapshot_require_http_2xx,
            reject_empty_map: g.me_snapshot_reject_empty_map,
            min_proxy_for_lines: g.me_snapshot_min_proxy_for_lines,
            config_stable_snapshots: g.me_config_stable_snapshots,
            secret_stable_snapshots: g.proxy_secret_stable_snapshots,
            config_apply_cooldown: Duration::from_secs(g.me_config_apply_cooldown_secs),
            secret_len_max: g
                .effective_proxy_secret_len_max()
                .clamp(*SECRET_LEN.start(), *SECRET_LEN.end()),
            rotate_secret: g.proxy_secret_rotate_runtime,
        }
    }

    /// Whether a download of `kind` needs a 2xx status.
    fn needs_2xx(&self, kind: InputKind) -> bool {
        kind == InputKind::Secret || self.require_http_2xx
    }
}

/// Everything the loader and the refresh task need, taken from one config snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InputsSettings {
    pub secret: InputFile,
    pub v4: InputFile,
    pub v6: InputFile,
    /// `general.update_every` (or the legacy `proxy_*_auto_reload_secs`).
    pub refresh_every: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub rules: Rules,
    /// Honour `HTTPS_PROXY` & co. from the environment (an operator behind an egress proxy
    /// needs it; tests turn it off so nothing but loopback is contacted).
    pub env_proxy: bool,
}

impl InputsSettings {
    /// Settings for `cfg`, loaded from `config_path` (relative cache paths are taken from its
    /// directory, like every file the config names).
    pub(crate) fn from_config(cfg: &config::Config, config_path: &Path) -> Self {
        let g = &cfg.general;
        InputsSettings {
            secret: InputFile {
                kind: InputKind::Secret,
                url: g.effective_proxy_secret_url().to_owned(),
                url_key: "general.proxy_secret_url",
                cache_path: g.proxy_secret_file(config_path),
                cache_key: "general.proxy_secret_path",
            },
            v4: InputFile {
                kind: InputKind::ConfigV4,
                url: g.effective_proxy_config_v4_url().to_owned(),
                url_key: "general.proxy_config_v4_url",
                cache_path: g.proxy_config_v4_file(config_path),
                cache_key: "general.proxy_config_v4_cache_path",
            },
            v6: InputFile {
                kind: InputKind::ConfigV6,
                url: g.effective_proxy_config_v6_url().to_owned(),
                url_key: "general.proxy_config_v6_url",
                cache_path: g.proxy_config_v6_file(config_path),
                cache_key: "general.proxy_config_v6_cache_path",
            },
            refresh_every: Duration::from_secs(g.effective_update_every_secs().max(1)),
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            rules: Rules::from_config(g),
            env_proxy: true,
        }
    }
}

/// Where the refresh task takes its settings at every round (the current config), so a
/// config publish changes URLs, cache paths, period and [`Rules`] from the next round on.
pub(crate) type SettingsSource = Box<dyn Fn() -> InputsSettings + Send>;

/// Where one file of a snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Downloaded (this start, or accepted by a refresh).
    Fetched,
    /// Read from the cache file because the download failed.
    Cache,
}

/// Per-file origin of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InputsSource {
    pub secret: Origin,
    pub v4: Origin,
    /// `None` when the snapshot has no IPv6 config.
    pub v6: Option<Origin>,
}

/// One consistent set of ME inputs. Published whole, so the KDF secret and the endpoint map a
/// writer uses always come from the same snapshot (telemt `me_secret_atomic_snapshot`).
#[derive(Clone, PartialEq)]
pub(crate) struct MeInputs {
    pub secret: Arc<[u8]>,
    pub v4: ProxyConfigFile,
    /// Optional: without it the ME route runs over IPv4 only.
    pub v6: Option<ProxyConfigFile>,
    /// When this snapshot was assembled.
    pub loaded_at: SystemTime,
    pub source: InputsSource,
    /// The newest `Date` header among the downloads this snapshot took a file from.
    pub http_date: Option<SystemTime>,
}

impl std::fmt::Debug for MeInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is key material: its length is all a log needs.
        f.debug_struct("MeInputs")
            .field("secret_len", &self.secret.len())
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .field("loaded_at", &self.loaded_at)
            .field("source", &self.source)
            .field("http_date", &self.http_date)
            .finish()
    }
}

/// Why one source (download or cache) of one file did not give a usable file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("{0}")]
    Request(String),
    #[error("timed out")]
    Timeout,
    #[error("HTTP status {0}")]
    Status(u16),
    /// A non-2xx answer read because the 2xx rule is off, whose body was not accepted either.
    #[error("HTTP status {0}, and the body is not usable: {1}")]
    StatusBody(u16, Box<SourceError>),
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("no such file")]
    NoCache,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{len} bytes; a proxy secret is accepted with 32..={max} bytes (general.proxy_secret_len_max)")]
    SecretLength { len: usize, max: usize },
    #[error("not UTF-8 text")]
    NotText,
    #[error("{0}")]
    Parse(#[from] ProxyConfigError),
    #[error("no proxy_for entry (empty config)")]
    Empty,
    #[error(
        "{rows} proxy_for entries, fewer than general.me_snapshot_min_proxy_for_lines = {min}"
    )]
    TooFewRows { rows: usize, min: u32 },
}

/// Neither the download nor the cache gave a usable file; names both and their config keys.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} unavailable: download from {url} ({url_key}) failed: {download}; cache file {} ({cache_key}): {cache}",
    path.display()
)]
pub(crate) struct Unavailable {
    pub what: &'static str,
    pub url: String,
    pub url_key: &'static str,
    pub download: SourceError,
    pub path: PathBuf,
    pub cache_key: &'static str,
    pub cache: SourceError,
}

/// Why the inputs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputsError {
    #[error(transparent)]
    Unavailable(Box<Unavailable>),
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("HTTP client: {0}")]
    Client(String),
}

// ---------------------------------------------------------------------------------------------
// Clock skew

/// Clock-skew samples from `Date` headers, shared between the fetchers and whoever reports
/// them (the same fields as the API's `MeTimeskewSnapshot`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct SkewLog(Arc<Mutex<SkewState>>);

#[derive(Debug, Default)]
struct SkewState {
    /// (seen at, skew) within the window, oldest first.
    window: VecDeque<(Instant, u64)>,
    last: Option<LastSkew>,
}

#[derive(Debug)]
struct LastSkew {
    skew_secs: u64,
    source: String,
    at: Instant,
}

/// What [`SkewLog::snapshot`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SkewSnapshot {
    pub max_skew_secs_15m: Option<u64>,
    pub samples_15m: usize,
    pub last_skew_secs: Option<u64>,
    pub last_source: Option<String>,
    pub last_seen_age_secs: Option<u64>,
}

impl SkewLog {
    /// Records the server's `Date` against our clock `local`; returns the skew in seconds.
    pub(crate) fn record(&self, server: SystemTime, local: SystemTime, source: &str) -> u64 {
        let skew = unix_secs(server).abs_diff(unix_secs(local));
        if skew > SKEW_WARN_SECS {
            tracing::warn!(
                skew_secs = skew,
                source,
                "local clock differs from the server's Date header by more than {SKEW_WARN_SECS} s; ME handshakes may fail"
            );
        }
        self.record_at(skew, source, Instant::now());
        skew
    }

    pub(crate) fn record_at(&self, skew_secs: u64, source: &str, at: Instant) {
        let mut s = self.0.lock();
        prune(&mut s.window, at);
        if s.window.len() >= SKEW_SAMPLES_MAX {
            s.window.pop_front();
        }
        s.window.push_back((at, skew_secs));
        s.last = Some(LastSkew {
            skew_secs,
            source: source.to_owned(),
            at,
        });
    }

    pub(crate) fn snapshot(&self) -> SkewSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> SkewSnapshot {
        let mut s = self.0.lock();
        prune(&mut s.window, now);
        SkewSnapshot {
            max_skew_secs_15m: s.window.iter().map(|&(_, v)| v).max(),
            samples_15m: s.window.len(),
            last_skew_secs: s.last.as_ref().map(|l| l.skew_secs),
            last_source: s.last.as_ref().map(|l| l.source.clone()),
            last_seen_age_secs: s
                .last
                .as_ref()
                .map(|l| now.saturating_duration_since(l.at).as_secs()),
        }
    }
}

fn prune(window: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while window
        .front()
        .is_some_and(|&(at, _)| now.saturating_duration_since(at) > SKEW_WINDOW)
    {
        window.pop_front();
    }
}

/// Whole seconds since the epoch (negative before it, which only a broken clock gives).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// An HTTP `Date` value (IMF-fixdate; RFC 2822 is its superset).
pub(crate) fn parse_http_date(v: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc2822)
        .ok()?;
    let secs = t.unix_timestamp();
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------------
// Downloads and content checks

/// A URL for logs and errors: any `user:password@` is cut out.
fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn build_client(s: &InputsSettings) -> Result<reqwest::Client, InputsError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(s.connect_timeout)
        .timeout(s.request_timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("mtproxyd/", env!("CARGO_PKG_VERSION")));
    if !s.env_proxy {
        b = b.no_proxy();
    }
    b.build().map_err(|e| InputsError::Client(error_chain(&e)))
}

/// `e` with its sources: reqwest's own text ("error sending request") says little alone.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !out.contains(&part) {
            out.push_str(": ");
            out.push_str(&part);
        }
        src = s.source();
    }
    out
}

fn request_error(e: reqwest::Error) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout
    } else {
        SourceError::Request(error_chain(&e))
    }
}

/// A download that passed the status rule.
struct Downloaded {
    body: Vec<u8>,
    /// The `Date` header of a 2xx answer.
    date: Option<SystemTime>,
    /// The status when it was not 2xx (only with `need_2xx` off).
    non_2xx: Option<u16>,
}

/// GET `url`: at most `max_len` body bytes; a non-2xx status fails unless `need_2xx` is off.
/// The `Date` header of a 2xx answer goes to `skew` (an error page may come from an
/// intermediary with its own clock).
async fn download(
    client: &reqwest::Client,
    url: &str,
    max_len: usize,
    need_2xx: bool,
    skew: &SkewLog,
) -> Result<Downloaded, SourceError> {
    let mut resp = client.get(url).send().await.map_err(request_error)?;
    let local = SystemTime::now();
    let status = resp.status();
    if !status.is_success() && need_2xx {
        return Err(SourceError::Status(status.as_u16()));
    }
    let non_2xx = (!status.is_success()).then_some(status.as_u16());
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .filter(|_| non_2xx.is_none());
    if let Some(server) = date {
        skew.record(server, local, &display_url(url));
    }
    if resp.content_length().is_some_and(|n| n > max_len as u64) {
        return Err(SourceError::TooLarge(max_len));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > max_len {
            return Err(SourceError::TooLarge(max_len));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Downloaded {
        body,
        date,
        non_2xx,
    })
}

/// A content check: the body and the rules in force.
type Check<T> = fn(&[u8], &Rules) -> Result<T, SourceError>;

fn check_secret(body: &[u8], rules: &Rules) -> Result<Arc<[u8]>, SourceError> {
    let max = rules.secret_len_max;
    if body.len() < *SECRET_LEN.start() || body.len() > max {
        return Err(SourceError::SecretLength {
            len: body.len(),
            max,
        });
    }
    Ok(Arc::from(body))
}

fn check_config(body: &[u8], rules: &Rules) -> Result<ProxyConfigFile, SourceError> {
    let text = std::str::from_utf8(body).map_err(|_| SourceError::NotText)?;
    let c = parse_proxy_config(text)?;
    let rows = c.proxy_for.len();
    // An empty map would drop every ME endpoint.
    if rules.reject_empty_map && rows == 0 {
        return Err(SourceError::Empty);
    }
    if rows < rules.min_proxy_for_lines as usize {
        return Err(SourceError::TooFewRows {
            rows,
            min: rules.min_proxy_for_lines,
        });
    }
    Ok(c)
}

async fn read_cache(path: &Path, max_len: usize) -> Result<Vec<u8>, SourceError> {
    let path = path.to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, SourceError> {
        use std::io::Read;
        let f = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NoCache,
            _ => SourceError::Io(e),
        })?;
        let mut body = Vec::new();
        f.take(max_len as u64 + 1)
            .read_to_end(&mut body)
            .map_err(SourceError::Io)?;
        if body.len() > max_len {
            return Err(SourceError::TooLarge(max_len));
        }
        Ok(body)
    });
    read.await
        .map_err(|e| SourceError::Io(std::io::Error::other(e)))?
}

/// Replaces the cache file with `body` unless it already holds exactly that. Failures are
/// logged, not returned: the snapshot in memory is what matters; the cache only helps the
/// next start when the download fails.
async fn write_cache(file: &InputFile, body: Vec<u8>) {
    let path = file.cache_path.clone();
    let mode = file.kind.cache_mode();
    let wrote = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        if std::fs::read(&path).is_ok_and(|old| old == body) {
            return Ok(false);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        config::write_file_atomically(&path, &body, mode)?;
        Ok(true)
    })
    .await;
    match wrote {
        Ok(Ok(true)) => {
            tracing::debug!(file = %file.cache_path.display(), "{} cached", file.kind.what())
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(
            file = %file.cache_path.display(),
            key = file.cache_key,
            error = %e,
            "cannot write the {} cache",
            file.kind.what()
        ),
        Err(e) => tracing::warn!(error = %e, "cache writer task failed"),
    }
}

/// One file, downloaded and checked.
struct Got<T> {
    value: T,
    body: Vec<u8>,
    date: Option<SystemTime>,
}

async fn fetch_checked<T>(
    client: &reqwest::Client,
    file: &InputFile,
    rules: &Rules,
    skew: &SkewLog,
    check: Check<T>,
) -> Result<Got<T>, SourceError> {
    let need_2xx = rules.needs_2xx(file.kind);
    let d = download(client, &file.url, file.kind.max_len(), need_2xx, skew).await?;
    let value = match (check(&d.body, rules), d.non_2xx) {
        (Ok(v), _) => v,
        (Err(e), Some(status)) => return Err(SourceError::StatusBody(status, Box::new(e))),
        (Err(e), None) => return Err(e),
    };
    if let Some(status) = d.non_2xx {
        tracing::info!(
            url = %display_url(&file.url),
            status,
            "{} accepted with a non-2xx status (general.me_snapshot_require_http_2xx = false)",
            file.kind.what()
        );
    }
    Ok(Got {
        value,
        body: d.body,
        date: d.date,
    })
}

/// First load of one file: the download, else the cache.
async fn load_one<T>(
    client: &reqwest::Client,
    file: &InputFile,
    rules: &Rules,
    skew: &SkewLog,
    check: Check<T>,
) -> Result<(T, Origin, Option<SystemTime>), InputsError> {
    let download = match fetch_checked(client, file, rules, skew, check).await {
        Ok(got) => {
            write_cache(file, got.body).await;
            return Ok((got.value, Origin::Fetched, got.date));
        }
        Err(e) => e,
    };
    let cached = match read_cache(&file.cache_path, file.kind.max_len()).await {
        Ok(body) => check(&body, rules),
        Err(e) => Err(e),
    };
    match cached {
        Ok(value) => {
            tracing::warn!(
                url = %display_url(&file.url),
                error = %download,
                file = %file.cache_path.display(),
                "{} download failed; using the cache file",
                file.kind.what()
            );
            Ok((value, Origin::Cache, None))
        }
        Err(cache) => Err(InputsError::Unavailable(Box::new(Unavailable {
            what: file.kind.what(),
            url: display_url(&file.url),
            url_key: file.url_key,
            download,
            path: file.cache_path.clone(),
            cache_key: file.cache_key,
            cache,
        }))),
    }
}

/// First load: each file is downloaded, or read from its cache when the download fails (any
/// age, like telemt). The secret and the IPv4 config are required; the IPv6 config is not.
pub(crate) async fn load_initial(
    s: &InputsSettings,
    skew: &SkewLog,
) -> Result<MeInputs, InputsError> {
    let client = build_client(s)?;
    load_with(&client, s, skew).await
}

async fn load_with(
    client: &reqwest::Client,
    s: &InputsSettings,
    skew: &SkewLog,
) -> Result<MeInputs, InputsError> {
    let r = &s.rules;
    let (secret, v4, v6) = tokio::join!(
        load_one(client, &s.secret, r, skew, check_secret),
        load_one(client, &s.v4, r, skew, check_config),
        load_one(client, &s.v6, r, skew, check_config),
    );
    let (secret, secret_origin, secret_date) = secret?;
    let (v4, v4_origin, v4_date) = v4?;
    let (v6, v6_origin, v6_date) = match v6 {
        Ok((c, o, d)) => (Some(c), Some(o), d),
        Err(e) => {
            tracing::warn!(error = %e, "no IPv6 proxy config; the ME route uses IPv4 endpoints only");
            (None, None, None)
        }
    };
    let inputs = MeInputs {
        secret,
        v4,
        v6,
        loaded_at: SystemTime::now(),
        source: InputsSource {
            secret: secret_origin,
            v4: v4_origin,
            v6: v6_origin,
        },
        http_date: [secret_date, v4_date, v6_date].into_iter().flatten().max(),
    };
    tracing::info!(
        secret_len = inputs.secret.len(),
        v4_endpoints = inputs.v4.proxy_for.len(),
        v6_endpoints = inputs.v6.as_ref().map_or(0, |c| c.proxy_for.len()),
        source = ?inputs.source,
        "ME inputs loaded"
    );
    Ok(inputs)
}

// ---------------------------------------------------------------------------------------------
// Refresh

/// A downloaded file that differs from the running one, waiting to be seen again.
struct Candidate<T> {
    value: T,
    body: Vec<u8>,
    date: Option<SystemTime>,
    seen: u8,
}

/// The stable-snapshot rule for one file.
struct Pending<T>(Option<Candidate<T>>);

impl<T: PartialEq> Pending<T> {
    /// Feeds one accepted download; true once a value different from `current` has been seen
    /// `need` times in a row (it is then in `self.0`).
    fn observe(&mut self, current: Option<&T>, got: Got<T>, need: u8) -> bool {
        if current == Some(&got.value) {
            // Back to (or still) the running value: a half-seen change is forgotten.
            self.0 = None;
            return false;
        }
        match &mut self.0 {
            Some(c) if c.value == got.value => {
                c.seen = c.seen.saturating_add(1);
                c.date = got.date;
            }
            _ => {
                self.0 = Some(Candidate {
                    value: got.value,
                    body: got.body,
                    date: got.date,
                    seen: 1,
                })
            }
        }
        self.0.as_ref().is_some_and(|c| c.seen >= need.max(1))
    }
}

struct Refresher {
    s: InputsSettings,
    client: reqwest::Client,
    skew: SkewLog,
    secret: Pending<Arc<[u8]>>,
    v4: Pending<ProxyConfigFile>,
    v6: Pending<ProxyConfigFile>,
    last_config_apply: Option<Instant>,
}

/// Logs a refresh download that is not accepted; the running snapshot stays.
fn refresh_result<T>(file: &InputFile, r: Result<Got<T>, SourceError>) -> Option<Got<T>> {
    r.inspect_err(|e| {
        tracing::warn!(
            url = %display_url(&file.url),
            error = %e,
            "{} refresh failed; keeping the current one",
            file.kind.what()
        )
    })
    .ok()
}

impl Refresher {
    fn new(s: InputsSettings, client: reqwest::Client, skew: SkewLog) -> Self {
        Refresher {
            s,
            client,
            skew,
            secret: Pending(None),
            v4: Pending(None),
            v6: Pending(None),
            last_config_apply: None,
        }
    }

    /// One refresh round. Returns the snapshot to publish, if anything changed.
    async fn round(&mut self, current: Option<Arc<MeInputs>>) -> Option<MeInputs> {
        let Some(cur) = current else {
            // Nothing loaded yet (offline start without caches): a full first load.
            return match load_with(&self.client, &self.s, &self.skew).await {
                Ok(inputs) => Some(inputs),
                Err(e) => {
                    tracing::warn!(error = %e, "ME inputs still unavailable");
                    None
                }
            };
        };
        let (s, skew, client) = (&self.s, &self.skew, &self.client);
        let r = &s.rules;
        let secret_fetch = async {
            if r.rotate_secret {
                Some(fetch_checked(client, &s.secret, r, skew, check_secret).await)
            } else {
                None
            }
        };
        let (secret, v4, v6) = tokio::join!(
            secret_fetch,
            fetch_checked(client, &s.v4, r, skew, check_config),
            fetch_checked(client, &s.v6, r, skew, check_config),
        );
        let secret_ready = match secret {
            Some(got) => refresh_result(&s.secret, got).is_some_and(|g| {
                self.secret
                    .observe(Some(&cur.secret), g, r.secret_stable_snapshots)
            }),
            None => {
                tracing::debug!(
                    "proxy secret not refreshed (general.proxy_secret_rotate_runtime = false)"
                );
                self.secret.0 = None;
                false
            }
        };
        let need = r.config_stable_snapshots;
        let mut v4_ready =
            refresh_result(&s.v4, v4).is_some_and(|g| self.v4.observe(Some(&cur.v4), g, need));
        let mut v6_ready =
            refresh_result(&s.v6, v6).is_some_and(|g| self.v6.observe(cur.v6.as_ref(), g, need));
        if (v4_ready || v6_ready)
            && self
                .last_config_apply
                .is_some_and(|t| t.elapsed() < r.config_apply_cooldown)
        {
            // Held, not dropped: the candidate applies on a later round.
            tracing::debug!("proxy config change waits for the apply cooldown");
            v4_ready = false;
            v6_ready = false;
        }
        if !(secret_ready || v4_ready || v6_ready) {
            return None;
        }
        let mut next = MeInputs {
            loaded_at: SystemTime::now(),
            ..(*cur).clone()
        };
        let mut dates = vec![next.http_date];
        if secret_ready {
            if let Some(c) = self.secret.0.take() {
                write_cache(&s.secret, c.body).await;
                next.secret = c.value;
                next.source.secret = Origin::Fetched;
                dates.push(c.date);
            }
        }
        if v4_ready {
            if let Some(c) = self.v4.0.take() {
                write_cache(&s.v4, c.body).await;
                next.v4 = c.value;
                next.source.v4 = Origin::Fetched;
                dates.push(c.date);
            }
        }
        if v6_ready {
            if let Some(c) = self.v6.0.take() {
                write_cache(&s.v6, c.body).await;
                next.v6 = Some(c.value);
                next.source.v6 = Some(Origin::Fetched);
                dates.push(c.date);
            }
        }
        if v4_ready || v6_ready {
            self.last_config_apply = Some(Instant::now());
        }
        next.http_date = dates.into_iter().flatten().max();
        tracing::info!(
            secret_changed = secret_ready,
            v4_changed = v4_ready,
            v6_changed = v6_ready,
            v4_endpoints = next.v4.proxy_for.len(),
            v6_endpoints = next.v6.as_ref().map_or(0, |c| c.proxy_for.len()),
            "ME inputs changed"
        );
        Some(next)
    }
}

/// Spawns the refresh task: every `refresh_every` it takes the settings from `settings`,
/// downloads the files and publishes a changed snapshot on `tx` (see the module doc for the
/// rules). The current snapshot is read from `tx`; when it is `None` each round is a full first
/// load. Stops when `cancel` fires, also in the middle of a download. The HTTP client (timeouts,
/// environment proxy) is built once, from the first settings.
pub(crate) fn spawn_refresh(
    settings: SettingsSource,
    skew: SkewLog,
    tx: watch::Sender<Option<Arc<MeInputs>>>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let first = settings();
        let client = match build_client(&first) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "ME input refresh disabled");
                return;
            }
        };
        let mut period = first.refresh_every;
        let mut r = Refresher::new(first, client, skew);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            r.s = settings();
            period = r.s.refresh_every;
            let current = tx.borrow().clone();
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                next = r.round(current) => next,
            };
            if let Some(next) = next {
                tx.send_replace(Some(Arc::new(next)));
            }
        }
    })
}

#[cfg(test)]
#[path = "inputs_tests.rs"]
mod tests;
