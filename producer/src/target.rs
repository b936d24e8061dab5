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
use crate::jfr_parse::{CpuEvent, EventRules, parse_chunks};
use crate::kubernetes_api::PodLookup;
use crate::metrics::AgentMetrics;
use crate::recorder::async_profiler::owner_tag;
use crate::recorder::{
    AsyncProfilerRecorder, AsyncProfilerSettings, CollectSlots, Collected, JfrRecorder,
    JfrSettings, Recorder,
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
    /// Collect + parse slots shared by every target of the agent: a window's
    /// dump is read and parsed only while holding one, so at most
    /// `--max-concurrent-collects` dumps are in memory at once.
    pub collect_slots: Arc<tokio::sync::Semaphore>,
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
        app_version: jvm.app_version.clone(),
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

/// A target's status is published after every window, and at least this often
/// while a window is open (windows may be up to an hour long; the targets page
/// lists targets by their last status).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// At a graceful stop, how long a target may take to collect, parse and spool
/// its open window as a final partial window and end its session. Past it the
/// window is counted as a failed collect and the session left to end by itself
/// (its marker stays, so the next agent recovers it). The agent's shutdown
/// (`agent::TARGETS_STOP_TIMEOUT`) and the DaemonSet's grace period are sized
/// from this.
pub const FINAL_WINDOW_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes a target's windows and status through the spool.
struct Reporter {
    /// The recorder kind (`jfr`, `async-profiler`, …): configured until the
    /// recorder has started, then what it reports.
    recorder: &'static str,
    /// How the session samples ([`Recorder::sampling`] and the window), once started.
    sampling: String,
    spool: Spool,
    metrics: AgentMetrics,
    identity: TargetIdentity,
    windows: u64,
    /// Drops and truncation since profiling started (reported in status).
    losses: Losses,
}

/// Cumulative data losses of one target, all of which its status reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Losses {
    spool_dropped_messages: u64,
    dropped_events: u64,
    dropped_stacks: u64,
    truncated_windows: u64,
    failed_collects: u64,
    oversized_messages: u64,
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
            self.losses.oversized_messages += acc.oversized_messages;
        }
    }

    /// A window whose data could not be collected.
    fn failed_collect(&mut self, reason: &'static str) {
        self.losses.failed_collects += 1;
        self.metrics.failed_collect(reason);
    }

    async fn status(&mut self, state: TargetState, last_error: &str) {
        self.metrics.state(self.identity.target_id, Some(state));
        self.losses.spool_dropped_messages = self.spool.drops(self.identity.target_id).messages;
        let status = TargetStatus {
            target: Some(self.identity.clone()),
            state: state as i32,
            recorder: self.recorder.into(),
            sampling: self.sampling.clone(),
            last_error: last_error.to_string(),
            observed_at_ms: now_ms(),
            agent_version: crate::AGENT_VERSION.into(),
            windows_published: self.windows,
            spool_dropped_messages: self.losses.spool_dropped_messages,
            dropped_events: self.losses.dropped_events,
            dropped_stacks: self.losses.dropped_stacks,
            truncated_windows: self.losses.truncated_windows,
            failed_collects: self.losses.failed_collects,
            oversized_messages: self.losses.oversized_messages,
        };
        self.spool.push(Spooled {
            destination: Destination::Status,
            key: self.identity.target_id.to_string(),
            payload: status.to_bytes(),
            target_id: self.identity.target_id,
        });
    }
}

/// Why a JVM started with attach disabled is not profiled.
pub const DISABLED: &str = "started with -XX:+DisableAttachMechanism";

/// The state, and the message for the operator, a status reports.
struct Health {
    state: TargetState,
    last_error: String,
    /// Spool drops already named in a message.
    spool_drops_told: u64,
}

/// A foreign profiler's state and message, as reported for it.
fn conflict(foreign: &ForeignProfiler) -> (TargetState, String) {
    match foreign {
        ForeignProfiler::AsyncProfiler(path) => (
            TargetState::ExternalConflict,
            format!("async-profiler from {path} is loaded by someone else; not touching this JVM"),
        ),
        ForeignProfiler::Other(path) => (
            TargetState::UnknownProfiler,
            format!("another profiling agent is loaded ({path}); not touching this JVM"),
        ),
    }
}

