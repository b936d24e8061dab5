//! One engine's part of a run: a database named after the run, migrated by
//! Javelin's migrations; the real consumer (a group of the engine's own)
//! storing the run's topic into it; the anchor filled from its rows; every
//! measured table optimized and measured. The database is dropped at the end,
//! also on error; a chdb engine's directory goes with it (unless the run
//! keeps them: `--keep`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clickhouse::Client;
use javelin_loadtest::servers::{ConsumerProcess, consumer_args};
use javelin_schema::migrations::{MigrateOptions, ServerFeatures, migrate};
use javelin_schema::testkit::chdb::ChdbServer;

use super::anchor::{Dialect, FillOrder};
use super::measure;
use super::report::{EngineResult, TABLES, ratios};
use super::seed::Seeded;

/// How long the consumer may take to store a run.
const STORE_DEADLINE: Duration = Duration::from_secs(1800);

/// The engines a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// The local server at `--clickhouse-url` (Debian's 18.16).
    #[value(name = "18.16")]
    Local,
    /// ClickHouse 26.9 in-process (chdb-core behind `dev/chdb-server`), of the run's own.
    #[value(name = "26.9")]
    Chdb,
}

impl EngineKind {
    pub fn label(self) -> &'static str {
        match self {
            EngineKind::Local => "18.16",
            EngineKind::Chdb => "26.9",
        }
    }
}

/// What every engine of a run shares.
#[derive(Debug)]
pub struct RunContext<'a> {
    pub run: &'a str,
    pub brokers: &'a str,
    pub clickhouse_url: &'a str,
    pub window_secs: i64,
    pub anchor_order: FillOrder,
    pub seeded: &'a Seeded,
    /// Keep the engine's database (`--keep`).
    pub keep: bool,
}

/// Measures the run on `kind`; the engine's database (and chdb's directory)
/// is removed whatever happens, unless `ctx.keep`: then the database stays,
/// and a chdb engine is returned still serving it (whatever happened).
pub async fn measure(
    kind: EngineKind,
    ctx: &RunContext<'_>,
) -> (anyhow::Result<EngineResult>, Option<ChdbServer>) {
    let chdb = match kind {
        EngineKind::Local => None,
        EngineKind::Chdb => {
            let name = format!("{}_chdb", ctx.run);
            // `start` installs chdb-core once (dev/tools chdb) and panics if that
            // fails; a blocking task turns the panic into an error.
            let started = tokio::task::spawn_blocking(move || ChdbServer::start(&name))
                .await
                .context("starting ClickHouse 26.9 (dev/tools chdb panicked)")
                .and_then(|s| s.context("starting ClickHouse 26.9 (dev/chdb-server)"));
            match started {
                Ok(server) => Some(server),
                Err(e) => return (Err(e), None),
            }
        }
    };
    let url = chdb
        .as_ref()
        .map_or_else(|| ctx.clickhouse_url.to_string(), |c| c.url.clone());
    let server = Client::default().with_url(&url).with_validation(false);
    let result = measure_on(kind, &server, &url, ctx).await;
    if ctx.keep {
        return (result, chdb);
    }
    if let Err(e) = server
        .query(&format!("DROP DATABASE IF EXISTS {}", ctx.run))
        .execute()
        .await
    {
        eprintln!("{}: dropping database `{}`: {e}", kind.label(), ctx.run);
    }
    drop(chdb);
    (result, None)
}

