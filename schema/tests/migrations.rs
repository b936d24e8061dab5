//! Migrations on the two ClickHouse servers Javelin supports at either end:
//! Debian's 18.16 of the local stack (`dev/stack up`), without LowCardinality
//! and TTL, and a current 26.9 (chdb, [`ChdbServer`]) of each test's own,
//! with both. Every test runs on each (`…::on_18_16`, `…::on_26_9`).

use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::Client;
use javelin_schema::migrations::{MigrateOptions, ServerFeatures, migrate, migrate_up_to};
use javelin_schema::rows::{
    LedgerRow, SampleRow, SampleRowRef, StackRow, StackRowRef, StoredPartRow, TargetStatusRow,
    table,
};
use javelin_schema::testkit::chdb::ChdbServer;
use javelin_schema::testkit::{clickhouse_client, unique_name};

/// A server a test runs on, and what the migrations must render there.
struct Server {
    /// No database selected.
    client: Client,
    /// `(major, minor)`.
    version: (u32, u32),
    /// The type of a `{lc}` column (`service`, `profile_type`, …).
    lc_type: &'static str,
    /// Whether tables carry the retention as a TTL.
    ttl: bool,
    /// Kept alive for the test (26.9 only).
    _chdb: Option<ChdbServer>,
}

impl Server {
    /// The local stack's ClickHouse, which must be 18.16.
    fn stack_18_16() -> Server {
        Server {
            client: clickhouse_client(),
            version: (18, 16),
            lc_type: "String",
            ttl: false,
            _chdb: None,
        }
    }

    /// A ClickHouse 26.9 (chdb) of the test's own.
    fn chdb_26_9(test: &str) -> Server {
        let chdb = ChdbServer::start(&unique_name(test))
            .unwrap_or_else(|e| panic!("starting chdb-server for {test}: {e}"));
        Server {
            client: chdb.client(),
            version: (26, 9),
            lc_type: "LowCardinality(String)",
            ttl: true,
            _chdb: Some(chdb),
        }
    }

    /// Fails unless the server is the version the test is named for.
    async fn check_version(&self) {
        let detected = ServerFeatures::detect(&self.client)
            .await
            .expect("server version");
        assert_eq!(
            detected.version, self.version,
            "the test runs on the wrong server"
        );
    }
}

/// Seconds since the epoch, an hour ago: inside the 7-day TTL of 26.9, so
/// rows written at that time stay.
fn an_hour_ago() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    u32::try_from(now - 3600).expect("a DateTime in range")
}

mod migrate_twice_is_a_no_op_and_rows_round_trip {
    #[tokio::test]
    async fn on_18_16() {
        super::migrate_twice_is_a_no_op_and_rows_round_trip(super::Server::stack_18_16()).await
    }

    #[tokio::test]
    async fn on_26_9() {
        super::migrate_twice_is_a_no_op_and_rows_round_trip(super::Server::chdb_26_9(
            "migrate_twice",
        ))
        .await
    }
}