/// Profiles one JVM until it exits, another profiler appears in it, or
/// `shutdown` turns true.
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
        // Nothing records until a session started (then `recorder.kind()`):
        // a disabled or conflicting JVM's status names no recorder, and the
        // UI no CPU basis for it.
        recorder: "",
        sampling: String::new(),
        spool,
        metrics,
        identity: identity(&jvm, &config),
        windows: 0,
        losses: Losses::default(),
    };
    let pid = jvm.pid;
    // A JVM left unprofiled returns why; the discovery loop logs it (once per
    // JVM) and decides when to try again.
    if jvm.attach_disabled {
        reporter.status(TargetState::Disabled, DISABLED).await;
        return TargetEnd::Disabled;
    }
    if let Some(foreign) = &jvm.foreign_profiler {
        let (state, message) = conflict(foreign);
        reporter.status(state, &message).await;
        return TargetEnd::Conflict(message);
    }
    let mut me = Marker {
        installation: config.installation.clone(),
        recorder: recorder_kind.into(),
        recording: config.recording_name.clone(),
        agent_pid: std::process::id(),
        agent_start_ms: session::own_start_ms(),
        jvm: Some(jvm.start_id.clone()),
    };
    let nspid = jvm.nspid;
    let marker_path = Marker::path(pid, nspid);
    let ownership = match Marker::read_dated(pid, nspid) {
        Ok(existing) => {
            let existing = existing.and_then(|(marker, written_ms)| {
                if marker.stale(&me, written_ms, jvm.start_ms) {
                    tracing::info!(
                        pid,
                        path = %marker_path.display(),
                        "replacing a session marker left by an earlier process with this pid"
                    );
                    return None;
                }
                Some(marker)
            });
            Marker::ownership(existing.as_ref(), &me, session::process_alive)
        }
        // A marker that cannot be read safely (a link, a FIFO, another user's
        // file, garbled) is someone else's file: leave the JVM alone.
        Err(e) => {
            let message = format!("{e}; not touching this JVM");
            reporter
                .status(TargetState::ExternalConflict, &message)
                .await;
            return TargetEnd::Conflict(message);
        }
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
        Some(settings) => {
            let tag = |m: &Marker| owner_tag(&m.installation, m.agent_pid, m.agent_start_ms);
            let mut ap = AsyncProfilerRecorder::new(attach, settings.clone())
                .owned_by(tag(&me))
                .with_collect_slots(CollectSlots::new(config.collect_slots.clone()));
            if let Ownership::Orphaned(old) = &ownership {
                ap = ap.recovering(tag(old));
            }
            Box::new(ap)
        }
        None => Box::new(
            JfrRecorder::new(attach, config.recording_name.clone(), config.jfr.clone())
                .with_collect_slots(CollectSlots::new(config.collect_slots.clone())),
        ),
    };
    // An orphaned JFR recording of ours is stopped by whichever recorder now
    // runs (an operator may have switched from the built-in recorder to
    // async-profiler): left alone, it would record until the JVM exits.
    let stale = match &ownership {
        Ownership::Orphaned(old)
            if old.recorder.starts_with("jfr")
                && (old.recording != config.recording_name || recorder_kind != "jfr") =>
        {
            Some(old.recording.clone())
        }
        _ => None,
    };
    let Some((started, mut recorder)) =
        blocking(recorder, move |r| r.start(stale.as_deref())).await
    else {
        tracing::error!(pid, "starting the recorder panicked");
        return TargetEnd::AttachFailed("recorder task panicked".into());
    };
    if let Err(e) = started {
        let message = format!("attach failed: {e}");
        reporter
            .status(TargetState::AttachFailed, &e.to_string())
            .await;
        return TargetEnd::AttachFailed(message);
    }
    reporter.recorder = recorder.kind();
    reporter.sampling = format!(
        "{}; {}-s windows",
        recorder.sampling(),
        config.window.as_secs_f64()
    );
    me.recorder = recorder.kind().into();
    if let Err(e) = me.write(pid, nspid) {
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
    // What the recorder says about how it samples (e.g. a JDK 25 target not on
    // the CPU-time sampler) stands in the status while nothing needs saying.
    let notice = recorder.notice().unwrap_or_default().to_string();
    reporter.status(state, &notice).await;
    let mut health = Health {
        state,
        last_error: notice.clone(),
        spool_drops_told: 0,
    };

    // After failed collects a window reaches back at most the recording's
    // `maxage` (3 windows, at least 60 s): older data is gone from it.
    let mut clock = WindowClock::new(config.window, config.jfr.max_age, Instant::now(), now_ms());
    let mut next_status = Instant::now() + STATUS_INTERVAL;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(clock.deadline().min(next_status).into()) => {}
            _ = shutdown.changed() => {
                return stop_gracefully(recorder, &config, &mut reporter, &health, &mut clock, nspid).await;
            }
        }
        if Instant::now() < clock.deadline() {
            // A long window: the status in between, with the same counters.
            reporter.status(health.state, &health.last_error).await;
            next_status = Instant::now() + STATUS_INTERVAL;
            continue;
        }
        // Checked every window: the JVM may have exited, or someone may have
        // loaded another profiler into it while we profile.
        let Some(now_jvm) = still_running(&jvm) else {
            tracing::info!(pid, "target exited");
            reporter.status(TargetState::Exited, "").await;
            reporter.metrics.state(reporter.identity.target_id, None);
            return TargetEnd::Exited;
        };
        if let Some(foreign) = &now_jvm.foreign_profiler {
            let (state, mut message) = conflict(foreign);
            tracing::warn!(pid, %message, "another profiler appeared; stopping our session");
            let stopped = blocking(recorder, |r| r.stop()).await;
            match stopped {
                Some((Ok(()), _)) => {
                    remove_marker(pid, nspid);
                }
                Some((Err(e), _)) => {
                    message = format!("{message}; stopping our session failed: {e}")
                }
                None => message = format!("{message}; stopping our session panicked"),
            }
            reporter.status(state, &message).await;
            return TargetEnd::Conflict(message);
        }
        // The collect reads the dump under one of the agent's collect slots,
        // which travels in `Collected` until the windows are built.
        let Some((collected, back)) = blocking(recorder, |r| r.collect()).await else {
            tracing::error!(pid, "collecting the window panicked");
            return TargetEnd::AttachFailed("recorder task panicked".into());
        };
        recorder = back;
        let (now, wall_ms) = (Instant::now(), now_ms());
        let collected = match collected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pid, error = %e, "collecting the window failed");
                reporter.failed_collect(e.reason());
                health.last_error = e.to_string();
                reporter.status(health.state, &health.last_error).await;
                next_status = Instant::now() + STATUS_INTERVAL;
                // The window stays open: a JFR recording keeps the data for the
                // next dump (e.g. the attach timed out on a stopped JVM), so the
                // next window covers the whole gap instead of leaving a hole. (An
                // async-profiler session that failed to stop is lost: the window
                // then holds less than its span, never data from outside it.)
                clock.retry(now);
                continue;
            }
        };
        let (window_start, window_end) = clock.close(now, wall_ms);
        let parse_error =
            publish_windows(collected, window_start, window_end, &config, &mut reporter).await;
        health.state = TargetState::Profiling;
        let spool_message = health.spool_message(&reporter);
        health.last_error = parse_error
            .or((!spool_message.is_empty()).then_some(spool_message))
            .unwrap_or_else(|| notice.clone());
        reporter.status(health.state, &health.last_error).await;
        next_status = Instant::now() + STATUS_INTERVAL;
    }
}

