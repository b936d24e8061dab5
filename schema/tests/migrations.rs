//! Migrations against the real ClickHouse of the local stack (`dev/stack up`).

use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::rows::{
    LedgerRow, SampleRow, SampleRowRef, StackRow, StackRowRef, TargetStatusRow, table,
};
use javelin_schema::testkit::{clickhouse_client, unique_name};

#[tokio::test]
async fn migrate_twice_is_a_no_op_and_rows_round_trip() {
    let server = clickhouse_client();
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
        vec![1, 2],
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
    assert_eq!(first.applied, vec![1, 2]);
    assert!(first.already_applied.is_empty());

    let second = migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("second run");
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(second.already_applied, vec![1, 2]);

    let db = server.clone().with_database(&database);
    let recorded: u64 = db
        .query("SELECT count() FROM schema_migrations")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(recorded, 2, "one bookkeeping row per migration");

    // Column order is the contract of plain RowBinary: write and read each row type.
    let sample = SampleRow {
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: 1_764_000_000,
        cluster: "c".into(),
        namespace: "ns".into(),
        pod: "pod-1".into(),
        container: "app".into(),
        node: "n1".into(),
        target_id: 7,
        stack_id: u64::MAX - 1,
        value: 123_456_789,
        count: 12,
    };
    let stack = StackRow {
        service: "svc".into(),
        stack_id: u64::MAX - 1,
        frames: vec!["a.B.c".into(), "d.E.f".into()],
        lines: vec![0, 12],
        frame_types: vec![1, 3],
        last_seen: 1_764_000_000,
    };
    let ledger = LedgerRow {
        window_id: 99,
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: 1_764_000_000,
        window_start_ms: 1_764_000_000_123,
        window_end_ms: 1_764_000_010_123,
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
        ingested_at: 1_764_000_011,
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
        observed_at: 1_764_000_011,
        agent_version: "0.1.0".into(),
        windows_published: 12,
        spool_dropped_messages: 1,
        dropped_events: 2,
        dropped_stacks: 3,
        truncated_windows: 4,
    };
    // The consumer writes the borrowed forms; they must land as the owned rows read back.
    write_one::<SampleRowRef>(&db, table::SAMPLES, &sample.borrowed()).await;
    write_one::<StackRowRef>(&db, table::STACKS, &stack.borrowed()).await;
    write_one::<LedgerRow>(&db, table::INGEST_LEDGER, &ledger).await;
    write_one::<TargetStatusRow>(&db, table::TARGET_STATUS, &status).await;

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
