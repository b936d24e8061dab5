use anyhow::Context;
use clap::Parser;
use javelin_consumer::config::{Cli, Command};
use javelin_schema::migrations::{MigrateOptions, migrate, validate_database_name};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
            javelin_consumer::ingest::run(args, shutdown_signal()).await
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
