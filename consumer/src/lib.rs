//! The Javelin consumer: Kafka → ClickHouse.
//!
//! # Pipeline
//! [`ingest`] polls the consumer group and cuts batches by rows, bytes and time →
//! [`convert`] decodes and validates each message and turns it into rows →
//! [`batch`] writes them, isolating rows ClickHouse rejects →
//! [`sink`] inserts into ClickHouse, retried while it is unavailable →
//! only then are the batch's offsets stored for commit. Undecodable or invalid
//! messages go to the dead-letter topic ([`dead_letter`]) with the reason in headers.

pub mod batch;
pub mod config;
pub mod convert;
pub mod dead_letter;
pub mod ingest;
pub mod metrics;
pub mod rate_limit;
pub mod replay;
pub mod retention;
pub mod sink;