impl Health {
    /// Names spool drops that are new since the last message, if any.
    fn spool_message(&mut self, reporter: &Reporter) -> String {
        let drops = reporter.spool.drops(reporter.identity.target_id);
        if drops.messages <= self.spool_drops_told {
            return String::new();
        }
        self.spool_drops_told = drops.messages;
        let full = drops.messages - drops.refused;
        match (full, drops.refused) {
            (_, 0) => {
                format!("{full} messages dropped from the full spool while Kafka was unavailable")
            }
            (0, refused) => format!(
                "{refused} messages refused by Kafka as too large for the topic (max.message.bytes); dropped"
            ),
            (full, refused) => format!(
                "{full} messages dropped from the full spool while Kafka was unavailable, \
                 {refused} refused by Kafka as too large for the topic; dropped"
            ),
        }
    }
}

/// Parses a collected window, spools its parts and records its metrics;
/// returns what made the data partly unusable, if anything.
async fn publish_windows(
    collected: Collected,
    window_start: i64,
    window_end: i64,
    config: &TargetConfig,
    reporter: &mut Reporter,
) -> Option<String> {
    reporter.metrics.dump_read(collected.bytes.len());
    let pid = reporter.identity.pid;
    let identity = reporter.identity.clone();
    let (cfg_bounds, cpu_period) = (config.bounds, config.jfr.cpu_period);
    let rules = EventRules {
        cpu_period_nanos: cpu_period.as_nanos() as i64,
        max_events: cfg_bounds.max_events_per_window,
        cpu_event: CpuEvent::of_recorder(reporter.recorder),
        max_parse_time: Some(parse_time_budget(config.window)),
    };
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
            rules,
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
    parse_error
}

