//! Cluster mode's schema on a real cluster of this machine (Debian's ZooKeeper
//! and two ClickHouse 18.16 nodes, 2 shards × 1 replica, `dev/stack
//! cluster-up`): the migrations build a Replicated local table and a
//! Distributed table per table on every node, any node is current the moment
//! `migrate` returns, a second run changes nothing, and the shards still refuse
//! rows no reader would count. The stream through it, with a node killed, is
//! the `cluster-node-kill` scenario (`scenarios.rs`).

mod support;

use clickhouse::Row;
use javelin_loadtest::cluster::{CLUSTER, PrivateCluster};
use javelin_schema::clickhouse_error::{ErrorClass, classify};
use javelin_schema::migrations::{
    MIGRATIONS, MigrateOptions, MigrationError, migrate, migrate_up_to, pending,
};
use javelin_schema::rows::{SampleRow, table};
use javelin_schema::testkit::unique_name;
use javelin_schema::topology::Topology;
use serde::Deserialize;

fn node(url: String) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
}

#[derive(Debug, Row, Deserialize, PartialEq, Eq)]
struct TableEngine {
    name: String,
    engine: String,
}

/// What a migrated cluster database holds on every node.
fn expected_tables() -> Vec<TableEngine> {
    let t = |name: &str, engine: &str| TableEngine {
        name: name.to_string(),
        engine: engine.to_string(),
    };
    let mut tables = vec![
        t(table::INGEST_LEDGER, "Distributed"),
        t("ingest_ledger_local", "ReplicatedReplacingMergeTree"),
        t(table::SAMPLES, "Distributed"),
        t("samples_local", "ReplicatedMergeTree"),
        // The pre-migration-3 layout, renamed on every node. Migration 3
        // copies straight into migration 7's layout when both are pending
        // (one copy), so a new database has no `samples_v3_local`.
        t("samples_v1_local", "ReplicatedReplacingMergeTree"),
        t(table::ROLLUP_BUILDS, "Distributed"),
        t("rollup_builds_local", "ReplicatedMergeTree"),
        t(table::SAMPLES_ROLLUP, "Distributed"),
        t("samples_rollup_local", "ReplicatedMergeTree"),
        t(table::SCHEMA_MIGRATIONS, "ReplicatedMergeTree"),
        t(table::STACKS, "Distributed"),
        t("stacks_local", "ReplicatedReplacingMergeTree"),
        t(table::STORED_PARTS, "Distributed"),
        t("stored_parts_local", "ReplicatedMergeTree"),
        t(table::TARGET_STATUS, "Distributed"),
        t("target_status_local", "ReplicatedReplacingMergeTree"),
    ];
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    tables
}

