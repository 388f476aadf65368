//! The OpenAPI schema of each view's `data` member: one exhaustive match from [`ReadRoute`] to
//! the type its renderer returns, so a new view cannot be added without naming its schema.
//!
//! Owns: that mapping and the collection of each type's nested schemas. Must not: build paths,
//! envelopes or anything HTTP (the `openapi` module does).

use std::collections::BTreeMap;

use utoipa::openapi::schema::{ArrayBuilder, Schema};
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
