//! One profiled JVM: attach, record, and every window collect → parse →
//! aggregate → publish, until the JVM exits or the agent stops.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use javelin_schema::wire::{self, TargetIdentity, TargetState, TargetStatus};
use tokio::sync::watch;

use crate::aggregate::{Bounds, WindowAggregator};
use crate::artifacts::ArtifactPolicy;
use crate::attach::AttachTarget;
use crate::discovery::{ForeignProfiler, JvmProcess};
use crate::jfr_parse::{EventRules, parse_chunks};
use crate::kubernetes_api::PodLookup;
use crate::metrics::AgentMetrics;
use crate::recorder::{
    AsyncProfilerRecorder, AsyncProfilerSettings, Collected, JfrRecorder, JfrSettings, Recorder,
};
use crate::session::{self, Marker, Ownership};
use crate::spool::{Destination, Spool, Spooled};

/// Everything a target task needs besides its JVM.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub cluster: String,
    pub node: String,
    pub window: Duration,
    pub recording_name: String,
    pub attach_timeout: Duration,
    pub jfr: JfrSettings,
    pub bounds: Bounds,
    /// This agent installation's name, written into session markers.
    pub installation: String,
    /// Pod lookups in the Kubernetes API, when enabled and in a cluster.
    pub pods: Option<Arc<PodLookup>>,
    /// async-profiler mode, when a library is configured; built-in JFR otherwise.
    pub async_profiler: Option<AsyncProfilerSettings>,
    /// Raw JFR kept on the node, when enabled.
    pub artifacts: Option<ArtifactPolicy>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn identity(jvm: &JvmProcess, config: &TargetConfig) -> TargetIdentity {
    TargetIdentity {
        cluster: config.cluster.clone(),
        namespace: jvm.pod.namespace.clone(),
        service: jvm.service.clone(),
        pod: jvm.pod.pod.clone(),
        container: jvm.pod.container.clone(),
        container_id: jvm.pod.container_id.clone(),
        pod_uid: jvm.pod.pod_uid.clone(),
        node: config.node.clone(),
        pid: jvm.pid,
        nspid: jvm.nspid,
        jvm_start_ms: jvm.start_ms,
        target_id: wire::target_id(&config.cluster, &config.node, jvm.pid, jvm.start_ms),
    }
}

/// How a target task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEnd {
    Exited,
    Stopped,
    Disabled,
    AttachFailed(String),
    /// Another profiler or agent owns the JVM.
    Conflict(String),
}

/// Publishes a target's windows and status through the spool.
struct Reporter {
    /// The recorder kind (`jfr`, `async-profiler`).
    recorder: &'static str,
    spool: Spool,
    metrics: AgentMetrics,
    identity: TargetIdentity,
    windows: u64,
    /// Drops and truncation since profiling started (reported in status).
    losses: Losses,
    /// What the last status reported, to report again when anything grows.
    reported: Losses,
}

/// Cumulative data losses of one target, all of which its status reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Losses {
    spool_dropped_messages: u64,
    dropped_events: u64,
    dropped_stacks: u64,
    truncated_windows: u64,
}

impl Reporter {
    fn window(&mut self, window: &wire::ProfileWindow) {
        self.spool.push(Spooled {
            destination: Destination::Profiles,
            key: self.identity.service.clone(),
            payload: window.to_bytes(),
            target_id: self.identity.target_id,
        });
        self.windows += 1;
        // The accounting repeats in every part of a window: count it once.
        if window.part_index == 0 {
            let acc = window.accounting.unwrap_or_default();
            self.losses.dropped_events += acc.dropped_events;
            self.losses.dropped_stacks += acc.dropped_stacks;
            self.losses.truncated_windows += u64::from(acc.truncated);
        }
    }

    /// Losses grown since the last status, if any.
    fn new_losses(&mut self) -> Option<Losses> {
        self.losses.spool_dropped_messages = self.spool.drops(self.identity.target_id).messages;
        (self.losses != self.reported).then_some(self.losses)
    }

