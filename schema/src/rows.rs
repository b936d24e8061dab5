//! ClickHouse row types. Field order is column order: rows travel as plain
//! RowBinary (validation off, which Debian's ClickHouse 18.16 needs), so a
//! mismatch with [`crate::migrations`] would corrupt data. The migration tests
//! insert and read back each row type on the real server to pin this.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Table names, shared by the consumer (writes) and the query API (reads).
pub mod table {
    pub const SAMPLES: &str = "samples";
    pub const STACKS: &str = "stacks";
    pub const INGEST_LEDGER: &str = "ingest_ledger";
    pub const TARGET_STATUS: &str = "target_status";
    pub const SCHEMA_MIGRATIONS: &str = "schema_migrations";
    pub const STORED_PARTS: &str = "stored_parts";
    /// The samples of the layout before migration 3 (keyed by the second),
    /// kept until retention removes them.
    pub const SAMPLES_RETIRED: &str = "samples_v1";
    /// The samples of migration 3's layout (keyed by window part, stacks in
    /// hash order), kept by migration 7 until retention removes them.
    pub const SAMPLES_V3: &str = "samples_v3";
    /// Samples summed per hour, labels and stack (migration 8).
    pub const SAMPLES_ROLLUP: &str = "samples_rollup";
    /// The builds of `samples_rollup` (migration 8).
    pub const ROLLUP_BUILDS: &str = "rollup_builds";
}

/// One aggregated stack of one window part, as written by one attempt.
/// Keyed by (service, profile_type, window_start, target_id, window_id,
/// insert_id, stack_id): two windows of one target never share a key (they may
/// start in the same second after a stall), and every write attempt of a part
/// keeps its own copy (plain MergeTree: nothing collapses). Readers count one
/// copy per `window_id`: the smallest `insert_id` in [`StoredPartRow`] (see
/// `docs/architecture.md`, "Window identity and exactly once").
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct SampleRow {
    pub service: String,
    pub profile_type: String,
    /// Seconds since the epoch (ClickHouse `DateTime`).
    pub window_start: u32,
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    pub target_id: u64,
    /// The window part ([`crate::wire::window_id`]), computed by the consumer.
    pub window_id: u64,
    pub stack_id: u64,
    pub value: i64,
    pub count: i64,
    /// One id per write attempt of the part, ordered by the time of the
    /// attempt (0: copied by migration 3): readers count the part's smallest.
    pub insert_id: u64,
    /// The target's application version (empty: unknown; migration 5).
    pub app_version: String,
}

/// `samples` with one copy of each (window part, stack), chosen by content (the
/// copies of a part are identical): what the table holds exactly once, for
/// reconciliations that check the query API's own choice by another route.
pub const SAMPLES_ONCE: &str = "(SELECT service, window_id, stack_id, \
     any(profile_type) AS profile_type, any(window_start) AS window_start, any(pod) AS pod, \
     any(value) AS value FROM samples GROUP BY service, window_id, stack_id)";

/// The frames of a stack, root first, written once per (service, stack id) and day.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct StackRow {
    pub service: String,
    pub stack_id: u64,
    pub frames: Vec<String>,
    /// Source line per frame (0 = unknown); empty when the agent sent none.
    pub lines: Vec<i32>,
    /// `wire::FrameType` per frame; empty when the agent sent none.
    pub frame_types: Vec<u8>,
    /// Seconds since the epoch; the newest copy wins and keeps the stack alive under retention.
    pub last_seen: u32,
}

/// [`SampleRow`] borrowing its strings from the decoded message: the
/// consumer's write path allocates nothing per row. Same columns, same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Serialize)]
pub struct SampleRowRef<'a> {
    pub service: &'a str,
    pub profile_type: &'a str,
    pub window_start: u32,
    pub cluster: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub node: &'a str,
    pub target_id: u64,
    /// The window part ([`crate::wire::window_id`]), computed by the consumer.
    pub window_id: u64,
    pub stack_id: u64,
    pub value: i64,
    pub count: i64,
    /// One id per write attempt of the part, ordered by the time of the
    /// attempt (0: copied by migration 3): readers count the part's smallest.
    pub insert_id: u64,
    pub app_version: &'a str,
}

/// [`StackRow`] borrowing its strings from the decoded message. Same columns, same order.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct StackRowRef<'a> {
    pub service: &'a str,
    pub stack_id: u64,
    pub frames: Vec<&'a str>,
    pub lines: &'a [i32],
    pub frame_types: Vec<u8>,
    pub last_seen: u32,
}

impl SampleRow {
    pub fn borrowed(&self) -> SampleRowRef<'_> {
        SampleRowRef {
            service: &self.service,
            profile_type: &self.profile_type,
            window_start: self.window_start,
            cluster: &self.cluster,
            namespace: &self.namespace,
            pod: &self.pod,
            container: &self.container,
            node: &self.node,
            target_id: self.target_id,
            window_id: self.window_id,
            stack_id: self.stack_id,
            value: self.value,
            count: self.count,
            insert_id: self.insert_id,
            app_version: &self.app_version,
        }
    }
}

impl StackRow {
    pub fn borrowed(&self) -> StackRowRef<'_> {
        StackRowRef {
            service: &self.service,
            stack_id: self.stack_id,
            frames: self.frames.iter().map(String::as_str).collect(),
            lines: &self.lines,
            frame_types: self.frame_types.clone(),
            last_seen: self.last_seen,
        }
    }
}

/// A copy of a window part's samples that is stored in full: written after the
/// copy's INSERT was acknowledged (migration 3). The query API counts, per
/// window part, only the copy with the smallest recorded `insert_id`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct StoredPartRow {
    pub service: String,
    pub profile_type: String,
    pub window_start: u32,
    pub target_id: u64,
    pub window_id: u64,
    pub insert_id: u64,
    pub stored_at: u32,
}

/// One row per ingested (or rejected) window part: the agent's accounting plus
/// where the consumer found it and what it did with it.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct LedgerRow {
    pub window_id: u64,
    pub service: String,
    pub profile_type: String,
    pub window_start: u32,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub target_id: u64,
    pub pod: String,
    pub part_index: u32,
    pub part_count: u32,
    pub raw_events: u64,
    pub parsed_events: u64,
    pub stacks: u64,
    pub dropped_events: u64,
    pub dropped_stacks: u64,
    pub truncated: u8,
    pub jfr_bytes: u64,
    pub parse_micros: u64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `accepted`, `truncated` or `rejected`.
    pub status: String,
    pub reason: String,
    pub ingested_at: u32,
    pub ingest_latency_ms: i64,
}

/// The latest known state of a profiling target.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct TargetStatusRow {
    pub service: String,
    pub target_id: u64,
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    pub pid: u32,
    pub state: String,
    pub recorder: String,
    pub last_error: String,
    pub observed_at: u32,
    pub agent_version: String,
    pub windows_published: u64,
    pub spool_dropped_messages: u64,
    pub dropped_events: u64,
    pub dropped_stacks: u64,
    pub truncated_windows: u64,
    /// Migration 4 (appended, so last).
    pub failed_collects: u64,
    pub oversized_messages: u64,
    /// Migration 6: how the session samples, in words (empty before it started).
    pub sampling: String,
}
