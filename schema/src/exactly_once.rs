//! The one read that counts every window part once, without `FINAL`: the
//! query API answers from it and the consumer builds rollups from it, so a
//! rolled-up hour holds exactly what a raw read of the hour shows.
//!
//! Every write attempt of a window part keeps its own copy with its own
//! `insert_id` (never collapsed, so no merge can change the choice); a copy is
//! named in `stored_parts` only once it is stored in full, and only the part's
//! smallest named id counts. Ids are ordered by the time of the attempt, so a
//! copy that lands while a query runs is never chosen over an older one; a copy
//! whose record is missing (a writer that records nothing, a crash between the
//! two inserts) never counts. Parts copied by migration 3 (`insert_id` 0,
//! window id made from the start second) win over any later copy of the same
//! target, type and second: a redelivery or replay of a range ingested before
//! the upgrade carries the real window id.

/// `stored_parts` rows of one service, type and range of window starts,
/// bound as (service, profile_type, from_s, to_s).
pub const SCOPE: &str = "service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)";

/// The condition on `samples` rows that keeps one copy of every window part
/// whose start is in a range; its `?` are bound as (service, profile_type,
/// from_s, to_s) twice.
pub fn filter() -> String {
    filter_within("")
}

/// [`filter`] with `within` (` AND <a condition on window_start>`, no `?`)
/// narrowing the `stored_parts` rows it reads: a read of a few raw hours of
/// a long range builds its set from those hours only.
pub fn filter_within(within: &str) -> String {
    format!(
        "(window_id, insert_id) IN (
             SELECT window_id, min(insert_id) FROM stored_parts
             WHERE {SCOPE}{within}
               AND NOT (insert_id != 0 AND (target_id, window_start) IN (
                   SELECT target_id, window_start FROM stored_parts
                   WHERE {SCOPE}{within} AND insert_id = 0))
             GROUP BY window_id)"
    )
}