async fn migrate_twice_is_a_no_op_and_rows_round_trip(on: Server) {
    on.check_version().await;
    let server = on.client.clone();
    let t = an_hour_ago();
    let database = unique_name("javelin_migrate");

    server
        .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .execute()
        .await
        .expect("database");
    let db = server.clone().with_database(&database);
    assert_eq!(
        javelin_schema::migrations::pending(&db)
            .await
            .expect("pending"),
        vec![1, 2, 3, 4, 5, 6, 7, 8],
        "a new database lacks every migration"
    );
    let first = migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("first run");
    assert!(
        javelin_schema::migrations::pending(&db)
            .await
            .expect("pending")
            .is_empty()
    );
    assert_eq!(first.applied, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(first.already_applied.is_empty());

    // What differs by server: the storage the features render, never the
    // logical schema (`pod` stays a String everywhere).
    assert_eq!(first.features.version, on.version);
    let types: Vec<(String, String)> = db
        .query(
            "SELECT name, type FROM system.columns
             WHERE database = ? AND table = 'samples' AND name IN ('service', 'pod')
             ORDER BY name",
        )
        .bind(&database)
        .fetch_all()
        .await
        .expect("column types");
    assert_eq!(
        types,
        [
            ("pod".to_string(), "String".to_string()),
            ("service".to_string(), on.lc_type.to_string())
        ]
    );
    for (table, column) in [
        (table::SAMPLES, "window_start"),
        (table::STACKS, "last_seen"),
        (table::INGEST_LEDGER, "window_start"),
        (table::TARGET_STATUS, "observed_at"),
        (table::STORED_PARTS, "window_start"),
        (table::SAMPLES_ROLLUP, "bucket_start"),
        (table::ROLLUP_BUILDS, "bucket_start"),
    ] {
        let engine: String = db
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(&database)
            .bind(table)
            .fetch_one()
            .await
            .expect("engine");
        // `… ORDER BY (…) TTL window_start + toIntervalDay(7) SETTINGS …`
        let ttl = engine
            .find("TTL ")
            .map(|at| engine[at..].split(" SETTINGS ").next().unwrap_or_default());
        let expected = on.ttl.then(|| format!("TTL {column} + toIntervalDay(7)"));
        assert_eq!(ttl, expected.as_deref(), "{table}: {engine}");
    }

    let second = migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("second run");
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(second.already_applied, vec![1, 2, 3, 4, 5, 6, 7, 8]);

    let db = server.clone().with_database(&database);
    let recorded: u64 = db
        .query("SELECT count() FROM schema_migrations")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(recorded, 8, "one bookkeeping row per migration");

    // Column order is the contract of plain RowBinary: write and read each row type.
    let sample = SampleRow {
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: t,
        cluster: "c".into(),
        namespace: "ns".into(),
        pod: "pod-1".into(),
        container: "app".into(),
        node: "n1".into(),
        target_id: 7,
        window_id: u64::MAX - 3,
        stack_id: u64::MAX - 1,
        value: 123_456_789,
        count: 12,
        insert_id: u64::MAX - 5,
        app_version: "2.4.1+build.7".into(),
    };
    let stack = StackRow {
        service: "svc".into(),
        stack_id: u64::MAX - 1,
        frames: vec!["a.B.c".into(), "d.E.f".into()],
        lines: vec![0, 12],
        frame_types: vec![1, 3],
        last_seen: t,
    };
    let ledger = LedgerRow {
        window_id: 99,
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: t,
        window_start_ms: i64::from(t) * 1000 + 123,
        window_end_ms: i64::from(t) * 1000 + 10_123,
        target_id: 7,
        pod: "pod-1".into(),
        part_index: 0,
        part_count: 2,
        raw_events: 10,
        parsed_events: 9,
        stacks: 3,
        dropped_events: 1,
        dropped_stacks: 0,
        truncated: 1,
        jfr_bytes: 4096,
        parse_micros: 77,
        topic: "t".into(),
        partition: 3,
        offset: 42,
        status: "truncated".into(),
        reason: String::new(),
        ingested_at: t + 11,
        ingest_latency_ms: 877,
    };
    let status = TargetStatusRow {
        service: "svc".into(),
        target_id: 7,
        cluster: "c".into(),
        namespace: "ns".into(),
        pod: "pod-1".into(),
        container: "app".into(),
        node: "n1".into(),
        pid: 4242,
        state: "profiling".into(),
        recorder: "jfr".into(),
        last_error: String::new(),
        observed_at: t + 11,
        agent_version: "0.1.0".into(),
        windows_published: 12,
        spool_dropped_messages: 1,
        dropped_events: 2,
        dropped_stacks: 3,
        truncated_windows: 4,
        failed_collects: 5,
        oversized_messages: 6,
        sampling: "cpu: every 10 ms; 60-s windows".into(),
    };
    // The consumer writes the borrowed forms; they must land as the owned rows read back.
    write_one::<SampleRowRef>(&db, table::SAMPLES, &sample.borrowed()).await;
    write_one::<StackRowRef>(&db, table::STACKS, &stack.borrowed()).await;
    write_one::<LedgerRow>(&db, table::INGEST_LEDGER, &ledger).await;
    write_one::<TargetStatusRow>(&db, table::TARGET_STATUS, &status).await;
    let stored = StoredPartRow {
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: t,
        target_id: 7,
        window_id: u64::MAX - 3,
        insert_id: u64::MAX - 5,
        stored_at: t + 11,
    };
    write_one::<StoredPartRow>(&db, table::STORED_PARTS, &stored).await;

    let q = |t: &str| format!("SELECT * FROM {t}");
    assert_eq!(
        db.query(&q(table::SAMPLES))
            .fetch_all::<SampleRow>()
            .await
            .expect("samples"),
        vec![sample]
    );
    assert_eq!(
        db.query(&q(table::STACKS))
            .fetch_all::<StackRow>()
            .await
            .expect("stacks"),
        vec![stack]
    );
    assert_eq!(
        db.query(&q(table::INGEST_LEDGER))
            .fetch_all::<LedgerRow>()
            .await
            .expect("ledger"),
        vec![ledger]
    );
    assert_eq!(
        db.query(&q(table::TARGET_STATUS))
            .fetch_all::<TargetStatusRow>()
            .await
            .expect("status"),
        vec![status]
    );
    assert_eq!(
        db.query(&q(table::STORED_PARTS))
            .fetch_all::<StoredPartRow>()
            .await
            .expect("stored parts"),
        vec![stored]
    );

    server
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("cleanup");
}

async fn write_one<T: clickhouse::RowWrite>(
    db: &clickhouse::Client,
    table: &str,
    row: &T::Value<'_>,
) {
    let mut insert = db.insert::<T>(table).await.expect("insert");
    insert.write(row).await.expect("write");
    insert.end().await.expect("end");
}

/// The samples table of migration 1 (keyed by the second), as a database
/// created before migration 3 holds it.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
struct OldSample {
    service: &'static str,
    profile_type: &'static str,
    window_start: u32,
    cluster: &'static str,
    namespace: &'static str,
    pod: &'static str,
    container: &'static str,
    node: &'static str,
    target_id: u64,
    stack_id: u64,
    value: i64,
    count: i64,
}

mod migration_3_rebuilds_samples_and_converges_after_an_interruption {
    #[tokio::test]
    async fn on_18_16() {
        super::migration_3_rebuilds_samples_and_converges_after_an_interruption(
            super::Server::stack_18_16(),
        )
        .await
    }

    #[tokio::test]
    async fn on_26_9() {
        super::migration_3_rebuilds_samples_and_converges_after_an_interruption(
            super::Server::chdb_26_9("migration_3"),
        )
        .await
    }
}

/// Upgrading a database created before migration 3: the samples move to the
/// new layout deduplicated (an unmerged copy counts once), the old table is
/// kept as `samples_v1`, and a run interrupted at any step converges. They
/// are copied once, straight into migration 7's layout: one data migration for
/// the operator, not two.
async fn migration_3_rebuilds_samples_and_converges_after_an_interruption(on: Server) {
    on.check_version().await;
    let server = on.client.clone();
    let t = an_hour_ago();
    for interruption in [
        "none",
        "copy_left_behind",
        "between_renames",
        "after_migration_3",
    ] {
        let database = unique_name("javelin_upgrade");
        migrate_up_to(&server, &database, MigrateOptions::default(), 2)
            .await
            .expect("the old schema");
        let db = server.clone().with_database(&database);
        let old = |stack_id, value| OldSample {
            service: "svc",
            profile_type: "cpu",
            window_start: t,
            cluster: "c",
            namespace: "ns",
            pod: "p",
            container: "app",
            node: "n",
            target_id: 7,
            stack_id,
            value,
            count: 1,
        };
        // Two inserts: the second is a redelivered copy of stack 1 (not merged yet).
        for rows in [vec![old(1, 100), old(2, 20)], vec![old(1, 100)]] {
            let mut insert = db.insert::<OldSample>("samples").await.expect("insert");
            for row in &rows {
                insert.write(row).await.expect("write");
            }
            insert.end().await.expect("end");
        }
        match interruption {
            "copy_left_behind" => {
                // A copy that stopped half-way: must be started over, not kept.
                let next = javelin_schema::migrations::MIGRATIONS
                    .iter()
                    .find(|m| m.version == 3)
                    .and_then(|m| m.rebuild())
                    .map(|r| r.table)
                    .expect("migration 3 rebuilds a table");
                db.query(&format!("CREATE TABLE {next}_next AS {next}"))
                    .execute()
                    .await
                    .expect("half-done copy");
                db.query(&format!("INSERT INTO {next}_next SELECT * FROM {next}"))
                    .execute()
                    .await
                    .expect("half-done copy");
            }
            "after_migration_3" => {
                // Stopped after migration 3's bookkeeping row: the table has
                // migration 7's layout already, and the rest must copy nothing.
                migrate(&server, &database, MigrateOptions::default())
                    .await
                    .expect("migrate");
                forget_all_but(&db, &[1, 2, 3]).await;
            }
            "between_renames" => {
                // Run the migration, then undo its last half-step: samples_next not yet renamed.
                migrate(&server, &database, MigrateOptions::default())
                    .await
                    .expect("migrate");
                db.query("RENAME TABLE samples TO samples_next")
                    .execute()
                    .await
                    .expect("undo the second rename");
                forget_all_but(&db, &[1, 2]).await;
            }
            _ => {}
        }
        let report = migrate(&server, &database, MigrateOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{interruption}: {e}"));
        let expected: &[u32] = if interruption == "after_migration_3" {
            &[4, 5, 6, 7, 8]
        } else {
            &[3, 4, 5, 6, 7, 8]
        };
        assert_eq!(report.applied, expected, "{interruption}");
        let (rows, value, windows): (u64, i64, u64) = db
            .query("SELECT count(), sum(value), uniqExact(window_id) FROM samples")
            .fetch_one()
            .await
            .expect("new samples");
        assert_eq!(
            (rows, value, windows),
            (2, 120, 1),
            "{interruption}: deduplicated into the new layout, one window part"
        );
        let named: u64 = db
            .query("SELECT count() FROM stored_parts")
            .fetch_one()
            .await
            .expect("stored parts");
        assert!(
            named >= 1,
            "{interruption}: the copied part is named to readers"
        );
        let retired: u64 = db
            .query("SELECT count() FROM samples_v1")
            .fetch_one()
            .await
            .expect("the old table is kept");
        assert_eq!(retired, 3, "{interruption}");
        let attempts: u64 = db
            .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('insert_attempts', 'samples_next')")
            .fetch_one()
            .await
            .expect("tables");
        assert_eq!(
            attempts, 0,
            "{interruption}: retired and temporary tables are gone"
        );
        // One copy: into migration 7's layout, which then had nothing to do.
        let stack_id_type: String = db
            .query(
                "SELECT type FROM system.columns WHERE database = currentDatabase() \
                 AND table = 'samples' AND name = 'stack_id'",
            )
            .fetch_one()
            .await
            .expect("the layout");
        let app_version: String = db
            .query("SELECT any(app_version) FROM samples")
            .fetch_one()
            .await
            .expect("the copied rows");
        assert_eq!(
            (stack_id_type.as_str(), app_version.as_str()),
            ("LowCardinality(UInt64)", ""),
            "{interruption}: copied into migration 7's layout"
        );
        let second_copy: u64 = db
            .query(&format!(
                "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '{}'",
                table::SAMPLES_V3
            ))
            .fetch_one()
            .await
            .expect("tables");
        assert_eq!(
            second_copy, 0,
            "{interruption}: migration 7 copied nothing (no samples_v3)"
        );
        // A consumer older than migration 3 writes the old columns only: the
        // new table refuses its rows (no reader would ever count them).
        let mut insert = db.insert::<OldSample>("samples").await.expect("insert");
        insert.write(&old(3, 1)).await.expect("write");
        let refused = insert.end().await.expect_err("an old writer is refused");
        assert!(
            refused.to_string().contains("Code: 395"),
            "{interruption}: {refused}"
        );
        server
            .query(&format!("DROP DATABASE {database}"))
            .execute()
            .await
            .expect("cleanup");
    }
}

/// Rewrites the bookkeeping as if only `versions` had been applied (18.16 has
/// no DELETE), the way a run stopped after the last of them leaves it.
async fn forget_all_but(db: &Client, versions: &[u32]) {
    db.query("DROP TABLE schema_migrations")
        .execute()
        .await
        .expect("forget");
    db.query(
        "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime) \
         ENGINE = MergeTree ORDER BY version",
    )
    .execute()
    .await
    .expect("bookkeeping");
    for v in versions {
        db.query("INSERT INTO schema_migrations VALUES (?, 'x', now())")
            .bind(v)
            .execute()
            .await
            .expect("bookkeeping");
    }
}

/// `target_status` before migration 4: a consumer of that version writes these.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
struct OldStatus {
    service: &'static str,
    target_id: u64,
    cluster: &'static str,
    namespace: &'static str,
    pod: &'static str,
    container: &'static str,
    node: &'static str,
    pid: u32,
    state: &'static str,
    recorder: &'static str,
    last_error: &'static str,
    observed_at: u32,
    agent_version: &'static str,
    windows_published: u64,
    spool_dropped_messages: u64,
    dropped_events: u64,
    dropped_stacks: u64,
    truncated_windows: u64,
}

mod migration_4_adds_the_status_counters_and_converges_after_an_interruption {
    #[tokio::test]
    async fn on_18_16() {
        super::migration_4_adds_the_status_counters_and_converges_after_an_interruption(
            super::Server::stack_18_16(),
        )
        .await
    }

    #[tokio::test]
    async fn on_26_9() {
        super::migration_4_adds_the_status_counters_and_converges_after_an_interruption(
            super::Server::chdb_26_9("migration_4"),
        )
        .await
    }
}

/// Upgrading a database from migration 3: the status counters of migration 4
/// are added with 0 for existing rows and for writers that do not know them,
/// and a run interrupted after the first column converges.
async fn migration_4_adds_the_status_counters_and_converges_after_an_interruption(on: Server) {
    on.check_version().await;
    let server = on.client.clone();
    let t = an_hour_ago();
    for interrupted in [false, true] {
        let database = unique_name("javelin_m4");
        migrate_up_to(&server, &database, MigrateOptions::default(), 3)
            .await
            .expect("the schema of migration 3");
        let db = server.clone().with_database(&database);
        let old = |target_id, observed_at| OldStatus {
            service: "svc",
            target_id,
            cluster: "c",
            namespace: "ns",
            pod: "p",
            container: "app",
            node: "n",
            pid: 1,
            state: "profiling",
            recorder: "jfr",
            last_error: "",
            observed_at,
            agent_version: "old",
            windows_published: 7,
            spool_dropped_messages: 0,
            dropped_events: 1,
            dropped_stacks: 2,
            truncated_windows: 3,
        };
        let write_old = |row: OldStatus| {
            let db = db.clone();
            async move {
                let mut insert = db
                    .insert::<OldStatus>(table::TARGET_STATUS)
                    .await
                    .expect("insert");
                insert.write(&row).await.expect("write");
                insert.end().await
            }
        };
        write_old(old(1, t)).await.expect("an old row");
        if interrupted {
            // Stopped after the first ALTER, before the second and the bookkeeping row.
            db.query("ALTER TABLE target_status ADD COLUMN failed_collects UInt64 DEFAULT 0")
                .execute()
                .await
                .expect("half of migration 4");
        }
        let report = migrate(&server, &database, MigrateOptions::default())
            .await
            .unwrap_or_else(|e| panic!("interrupted={interrupted}: {e}"));
        assert_eq!(
            report.applied,
            vec![4, 5, 6, 7, 8],
            "interrupted={interrupted}"
        );
        // A consumer older than migration 4 still writes (the new columns default to 0) …
        write_old(old(2, t + 1))
            .await
            .expect("an old writer keeps working");
        // … and the new row type round-trips with the counters.
        let new = TargetStatusRow {
            service: "svc".into(),
            target_id: 3,
            cluster: "c".into(),
            namespace: "ns".into(),
            pod: "p".into(),
            container: "app".into(),
            node: "n".into(),
            pid: 1,
            state: "over_target_limit".into(),
            recorder: String::new(),
            last_error: String::new(),
            observed_at: t + 2,
            agent_version: "new".into(),
            windows_published: 0,
            spool_dropped_messages: 0,
            dropped_events: 0,
            dropped_stacks: 0,
            truncated_windows: 0,
            failed_collects: 11,
            oversized_messages: 12,
            sampling: String::new(),
        };
        write_one::<TargetStatusRow>(&db, table::TARGET_STATUS, &new).await;
        let rows = db
            .query("SELECT * FROM target_status ORDER BY target_id")
            .fetch_all::<TargetStatusRow>()
            .await
            .expect("rows read back in the new layout");
        let counters: Vec<(u64, u64, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.target_id,
                    r.truncated_windows,
                    r.failed_collects,
                    r.oversized_messages,
                )
            })
            .collect();
        assert_eq!(
            counters,
            vec![(1, 3, 0, 0), (2, 3, 0, 0), (3, 0, 11, 12)],
            "interrupted={interrupted}"
        );
        assert_eq!(rows[2], new);
        server
            .query(&format!("DROP DATABASE {database}"))
            .execute()
            .await
            .expect("cleanup");
    }
}

