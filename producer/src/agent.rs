//! Supervises targets: scans /proc on an interval, starts one task per new JVM
//! (up to `max_targets`), forgets finished ones, and stops them all on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::AgentArgs;
use crate::discovery::{JvmProcess, ProcFs};
use crate::metrics::AgentMetrics;
use crate::publish::{self, Publisher};
use crate::spool::{Destination, Spool, Spooled};
use crate::target::{self, TargetEnd, now_ms};
use javelin_schema::telemetry::Telemetry;
use javelin_schema::wire::{self, TargetIdentity, TargetState, TargetStatus};

/// How long shutdown waits for the spool to drain into Kafka.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the targets (all at once) to publish their
/// final partial window and end their sessions: their own budget
/// ([`target::FINAL_WINDOW_TIMEOUT`]) and a margin for the last status.
pub const TARGETS_STOP_TIMEOUT: Duration =
    Duration::from_secs(target::FINAL_WINDOW_TIMEOUT.as_secs() + 5);

/// A JVM that could not be profiled is retried after 10 s, then 20 s, 40 s …
/// up to 5 min: a JVM that is still starting (no SIGQUIT handler yet) is soon
/// picked up, while a JVM that refuses every time costs little.
const RETRY_FIRST: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// JVMs found over `--max-targets`: reported when first seen, then again every
/// 5 min while they wait (a status per discovery tick would flood the status
/// topic), logged at most once a minute.
const OVER_LIMIT_REPORT_EVERY_MS: i64 = 300_000;
const OVER_LIMIT_LOG_EVERY_MS: i64 = 60_000;
/// Most waiting JVMs remembered (memory bound: an identity, under 1 KiB each). Past it
/// a JVM is only counted in the gauge until a remembered one leaves.
const OVER_LIMIT_REMEMBERED: usize = 1024;

/// How long the agent waits at start for the broker's message limit.
const BROKER_LIMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do about a JVM seen while the target slots are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OverLimitSeen {
    /// First seen: report, count.
    New,
    /// Reported long enough ago: report again.
    Due,
    /// Reported recently.
    Quiet,
    /// Memory for waiting JVMs is full: not remembered, not reported.
    Unremembered,
}

/// JVMs waiting for a target slot, bounded to [`OVER_LIMIT_REMEMBERED`].
#[derive(Debug, Default)]
struct OverLimit {
    waiting: HashMap<(u32, i64), Waiting>,
    last_log_ms: Option<i64>,
}

#[derive(Debug)]
struct Waiting {
    /// First seen and last reported, ms since the epoch.
    since_ms: i64,
    reported_ms: i64,
    /// As last reported: the exit status must land in the same row.
    identity: Option<TargetIdentity>,
}

impl OverLimit {
    fn see(&mut self, key: (u32, i64), now_ms: i64) -> OverLimitSeen {
        if let Some(w) = self.waiting.get_mut(&key) {
            if now_ms - w.reported_ms < OVER_LIMIT_REPORT_EVERY_MS {
                return OverLimitSeen::Quiet;
            }
            w.reported_ms = now_ms;
            return OverLimitSeen::Due;
        }
        if self.waiting.len() >= OVER_LIMIT_REMEMBERED {
            return OverLimitSeen::Unremembered;
        }
        let waiting = Waiting {
            since_ms: now_ms,
            reported_ms: now_ms,
            identity: None,
        };
        self.waiting.insert(key, waiting);
        OverLimitSeen::New
    }

    /// Remembers the identity a waiting JVM was reported with.
    fn reported(&mut self, key: &(u32, i64), identity: &TargetIdentity) {
        if let Some(w) = self.waiting.get_mut(key) {
            w.identity = Some(identity.clone());
        }
    }

    /// When the JVM started waiting, if it is remembered.
    fn since(&self, key: &(u32, i64)) -> Option<i64> {
        self.waiting.get(key).map(|w| w.since_ms)
    }

    /// Forgets a JVM that got a slot; true when it was waiting.
    fn started(&mut self, key: &(u32, i64)) -> bool {
        self.waiting.remove(key).is_some()
    }