    async fn status(&mut self, state: TargetState, last_error: &str) {
        self.metrics.state(self.identity.target_id, Some(state));
        self.losses.spool_dropped_messages = self.spool.drops(self.identity.target_id).messages;
        self.reported = self.losses;
        let status = TargetStatus {
            target: Some(self.identity.clone()),
            state: state as i32,
            recorder: self.recorder.into(),
            last_error: last_error.to_string(),
            observed_at_ms: now_ms(),
            agent_version: crate::AGENT_VERSION.into(),
            windows_published: self.windows,
            spool_dropped_messages: self.losses.spool_dropped_messages,
            dropped_events: self.losses.dropped_events,
            dropped_stacks: self.losses.dropped_stacks,
            truncated_windows: self.losses.truncated_windows,
        };
        self.spool.push(Spooled {
            destination: Destination::Status,
            key: self.identity.target_id.to_string(),
            payload: status.to_bytes(),
            target_id: self.identity.target_id,
        });
    }
}

/// Profiles one JVM until it exits or `shutdown` turns true.
pub async fn run(
    mut jvm: JvmProcess,
    config: TargetConfig,
    spool: Spool,
    metrics: AgentMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> TargetEnd {
    if let Some(pods) = &config.pods {
        enrich_from_api(&mut jvm, pods).await;
    }
    let recorder_kind = if config.async_profiler.is_some() {
        "async-profiler"
    } else {
        "jfr"
    };
    let mut reporter = Reporter {
        recorder: recorder_kind,
        spool,
        metrics,
        identity: identity(&jvm, &config),
        windows: 0,
        losses: Losses::default(),
        reported: Losses::default(),
    };
    let pid = jvm.pid;
    if jvm.attach_disabled {
        reporter
            .status(
                TargetState::Disabled,
                "started with -XX:+DisableAttachMechanism",
            )
            .await;
        return TargetEnd::Disabled;
    }
    match &jvm.foreign_profiler {
        Some(ForeignProfiler::AsyncProfiler(path)) => {
            let message = format!(
                "async-profiler from {path} is loaded by someone else; not touching this JVM"
            );
            reporter
                .status(TargetState::ExternalConflict, &message)
                .await;
            return TargetEnd::Conflict(message);
        }
        Some(ForeignProfiler::Other(path)) => {
            let message =
                format!("another profiling agent is loaded ({path}); not touching this JVM");
            reporter
                .status(TargetState::UnknownProfiler, &message)
                .await;
            return TargetEnd::Conflict(message);
        }
        None => {}
    }
    let me = Marker {
        installation: config.installation.clone(),
        recorder: recorder_kind.into(),
        recording: config.recording_name.clone(),
        agent_pid: std::process::id(),
        agent_start_ms: session::own_start_ms(),
    };
    let marker_path = Marker::path(pid, jvm.nspid);
    let ownership = match std::fs::read_to_string(&marker_path)
        .ok()
        .map(|t| Marker::parse(&t))
    {
        None => Ownership::Fresh,
        Some(Some(existing)) => Marker::ownership(Some(&existing), &me, session::process_alive),
        // An unreadable marker is someone else's file: leave the JVM alone.
        Some(None) => Ownership::Foreign(Marker {
            installation: "<unreadable marker>".into(),
            ..me.clone()
        }),
    };
    if let Ownership::Foreign(owner) = &ownership {
        let message = format!(
            "session owned by installation {:?} (agent pid {}) per {}",
            owner.installation,
            owner.agent_pid,
            marker_path.display()
        );
        reporter
            .status(TargetState::ExternalConflict, &message)
            .await;
        return TargetEnd::Conflict(message);
    }
    let attach = AttachTarget {
        pid,
        nspid: jvm.nspid,
        timeout: config.attach_timeout,
    };
    let recorder: Box<dyn Recorder> = match &config.async_profiler {
        Some(settings) => Box::new(AsyncProfilerRecorder::new(attach, settings.clone())),
        None => Box::new(JfrRecorder::new(
            attach,
            config.recording_name.clone(),
            config.jfr.clone(),
        )),
    };
    let stale = match &ownership {
        Ownership::Orphaned(old) if old.recording != config.recording_name => {
            Some(old.recording.clone())
        }
        _ => None,
    };
    let Some((started, mut recorder)) =
        blocking(recorder, move |r| r.start(stale.as_deref())).await
    else {
        return TargetEnd::AttachFailed("recorder task panicked".into());
    };
    if let Err(e) = started {
        let message = e.to_string();
        tracing::warn!(pid, error = %message, "attach failed");
        reporter.status(TargetState::AttachFailed, &message).await;
        return TargetEnd::AttachFailed(message);
    }
    if let Err(e) = std::fs::write(&marker_path, me.render()) {
        tracing::warn!(pid, error = %e, path = %marker_path.display(), "could not write the session marker");
    }
    let state = match ownership {
        Ownership::Orphaned(old) => {
            tracing::info!(
                pid,
                old_agent = old.agent_pid,
                "recovered a session orphaned by a previous agent"
            );
            TargetState::OrphanedRecovered
        }
        _ => TargetState::Profiling,
    };
    tracing::info!(pid, service = %jvm.service, state = state.name(), "profiling");
    reporter.status(state, "").await;

    let mut window_start = now_ms();
    let mut next = Instant::now() + config.window;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = shutdown.changed() => {
                let _ = blocking(recorder, |r| r.stop()).await;
                let _ = std::fs::remove_file(&marker_path);
                reporter.metrics.state(reporter.identity.target_id, None);
                return TargetEnd::Stopped;
            }
        }
        next += config.window;
        if !still_running(&jvm) {
            tracing::info!(pid, "target exited");
            reporter.status(TargetState::Exited, "").await;
            reporter.metrics.state(reporter.identity.target_id, None);
            return TargetEnd::Exited;
        }
        let Some((collected, back)) = blocking(recorder, |r| r.collect()).await else {
            return TargetEnd::AttachFailed("recorder task panicked".into());
        };
        recorder = back;
        let window_end = now_ms();
        let collected = match collected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pid, error = %e, "collecting the window failed");
                reporter
                    .status(TargetState::Profiling, &e.to_string())
                    .await;
                window_start = window_end;
                continue;
            }
        };
        let identity = reporter.identity.clone();
        let (cfg_bounds, cpu_period) = (config.bounds, config.jfr.cpu_period);
        let artifacts = config.artifacts.clone();
        let built = tokio::task::spawn_blocking(move || {
            let kept =
                artifacts.map(|policy| keep_artifact(&policy, &collected, &identity, window_start));
            let (windows, error) = build_windows(
                collected,
                &identity,
                window_start,
                window_end,
                cfg_bounds,
                cpu_period,
            );
            (windows, error.or(kept.and_then(Result::err)))
        })
        .await;
        let (windows, parse_error) = match built {
            Ok(v) => v,
            Err(e) => (Vec::new(), Some(format!("parser task failed: {e}"))),
        };
        if let Some(err) = &parse_error {
            tracing::warn!(pid, error = %err, "JFR data partly unusable");
        }
        let jfr_bytes = windows
            .first()
            .and_then(|w| w.accounting)
            .map_or(0, |a| a.jfr_bytes);
        reporter
            .metrics
            .window(&windows, jfr_bytes, parse_error.is_some());
        for window in &windows {
            reporter.window(window);
        }
        tracing::debug!(
            pid,
            parts = windows.len(),
            total = reporter.windows,
            "window spooled"
        );
        if let Some(e) = parse_error {
            reporter.status(TargetState::Profiling, &e).await;
        } else if let Some(losses) = reporter.new_losses() {
            // The counters travel in the status; the text names what needs an operator.
            let message =
                if losses.spool_dropped_messages > reporter.reported.spool_dropped_messages {
                    format!(
                        "{} messages dropped from the full spool while Kafka was unavailable",
                        losses.spool_dropped_messages
                    )
                } else {
                    String::new()
                };
            reporter.status(TargetState::Profiling, &message).await;
        }
        window_start = window_end;
    }
}