mod migration_5_adds_the_app_version_and_old_writers_keep_working {
    #[tokio::test]
    async fn on_18_16() {
        super::migration_5_adds_the_app_version_and_old_writers_keep_working(
            super::Server::stack_18_16(),
        )
        .await
    }

    #[tokio::test]
    async fn on_26_9() {
        super::migration_5_adds_the_app_version_and_old_writers_keep_working(
            super::Server::chdb_26_9("migration_5"),
        )
        .await
    }
}

/// `samples` as a consumer older than migration 5 writes them (it names its
/// columns, so the new one is left to its default).
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
struct SampleBefore5 {
    service: &'static str,
    profile_type: &'static str,
    window_start: u32,
    cluster: &'static str,
    namespace: &'static str,
    pod: &'static str,
    container: &'static str,
    node: &'static str,
    target_id: u64,
    window_id: u64,
    stack_id: u64,
    value: i64,
    count: i64,
    insert_id: u64,
}

async fn migration_5_adds_the_app_version_and_old_writers_keep_working(on: Server) {
    on.check_version().await;
    let server = on.client.clone();
    let t = an_hour_ago();
    let database = unique_name("javelin_m5");
    migrate_up_to(&server, &database, MigrateOptions::default(), 4)
        .await
        .expect("the schema of migration 4");
    let db = server.clone().with_database(&database);
    let old = |target_id| SampleBefore5 {
        service: "svc",
        profile_type: "cpu",
        window_start: t,
        cluster: "c",
        namespace: "ns",
        pod: "p",
        container: "app",
        node: "n",
        target_id,
        window_id: target_id,
        stack_id: 1,
        value: 10,
        count: 1,
        insert_id: 1,
    };
    write_one::<SampleBefore5>(&db, table::SAMPLES, &old(1)).await;
    let report = migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migration 5");
    assert_eq!(report.applied, vec![5, 6, 7, 8]);
    write_one::<SampleBefore5>(&db, table::SAMPLES, &old(2)).await;
    let new = SampleRow {
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: t,
        cluster: "c".into(),
        namespace: "ns".into(),
        pod: "p".into(),
        container: "app".into(),
        node: "n".into(),
        target_id: 3,
        window_id: 3,
        stack_id: 1,
        value: 10,
        count: 1,
        insert_id: 1,
        app_version: "2.0.1".into(),
    };
    write_one::<SampleRowRef>(&db, table::SAMPLES, &new.borrowed()).await;
    let rows = db
        .query("SELECT * FROM samples ORDER BY target_id")
        .fetch_all::<SampleRow>()
        .await
        .expect("rows read back in the new layout");
    let versions: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r.target_id, r.app_version.as_str()))
        .collect();
    assert_eq!(versions, vec![(1, ""), (2, ""), (3, "2.0.1")]);
    assert_eq!(rows[2], new);
    let again = migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migrate again");
    assert!(again.applied.is_empty(), "{:?}", again.applied);
    server
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("cleanup");
}