#[tokio::test]
async fn cluster_migrations_build_table_pairs_on_every_node_and_are_idempotent() {
    let name = unique_name("cluster_schema");
    let cluster = PrivateCluster::start(&name).expect("a private cluster");
    let database = unique_name("javelin_cluster");
    let options = MigrateOptions {
        topology: Topology::Cluster(CLUSTER.into()),
        ..MigrateOptions::default()
    };
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();

    let first = migrate(&node(cluster.url()), &database, options.clone())
        .await
        .expect("migrate through node 1");
    assert_eq!(first.applied, all);

    for url in cluster.urls() {
        let db = node(url.clone()).with_database(&database);
        // No wait: `migrate` returns once every shard has the bookkeeping.
        assert_eq!(
            pending(&db).await.expect("pending"),
            Vec::<u32>::new(),
            "node {url} is current when migrate returns"
        );
        let tables: Vec<TableEngine> = db
            .query("SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name")
            .fetch_all()
            .await
            .expect("tables");
        assert_eq!(tables, expected_tables(), "node {url}");
        // The writer check lives on the shards; a Distributed table would pass
        // it on as an ordinary column, which the shards refuse.
        let check = |table: &'static str| {
            let db = db.clone();
            async move {
                db.query("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = 'writer_check'")
                    .bind(table)
                    .fetch_one::<u64>()
                    .await
                    .expect("columns")
            }
        };
        assert_eq!(check("samples_local").await, 1, "node {url}");
        assert_eq!(check(table::SAMPLES).await, 0, "node {url}");
        // Migration 4's columns reached both halves of the pair.
        let added: u64 = db
            .query("SELECT count() FROM system.columns WHERE database = currentDatabase() AND name IN ('failed_collects', 'oversized_messages')")
            .fetch_one()
            .await
            .expect("columns");
        assert_eq!(
            added, 4,
            "target_status and target_status_local, node {url}"
        );
    }

    let second = migrate(&node(cluster.urls()[1].clone()), &database, options.clone())
        .await
        .expect("migrate again through node 2");
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.already_applied, all);

    // The other layout is refused both ways before anything runs: without the
    // flag a writer would insert asynchronously into the Distributed tables.
    let refused = migrate(&node(cluster.url()), &database, MigrateOptions::default())
        .await
        .expect_err("a cluster database without --clickhouse-cluster");
    assert!(
        matches!(refused, MigrationError::LayoutMismatch { .. })
            && refused
                .to_string()
                .contains("set --clickhouse-cluster javelin"),
        "{refused}"
    );
    let single = unique_name("javelin_single");
    migrate(&node(cluster.url()), &single, MigrateOptions::default())
        .await
        .expect("a single-server database on node 1");
    let refused = migrate(&node(cluster.url()), &single, options)
        .await
        .expect_err("a single-server database with --clickhouse-cluster");
    assert!(
        matches!(refused, MigrationError::LayoutMismatch { .. }),
        "{refused}"
    );

    // A row no reader would count (no window id, no insert id) is refused by
    // the shard it is routed to, through the Distributed table, as data.
    let features = javelin_schema::migrations::ServerFeatures::detect(&node(cluster.url()))
        .await
        .expect("version");
    let writer = Topology::Cluster(CLUSTER.into())
        .writer(node(cluster.url()).with_database(&database), features);
    let refused = insert_sample(&writer, 0, 0)
        .await
        .expect_err("the shard refuses the row");
    assert_eq!(classify(&refused), ErrorClass::Data, "{refused}");
    assert!(refused.to_string().contains("Code: 395"), "{refused}");

    // Stored means stored on the shard: with a shard down the writer's INSERT
    // fails as an outage (the consumer keeps the batch and commits nothing)
    // instead of being queued on node 1 and acknowledged.
    cluster.kill_node(2).expect("kill node 2");
    let refused = insert_sample(&writer, 11, 22)
        .await
        .expect_err("no INSERT is acknowledged while a shard is down");
    assert_eq!(classify(&refused), ErrorClass::Unavailable, "{refused}");
    cluster.start_node(2).expect("start node 2");
    insert_sample(&writer, 11, 22)
        .await
        .expect("stored once the shard is back");
    let stored: u64 = writer
        .query("SELECT count() FROM samples WHERE window_id = 11")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(stored, 1, "nothing was queued during the outage");
}

/// One sample row through the Distributed `samples` table.
async fn insert_sample(
    writer: &clickhouse::Client,
    window_id: u64,
    insert_id: u64,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = writer.insert::<SampleRow>(table::SAMPLES).await?;
    insert
        .write(&SampleRow {
            service: "svc".into(),
            profile_type: "cpu".into(),
            window_start: 1_000_000_000,
            cluster: String::new(),
            namespace: String::new(),
            pod: "p".into(),
            container: String::new(),
            node: String::new(),
            target_id: 7,
            window_id,
            stack_id: 1,
            value: 5,
            count: 1,
            insert_id,
            app_version: String::new(),
        })
        .await?;
    insert.end().await
}

