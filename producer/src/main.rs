use std::time::Duration;

use clap::{CommandFactory, Parser};
use javelin_agent::config::AgentArgs;
use javelin_schema::process::{args_with_config_file, init_logging, shutdown_signal};

/// How long the exit waits for recorder operations still running on blocking
/// threads (an attach to a stopped JVM) once `run` has returned: the agent's
/// shutdown deadlines already ended every target (docs/operations/agent-lifecycle.md).
const BLOCKING_EXIT_WAIT: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    init_logging();
    let args = AgentArgs::parse_from(args_with_config_file(&AgentArgs::command())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(javelin_agent::agent::run(args, shutdown_signal()));
    // Dropping a runtime waits for its blocking threads without bound.
    runtime.shutdown_timeout(BLOCKING_EXIT_WAIT);
    result
}
