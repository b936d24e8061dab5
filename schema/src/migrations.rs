//! Versioned ClickHouse migrations.
//!
//! Each migration has a number and DDL written once as a template; the server's
//! version decides how a template renders ([`ServerFeatures`]). Applied versions
//! are recorded in `schema_migrations`, so a second run is a no-op. Every
//! statement is also written `IF NOT EXISTS`, so a run interrupted between a DDL
//! and its bookkeeping row converges on the next run.
//!
//! The logical schema (columns, types, keys) is identical on every server; only
//! storage details differ. See `docs/clickhouse-schema.md`.

use clickhouse::Client;
use serde::Deserialize;

use crate::rows::table;
use crate::topology::{LOCAL_SUFFIX, Topology, is_identifier, shard_key};

/// What the connected server supports, decided from `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFeatures {
    pub version: (u32, u32),
    /// `LowCardinality(String)` without the experimental setting (19.x+; we require 20.1+).
    pub low_cardinality: bool,
    /// Table TTL expressions (19.6+; we require 20.1+). Without them retention drops partitions.
    pub ttl: bool,
    /// The `async_insert` setting exists (21.11+), so writers can switch it off.
    pub async_insert: bool,
    /// `DROP TABLE … SYNC` (20.10+, where Atomic databases are the default and
    /// a plain DROP frees a Replicated table's ZooKeeper path only minutes later).
    pub drop_sync: bool,
    /// Column codecs (Delta, DoubleDelta, T64, ZSTD: all in 20.1; 18.16 has
    /// none and compresses every column with the server's method, LZ4).
    pub codecs: bool,
}

impl ServerFeatures {
    /// Features from a version string such as `18.16.1` or `25.8.2.29`.
    pub fn from_version(version: &str) -> Result<ServerFeatures, MigrationError> {
        let mut parts = version.trim().split('.').map(str::parse::<u32>);
        let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
            return Err(MigrationError::Version(version.to_string()));
        };
        // One cut-off keeps the matrix small: 20.1 has both features by default.
        let modern = (major, minor) >= (20, 1);
        Ok(ServerFeatures {
            version: (major, minor),
            low_cardinality: modern,
            ttl: modern,
            async_insert: (major, minor) >= (21, 11),
            drop_sync: (major, minor) >= (20, 10),
            codecs: modern,
        })
    }

    /// The query setting under which a `LowCardinality` of a number can be
    /// created: experimental on 18.x, "suspicious" on current servers (which
    /// expect it to lose against plain codecs; stack ids are the exception:
    /// a part holds each stack thousands of times).
    pub fn dictionary_setting(&self) -> (&'static str, &'static str) {
        if self.low_cardinality {
            ("allow_suspicious_low_cardinality_types", "1")
        } else {
            ("allow_experimental_low_cardinality_type", "1")
        }
    }

    /// Asks the server.
    pub async fn detect(client: &Client) -> Result<ServerFeatures, MigrationError> {
        let version: String = client.query("SELECT version()").fetch_one().await?;
        Self::from_version(&version)
    }
}

/// Options that shape the rendered DDL.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Data older than this is deleted: by TTL where the server has it, by the
    /// consumer's partition janitor otherwise. At most 7 days by product policy.
    pub retention_days: u32,
    /// One server, or a cluster: local Replicated tables and Distributed ones.
    pub topology: Topology,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            retention_days: 7,
            topology: Topology::SingleNode,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("cannot parse the server version {0:?}")]
    Version(String),
    #[error("invalid database name {0:?}: use letters, digits and underscores")]
    DatabaseName(String),
    #[error("retention of {0} days is outside 1..=7")]
    Retention(u32),
    #[error(
        "table {0} to rebuild does not exist: was the database created by `javelin-consumer migrate`?"
    )]
    Missing(String),
    #[error("invalid cluster name {0:?}: use letters, digits and underscores")]
    ClusterName(String),
    #[error("database {database} {found}, but {flag}: {hint}")]
    LayoutMismatch {
        database: String,
        found: String,
        flag: String,
        hint: String,
    },
    #[error("cannot render for a cluster: {0}")]
    ClusterDdl(String),
    #[error("the cluster's DDL profile lacks a setting: {0}")]
    ClusterProfile(String),
    #[error(
        "`{table}` holds {old} rows, its copy {new}: rows were written while copying (is a consumer still running?); stop every consumer and run migrate again"
    )]
    CopyIncomplete {
        table: &'static str,
        old: u64,
        new: u64,
    },
    #[error(
        "the bookkeeping of migration {version} reached {seen} of the {shards} nodes of cluster {cluster} within {waited:?}: is a node down?"
    )]
    NotReplicated {
        version: u32,
        cluster: String,
        seen: u64,
        shards: u64,
        waited: std::time::Duration,
    },
}

/// One migration: a version, a name, DDL templates, and optionally a table
/// rebuilt under a new sorting key.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    statements: &'static [&'static str],
    /// Columns added to existing tables, each only when missing (ClickHouse
    /// 18.16 has no `ADD COLUMN IF NOT EXISTS`), so a run interrupted between
    /// two of them converges.
    add_columns: &'static [AddColumn],
    rebuild: Option<Rebuild>,
}

/// `ALTER TABLE {table} ADD COLUMN {column} {definition}`, run when the column is missing.
#[derive(Debug)]
pub struct AddColumn {
    pub table: &'static str,
    pub column: &'static str,
    /// Type and default, e.g. `UInt64 DEFAULT 0`.
    pub definition: &'static str,
}

/// A table rebuilt with a new layout, the way ClickHouse operators change a
/// sorting key (no server changes one in place on an existing table): create
/// `{table}_next`, copy the deduplicated rows, then rename the old table to
/// `retired` and the new one into place in one RENAME. Each step is decided
/// from what exists, so a run interrupted anywhere converges on the next one.
#[derive(Debug)]
pub struct Rebuild {
    pub table: &'static str,
    /// How the new layout is recognised: present = already rebuilt.
    pub layout: NewLayout,
    /// `CREATE TABLE {table}_next …` (rendered like any statement).
    create: &'static str,
    /// The columns the copy fills, in `copy_select`'s order (named, so the
    /// copy also fits a later layout with more columns: [`folded_create`]).
    copy_columns: &'static str,
    /// The column list of the copy.
    copy_select: &'static str,
    /// Read the old table `FINAL` (a collapsing engine whose duplicates the
    /// new layout must not keep); a plain MergeTree refuses `FINAL`.
    copy_final: bool,
    /// Run after the copy, before the rename (reads `{table}_next`).
    record_copy: Option<&'static str>,
    pub retired: &'static str,
}

