//! Small value types shared by the model and the store: secrets, ad tags, enums with telemt's
//! spellings, and the username rule.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Parses exactly 32 hex characters (either case) into 16 bytes.
fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

macro_rules! hex16_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// 32 lowercase hex characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            // Secrets must not leak into logs through `{:?}`.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(..)"))
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex16(s)
                    .map($name)
                    .ok_or_else(|| concat!($what, " must be exactly 32 hex characters").to_string())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex16_type!(
    /// A user's 16-byte MTProto secret. `Display`/`to_hex()` give 32 lowercase hex characters;
    /// `FromStr` accepts exactly 32 hex characters.
    UserSecret,
    "secret"
);
hex16_type!(
    /// A 16-byte promotion tag from @MTProxybot (same text form as [`UserSecret`]).
    AdTag,
    "ad tag"
);

impl UserSecret {
    /// A fresh random secret from the OS-seeded thread RNG.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        UserSecret(b)
    }
}

/// Validates a username: `[A-Za-z0-9_.-]{1,64}` (docs/DECISIONS.md #10).
pub fn validate_username(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("username must be 1..64 characters long".to_string());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("username may contain only A-Z, a-z, 0-9, '_', '.', '-'".to_string());
    }
    Ok(())
}

macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? } default $def:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order (the API schema's value list).
            pub const ALL: &'static [Self] = &[$($name::$variant),+];

            /// The TOML/API spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl Default for $name {
            fn default() -> Self { $name::$def }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

str_enum!(
    /// `access.user_max_unique_ips_mode`.
    IpPolicyMode {
        /// Count only currently connected source IPs.
        ActiveWindow => "active_window",
        /// Count source IPs seen within `user_max_unique_ips_window_secs`.
        TimeWindow => "time_window",
        /// Enforce both limits.
        Combined => "combined",
    } default ActiveWindow
);

str_enum!(
    /// `general.log_level` (telemt's four levels).
    LogLevel {
        Debug => "debug",
        Verbose => "verbose",
        Normal => "normal",
        Silent => "silent",
    } default Normal
);

str_enum!(
    /// `general.telemetry.me_level`.
    MeTelemetryLevel { Silent => "silent", Normal => "normal", Debug => "debug" } default Normal
);

str_enum!(
    /// `general.me_floor_mode`.
    MeFloorMode { Static => "static", Adaptive => "adaptive" } default Adaptive
);

str_enum!(
    /// `general.me_writer_pick_mode`.
    MeWriterPickMode { SortedRr => "sorted_rr", P2c => "p2c" } default P2c
);

str_enum!(
    /// `general.me_bind_stale_mode`.
    MeBindStaleMode { Never => "never", Ttl => "ttl", Always => "always" } default Never
);

str_enum!(
    /// `general.me_socks_kdf_policy`.
    MeSocksKdfPolicy { Strict => "strict", Compat => "compat" } default Strict
);

str_enum!(
    /// `general.me_route_no_writer_mode`.
    MeRouteNoWriterMode {
        AsyncRecoveryFailfast => "async_recovery_failfast",
        InlineRecoveryLegacy => "inline_recovery_legacy",
        HybridAsyncPersistent => "hybrid_async_persistent",
    } default HybridAsyncPersistent
);

str_enum!(
    /// `censorship.unknown_sni_action`.
    UnknownSniAction {
        Drop => "drop",
        Mask => "mask",
        Accept => "accept",
        RejectHandshake => "reject_handshake",
    } default Drop
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_roundtrip_and_strictness() {
        let s: UserSecret = "00112233445566778899AABBCCDDEEFF".parse().unwrap();
        assert_eq!(s.to_hex(), "00112233445566778899aabbccddeeff");
        assert_eq!(format!("{s:?}"), "UserSecret(..)");
        assert!("0011".parse::<UserSecret>().is_err());
        assert!("zz112233445566778899aabbccddeeff"
            .parse::<UserSecret>()
            .is_err());
        assert!("+0112233445566778899aabbccddeeff".parse::<AdTag>().is_err());
        assert!(" 00112233445566778899aabbccddeef".parse::<AdTag>().is_err());
    }

    #[test]
    fn usernames() {
        assert!(validate_username("alice_1.b-c").is_ok());
        assert!(validate_username(&"a".repeat(64)).is_ok());
        assert!(validate_username(&"a".repeat(65)).is_err());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("a/b").is_err());
        assert!(validate_username("é").is_err());
    }

    #[test]
    fn enum_spellings() {
        assert_eq!(IpPolicyMode::TimeWindow.as_str(), "time_window");
        assert_eq!(MeWriterPickMode::default().as_str(), "p2c");
        assert_eq!(LogLevel::Silent.as_str(), "silent");
    }
}