    /// Forgets the JVMs `alive` says are gone, returning the identities they were reported with.
    fn forget_gone(&mut self, alive: impl Fn(&(u32, i64)) -> bool) -> Vec<TargetIdentity> {
        let gone: Vec<(u32, i64)> = self.waiting.keys().filter(|k| !alive(k)).copied().collect();
        gone.iter()
            .filter_map(|key| self.waiting.remove(key)?.identity)
            .collect()
    }

    /// Whether to log now: new JVMs wait and no line for a minute, or any wait
    /// and no line for ten.
    fn log_due(&mut self, any_new: bool, now_ms: i64) -> bool {
        let quiet_for = self.last_log_ms.map_or(i64::MAX, |t| now_ms - t);
        let due = (any_new && quiet_for >= OVER_LIMIT_LOG_EVERY_MS)
            || quiet_for >= 10 * OVER_LIMIT_LOG_EVERY_MS;
        if due {
            self.last_log_ms = Some(now_ms);
        }
        due
    }
}

/// The status of a JVM the agent does not profile (waiting for a slot, or gone
/// while waiting): no recorder, no counters.
fn unprofiled_status(identity: TargetIdentity, state: TargetState, message: &str) -> Spooled {
    let target_id = identity.target_id;
    let status = TargetStatus {
        target: Some(identity),
        state: state as i32,
        last_error: message.to_string(),
        observed_at_ms: now_ms(),
        agent_version: crate::AGENT_VERSION.into(),
        ..TargetStatus::default()
    };
    Spooled {
        destination: Destination::Status,
        key: target_id.to_string(),
        payload: status.to_bytes(),
        target_id,
    }
}

/// When a JVM that could not be profiled may be tried again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at_ms: i64,
    attempts: u32,
    /// A hash of the last failure's reason (a new reason is logged at warn).
    reason: u64,
}

impl Retry {
    fn after_failure(previous: Option<Retry>, now_ms: i64, reason: &str) -> Retry {
        use std::hash::{Hash, Hasher};
        let attempts = previous.map_or(0, |r| r.attempts) + 1;
        let delay = RETRY_FIRST
            .saturating_mul(1 << (attempts - 1).min(10))
            .min(RETRY_MAX);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        reason.hash(&mut hasher);
        Retry {
            at_ms: now_ms + delay.as_millis() as i64,
            attempts,
            reason: hasher.finish(),
        }
    }
}

