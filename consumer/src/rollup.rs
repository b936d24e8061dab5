//! Builds the hourly rollups the query API answers long ranges from
//! ([`javelin_schema::rollup`]).
//!
//! A pass finds the closed, quiet hours (their end, and their last stored
//! part, at least a grace period ago) whose `stored_parts` count no build has
//! seen (never built, or written to since: a redelivery, a replay, a late
//! window), takes the newest `max_builds` of them, and builds each unless a
//! build with the hour's current count has appeared meanwhile. A build counts
//! the hour's `stored_parts` rows *before* it reads the samples: a part that
//! lands in between is in the build but not in its count, which only makes the
//! hour look stale (read raw, built again), never counts a part the build
//! missed.
//!
//! The build is one `INSERT … SELECT` on the server (the hour's rows never
//! pass through the consumer; the server's `max_memory_usage` bounds its
//! aggregation), then its `rollup_builds` row: a build interrupted before that
//! row is never read. Every consumer of a group runs passes, each starting at
//! its own place in the list, so they mostly build different hours; two that
//! build one hour at once both write whole builds (ids carry random low bits)
//! and readers take one. A failed build is logged and counted and the pass
//! goes on: one hour the server refuses does not hold back the others.

use std::time::Duration;

use clickhouse::{Client, Row};
use javelin_schema::rollup::{RESOLUTION_S, bucket_of};
use javelin_schema::telemetry::Telemetry;
use opentelemetry::metrics::Counter;
use serde::Deserialize;

/// How the builder runs.
#[derive(Debug, Clone)]
pub struct RollupOptions {
    /// Time between passes.
    pub every: Duration,
    /// How long after an hour's end it is first built (late windows of a
    /// closed hour still send it back to raw reads and a rebuild).
    pub grace: Duration,
    /// Most builds per pass; the rest wait for the next one.
    pub max_builds: u32,
    /// Days of data kept: hours older than this are never built (their raw
    /// rows are expiring).
    pub retention_days: u32,
}

/// One hour to build.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct Due {
    pub service: String,
    pub profile_type: String,
    pub bucket: u32,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Hours built.
    pub built: Vec<Due>,
    /// Hours found current when their turn came (another consumer built them).
    pub skipped: usize,
    /// Hours whose build failed, with the error (read raw until a later pass).
    pub failed: Vec<(Due, String)>,
    /// More hours were due than a pass builds: the next pass goes on.
    pub more: bool,
}

/// The builder's counters.
#[derive(Clone)]
pub struct RollupMetrics {
    builds: Counter<u64>,
    failures: Counter<u64>,
}

impl std::fmt::Debug for RollupMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupMetrics").finish_non_exhaustive()
    }
}

impl RollupMetrics {
    pub fn new(telemetry: &Telemetry) -> RollupMetrics {
        let meter = telemetry.meter("javelin-consumer");
        RollupMetrics {
            builds: meter
                .u64_counter("javelin.consumer.rollup.builds")
                .with_description("Hourly rollup builds stored")
                .build(),
            failures: meter
                .u64_counter("javelin.consumer.rollup.failures")
                .with_description(
                    "Rollup builds or passes that failed (the hours stay raw-read until a later pass)",
                )
                .build(),
        }
    }
}

/// Runs a pass now and then every `options.every`, logging failures.
pub async fn run(db: Client, options: RollupOptions, metrics: RollupMetrics) {
    let mut ids = BuildIds::default();
    loop {
        match pass(&db, &options, now_s(), &mut ids).await {
            Ok(report) => {
                metrics.builds.add(report.built.len() as u64, &[]);
                metrics.failures.add(report.failed.len() as u64, &[]);
                for (hour, error) in &report.failed {
                    tracing::warn!(service = %hour.service, profile_type = %hour.profile_type, bucket = hour.bucket, %error, "rollup build failed; the hour stays raw-read until a later pass");
                }
                if !report.built.is_empty() {
                    tracing::info!(
                        built = report.built.len(),
                        skipped = report.skipped,
                        more = report.more,
                        "rollup pass"
                    );
                }
            }
            Err(e) => {
                metrics.failures.add(1, &[]);
                tracing::warn!(error = %e, "rollup pass failed; the hours stay raw-read until a later pass");
            }
        }
        tokio::time::sleep(options.every).await;
    }
}

/// Builds the hours due at `now_s` (at most `options.max_builds`).
pub async fn pass(
    db: &Client,
    options: &RollupOptions,
    now_s: u32,
    ids: &mut BuildIds,
) -> Result<PassReport, clickhouse::error::Error> {
    let mut due = due(db, options, now_s).await?;
    let mut report = PassReport {
        more: due.len() > options.max_builds as usize,
        ..PassReport::default()
    };
    due.truncate(options.max_builds as usize);
    // Each consumer starts at its own place: concurrent passes spread out.
    if !due.is_empty() {
        let start = (ids.random_bits() as usize) % due.len();
        due.rotate_left(start);
    }
    for hour in due {
        match build(db, &hour, ids.take()).await {
            Ok(true) => report.built.push(hour),
            Ok(false) => report.skipped += 1,
            Err(e) => report.failed.push((hour, e.to_string())),
        }
    }
    Ok(report)
}

