//! Retention on both servers Javelin supports at either end: on Debian's
//! ClickHouse 18.16 of the local stack (no TTL) the consumer's janitor drops
//! day partitions older than the retention; on a current 26.9 (chdb, of the
//! test's own) the tables' TTL deletes the rows and the janitor does nothing.

use std::time::Duration;

use clickhouse::Client;
use javelin_consumer::retention::prune;
use javelin_schema::migrations::{MigrateOptions, ServerFeatures, migrate};
use javelin_schema::testkit::chdb::ChdbServer;
use javelin_schema::testkit::{clickhouse_client, unique_name, wait_for};
use javelin_schema::topology::Topology;

/// Rows by age in days; each row's id (stack_id, window_id) says which.
const AGES: [(u32, u64); 4] = [(10, 1), (8, 2), (3, 3), (0, 4)];

/// Inserts one `samples` row per age in [`AGES`], `window_start` that old.
async fn insert_samples(db: &Client) {
    for (age_days, id) in AGES {
        db.query(
            "INSERT INTO samples (service, profile_type, window_start, target_id, window_id, stack_id, value, count, insert_id)
             SELECT 'svc', 'cpu', now() - ? * 86400, 1, ?, ?, 5, 1, 1",
        )
        .bind(age_days)
        .bind(id)
        .bind(id)
        .execute()
        .await
        .expect("insert samples");
    }
}

/// The ids left in `table`'s `column`, ascending.
async fn ids(db: &Client, table: &str, column: &str) -> Vec<u64> {
    db.query(&format!("SELECT {column} FROM {table} ORDER BY {column}"))
        .fetch_all()
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e}"))
}

#[tokio::test]
async fn janitor_drops_old_day_partitions_on_18_16() {
    let server = clickhouse_client();
    let database = unique_name("javelin_retention");
    migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = server.clone().with_database(&database);
    let features = ServerFeatures::detect(&db).await.expect("version");
    assert_eq!(
        (features.version, features.ttl),
        ((18, 16), false),
        "the stack's ClickHouse is 18.16, without TTL: the janitor's case"
    );
    insert_samples(&db).await;
    let dropped = prune(&db, &database, &Topology::SingleNode, 7)
        .await
        .expect("prune");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(dropped.iter().all(|(table, _)| table == "samples"));
    assert_eq!(ids(&db, "samples", "stack_id").await, [3, 4]);
    assert!(
        prune(&db, &database, &Topology::SingleNode, 7)
            .await
            .expect("second pass")
            .is_empty(),
        "idempotent"
    );
    server
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn ttl_deletes_old_rows_on_26_9() {
    let chdb = ChdbServer::start(&unique_name("retention_ttl")).expect("chdb-server starts");
    let server = chdb.client();
    let database = "javelin_retention";
    migrate(&server, database, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = server.with_database(database);
    let features = ServerFeatures::detect(&db).await.expect("version");
    assert_eq!(
        (features.version, features.ttl),
        ((26, 9), true),
        "chdb-core is ClickHouse 26.9, with TTL"
    );
    insert_samples(&db).await;
    // Two more tables, each with its own TTL column.
    for (age_days, id) in AGES {
        db.query(
            "INSERT INTO stacks (service, stack_id, frames, lines, frame_types, last_seen)
             SELECT 'svc', ?, ['a.B.c'], [1], [1], now() - ? * 86400",
        )
        .bind(id)
        .bind(age_days)
        .execute()
        .await
        .expect("insert stacks");
        db.query(
            "INSERT INTO ingest_ledger (window_id, service, profile_type, window_start, status, ingested_at)
             SELECT ?, 'svc', 'cpu', now() - ? * 86400, 'ok', now()",
        )
        .bind(id)
        .bind(age_days)
        .execute()
        .await
        .expect("insert ledger");
    }
    assert_eq!(
        prune(&db, database, &Topology::SingleNode, 7)
            .await
            .expect("prune"),
        [],
        "with TTL, retention is the server's job: the janitor drops nothing"
    );
    let tables = [
        ("samples", "stack_id"),
        ("stacks", "stack_id"),
        ("ingest_ledger", "window_id"),
    ];
    let expired: Vec<u64> = AGES
        .iter()
        .filter(|(age_days, _)| *age_days > 7)
        .map(|(_, id)| *id)
        .collect();
    wait_for(
        "rows older than 7 days to expire",
        Duration::from_secs(60),
        || {
            let (db, expired) = (db.clone(), expired.clone());
            async move {
                for (table, column) in tables {
                    // ClickHouse deletes expired rows when it writes a part and
                    // in TTL merges, which it schedules on a timer (hours by
                    // default); OPTIMIZE … FINAL runs that merge now.
                    db.query(&format!("OPTIMIZE TABLE {table} FINAL"))
                        .execute()
                        .await
                        .unwrap_or_else(|e| panic!("optimizing {table}: {e}"));
                    let left = ids(&db, table, column).await;
                    if left.iter().any(|id| expired.contains(id)) {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    for (table, column) in tables {
        assert_eq!(
            ids(&db, table, column).await,
            [3, 4],
            "{table}: the rows 3 and 0 days old remain"
        );
    }
}