/// What only the new layout of a rebuilt table has.
#[derive(Debug, Clone, Copy)]
pub enum NewLayout {
    /// A column.
    Column(&'static str),
    /// A column's type (a layout that changes only types and codecs has no
    /// new column to recognise it by).
    ColumnType(&'static str, &'static str),
}

impl NewLayout {
    /// Whether `table` has this layout (`false` when it does not exist).
    async fn is_in(self, db: &Client, table: &str) -> Result<bool, MigrationError> {
        match self {
            NewLayout::Column(column) => column_exists(db, table, column).await,
            NewLayout::ColumnType(column, r#type) => {
                let n: u64 = db
                    .query(
                        "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ? AND type = ?",
                    )
                    .bind(table)
                    .bind(column)
                    .bind(r#type)
                    .fetch_one()
                    .await?;
                Ok(n > 0)
            }
        }
    }
}

/// Every migration, in order. Append only: never edit one that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial: samples, stacks, ingest_ledger, target_status",
        statements: &[
            "CREATE TABLE IF NOT EXISTS samples (
            service {lc}, profile_type {lc}, window_start DateTime,
            cluster {lc}, namespace {lc}, pod String, container {lc}, node {lc},
            target_id UInt64, stack_id UInt64, value Int64, count Int64
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toDate(window_start)
        ORDER BY (service, profile_type, window_start, target_id, stack_id)
        {ttl:window_start}",
            "CREATE TABLE IF NOT EXISTS stacks (
            service {lc}, stack_id UInt64, frames Array(String),
            lines Array(Int32), frame_types Array(UInt8), last_seen DateTime
        ) ENGINE = ReplacingMergeTree(last_seen)
        PARTITION BY toDate(last_seen)
        ORDER BY (service, stack_id)
        {ttl:last_seen}",
            "CREATE TABLE IF NOT EXISTS ingest_ledger (
            window_id UInt64, service {lc}, profile_type {lc}, window_start DateTime,
            window_start_ms Int64, window_end_ms Int64, target_id UInt64, pod String,
            part_index UInt32, part_count UInt32,
            raw_events UInt64, parsed_events UInt64, stacks UInt64,
            dropped_events UInt64, dropped_stacks UInt64, truncated UInt8,
            jfr_bytes UInt64, parse_micros UInt64,
            topic String, partition Int32, offset Int64,
            status {lc}, reason String, ingested_at DateTime, ingest_latency_ms Int64
        ) ENGINE = ReplacingMergeTree(ingested_at)
        PARTITION BY toDate(window_start)
        ORDER BY (service, window_start, window_id)
        {ttl:window_start}",
            "CREATE TABLE IF NOT EXISTS target_status (
            service {lc}, target_id UInt64, cluster {lc}, namespace {lc}, pod String,
            container {lc}, node {lc}, pid UInt32, state {lc}, recorder {lc},
            last_error String, observed_at DateTime, agent_version String,
            windows_published UInt64, spool_dropped_messages UInt64,
            dropped_events UInt64, dropped_stacks UInt64, truncated_windows UInt64
        ) ENGINE = ReplacingMergeTree(observed_at)
        PARTITION BY toDate(observed_at)
        ORDER BY (service, target_id)
        {ttl:observed_at}",
        ],
        add_columns: &[],
        rebuild: None,
    },
    Migration {
        version: 2,
        name: "insert_attempts: one row per window part per samples write attempt",
        statements: &[
            // Append-only (plain MergeTree: never collapsed). The consumer writes a
            // part's attempt row before the part's samples, so a range whose parts
            // each have one attempt has no duplicate samples and can be read
            // without FINAL; any re-write (retry, redelivery, replay) shows as a
            // second attempt and the query falls back to FINAL.
            "CREATE TABLE IF NOT EXISTS insert_attempts (
            service {lc}, profile_type {lc}, window_start DateTime,
            target_id UInt64, part_index UInt32, attempted_at DateTime
        ) ENGINE = MergeTree
        PARTITION BY toDate(window_start)
        ORDER BY (service, profile_type, window_start, target_id, part_index)
        {ttl:window_start}",
        ],
        add_columns: &[],
        rebuild: None,
    },
    Migration {
        version: 3,
        name: "samples keyed by window part and write attempt; stored_parts names the copies readers count",
        statements: &[
            // The attempt log of migration 2 could not prove exactness (see
            // docs/clickhouse-schema.md). Dropping it also makes a consumer older
            // than this migration fail loudly instead of writing rows without a
            // window id (upgrade: stop consumers, migrate, start).
            "DROP TABLE IF EXISTS insert_attempts",
            // One row per copy of a window part's samples, written after the
            // copy is stored: the query counts the smallest insert_id recorded
            // for each window part. Append-only, never collapsed.
            "CREATE TABLE IF NOT EXISTS stored_parts (
            service {lc}, profile_type {lc}, window_start DateTime,
            target_id UInt64, window_id UInt64, insert_id UInt64, stored_at DateTime
        ) ENGINE = MergeTree
        PARTITION BY toDate(window_start)
        ORDER BY (service, profile_type, window_start, window_id, insert_id)
        {ttl:window_start}",
        ],
        add_columns: &[],
        rebuild: Some(Rebuild {
            table: "samples",
            layout: NewLayout::Column("window_id"),
            create: "CREATE TABLE samples_next (
            service {lc}, profile_type {lc}, window_start DateTime,
            cluster {lc}, namespace {lc}, pod String, container {lc}, node {lc},
            target_id UInt64, window_id UInt64, stack_id UInt64, value Int64, count Int64,
            insert_id UInt64,
            writer_check UInt8 MATERIALIZED throwIf(window_id = 0 AND insert_id = 0)
        ) ENGINE = MergeTree
        PARTITION BY toDate(window_start)
        ORDER BY (service, profile_type, window_start, target_id, window_id, insert_id, stack_id)
        {ttl:window_start}",
            // `writer_check` refuses rows without a window id or an insert id: a
            // consumer older than this migration would otherwise write rows that
            // no reader counts and commit their offsets.
            // Rows of the old layout knew only the second their window started:
            // that second stands in for the window part (one copy each, FINAL).
            copy_columns: "service, profile_type, window_start, cluster, namespace, pod, container, node,
            target_id, window_id, stack_id, value, count, insert_id",
            copy_select:
                "service, profile_type, window_start, cluster, namespace, pod, container, node,
            target_id, cityHash64(target_id, profile_type, window_start) AS window_id,
            stack_id, value, count, toUInt64(0) AS insert_id",
            copy_final: true,
            // The copied rows are stored in full: name them to readers.
            record_copy: Some(
                "INSERT INTO stored_parts SELECT service, profile_type, window_start, target_id,
                window_id, insert_id, now() FROM samples_next
                GROUP BY service, profile_type, window_start, target_id, window_id, insert_id",
            ),
            retired: table::SAMPLES_RETIRED,
        }),
    },
    Migration {
        version: 4,
        name: "target_status: failed_collects and oversized_messages",
        statements: &[],
        add_columns: &[
            AddColumn {
                table: table::TARGET_STATUS,
                column: "failed_collects",
                definition: "UInt64 DEFAULT 0",
            },
            AddColumn {
                table: table::TARGET_STATUS,
                column: "oversized_messages",
                definition: "UInt64 DEFAULT 0",
            },
        ],
        rebuild: None,
    },
    Migration {
        version: 5,
        name: "samples: app_version (the tag explorer's version label)",
        statements: &[],
        add_columns: &[AddColumn {
            table: table::SAMPLES,
            column: "app_version",
            definition: "String DEFAULT ''",
        }],
        rebuild: None,
    },
    Migration {
        version: 6,
        name: "target_status: sampling (how each session samples)",
        statements: &[],
        add_columns: &[AddColumn {
            table: table::TARGET_STATUS,
            column: "sampling",
            definition: "String DEFAULT ''",
        }],
        rebuild: None,
    },
    Migration {
        version: 7,
        name: "samples: stack ids as dictionaries, column codecs where the server has them",
        statements: &[],
        add_columns: &[],
        rebuild: Some(Rebuild {
            table: "samples",
            layout: NewLayout::ColumnType("stack_id", "LowCardinality(UInt64)"),
            // Same columns and key as migration 3 (measured: a key with stacks
            // as runs spreads the per-part ids over every row and costs more
            // than it saves, docs/clickhouse-schema.md). Stack ids as a
            // dictionary per part (a part repeats each stack across its window
            // parts), codecs where the server has them, and where it has none
            // the counts as dictionaries too. Values stay plain: allocation
            // bytes and lock times rarely repeat, and a dictionary of them
            // overflows and slows every sum (bench-query's values: 2.5x).
            create: "CREATE TABLE samples_next (
            service {lc} {codec:ZSTD(3)}, profile_type {lc} {codec:ZSTD(3)},
            window_start DateTime {codec:Delta, ZSTD(3)},
            cluster {lc} {codec:ZSTD(3)}, namespace {lc} {codec:ZSTD(3)}, pod String {codec:ZSTD(3)},
            container {lc} {codec:ZSTD(3)}, node {lc} {codec:ZSTD(3)},
            target_id UInt64 {codec:ZSTD(3)}, window_id UInt64 {codec:ZSTD(3)},
            stack_id LowCardinality(UInt64) {codec:ZSTD(3)},
            value Int64 {codec:ZSTD(1)},
            count {dict_without_codecs:Int64} {codec:T64, ZSTD(1)},
            insert_id UInt64 {codec:ZSTD(3)}, app_version String DEFAULT '' {codec:ZSTD(3)},
            writer_check UInt8 MATERIALIZED throwIf(window_id = 0 AND insert_id = 0)
        ) ENGINE = MergeTree
        PARTITION BY toDate(window_start)
        ORDER BY (service, profile_type, window_start, target_id, window_id, insert_id, stack_id)
        {ttl:window_start}",
            // Every copy as it is: readers pick one per window part through
            // `stored_parts`, which names the same (window_id, insert_id) pairs.
            copy_columns: "service, profile_type, window_start, cluster, namespace, pod, container, node,
            target_id, window_id, stack_id, value, count, insert_id, app_version",
            copy_select: "service, profile_type, window_start, cluster, namespace, pod, container, node,
            target_id, window_id, stack_id, value, count, insert_id, app_version",
            copy_final: false,
            record_copy: None,
            retired: table::SAMPLES_V3,
        }),
    },
    Migration {
        version: 8,
        name: "samples_rollup and rollup_builds: exact hourly rollups for long ranges",
        statements: &[
            // One build of one (service, type, hour): the samples of the hour
            // counted once (the query API's read), summed per labels and stack.
            // A rebuilt hour keeps its older builds' rows until retention:
            // readers take the newest recorded build (docs/clickhouse-schema.md).
            "CREATE TABLE IF NOT EXISTS samples_rollup (
            service {lc} {codec:ZSTD(3)}, profile_type {lc} {codec:ZSTD(3)},
            resolution UInt32 {codec:ZSTD(3)}, bucket_start DateTime {codec:Delta, ZSTD(3)},
            build_id UInt64 {codec:ZSTD(3)},
            namespace {lc} {codec:ZSTD(3)}, pod String {codec:ZSTD(3)},
            container {lc} {codec:ZSTD(3)}, node {lc} {codec:ZSTD(3)},
            app_version String {codec:ZSTD(3)},
            stack_id UInt64 {codec:ZSTD(3)}, value Int64 {codec:ZSTD(1)}, count Int64 {codec:ZSTD(1)}
        ) ENGINE = MergeTree
        PARTITION BY toDate(bucket_start)
        ORDER BY (service, profile_type, resolution, bucket_start, build_id, stack_id)
        {ttl:bucket_start}",
            // A build is named here once its rows are stored in full, with the
            // `stored_parts` rows of its hour counted before it read them: an
            // hour whose count has grown since (a redelivery, a replay, a late
            // window) is read raw until it is rebuilt.
            "CREATE TABLE IF NOT EXISTS rollup_builds (
            service {lc}, profile_type {lc}, resolution UInt32, bucket_start DateTime,
            build_id UInt64, source_parts UInt64, built_at DateTime
        ) ENGINE = MergeTree
        PARTITION BY toDate(bucket_start)
        ORDER BY (service, profile_type, resolution, bucket_start, build_id)
        {ttl:bucket_start}",
        ],
        add_columns: &[],
        rebuild: None,
    },
];