/// Migration 7 on a cluster holding rows: every shard's rows move to the new
/// layout as they are (the old local tables kept as `samples_v3_local`), and
/// the Distributed `samples` follows the local table's new types.
#[tokio::test]
async fn cluster_migration_7_keeps_every_row_on_every_shard() {
    let name = unique_name("cluster_m7");
    let cluster = PrivateCluster::start(&name).expect("a private cluster");
    let database = unique_name("javelin_cluster_m7");
    let options = MigrateOptions {
        topology: Topology::Cluster(CLUSTER.into()),
        ..MigrateOptions::default()
    };
    migrate_up_to(&node(cluster.url()), &database, options.clone(), 6)
        .await
        .expect("the schema of migration 6");
    let features = javelin_schema::migrations::ServerFeatures::detect(&node(cluster.url()))
        .await
        .expect("version");
    let writer = Topology::Cluster(CLUSTER.into())
        .writer(node(cluster.url()).with_database(&database), features);
    // 40 targets × 3 stacks, sharded by target: both shards get rows.
    let mut insert = writer
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut expected = 0;
    for target_id in 1..=40u64 {
        for stack_id in 1..=3u64 {
            let value = i64::try_from(target_id * 10 + stack_id).expect("small");
            expected += value;
            insert
                .write(&SampleRow {
                    service: "svc".into(),
                    profile_type: "cpu".into(),
                    window_start: 1_000_000_017,
                    cluster: String::new(),
                    namespace: String::new(),
                    pod: format!("pod-{target_id}"),
                    container: String::new(),
                    node: String::new(),
                    target_id,
                    window_id: target_id * 100,
                    stack_id,
                    value,
                    count: 1,
                    insert_id: 1,
                    app_version: String::new(),
                })
                .await
                .expect("row");
        }
    }
    insert.end().await.expect("stored on the shards");
    let count = |url: String, table: &'static str| {
        let db = node(url).with_database(&database);
        async move {
            db.query(&format!("SELECT count() FROM {table}"))
                .fetch_one::<u64>()
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"))
        }
    };
    let mut before = Vec::new();
    for url in cluster.urls() {
        before.push(count(url.clone(), "samples_local").await);
    }
    assert!(
        before.iter().all(|&n| n > 0),
        "both shards hold rows: {before:?}"
    );
    assert_eq!(before.iter().sum::<u64>(), 120);

    let report = migrate(&node(cluster.urls()[1].clone()), &database, options)
        .await
        .expect("migration 7 through node 2");
    assert_eq!(report.applied, vec![7, 8]);
    for (url, rows) in cluster.urls().into_iter().zip(before) {
        assert_eq!(count(url.clone(), "samples_local").await, rows, "{url}");
        assert_eq!(count(url.clone(), "samples_v3_local").await, rows, "{url}");
        let types: Vec<String> = node(url.clone())
            .with_database(&database)
            .query("SELECT type FROM system.columns WHERE database = currentDatabase() AND table IN ('samples', 'samples_local') AND name = 'stack_id'")
            .fetch_all()
            .await
            .expect("types");
        assert_eq!(
            types,
            ["LowCardinality(UInt64)", "LowCardinality(UInt64)"],
            "{url}: the local table and the Distributed one"
        );
    }
    let total: i64 = writer
        .query("SELECT sum(value) FROM samples")
        .fetch_one()
        .await
        .expect("sum");
    assert_eq!(
        total, expected,
        "every row, once, through the Distributed table"
    );
}

