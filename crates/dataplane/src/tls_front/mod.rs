//! TLS front profiles: what each configured TLS domain's real site (the mask host) answers a
//! browser with, and the emulated flights derived from it (docs/PROTOCOL.md §4.9,
//! docs/DECISIONS.md #39).
//!
//! Owns: the per-domain [`Profile`] (learned by [`fetch`], stored as JSON in
//! `censorship.tls_front_dir`, loaded at start so the first sessions after a restart already
//! use it), the published [`FlightTable`] and the randomized plans used while a domain has
//! no profile. Must not: touch sessions or the handshake (the handshake reads the published
//! table), or parse TLS bytes (that is `proto::tls::origin`).
//!
//! ```text
//!  <tls_front_dir>/<domain>.json      one Profile per domain, replaced atomically
//!  start: load files ─► table ─► refresh task: fetch every domain now, then every
//!         REFRESH ± 20 % ─► store file ─► rebuild table (ArcSwap)
//! ```

pub(crate) mod fetch;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use proto::{resumed_flight_len, FlightPlan, FlightShape, FlightTable};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// TLS 1.3 as announced in supported_versions.
const TLS13: u16 = 0x0304;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_KEY_SHARE: u16 = 0x0033;
/// Largest per-session length jitter: a site's certificate chain is the same on every
/// connection, so a wide spread would itself stand out.
const MAX_JITTER: usize = 16;
/// EncryptedExtensions body carrying ALPN `h2` alone (list length 2 + extension 9): what an
/// HTTPS server answers a browser that offered `h2`, as Telegram's ClientHello does.
const EE_BODY_ALPN_H2: usize = 11;
/// Largest first / last encrypted record still read as a lone EncryptedExtensions / Finished
/// (Finished is 53 or 69 bytes sealed; larger ones mean the origin coalesced messages).
const MAX_LONE_EE: usize = 1024;
const MAX_LONE_FINISHED: usize = 128;

/// What one fetch learned about a domain's origin (the JSON file's content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// Format version of this file.
    pub(crate) version: u32,
    pub(crate) domain: String,
    /// `host:port` that was asked.
    pub(crate) origin: String,
    pub(crate) fetched_at_unix: u64,
    pub(crate) legacy_version: u16,
    pub(crate) selected_version: u16,
    pub(crate) cipher: u16,
    /// ServerHello extension types in wire order.
    pub(crate) extensions: Vec<u16>,
    pub(crate) key_share_group: Option<u16>,
    /// ALPN when the ServerHello shows it (TLS 1.2).
    pub(crate) alpn: Option<String>,
    pub(crate) ccs_count: usize,
    /// `(content type, length)` of every record after the ServerHello, CCS excluded.
    pub(crate) records: Vec<(u8, usize)>,
    /// Sum of the encrypted (application-data) records, or of the handshake records for a
    /// TLS 1.2 origin: the length of the one emulated record.
    pub(crate) flight_total: usize,
    /// Records that arrived after a pause (session tickets and the like).
    pub(crate) tail_records: usize,
    /// TCP connect time (≈ one round trip to the origin).
    pub(crate) connect_ms: u64,
    /// ClientHello written → last record of the flight read.
    pub(crate) flight_ms: u64,
}

/// Current profile format.
pub(crate) const PROFILE_VERSION: u32 = 1;

impl Profile {
    /// Builds a profile from a parsed flight.
    pub(crate) fn from_shape(
        domain: &str,
        origin: &str,
        shape: &FlightShape,
        tail_records: usize,
        (connect_ms, flight_ms): (u64, u64),
        now_unix: u64,
    ) -> Self {
        let records: Vec<(u8, usize)> = shape
            .records
            .iter()
            .map(|r| (r.content_type, r.len))
            .collect();
        let app = shape.app_data_total();
        let flight_total = if app > 0 {
            app
        } else {
            records.iter().map(|(_, l)| l).sum()
        };
        Self {
            version: PROFILE_VERSION,
            domain: domain.to_owned(),
            origin: origin.to_owned(),
            fetched_at_unix: now_unix,
            legacy_version: shape.hello.legacy_version,
            selected_version: shape.hello.selected_version,
            cipher: shape.hello.cipher,
            extensions: shape.hello.extensions.clone(),
            key_share_group: shape.hello.key_share_group,
            alpn: shape.hello.alpn.clone(),
            ccs_count: shape.ccs_count,
            records,
            flight_total,
            tail_records,
            connect_ms,
            flight_ms,
        }
    }