impl Migration {
    /// The statements as they will run on a server with `features` (a
    /// rebuild's `CREATE` last; its copy and rename are decided at run time).
    /// On a cluster one template may become several statements (the local
    /// table and the Distributed table over it).
    pub fn render(
        &self,
        features: ServerFeatures,
        options: &MigrateOptions,
        database: &str,
    ) -> Result<Vec<String>, MigrationError> {
        let ddl = Ddl {
            features,
            options,
            database,
            version: self.version,
        };
        let mut out = Vec::new();
        for template in self
            .statements
            .iter()
            .chain(self.rebuild.as_ref().map(|r| &r.create))
        {
            out.extend(ddl.statements(template)?.iter().map(Step::to_string));
        }
        Ok(out)
    }

    /// The table this migration rebuilds, if any.
    pub fn rebuild(&self) -> Option<&Rebuild> {
        self.rebuild.as_ref()
    }

    /// The columns this migration adds.
    pub fn add_columns(&self) -> &[AddColumn] {
        self.add_columns
    }
}

/// How one migration's templates render: the server's features, the
/// retention, and on a cluster the database and the migration's version
/// (they name each Replicated table's ZooKeeper path).
struct Ddl<'a> {
    features: ServerFeatures,
    options: &'a MigrateOptions,
    database: &'a str,
    version: u32,
}