/// Rollups on a cluster: rows of 40 targets (both shards) over three hours go
/// in through the Distributed tables, the consumer's builder rolls the closed
/// hours up through them (the hours' rows and builds land on the shard of
/// their hour, not of their targets), and the query API answers the flamegraph
/// and top table from rollups exactly as it does from raw windows.
#[tokio::test]
async fn rollups_on_a_cluster_answer_as_raw_windows() {
    use javelin_consumer::rollup::{BuildIds, RollupOptions, pass};
    use javelin_loadtest::query_view::QueryView;
    use javelin_schema::rows::StoredPartRow;

    let name = unique_name("cluster_rollup");
    let cluster = PrivateCluster::start(&name).expect("a private cluster");
    let database = unique_name("javelin_cluster_rollup");
    let topology = Topology::Cluster(CLUSTER.into());
    let options = MigrateOptions {
        topology: topology.clone(),
        ..MigrateOptions::default()
    };
    migrate(&node(cluster.url()), &database, options)
        .await
        .expect("migrate");
    let features = javelin_schema::migrations::ServerFeatures::detect(&node(cluster.url()))
        .await
        .expect("version");
    let client =
        topology.reader(topology.writer(node(cluster.url()).with_database(&database), features));
    let now = u32::try_from(javelin_loadtest::now_ms() / 1000).expect("now");
    let base = now / 3600 * 3600 - 5 * 3600;
    let mut samples = client
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stored = client
        .insert::<StoredPartRow>(table::STORED_PARTS)
        .await
        .expect("insert");
    let mut expected = 0;
    for target_id in 1..=40u64 {
        // One window per target every 50 min from 13 s past `base`.
        for w in 0..4u32 {
            let window_start = base + 13 + w * 3000;
            let window_id = target_id * 1000 + u64::from(w);
            for stack_id in 1..=3u64 {
                let value = i64::try_from(target_id * 10 + stack_id).expect("small");
                expected += value;
                samples
                    .write(&SampleRow {
                        service: "svc".into(),
                        profile_type: "cpu".into(),
                        window_start,
                        cluster: String::new(),
                        namespace: String::new(),
                        pod: format!("pod-{target_id}"),
                        container: String::new(),
                        node: String::new(),
                        target_id,
                        window_id,
                        stack_id,
                        value,
                        count: 1,
                        insert_id: 1,
                        app_version: String::new(),
                    })
                    .await
                    .expect("row");
            }
            stored
                .write(&StoredPartRow {
                    service: "svc".into(),
                    profile_type: "cpu".into(),
                    window_start,
                    target_id,
                    window_id,
                    insert_id: 1,
                    stored_at: window_start + 60,
                })
                .await
                .expect("stored part");
        }
    }
    samples.end().await.expect("samples");
    stored.end().await.expect("stored parts");

    let rollups = RollupOptions {
        every: std::time::Duration::from_secs(60),
        grace: std::time::Duration::ZERO,
        max_builds: 10,
        retention_days: 7,
    };
    let report = pass(&client, &rollups, now, &mut BuildIds::default())
        .await
        .expect("a pass through the Distributed tables");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        report.built.len(),
        3,
        "the three hours with windows: {report:?}"
    );

    let binary = support::bin("javelin-query");
    let cluster_flag = ["--clickhouse-cluster".to_string(), CLUSTER.to_string()];
    let rolled =
        QueryView::start(&binary, &cluster.url(), &database, &cluster_flag).expect("query API");
    let raw_flags = [
        cluster_flag.to_vec(),
        vec!["--read-rollups".into(), "false".into()],
    ]
    .concat();
    let raw = QueryView::start(&binary, &cluster.url(), &database, &raw_flags).expect("query API");
    // From 20 min before `base`'s hour to 10 min after the third: the three
    // whole hours from rollups, the edges raw.
    let (from, to) = (
        i64::from(base - 1200) * 1000,
        i64::from(base + 3 * 3600 + 600) * 1000,
    );
    let rolled_totals = rolled.totals("svc", "cpu", from, to).await.expect("totals");
    let raw_totals = raw.totals("svc", "cpu", from, to).await.expect("totals");
    assert_eq!(rolled_totals, raw_totals);
    assert_eq!(rolled_totals.flamegraph, expected);
    let http = reqwest::Client::new();
    let fg: serde_json::Value = http
        .get(format!(
            "{}/api/v1/flamegraph?service=svc&type=cpu&from={from}&to={to}",
            rolled.base_url()
        ))
        .send()
        .await
        .expect("flamegraph")
        .json()
        .await
        .expect("json");
    assert_eq!(
        fg["metadata"]["resolution"]["rollup_buckets"], 3,
        "answered from the rollups: {}",
        fg["metadata"]
    );
}
