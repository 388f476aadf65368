//! The atomic [`Counter`] cell and the `counter_block!` macro that declares a group of counters
//! exactly once: the atomics the data plane bumps, the `Serialize` snapshot the API renders
//! (field names are the API's), and a name/value visitor for exposition.
//!
//! Owns no policy: what a counter means is decided where it is declared (`zero.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

/// One lock-free `u64` cell. Used for monotonic counters and for the few gauges
/// (`current_connections_*`, `pool_drain_active`). Never allocates; `Relaxed` is enough because
/// readers only need eventually consistent totals, never cross-counter ordering.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter starting at `v`.
    pub const fn new(v: u64) -> Self {
        Self(AtomicU64::new(v))
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts one, saturating at zero (a gauge must never wrap to `u64::MAX` if a decrement
    /// races ahead of its increment or is issued twice by mistake).
    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    /// Subtracts `n`, saturating at zero.
    #[inline]
    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// Overwrites the value (gauges, state restore).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Declares a counter group once.
///
/// ```ignore
/// counter_block! {
///     /// docs
///     counters UpstreamCounters => snapshot ZeroUpstreamData {
///         /// field docs
///         connect_attempt_total,
///     }
///     extra { /* non-counter snapshot fields, filled by the caller */ }
/// }
/// ```
/// generates `UpstreamCounters` (one [`Counter`] per field, `pub`), `ZeroUpstreamData`
/// (`Serialize`, one `u64` per field, then the extra fields), `UpstreamCounters::snapshot_with(extra..)`,
/// `UpstreamCounters::FIELD_NAMES` and `UpstreamCounters::visit(f)`.
#[macro_export]
macro_rules! counter_block {
    (
        $(#[$cmeta:meta])*
        counters $counters:ident => snapshot $snap:ident {
            $( $(#[$fmeta:meta])* $field:ident ),* $(,)?
        }
        $( extra { $( $(#[$emeta:meta])* $efield:ident : $ety:ty ),* $(,)? } )?
    ) => {
        $(#[$cmeta])*
        #[derive(Debug, Default)]
        pub struct $counters {
            $( $(#[$fmeta])* pub $field: $crate::Counter, )*
        }

        #[doc = concat!("Point-in-time copy of [`", stringify!($counters), "`]; field names are the API's.")]
        #[derive(Debug, Clone, Default, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        // Expanded inside this crate only, so the feature is this crate's.
        #[cfg_attr(feature = "openapi", derive(::utoipa::ToSchema))]
        pub struct $snap {
            $( $(#[$fmeta])* pub $field: u64, )*
            $( $( $(#[$emeta])* pub $efield: $ety, )* )?
        }

        impl $counters {
            /// Counter names in declaration order (the API / exposition names).
            pub const FIELD_NAMES: &'static [&'static str] = &[ $( stringify!($field) ),* ];

            /// Loads every counter (relaxed) and attaches the non-counter fields.
            #[allow(clippy::too_many_arguments)]
            pub fn snapshot_with(&self, $( $( $efield: $ety ),* )?) -> $snap {
                $snap {
                    $( $field: self.$field.get(), )*
                    $( $( $efield, )* )?
                }
            }

            /// Calls `f(name, value)` for every counter, in declaration order.
            pub fn visit(&self, f: &mut dyn FnMut(&'static str, u64)) {
                $( f(stringify!($field), self.$field.get()); )*
            }
        }
    };
}