/// One step of a rendered migration.
#[derive(Debug)]
enum Step {
    Sql(String),
    /// The Distributed table `table` over `{table}_local`, with the local
    /// table's columns as the server reports them.
    Distributed {
        table: String,
        cluster: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Sql(sql) => f.write_str(sql),
            Step::Distributed { table, cluster } => write!(
                f,
                "CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {cluster} (<the columns of {table}{LOCAL_SUFFIX}>) ENGINE = Distributed({cluster}, …, {table}{LOCAL_SUFFIX}, {})",
                shard_key(table).unwrap_or("?")
            ),
        }
    }
}

impl Step {
    async fn run(&self, db: &Client, database: &str) -> Result<(), MigrationError> {
        match self {
            Step::Sql(sql) => db.query(sql).execute().await?,
            Step::Distributed { table, cluster } => {
                create_distributed(db, database, table, cluster).await?
            }
        }
        Ok(())
    }
}

impl Ddl<'_> {
    /// The steps one template becomes.
    fn statements(&self, template: &str) -> Result<Vec<Step>, MigrationError> {
        let sql = render(template, self.features, self.options);
        let Some(cluster) = self.options.topology.cluster() else {
            return Ok(vec![Step::Sql(sql)]);
        };
        let db = self.database;
        let trimmed = sql.trim_start();
        if let Some(rest) = trimmed.strip_prefix("DROP TABLE IF EXISTS ") {
            let name = rest.trim();
            check_name(name)?;
            return Ok(vec![
                Step::Sql(drop_on_cluster(self.features, db, name, cluster)),
                Step::Sql(drop_on_cluster(
                    self.features,
                    db,
                    &format!("{name}{LOCAL_SUFFIX}"),
                    cluster,
                )),
            ]);
        }
        if trimmed.starts_with("INSERT ") || trimmed.starts_with("SELECT ") {
            // Rows go through the Distributed tables (synchronously, see
            // `Topology::write_settings`).
            return Ok(vec![Step::Sql(sql)]);
        }
        let (if_not_exists, rest) =
            if let Some(rest) = trimmed.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
                (true, rest)
            } else if let Some(rest) = trimmed.strip_prefix("CREATE TABLE ") {
                (false, rest)
            } else {
                return Err(MigrationError::ClusterDdl(format!(
                    "no cluster form for {:?}",
                    trimmed.lines().next().unwrap_or_default()
                )));
            };
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(rest.len());
        let (name, body) = rest.split_at(end);
        check_name(name)?;
        if shard_key(name).is_none() {
            return Err(MigrationError::ClusterDdl(format!(
                "table {name} has no sharding key"
            )));
        }
        let local = format!("{name}{LOCAL_SUFFIX}");
        let path = format!(
            "/clickhouse/tables/{{shard}}/{db}/{local}/v{}",
            self.version
        );
        let body = replicated_engine(body, &path)?;
        let ine = if if_not_exists { "IF NOT EXISTS " } else { "" };
        Ok(vec![
            Step::Sql(format!(
                "CREATE TABLE {ine}{db}.{local} ON CLUSTER {cluster} {}",
                body.trim_start()
            )),
            Step::Distributed {
                table: name.to_string(),
                cluster: cluster.to_string(),
            },
        ])
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct ColumnDef {
    name: String,
    r#type: String,
    default_kind: String,
    default_expression: String,
}

/// Creates the Distributed table `table` over `{table}_local` on every node.
/// Its columns are the local table's, read from the server (in table order:
/// `SELECT *` readers decode by position), without MATERIALIZED and ALIAS
/// columns: a Distributed table would send those to the shards as ordinary
/// columns, which the local tables refuse ("Cannot insert column …,
/// because it is MATERIALIZED column"); the shards compute them.
async fn create_distributed(
    db: &Client,
    database: &str,
    table: &str,
    cluster: &str,
) -> Result<(), MigrationError> {
    let key = shard_key(table)
        .ok_or_else(|| MigrationError::ClusterDdl(format!("table {table} has no sharding key")))?;
    let local = format!("{table}{LOCAL_SUFFIX}");
    let columns = db
        .query(
            "SELECT name, type, default_kind, default_expression FROM system.columns
             WHERE database = ? AND table = ?",
        )
        .bind(database)
        .bind(&local)
        .fetch_all::<ColumnDef>()
        .await?;
    if columns.is_empty() {
        return Err(MigrationError::Missing(local));
    }
    let columns: Vec<String> = columns
        .iter()
        .filter(|c| !matches!(c.default_kind.as_str(), "MATERIALIZED" | "ALIAS"))
        .map(|c| match c.default_kind.as_str() {
            "DEFAULT" => format!("{} {} DEFAULT {}", c.name, c.r#type, c.default_expression),
            _ => format!("{} {}", c.name, c.r#type),
        })
        .collect();
    db.query(&format!(
        "CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} ({})
         ENGINE = Distributed({cluster}, {database}, {local}, {key})",
        columns.join(", ")
    ))
    .execute()
    .await?;
    Ok(())
}

/// `ENGINE = XMergeTree[(args)]` → `ENGINE = ReplicatedXMergeTree('path', '{replica}'[, args])`.
fn replicated_engine(body: &str, path: &str) -> Result<String, MigrationError> {
    const ENGINE: &str = "ENGINE = ";
    let at = body
        .find(ENGINE)
        .ok_or_else(|| MigrationError::ClusterDdl("CREATE TABLE without ENGINE".into()))?
        + ENGINE.len();
    let after = &body[at..];
    let name_end = after
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(after.len());
    let engine = &after[..name_end];
    if !engine.ends_with("MergeTree") {
        return Err(MigrationError::ClusterDdl(format!(
            "engine {engine} has no replicated form"
        )));
    }
    let rest = &after[name_end..];
    let (args, tail) = match rest.strip_prefix('(') {
        Some(inner) => {
            let close = inner
                .find(')')
                .ok_or_else(|| MigrationError::ClusterDdl("unclosed engine arguments".into()))?;
            let args = inner[..close].trim();
            (
                (!args.is_empty()).then(|| format!(", {args}")),
                &inner[close + 1..],
            )
        }
        None => (None, rest),
    };
    Ok(format!(
        "{}Replicated{engine}('{path}', '{{replica}}'{}){tail}",
        &body[..at],
        args.unwrap_or_default()
    ))
}

fn check_name(name: &str) -> Result<(), MigrationError> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(MigrationError::ClusterDdl(format!("table name {name:?}")))
    }
}