async fn measure_on(
    kind: EngineKind,
    server: &Client,
    url: &str,
    ctx: &RunContext<'_>,
) -> anyhow::Result<EngineResult> {
    let run = ctx.run;
    let label = kind.label();
    let version: String = server
        .query("SELECT version()")
        .fetch_one()
        .await
        .with_context(|| format!("{label}: asking `{url}` for its version"))?;
    let features = ServerFeatures::from_version(&version)?;
    let modern = features.low_cardinality;
    let mut notes = Vec::new();
    if (kind == EngineKind::Local) == modern {
        notes.push(format!(
            "the server at {url} is ClickHouse {version}, not what `{label}` names"
        ));
    }
    migrate(server, run, MigrateOptions::default())
        .await
        .with_context(|| format!("{label}: migrating `{run}`"))?;

    eprintln!("{label}: the consumer stores the run into `{run}`");
    let store_secs = store(kind, server, url, ctx).await?;
    eprintln!("{label}: stored in {store_secs:.1} s");
    let stored: u64 = server
        .query(&format!("SELECT count() FROM {run}.samples"))
        .fetch_one()
        .await?;
    if stored < ctx.seeded.sample_rows {
        bail!(
            "{label}: `samples` holds {stored} rows after the consumer finished, {} were produced",
            ctx.seeded.sample_rows
        );
    }
    if stored > ctx.seeded.sample_rows {
        notes.push(format!(
            "`samples` holds {stored} rows, {} were produced (a part written twice keeps both copies)",
            ctx.seeded.sample_rows
        ));
    }

    eprintln!("{label}: filling the Coroot-shaped tables");
    let dialect = fill_anchor(server, run, modern, ctx, &mut notes).await?;
    // The comparison is only fair on the same rows.
    let copied: u64 = server
        .query(&format!("SELECT count() FROM {run}.profiling_samples"))
        .fetch_one()
        .await
        .context("counting the anchor's rows")?;
    if copied != stored {
        bail!("the Coroot-shaped table holds {copied} rows, `samples` {stored}");
    }
    notes.push(match dialect {
        Dialect::Current => "Coroot-shaped tables: Coroot's DDL as it is (LowCardinality, \
             DateTime64(9) with Delta + ZSTD(1), Map labels, ZSTD(1) elsewhere, TTL)"
            .to_string(),
        Dialect::Legacy { low_cardinality } => format!(
            "Coroot-shaped tables, 18.16 equivalent: {}; Int64 nanoseconds for DateTime64(9); \
             `Labels` as Nested(key, value) for the Map; no codecs (every column in the server's \
             compression method: LZ4 unless its config.xml names another; the local stack's names ZSTD); no TTL",
            if low_cardinality {
                "LowCardinality(String) (allow_experimental_low_cardinality_type = 1)"
            } else {
                "String for LowCardinality(String)"
            }
        ),
    });
    if !modern {
        notes.push(
            "Javelin tables as migrations render them for 18.16: String for LowCardinality, no TTL"
                .to_string(),
        );
    }

    eprintln!("{label}: OPTIMIZE … FINAL and sizes");
    let mut tables = Vec::new();
    let mut columns = Vec::new();
    for (family, table) in TABLES {
        if modern {
            measure::make_wide(server, run, table).await?;
        }
        measure::optimize(server, run, table).await?;
        tables.push(measure::table_size(server, run, family, table, modern).await?);
        columns.extend(measure::column_sizes(server, run, table, modern).await?);
    }
    if modern {
        notes.push(
            "every table set to `min_bytes_for_wide_part = 0` before its OPTIMIZE (Compact parts \
             report 0 bytes per column)"
                .to_string(),
        );
        let compact: Vec<&str> = tables
            .iter()
            .filter(|t| t.part_types.iter().any(|p| p != "Wide"))
            .map(|t| t.table.as_str())
            .collect();
        if !compact.is_empty() {
            notes.push(format!(
                "parts other than Wide remain in: {}",
                compact.join(", ")
            ));
        }
    }
    let ratios = ratios(&tables);
    Ok(EngineResult {
        engine: label.to_string(),
        server_version: version,
        notes,
        store_secs,
        tables,
        columns,
        ratios,
        error: None,
    })
}

