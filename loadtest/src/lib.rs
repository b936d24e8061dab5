//! Javelin's load test: simulated agents ([`load`]) publishing through the real
//! producer path, scenarios with injected faults and the reconciliation
//! ([`scenario`]), the servers a scenario owns ([`servers`]), and the query API
//! that reconciliations read through ([`query_view`]).

pub mod cluster;
pub mod load;
pub mod query_view;
pub mod scenario;
pub mod servers;
pub mod topics;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
