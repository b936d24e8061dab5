use anyhow::Context;
use clap::{CommandFactory, Parser};
use javelin_consumer::config::{Cli, Command};
use javelin_schema::migrations::{MigrateOptions, migrate, validate_database_name};
use javelin_schema::process::{args_with_config_file, init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    match Cli::parse_from(args_with_config_file(&Cli::command())?).command {
        Command::Migrate(args) => {
            let report = migrate(
                &args.clickhouse.server_client(),
                &args.clickhouse.database,
                MigrateOptions {
                    retention_days: args.retention_days,
                    topology: args.clickhouse.topology()?,
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
                "database {}{}: server {}.{}, applied {:?}, already applied {:?}",
                args.clickhouse.database,
                args.clickhouse
                    .topology()?
                    .cluster()
                    .map(|c| format!(" on cluster {c}"))
                    .unwrap_or_default(),
                report.features.version.0,
                report.features.version.1,
                report.applied,
                report.already_applied
            );
            Ok(())
        }
        Command::Replay(args) => {
            validate_database_name(&args.clickhouse.database)?;
            args.clickhouse.topology()?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} messages ({eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let summary = javelin_consumer::replay::replay(&args, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish();
            println!("{}{summary}", if args.dry_run { "dry run: " } else { "" });
            Ok(())
        }
        Command::Run(args) => {
            validate_database_name(&args.clickhouse.database)?;
            args.clickhouse.topology()?;
            javelin_consumer::ingest::run(*args, shutdown_signal()).await
        }
    }
}
