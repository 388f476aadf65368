//! `UserInfo` rendering: config fields from the snapshot + runtime fields from `stats`, written
//! straight into the response buffer. Per-request work (link plan, IP window, clock) is done
//! once in [`UserRenderer::new`]; per user it is map lookups and copying.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use config::{Config, UserSecret};

use crate::links::LinkPlan;
use crate::runtime::Runtime;

type JsonResult = Result<(), serde_json::Error>;

/// Renders users of one config snapshot.
pub struct UserRenderer<'a> {
    cfg: &'a Config,
    stats: &'a stats::Stats,
    plan: LinkPlan,
    window: Duration,
    now: Instant,
}

fn push_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> JsonResult {
    serde_json::to_writer(&mut *buf, v)
}

fn push_u64(buf: &mut Vec<u8>, n: u64) {
    let b = itoa_buf(n);
    buf.extend_from_slice(b.as_bytes());
}

/// Small stack formatter for integers (avoids a `String` per number).
struct ItoaBuf {
    bytes: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> ItoaBuf {
    let mut bytes = [0u8; 20];
    let mut i = bytes.len();
    loop {
        i -= 1;
        bytes[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    ItoaBuf { bytes, start: i }
}

fn push_opt_u64(buf: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(n) => push_u64(buf, n),
        None => buf.extend_from_slice(b"null"),
    }
}

fn push_ips(buf: &mut Vec<u8>, ips: &[IpAddr]) {
    buf.push(b'[');
    for (i, ip) in ips.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        // IP text is ASCII digits, dots, colons and hex: no escaping needed.
        buf.push(b'"');
        use std::io::Write;
        let _ = write!(buf, "{ip}");
        buf.push(b'"');
    }
    buf.push(b']');
}

impl<'a> UserRenderer<'a> {
    pub fn new(cfg: &'a Config, runtime: &'a dyn Runtime) -> Self {
        Self {
            cfg,
            stats: runtime.stats(),
            plan: LinkPlan::from_config(cfg, runtime.detected_ips()),
            window: Duration::from_secs(cfg.access.user_max_unique_ips_window_secs),
            now: Instant::now(),
        }
    }

    /// Rough output size, to size the response buffer once.
    pub fn size_hint(&self) -> usize {
        self.cfg.access.users.len() * 640
    }

    /// Writes `UserInfo[]` for every configured user, sorted by username (byte order: the
    /// access map is a `BTreeMap<String, _>`).
    pub fn write_list(&self, buf: &mut Vec<u8>) -> JsonResult {
        buf.push(b'[');
        for (i, (username, secret)) in self.cfg.access.users.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            self.write_user(buf, username, secret)?;
        }
        buf.push(b']');
        Ok(())
    }

    /// Writes one user's `UserInfo`; `Ok(false)` when not configured (one map lookup).
    pub fn write_one(&self, buf: &mut Vec<u8>, username: &str) -> Result<bool, serde_json::Error> {
        match self.cfg.access.users.get_key_value(username) {
            Some((name, secret)) => self.write_user(buf, name, secret).map(|()| true),
            None => Ok(false),
        }
    }

    /// Writes `{"user": UserInfo, "secret": "<hex>"}`; `Ok(false)` when not configured.
    pub fn write_with_secret(
        &self,
        buf: &mut Vec<u8>,
        username: &str,
    ) -> Result<bool, serde_json::Error> {
        let Some((name, secret)) = self.cfg.access.users.get_key_value(username) else {
            return Ok(false);
        };
        buf.extend_from_slice(b"{\"user\":");
        self.write_user(buf, name, secret)?;
        buf.extend_from_slice(b",\"secret\":\"");
        buf.extend_from_slice(secret.to_hex().as_bytes());
        buf.extend_from_slice(b"\"}");
        Ok(true)
    }

