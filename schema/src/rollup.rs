//! Rollups: the samples of one (service, type, hour) counted once and summed
//! per labels and stack, so a long range reads a row per (labels, stack) and
//! hour instead of one per window (docs/architecture.md, "Rollups").
//!
//! The consumer builds an hour once it is closed, from the same read the query
//! API counts ([`crate::exactly_once`]), and records the build in
//! `rollup_builds` with the number of `stored_parts` rows of the hour it saw.
//! `stored_parts` only grows while a bucket is inside retention, so an hour
//! whose count differs from its newest build's is not current: readers read
//! it raw, and the consumer rebuilds it. Nothing a rollup holds can count
//! twice: a redelivered or replayed part is a new `stored_parts` row, which
//! sends its hour back to raw reads until the rebuild.

/// The one resolution built: an hour. A week of a 50-pod service is 168
/// buckets of ~75 k rows (12.6 M rows, under a second) where raw rows are
/// 756 M; a day resolution would save ~0.2 s on that week and double the
/// builds (docs/clickhouse-schema.md, "Rollups").
pub const RESOLUTION_S: u32 = 3600;

/// The bucket a window start (seconds since the epoch) falls in: aligned to
/// the epoch, not to the server's time zone.
pub fn bucket_of(second: u32) -> u32 {
    second - second % RESOLUTION_S
}

/// The newest build of every bucket of one service and type in a range of
/// bucket starts, as (`bucket`, `newest`: its build id, `source_parts`); bound
/// as (service, profile_type, from_s, to_s). (An alias may not shadow a column
/// an aggregate reads.)
pub const NEWEST_BUILDS: &str = "SELECT toUInt32(bucket_start) AS bucket, max(build_id) AS newest,
        argMax(source_parts, build_id) AS source_parts
     FROM rollup_builds
     WHERE service = ? AND profile_type = ? AND resolution = 3600
       AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?)
     GROUP BY bucket";

/// The `stored_parts` rows of every bucket of one service and type in a range
/// of window starts, as (`bucket`, `parts`); bound like [`NEWEST_BUILDS`].
pub const PARTS_PER_BUCKET: &str = "SELECT toUInt32(intDiv(toUInt32(window_start), 3600) * 3600) AS bucket, count() AS parts
     FROM stored_parts
     WHERE service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
     GROUP BY bucket";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_epoch_hours() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(3599), 0);
        assert_eq!(bucket_of(3600), 3600);
        assert_eq!(bucket_of(1_796_086_713), 1_796_086_713 / 3600 * 3600);
    }

    #[test]
    fn the_sql_names_the_resolution_it_is_built_for() {
        // The SQL spells the hour out (a literal the key analysis sees).
        assert_eq!(RESOLUTION_S, 3600);
        assert!(NEWEST_BUILDS.contains("resolution = 3600"));
        assert!(PARTS_PER_BUCKET.contains("3600) * 3600"));
    }
}