    /// The emulated flight: the origin's suite (TLS 1.3 only; a 1.2 origin's ECDHE suite
    /// cannot appear in a 1.3 ServerHello), its extension order and its encrypted length;
    /// the delay is the origin's think time, i.e. the flight time minus one round trip,
    /// which the client pays to the proxy anyway.
    pub(crate) fn plan(&self, rng: &mut impl Rng) -> FlightPlan {
        let random = random_plan(rng);
        let pos = |t: u16| self.extensions.iter().position(|&e| e == t);
        let versions_first = match (pos(EXT_SUPPORTED_VERSIONS), pos(EXT_KEY_SHARE)) {
            (Some(v), Some(k)) => v < k,
            _ => random.versions_first,
        };
        let cipher = if self.selected_version == TLS13 && (0x1301..=0x1305).contains(&self.cipher) {
            self.cipher
        } else {
            random.cipher
        };
        let think = self.flight_ms.saturating_sub(self.connect_ms);
        FlightPlan {
            cipher,
            versions_first,
            app_data_len: self.flight_total.clamp(64, 16384),
            jitter: (self.flight_total / 256).clamp(2, MAX_JITTER),
            compact_len: self.resumed_len(cipher),
            delay_ms: (think, think + think / 4 + 1),
        }
    }

    /// What this origin would send encrypted when resuming a session (the compact flight,
    /// docs/PROTOCOL.md §4.9): its own EncryptedExtensions and Finished records when a TLS 1.3
    /// origin wrote each message in a record of its own (three or more records before any
    /// tail: EE, Certificate …, Finished — OpenSSL does), else their computed size for
    /// `cipher` with ALPN `h2`.
    fn resumed_len(&self, cipher: u16) -> usize {
        let flight = &self.records[..self.records.len().saturating_sub(self.tail_records)];
        let app: Vec<usize> = flight
            .iter()
            .filter(|(t, _)| *t == proto::tls::CONTENT_APP_DATA)
            .map(|&(_, l)| l)
            .collect();
        match app[..] {
            [ee, _, .., fin]
                if self.selected_version == TLS13
                    && ee <= MAX_LONE_EE
                    && fin <= MAX_LONE_FINISHED =>
            {
                ee + fin
            }
            _ => resumed_flight_len(cipher, EE_BODY_ALPN_H2),
        }
    }
}

/// A plausible flight for a domain nothing is known about yet: drawn once per domain and
/// process (a real site does not change shape per connection), never a fixed constant.
pub(crate) fn random_plan(rng: &mut impl Rng) -> FlightPlan {
    let lo = rng.gen_range(2..=10);
    // Most servers prefer AES-128-GCM; some pick AES-256-GCM.
    let cipher = if rng.gen_bool(0.7) { 0x1301 } else { 0x1302 };
    FlightPlan {
        cipher,
        versions_first: rng.gen_bool(0.6),
        app_data_len: rng.gen_range(2300..=5200),
        jitter: rng.gen_range(4..=MAX_JITTER),
        // ALPN, plus a few bytes of other extensions some servers add (an empty
        // server_name acknowledgement is 4).
        compact_len: resumed_flight_len(cipher, EE_BODY_ALPN_H2 + rng.gen_range(0..=8)),
        delay_ms: (lo, lo + rng.gen_range(3..=12)),
    }
}

/// Profile file errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad profile JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("domain {0:?} cannot name a file")]
    BadDomain(String),
    #[error("profile format {0} is not {PROFILE_VERSION}")]
    Version(u32),
}

/// The profile directory: `tls_front_dir`, relative to the config file's directory.
pub(crate) fn front_dir(config_path: &Path, configured: &str) -> PathBuf {
    config::relative_to_config(config_path, configured)
}

