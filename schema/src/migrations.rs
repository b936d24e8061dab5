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

/// What the connected server supports, decided from `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFeatures {
    pub version: (u32, u32),
    /// `LowCardinality(String)` without the experimental setting (19.x+; we require 20.1+).
    pub low_cardinality: bool,
    /// Table TTL expressions (19.6+; we require 20.1+). Without them retention drops partitions.
    pub ttl: bool,
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
        })
    }

    /// Asks the server.
    pub async fn detect(client: &Client) -> Result<ServerFeatures, MigrationError> {
        let version: String = client.query("SELECT version()").fetch_one().await?;
        Self::from_version(&version)
    }
}

/// Options that shape the rendered DDL.
#[derive(Debug, Clone, Copy)]
pub struct MigrateOptions {
    /// Data older than this is deleted: by TTL where the server has it, by the
    /// consumer's partition janitor otherwise. At most 7 days by product policy.
    pub retention_days: u32,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { retention_days: 7 }
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
    /// A column only the new layout has: present = already rebuilt.
    pub marker_column: &'static str,
    /// `CREATE TABLE {table}_next …` (rendered like any statement).
    create: &'static str,
    /// The column list of the copy, read from the old table `FINAL`.
    copy_select: &'static str,
    /// Run after the copy, before the rename (reads `{table}_next`).
    record_copy: Option<&'static str>,
    pub retired: &'static str,
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
            marker_column: "window_id",
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
            copy_select:
                "service, profile_type, window_start, cluster, namespace, pod, container, node,
            target_id, cityHash64(target_id, profile_type, window_start) AS window_id,
            stack_id, value, count, toUInt64(0) AS insert_id",
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
];

impl Migration {
    /// The statements as they will run on a server with `features` (a
    /// rebuild's `CREATE` last; its copy and rename are decided at run time).
    pub fn render(&self, features: ServerFeatures, options: MigrateOptions) -> Vec<String> {
        self.statements
            .iter()
            .chain(self.rebuild.as_ref().map(|r| &r.create))
            .map(|template| render(template, features, options))
            .collect()
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

impl AddColumn {
    /// Adds the column unless it exists (appended last: the row types list it last).
    async fn run(&self, db: &Client) -> Result<(), MigrationError> {
        if column_exists(db, self.table, self.column).await? {
            return Ok(());
        }
        db.query(&format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            self.table, self.column, self.definition
        ))
        .execute()
        .await?;
        Ok(())
    }
}

impl Rebuild {
    /// Runs the rebuild on `db`, picking up wherever an earlier run stopped.
    async fn run(
        &self,
        db: &Client,
        features: ServerFeatures,
        options: MigrateOptions,
    ) -> Result<(), MigrationError> {
        let next = format!("{}_next", self.table);
        let has_marker = column_exists(db, self.table, self.marker_column).await?;
        if has_marker {
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
        db.query(&render(self.create, features, options))
            .execute()
            .await?;
        let started = std::time::Instant::now();
        db.query(&format!(
            "INSERT INTO {next} SELECT {} FROM {} FINAL",
            self.copy_select, self.table
        ))
        .execute()
        .await?;
        if let Some(record) = self.record_copy {
            db.query(record).execute().await?;
        }
        tracing::info!(table = self.table, took = ?started.elapsed(), "copied into the new layout");
        db.query(&format!(
            "RENAME TABLE {table} TO {retired}, {next} TO {table}",
            table = self.table,
            retired = self.retired
        ))
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

fn render(template: &str, features: ServerFeatures, options: MigrateOptions) -> String {
    let lc = if features.low_cardinality {
        "LowCardinality(String)"
    } else {
        "String"
    };
    let mut sql = template.replace("{lc}", lc);
    for column in ["window_start", "last_seen", "observed_at"] {
        let ttl = if features.ttl {
            format!("TTL {column} + INTERVAL {} DAY", options.retention_days)
        } else {
            String::new()
        };
        sql = sql.replace(&format!("{{ttl:{column}}}"), &ttl);
    }
    sql
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
    // Identifiers cannot be bound as values; the name was validated above.
    server
        .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .execute()
        .await?;
    let db = server.clone().with_database(database);
    db.query(&format!(
        "CREATE TABLE IF NOT EXISTS {} (version UInt32, name String, applied_at DateTime)
         ENGINE = MergeTree ORDER BY version",
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
        for template in migration.statements {
            db.query(&render(template, features, options))
                .execute()
                .await?;
        }
        for column in migration.add_columns {
            column.run(&db).await?;
        }
        if let Some(rebuild) = &migration.rebuild {
            rebuild.run(&db, features, options).await?;
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
    Ok(report)
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
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
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
        let new = ServerFeatures::from_version("25.8.2.29").expect("parses");
        assert!(new.ttl && new.low_cardinality);
        assert!(ServerFeatures::from_version("banana").is_err());
    }

    #[test]
    fn rendering_differs_only_in_storage_details() {
        let old = ServerFeatures::from_version("18.16.1").expect("parses");
        let new = ServerFeatures::from_version("24.3.1").expect("parses");
        for migration in MIGRATIONS {
            for (a, b) in migration
                .render(old, MigrateOptions::default())
                .iter()
                .zip(migration.render(new, MigrateOptions::default()))
            {
                assert!(
                    !a.contains('{') && !b.contains('{'),
                    "unrendered placeholder"
                );
                if !a.starts_with("CREATE") {
                    assert_eq!(a, &b, "only CREATE statements differ");
                    continue;
                }
                assert!(!a.contains("LowCardinality") && !a.contains("TTL"));
                assert!(b.contains("LowCardinality(String)") && b.contains("TTL"));
                assert!(b.contains("INTERVAL 7 DAY"));
            }
        }
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
}
