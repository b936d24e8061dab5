//! Reads from ClickHouse. Every profile query is scoped by service, profile
//! type and time range; user input is bound as values (`?`), never spliced into
//! SQL (the only identifiers chosen per request come from [`Label::column`]).
//! Rows scanned and query time are capped by server settings on the client
//! (`max_rows_to_read`, `max_execution_time`).

use clickhouse::{Client, Row};
use javelin_schema::rollup::{self, RESOLUTION_S};
use javelin_schema::rows::TargetStatusRow;
use serde::{Deserialize, Serialize};

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
    /// Whether whole hours are read from rollups (`--read-rollups`).
    rollups: bool,
    /// The database's retention (`--retention-days`): rollups near its edge are not read.
    retention_days: u32,
    /// Whether the missing rollup tables were logged (once per process).
    told_no_rollups: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
        self.clauses_on("window_start")
    }

    /// [`Selection::clauses`] with the range on `time` (a fixed identifier).
    fn clauses_on(&self, time: &str) -> String {
        let mut sql = format!(
            "service = ? AND profile_type = ? AND {time} >= toDateTime(?) AND {time} < toDateTime(?)",
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
        Store {
            client,
            rollups: true,
            retention_days: 7,
            told_no_rollups: std::sync::Arc::default(),
        }
    }

    /// Reads rollups where they are current (`true`, the default) or raw
    /// windows only; `retention_days`: the database's retention.
    pub fn read_rollups(self, rollups: bool, retention_days: u32) -> Store {
        Store {
            rollups,
            retention_days,
            ..self
        }
    }

    /// `sql` (which starts its `?` with [`Selection::clauses`]) with the selection bound.
    fn scoped(&self, sql: &str, sel: &Selection) -> clickhouse::query::Query {
        bind_selection(self.client.query(sql), sel)
    }

    /// Services with samples in [from_s, to_s): read from `stored_parts`, a
    /// row per stored window part rather than per sample (a week of a 50-pod
    /// service is 0.5 M rows there against 756 M samples, past the scan
    /// limit), and the parts every reader counts.
    pub async fn services(
        &self,
        from_s: u32,
        to_s: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let rows = self
            .client
            .query("SELECT DISTINCT service AS name FROM stored_parts WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) ORDER BY name")
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<Name>()
            .await?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// Profile types a service has samples of in [from_s, to_s) (from
    /// `stored_parts`, as [`Store::services`]).
    pub async fn profile_types(
        &self,
        service: &str,
        from_s: u32,
        to_s: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let rows = self
            .client
            .query("SELECT DISTINCT profile_type AS name FROM stored_parts WHERE service = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?) ORDER BY name")
            .bind(service)
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<Name>()
            .await?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    /// Values of `label` in a service's samples in [from_s, to_s), at most
    /// `limit`, in order. Per profile type, the hours its rollups cover are
    /// listed from them and the rest from raw windows (a week of raw rows is
    /// past the scan limit); a value is listed once whatever it was read from.
    pub async fn label_values(
        &self,
        service: &str,
        label: Label,
        from_s: u32,
        to_s: u32,
        limit: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let column = label.column();
        let mut values = std::collections::BTreeSet::new();
        for profile_type in self.profile_types(service, from_s, to_s).await? {
            let sel = Selection {
                service: service.to_string(),
                profile_type,
                from_s,
                to_s,
                ..Selection::default()
            };
            let cover = self.cover(&sel).await?;
            let raw = cover.raw_ranges(from_s, to_s);
            let (raw_names, rolled_names) = tokio::try_join!(
                async {
                    if raw.is_empty() {
                        return Ok(Vec::new());
                    }
                    let sql = format!(
                        "SELECT DISTINCT {column} AS name FROM samples WHERE {}{} ORDER BY name LIMIT {limit}",
                        sel.clauses(),
                        within(&raw, cover.is_empty())
                    );
                    self.scoped(&sql, &sel).fetch_all::<Name>().await
                },
                async {
                    let columns = format!("DISTINCT {column} AS name");
                    match self.rolled_up(
                        &sel,
                        &cover,
                        &columns,
                        &format!("ORDER BY name LIMIT {limit}"),
                    ) {
                        Some(query) => query.fetch_all::<Name>().await,
                        None => Ok(Vec::new()),
                    }
                }
            )?;
            values.extend(raw_names.into_iter().chain(rolled_names).map(|r| r.name));
        }
        Ok(values.into_iter().take(limit as usize).collect())
    }

    /// Summed value per stack in the selection, with the stack's frames, and
    /// the resolution that answered.
    ///
    /// Exactly once without `FINAL` ([`javelin_schema::exactly_once`]): whole
    /// hours whose newest rollup build is current are read from
    /// `samples_rollup` (built from that same read), the rest of the range
    /// from raw samples, and the two sums added per stack. Samples are read
    /// once; the frames of the stacks found are fetched by id in a second,
    /// small query.
    pub async fn stacks(
        &self,
        sel: &Selection,
    ) -> Result<(Vec<StackValue>, Resolution), clickhouse::error::Error> {
        let cover = self.cover(sel).await?;
        let (raw_sums, rolled_sums, resolution) = self
            .raw_and_rolled::<StackSum>(
                sel,
                &cover,
                ["stack_id, sum(value) AS value, count() AS rows"; 2],
                "GROUP BY stack_id",
            )
            .await?;
        // Raw and rolled-up sums of one stack, added; GROUP BY returns groups
        // in no fixed order (it differs between servers and runs): ordering by
        // id makes every answer built from the stacks (names table, ties in
        // the tree, exports) the same bytes for the same stored data.
        let sums = add_up(
            raw_sums.into_iter().chain(rolled_sums),
            |s| s.stack_id,
            |a, b| {
                a.value += b.value;
                a.rows += b.rows;
            },
        );
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
        let stacks = sums
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
            .collect();
        Ok((stacks, resolution))
    }

    /// The whole hours of the selection's range whose newest rollup build is
    /// current: built from as many `stored_parts` rows as the hour has now.
    /// An hour written to since its build (a redelivery, a replay, a late
    /// window) or never built is left to the raw read.
    pub async fn cover(&self, sel: &Selection) -> Result<Cover, clickhouse::error::Error> {
        let first = rollup::first_readable_bucket(sel.from_s, now_s(), self.retention_days);
        let end = rollup::bucket_of(sel.to_s);
        if !self.rollups || end <= first {
            return Ok(Cover::default());
        }
        #[derive(Debug, Row, Deserialize)]
        struct Parts {
            bucket: u32,
            parts: u64,
        }
        let bound = |sql: &str| {
            self.client
                .query(sql)
                .bind(&sel.service)
                .bind(&sel.profile_type)
                .bind(first)
                .bind(end)
        };
        let (builds, parts) = match tokio::try_join!(
            bound(rollup::BUILDS).fetch_all::<rollup::Build>(),
            bound(rollup::PARTS_PER_BUCKET).fetch_all::<Parts>()
        ) {
            Ok(found) => found,
            // A database before migration 8 (a query API upgraded before
            // `migrate`, against the runbook's order): raw reads, as before.
            Err(e) if javelin_schema::clickhouse_error::code_of(&e) == Some(UNKNOWN_TABLE) => {
                if !self
                    .told_no_rollups
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "no rollup tables (run `javelin-consumer migrate`); reading raw windows");
                }
                return Ok(Cover::default());
            }
            Err(e) => return Err(e),
        };
        let parts: std::collections::HashMap<u32, u64> =
            parts.into_iter().map(|p| (p.bucket, p.parts)).collect();
        Ok(Cover {
            rolled: rollup::current_builds(&builds, &parts),
        })
    }

    /// [`Store::cover`] for a series in steps of `step_s`: whole hours only
    /// add up to whole steps when the step is a whole number of hours.
    async fn cover_in_steps(
        &self,
        sel: &Selection,
        step_s: u32,
    ) -> Result<Cover, clickhouse::error::Error> {
        if step_s.is_multiple_of(RESOLUTION_S) {
            self.cover(sel).await
        } else {
            Ok(Cover::default())
        }
    }

    /// `SELECT {columns} … {tail}` over the raw windows of the selection
    /// outside `cover`'s hours (counted once, `columns[0]`) and over those
    /// hours' rollups (`columns[1]`), concurrently. Both tables have `value`,
    /// `stack_id` and the labels; time is `window_start` in one and
    /// `bucket_start` in the other.
    async fn raw_and_rolled<T>(
        &self,
        sel: &Selection,
        cover: &Cover,
        columns: [&str; 2],
        tail: &str,
    ) -> Result<(Vec<T>, Vec<T>, Resolution), clickhouse::error::Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let raw = cover.raw_ranges(sel.from_s, sel.to_s);
        let (raw_rows, rolled_rows) = tokio::try_join!(
            async {
                if raw.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = once_sql(columns[0], tail, sel, &within(&raw, cover.is_empty()));
                self.bind_once(&sql, sel).fetch_all::<T>().await
            },
            async {
                match self.rolled_up(sel, cover, columns[1], tail) {
                    Some(query) => query.fetch_all::<T>().await,
                    None => Ok(Vec::new()),
                }
            }
        )?;
        Ok((raw_rows, rolled_rows, cover.resolution(&raw)))
    }

    /// `SELECT {columns} FROM samples_rollup WHERE <the selection on the
    /// rolled-up hours> AND <exactly the builds found current> {tail}`, bound
    /// (build ids and hours are numbers we read, spliced as literals); `None`
    /// when no hour is rolled up.
    fn rolled_up(
        &self,
        sel: &Selection,
        cover: &Cover,
        columns: &str,
        tail: &str,
    ) -> Option<clickhouse::query::Query> {
        let (first, last) = (cover.rolled.first()?, cover.rolled.last()?);
        let builds = cover
            .rolled
            .iter()
            .map(|(bucket, build)| format!("({bucket}, {build})"))
            .collect::<Vec<_>>()
            .join(", ");
        let hours = Selection {
            from_s: first.0,
            to_s: last.0 + RESOLUTION_S,
            ..sel.clone()
        };
        let sql = format!(
            "SELECT {columns} FROM samples_rollup
             WHERE {} AND resolution = {RESOLUTION_S}
               AND (toUInt32(bucket_start), build_id) IN ({builds})
             {tail}",
            hours.clauses_on("bucket_start")
        );
        Some(bind_selection(self.client.query(&sql), &hours))
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
    ) -> Result<(Vec<Bucket>, Resolution), clickhouse::error::Error> {
        let cover = self.cover_in_steps(sel, step_s).await?;
        // The step is a number we computed, not user text; the time column
        // is the window's start in raw rows and the hour's in rollups.
        let time = |column: &str| {
            format!(
                "toUInt32(intDiv(toUInt32({column}), {step_s}) * {step_s}) AS time, sum(value) AS value, count() AS rows"
            )
        };
        let (raw_rows, rolled_rows, resolution) = self
            .raw_and_rolled::<Bucket>(
                sel,
                &cover,
                [&time("window_start"), &time("bucket_start")],
                "GROUP BY time ORDER BY time",
            )
            .await?;
        let buckets = add_up(
            raw_rows.into_iter().chain(rolled_rows),
            |b| b.time,
            |a, b| {
                a.value += b.value;
                a.rows += b.rows;
            },
        );
        Ok((buckets, resolution))
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
    ) -> Result<(Option<Vec<TagBucket>>, Resolution), clickhouse::error::Error> {
        let column = label.column();
        let cover = self.cover_in_steps(sel, step_s).await?;
        let raw = cover.raw_ranges(sel.from_s, sel.to_s);
        let resolution = cover.resolution(&raw);
        // The server stops sending past the bound (its aggregation is bounded
        // by its own max_memory_usage).
        let limit = max_pairs.saturating_add(1);
        let mut pairs: std::collections::HashMap<(String, u32), TagBucket> =
            std::collections::HashMap::new();
        if !raw.is_empty() {
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
                &within(&raw, cover.is_empty()),
            );
            let mut cursor = self
                .bind_once(
                    &format!(
                        "SELECT tag, toUInt32(intDiv(toUInt32(ws), {step_s}) * {step_s}) AS time, sum(v) AS value, toUInt64(sum(r)) AS rows
                         FROM ({per_part}) GROUP BY tag, time LIMIT {limit}"
                    ),
                    sel,
                )
                .fetch::<TagBucket>()?;
            while let Some(row) = cursor.next().await? {
                if !add_pair(&mut pairs, row, max_pairs) {
                    return Ok((None, resolution));
                }
            }
        }
        if let Some(query) = self.rolled_up(
            sel,
            &cover,
            &format!(
                "{column} AS tag, toUInt32(intDiv(toUInt32(bucket_start), {step_s}) * {step_s}) AS time, sum(value) AS value, count() AS rows"
            ),
            &format!("GROUP BY tag, time LIMIT {limit}"),
        ) {
            let mut cursor = query.fetch::<TagBucket>()?;
            while let Some(row) = cursor.next().await? {
                if !add_pair(&mut pairs, row, max_pairs) {
                    return Ok((None, resolution));
                }
            }
        }
        Ok((Some(pairs.into_values().collect()), resolution))
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

fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// ClickHouse's code for a table that does not exist.
const UNKNOWN_TABLE: u32 = 60;

/// Stack ids per frames lookup.
const FRAME_LOOKUP_CHUNK: usize = 8_000;

/// `SELECT {columns} FROM samples WHERE <selection>{within} AND <each window
/// part's copy counted once> {tail}`, its `?` bound by [`Store::bind_once`]
/// ([`javelin_schema::exactly_once`]); `within` is a condition of our own
/// numbers, no `?`. Every profile answer reads samples through this, so all of
/// them count the same rows.
fn once_sql(columns: &str, tail: &str, sel: &Selection, within: &str) -> String {
    format!(
        "SELECT {columns} FROM samples
         WHERE {}{within} AND {}
         {tail}",
        sel.clauses(),
        javelin_schema::exactly_once::filter_within(within)
    )
}

/// ` AND (window_start in one of `ranges`)`, or nothing when the whole range
/// is read raw. A range condition on the sorting key's third column, so the
/// rolled-up hours' raw rows are never read.
fn within(ranges: &[(u32, u32)], whole: bool) -> String {
    if whole {
        return String::new();
    }
    let ranges = ranges
        .iter()
        .map(|(from, to)| {
            format!("(window_start >= toDateTime({from}) AND window_start < toDateTime({to}))")
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(" AND ({ranges})")
}

/// `rows` of a raw and a rolled-up read, the rows of one key added into one
/// (`add`), in key order.
fn add_up<K: Ord, T>(
    rows: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    add: impl Fn(&mut T, T),
) -> Vec<T> {
    let mut merged: std::collections::BTreeMap<K, T> = std::collections::BTreeMap::new();
    for row in rows {
        match merged.entry(key(&row)) {
            std::collections::btree_map::Entry::Occupied(mut e) => add(e.get_mut(), row),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(row);
            }
        }
    }
    merged.into_values().collect()
}

/// Adds `row` into `pairs` (summing a (tag, time) pair seen before); false
/// when that makes more than `max_pairs` pairs.
fn add_pair(
    pairs: &mut std::collections::HashMap<(String, u32), TagBucket>,
    row: TagBucket,
    max_pairs: u64,
) -> bool {
    match pairs.entry((row.tag.clone(), row.time)) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            e.get_mut().value += row.value;
            e.get_mut().rows += row.rows;
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(row);
        }
    }
    pairs.len() as u64 <= max_pairs
}

