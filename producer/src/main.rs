use clap::Parser;
use javelin_agent::config::AgentArgs;
use javelin_schema::process::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = AgentArgs::parse();
    javelin_agent::agent::run(args, shutdown_signal()).await
}
