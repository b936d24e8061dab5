//! Consumer configuration: subcommands and flags, each with an environment variable and a documented default.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use javelin_schema::migrations::{MigrationError, ServerFeatures};
use javelin_schema::telemetry::OtlpArgs;
use javelin_schema::topology::Topology;

#[derive(Debug, Parser)]
#[command(
    name = "javelin-consumer",
    version,
    about = "Javelin consumer: Kafka → ClickHouse"
)]
pub struct Cli {
    /// File of KEY=VALUE settings (the JAVELIN_* variables of the subcommand); flags and the environment win over it.
    #[arg(long, global = true, env = "JAVELIN_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume profile windows and target status into ClickHouse.
    Run(Box<RunArgs>),
    /// Create the database and apply pending schema migrations, then exit.
    Migrate(MigrateArgs),
    /// Re-ingest the profile windows of a time range from Kafka (idempotent), then exit.
    Replay(ReplayArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub clickhouse_url: String,
    /// ClickHouse database.
    #[arg(long, env = "JAVELIN_CLICKHOUSE_DATABASE", default_value = "javelin")]
    pub database: String,
    /// ClickHouse user.
    #[arg(long, env = "JAVELIN_CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password.
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub clickhouse_password: String,
    /// ClickHouse cluster (`remote_servers` name) holding the tables: local
    /// Replicated tables plus Distributed ones; empty = one server.
    #[arg(long, env = "JAVELIN_CLICKHOUSE_CLUSTER", default_value = "")]
    pub clickhouse_cluster: String,
}

impl ClickHouseArgs {
    /// A client without a database selected (the database may not exist yet).
    pub fn server_client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.clickhouse_url)
            .with_user(&self.clickhouse_user)
            .with_password(&self.clickhouse_password)
            // Plain RowBinary: Debian's ClickHouse 18.16 lacks RowBinaryWithNamesAndTypes validation.
            .with_validation(false)
    }

    /// One server or the named cluster.
    pub fn topology(&self) -> Result<Topology, MigrationError> {
        Topology::from_flag(Some(&self.clickhouse_cluster))
    }

    /// The client batches are written with: the database selected, and the
    /// settings the server and the topology call for
    /// ([`Topology::write_settings`]), which needs the server's version. Fails
    /// when the database was made for the other topology ([`Topology::verify`]).
    pub async fn writer_client(&self) -> anyhow::Result<clickhouse::Client> {
        let topology = self.topology()?;
        let client = self.server_client().with_database(&self.database);
        let features = ServerFeatures::detect(&client).await.with_context(|| {
            format!(
                "asking ClickHouse at {} for its version",
                self.clickhouse_url
            )
        })?;
        topology.verify(&client, &self.database).await?;
        Ok(topology.writer(client, features))
    }
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Days of data kept (1–7).
    #[arg(long, env = "JAVELIN_RETENTION_DAYS", default_value_t = 7)]
    pub retention_days: u32,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Consumer group id; every consumer of one deployment shares it.
    #[arg(long, env = "JAVELIN_GROUP_ID", default_value = "javelin-consumer")]
    pub group_id: String,
    /// Topic of profile windows.
    #[arg(long, env = "JAVELIN_PROFILES_TOPIC", default_value = javelin_schema::topics::PROFILES)]
    pub profiles_topic: String,
    /// Topic of target status.
    #[arg(long, env = "JAVELIN_STATUS_TOPIC", default_value = javelin_schema::topics::STATUS)]
    pub status_topic: String,
    /// Dead-letter topic for messages that cannot be ingested.
    #[arg(long, env = "JAVELIN_DLQ_TOPIC", default_value = javelin_schema::topics::DLQ)]
    pub dlq_topic: String,
    /// Extra librdkafka consumer property, `key=value`; repeatable.
    #[arg(long = "kafka-property", env = "JAVELIN_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = javelin_schema::process::parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
    /// A batch is inserted once it has this many rows…
    #[arg(long, env = "JAVELIN_BATCH_MAX_ROWS", default_value_t = 500_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_max_rows: usize,
    /// …or this many message bytes…
    #[arg(long, env = "JAVELIN_BATCH_MAX_BYTES", default_value_t = 32 << 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_max_bytes: usize,
    /// …or when this many milliseconds have passed since the batch started.
    #[arg(long, env = "JAVELIN_BATCH_LINGER_MS", default_value_t = 1000)]
    pub batch_linger_ms: u64,
    /// Days of data kept (1–7); on servers without TTL the consumer drops older day partitions hourly.
    #[arg(long, env = "JAVELIN_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=7))]
    pub retention_days: u32,
    /// Seconds between rollup passes (hourly rollups for long ranges; 0 = this consumer builds none).
    #[arg(long, env = "JAVELIN_ROLLUP_INTERVAL_SECS", default_value_t = 300)]
    pub rollup_interval_secs: u64,
    /// Seconds after an hour's end before it is first rolled up (later writes send it back to raw reads and a rebuild).
    #[arg(long, env = "JAVELIN_ROLLUP_GRACE_SECS", default_value_t = 300)]
    pub rollup_grace_secs: u64,
    /// Most hours rolled up per pass (each is one INSERT … SELECT of an hour of one service and type).
    #[arg(long, env = "JAVELIN_ROLLUP_MAX_BUILDS", default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..))]
    pub rollup_max_builds: u32,
    /// Rows per second for the whole consumer group (0 = unlimited); each consumer takes the share of its partitions.
    #[arg(long, env = "JAVELIN_MAX_ROWS_PER_SECOND", default_value_t = 0)]
    pub max_rows_per_second: u32,
    /// Address of the metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "JAVELIN_METRICS_LISTEN", default_value = "0.0.0.0:9465")]
    pub metrics_listen: String,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// Entries of the (service, stack id) cache that avoids re-writing known stacks.
    #[arg(long, env = "JAVELIN_STACK_CACHE_ENTRIES", default_value_t = 1_000_000)]
    pub stack_cache_entries: usize,
}

impl RunArgs {
    pub fn clickhouse_client(&self) -> clickhouse::Client {
        self.clickhouse
            .server_client()
            .with_database(&self.clickhouse.database)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Extra librdkafka consumer property, `key=value` (TLS, SASL; as for `run`); repeatable.
    #[arg(long = "kafka-property", env = "JAVELIN_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = javelin_schema::process::parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
    /// Topic of profile windows.
    #[arg(long, env = "JAVELIN_PROFILES_TOPIC", default_value = javelin_schema::topics::PROFILES)]
    pub profiles_topic: String,
    /// Windows starting at or after this time (ms since the epoch, or RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub from: i64,
    /// Windows starting before this time (ms since the epoch, or RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub to: i64,
    /// Only this service's windows.
    #[arg(long)]
    pub service: Option<String>,
    /// Read and count, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long after its start a window may have been published, in ms (start offsets are looked up this much earlier).
    #[arg(long, env = "JAVELIN_REPLAY_SLACK_MS", default_value_t = 600_000)]
    pub slack_ms: i64,
}

/// Parses a replay bound: milliseconds since the epoch, or RFC 3339 (`2026-11-25T10:00:00Z`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| {
            format!("{text:?} is neither milliseconds since the epoch nor an RFC 3339 time: {e}")
        })
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| format!("{text:?} is before 1970"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_milliseconds_or_rfc3339() {
        assert_eq!(parse_time("1764000000000"), Ok(1_764_000_000_000));
        assert_eq!(parse_time("2025-11-24T16:00:00Z"), Ok(1_764_000_000_000));
        assert!(parse_time("yesterday").is_err());
    }
}
