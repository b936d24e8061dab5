//! Retention on servers without table TTL (Debian's ClickHouse 18.16): every
//! table is partitioned by day, and partitions older than the retention are
//! dropped. Newer servers enforce the same retention with the TTL the
//! migrations declare, and this janitor leaves them alone. On a cluster the
//! partitions live in each node's local tables: they are listed on every
//! shard (`cluster(…)`) and dropped `ON CLUSTER`.

use std::time::Duration;

use clickhouse::Client;
use javelin_schema::migrations::{MigrationError, ServerFeatures};
use javelin_schema::rows::table;
use javelin_schema::topology::Topology;
use serde::Deserialize;

/// Tables the janitor prunes (all partitioned by `toDate(...)`).
pub const TABLES: [&str; 9] = [
    table::SAMPLES,
    table::STORED_PARTS,
    table::STACKS,
    table::INGEST_LEDGER,
    table::TARGET_STATUS,
    table::SAMPLES_RETIRED,
    table::SAMPLES_V3,
    table::SAMPLES_ROLLUP,
    table::ROLLUP_BUILDS,
];

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Partition {
    partition: String,
}

/// Drops day partitions older than `retention_days` from every table; returns
/// what it dropped as (table, day). Does nothing where the server has TTL.
pub async fn prune(
    db: &Client,
    database: &str,
    topology: &Topology,
    retention_days: u32,
) -> Result<Vec<(String, String)>, MigrationError> {
    if ServerFeatures::detect(db).await?.ttl {
        return Ok(Vec::new());
    }
    let cutoff: String = db
        .query("SELECT toString(today() - ?)")
        .bind(retention_days)
        .fetch_one()
        .await?;
    let mut dropped = Vec::new();
    // Names are validated identifiers (database, cluster) or constants.
    let (parts, on_cluster) = match topology.cluster() {
        None => ("system.parts".to_string(), String::new()),
        Some(cluster) => (
            format!("cluster('{cluster}', system, parts)"),
            format!(" ON CLUSTER {cluster}"),
        ),
    };
    for table in TABLES {
        let local = topology.local_table(table);
        let partitions = db
            .query(&format!(
                "SELECT DISTINCT partition FROM {parts} WHERE database = ? AND table = ? AND active"
            ))
            .bind(database)
            .bind(&local)
            .fetch_all::<Partition>()
            .await?;
        for Partition { partition } in partitions {
            // Day partitions read `YYYY-MM-DD`; ISO dates compare as strings.
            let is_day = partition.len() == 10
                && partition.as_bytes()[4] == b'-'
                && partition.as_bytes()[7] == b'-';
            if is_day && partition < cutoff {
                db.query(&format!(
                    "ALTER TABLE {database}.{local}{on_cluster} DROP PARTITION ?"
                ))
                .bind(&partition)
                .execute()
                .await?;
                tracing::info!(table, day = %partition, "retention: dropped partition");
                dropped.push((table.to_string(), partition));
            }
        }
    }
    Ok(dropped)
}

/// Runs [`prune`] now and then every `every`, logging failures.
pub async fn run(
    db: Client,
    database: String,
    topology: Topology,
    retention_days: u32,
    every: Duration,
) {
    loop {
        if let Err(e) = prune(&db, &database, &topology, retention_days).await {
            tracing::warn!(error = %e, "retention pass failed; retrying at the next interval");
        }
        tokio::time::sleep(every).await;
    }
}