/// Parses the new chunks of a window and builds its wire messages.
fn build_windows(
    collected: Collected,
    identity: &TargetIdentity,
    window_start: i64,
    window_end: i64,
    bounds: Bounds,
    cpu_period: Duration,
) -> (Vec<wire::ProfileWindow>, Option<String>) {
    let started = Instant::now();
    let mut aggregator = WindowAggregator::new(bounds);
    let rules = EventRules {
        cpu_period_nanos: cpu_period.as_nanos() as i64,
        max_events: bounds.max_events_per_window,
    };
    let mut budget = rules.max_events;
    let jfr_bytes: u64 = collected.new_chunks.iter().map(|c| c.size as u64).sum();
    let outcome = parse_chunks(
        &collected.bytes,
        &collected.new_chunks,
        rules,
        &mut budget,
        &mut |kind, frames, v, c| aggregator.add(kind, frames, v, c),
    );
    let parse_micros = started.elapsed().as_micros() as u64;
    let windows = aggregator.finish(
        identity,
        window_start,
        window_end,
        &outcome.counts,
        jfr_bytes,
        parse_micros,
    );
    let error = outcome.error.or(collected.error).map(|e| e.to_string());
    (windows, error)
}

/// Fills the container name and the pod-label step of the service-name chain
/// from the Kubernetes API. A failed lookup only loses those two facts.
async fn enrich_from_api(jvm: &mut JvmProcess, pods: &PodLookup) {
    if jvm.pod.namespace.is_empty() || jvm.pod.pod.is_empty() {
        return;
    }
    match pods.pod(&jvm.pod.namespace, &jvm.pod.pod).await {
        Ok(meta) => {
            if jvm.pod.container.is_empty()
                && let Some(name) = meta.container_name(&jvm.pod.container_id)
            {
                jvm.pod.container = name.to_string();
            }
            jvm.resolve_service(meta.app_name());
        }
        Err(e) => {
            tracing::warn!(pid = jvm.pid, error = %e, "pod lookup failed; identity without pod labels")
        }
    }
}

