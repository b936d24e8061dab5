//! Reads from ClickHouse. Every profile query is scoped by service, profile
//! type and time range; user input is bound as values (`?`), never spliced into
//! SQL (the only identifiers chosen per request come from [`Label::column`]).
//! Rows scanned and query time are capped by server settings on the client
//! (`max_rows_to_read`, `max_execution_time`).

use clickhouse::{Client, Row};
use javelin_schema::rows::TargetStatusRow;
use serde::{Deserialize, Serialize};

/// `stored_parts` rows of one service, type and range, bound like the
/// first four values of [`Selection::clauses`].
const SCOPE: &str = "service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)";

/// A validated selection of samples.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub service: String,
    pub profile_type: String,
    /// Window starts in [from_s, to_s), seconds since the epoch.
    pub from_s: u32,
    pub to_s: u32,
    /// Label filters; empty = any.
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    /// The application's version (`app_version`).
    pub version: String,
}

/// The label columns a selection can filter, list and break down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Namespace,
    Pod,
    Container,
    Node,
    /// The application's version (empty where the target carries none).
    Version,
}

impl Label {
    pub fn parse(name: &str) -> Option<Label> {
        match name {
            "namespace" => Some(Label::Namespace),
            "pod" => Some(Label::Pod),
            "container" => Some(Label::Container),
            "node" => Some(Label::Node),
            "version" => Some(Label::Version),
            _ => None,
        }
    }

    /// The label's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Label::Version => "version",
            other => other.column(),
        }
    }

    /// The column name: a fixed identifier, never user text.
    fn column(self) -> &'static str {
        match self {
            Label::Namespace => "namespace",
            Label::Pod => "pod",
            Label::Container => "container",
            Label::Node => "node",
            Label::Version => "app_version",
        }
    }
}

/// The summed value of one stack in a selection, with its frames (root first).
#[derive(Debug)]
pub struct StackValue {
    pub stack_id: u64,
    pub value: i64,
    /// Sample rows summed into this stack (for the "rows scanned" metadata).
    pub rows: u64,
    pub frames: Vec<String>,
}

#[cfg(test)]
impl StackValue {
    /// A stack for unit tests: frames root first, one sample row.
    pub fn of(frames: &[&str], value: i64) -> StackValue {
        StackValue {
            stack_id: 0,
            value,
            rows: 1,
            frames: frames.iter().map(|f| f.to_string()).collect(),
        }
    }
}

/// What the ingestion ledger says about a selection's windows.
#[derive(Debug, Default, Clone, Row, Deserialize, Serialize, PartialEq, Eq)]
pub struct LedgerSummary {
    pub window_parts: u64,
    pub truncated_parts: u64,
    pub rejected_parts: u64,
    pub dropped_events: u64,
    pub dropped_stacks: u64,
}

/// Ingestion health of one time bucket.
#[derive(Debug, Clone, Row, Deserialize, Serialize, PartialEq, Eq)]
pub struct HealthBucket {
    /// Bucket start, seconds since the epoch.
    pub time: u32,
    pub windows: u64,
    pub accepted_parts: u64,
    pub truncated_parts: u64,
    /// Parts refused by the consumer or ClickHouse (they are in the dead-letter topic).
    pub rejected_parts: u64,
    pub dropped_events: u64,
    pub dropped_stacks: u64,
    pub max_ingest_latency_ms: i64,
}

#[derive(Debug, Row, Deserialize)]
struct StackSum {
    stack_id: u64,
    value: i64,
    rows: u64,
}

/// One time bucket of a timeline.
#[derive(Debug, Clone, Copy, Row, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    /// Bucket start, seconds since the epoch.
    pub time: u32,
    pub value: i64,
    /// Sample rows summed into it.
    pub rows: u64,
}

/// One (label value, time bucket) of a tag breakdown.
#[derive(Debug, Clone, Row, Deserialize, PartialEq, Eq)]
pub struct TagBucket {
    pub tag: String,
    pub time: u32,
    pub value: i64,
    pub rows: u64,
}

#[derive(Debug, Row, Deserialize)]
struct StackFrames {
    stack_id: u64,
    frames: Vec<String>,
}

#[derive(Debug, Row, Deserialize)]
struct Name {
    name: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
}

