//! Default Kafka topic names. Every binary lets the operator override them.

/// Profile windows, keyed by service.
pub const PROFILES: &str = "javelin.profiles.v1";
/// Target status, keyed by target id.
pub const STATUS: &str = "javelin.status.v1";
/// Messages the consumer could not ingest, with the reason in headers.
pub const DLQ: &str = "javelin.dlq.v1";