/// The hours due at `now_s`, newest first: closed, quiet (no part stored in
/// the last grace period: late writes and replicas settle first), inside
/// retention, and with a `stored_parts` count no build of theirs saw; at most
/// `max_builds` + 1 (the one more says the next pass has work).
pub async fn due(
    db: &Client,
    options: &RollupOptions,
    now_s: u32,
) -> Result<Vec<Due>, clickhouse::error::Error> {
    // Hours wholly inside retention: none of their rows can have expired.
    let oldest = now_s
        .saturating_sub(options.retention_days.saturating_mul(86_400))
        .div_ceil(RESOLUTION_S)
        .saturating_mul(RESOLUTION_S);
    let grace = u32::try_from(options.grace.as_secs()).unwrap_or(u32::MAX);
    let end = bucket_of(now_s.saturating_sub(grace));
    if end <= oldest {
        return Ok(Vec::new());
    }
    // LIMIT bounds what a pass holds, whatever the number of services. An
    // hour never built joins an empty list (`join_use_nulls` off, whatever
    // the user's profile says).
    db.query(
        "SELECT service, profile_type, bucket FROM (
             SELECT service, profile_type,
                 toUInt32(intDiv(toUInt32(window_start), 3600) * 3600) AS bucket, count() AS parts,
                 max(stored_at) AS last_stored
             FROM stored_parts
             WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?)
             GROUP BY service, profile_type, bucket) AS stored
         ANY LEFT JOIN (
             SELECT service, profile_type, toUInt32(bucket_start) AS bucket,
                 groupArray(source_parts) AS seen
             FROM rollup_builds
             WHERE resolution = 3600 AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?)
             GROUP BY service, profile_type, bucket) AS built
         USING (service, profile_type, bucket)
         WHERE NOT has(seen, parts) AND last_stored <= toDateTime(?)
         ORDER BY bucket DESC, service, profile_type
         LIMIT ?",
    )
    .with_setting("join_use_nulls", "0")
    .bind(oldest)
    .bind(end)
    .bind(oldest)
    .bind(end)
    .bind(now_s.saturating_sub(grace))
    .bind(options.max_builds.saturating_add(1))
    .fetch_all::<Due>()
    .await
}

/// Builds one hour as build `build_id`: counts its `stored_parts` rows, sums
/// its samples counted once per (labels, stack) into `samples_rollup`, then
/// names the build in `rollup_builds`. `false` (nothing written) when a build
/// of the hour with its current count exists already.
pub async fn build(
    db: &Client,
    hour: &Due,
    build_id: u64,
) -> Result<bool, clickhouse::error::Error> {
    let end = hour.bucket + RESOLUTION_S;
    let source_parts: u64 = db
        .query(&format!(
            "SELECT count() FROM stored_parts WHERE {}",
            javelin_schema::exactly_once::SCOPE
        ))
        .bind(&hour.service)
        .bind(&hour.profile_type)
        .bind(hour.bucket)
        .bind(end)
        .fetch_one()
        .await?;
    let current: u64 = db
        .query(
            "SELECT count() FROM rollup_builds
             WHERE service = ? AND profile_type = ? AND resolution = 3600
               AND bucket_start = toDateTime(?) AND source_parts = ?",
        )
        .bind(&hour.service)
        .bind(&hour.profile_type)
        .bind(hour.bucket)
        .bind(source_parts)
        .fetch_one()
        .await?;
    if current > 0 {
        return Ok(false);
    }
    db.query(&format!(
        "INSERT INTO samples_rollup (service, profile_type, resolution, bucket_start, build_id,
             namespace, pod, container, node, app_version, stack_id, value, count)
         SELECT service, profile_type, toUInt32(3600), toDateTime(?), toUInt64(?),
             namespace, pod, container, node, app_version, toUInt64(stack_id) AS stack,
             sum(value), sum(toInt64(count))
         FROM samples
         WHERE {} AND {}
         GROUP BY service, profile_type, namespace, pod, container, node, app_version, stack",
        javelin_schema::exactly_once::SCOPE,
        javelin_schema::exactly_once::filter()
    ))
    .bind(hour.bucket)
    .bind(build_id)
    .bind(&hour.service)
    .bind(&hour.profile_type)
    .bind(hour.bucket)
    .bind(end)
    .bind(&hour.service)
    .bind(&hour.profile_type)
    .bind(hour.bucket)
    .bind(end)
    .bind(&hour.service)
    .bind(&hour.profile_type)
    .bind(hour.bucket)
    .bind(end)
    .execute()
    .await?;
    db.query(
        "INSERT INTO rollup_builds (service, profile_type, resolution, bucket_start, build_id, source_parts, built_at)
         SELECT ?, ?, toUInt32(3600), toDateTime(?), toUInt64(?), toUInt64(?), now()",
    )
    .bind(&hour.service)
    .bind(&hour.profile_type)
    .bind(hour.bucket)
    .bind(build_id)
    .bind(source_parts)
    .execute()
    .await?;
    Ok(true)
}

/// Build ids: microseconds since the epoch times 4096 plus 12 random bits,
/// strictly increasing in one process. Two consumers building one hour in the
/// same microsecond still get different ids (but for a 1-in-4096 chance,
/// which readers detect: an id named twice for one hour is not read).
#[derive(Debug, Default)]
pub struct BuildIds {
    last: u64,
}

impl BuildIds {
    pub fn take(&mut self) -> u64 {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let id = micros.saturating_mul(4096) | (self.random_bits() & 0xfff);
        self.last = id.max(self.last + 1);
        self.last
    }

    /// Bits from the standard library's per-instance random hash keys.
    fn random_bits(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(self.last);
        hasher.finish()
    }
}

fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_increase_within_a_process() {
        let mut ids = BuildIds::default();
        let a = ids.take();
        let b = ids.take();
        assert!(b > a && a > 1_700_000_000_000_000 * 4096);
        ids.last = u64::MAX / 2;
        assert_eq!(
            ids.take(),
            u64::MAX / 2 + 1,
            "a clock behind the last id still advances"
        );
    }
}