impl AddColumn {
    /// Adds the column unless it exists (appended last: the row types list it
    /// last). On a cluster: to the local tables (a replicated ALTER, ON
    /// CLUSTER), then the Distributed table is created again over them: it
    /// holds no rows (inserts are synchronous), and ClickHouse runs an ALTER ON
    /// CLUSTER only on replicated tables. An insert that meets the moment
    /// without the table fails as an outage and is retried.
    async fn run(
        &self,
        db: &Client,
        features: ServerFeatures,
        topology: &Topology,
        database: &str,
    ) -> Result<(), MigrationError> {
        let Some(cluster) = topology.cluster() else {
            if !column_exists(db, self.table, self.column).await? {
                db.query(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    self.table, self.column, self.definition
                ))
                .execute()
                .await?;
            }
            return Ok(());
        };
        let local = topology.local_table(self.table);
        if !column_exists(db, &local, self.column).await? {
            db.query(&format!(
                "ALTER TABLE {database}.{local} ON CLUSTER {cluster} ADD COLUMN {} {}",
                self.column, self.definition
            ))
            .execute()
            .await?;
        }
        if !column_exists(db, self.table, self.column).await? {
            recreate_distributed(db, features, database, self.table, cluster).await?;
        }
        Ok(())
    }
}

/// `DROP TABLE IF EXISTS {database}.{table} ON CLUSTER {cluster}`, waiting
/// for the drop to finish where the server can (so a table created again at
/// once under the same ZooKeeper path does not meet the old replica).
fn drop_on_cluster(features: ServerFeatures, database: &str, table: &str, cluster: &str) -> String {
    let sync = if features.drop_sync { " SYNC" } else { "" };
    format!("DROP TABLE IF EXISTS {database}.{table} ON CLUSTER {cluster}{sync}")
}

/// Drops and creates the Distributed table `table` over its local tables,
/// taking their columns.
async fn recreate_distributed(
    db: &Client,
    features: ServerFeatures,
    database: &str,
    table: &str,
    cluster: &str,
) -> Result<(), MigrationError> {
    db.query(&drop_on_cluster(features, database, table, cluster))
        .execute()
        .await?;
    create_distributed(db, database, table, cluster).await
}

/// The `CREATE` a rebuild of `migration` runs when migrations up to `target`
/// are applied and `done` already are: a later rebuild of the same table in
/// the same run lends its layout, so the rows are copied once, straight into
/// it (an upgrade from before migration 3 copies `samples` once, not in
/// migration 3 and again in migration 7). The later rebuild then finds its
/// layout in place and copies nothing; columns added in between exist
/// already and are skipped (`unit tests: folding_keeps_every_column`).
fn folded_create(migration: &Migration, target: u32, done: &[u32]) -> Option<&'static str> {
    let own = migration.rebuild.as_ref()?;
    let latest = MIGRATIONS
        .iter()
        .filter(|m| m.version > migration.version && m.version <= target)
        .filter(|m| !done.contains(&m.version))
        .filter_map(|m| m.rebuild.as_ref())
        .rfind(|r| r.table == own.table)
        .unwrap_or(own);
    Some(latest.create)
}

impl Rebuild {
    /// Runs the rebuild on `db` with the table `create` makes (its own or a
    /// later migration's, [`folded_create`]), picking up wherever an earlier
    /// run stopped.
    async fn run(&self, db: &Client, ddl: &Ddl<'_>, create: &str) -> Result<(), MigrationError> {
        if let Some(cluster) = ddl.options.topology.cluster() {
            return self.run_on_cluster(db, ddl, cluster, create).await;
        }
        let next = format!("{}_next", self.table);
        if self.layout.is_in(db, self.table).await? {
            return Ok(());
        }
        let old_exists = table_exists(db, self.table).await?;
        if !old_exists {
            // Stopped between the two halves of the RENAME: finish it.
            if table_exists(db, &next).await? {
                db.query(&format!("RENAME TABLE {next} TO {}", self.table))
                    .execute()
                    .await?;
                return Ok(());
            }
            return Err(MigrationError::Missing(self.table.to_string()));
        }
        // A copy left by an interrupted run may be partial: start over.
        db.query(&format!("DROP TABLE IF EXISTS {next}"))
            .execute()
            .await?;
        for step in ddl.statements(create)? {
            step.run(db, ddl.database).await?;
        }
        self.copy(db, &next).await?;
        db.query(&format!(
            "RENAME TABLE {table} TO {retired}, {next} TO {table}",
            table = self.table,
            retired = self.retired
        ))
        .execute()
        .await?;
        Ok(())
    }

    /// Copies the deduplicated rows into `next` and records them.
    async fn copy(&self, db: &Client, next: &str) -> Result<(), MigrationError> {
        let started = std::time::Instant::now();
        db.query(&format!(
            "INSERT INTO {next} ({}) SELECT {} FROM {}{}",
            self.copy_columns,
            self.copy_select,
            self.table,
            if self.copy_final { " FINAL" } else { "" }
        ))
        .execute()
        .await?;
        if !self.copy_final {
            // Every row is copied as it is: a difference means rows were written
            // while copying (a consumer still running), rows that the rename
            // would hide from readers. Refused here; the next run copies again.
            let count = |table: &str| {
                db.query(&format!("SELECT count() FROM {table}"))
                    .fetch_one::<u64>()
            };
            let (old, new) = (count(self.table).await?, count(next).await?);
            if old != new {
                return Err(MigrationError::CopyIncomplete {
                    table: self.table,
                    old,
                    new,
                });
            }
        }
        if let Some(record) = self.record_copy {
            db.query(record).execute().await?;
        }
        tracing::info!(table = self.table, took = ?started.elapsed(), "copied into the new layout");
        Ok(())
    }

