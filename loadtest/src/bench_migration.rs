//! `bench-migration`: how long migration 7 (the samples layout of issue 18)
//! takes per million rows, on the local ClickHouse 18.16 and on 26.9
//! (chdb-core), for docs/operations/upgrades.md. The rows are made by the
//! server (`numbers()`), shaped like bench-storage's: 50 pods, 1,500 stacks,
//! one-minute windows. The database is dropped afterwards.

use std::time::Instant;

use anyhow::{Context, ensure};
use clickhouse::Client;
use javelin_schema::migrations::{MigrateOptions, migrate, migrate_up_to};
use javelin_schema::testkit::chdb::ChdbServer;

use crate::bench_storage::EngineKind;

#[derive(Debug, clap::Args)]
pub struct BenchMigrationArgs {
    /// The 18.16 engine: the local server.
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub clickhouse_url: String,
    /// Engines to measure on.
    #[arg(long, value_delimiter = ',', default_value = "18.16,26.9")]
    pub engines: Vec<EngineKind>,
    /// Sample rows in `samples` before the migration.
    #[arg(long, default_value_t = 4_500_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
}

/// Rows per one-minute window: 50 pods × ~1,150 of 1,500 stacks, as bench-storage stores.
const ROWS_PER_WINDOW: u64 = 57_450;

/// Rounds of the stack aggregation timed on each layout, interleaved.
const ROUNDS: usize = 15;

pub async fn run(args: &BenchMigrationArgs) -> anyhow::Result<()> {
    let database = format!("bench_migration_{}", std::process::id());
    println!(
        "| engine | rows | migration 7 | per million rows | stack aggregation p50, old layout | new layout | new / old |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for &kind in &args.engines {
        let chdb = match kind {
            EngineKind::Local => None,
            EngineKind::Chdb => {
                let name = database.clone();
                Some(
                    tokio::task::spawn_blocking(move || ChdbServer::start(&name))
                        .await
                        .context("starting ClickHouse 26.9 (dev/tools chdb panicked)")?
                        .context("starting ClickHouse 26.9 (dev/chdb-server)")?,
                )
            }
        };
        let url = chdb
            .as_ref()
            .map_or_else(|| args.clickhouse_url.clone(), |c| c.url.clone());
        let server = Client::default().with_url(&url).with_validation(false);
        let measured = measure(&server, &database, args.rows).await;
        if let Err(e) = server
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
        {
            eprintln!("{}: dropping `{database}`: {e}", kind.label());
        }
        let (secs, old_ms, new_ms) =
            measured.with_context(|| format!("{}: migration 7", kind.label()))?;
        println!(
            "| {} | {} | {secs:.1} s | {:.2} s | {old_ms:.0} ms | {new_ms:.0} ms | {:.2} |",
            kind.label(),
            crate::bench_storage::thousands(args.rows),
            secs / (args.rows as f64 / 1e6),
            new_ms / old_ms
        );
    }
    Ok(())
}

/// Seconds `migrate` took to apply migration 7 to `rows` rows of migration
/// 6's layout, then the p50 of the flamegraph's stack aggregation over the
/// same rows in the old table (kept as `samples_v3`) and the new one, in ms.
async fn measure(server: &Client, database: &str, rows: u64) -> anyhow::Result<(f64, f64, f64)> {
    migrate_up_to(server, database, MigrateOptions::default(), 6)
        .await
        .context("the schema of migration 6")?;
    let start = (javelin_loadtest::now_ms() / 1000 - 3 * 3600) / 60 * 60;
    server
        .query(&format!(
            "INSERT INTO {database}.samples (service, profile_type, window_start, cluster, namespace,
                 pod, container, node, target_id, window_id, stack_id, value, count, insert_id, app_version)
             SELECT 'svc', 'cpu', toDateTime({start} + intDiv(number, {ROWS_PER_WINDOW}) * 60),
                 'c', 'ns', concat('pod-', toString(number % 50)), 'app',
                 concat('node-', toString(number % 7)), number % 50 + 1,
                 cityHash64(intDiv(number, {ROWS_PER_WINDOW}), number % 50),
                 cityHash64(intDiv(number, 50) % 1500), (1 + number % 97) * 10000000,
                 1 + number % 97, 1, ''
             FROM numbers({rows})"
        ))
        .execute()
        .await
        .context("filling samples")?;
    let started = Instant::now();
    let report = migrate(server, database, MigrateOptions::default())
        .await
        .context("migrating")?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        report.applied == [7, 8],
        "applied {:?}, not migrations 7 and 8 (8 creates two empty tables)",
        report.applied
    );
    for table in ["samples", "samples_v3"] {
        let n: u64 = server
            .query(&format!("SELECT count() FROM {database}.{table}"))
            .fetch_one()
            .await
            .with_context(|| format!("counting {table}"))?;
        ensure!(n == rows, "{table} holds {n} rows, {rows} were written");
    }
    let mut times = [Vec::new(), Vec::new()];
    let mut sums = [0i64; 2];
    for _ in 0..ROUNDS {
        for (i, table) in ["samples_v3", "samples"].into_iter().enumerate() {
            let started = Instant::now();
            let stacks: Vec<(u64, i64)> = server
                .query(&format!(
                    "SELECT stack_id, sum(value) FROM {database}.{table}
                     WHERE service = 'svc' AND profile_type = 'cpu' GROUP BY stack_id"
                ))
                .fetch_all()
                .await
                .with_context(|| format!("aggregating {table}"))?;
            times[i].push(started.elapsed().as_secs_f64() * 1e3);
            sums[i] = stacks.iter().map(|(_, v)| v).sum();
        }
    }
    ensure!(sums[0] == sums[1], "the layouts sum to {sums:?}");
    let [old, new] = times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    });
    Ok((secs, old, new))
}
