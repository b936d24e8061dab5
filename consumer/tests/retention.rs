//! Retention on the real ClickHouse of the local stack (18.16, no TTL): day
//! partitions older than the retention are dropped, newer ones are kept.

use javelin_consumer::retention::prune;
use javelin_schema::migrations::{MigrateOptions, ServerFeatures, migrate};
use javelin_schema::testkit::{clickhouse_client, unique_name};
use javelin_schema::topology::Topology;

#[tokio::test]
async fn old_day_partitions_are_dropped_and_recent_ones_kept() {
    let server = clickhouse_client();
    let database = unique_name("javelin_retention");
    migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = server.clone().with_database(&database);
    if ServerFeatures::detect(&db).await.expect("version").ttl {
        eprintln!("server has TTL: retention is the TTL's job; nothing to prune");
        return;
    }
    for (age_days, stack) in [(10, 1u64), (8, 2), (3, 3), (0, 4)] {
        db.query(
            "INSERT INTO samples (service, profile_type, window_start, target_id, window_id, stack_id, value, count, insert_id)
             SELECT 'svc', 'cpu', now() - ? * 86400, 1, ?, ?, 5, 1, 1",
        )
        .bind(age_days)
        .bind(stack)
        .bind(stack)
        .execute()
        .await
        .expect("insert");
    }
    let dropped = prune(&db, &database, &Topology::SingleNode, 7)
        .await
        .expect("prune");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(dropped.iter().all(|(table, _)| table == "samples"));
    let left: Vec<u64> = db
        .query("SELECT stack_id FROM samples ORDER BY stack_id")
        .fetch_all()
        .await
        .expect("select");
    assert_eq!(left, [3, 4]);
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