/// Runs the consumer until `samples`, `stored_parts` and `ingest_ledger` hold
/// every row of the run: the consumer writes a batch's parts and ledger rows
/// after its samples, so a count of `samples` alone would stop it early.
/// Returns the seconds it took.
async fn store(
    kind: EngineKind,
    server: &Client,
    url: &str,
    ctx: &RunContext<'_>,
) -> anyhow::Result<f64> {
    let run = ctx.run;
    let mut args = consumer_args(url, ctx.brokers, run);
    if let Some(i) = args.iter().position(|a| a == "--group-id")
        && let Some(group) = args.get_mut(i + 1)
    {
        *group = format!("{run}_{}", kind.label().replace('.', "_"));
    }
    let log = std::env::temp_dir().join(format!("{run}.{}.consumer.log", kind.label()));
    let started = Instant::now();
    let mut consumer = ConsumerProcess::start(args, log.clone())
        .with_context(|| format!("starting the consumer (log: {})", log.display()))?;
    let (rows, parts) = (ctx.seeded.sample_rows, ctx.seeded.messages);
    let mut reported = Instant::now();
    loop {
        // One count per query: a scalar subquery's type differs between
        // versions (Nullable on 26.9), which RowBinary without validation
        // would misread.
        let samples = count(server, run, "samples").await;
        let stored_parts = count(server, run, "stored_parts").await;
        let ledger = count(server, run, "ingest_ledger").await;
        if samples >= rows && stored_parts >= parts && ledger >= parts {
            return Ok(started.elapsed().as_secs_f64());
        }
        consumer.check_alive()?;
        if started.elapsed() > STORE_DEADLINE {
            bail!(
                "the consumer stored {samples} of {rows} sample rows, {stored_parts} and {ledger} of \
                 {parts} parts in {STORE_DEADLINE:?}; see {}",
                log.display()
            );
        }
        if reported.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "{}: {samples} of {rows} sample rows stored after {:.0} s",
                kind.label(),
                started.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Rows of `db.table`; 0 while the server does not answer.
async fn count(server: &Client, db: &str, table: &str) -> u64 {
    server
        .query(&format!("SELECT count() FROM {db}.{table}"))
        .fetch_one()
        .await
        .unwrap_or(0)
}

/// Creates and fills the anchor's tables. On 18.16 LowCardinality is tried
/// first (experimental there); if the server refuses it, the tables are
/// created again with String and the refusal noted.
async fn fill_anchor(
    server: &Client,
    run: &str,
    modern: bool,
    ctx: &RunContext<'_>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Dialect> {
    let candidates: &[Dialect] = if modern {
        &[Dialect::Current]
    } else {
        &[
            Dialect::Legacy {
                low_cardinality: true,
            },
            Dialect::Legacy {
                low_cardinality: false,
            },
        ]
    };
    let mut last = None;
    for &dialect in candidates {
        match create_and_fill(server, run, dialect, ctx.window_secs, ctx.anchor_order).await {
            Ok(()) => return Ok(dialect),
            Err(e) => {
                notes.push(format!("anchor as {dialect:?} refused: {e:#}"));
                for table in ["profiling_samples", "profiling_stacks"] {
                    server
                        .query(&format!("DROP TABLE IF EXISTS {run}.{table}"))
                        .execute()
                        .await
                        .with_context(|| format!("dropping `{run}.{table}`"))?;
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no anchor dialect for this server")))
}

async fn create_and_fill(
    server: &Client,
    run: &str,
    dialect: Dialect,
    window_secs: i64,
    order: FillOrder,
) -> anyhow::Result<()> {
    let client = match dialect.setting() {
        Some((name, value)) => server.clone().with_setting(name, value),
        None => server.clone(),
    };
    for ddl in dialect.create(run) {
        client
            .query(&ddl)
            .execute()
            .await
            .with_context(|| format!("creating: {ddl}"))?;
    }
    for fill in dialect.fill(run, window_secs, order) {
        client
            .query(&fill)
            .execute()
            .await
            .with_context(|| format!("filling: {fill}"))?;
    }
    Ok(())
}