    /// The rebuild on a cluster: the local tables are rebuilt and renamed on
    /// every node (ON CLUSTER), the copy runs through the Distributed tables,
    /// and the Distributed table is re-created over the new local table (it
    /// holds no rows: inserts are synchronous). Decided from what exists, so an
    /// interrupted run converges like on one server.
    async fn run_on_cluster(
        &self,
        db: &Client,
        ddl: &Ddl<'_>,
        cluster: &str,
        create: &str,
    ) -> Result<(), MigrationError> {
        let database = ddl.database;
        let table = self.table;
        let local = format!("{table}{LOCAL_SUFFIX}");
        let next = format!("{table}_next");
        let next_local = format!("{next}{LOCAL_SUFFIX}");
        if !self.layout.is_in(db, &local).await? {
            if table_exists(db, &local).await? {
                for name in [&next, &next_local] {
                    db.query(&drop_on_cluster(ddl.features, database, name, cluster))
                        .execute()
                        .await?;
                }
                for step in ddl.statements(create)? {
                    step.run(db, database).await.map_err(|e| {
                        let (setting, _) = ddl.features.dictionary_setting();
                        if e.to_string().contains(setting) {
                            MigrationError::ClusterProfile(format!(
                                "{e}: the nodes ran ON CLUSTER DDL with the settings of their \
                                 distributed_ddl profile, not the query's; set {setting} = 1 \
                                 there on every node (docs/operations/upgrades.md, migration 7; \
                                 migration 3 needs it too when it creates migration 7's layout)"
                            ))
                        } else {
                            e
                        }
                    })?;
                }
                // A Replicated table drops an inserted block identical to an
                // earlier one; every row of the copy must land.
                self.copy(&db.clone().with_setting("insert_deduplicate", "0"), &next)
                    .await?;
                db.query(&format!(
                    "RENAME TABLE {database}.{local} TO {database}.{retired}{LOCAL_SUFFIX}, \
                     {database}.{next_local} TO {database}.{local} ON CLUSTER {cluster}",
                    retired = self.retired
                ))
                .execute()
                .await?;
            } else if table_exists(db, &next_local).await? {
                // Stopped between the two halves of the RENAME: finish it.
                db.query(&format!(
                    "RENAME TABLE {database}.{next_local} TO {database}.{local} ON CLUSTER {cluster}"
                ))
                .execute()
                .await?;
            } else {
                return Err(MigrationError::Missing(local));
            }
        }
        // The local table has the new layout; the Distributed one follows.
        if !self.layout.is_in(db, table).await? {
            recreate_distributed(db, ddl.features, database, table, cluster).await?;
        }
        db.query(&drop_on_cluster(ddl.features, database, &next, cluster))
            .execute()
            .await?;
        Ok(())
    }
}

async fn table_exists(db: &Client, name: &str) -> Result<bool, MigrationError> {
    let n: u64 = db
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
        .bind(name)
        .fetch_one()
        .await?;
    Ok(n > 0)
}

async fn column_exists(db: &Client, table: &str, column: &str) -> Result<bool, MigrationError> {
    let n: u64 = db
        .query(
            "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?",
        )
        .bind(table)
        .bind(column)
        .fetch_one()
        .await?;
    Ok(n > 0)
}

fn render(template: &str, features: ServerFeatures, options: &MigrateOptions) -> String {
    let lc = if features.low_cardinality {
        "LowCardinality(String)"
    } else {
        "String"
    };
    let mut sql = template.replace("{lc}", lc);
    for column in ["window_start", "last_seen", "observed_at", "bucket_start"] {
        let ttl = if features.ttl {
            format!("TTL {column} + INTERVAL {} DAY", options.retention_days)
        } else {
            String::new()
        };
        sql = sql.replace(&format!("{{ttl:{column}}}"), &ttl);
    }
    // A column whose values repeat within a part: plain where codecs
    // compress it, a dictionary where the server has none.
    let counts = if features.codecs {
        "Int64"
    } else {
        "LowCardinality(Int64)"
    };
    sql = sql.replace("{dict_without_codecs:Int64}", counts);
    render_codecs(&sql, features.codecs)
}

/// `{codec:ZSTD(1)}` becomes `CODEC(ZSTD(1))` where the server has codecs, and
/// nothing elsewhere (the column keeps the server's default compression).
fn render_codecs(sql: &str, codecs: bool) -> String {
    const OPEN: &str = "{codec:";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        // Codec arguments hold parentheses, never braces.
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        if codecs {
            out.push_str("CODEC(");
            out.push_str(&after[..end]);
            out.push(')');
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub features: ServerFeatures,
    pub applied: Vec<u32>,
    pub already_applied: Vec<u32>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct AppliedVersion {
    version: u32,
}

/// Creates `database` if needed and applies every pending migration in order.
///
/// `server` must not have a database selected (it may not exist yet).
pub async fn migrate(
    server: &Client,
    database: &str,
    options: MigrateOptions,
) -> Result<MigrationReport, MigrationError> {
    migrate_up_to(server, database, options, u32::MAX).await
}

/// [`migrate`], applying only migrations up to `version` (how upgrades from an
/// older schema are tested).
pub async fn migrate_up_to(
    server: &Client,
    database: &str,
    options: MigrateOptions,
    version: u32,
) -> Result<MigrationReport, MigrationError> {
    validate_database_name(database)?;
    if !(1..=7).contains(&options.retention_days) {
        return Err(MigrationError::Retention(options.retention_days));
    }
    let features = ServerFeatures::detect(server).await?;
    let topology = &options.topology;
    let on_cluster = topology
        .cluster()
        .map(|c| format!(" ON CLUSTER {c}"))
        .unwrap_or_default();
    // Identifiers cannot be bound as values; the names were validated.
    server
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {database}{on_cluster}"
        ))
        .execute()
        .await?;
    let (setting, value) = features.dictionary_setting();
    let db = topology
        .writer(server.clone().with_database(database), features)
        .with_setting(setting, value);
    // A database made for the other layout is refused before anything runs.
    topology.verify(&db, database).await?;
    // A replicated ALTER returns once every replica applied it, so the
    // Distributed table created next reads the new columns on any node.
    let db = match topology.cluster() {
        Some(_) => db.with_setting("replication_alter_partitions_sync", "2"),
        None => db,
    };
    // On a cluster the bookkeeping is replicated to every node (one path for
    // all shards), so any node can answer `pending`.
    let bookkeeping_engine = match topology.cluster() {
        None => "MergeTree".to_string(),
        Some(_) => format!(
            "ReplicatedMergeTree('/clickhouse/tables/all/{database}/{}', '{{replica}}')",
            table::SCHEMA_MIGRATIONS
        ),
    };
    db.query(&format!(
        "CREATE TABLE IF NOT EXISTS {database}.{}{on_cluster} (version UInt32, name String, applied_at DateTime)
         ENGINE = {bookkeeping_engine} ORDER BY version",
        table::SCHEMA_MIGRATIONS
    ))
    .execute()
    .await?;
    let done = applied_versions(&db).await?;

    let mut report = MigrationReport {
        features,
        applied: vec![],
        already_applied: vec![],
    };
    for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
        if done.contains(&migration.version) {
            report.already_applied.push(migration.version);
            continue;
        }
        let ddl = Ddl {
            features,
            options: &options,
            database,
            version: migration.version,
        };
        for template in migration.statements {
            for step in ddl.statements(template)? {
                step.run(&db, database).await?;
            }
        }
        for column in migration.add_columns {
            column.run(&db, features, topology, database).await?;
        }
        if let (Some(rebuild), Some(create)) =
            (&migration.rebuild, folded_create(migration, version, &done))
        {
            rebuild.run(&db, &ddl, create).await?;
        }
        db.query(&format!(
            "INSERT INTO {} (version, name, applied_at) VALUES (?, ?, now())",
            table::SCHEMA_MIGRATIONS
        ))
        .bind(migration.version)
        .bind(migration.name)
        .execute()
        .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    // Also after a run that applied nothing: an earlier run may have stopped
    // waiting.
    let last = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|&v| v <= version)
        .max();
    if let (Some(cluster), Some(last)) = (topology.cluster(), last) {
        await_bookkeeping(&db, cluster, database, last).await?;
    }
    Ok(report)
}