impl Selection {
    /// The label filters in force, as (column, value). Columns are fixed
    /// identifiers; only filters that are set become clauses, so an unfiltered
    /// query does not read the label columns at all.
    fn label_filters(&self) -> Vec<(&'static str, &str)> {
        [
            ("namespace", self.namespace.as_str()),
            ("pod", self.pod.as_str()),
            ("container", self.container.as_str()),
            ("node", self.node.as_str()),
            ("app_version", self.version.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// `service = ? AND profile_type = ? AND window_start … [AND label = ?]…`,
    /// bound by [`bind_selection`].
    fn clauses(&self) -> String {
        let mut sql = String::from(
            "service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)",
        );
        for (column, _) in self.label_filters() {
            sql.push_str(" AND ");
            sql.push_str(column);
            sql.push_str(" = ?");
        }
        sql
    }
}

impl Store {
    pub fn new(client: Client) -> Store {
        Store { client }
    }

    /// `sql` (which starts its `?` with [`Selection::clauses`]) with the selection bound.
    fn scoped(&self, sql: &str, sel: &Selection) -> clickhouse::query::Query {
        bind_selection(self.client.query(sql), sel)
    }

    /// Services with samples in [from_s, to_s).
    pub async fn services(
        &self,
        from_s: u32,
        to_s: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let rows = self
            .client
            .query("SELECT DISTINCT service AS name FROM samples WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) ORDER BY name")
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<Name>()
            .await?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// Profile types a service has samples of in [from_s, to_s).
    pub async fn profile_types(
        &self,
        service: &str,
        from_s: u32,
        to_s: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let rows = self
            .client
            .query("SELECT DISTINCT profile_type AS name FROM samples WHERE service = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?) ORDER BY name")
            .bind(service)
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<Name>()
            .await?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// Values of `label` in a service's samples in [from_s, to_s), at most `limit`.
    pub async fn label_values(
        &self,
        service: &str,
        label: Label,
        from_s: u32,
        to_s: u32,
        limit: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let column = label.column();
        let rows = self
            .client
            .query(&format!(
                "SELECT DISTINCT {column} AS name FROM samples WHERE service = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?) ORDER BY name LIMIT ?"
            ))
            .bind(service)
            .bind(from_s)
            .bind(to_s)
            .bind(limit)
            .fetch_all::<Name>()
            .await?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// Summed value per stack in the selection, with the stack's frames.
    ///
    /// Exactly once without `FINAL`: every write attempt of a window part
    /// keeps its own copy with its own `insert_id` (never collapsed, so no
    /// merge can change the choice), each copy is named in `stored_parts` only
    /// once it is stored in full, and only the part's smallest named id is
    /// counted, in one query. Ids are ordered by the time of the attempt, so a
    /// copy that lands while the query runs is never the one chosen over an
    /// older one; a copy whose record is missing (a writer that records
    /// nothing, a crash between the two inserts) is never counted.
    /// Parts copied by migration 3 (`insert_id` 0, window id made from the
    /// start second) win over any later copy of the same target, type and
    /// second (a redelivery or replay of a range ingested before the upgrade
    /// carries the real window id).
    /// Samples are read once; the frames of the stacks found are fetched by id
    /// in a second, small query.
    pub async fn stacks(
        &self,
        sel: &Selection,
    ) -> Result<Vec<StackValue>, clickhouse::error::Error> {
        let sums = self
            .exactly_once(
                "stack_id, sum(value) AS value, count() AS rows",
                "GROUP BY stack_id",
                sel,
            )
            .fetch_all::<StackSum>()
            .await?;
        // GROUP BY returns groups in no fixed order (it differs between
        // servers and runs); ordering by id makes every answer built from the
        // stacks (names table, ties in the tree, exports) the same bytes for
        // the same stored data.
        let mut sums = sums;
        sums.sort_unstable_by_key(|s| s.stack_id);
        let mut frames: std::collections::HashMap<u64, Vec<String>> =
            std::collections::HashMap::new();
        // `IN (SELECT arrayJoin(…))` builds a set once; `has(ids, stack_id)`
        // searched the array for every row (18.16: 7.8 s for 10,000 ids over
        // 200,000 stack rows, against 38 ms). 18.16 refuses `IN [..]`, and the
        // literal's element type must be cast. A chunk of 8,000 ids (up to 20
        // digits each) stays well inside the default 256 KiB query size.
        for ids in sums.chunks(FRAME_LOOKUP_CHUNK) {
            let ids: Vec<u64> = ids.iter().map(|s| s.stack_id).collect();
            let rows = self
                .client
                .query(
                    "SELECT stack_id, any(frames) AS frames FROM stacks
                     WHERE service = ? AND stack_id IN (SELECT toUInt64(arrayJoin(?)))
                     GROUP BY stack_id",
                )
                .bind(&sel.service)
                .bind(ids)
                .fetch_all::<StackFrames>()
                .await?;
            frames.extend(rows.into_iter().map(|r| (r.stack_id, r.frames)));
        }
        Ok(sums
            .into_iter()
            .map(|s| StackValue {
                stack_id: s.stack_id,
                value: s.value,
                rows: s.rows,
                // A stack row not (yet) written shows as its id, never silently vanishes.
                frames: frames
                    .remove(&s.stack_id)
                    .unwrap_or_else(|| vec![format!("[unknown stack {:016x}]", s.stack_id)]),
            })
            .collect())
    }

    /// `SELECT {columns} FROM samples WHERE <selection> AND <each window
    /// part's copy counted once> {tail}`, bound. Every profile answer reads
    /// samples through this, so all of them count the same rows (see
    /// [`Store::stacks`] for why this is exact without `FINAL`).
    fn exactly_once(&self, columns: &str, tail: &str, sel: &Selection) -> clickhouse::query::Query {
        self.bind_once(&once_sql(columns, tail, sel), sel)
    }

    /// `sql` holding one [`once_sql`] (and no `?` before it), bound.
    fn bind_once(&self, sql: &str, sel: &Selection) -> clickhouse::query::Query {
        self.scoped(sql, sel)
            .bind(&sel.service)
            .bind(&sel.profile_type)
            .bind(sel.from_s)
            .bind(sel.to_s)
            .bind(&sel.service)
            .bind(&sel.profile_type)
            .bind(sel.from_s)
            .bind(sel.to_s)
    }

    /// The selection's summed value per `step_s` seconds of window start
    /// (buckets aligned to the epoch), only buckets with rows, in time order.
    pub async fn timeline(
        &self,
        sel: &Selection,
        step_s: u32,
    ) -> Result<Vec<Bucket>, clickhouse::error::Error> {
        // The step is a number we computed, not user text.
        self.exactly_once(
            &format!(
                "toUInt32(intDiv(toUInt32(window_start), {step_s}) * {step_s}) AS time, sum(value) AS value, count() AS rows"
            ),
            "GROUP BY time ORDER BY time",
            sel,
        )
        .fetch_all::<Bucket>()
        .await
    }

    /// The selection's summed value per value of `label` and `step_s`
    /// seconds; `None` when there are more than `max_pairs` (value, bucket)
    /// pairs. Rows are read as they stream and the request is abandoned at
    /// the bound, so a label with a million values costs neither side more
    /// than the bound. (A server-side `max_rows_to_group_by` would also
    /// count the groups of the exactly-once subquery: one per window part.)
    pub async fn tag_series(
        &self,
        sel: &Selection,
        label: Label,
        step_s: u32,
        max_pairs: u64,
    ) -> Result<Option<Vec<TagBucket>>, clickhouse::error::Error> {
        let column = label.column();
        // Labels are constant per window part (one message, one target), so
        // the rows are first summed per part on integer keys and the label
        // read once per part: grouping 4.5 M rows by (label text, bucket)
        // directly took 1.5x as long (18.16, 50 pods × 1 h).
        let per_part = once_sql(
            &format!(
                "window_id, any(window_start) AS ws, any({column}) AS tag, sum(value) AS v, count() AS r"
            ),
            "GROUP BY window_id",
            sel,
        );
        let mut cursor = self
            .bind_once(
                &format!(
                    "SELECT tag, toUInt32(intDiv(toUInt32(ws), {step_s}) * {step_s}) AS time, sum(v) AS value, toUInt64(sum(r)) AS rows
                     FROM ({per_part}) GROUP BY tag, time LIMIT {}",
                    // The server stops sending past the bound (its
                    // aggregation is bounded by its own max_memory_usage).
                    max_pairs.saturating_add(1)
                ),
                sel,
            )
            .fetch::<TagBucket>()?;
        let mut rows = Vec::new();
        while let Some(row) = cursor.next().await? {
            if rows.len() as u64 >= max_pairs {
                return Ok(None);
            }
            rows.push(row);
        }
        Ok(Some(rows))
    }

    /// The longest window stored for the selection's service and type in
    /// its range (ms; 0 when none; refused parts, whose bounds may be
    /// anything, do not count), from the ledger: a timeline bucket
    /// shorter than a window would show gaps that are not there.
    pub async fn longest_window_ms(
        &self,
        sel: &Selection,
    ) -> Result<i64, clickhouse::error::Error> {
        #[derive(Debug, Row, Deserialize)]
        struct Longest {
            ms: i64,
        }
        let row = self
            .client
            .query(
                "SELECT toInt64(max(window_end_ms - window_start_ms)) AS ms FROM ingest_ledger
                 WHERE service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
                   AND status != 'rejected'",
            )
            .bind(&sel.service)
            .bind(&sel.profile_type)
            .bind(sel.from_s)
            .bind(sel.to_s)
            .fetch_one::<Longest>()
            .await?;
        // Longer than the consumer accepts is not a window (it is refused).
        Ok(row.ms.clamp(0, MAX_WINDOW_MS))
    }

    /// The ledger's account of the selection's window parts (pod filter only:
    /// the ledger knows no namespace, container, node or version).
    pub async fn ledger_summary(
        &self,
        sel: &Selection,
    ) -> Result<LedgerSummary, clickhouse::error::Error> {
        self.client
            .query(
                "SELECT count() AS window_parts,
                    countIf(status = 'truncated') AS truncated_parts,
                    countIf(status = 'rejected') AS rejected_parts,
                    sum(dropped_events) AS dropped_events,
                    sum(dropped_stacks) AS dropped_stacks
                 FROM ingest_ledger FINAL
                 WHERE service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
                   AND (? = '' OR pod = ?)",
            )
            .bind(&sel.service)
            .bind(&sel.profile_type)
            .bind(sel.from_s)
            .bind(sel.to_s)
            .bind(&sel.pod)
            .bind(&sel.pod)
            .fetch_one::<LedgerSummary>()
            .await
    }

    /// Ingestion health per `bucket_s` seconds; all services when `service` is empty.
    pub async fn health(
        &self,
        service: &str,
        from_s: u32,
        to_s: u32,
        bucket_s: u32,
    ) -> Result<Vec<HealthBucket>, clickhouse::error::Error> {
        self.client
            .query(
                "SELECT toUInt32(intDiv(toUInt32(window_start), ?) * ?) AS time,
                    uniqExact(service, profile_type, target_id, window_start_ms) AS windows,
                    countIf(status = 'accepted') AS accepted_parts,
                    countIf(status = 'truncated') AS truncated_parts,
                    countIf(status = 'rejected') AS rejected_parts,
                    sum(dropped_events) AS dropped_events,
                    sum(dropped_stacks) AS dropped_stacks,
                    max(ingest_latency_ms) AS max_ingest_latency_ms
                 FROM ingest_ledger FINAL
                 WHERE (? = '' OR service = ?) AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
                 GROUP BY time ORDER BY time",
            )
            .bind(bucket_s)
            .bind(bucket_s)
            .bind(service)
            .bind(service)
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<HealthBucket>()
            .await
    }

    /// The latest status of every target seen in [from_s, to_s); all services when `service` is empty.
    pub async fn targets(
        &self,
        service: &str,
        from_s: u32,
        to_s: u32,
    ) -> Result<Vec<TargetStatusRow>, clickhouse::error::Error> {
        self.client
            .query(
                "SELECT * FROM target_status FINAL
                 WHERE (? = '' OR service = ?) AND observed_at >= toDateTime(?) AND observed_at < toDateTime(?)
                 ORDER BY service, pod, target_id",
            )
            .bind(service)
            .bind(service)
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<TargetStatusRow>()
            .await
    }
}

/// The longest window the consumer accepts (`consumer::convert::MAX_WINDOW_MS`).
const MAX_WINDOW_MS: i64 = 86_400_000;

/// Stack ids per frames lookup.
const FRAME_LOOKUP_CHUNK: usize = 8_000;

/// `SELECT {columns} FROM samples WHERE <selection> AND <each window part's
/// copy counted once> {tail}`, its `?` bound by [`Store::bind_once`]: only
/// the part's smallest insert id recorded in `stored_parts` counts, and parts
/// copied by migration 3 win over later copies of the same target and second.
fn once_sql(columns: &str, tail: &str, sel: &Selection) -> String {
    format!(
        "SELECT {columns} FROM samples
         WHERE {} AND (window_id, insert_id) IN (
             SELECT window_id, min(insert_id) FROM stored_parts
             WHERE {SCOPE}
               AND NOT (insert_id != 0 AND (target_id, window_start) IN (
                   SELECT target_id, window_start FROM stored_parts
                   WHERE {SCOPE} AND insert_id = 0))
             GROUP BY window_id)
         {tail}",
        sel.clauses()
    )
}

/// Binds service, type, range and the label filters in force, in the order of
/// [`Selection::clauses`].
fn bind_selection(query: clickhouse::query::Query, sel: &Selection) -> clickhouse::query::Query {
    let mut query = query
        .bind(&sel.service)
        .bind(&sel.profile_type)
        .bind(sel.from_s)
        .bind(sel.to_s);
    for (_, value) in sel.label_filters() {
        query = query.bind(value);
    }
    query
}