/// A graceful stop: the open window is collected and published as a final
/// partial window, the session ended, its marker removed, and a last status
/// carries the final counters; all within [`FINAL_WINDOW_TIMEOUT`].
async fn stop_gracefully(
    recorder: Box<dyn Recorder>,
    config: &TargetConfig,
    reporter: &mut Reporter,
    health: &Health,
    clock: &mut WindowClock,
    nspid: u32,
) -> TargetEnd {
    let pid = reporter.identity.pid;
    let deadline = tokio::time::Instant::now() + FINAL_WINDOW_TIMEOUT;
    // `finish` ends the session before it waits for a collect slot, so the
    // session ends even when the final window cannot be read in time.
    let finished = tokio::time::timeout_at(deadline, async {
        let (outcome, _) = blocking(recorder, |r| r.finish()).await?;
        Some(outcome)
    })
    .await;
    let mut stopped = false;
    let mut state = health.state;
    let last_error = match finished {
        Ok(Some((collected, ended))) => {
            stopped = ended.is_ok();
            if let Err(e) = &ended {
                tracing::warn!(pid, error = %e, "stopping the session failed");
            }
            match collected {
                Ok(collected) => {
                    let (start, end) = clock.close(Instant::now(), now_ms());
                    let window = tokio::time::timeout_at(
                        deadline,
                        publish_windows(collected, start, end, config, reporter),
                    )
                    .await;
                    match window {
                        Ok(error) => {
                            state = TargetState::Profiling;
                            error.unwrap_or_default()
                        }
                        Err(_) => {
                            reporter.failed_collect("shutdown_timeout");
                            "agent stopping: the final window was not parsed in time".into()
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pid, error = %e, "collecting the final window failed");
                    reporter.failed_collect(e.reason());
                    e.to_string()
                }
            }
        }
        Ok(None) => {
            reporter.failed_collect("panic");
            "agent stopping: the recorder task panicked".into()
        }
        Err(_) => {
            tracing::warn!(pid, timeout = ?FINAL_WINDOW_TIMEOUT, "final window not collected in time; the session ends by itself");
            reporter.failed_collect("shutdown_timeout");
            format!(
                "agent stopping: the final window was not collected within {FINAL_WINDOW_TIMEOUT:?}"
            )
        }
    };
    // A session that did not stop keeps its marker: the next agent recovers it.
    if stopped {
        remove_marker(pid, nspid);
    }
    reporter.status(state, &last_error).await;
    reporter.metrics.state(reporter.identity.target_id, None);
    TargetEnd::Stopped
}

/// When a target's windows close and which span of time each one covers.
///
/// The next deadline keeps the regular cadence (`deadline + window`) unless the
/// loop is late: the collect took long (a stopped JVM answers the attach only
/// once it resumes; a slow dump) or the loop fell behind. A fixed `next +=
/// window` schedule is wrong there: every missed deadline is already past, so
/// `sleep_until` returns at once for each, and a JVM stopped for 40 s came back
/// with a burst of windows of 53 ms, 485 ms and 7.5 s, all starting in the same
/// second. A late loop instead closes one window covering the whole gap and
/// sets the next deadline a full window from then, so no window is shorter
/// than half a window (see [`next_deadline`]).
///
/// Bounds are wall-clock ms. Each window starts where the previous one ended,
/// is never empty, and reaches back at most `horizon` (after a longer run of
/// failed collects the recorder holds no older data: the gap is the loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClock {
    window: Duration,
    horizon: Duration,
    deadline: Instant,
    /// The open window's start, in ms since the epoch, and when it opened.
    start_ms: i64,
    opened: Instant,
}

impl WindowClock {
    /// Opens the first window at `now` (`now_ms` on the wall clock).
    pub fn new(window: Duration, horizon: Duration, now: Instant, now_ms: i64) -> WindowClock {
        WindowClock {
            window,
            horizon: horizon.max(window),
            deadline: now + window,
            start_ms: now_ms,
            opened: now,
        }
    }