/// Waits until every node of `cluster` (every replica of every shard, as
/// `system.clusters` lists them) has the bookkeeping row of `version`
/// (replication is asynchronous), so a consumer or query API started next on
/// any node finds the schema current. Each node is asked on its own
/// (`remote(host:port, …)`): a count over `cluster(…)` reads one replica per
/// shard and cannot tell a shard that lacks the row from a duplicate row.
async fn await_bookkeeping(
    db: &Client,
    cluster: &str,
    database: &str,
    version: u32,
) -> Result<(), MigrationError> {
    #[derive(Debug, Deserialize, clickhouse::Row)]
    struct Node {
        host_name: String,
        port: u16,
    }
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    let nodes = db
        .query("SELECT host_name, port FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_all::<Node>()
        .await?;
    loop {
        let mut seen = 0u64;
        for node in &nodes {
            let has: u8 = db
                .query(&format!(
                    "SELECT count() > 0 FROM remote(?, {database}, {}) WHERE version = ?",
                    table::SCHEMA_MIGRATIONS
                ))
                .bind(format!("{}:{}", node.host_name, node.port))
                .bind(version)
                .fetch_one()
                .await
                .unwrap_or(0);
            seen += u64::from(has);
        }
        if seen == nodes.len() as u64 {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            return Err(MigrationError::NotReplicated {
                version,
                cluster: cluster.to_string(),
                seen,
                shards: nodes.len() as u64,
                waited: DEADLINE,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Versions recorded in `schema_migrations` (the table must exist).
async fn applied_versions(db: &Client) -> Result<Vec<u32>, MigrationError> {
    let rows = db
        .query(&format!(
            "SELECT DISTINCT version FROM {}",
            table::SCHEMA_MIGRATIONS
        ))
        .fetch_all::<AppliedVersion>()
        .await?;
    Ok(rows.into_iter().map(|row| row.version).collect())
}

/// Versions of [`MIGRATIONS`] not yet applied to the database `db` is bound to
/// (all of them when the database or its bookkeeping table does not exist).
pub async fn pending(db: &Client) -> Result<Vec<u32>, MigrationError> {
    let exists: u8 = db
        .query(
            "SELECT count() > 0 FROM system.tables WHERE database = currentDatabase() AND name = ?",
        )
        .bind(table::SCHEMA_MIGRATIONS)
        .fetch_one()
        .await?;
    let done = if exists == 1 {
        applied_versions(db).await?
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !done.contains(v))
        .collect())
}

/// Database names are spliced into DDL, so only plain identifiers are allowed.
pub fn validate_database_name(name: &str) -> Result<(), MigrationError> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(MigrationError::DatabaseName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_decide_features() {
        let old = ServerFeatures::from_version("18.16.1").expect("parses");
        assert!(!old.ttl && !old.low_cardinality);
        assert!(!old.codecs);
        let new = ServerFeatures::from_version("25.8.2.29").expect("parses");
        assert!(new.ttl && new.low_cardinality && new.codecs);
        assert!(ServerFeatures::from_version("banana").is_err());
    }

    #[test]
    fn codecs_render_only_where_the_server_has_them() {
        let template = "a UInt64 {codec:Delta, ZSTD(1)}, b Int64 {codec:T64}, c String";
        assert_eq!(
            render_codecs(template, true),
            "a UInt64 CODEC(Delta, ZSTD(1)), b Int64 CODEC(T64), c String"
        );
        assert_eq!(
            render_codecs(template, false),
            "a UInt64 , b Int64 , c String"
        );
    }

    #[test]
    fn rendering_differs_only_in_storage_details() {
        let old = ServerFeatures::from_version("18.16.1").expect("parses");
        let new = ServerFeatures::from_version("24.3.1").expect("parses");
        let mut counts_as_dictionary = false;
        for migration in MIGRATIONS {
            let options = MigrateOptions::default();
            for (a, b) in migration
                .render(old, &options, "db")
                .expect("renders")
                .iter()
                .zip(migration.render(new, &options, "db").expect("renders"))
            {
                assert!(
                    !a.contains('{') && !b.contains('{'),
                    "unrendered placeholder"
                );
                if !a.starts_with("CREATE") {
                    assert_eq!(a, &b, "only CREATE statements differ");
                    continue;
                }
                // Strings are dictionaries only where that is not experimental;
                // numbers that repeat (stack ids; on 18.16 counts) on both.
                assert!(!a.contains("LowCardinality(String)") && !a.contains("TTL"));
                assert!(b.contains("LowCardinality(String)") && b.contains("TTL"));
                assert!(b.contains("INTERVAL 7 DAY"));
                assert!(!a.contains("CODEC"));
                counts_as_dictionary |= a.contains("count LowCardinality(Int64)");
                if a.contains("count ") {
                    assert_eq!(
                        a.contains("count LowCardinality(Int64)"),
                        b.contains("count Int64 CODEC(T64, ZSTD(1))"),
                        "counts: a dictionary without codecs, T64 with them"
                    );
                }
            }
        }
        assert!(counts_as_dictionary, "migration 7 renders for 18.16");
    }

    #[test]
    fn cluster_rendering_pairs_every_table_with_a_distributed_one() {
        let options = MigrateOptions {
            topology: Topology::Cluster("javelin".into()),
            ..MigrateOptions::default()
        };
        for version in ["18.16.1", "26.9.2.1"] {
            let features = ServerFeatures::from_version(version).expect("parses");
            for migration in MIGRATIONS {
                let statements = migration
                    .render(features, &options, "db")
                    .expect("every template has a cluster form");
                let creates: Vec<&String> = statements
                    .iter()
                    .filter(|s| s.starts_with("CREATE"))
                    .collect();
                assert_eq!(creates.len() % 2, 0, "local + Distributed: {creates:#?}");
                for pair in creates.chunks(2) {
                    assert!(pair[0].contains("_local ON CLUSTER javelin"), "{}", pair[0]);
                    assert!(
                        pair[0].contains("MergeTree('/clickhouse/tables/{shard}/db/")
                            && pair[0]
                                .contains(&format!("/v{}', '{{replica}}'", migration.version)),
                        "replicated, path per migration: {}",
                        pair[0]
                    );
                    assert!(
                        pair[1].contains("ENGINE = Distributed(javelin, "),
                        "{}",
                        pair[1]
                    );
                    assert!(pair[1].contains("cityHash64(service, "), "{}", pair[1]);
                }
                for drop in statements.iter().filter(|s| s.starts_with("DROP")) {
                    let on_cluster = if features.drop_sync {
                        "ON CLUSTER javelin SYNC"
                    } else {
                        "ON CLUSTER javelin"
                    };
                    assert!(drop.ends_with(on_cluster), "{drop}");
                }
            }
        }
    }

    #[test]
    fn replicated_engines_keep_their_arguments() {
        let path = "/p";
        assert_eq!(
            replicated_engine(
                " (a UInt8) ENGINE = ReplacingMergeTree(v)\n ORDER BY a",
                path
            )
            .expect("ok"),
            " (a UInt8) ENGINE = ReplicatedReplacingMergeTree('/p', '{replica}', v)\n ORDER BY a"
        );
        assert_eq!(
            replicated_engine(" (a UInt8) ENGINE = MergeTree\n ORDER BY a", path).expect("ok"),
            " (a UInt8) ENGINE = ReplicatedMergeTree('/p', '{replica}')\n ORDER BY a"
        );
        assert!(replicated_engine(" (a UInt8) ENGINE = Memory", path).is_err());
        assert!(replicated_engine(" (a UInt8)", path).is_err());
    }

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(validate_database_name("javelin_test_1").is_ok());
        for bad in ["", "1abc", "a;DROP", "a b", "a`b"] {
            assert!(validate_database_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn migration_versions_are_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }

    fn version(v: u32) -> &'static Migration {
        MIGRATIONS
            .iter()
            .find(|m| m.version == v)
            .expect("a migration")
    }

    #[test]
    fn a_rebuild_takes_the_latest_pending_layout_of_its_table() {
        let (three, seven) = (version(3), version(7));
        let create = |m: &Migration| m.rebuild().map(|r| r.create);
        // From before migration 3 to the latest: one copy, into 7's layout.
        assert_eq!(folded_create(three, u32::MAX, &[1, 2]), create(seven));
        // Not past migration 6 (how upgrades are tested): 3's own layout.
        assert_eq!(folded_create(three, 6, &[1, 2]), create(three));
        // Migration 7 already applied elsewhere: nothing to borrow.
        assert_eq!(folded_create(three, u32::MAX, &[1, 2, 7]), create(three));
        assert_eq!(folded_create(seven, u32::MAX, &[1, 2, 3]), create(seven));
        assert_eq!(folded_create(version(5), u32::MAX, &[]), None);
    }

    /// The column names of a `CREATE TABLE … (…)` template or a column list.
    fn columns(sql: &str) -> Vec<String> {
        let body = sql.find('(').map_or(sql, |i| &sql[i + 1..]);
        body.split(',')
            .filter_map(|c| c.split_whitespace().next())
            .map(|c| c.trim_matches(|ch: char| !ch.is_alphanumeric() && ch != '_'))
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A later layout borrowed by an earlier rebuild must take every column the
    /// earlier copy fills and every column added between the two (those
    /// migrations then find theirs present and skip it).
    #[test]
    fn folding_keeps_every_column() {
        for (i, earlier) in MIGRATIONS.iter().enumerate() {
            let Some(from) = earlier.rebuild() else {
                continue;
            };
            for later in &MIGRATIONS[i + 1..] {
                let Some(to) = later.rebuild().filter(|r| r.table == from.table) else {
                    continue;
                };
                let layout = columns(to.create);
                let between = MIGRATIONS
                    .iter()
                    .filter(|m| m.version > earlier.version && m.version < later.version)
                    .flat_map(|m| m.add_columns())
                    .filter(|c| c.table == from.table)
                    .map(|c| c.column.to_string());
                for column in columns(from.copy_columns).into_iter().chain(between) {
                    assert!(
                        layout.contains(&column),
                        "migration {}'s layout lacks {column}, which migration {} needs",
                        later.version,
                        earlier.version
                    );
                }
                // Both migrations recognise the borrowed layout as done.
                for marker in [from.layout, to.layout] {
                    match marker {
                        NewLayout::Column(column) => {
                            assert!(layout.iter().any(|c| c == column), "{column}")
                        }
                        NewLayout::ColumnType(column, r#type) => assert!(
                            to.create.contains(&format!("{column} {type}")),
                            "{column} {type}"
                        ),
                    }
                }
                // The later rebuild is skipped: it must not have bookkeeping of
                // its own that would then never run.
                assert!(
                    to.record_copy.is_none(),
                    "migration {} records its copy: folding into it would skip that",
                    later.version
                );
            }
        }
    }

    /// Top-level items of a column list or a SELECT list (commas inside
    /// parentheses belong to a function call).
    fn items(list: &str) -> usize {
        let mut depth = 0i32;
        let mut n = 1;
        for ch in list.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => n += 1,
                _ => {}
            }
        }
        n
    }

    #[test]
    fn copies_name_as_many_columns_as_they_select() {
        for m in MIGRATIONS {
            if let Some(r) = m.rebuild() {
                assert_eq!(
                    items(r.copy_columns),
                    items(r.copy_select),
                    "migration {}",
                    m.version
                );
            }
        }
    }
}