mod migration_7_keeps_every_sample_in_the_new_layout_and_converges {
    #[tokio::test]
    async fn on_18_16() {
        super::migration_7_keeps_every_sample_in_the_new_layout_and_converges(
            super::Server::stack_18_16(),
        )
        .await
    }

    #[tokio::test]
    async fn on_26_9() {
        super::migration_7_keeps_every_sample_in_the_new_layout_and_converges(
            super::Server::chdb_26_9("migration_7"),
        )
        .await
    }
}

/// Upgrading a database of migration 6: every row moves to the new column
/// types and codecs as it is (every write attempt's copy, recorded or not: readers choose
/// through `stored_parts`, whose pairs must still name them), the old table is
/// kept as `samples_v3`, a run interrupted at any step converges, and the
/// consumer's rows go on being accepted.
async fn migration_7_keeps_every_sample_in_the_new_layout_and_converges(on: Server) {
    on.check_version().await;
    let server = on.client.clone();
    // Windows on both sides of an hour boundary, at odd seconds.
    let hour = an_hour_ago() / 3600 * 3600;
    let sample =
        |target_id: u64, window_start: u32, stack_id: u64, value: i64, insert_id| SampleRow {
            service: "svc".into(),
            profile_type: "cpu".into(),
            window_start,
            cluster: "c".into(),
            namespace: "ns".into(),
            pod: format!("pod-{target_id}"),
            container: "app".into(),
            node: "n".into(),
            target_id,
            window_id: u64::from(window_start) * 31 + target_id,
            stack_id,
            value,
            count: value / 10,
            insert_id,
            app_version: if target_id == 1 { "1.4.2" } else { "" }.into(),
        };
    for interruption in ["none", "copy_left_behind", "between_renames"] {
        let database = unique_name("javelin_upgrade7");
        migrate_up_to(&server, &database, MigrateOptions::default(), 6)
            .await
            .expect("the schema of migration 6");
        let db = server.clone().with_database(&database);
        // Three inserts, as three write attempts land: target 1's window after
        // the hour boundary twice (ids 1 and 2), and a copy nobody recorded.
        let first = vec![
            sample(1, hour - 23, u64::MAX - 5, 120, 1),
            sample(1, hour + 37, 9, 70, 1),
            sample(1, hour + 37, u64::MAX - 5, 30, 1),
            sample(2, hour + 37, 9, 10, 1),
        ];
        let again = vec![
            sample(1, hour + 37, 9, 70, 2),
            sample(1, hour + 37, u64::MAX - 5, 30, 2),
        ];
        let unrecorded = vec![sample(2, hour + 37, 9, 10, 5)];
        for rows in [&first, &again, &unrecorded] {
            let mut insert = db
                .insert::<SampleRow>(table::SAMPLES)
                .await
                .expect("insert");
            for row in rows.iter() {
                insert.write(row).await.expect("write");
            }
            insert.end().await.expect("end");
        }
        let read_all = |table: &'static str| {
            let db = db.clone();
            async move {
                let mut rows: Vec<SampleRow> = db
                    .query(&format!("SELECT * FROM {table}"))
                    .fetch_all()
                    .await
                    .unwrap_or_else(|e| panic!("reading {table}: {e}"));
                rows.sort_by_key(|r| (r.window_id, r.insert_id, r.stack_id));
                rows
            }
        };
        let before = read_all(table::SAMPLES).await;
        assert_eq!(before.len(), 7);
        match interruption {
            "copy_left_behind" => {
                // A copy that stopped half-way: started over, not kept.
                db.query("CREATE TABLE samples_next AS samples")
                    .execute()
                    .await
                    .expect("half-done copy");
                db.query("INSERT INTO samples_next SELECT * FROM samples WHERE insert_id = 1")
                    .execute()
                    .await
                    .expect("half-done copy");
            }
            "between_renames" => {
                // The migration ran; undo its last half-step and its bookkeeping.
                migrate(&server, &database, MigrateOptions::default())
                    .await
                    .expect("migrate");
                db.query("RENAME TABLE samples TO samples_next")
                    .execute()
                    .await
                    .expect("undo the second rename");
                db.query("ALTER TABLE schema_migrations DELETE WHERE version = 7")
                    .execute()
                    .await
                    .expect("forget");
                wait_until_forgotten(&db, 7).await;
            }
            _ => {}
        }
        let report = migrate(&server, &database, MigrateOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{interruption}: {e}"));
        // "between_renames" ran everything once, then forgot migration 7 only.
        let expected: &[u32] = if interruption == "between_renames" {
            &[7]
        } else {
            &[7, 8]
        };
        assert_eq!(report.applied, expected, "{interruption}");
        assert_eq!(
            read_all(table::SAMPLES).await,
            before,
            "{interruption}: every copy, as it was"
        );
        assert_eq!(
            read_all(table::SAMPLES_V3).await,
            before,
            "{interruption}: the old table is kept"
        );
        let create: String = db
            .query("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'samples'")
            .fetch_one()
            .await
            .expect("the new table");
        let types: Vec<(String, String)> = db
            .query("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'samples' AND name IN ('stack_id', 'value', 'count') ORDER BY name")
            .fetch_all()
            .await
            .expect("types");
        let modern = on.version >= (20, 1);
        let count = if modern {
            "Int64"
        } else {
            "LowCardinality(Int64)"
        };
        assert_eq!(
            types,
            [
                ("count".to_string(), count.to_string()),
                ("stack_id".to_string(), "LowCardinality(UInt64)".to_string()),
                ("value".to_string(), "Int64".to_string()),
            ],
            "{interruption}"
        );
        // Codecs where the server has them; where it has none, the counts
        // are dictionaries instead.
        assert_eq!(
            create.contains("CODEC("),
            modern,
            "{interruption}: {create}"
        );
        // Dictionaries of numbers are experimental on 18.16: merged into one
        // part (18.16 has no CHECK TABLE for MergeTree), it reads back the same.
        db.query("OPTIMIZE TABLE samples FINAL")
            .execute()
            .await
            .expect("merge");
        assert_eq!(
            read_all(table::SAMPLES).await,
            before,
            "{interruption}: merged"
        );
        let left: u64 = db
            .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'samples_next'")
            .fetch_one()
            .await
            .expect("tables");
        assert_eq!(left, 0, "{interruption}: the copy is renamed into place");
        // The consumer's rows (unchanged columns) are accepted; rows without
        // a window id still are not.
        write_one::<SampleRow>(&db, table::SAMPLES, &sample(3, hour + 41, 4, 10, 9)).await;
        let mut insert = db
            .insert::<SampleRow>(table::SAMPLES)
            .await
            .expect("insert");
        insert
            .write(&SampleRow {
                window_id: 0,
                insert_id: 0,
                ..sample(3, hour + 41, 4, 10, 9)
            })
            .await
            .expect("write");
        let refused = insert.end().await.expect_err("no window id");
        assert!(
            refused.to_string().contains("Code: 395"),
            "{interruption}: {refused}"
        );
        let again = migrate(&server, &database, MigrateOptions::default())
            .await
            .expect("again");
        assert!(again.applied.is_empty(), "{interruption}");
        server
            .query(&format!("DROP DATABASE {database}"))
            .execute()
            .await
            .expect("cleanup");
    }
}

/// Waits until the bookkeeping row of `version` is gone (a mutation on 18.16
/// runs in the background).
async fn wait_until_forgotten(db: &clickhouse::Client, version: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: u64 = db
            .query("SELECT count() FROM schema_migrations WHERE version = ?")
            .bind(version)
            .fetch_one()
            .await
            .expect("bookkeeping");
        if n == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bookkeeping row of migration {version} is still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