    /// When the open window is due to close.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The recorder handed over the open window's data at `now` (`now_ms` on
    /// the wall clock): returns the window's `(start, end)` in ms, opens the
    /// next window at its end and schedules the next deadline.
    pub fn close(&mut self, now: Instant, now_ms: i64) -> (i64, i64) {
        let horizon_ms = i64::try_from(self.horizon.as_millis()).unwrap_or(i64::MAX);
        let elapsed_ms = i64::try_from(now.saturating_duration_since(self.opened).as_millis())
            .unwrap_or(i64::MAX)
            .clamp(1, horizon_ms);
        // A wall clock that stood still or stepped back would make an empty or
        // reversed window; the monotonic clock's length is used instead.
        let end = if now_ms > self.start_ms {
            now_ms
        } else {
            self.start_ms.saturating_add(elapsed_ms)
        };
        let start = self.start_ms.max(end.saturating_sub(horizon_ms));
        self.start_ms = end;
        self.opened = now;
        self.deadline = next_deadline(self.deadline, now, self.window);
        (start, end)
    }

    /// Collecting the open window failed at `now`: it stays open (its data
    /// goes into the next collect), only the deadline moves on.
    pub fn retry(&mut self, now: Instant) {
        self.deadline = next_deadline(self.deadline, now, self.window);
    }
}

/// The deadline after `deadline`, decided at `now`, once the window due then
/// has been collected: the regular `deadline + window`, unless less than half
/// a window of it is left (the collect was slow, or the loop fell behind); then
/// a full window from `now`. Never in the past, so a late loop never fires
/// back to back.
pub fn next_deadline(deadline: Instant, now: Instant, window: Duration) -> Instant {
    let regular = deadline + window;
    if regular >= now + window / 2 {
        regular
    } else {
        now + window
    }
}

/// How long one window's parse may take: half the window, at least 5 s (the
/// reader does ~300 MB/s, a dump is at most `--max-dump-bytes`), so a target
/// whose dumps parse slowly (a huge or adversarial recording, a starved CPU)
/// drops events, counted, instead of falling behind its cadence while holding
/// a collect slot.
fn parse_time_budget(window: Duration) -> Duration {
    (window / 2).max(Duration::from_secs(5))
}

