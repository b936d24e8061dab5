//! A profiled JVM stalled with SIGSTOP for several windows, then resumed: the
//! agent's target loop closes one window spanning the stall and goes back to
//! its regular cadence, with no sub-second catch-up windows, and consecutive
//! windows share no start and leave no gap (the end of one is the start of the
//! next). The windows are read from the spool the target task pushes into, so
//! no broker is needed.

use std::collections::BTreeSet;
use std::time::Duration;

use javelin_agent::aggregate::Bounds;
use javelin_agent::discovery::ProcFs;
use javelin_agent::metrics::AgentMetrics;
use javelin_agent::recorder::JfrSettings;
use javelin_agent::spool::{Destination, Spool};
use javelin_agent::target::{self, TargetConfig, TargetEnd, now_ms};
use javelin_schema::telemetry::{OtlpEndpoints, Telemetry};
use javelin_schema::testkit::{DemoJvm, unique_name, wait_for};
use javelin_schema::wire::{ProfileWindow, TargetStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prost::Message;
use tokio::sync::watch;

const WINDOW: Duration = Duration::from_secs(2);
/// Shorter than the stall, so the collect that is in flight when the JVM stops
/// fails on its attach timeout and the loop has to retry it.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// Five windows.
const STALL: Duration = Duration::from_secs(10);

/// The (start, end) bounds of every window seen so far, in ms, and the
/// errors the target's status reported.
#[derive(Default)]
struct Spans(BTreeSet<(i64, i64)>, Vec<String>);

impl Spans {
    /// Adds the windows waiting in the spool (every part and profile type of
    /// a window carries the same bounds).
    fn read(&mut self, spool: &Spool) {
        for message in spool.drain() {
            if message.destination == Destination::Status {
                let status = TargetStatus::decode(message.payload.as_slice())
                    .expect("the agent's own messages decode");
                self.1.push(status.last_error);
                continue;
            }
            let window = ProfileWindow::decode(message.payload.as_slice())
                .expect("the agent's own messages decode");
            self.0
                .insert((window.window_start_ms, window.window_end_ms));
        }
    }

    fn starting_at_or_after(&self, ms: i64) -> usize {
        self.0.iter().filter(|(start, _)| *start >= ms).count()
    }
}

/// Resumes the JVM even when an assertion fails while it is stopped.
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_jvm_gets_one_window_spanning_the_stall_then_regular_windows() {
    let demo = DemoJvm::start(&[]);
    let pid = Pid::from_raw(i32::try_from(demo.pid).expect("pid fits i32"));
    let jvm = ProcFs::new("/proc")
        .expect("/proc")
        .inspect(demo.pid)
        .expect("the demo is a HotSpot JVM");
    let recording = unique_name("javelin_stall");
    let config = TargetConfig {
        cluster: "test".into(),
        node: "test-node".into(),
        window: WINDOW,
        recording_name: recording.clone(),
        attach_timeout: ATTACH_TIMEOUT,
        jfr: JfrSettings {
            max_age: Duration::from_secs(60),
            ..JfrSettings::default()
        },
        bounds: Bounds::default(),
        installation: recording.clone(),
        pods: None,
        async_profiler: None,
        artifacts: None,
        collect_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let spool = Spool::new(256 << 20);
    let telemetry =
        Telemetry::new("javelin-agent-test", OtlpEndpoints::default()).expect("telemetry");
    let metrics = AgentMetrics::new(&telemetry, &spool);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(target::run(jvm, config, spool.clone(), metrics, shutdown));

    let mut spans = Spans::default();
    wait_for(
        "two windows before the stall",
        Duration::from_secs(60),
        || {
            spans.read(&spool);
            let ready = spans.0.len() >= 2;
            async move { ready.then_some(()) }
        },
    )
    .await;

    let stopped_ms = now_ms();
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the JVM");
    let resume = Resume(pid);
    tokio::time::sleep(STALL).await;
    let resumed_ms = now_ms();
    drop(resume);

    wait_for(
        "three windows after the one spanning the stall",
        Duration::from_secs(60),
        || {
            spans.read(&spool);
            let ready = spans.starting_at_or_after(resumed_ms) >= 3;
            async move { ready.then_some(()) }
        },
    )
    .await;
    stop.send(true).expect("the target task listens");
    let end = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the target task stops within 60 s")
        .expect("the target task does not panic");
    assert_eq!(end, TargetEnd::Stopped);
    // The dump requested while the JVM was stopped is written once it resumes;
    // the recorder deletes it at its next collect.
    let leftover = remove_dumps(&recording);
    assert_eq!(
        leftover, 0,
        "dumps left in /tmp by requests the agent gave up on"
    );

    // The collect in flight when the JVM stopped failed on its attach timeout.
    assert!(
        spans.1.iter().any(|e| !e.is_empty()),
        "no failed collect reported: {:?}",
        spans.1
    );
    let spans: Vec<(i64, i64)> = spans.0.into_iter().collect();
    let lengths: Vec<i64> = spans.iter().map(|(s, e)| e - s).collect();
    let report = format!(
        "stopped at {stopped_ms}, resumed at {resumed_ms}; windows (start, end): {spans:?}; lengths: {lengths:?}"
    );
    eprintln!("{report}");
    for pair in spans.windows(2) {
        let ((start, end), (next_start, _)) = (pair[0], pair[1]);
        assert!(start < next_start, "two windows share a start: {report}");
        assert_eq!(end, next_start, "a gap or an overlap: {report}");
    }
    assert!(
        lengths.iter().all(|&ms| ms >= 1000),
        "sub-second window: {report}"
    );
    let spanning: Vec<&(i64, i64)> = spans
        .iter()
        .filter(|(start, end)| *start <= stopped_ms && *end >= resumed_ms)
        .collect();
    assert_eq!(spanning.len(), 1, "one window spans the stall: {report}");
    // After the stall window, the regular cadence (a window, plus the dump's time).
    let after: Vec<i64> = spans
        .iter()
        .filter(|(start, _)| *start >= resumed_ms)
        .map(|(s, e)| e - s)
        .collect();
    assert!(
        after.iter().all(|&ms| ms < 2 * WINDOW.as_millis() as i64),
        "regular windows after the stall: {report}"
    );
}

/// Two JVMs share one collect slot; one is stopped for several windows, its
/// dump request hanging in the attach (timeout longer than the stall). The
/// slot is taken only once a dump is written, so the other JVM keeps its
/// cadence: before, the stalled collect held the only slot for the whole stall.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_jvm_does_not_hold_the_collect_slot_of_the_others() {
    const LONG_ATTACH: Duration = Duration::from_secs(30);
    const STALL: Duration = Duration::from_secs(12);
    let (stalled, healthy) = (DemoJvm::start(&[]), DemoJvm::start(&[]));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    let recording = unique_name("javelin_slot");
    let telemetry =
        Telemetry::new("javelin-agent-test", OtlpEndpoints::default()).expect("telemetry");
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut spools = Vec::new();
    for demo in [&stalled, &healthy] {
        let jvm = ProcFs::new("/proc")
            .expect("/proc")
            .inspect(demo.pid)
            .expect("the demo is a HotSpot JVM");
        let config = TargetConfig {
            cluster: "test".into(),
            node: "test-node".into(),
            window: WINDOW,
            recording_name: recording.clone(),
            attach_timeout: LONG_ATTACH,
            jfr: JfrSettings {
                max_age: Duration::from_secs(60),
                ..JfrSettings::default()
            },
            bounds: Bounds::default(),
            installation: recording.clone(),
            pods: None,
            async_profiler: None,
            artifacts: None,
            collect_slots: slots.clone(),
        };
        let spool = Spool::new(256 << 20);
        let metrics = AgentMetrics::new(&telemetry, &spool);
        tasks.push(tokio::spawn(target::run(
            jvm,
            config,
            spool.clone(),
            metrics,
            shutdown.clone(),
        )));
        spools.push(spool);
    }
    let (mut stalled_spans, mut healthy_spans) = (Spans::default(), Spans::default());
    wait_for("two windows of each JVM", Duration::from_secs(60), || {
        stalled_spans.read(&spools[0]);
        healthy_spans.read(&spools[1]);
        let ready = stalled_spans.0.len() >= 2 && healthy_spans.0.len() >= 2;
        async move { ready.then_some(()) }
    })
    .await;
    let pid = Pid::from_raw(i32::try_from(stalled.pid).expect("pid fits i32"));
    let stopped_ms = now_ms();
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the JVM");
    let resume = Resume(pid);
    tokio::time::sleep(STALL).await;
    let resumed_ms = now_ms();
    drop(resume);
    healthy_spans.read(&spools[1]);
    let during: Vec<&(i64, i64)> = healthy_spans
        .0
        .iter()
        .filter(|(start, end)| *start >= stopped_ms && *end <= resumed_ms)
        .collect();
    stop.send(true).expect("the target tasks listen");
    for task in tasks {
        let end = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the target task stops within 60 s")
            .expect("the target task does not panic");
        assert_eq!(end, TargetEnd::Stopped);
    }
    remove_dumps(&recording);
    // 2-s windows over a 12-s stall: at least 3 whole windows of the healthy JVM.
    assert!(
        during.len() >= 3,
        "the healthy JVM's windows during the stall ({stopped_ms}..{resumed_ms}): {during:?}"
    );
}

/// A dump requested while the JVM was stopped is written after it resumes,
/// when the agent has given up on it: remove what is left of this recording.
fn remove_dumps(recording: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return 0;
    };
    let prefix = format!("{recording}-");
    dir.flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".jfr")
        })
        .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
        .count()
}