fn profile_path(dir: &Path, domain: &str) -> Result<PathBuf, StoreError> {
    // Config validation already wants host names; this keeps a path out of a file name.
    if !proto::tls::hello::is_plausible_host(domain) {
        return Err(StoreError::BadDomain(domain.to_owned()));
    }
    Ok(dir.join(format!("{}.json", domain.to_ascii_lowercase())))
}

/// Reads `domain`'s stored profile, `Ok(None)` when there is none.
pub(crate) fn load_profile(dir: &Path, domain: &str) -> Result<Option<Profile>, StoreError> {
    let path = profile_path(dir, domain)?;
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let p: Profile = serde_json::from_slice(&bytes)?;
    if p.version != PROFILE_VERSION {
        return Err(StoreError::Version(p.version));
    }
    Ok(Some(p))
}

/// Stores a profile atomically (temp file, fsync, rename): a reader sees the old or the
/// new file, never half of one.
pub(crate) fn store_profile(dir: &Path, p: &Profile) -> Result<(), StoreError> {
    let path = profile_path(dir, &p.domain)?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp.{}", p.domain, std::process::id()));
    let json = serde_json::to_vec_pretty(p)?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

/// Learned profiles and the flight table published from them.
pub(crate) struct Fronts {
    table: ArcSwap<FlightTable>,
    state: Mutex<FrontState>,
    /// Wakes the refresh task early (domains or emulation changed by a config publish).
    wake: Arc<tokio::sync::Notify>,
}

struct FrontState {
    profiles: HashMap<String, Profile>,
    /// Plans of domains without a profile, kept stable for the process.
    random: HashMap<String, FlightPlan>,
    fallback: FlightPlan,
    domains: Vec<String>,
}

impl Fronts {
    pub(crate) fn new() -> Self {
        let mut rng = rand::thread_rng();
        let fallback = random_plan(&mut rng);
        Self {
            table: ArcSwap::from_pointee(FlightTable {
                plans: Vec::new(),
                fallback: fallback.clone(),
            }),
            state: Mutex::new(FrontState {
                profiles: HashMap::new(),
                random: HashMap::new(),
                fallback,
                domains: Vec::new(),
            }),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Asks the refresh task to fetch now (a config publish changed what it fetches).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// What [`Self::wake`] notifies; held by the refresh task without keeping the data plane
    /// alive.
    pub(crate) fn waker(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.wake)
    }

    /// The table new handshakes use.
    pub(crate) fn flights(&self) -> Arc<FlightTable> {
        self.table.load_full()
    }

    /// Sets the domain list (config order, `tls_domain` first) and republishes; `true` when
    /// it changed.
    pub(crate) fn set_domains(&self, domains: Vec<String>) -> bool {
        let mut st = self.state.lock();
        if st.domains == domains {
            return false;
        }
        st.domains = domains;
        self.publish(&mut st);
        true
    }

    /// Records a profile (fetched or loaded) and republishes.
    pub(crate) fn set_profile(&self, p: Profile) {
        let mut st = self.state.lock();
        st.profiles.insert(p.domain.to_ascii_lowercase(), p);
        self.publish(&mut st);
    }

    /// Domains with a profile.
    #[cfg(test)]
    pub(crate) fn profiled(&self) -> usize {
        let st = self.state.lock();
        st.domains
            .iter()
            .filter(|d| st.profiles.contains_key(&d.to_ascii_lowercase()))
            .count()
    }

    fn publish(&self, st: &mut FrontState) {
        let mut rng = rand::thread_rng();
        let mut plans = Vec::with_capacity(st.domains.len());
        for d in &st.domains {
            let key = d.to_ascii_lowercase();
            let plan = match st.profiles.get(&key) {
                Some(p) => p.plan(&mut rng),
                None => st
                    .random
                    .entry(key)
                    .or_insert_with(|| random_plan(&mut rng))
                    .clone(),
            };
            plans.push((d.clone(), plan));
        }
        self.table.store(Arc::new(FlightTable {
            plans,
            fallback: st.fallback.clone(),
        }));
    }
}

#[cfg(test)]
mod tests;
