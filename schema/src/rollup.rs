//! Rollups: the samples of one (service, type, hour) counted once and summed
//! per labels and stack, so a long range reads a row per (labels, stack) and
//! hour instead of one per window (docs/clickhouse-schema.md, "Migration 8").
//!
//! The consumer builds an hour once it is closed, from the same read the query
//! API counts ([`crate::exactly_once`]), and records the build in
//! `rollup_builds` with the number of `stored_parts` rows of the hour it saw.
//! `stored_parts` only grows while a bucket is inside retention, so a build
//! whose count equals the hour's count now holds every part the hour has:
//! readers read such an hour from it, every other hour raw, and the consumer
//! builds the others again. Nothing a rollup holds can count twice: a
//! redelivered or replayed part is a new `stored_parts` row, which sends its
//! hour back to raw reads until the rebuild.

/// The one resolution built: an hour. A week of a 50-pod service is 168
/// buckets of ~75 k rows (12.6 M rows, 945 ms p50 measured) where raw rows
/// are 756 M; a day resolution would save about half a second on that week
/// and double the builds (docs/clickhouse-schema.md, "Migration 8").
pub const RESOLUTION_S: u32 = 3600;

/// The bucket a window start (seconds since the epoch) falls in: aligned to
/// the epoch, not to the server's time zone.
pub fn bucket_of(second: u32) -> u32 {
    second - second % RESOLUTION_S
}

/// Every build of every bucket of one service and type in a range of bucket
/// starts, as (`bucket`, `build_id`, `source_parts`); bound as (service,
/// profile_type, from_s, to_s). A bucket has a build per change after its
/// grace period, per consumer that raced for it: a handful.
pub const BUILDS: &str = "SELECT toUInt32(bucket_start) AS bucket, build_id, source_parts
     FROM rollup_builds
     WHERE service = ? AND profile_type = ? AND resolution = 3600
       AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?)";

/// The `stored_parts` rows of every bucket of one service and type in a range
/// of window starts, as (`bucket`, `parts`); bound like [`BUILDS`].
pub const PARTS_PER_BUCKET: &str = "SELECT toUInt32(intDiv(toUInt32(window_start), 3600) * 3600) AS bucket, count() AS parts
     FROM stored_parts
     WHERE service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
     GROUP BY bucket";

/// The first hour a read from `from_s` at `now_s` may take from rollups: a
/// whole hour whose rollup rows have not reached their TTL (`retention_days`
/// after the hour's start; a minute's margin for clocks). Past it, the TTL
/// merges of the rollup tables and of `stored_parts` run at their own times,
/// so a rollup may be gone while its hour still looks current; before it, no
/// TTL deletes a row.
pub fn first_readable_bucket(from_s: u32, now_s: u32, retention_days: u32) -> u32 {
    let kept_since = now_s
        .saturating_sub(retention_days.saturating_mul(86_400))
        .saturating_add(CLOCK_MARGIN_S);
    from_s
        .max(kept_since)
        .div_ceil(RESOLUTION_S)
        .saturating_mul(RESOLUTION_S)
}

/// How far the query API's clock may be behind the server's.
const CLOCK_MARGIN_S: u32 = 60;

/// One `rollup_builds` row, as [`BUILDS`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct Build {
    pub bucket: u32,
    pub build_id: u64,
    pub source_parts: u64,
}

/// The build to read for each bucket, as (bucket, build id), ascending:
/// among the builds that saw as many `stored_parts` rows as the bucket has
/// now (`parts`), the largest id. A bucket with no such build, or whose
/// chosen id is named twice (two builders drew one id), is left out: it is
/// read raw.
pub fn current_builds(
    builds: &[Build],
    parts: &std::collections::HashMap<u32, u64>,
) -> Vec<(u32, u64)> {
    let mut chosen: std::collections::BTreeMap<u32, (u64, u32)> = std::collections::BTreeMap::new();
    for b in builds {
        if parts.get(&b.bucket) != Some(&b.source_parts) {
            continue;
        }
        let entry = chosen.entry(b.bucket).or_insert((b.build_id, 0));
        if b.build_id > entry.0 {
            *entry = (b.build_id, 1);
        } else if b.build_id == entry.0 {
            entry.1 += 1;
        }
    }
    chosen
        .into_iter()
        .filter(|(_, (_, named))| *named == 1)
        .map(|(bucket, (id, _))| (bucket, id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(bucket: u32, build_id: u64, source_parts: u64) -> Build {
        Build {
            bucket,
            build_id,
            source_parts,
        }
    }

    #[test]
    fn rollups_are_read_from_the_first_whole_hour_whose_ttl_is_ahead() {
        let now = 1_796_086_713; // 01:38:33 UTC
        // A day back: the next whole hour.
        assert_eq!(
            first_readable_bucket(now - 86_400, now, 7),
            bucket_of(now - 86_400) + 3600
        );
        // An hour on the dot is whole.
        assert_eq!(
            first_readable_bucket(bucket_of(now), now, 7),
            bucket_of(now)
        );
        // Seven days back with 7-day retention: the next whole hour, whose
        // rollup expires 7 d after its start, still ahead.
        let from = now - 7 * 86_400;
        assert_eq!(first_readable_bucket(from, now, 7), bucket_of(from) + 3600);
        // Within the clock margin of the edge: the hour after.
        let now = bucket_of(now) + 30;
        assert_eq!(
            first_readable_bucket(now - 7 * 86_400, now, 7),
            bucket_of(now) + 3600 - 7 * 86_400
        );
        assert_eq!(
            first_readable_bucket(now - 86_400, now, 1),
            bucket_of(now) + 3600 - 86_400
        );
    }

    #[test]
    fn the_newest_build_that_saw_every_part_is_read() {
        let parts = [(0, 5), (3600, 7), (7200, 2)].into_iter().collect();
        let builds = [
            // Hour 0: an older build saw 5, a newer one (a clock ahead, a
            // stale snapshot) saw 4: the one that saw 5 is current.
            build(0, 10, 5),
            build(0, 20, 4),
            // Hour 1: two current builds, the larger id is read.
            build(3600, 11, 7),
            build(3600, 12, 7),
            // Hour 2: written to since its only build.
            build(7200, 13, 1),
            // An hour without stored parts (expired): never read.
            build(10800, 14, 3),
        ];
        assert_eq!(current_builds(&builds, &parts), [(0, 10), (3600, 12)]);
    }

    #[test]
    fn an_id_named_twice_for_one_hour_is_not_read() {
        let parts = [(0, 5)].into_iter().collect();
        let builds = [build(0, 10, 5), build(0, 30, 5), build(0, 30, 5)];
        assert_eq!(current_builds(&builds, &parts), []);
        // A repeated id below the chosen one does not matter.
        let builds = [build(0, 10, 5), build(0, 10, 5), build(0, 30, 5)];
        assert_eq!(current_builds(&builds, &parts), [(0, 30)]);
    }

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
        assert!(BUILDS.contains("resolution = 3600"));
        assert!(PARTS_PER_BUCKET.contains("3600) * 3600"));
    }
}
