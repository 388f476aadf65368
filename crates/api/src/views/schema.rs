//! The OpenAPI schema of each view's `data` member: one exhaustive match from [`ReadRoute`] to
//! the type its renderer returns, so a new view cannot be added without naming its schema.
//!
//! Owns: that mapping, the collection of each type's nested schemas, and the value sets of
//! the DTOs' fixed-string fields (`schema_with` functions below). The DTO fields stay
//! `&'static str`, so the JSON is what the renderers write; each value set is read from the
//! enum or constants the renderer takes its strings from, so the two cannot drift. Must not:
//! build paths, envelopes or anything HTTP (the `openapi` module does).

use std::collections::BTreeMap;

use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

use super::{counters, edge, fingerprints, me, network, pool, selftest, system, ReadRoute};

/// Named component schemas, keyed by schema name.
pub type Components = BTreeMap<String, RefOr<Schema>>;

/// Registers `T` and every schema it refers to; returns a reference to `T`.
pub fn component<T: ToSchema>(out: &mut Components) -> RefOr<Schema> {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    out.extend(nested);
    let name = T::name().into_owned();
    out.insert(name.clone(), T::schema());
    RefOr::Ref(Ref::from_schema_name(name))
}

/// An array of `T` (registered as a component).
pub fn list_of<T: ToSchema>(out: &mut Components) -> RefOr<Schema> {
    let item = component::<T>(out);
    RefOr::T(Schema::Array(ArrayBuilder::new().items(item).build()))
}

/// The schema of `render(route, ..)`; the types are the ones each renderer returns.
pub fn data_schema(route: ReadRoute, out: &mut Components) -> RefOr<Schema> {
    match route {
        ReadRoute::Health => component::<system::HealthData>(out),
        ReadRoute::HealthReady => component::<system::HealthReadyData>(out),
        ReadRoute::StatsUsersActiveIps => list_of::<counters::UserActiveIps>(out),
        ReadRoute::SystemInfo => component::<system::SystemInfoData>(out),
        ReadRoute::RuntimeGates => component::<system::RuntimeGatesData>(out),
        ReadRoute::RuntimeInitialization => component::<system::RuntimeInitializationData>(out),
        ReadRoute::LimitsEffective => component::<system::EffectiveLimitsData>(out),
        ReadRoute::SecurityPosture => component::<system::SecurityPostureData>(out),
        ReadRoute::SecurityWhitelist => component::<system::SecurityWhitelistData>(out),
        ReadRoute::StatsSummary => component::<counters::SummaryData>(out),
        ReadRoute::StatsZeroAll => component::<counters::ZeroAllData>(out),
        ReadRoute::StatsUpstreams => component::<network::UpstreamsData>(out),
        ReadRoute::StatsMinimalAll => component::<me::MinimalAllData>(out),
        ReadRoute::StatsMeWriters => component::<me::MeWritersData>(out),
        ReadRoute::StatsDcs => component::<me::DcStatusData>(out),
        ReadRoute::RuntimeMePoolState => component::<pool::RuntimeMePoolStateData>(out),
        ReadRoute::RuntimeMeQuality => component::<pool::RuntimeMeQualityData>(out),
        ReadRoute::RuntimeUpstreamQuality => component::<network::RuntimeUpstreamQualityData>(out),
        ReadRoute::RuntimeNatStun => component::<network::RuntimeNatStunData>(out),
        ReadRoute::RuntimeMeSelftest => component::<selftest::RuntimeMeSelftestData>(out),
        ReadRoute::RuntimeConnectionsSummary => {
            component::<edge::RuntimeEdgeConnectionsSummaryData>(out)
        }
        ReadRoute::RuntimeEventsRecent => component::<edge::RuntimeEdgeEventsData>(out),
        ReadRoute::RuntimeTlsFingerprints => {
            component::<fingerprints::RuntimeEdgeTlsFingerprintsData>(out)
        }
    }
}

/// The `limit` query parameter a view reads, with its default and clamp, if any.
pub fn limit_query(route: ReadRoute) -> Option<(&'static str, usize)> {
    match route {
        ReadRoute::RuntimeEventsRecent => Some((
            "Rows to return (default 50, clamped to 1..=1000).",
            edge::EVENTS_MAX_LIMIT,
        )),
        ReadRoute::RuntimeTlsFingerprints => Some((
            "Rows per leaderboard (default `server.api.runtime_edge_top_n`, clamped to 1..=1000).",
            fingerprints::FINGERPRINTS_MAX_LIMIT,
        )),
        _ => None,
    }
}

