//! Supervises targets: scans /proc on an interval, starts one task per new JVM
//! (up to `max_targets`), forgets finished ones, and stops them all on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::AgentArgs;
use crate::discovery::ProcFs;
use crate::metrics::AgentMetrics;
use crate::publish::Publisher;
use crate::spool::Spool;
use crate::target::{self, TargetEnd, now_ms};
use javelin_schema::telemetry::Telemetry;
use javelin_schema::wire;

/// How long shutdown waits for the spool to drain into Kafka.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A JVM that could not be profiled is retried after 10 s, then 20 s, 40 s …
/// up to 5 min: a JVM that is still starting (no SIGQUIT handler yet) is soon
/// picked up, while a JVM that refuses every time costs little.
const RETRY_FIRST: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// When a JVM that could not be profiled may be tried again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at_ms: i64,
    attempts: u32,
}

impl Retry {
    fn after_failure(previous: Option<Retry>, now_ms: i64) -> Retry {
        let attempts = previous.map_or(0, |r| r.attempts) + 1;
        let delay = RETRY_FIRST
            .saturating_mul(1 << (attempts - 1).min(10))
            .min(RETRY_MAX);
        Retry {
            at_ms: now_ms + delay.as_millis() as i64,
            attempts,
        }
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let publisher = Arc::new(Publisher::new(args.publisher())?);
    let spool = Spool::new(args.max_spool_bytes);
    let telemetry = Telemetry::new("javelin-agent", args.otlp.endpoints())?;
    let metrics = AgentMetrics::new(&telemetry, &spool);
    let bound = telemetry
        .serve(&args.metrics_listen, Arc::new(|| true))
        .await?;
    // Scripts and tests read this line to find the port.
    println!("javelin-agent metrics on http://{bound}/metrics");
    let stop_sender = Arc::new(Notify::new());
    let sender = {
        let (spool, stop) = (spool.clone(), stop_sender.clone());
        let max_in_flight = args.max_in_flight;
        tokio::spawn(async move { spool.run_sender(publisher, max_in_flight, stop).await })
    };
    let proc = ProcFs::new("/proc")?;
    let config = args.target(args.pod_lookup()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Key: (pid, start time), so a recycled pid is a new target.
    let mut running: HashMap<(u32, i64), JoinHandle<TargetEnd>> = HashMap::new();
    let mut retries: HashMap<(u32, i64), Retry> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.discovery_interval_secs));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => break,
        }
        // Reap finished tasks; remember failed attaches for a while.
        let finished: Vec<(u32, i64)> = running
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(k, _)| *k)
            .collect();
        for key in finished {
            if let Some(handle) = running.remove(&key)
                && let Ok(TargetEnd::AttachFailed(_) | TargetEnd::Disabled | TargetEnd::Conflict(_)) =
                    handle.await
            {
                let retry = Retry::after_failure(retries.get(&key).copied(), now_ms());
                retries.insert(key, retry);
            }
        }
        let now = now_ms();
        let jvms = proc.scan(now, Duration::from_secs(args.min_jvm_age_secs));
        // Forget JVMs that are gone; keep the attempt count of the others.
        retries.retain(|k, _| {
            let alive = jvms.iter().any(|j| (j.pid, j.start_ms) == *k);
            if !alive {
                metrics.state(
                    wire::target_id(&config.cluster, &config.node, k.0, k.1),
                    None,
                );
            }
            alive
        });
        for jvm in jvms {
            let key = (jvm.pid, jvm.start_ms);
            if (!args.pids.is_empty() && !args.pids.contains(&jvm.pid))
                || running.contains_key(&key)
                || retries.get(&key).is_some_and(|r| r.at_ms > now)
                || jvm.pid == std::process::id()
            {
                continue;
            }
            if running.len() >= args.max_targets {
                tracing::warn!(
                    pid = jvm.pid,
                    max = args.max_targets,
                    "target limit reached; JVM not profiled"
                );
                continue;
            }
            tracing::info!(pid = jvm.pid, service = %jvm.service, "new JVM");
            let task = target::run(
                jvm,
                config.clone(),
                spool.clone(),
                metrics.clone(),
                stop_rx.clone(),
            );
            running.insert(key, tokio::spawn(task));
        }
    }
    tracing::info!(targets = running.len(), "stopping recordings");
    let _ = stop_tx.send(true);
    for (_, handle) in running {
        let _ = tokio::time::timeout(Duration::from_secs(35), handle).await;
    }
    // Deliver what is spooled, within a bound: an unreachable broker must not hold the shutdown.
    stop_sender.notify_one();
    let (waiting, _) = spool.len();
    if tokio::time::timeout(DRAIN_TIMEOUT, sender).await.is_err() {
        tracing::warn!(
            waiting = spool.len().0,
            "spool not drained before shutdown; messages lost"
        );
    } else if waiting > 0 {
        tracing::info!(waiting, "spool drained");
    }
    telemetry.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        let delays: Vec<i64> = std::iter::successors(Some(Retry::after_failure(None, 0)), |r| {
            Some(Retry::after_failure(Some(*r), 0))
        })
        .take(8)
        .map(|r| r.at_ms / 1000)
        .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
