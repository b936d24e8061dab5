use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use javelin_query::api::{AppState, router};
use javelin_query::metrics::{QueryMetrics, observe};
use javelin_query::params::Limits;
use javelin_query::store::Store;
use javelin_schema::migrations::MigrationError;
use javelin_schema::process::{args_with_config_file, init_logging, shutdown_signal};
use javelin_schema::telemetry::{OtlpArgs, Telemetry};
use javelin_schema::topology::Topology;

#[derive(Debug, Parser)]
#[command(name = "javelin-query", version, about = "Javelin query API and UI")]
struct Args {
    /// File of KEY=VALUE settings (the JAVELIN_* variables below); flags and the environment win over it.
    #[arg(long, env = "JAVELIN_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "JAVELIN_LISTEN", default_value = "127.0.0.1:4040")]
    listen: String,
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// ClickHouse database.
    #[arg(long, env = "JAVELIN_CLICKHOUSE_DATABASE", default_value = "javelin")]
    database: String,
    /// ClickHouse user.
    #[arg(long, env = "JAVELIN_CLICKHOUSE_USER", default_value = "default")]
    clickhouse_user: String,
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    clickhouse_password: String,
    /// ClickHouse cluster (`remote_servers` name) holding the tables, read through
    /// their Distributed tables; empty = one server.
    #[arg(long, env = "JAVELIN_CLICKHOUSE_CLUSTER", default_value = "")]
    clickhouse_cluster: String,
    /// Flamegraph nodes returned when a request does not say.
    #[arg(long, env = "JAVELIN_DEFAULT_MAX_NODES", default_value_t = 8192)]
    default_max_nodes: usize,
    /// Largest `max_nodes` a request may ask for.
    #[arg(long, env = "JAVELIN_MAX_NODES_LIMIT", default_value_t = 1 << 20)]
    max_nodes_limit: usize,
    /// Longest query range, in hours.
    #[arg(long, env = "JAVELIN_MAX_RANGE_HOURS", default_value_t = 7 * 24)]
    max_range_hours: i64,
    /// Most rows one query may read in ClickHouse (`max_rows_to_read`); beyond it the API answers 422.
    #[arg(long, env = "JAVELIN_MAX_ROWS_SCANNED", default_value_t = 200_000_000)]
    max_rows_scanned: u64,
    /// Answer whole hours from the consumer's rollups where they are current (false: every
    /// read is of raw windows, as before migration 8).
    #[arg(long, env = "JAVELIN_READ_ROLLUPS", default_value_t = true, action = clap::ArgAction::Set)]
    read_rollups: bool,
    /// Days of data the database keeps (the consumer's and `migrate`'s `--retention-days`):
    /// hours whose rollups reach it are read raw, not from rollups that may be expiring.
    #[arg(long, env = "JAVELIN_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=7))]
    retention_days: u32,
    /// Most (label value, time bucket) pairs one tag breakdown (`/api/v1/tags`) reads into the API
    /// (its memory bound); beyond it the API answers 422 (narrow the range, filter or use a longer step).
    #[arg(long, env = "JAVELIN_MAX_BREAKDOWN_PAIRS", default_value_t = 200_000)]
    max_breakdown_pairs: u64,
    /// Longest a query may run in ClickHouse (`max_execution_time`); beyond it the API answers 504.
    #[arg(long, env = "JAVELIN_QUERY_TIMEOUT_SECONDS", default_value_t = 30)]
    query_timeout_seconds: u64,
    /// Bearer token required on /api/v1/* (read-only access); unset = no auth (local demo).
    #[arg(long, env = "JAVELIN_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// A consumer's metrics URL (…/metrics), for lag and retry state on the health page; repeatable.
    #[arg(
        long = "consumer-metrics-url",
        env = "JAVELIN_CONSUMER_METRICS_URLS",
        value_delimiter = ','
    )]
    consumer_metrics_urls: Vec<String>,
    /// Address of the metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`: ClickHouse answers).
    #[arg(long, env = "JAVELIN_METRICS_LISTEN", default_value = "0.0.0.0:9466")]
    metrics_listen: String,
    #[command(flatten)]
    otlp: OtlpArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse_from(args_with_config_file(&Args::command())?);
    javelin_schema::migrations::validate_database_name(&args.database)?;
    anyhow::ensure!(
        (2..=args.max_nodes_limit).contains(&args.default_max_nodes),
        "--default-max-nodes must be between 2 and --max-nodes-limit"
    );
    let topology = Topology::from_flag(Some(&args.clickhouse_cluster))?;
    let client = clickhouse::Client::default()
        .with_url(&args.clickhouse_url)
        .with_user(&args.clickhouse_user)
        .with_password(&args.clickhouse_password)
        .with_database(&args.database)
        .with_validation(false);
    anyhow::ensure!(
        args.auth_token.as_deref().is_none_or(|t| t.len() >= 16),
        "--auth-token must be at least 16 characters"
    );
    // A database of the other topology fails every query: refuse it now. An
    // unreachable ClickHouse is not fatal (the API answers 503 until it is back).
    // The check runs without the request limits (a small --max-rows-scanned
    // would refuse its read of system.tables).
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        topology.verify(&topology.reader(client.clone()), &args.database),
    )
    .await
    {
        Ok(Err(e @ MigrationError::LayoutMismatch { .. })) => return Err(e.into()),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not check the database's layout"),
        Err(_) => tracing::warn!("could not check the database's layout within 10 s"),
        Ok(Ok(())) => {}
    }
    let client = topology.reader(
        client
            .with_setting("max_rows_to_read", args.max_rows_scanned.to_string())
            .with_setting("max_execution_time", args.query_timeout_seconds.to_string()),
    );
    let telemetry = Telemetry::new("javelin-query", args.otlp.endpoints())?;
    let metrics = QueryMetrics::new(&telemetry);
    let reachable = Arc::new(AtomicBool::new(false));
    tokio::spawn(watch_clickhouse(client.clone(), reachable.clone()));
    let bound = telemetry
        .serve(
            &args.metrics_listen,
            Arc::new(move || reachable.load(Ordering::Relaxed)),
        )
        .await?;
    let state = AppState {
        store: Store::new(client).read_rollups(args.read_rollups, args.retention_days),
        limits: Limits {
            default_max_nodes: args.default_max_nodes,
            max_nodes_limit: args.max_nodes_limit,
            max_range_ms: args.max_range_hours * 3_600_000,
            request_deadline: std::time::Duration::from_secs(args.query_timeout_seconds + 5),
            max_breakdown_pairs: args.max_breakdown_pairs,
        },
        auth_token: args.auth_token.filter(|t| !t.is_empty()),
        consumer_metrics_urls: args.consumer_metrics_urls,
        http: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to find the port.
    println!("javelin-query listening on http://{addr}/");
    tracing::info!(%addr, metrics = %bound, database = %args.database, "serving");
    let app = router(state).layer(axum::middleware::from_fn_with_state(metrics, observe));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    telemetry.shutdown();
    Ok(())
}

/// Keeps `reachable` current: `/readyz` answers 200 only while ClickHouse does.
async fn watch_clickhouse(client: clickhouse::Client, reachable: Arc<AtomicBool>) {
    loop {
        let ok = client.query("SELECT 1").fetch_one::<u8>().await.is_ok();
        reachable.store(ok, Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