    fn write_user(&self, buf: &mut Vec<u8>, u: &str, secret: &UserSecret) -> JsonResult {
        let access = &self.cfg.access;
        let counters = self.stats.users().get(u).unwrap_or_default();
        let ips = self.stats.ips();
        let active = ips.active_ips(u);
        let recent = ips.recent_ips(u, self.window, self.now);
        let mut hex_buf = [0u8; 32];
        // Encoding 16 bytes into a 32-byte buffer cannot fail; hex digits are valid UTF-8.
        let secret_hex = match hex::encode_to_slice(secret.0, &mut hex_buf) {
            Ok(()) => std::str::from_utf8(&hex_buf).unwrap_or(""),
            Err(_) => "",
        };

        buf.extend_from_slice(b"{\"username\":");
        push_json(buf, u)?;
        buf.extend_from_slice(if access.user_enabled(u) {
            b",\"enabled\":true"
        } else {
            b",\"enabled\":false"
        });
        // Config writes are applied before they return, so the runtime always has the entry.
        buf.extend_from_slice(b",\"in_runtime\":true");
        buf.extend_from_slice(b",\"user_ad_tag\":");
        match access.user_ad_tags.get(u) {
            Some(tag) => {
                buf.push(b'"');
                buf.extend_from_slice(tag.to_hex().as_bytes());
                buf.push(b'"');
            }
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"max_tcp_conns\":");
        push_opt_u64(buf, access.effective_max_tcp_conns(u).map(|n| n as u64));
        buf.extend_from_slice(b",\"expiration_rfc3339\":");
        push_json(
            buf,
            // UTC with `Z`, as the file stores it (docs/DECISIONS.md #20).
            &access
                .user_expirations
                .get(u)
                .map(|t| config::format_expiration(*t)),
        )?;
        buf.extend_from_slice(b",\"data_quota_bytes\":");
        push_opt_u64(buf, access.user_data_quota.get(u).copied());
        buf.extend_from_slice(b",\"max_unique_ips\":");
        push_opt_u64(buf, access.effective_max_unique_ips(u).map(|n| n as u64));
        let rate = access.user_rate_limits.get(u);
        let cap = |v: u64| (v > 0).then_some(v);
        buf.extend_from_slice(b",\"rate_limit_up_bps\":");
        push_opt_u64(buf, rate.and_then(|r| cap(r.up_bps)));
        buf.extend_from_slice(b",\"rate_limit_down_bps\":");
        push_opt_u64(buf, rate.and_then(|r| cap(r.down_bps)));
        let schedule = access.user_quota_reset.get(u);
        buf.extend_from_slice(b",\"quota_reset\":");
        push_json(buf, &schedule.map(|s| s.to_string()))?;
        let last_reset = self
            .stats
            .users()
            .existing(u)
            .map(|s| s.last_quota_reset_epoch_secs())
            .filter(|t| *t > 0);
        buf.extend_from_slice(b",\"last_quota_reset_epoch_secs\":");
        push_opt_u64(buf, last_reset);
        buf.extend_from_slice(b",\"next_quota_reset_epoch_secs\":");
        let next = schedule.map(|s| {
            s.next_boundary(time::OffsetDateTime::now_utc())
                .unix_timestamp()
        });
        push_opt_u64(buf, next.and_then(|t| u64::try_from(t).ok()));
        buf.extend_from_slice(b",\"current_connections\":");
        push_u64(buf, counters.current_connections);
        buf.extend_from_slice(b",\"active_unique_ips\":");
        push_u64(buf, active.len() as u64);
        buf.extend_from_slice(b",\"active_unique_ips_list\":");
        push_ips(buf, &active);
        buf.extend_from_slice(b",\"recent_unique_ips\":");
        push_u64(buf, recent.len() as u64);
        buf.extend_from_slice(b",\"recent_unique_ips_list\":");
        push_ips(buf, &recent);
        buf.extend_from_slice(b",\"total_octets\":");
        push_u64(buf, counters.total_octets);
        buf.extend_from_slice(b",\"links\":");
        self.plan.write_links(buf, secret_hex);
        buf.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut b = Vec::new();
            push_u64(&mut b, n);
            assert_eq!(String::from_utf8(b).expect("utf8"), n.to_string());
        }
    }
}