/// Which hours of a range rollups answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cover {
    /// (bucket start, build id) of every rolled-up hour, ascending.
    pub rolled: Vec<(u32, u64)>,
}

impl Cover {
    fn is_empty(&self) -> bool {
        self.rolled.is_empty()
    }

    /// The parts of [from_s, to_s) not rolled up, as merged [from, to) ranges.
    pub fn raw_ranges(&self, from_s: u32, to_s: u32) -> Vec<(u32, u32)> {
        let mut ranges = Vec::new();
        let mut start = from_s;
        for &(bucket, _) in &self.rolled {
            if bucket > start {
                ranges.push((start, bucket));
            }
            start = start.max(bucket + RESOLUTION_S);
        }
        if start < to_s {
            ranges.push((start, to_s));
        }
        ranges
    }

    /// What the response says about it.
    fn resolution(&self, raw: &[(u32, u32)]) -> Resolution {
        Resolution {
            rollup_seconds: (!self.is_empty()).then_some(RESOLUTION_S),
            rollup_buckets: self.rolled.len(),
            raw_seconds: raw.iter().map(|(from, to)| u64::from(to - from)).sum(),
        }
    }
}

/// Which resolution answered a selection: whole hours from rollups, the rest
/// from raw windows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Resolution {
    /// The rollup's step (3600) where any hour came from rollups; null when
    /// every row read was a raw window's.
    pub rollup_seconds: Option<u32>,
    /// Hours answered from rollups.
    pub rollup_buckets: usize,
    /// Seconds of the range read from raw windows.
    pub raw_seconds: u64,
}

impl Resolution {
    /// A selection read raw in full.
    pub fn raw(sel: &Selection) -> Resolution {
        Resolution {
            rollup_seconds: None,
            rollup_buckets: 0,
            raw_seconds: u64::from(sel.to_s.saturating_sub(sel.from_s)),
        }
    }
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