/// Keeps the window's new JFR chunks as a file under the artifact policy.
fn keep_artifact(
    policy: &ArtifactPolicy,
    collected: &Collected,
    identity: &TargetIdentity,
    window_start: i64,
) -> Result<(), String> {
    let chunks: Vec<&[u8]> = collected
        .new_chunks
        .iter()
        .map(|c| &collected.bytes[c.offset..c.offset + c.size])
        .collect();
    if chunks.is_empty() {
        return Ok(());
    }
    let name = format!("{}-{}-{window_start}", identity.service, identity.pid);
    policy
        .keep(&name, &chunks)
        .map(|_| ())
        .map_err(|e| format!("keeping raw JFR in {}: {e}", policy.dir.display()))
}

/// Runs blocking recorder work off the async threads, handing the recorder back.
async fn blocking<T, F>(mut recorder: Box<dyn Recorder>, f: F) -> Option<(T, Box<dyn Recorder>)>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Recorder) -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let out = f(recorder.as_mut());
        (out, recorder)
    })
    .await
    .ok()
}

fn still_running(jvm: &JvmProcess) -> bool {
    // Same pid and same start time: a recycled pid is another process.
    crate::discovery::ProcFs::new("/proc")
        .ok()
        .and_then(|p| p.inspect(jvm.pid))
        .is_some_and(|now| now.start_ms == jvm.start_ms)
}