/// A string field that only takes `values` (and `null` when `nullable`).
fn one_of<'a>(values: impl IntoIterator<Item = &'a str>, nullable: bool) -> Object {
    let mut list: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
    let ty = if nullable {
        list.push(serde_json::Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(ty)
        .enum_values(Some(list))
        .build()
}

/// `schema_with` functions: one per value set.
macro_rules! value_sets {
    ($($(#[$m:meta])* $name:ident($nullable:expr) = $values:expr;)+) => {
        $( $(#[$m])* pub(crate) fn $name() -> Object { one_of($values, $nullable) } )+
    };
}

value_sets! {
    /// `reason` of a view that can be switched off or find its source busy.
    reason_any(false) = [super::FEATURE_DISABLED, super::SOURCE_UNAVAILABLE];
    /// `reason` of a view that can only be switched off.
    reason_disabled(false) = [super::FEATURE_DISABLED];
    /// `reason` of a view that is always on but may find its source busy.
    reason_unavailable(false) = [super::SOURCE_UNAVAILABLE];
    /// `/v1/health`'s `status`.
    health_status(false) = system::HEALTH_STATUSES.iter().copied();
    /// `/v1/health/ready`'s `status`.
    ready_status(false) = system::READY_STATUSES.iter().copied();
    /// `/v1/health/ready`'s `reason` (`null` when ready).
    ready_reason(true) = system::NOT_READY_REASONS.iter().copied();
    /// Startup status of the process and of the ME stage.
    startup_status(false) = crate::runtime::StartupStatus::ALL.iter().map(|s| s.as_str());
    /// Startup status of one component.
    component_status(false) = crate::runtime::ComponentStatus::ALL.iter().map(|s| s.as_str());
    /// Startup transport mode.
    transport_mode(false) = crate::runtime::TransportMode::ALL.iter().map(|s| s.as_str());
    /// An ME writer's contour.
    writer_contour(false) = crate::runtime::WriterContour::ALL.iter().map(|s| s.as_str());
    /// Address family of a refill row.
    addr_family(false) = crate::runtime::AddrFamily::ALL.iter().map(|s| s.as_str());
    /// An upstream's route kind.
    route_kind(false) = crate::runtime::UpstreamRouteKind::ALL.iter().map(|s| s.as_str());
    /// A DC's IP family preference.
    ip_preference(false) = crate::runtime::IpPreference::ALL.iter().map(|s| s.as_str());
    /// A DC's IP family preference, `null` when the pool has not chosen one.
    ip_preference_or_null(true) = crate::runtime::IpPreference::ALL.iter().map(|s| s.as_str());
    /// SOCKS BND.ADDR health.
    bnd_addr_state(false) = crate::runtime::BndAddrState::ALL.iter().map(|s| s.as_str());
    /// SOCKS BND.PORT health.
    bnd_port_state(false) = crate::runtime::BndPortState::ALL.iter().map(|s| s.as_str());
    /// Self-test verdict of a threshold check (KDF error rate, clock skew).
    ok_or_error(false) = selftest::CHECK_STATES.iter().copied();
    /// Self-test class of an interface address.
    ip_class(false) = selftest::IP_CLASSES.iter().copied();
    /// Self-test PID check.
    pid_state(false) = selftest::PID_STATES.iter().copied();
    /// `general.me_floor_mode`.
    floor_mode(false) = config::MeFloorMode::ALL.iter().map(|s| s.as_str());
    /// `general.me_writer_pick_mode`.
    writer_pick_mode(false) = config::MeWriterPickMode::ALL.iter().map(|s| s.as_str());
    /// `general.me_bind_stale_mode`.
    bind_stale_mode(false) = config::MeBindStaleMode::ALL.iter().map(|s| s.as_str());
    /// `general.me_socks_kdf_policy`.
    socks_kdf_policy(false) = config::MeSocksKdfPolicy::ALL.iter().map(|s| s.as_str());
    /// `access.user_max_unique_ips_mode`.
    ip_policy_mode(false) = config::IpPolicyMode::ALL.iter().map(|s| s.as_str());
    /// `general.log_level`.
    log_level(false) = config::LogLevel::ALL.iter().map(|s| s.as_str());
    /// `general.telemetry.me_level`, config spelling.
    me_level(false) = config::MeTelemetryLevel::ALL.iter().map(|s| s.as_str());
    /// A config reload's `state`.
    reload_state(false) = crate::reload::STATES.iter().copied();
    /// A config reload's `mode`.
    reload_mode(false) = crate::reload::MODES.iter().copied();
    /// A config reload's `failure_policy`.
    reload_failure_policy(false) = crate::reload::FAILURE_POLICIES.iter().copied();
    /// `general.telemetry.me_level`, the zero-cost counters' spelling.
    zero_me_level(false) = config::MeTelemetryLevel::ALL.iter().map(|l| counters::zero_me_level(*l));
}
