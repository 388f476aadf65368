//! Shadowsocks SIP002 URLs of `[[upstreams]] type = "shadowsocks"` (docs/PROTOCOL.md §9.4):
//! `ss://<base64url(method:password)>@host:port` or `ss://<percent-encoded method:password>@host:port`
//! (the only form for 2022 ciphers), optional `/`, `?query` and `#tag`.
//!
//! Owns: parsing and validating the URL for config validation (cipher known, 2022 PSK
//! length, no plugin) and producing the credential-free display address.
//! Must not: do any cryptography (the data plane's Shadowsocks client does).

/// Ciphers accepted: AEAD (2017) and the 2022 edition.
pub const SS_CIPHERS: &[&str] = &[
    "aes-128-gcm",
    "aes-256-gcm",
    "chacha20-ietf-poly1305",
    "2022-blake3-aes-128-gcm",
    "2022-blake3-aes-256-gcm",
    "2022-blake3-chacha20-poly1305",
];

/// A parsed `ss://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ShadowsocksUrl {
    pub method: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Debug for ShadowsocksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowsocksUrl")
            .field("method", &self.method)
            .field("password", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

fn b64_value(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    })
}

/// Decodes standard or URL-safe base64, padding optional.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in s.as_bytes() {
        acc = (acc << 6) | u32::from(b64_value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be padding zeros and fewer than a byte.
    (bits < 6 && acc == 0).then_some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ShadowsocksUrl {
    /// Parses and validates; errors are phrased for `upstreams[i].url ...` messages.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .trim()
            .strip_prefix("ss://")
            .ok_or_else(|| "must start with ss://".to_string())?;
        let (main, _tag) = rest.split_once('#').unwrap_or((rest, ""));
        let (main, query) = main.split_once('?').unwrap_or((main, ""));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if key == "plugin" {
                return Err("plugins are not supported (remove ?plugin=...)".into());
            }
        }
        let main = main.trim_end_matches('/');
        let (userinfo, hostport) = main.rsplit_once('@').ok_or_else(|| {
            "must be ss://userinfo@host:port (legacy base64-only form is not supported)".to_string()
        })?;
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h
                .split_once("]:")
                .ok_or_else(|| format!("bad host:port {hostport:?}"))?;
            (h.to_string(), p)
        } else {
            let (h, p) = hostport
                .rsplit_once(':')
                .ok_or_else(|| format!("missing port in {hostport:?}"))?;
            (h.to_string(), p)
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {port:?}"))?;
        let plain = if userinfo.contains(':') || userinfo.contains('%') {
            percent_decode(userinfo).ok_or("bad percent-encoding in userinfo")?
        } else {
            let raw =
                base64_decode(userinfo).ok_or("userinfo is neither method:password nor base64")?;
            String::from_utf8(raw).map_err(|_| "userinfo base64 is not UTF-8".to_string())?
        };
        let (method, password) = plain
            .split_once(':')
            .ok_or_else(|| "userinfo must be method:password".to_string())?;
        if !SS_CIPHERS.contains(&method) {
            return Err(format!(
                "unknown cipher {method:?} (supported: {})",
                SS_CIPHERS.join(", ")
            ));
        }
        if password.is_empty() {
            return Err("empty password".into());
        }
        if let Some(need) = match method {
            "2022-blake3-aes-128-gcm" => Some(16),
            "2022-blake3-aes-256-gcm" | "2022-blake3-chacha20-poly1305" => Some(32),
            _ => None,
        } {
            // 2022 PSKs are base64 keys of the cipher's key size (multi-user: `:`-joined).
            for psk in password.split(':') {
                let ok = base64_decode(psk).is_some_and(|k| k.len() == need);
                if !ok {
                    return Err(format!(
                        "{method} needs a base64 pre-shared key of {need} bytes"
                    ));
                }
            }
        }
        Ok(Self {
            method: method.to_string(),
            password: password.to_string(),
            host,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip002_forms() {
        // base64url("chacha20-ietf-poly1305:pw")
        let u = ShadowsocksUrl::parse("ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpwdw@127.0.0.1:8388/#x")
            .expect("base64 form");
        assert_eq!(
            (
                u.method.as_str(),
                u.password.as_str(),
                u.host.as_str(),
                u.port
            ),
            ("chacha20-ietf-poly1305", "pw", "127.0.0.1", 8388)
        );
        let psk = "AAECAwQFBgcICQoLDA0ODw=="; // 16 bytes
        let u = ShadowsocksUrl::parse(&format!("ss://2022-blake3-aes-128-gcm:{psk}@[::1]:9"))
            .expect("2022 form");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        let enc = "ss://2022-blake3-aes-128-gcm%3AAAECAwQFBgcICQoLDA0ODw%3D%3D@h:1";
        assert_eq!(ShadowsocksUrl::parse(enc).expect("percent").password, psk);
    }

    #[test]
    fn rejects_clearly() {
        let e = |u: &str| ShadowsocksUrl::parse(u).expect_err(u);
        assert!(e("http://x@h:1").contains("ss://"));
        assert!(e("ss://rc4-md5:pw@h:1").contains("unknown cipher"));
        assert!(e("ss://aes-128-gcm:pw@h:1/?plugin=obfs-local").contains("plugin"));
        assert!(e("ss://aes-128-gcm:pw@h").contains("port"));
        assert!(
            e("ss://2022-blake3-aes-256-gcm:AAECAwQFBgcICQoLDA0ODw==@h:1").contains("32 bytes")
        );
        assert!(e("ss://aes-128-gcm:@h:1").contains("empty password"));
        assert!(!format!(
            "{:?}",
            ShadowsocksUrl::parse("ss://aes-128-gcm:secretpw@h:1").unwrap()
        )
        .contains("secretpw"));
    }

    fn config_error(upstreams: &str) -> String {
        let text = format!(
            "[general]\nuse_middle_proxy = false\n[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n{upstreams}"
        );
        crate::parse_str(&text).expect_err(upstreams).to_string()
    }

    #[test]
    fn upstream_validation_errors_name_the_entry() {
        let e = config_error("[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"ss://rc4:pw@h:1\"\n");
        assert!(
            e.contains("upstreams[0].url") && e.contains("unknown cipher"),
            "{e}"
        );
        let e = config_error(
            "[[upstreams]]\ntype = \"direct\"\n[[upstreams]]\ntype = \"shadowsocks\"\nurl = \"ss://aes-256-gcm:topsecret@h:1?plugin=x\"\n",
        );
        assert!(
            e.contains("upstreams[1].url") && e.contains("plugin"),
            "{e}"
        );
        assert!(!e.contains("topsecret"), "password never echoed: {e}");
        let e = config_error("[[upstreams]]\ntype = \"socks5\"\naddress = \"nohost\"\n");
        assert!(e.contains("upstreams[0].address"), "{e}");
        let e =
            config_error("[[upstreams]]\ntype = \"socks5\"\naddress = \"h:1\"\npassword = \"p\"\n");
        assert!(e.contains("upstreams[0].password requires username"), "{e}");
        let e = config_error("[[upstreams]]\ntype = \"direct\"\nbind_addresses = [\"eth0\"]\n");
        assert!(e.contains("bind_addresses"), "{e}");
        let e = config_error("[[upstreams]]\ntype = \"http\"\n");
        assert!(e.contains("type must be one of"), "{e}");
        let e = config_error("[[upstreams]]\ntype = \"direct\"\nenabled = false\n");
        assert!(e.contains("at least one upstream must be enabled"), "{e}");
        let me = "[general]\nuse_middle_proxy = true\n[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n\
                  [[upstreams]]\ntype = \"shadowsocks\"\nurl = \"ss://aes-128-gcm:pw@h:1\"\n";
        let e = crate::parse_str(me).expect_err("ss with ME").to_string();
        assert!(e.contains("use_middle_proxy = false"), "{e}");
        let ok = "[general]\nuse_middle_proxy = false\n[access.users]\nu = \"00112233445566778899aabbccddeeff\"\n\
                  [[upstreams]]\ntype = \"socks5\"\naddress = \"127.0.0.1:1080\"\nusername = \"a\"\npassword = \"b\"\n";
        assert!(crate::parse_str(ok).is_ok());
    }
}