/// Parses the new chunks of a window and builds its wire messages.
fn build_windows(
    collected: Collected,
    identity: &TargetIdentity,
    window_start: i64,
    window_end: i64,
    bounds: Bounds,
    rules: EventRules,
) -> (Vec<wire::ProfileWindow>, Option<String>) {
    let started = Instant::now();
    let mut aggregator = WindowAggregator::new(bounds);
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

/// Fills the container name and the pod-label steps of the service-name and
/// version chains from the Kubernetes API. A failed lookup only loses those facts.
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
            jvm.resolve_app_version(meta.app_version());
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

/// Removes our session marker from the JVM (a failure only leaves it to the
/// next agent, which then recovers a session that is no longer running).
fn remove_marker(pid: u32, nspid: u32) {
    if let Err(e) = Marker::remove(pid, nspid) {
        tracing::warn!(pid, error = %e, "could not remove the session marker");
    }
}

/// The JVM as /proc shows it now, if it still runs: same pid and same start
/// (a recycled pid is another process). Compared by boot id and start ticks:
/// `start_ms` of a fresh read moves with the wall clock (`btime`), and a clock
/// step would make a running JVM look exited.
fn still_running(jvm: &JvmProcess) -> Option<JvmProcess> {
    crate::discovery::ProcFs::new("/proc")
        .ok()
        .and_then(|p| p.inspect(jvm.pid))
        .filter(|now| now.start_id == jvm.start_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL0: i64 = 1_700_000_000_000;
    const S: Duration = Duration::from_secs(1);

    /// Windows as `(start, end)` in ms since the loop started.
    type Spans = Vec<(i64, i64)>;

    /// Runs the target loop's schedule over simulated time for `run`: `collect`
    /// gets the time a collect starts (since the loop started) and says when it
    /// returns and whether it succeeded. The wall clock runs with the monotonic one.
    fn simulate(
        window: Duration,
        run: Duration,
        collect: impl Fn(Duration) -> (Duration, bool),
    ) -> Spans {
        let t0 = Instant::now();
        let wall = |at: Instant| WALL0 + (at - t0).as_millis() as i64;
        let mut clock = WindowClock::new(window, 60 * S, t0, WALL0);
        let mut spans = Vec::new();
        while clock.deadline() - t0 < run {
            let (done, ok) = collect(clock.deadline() - t0);
            let now = t0 + done;
            if ok {
                let (start, end) = clock.close(now, wall(now));
                spans.push((start - WALL0, end - WALL0));
            } else {
                clock.retry(now);
            }
        }
        spans
    }

    /// Collects take 50 ms; the JVM is stopped from `stop` to `resume`, and an
    /// attach on a stopped JVM fails after `timeout`.
    fn stalled(
        stop: Duration,
        resume: Duration,
        timeout: Duration,
    ) -> impl Fn(Duration) -> (Duration, bool) {
        let dump = Duration::from_millis(50);
        move |at| {
            if at < stop || at >= resume {
                (at + dump, true)
            } else if resume - at < timeout {
                (resume + dump, true)
            } else {
                (at + timeout, false)
            }
        }
    }

    fn assert_contiguous(spans: &Spans) {
        for pair in spans.windows(2) {
            assert!(pair[0].0 < pair[0].1, "empty window: {spans:?}");
            assert_eq!(pair[0].1, pair[1].0, "gap or overlap: {spans:?}");
        }
    }

    #[test]
    fn a_40_s_stall_past_the_attach_timeout_is_one_window_then_the_regular_cadence() {
        // The case: the demo's 10 s windows, the default 30 s attach timeout.
        let spans = simulate(10 * S, 100 * S, stalled(25 * S, 65 * S, 30 * S));
        // The collect at 30 s times out at 60 s; the retry a window later closes
        // one window over the whole stall; then every 10 s again.
        assert_eq!(
            spans,
            vec![
                (0, 10_050),
                (10_050, 20_050),
                (20_050, 70_050),
                (70_050, 80_050),
                (80_050, 90_050),
            ]
        );
    }

    #[test]
    fn a_stall_shorter_than_the_attach_timeout_is_one_window_then_the_regular_cadence() {
        let spans = simulate(10 * S, 100 * S, stalled(25 * S, 45 * S, 30 * S));
        // The collect at 30 s returns when the JVM resumes: one window reaches to
        // there, the next deadline is a full window later (not 40 s, long past).
        assert_eq!(
            spans,
            vec![
                (0, 10_050),
                (10_050, 20_050),
                (20_050, 45_050),
                (45_050, 55_100),
                (55_100, 65_100),
                (65_100, 75_100),
                (75_100, 85_100),
                (85_100, 95_100),
            ]
        );
    }

    #[test]
    fn short_windows_and_short_stalls_never_make_a_sub_second_window() {
        for window in [S, 2 * S, 10 * S, 60 * S] {
            for stall_ms in (0..20_000).step_by(370) {
                let stall = Duration::from_millis(stall_ms);
                let spans = simulate(window, 120 * S, stalled(7 * S, 7 * S + stall, 3 * S));
                assert_contiguous(&spans);
                let shortest = window.as_millis() as i64 / 2;
                assert!(
                    spans.iter().all(|(s, e)| e - s >= shortest),
                    "{window:?} window, {stall:?} stall: {spans:?}"
                );
            }
        }
    }

    #[test]
    fn the_next_deadline_keeps_the_cadence_unless_less_than_half_a_window_is_left() {
        let t0 = Instant::now();
        let w = 10 * S;
        assert_eq!(next_deadline(t0, t0 + S / 10, w), t0 + w);
        assert_eq!(next_deadline(t0, t0 + 5 * S, w), t0 + w);
        assert_eq!(next_deadline(t0, t0 + 6 * S, w), t0 + 16 * S);
        assert_eq!(next_deadline(t0, t0 + 40 * S, w), t0 + 50 * S);
    }

    #[test]
    fn a_wall_clock_standing_still_or_stepping_back_never_makes_an_empty_window() {
        let t0 = Instant::now();
        let mut clock = WindowClock::new(10 * S, 60 * S, t0, WALL0);
        // Stood still: the monotonic 10 s.
        assert_eq!(clock.close(t0 + 10 * S, WALL0), (WALL0, WALL0 + 10_000));
        // Stepped back an hour: still contiguous, the measured 10 s.
        let back = WALL0 - 3_600_000;
        assert_eq!(
            clock.close(t0 + 20 * S, back),
            (WALL0 + 10_000, WALL0 + 20_000)
        );
        // Closed again at the same instant: 1 ms, never 0.
        assert_eq!(
            clock.close(t0 + 20 * S, back),
            (WALL0 + 20_000, WALL0 + 20_001)
        );
    }

    #[test]
    fn a_window_reaches_back_at_most_the_recorder_s_horizon() {
        let t0 = Instant::now();
        let mut clock = WindowClock::new(10 * S, 60 * S, t0, WALL0);
        for k in 1..=30 {
            clock.retry(t0 + k * 10 * S);
        }
        let end = WALL0 + 300_000;
        assert_eq!(clock.close(t0 + 300 * S, end), (end - 60_000, end));
    }
}
