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
use crate::publish::Publisher;
use crate::spool::Spool;
use crate::target::{self, TargetEnd, now_ms};

/// How long shutdown waits for the spool to drain into Kafka.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a JVM whose attach failed is left alone before the next try.
const ATTACH_RETRY: Duration = Duration::from_secs(300);

/// Runs the agent until `shutdown` completes.
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let publisher = Arc::new(Publisher::new(args.publisher())?);
    let spool = Spool::new(args.max_spool_bytes);
    let stop_sender = Arc::new(Notify::new());
    let sender = {
        let (spool, stop) = (spool.clone(), stop_sender.clone());
        let max_in_flight = args.max_in_flight;
        tokio::spawn(async move { spool.run_sender(publisher, max_in_flight, stop).await })
    };
    let proc = ProcFs::new("/proc")?;
    let config = args.target();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Key: (pid, start time), so a recycled pid is a new target.
    let mut running: HashMap<(u32, i64), JoinHandle<TargetEnd>> = HashMap::new();
    let mut retry_after: HashMap<(u32, i64), i64> = HashMap::new();
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
                retry_after.insert(key, now_ms() + ATTACH_RETRY.as_millis() as i64);
            }
        }
        let now = now_ms();
        let jvms = proc.scan(now, Duration::from_secs(args.min_jvm_age_secs));
        retry_after
            .retain(|k, until| *until > now && jvms.iter().any(|j| (j.pid, j.start_ms) == *k));
        for jvm in jvms {
            let key = (jvm.pid, jvm.start_ms);
            if (!args.pids.is_empty() && !args.pids.contains(&jvm.pid))
                || running.contains_key(&key)
                || retry_after.contains_key(&key)
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
            let task = target::run(jvm, config.clone(), spool.clone(), stop_rx.clone());
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
    Ok(())
}
