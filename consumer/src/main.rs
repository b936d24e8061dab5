use anyhow::Context;
use clap::Parser;
use javelin_consumer::config::{Cli, Command};
use javelin_schema::migrations::{MigrateOptions, migrate, validate_database_name};
use javelin_schema::process::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    match Cli::parse().command {
        Command::Migrate(args) => {
            let report = migrate(
                &args.clickhouse.server_client(),
                &args.clickhouse.database,
                MigrateOptions {
                    retention_days: args.retention_days,
                },
            )
            .await
            .with_context(|| {
                format!(
                    "migrating database {} at {}",
                    args.clickhouse.database, args.clickhouse.clickhouse_url
                )
            })?;
            println!(
                "database {}: server {}.{}, applied {:?}, already applied {:?}",
                args.clickhouse.database,
                report.features.version.0,
                report.features.version.1,
                report.applied,
                report.already_applied
            );
            Ok(())
        }
        Command::Run(args) => {
            validate_database_name(&args.clickhouse.database)?;
            javelin_consumer::ingest::run(*args, shutdown_signal()).await
        }
    }
}