/// Lowers the message bound to what the broker accepts for the profiles
/// topic; keeps it when the broker cannot be asked.
async fn fit_to_broker(args: &mut AgentArgs) {
    let topic = args.profiles_topic.clone();
    let asked = publish::broker_message_limit(
        &args.brokers,
        &args.kafka_properties,
        &topic,
        BROKER_LIMIT_TIMEOUT,
    )
    .await;
    let configured = args.max_message_bytes;
    match asked {
        Ok(Some(limit)) => match args.fit_to_broker(Some(&limit)) {
            Some(_) => tracing::warn!(
                configured,
                broker_limit = limit.bytes,
                source = %limit.source,
                max_message_bytes = args.max_message_bytes,
                "--max-message-bytes is above what the broker accepts; lowered to fit"
            ),
            None => tracing::info!(
                max_message_bytes = configured,
                broker_limit = limit.bytes,
                source = %limit.source,
                "message bound fits the broker's limit"
            ),
        },
        Ok(None) => {
            args.fit_to_broker(None);
            tracing::info!(
                max_message_bytes = configured,
                topic,
                "the broker reports no message limit for the topic; keeping --max-message-bytes"
            );
        }
        Err(e) => {
            args.fit_to_broker(None);
            tracing::warn!(
                max_message_bytes = configured,
                error = %e,
                "could not ask the broker for its message limit; keeping --max-message-bytes"
            );
        }
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(mut args: AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    fit_to_broker(&mut args).await;
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
    let mut over_limit = OverLimit::default();
    let meter = telemetry.meter("javelin-agent");
    let over_limit_seen = meter
        .u64_counter("javelin.agent.targets.over_limit")
        .with_description(
            "JVMs found while --max-targets were profiled already (each counted once)",
        )
        .build();
    let unprofiled = Arc::new(AtomicU64::new(0));
    let observed = unprofiled.clone();
    let _unprofiled_gauge = meter
        .u64_observable_gauge("javelin.agent.targets.unprofiled")
        .with_description("JVMs of the last discovery scan not profiled because of --max-targets")
        .with_callback(move |o| o.observe(observed.load(Ordering::Relaxed), &[]))
        .build();
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
            let Some(handle) = running.remove(&key) else {
                continue;
            };
            // A disabled JVM is tried again too (its flag cannot change): each
            // try republishes its status, which keeps it on the targets page.
            let reason = match handle.await {
                Ok(TargetEnd::AttachFailed(reason) | TargetEnd::Conflict(reason)) => reason,
                Ok(TargetEnd::Disabled) => target::DISABLED.to_string(),
                _ => continue,
            };
            let previous = retries.get(&key).copied();
            let retry = Retry::after_failure(previous, now_ms(), &reason);
            // Why, at warn once per JVM and reason (the target's status carries
            // it on); the retries' repeats at debug.
            let retry_in = Duration::from_millis((retry.at_ms - now_ms()).max(0) as u64);
            if previous.is_none_or(|p| p.reason != retry.reason) {
                tracing::warn!(pid = key.0, %reason, ?retry_in, "not profiling this JVM");
            } else {
                tracing::debug!(pid = key.0, %reason, ?retry_in, attempts = retry.attempts, "not profiling this JVM");
            }
            retries.insert(key, retry);
        }
        let now = now_ms();
        let jvms = proc.scan(now, Duration::from_secs(args.min_jvm_age_secs), &args.pids);
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
        // A waiting JVM that exits gets its last status, like a profiled one.
        for identity in over_limit.forget_gone(|k| jvms.iter().any(|j| (j.pid, j.start_ms) == *k)) {
            metrics.state(identity.target_id, None);
            spool.push(unprofiled_status(identity, TargetState::Exited, ""));
        }
        let mut candidates: Vec<JvmProcess> = jvms
            .into_iter()
            .filter(|jvm| {
                let key = (jvm.pid, jvm.start_ms);
                (args.pids.is_empty() || args.pids.contains(&jvm.pid))
                    && !running.contains_key(&key)
                    && retries.get(&key).is_none_or(|r| r.at_ms <= now)
                    && jvm.pid != std::process::id()
            })
            .collect();
        // The longest-waiting JVMs get free slots first.
        candidates.sort_by_key(|j| over_limit.since(&(j.pid, j.start_ms)).unwrap_or(i64::MAX));
        let (mut waiting, mut first_seen) = (0u64, Vec::new());
        for jvm in candidates {
            let key = (jvm.pid, jvm.start_ms);
            if running.len() >= args.max_targets {
                waiting += 1;
                let seen = over_limit.see(key, now);
                if matches!(seen, OverLimitSeen::New | OverLimitSeen::Due) {
                    if seen == OverLimitSeen::New {
                        over_limit_seen.add(1, &[]);
                        // The log names a few; the metrics count them all.
                        if first_seen.len() < 16 {
                            first_seen.push(jvm.pid);
                        }
                    }
                    // From /proc only: a Kubernetes API lookup per waiting JVM
                    // would hold the discovery loop (and a shutdown) while the
                    // API is slow. The row keeps the target id; a target task
                    // later reports the service from the pod's labels.
                    let identity = target::identity(&jvm, &config);
                    over_limit.reported(&key, &identity);
                    metrics.state(identity.target_id, Some(TargetState::OverTargetLimit));
                    let message = format!(
                        "not profiled: {} JVMs on this node are profiled already (--max-targets); waiting for a free slot",
                        args.max_targets
                    );
                    spool.push(unprofiled_status(
                        identity,
                        TargetState::OverTargetLimit,
                        &message,
                    ));
                }
                continue;
            }
            if over_limit.started(&key) {
                tracing::info!(
                    pid = jvm.pid,
                    "a target slot freed up; profiling a waiting JVM"
                );
                metrics.state(
                    wire::target_id(&config.cluster, &config.node, key.0, key.1),
                    None,
                );
            }
            if retries.contains_key(&key) {
                tracing::debug!(pid = jvm.pid, "trying a JVM again");
            } else {
                tracing::info!(pid = jvm.pid, service = %jvm.service, "new JVM");
            }
            let task = target::run(
                jvm,
                config.clone(),
                spool.clone(),
                metrics.clone(),
                stop_rx.clone(),
            );
            running.insert(key, tokio::spawn(task));
        }
        unprofiled.store(waiting, Ordering::Relaxed);
        if waiting > 0 && over_limit.log_due(!first_seen.is_empty(), now) {
            tracing::warn!(
                waiting,
                max_targets = args.max_targets,
                new_pids = ?first_seen,
                "target limit reached; JVMs not profiled until a slot frees up"
            );
        }
    }
    // Shutdown fits the DaemonSet's terminationGracePeriodSeconds (60 s, see
    // deploy/kubernetes/base/agent.yaml and docs/operations/agent-lifecycle.md):
    // all targets at once publish their final partial window and end their
    // sessions (TARGETS_STOP_TIMEOUT, 20 s), then the spool drains (DRAIN_TIMEOUT,
    // 10 s): `run` returns within 30 s. No recorder operation starts after
    // 20 s (late targets are aborted), each ends within --attach-timeout-secs
    // (30 s) and the runtime waits for them: the process exits within 50 s.
    tracing::info!(targets = running.len(), "stopping recordings");
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + TARGETS_STOP_TIMEOUT;
    let mut late = 0;
    for (_, mut handle) in running {
        if tokio::time::timeout_at(deadline, &mut handle)
            .await
            .is_err()
        {
            handle.abort();
            late += 1;
        }
    }
    if late > 0 {
        tracing::warn!(
            late,
            timeout = ?TARGETS_STOP_TIMEOUT,
            "targets not stopped in time; their sessions end by themselves"
        );
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
    fn waiting_jvms_are_reported_once_then_periodically_and_remembered_within_a_bound() {
        let mut w = OverLimit::default();
        let key = (42, 1000);
        assert_eq!(w.see(key, 0), OverLimitSeen::New);
        assert_eq!(w.see(key, 10_000), OverLimitSeen::Quiet, "not every tick");
        assert_eq!(
            w.see(key, OVER_LIMIT_REPORT_EVERY_MS - 1),
            OverLimitSeen::Quiet
        );
        assert_eq!(w.see(key, OVER_LIMIT_REPORT_EVERY_MS), OverLimitSeen::Due);
        assert_eq!(
            w.see(key, OVER_LIMIT_REPORT_EVERY_MS + 10_000),
            OverLimitSeen::Quiet
        );
        for pid in 0..OVER_LIMIT_REMEMBERED as u32 * 2 {
            w.see((1000 + pid, 5), 0);
        }
        assert_eq!(w.waiting.len(), OVER_LIMIT_REMEMBERED, "memory bound");
        assert_eq!(w.see((99_999, 5), 0), OverLimitSeen::Unremembered);
        assert_eq!(w.since(&key), Some(0));
        assert!(w.started(&key), "a freed slot takes it");
        assert!(!w.started(&key));
        assert_eq!(w.see((99_999, 5), 1), OverLimitSeen::New, "room again");
        let identity = TargetIdentity {
            target_id: 7,
            ..TargetIdentity::default()
        };
        w.reported(&(99_999, 5), &identity);
        let gone = w.forget_gone(|k| k.0 != 99_999 && k.0 % 2 == 0);
        assert_eq!(gone, vec![identity], "gone JVMs with a reported identity");
        assert_eq!(w.waiting.len(), OVER_LIMIT_REMEMBERED / 2);
    }

    #[test]
    fn the_over_limit_log_is_rate_limited() {
        let mut w = OverLimit::default();
        assert!(w.log_due(true, 0));
        assert!(!w.log_due(true, 30_000), "a minute between lines");
        assert!(w.log_due(true, 60_000));
        assert!(!w.log_due(false, 120_000), "nothing new: every ten minutes");
        assert!(w.log_due(false, 660_000));
    }

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        let delays: Vec<i64> =
            std::iter::successors(Some(Retry::after_failure(None, 0, "r")), |r| {
                Some(Retry::after_failure(Some(*r), 0, "r"))
            })
            .take(8)
            .map(|r| r.at_ms / 1000)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
