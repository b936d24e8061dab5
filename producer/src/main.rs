use clap::{CommandFactory, Parser};
use javelin_agent::config::AgentArgs;
use javelin_schema::process::{args_with_config_file, init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = AgentArgs::parse_from(args_with_config_file(&AgentArgs::command())?);
    javelin_agent::agent::run(args, shutdown_signal()).await
}
