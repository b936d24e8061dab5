//! The async-profiler recorder's lifecycle in a target, with the real library
//! (`JAVELIN_TEST_ASYNC_PROFILER`; dev/test sets it) and real JVMs running the
//! demo workload, through the agent's own target task (`target::run`, reading
//! what it spools) and, for a killed agent, the agent binary:
//! - nothing reaches the application's stdout or stderr, on a fresh target and
//!   over several windows, up to and including a graceful stop;
//! - the status is re-published every window with growing counters, and a
//!   graceful stop publishes the open window as a final partial one;
//! - an orphaned session is recovered and its files removed;
//! - an async-profiler loaded by someone else, before we start or while we
//!   profile, is an `external_conflict`, and our session is stopped cleanly;
//! - a collect that fails (a dump over `--max-dump-bytes`) is counted.
//!
//! Every test name contains `async_profiler`: dev/test skips them by that name
//! when no library is available; run without one, they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use javelin_agent::aggregate::Bounds;
use javelin_agent::attach::AttachTarget;
use javelin_agent::discovery::{JvmProcess, ProcFs};
use javelin_agent::metrics::AgentMetrics;
use javelin_agent::recorder::async_profiler::{TARGET_DIR, TARGET_LIBRARY, owner_tag};
use javelin_agent::recorder::{AsyncProfilerSettings, JfrSettings};
use javelin_agent::session::{self, Marker};
use javelin_agent::spool::{Destination, Spool};
use javelin_agent::target::{self, TargetConfig, TargetEnd, now_ms};
use javelin_schema::telemetry::{OtlpEndpoints, Telemetry};
use javelin_schema::testkit::{
    Reaped, TopicLog, create_topics, kafka_brokers, unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, TargetState, TargetStatus};
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WINDOW: Duration = Duration::from_secs(3);

fn library() -> PathBuf {
    std::env::var_os("JAVELIN_TEST_ASYNC_PROFILER")
        .map(PathBuf::from)
        .expect(
            "JAVELIN_TEST_ASYNC_PROFILER is not set: point it at a libasyncProfiler.so (dev/test \
             uses ../shared/third_party/async-profiler-4.5/lib/libasyncProfiler.so when present), \
             or skip the async-profiler tests with `-- --skip async_profiler`",
        )
}

/// async-profiler's own launcher, beside the library (`<dist>/lib/…so` → `<dist>/bin/asprof`).
fn asprof() -> PathBuf {
    let lib = library();
    let bin = lib
        .parent()
        .and_then(Path::parent)
        .map(|dist| dist.join("bin/asprof"))
        .expect("the library lies in <dist>/lib");
    assert!(
        bin.exists(),
        "{} is missing: these tests start async-profiler from its own distribution",
        bin.display()
    );
    bin
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo workload compiled once per test process.
fn demo_classes() -> &'static Path {
    static CLASSES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CLASSES.get_or_init(|| {
        let out = repo_root()
            .join("target/test-java")
            .join(format!("aplife-{}", std::process::id()));
        let ok = Command::new("javac")
            .arg("-d")
            .arg(&out)
            .arg(repo_root().join("loadtest/java/src/JavelinDemo.java"))
            .status()
            .expect("javac runs");
        assert!(ok.success(), "javac failed");
        out
    })
}

/// The demo workload with its stdout and stderr captured into files: all the
/// application ever writes.
struct CapturedJvm {
    child: Child,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    dir: PathBuf,
}

impl CapturedJvm {
    async fn start(java: &str) -> CapturedJvm {
        let dir = std::env::temp_dir().join(unique_name("aplife-jvm"));
        std::fs::create_dir_all(&dir).expect("output dir");
        let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
        let file = |p: &Path| std::fs::File::create(p).expect("output file");
        let child = Command::new(java)
            .arg("-cp")
            .arg(demo_classes())
            .arg("JavelinDemo")
            .env("JAVELIN_SERVICE", "javelin-demo")
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("java starts");
        let jvm = CapturedJvm {
            pid: child.id(),
            child,
            stdout,
            stderr,
            dir,
        };
        wait_for("the demo's first line", Duration::from_secs(30), || {
            let ready = jvm.output().0.starts_with("javelin-demo pid");
            async move { ready.then_some(()) }
        })
        .await;
        jvm
    }

    fn output(&self) -> (String, String) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (read(&self.stdout), read(&self.stderr))
    }

    fn process(&self) -> JvmProcess {
        ProcFs::new("/proc")
            .expect("/proc")
            .inspect(self.pid)
            .expect("the demo is a HotSpot JVM")
    }

    fn nspid(&self) -> u32 {
        self.process().nspid
    }

    /// The target's `/tmp/javelin` as the agent sees it.
    fn javelin_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{TARGET_DIR}", self.pid))
    }

    /// Names in the target's `/tmp/javelin` starting with `prefix`.
    fn files(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.javelin_dir())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn marker(&self) -> Option<Marker> {
        let text = std::fs::read_to_string(Marker::path(self.pid, self.nspid())).ok()?;
        Marker::parse(&text)
    }

    /// Sends `status` to our library in the JVM and returns what it says.
    fn our_profiler_status(&self) -> String {
        let nspid = self.nspid();
        let name = format!("{}.status", unique_name("aplife"));
        let (file, log) = (format!("/tmp/{name}"), format!("/tmp/{name}.log"));
        let target =
            AttachTarget::for_pid(self.pid, Duration::from_secs(30)).expect("the JVM's /proc");
        let options = format!("status,quiet,log={log},file={file}");
        target
            .execute("load", &[TARGET_LIBRARY, "true", &options])
            .expect("load")
            .expect("return code: 0")
            .expect("status answered");
        let local = |p: &str| PathBuf::from(format!("/proc/{}/root{p}", self.pid));
        let text = std::fs::read_to_string(local(&file)).expect("status file");
        let _ = std::fs::remove_file(local(&file));
        let _ = std::fs::remove_file(local(&log));
        assert_eq!(nspid, self.nspid());
        text
    }
}

impl Drop for CapturedJvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(max_dump_bytes: u64) -> AsyncProfilerSettings {
    AsyncProfilerSettings {
        library: library(),
        cpu_interval: Duration::from_millis(10),
        alloc_bytes: 512 * 1024,
        lock_threshold: Duration::from_millis(10),
        session_timeout: WINDOW * 3,
        max_dump_bytes,
    }
}

fn config(installation: &str, max_dump_bytes: u64) -> TargetConfig {
    TargetConfig {
        cluster: "test".into(),
        node: "test-node".into(),
        window: WINDOW,
        recording_name: installation.into(),
        attach_timeout: Duration::from_secs(30),
        jfr: JfrSettings {
            max_age: Duration::from_secs(60),
            ..JfrSettings::default()
        },
        bounds: Bounds::default(),
        installation: installation.into(),
        pods: None,
        async_profiler: Some(settings(max_dump_bytes)),
        artifacts: None,
        collect_slots: Arc::new(tokio::sync::Semaphore::new(1)),
    }
}

/// One target task of the agent, in this process, and what it spooled.
struct Task {
    spool: Spool,
    telemetry: Telemetry,
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<TargetEnd>>,
    statuses: Vec<TargetStatus>,
    windows: Vec<ProfileWindow>,
}

impl Task {
    fn start(jvm: JvmProcess, config: TargetConfig) -> Task {
        let spool = Spool::new(256 << 20);
        let telemetry =
            Telemetry::new("javelin-agent-test", OtlpEndpoints::default()).expect("telemetry");
        let metrics = AgentMetrics::new(&telemetry, &spool);
        let (stop, shutdown) = watch::channel(false);
        let handle = tokio::spawn(target::run(jvm, config, spool.clone(), metrics, shutdown));
        Task {
            spool,
            telemetry,
            stop,
            handle: Some(handle),
            statuses: Vec::new(),
            windows: Vec::new(),
        }
    }

    fn read(&mut self) {
        for message in self.spool.drain() {
            if message.destination == Destination::Status {
                self.statuses.push(
                    TargetStatus::decode(message.payload.as_slice()).expect("a status decodes"),
                );
            } else {
                self.windows.push(
                    ProfileWindow::decode(message.payload.as_slice()).expect("a window decodes"),
                );
            }
        }
    }

    /// Waits (60 s at most) until `check` finds what it looks for in what was spooled.
    async fn until<T>(&mut self, what: &str, check: impl Fn(&Task) -> Option<T>) -> T {
        // 23 s alone for attach + 4 windows; the suite runs this file's eight
        // JVM tests at once beside others, and once took over 60 s.
        wait_for(what, Duration::from_secs(120), || {
            self.read();
            let found = check(self);
            async move { found }
        })
        .await
    }

    /// Distinct windows as (start, end), in order.
    fn spans(&self) -> Vec<(i64, i64)> {
        let set: std::collections::BTreeSet<(i64, i64)> = self
            .windows
            .iter()
            .map(|w| (w.window_start_ms, w.window_end_ms))
            .collect();
        set.into_iter().collect()
    }

    async fn end(&mut self) -> TargetEnd {
        let handle = self.handle.take().expect("ended once");
        let end = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the target task ends within 60 s")
            .expect("the target task does not panic");
        self.read();
        end
    }

    async fn stop(&mut self) -> TargetEnd {
        self.stop.send(true).expect("the target task listens");
        self.end().await
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Our owner tag for a target task of this test process.
fn own_tag(installation: &str) -> String {
    owner_tag(installation, std::process::id(), session::own_start_ms())
}

/// The agent binary profiling `pid` with async-profiler, in 3-s windows, to
/// the topics `<run>.profiles` and `<run>.status`; its log goes to
/// target/e2e-logs/<run>.agent.log.
fn agent_binary(run: &str, pid: u32) -> Reaped {
    let logs = repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let log = std::fs::File::create(logs.join(format!("{run}.agent.log"))).expect("log");
    Reaped(
        Command::new(env!("CARGO_BIN_EXE_javelin-agent"))
            .args(["--brokers", &kafka_brokers()])
            .args(["--profiles-topic", &format!("{run}.profiles")])
            .args(["--status-topic", &format!("{run}.status")])
            .args(["--pid", &pid.to_string(), "--window-secs", "3"])
            .args(["--min-jvm-age-secs", "0", "--discovery-interval-secs", "1"])
            .args(["--installation", run, "--recording-name", run])
            .args(["--metrics-listen", "127.0.0.1:0", "--kubernetes-api", "off"])
            .arg("--async-profiler-lib")
            .arg(library())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the agent starts"),
    )
}

fn asprof_run(args: &[&str], pid: u32) -> String {
    let out = Command::new(asprof())
        .args(args)
        .arg(pid.to_string())
        .output()
        .expect("asprof runs");
    assert!(
        out.status.success(),
        "asprof {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Over several windows and a graceful stop on a fresh JDK `java`, the
/// application's output holds only its own line; the status comes every
/// window with growing counters; the stop publishes a final partial window and
/// leaves none of our files or our marker behind.
async fn silent_session(java: &str) {
    let jvm = CapturedJvm::start(java).await;
    let installation = unique_name("aplife_silent");
    let mut task = Task::start(jvm.process(), config(&installation, 256 << 20));

    let statuses = task
        .until("statuses after 4 windows", |t| {
            let after_windows: Vec<&TargetStatus> = t
                .statuses
                .iter()
                .filter(|s| s.windows_published > 0)
                .collect();
            (t.spans().len() >= 4 && after_windows.len() >= 4).then(|| t.statuses.clone())
        })
        .await;
    // Every window re-publishes the status with its live counters.
    assert_eq!(
        statuses[0].state,
        TargetState::Profiling as i32,
        "{statuses:?}"
    );
    let published: Vec<u64> = statuses.iter().map(|s| s.windows_published).collect();
    assert!(
        published.windows(2).all(|p| p[0] <= p[1])
            && published.windows(2).filter(|p| p[0] < p[1]).count() >= 3,
        "windows_published grows window by window: {published:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.recorder == "async-profiler" && s.failed_collects == 0),
        "{statuses:?}"
    );
    // Each status says how the session samples, as started.
    assert!(
        statuses.iter().all(|s| s.sampling
            == "cpu: every 10 ms of CPU time (event=cpu); alloc: one sample per 512 KiB allocated; \
                lock: monitor and park waits ≥ 10 ms; 3-s windows"),
        "{statuses:?}"
    );
    let own = format!("ap-{}", own_tag(&installation));
    assert!(
        !jvm.files(&own).is_empty(),
        "our session writes into {TARGET_DIR}"
    );

    // Stop mid-window (at least 1 s after the last window closed, before the
    // next is due), so the final window is a partial one with samples in it.
    let last_end = task
        .until("1 s into an open window", |t| {
            let last = t.spans().last().map(|s| s.1)?;
            let into = now_ms() - last;
            (1000..WINDOW.as_millis() as i64 - 1200)
                .contains(&into)
                .then_some(last)
        })
        .await;
    let before = task.spans().len();
    let stopped_at = now_ms();
    assert_eq!(task.stop().await, TargetEnd::Stopped);
    let spans = task.spans();
    let final_span = *spans.last().expect("windows");
    assert_eq!(spans.len(), before + 1, "one final window: {spans:?}");
    assert_eq!(
        final_span.0, last_end,
        "the final window continues the last: {spans:?}"
    );
    assert!(
        final_span.1 >= stopped_at && final_span.1 - final_span.0 < WINDOW.as_millis() as i64,
        "a partial window up to the stop at {stopped_at}: {spans:?}"
    );
    assert!(
        task.windows.iter().any(|w| w.window_end_ms == final_span.1
            && w.kind() == ProfileType::Cpu
            && !w.stacks.is_empty()),
        "the final window holds CPU samples"
    );
    let last_status = task.statuses.last().expect("a final status");
    assert_eq!(
        last_status.windows_published,
        task.windows.len() as u64,
        "the final status counts every part published"
    );
    assert!(
        jvm.files(&own).is_empty(),
        "left behind: {:?}",
        jvm.files(&own)
    );
    assert_eq!(
        jvm.marker(),
        None,
        "the marker is removed at a graceful stop"
    );
    assert!(jvm.our_profiler_status().contains("Profiler is not active"));

    let (stdout, stderr) = jvm.output();
    assert_eq!(
        stdout,
        format!("javelin-demo pid {}\n", jvm.pid),
        "the application's stdout holds only its own line"
    );
    assert_eq!(stderr, "", "the application's stderr stays empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_is_silent_republishes_status_and_ends_with_a_final_window() {
    silent_session("java").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_is_silent_on_jdk_25() {
    let java = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java";
    assert!(
        Path::new(java).exists(),
        "{java} is missing (the JDK 25 this machine provides)"
    );
    silent_session(java).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_orphan_is_recovered_and_its_files_removed() {
    let jvm = CapturedJvm::start("java").await;
    let installation = unique_name("aplife_orphan");
    // The first agent: the binary, killed with SIGKILL once its session runs.
    let mut first = agent_binary(&installation, jvm.pid);
    let agent_pid = first.0.id();
    let orphan_prefix = wait_for(
        "the first agent's marker and a finished window",
        Duration::from_secs(60),
        || {
            let found = jvm
                .marker()
                .filter(|m| m.agent_pid == agent_pid)
                .and_then(|m| {
                    let prefix = format!(
                        "ap-{}",
                        owner_tag(&m.installation, m.agent_pid, m.agent_start_ms)
                    );
                    // Session 2 or later: at least one window was collected.
                    let session = format!("{prefix}-{}-", jvm.nspid());
                    jvm.files(&session)
                        .iter()
                        .filter_map(|f| {
                            f.strip_prefix(&session)?
                                .strip_suffix(".jfr")?
                                .parse::<u64>()
                                .ok()
                        })
                        .any(|n| n >= 2)
                        .then_some(prefix)
                });
            async move { found }
        },
    )
    .await;
    first.0.kill().expect("SIGKILL the agent");
    let _ = first.0.wait();
    let orphan_files = jvm.files(&orphan_prefix);
    assert!(
        orphan_files.iter().any(|f| f.ends_with(".jfr")),
        "the killed agent's session file is there: {orphan_files:?}"
    );

    let mut task = Task::start(jvm.process(), config(&installation, 256 << 20));
    let statuses = task
        .until("a status after the first window", |t| {
            t.statuses
                .iter()
                .any(|s| s.windows_published > 0)
                .then(|| t.statuses.clone())
        })
        .await;
    assert_eq!(
        statuses[0].state,
        TargetState::OrphanedRecovered as i32,
        "{statuses:?}"
    );
    let after = statuses
        .iter()
        .find(|s| s.windows_published > 0)
        .expect("found above");
    assert_eq!(
        after.state,
        TargetState::Profiling as i32,
        "profiling after the first good window: {statuses:?}"
    );
    // The orphan's files are gone, ours are there, and the marker is ours.
    assert_eq!(jvm.files(&orphan_prefix), Vec::<String>::new());
    assert!(
        !jvm.files(&format!("ap-{}", own_tag(&installation)))
            .is_empty()
    );
    assert_eq!(jvm.marker().map(|m| m.agent_pid), Some(std::process::id()));
    let more = task
        .until("windows_published grows", |t| {
            let last = t.statuses.last()?.windows_published;
            (last > after.windows_published).then_some(last)
        })
        .await;
    assert!(more > after.windows_published);
    assert_eq!(task.stop().await, TargetEnd::Stopped);
    assert!(jvm.output().1.is_empty(), "stderr: {}", jvm.output().1);
}

/// The installation used the built-in recorder, its agent died, and it now
/// runs async-profiler: the orphaned JFR recording is stopped, not left to
/// record next to async-profiler until the JVM exits.
#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_stops_an_orphaned_jfr_recording_of_ours() {
    let jvm = CapturedJvm::start("java").await;
    let installation = unique_name("aplife_jfr_orphan");
    let attach = AttachTarget {
        pid: jvm.pid,
        nspid: jvm.nspid(),
        timeout: Duration::from_secs(30),
    };
    let recordings = || attach.jcmd("JFR.check").expect("JFR.check answers").text;
    let started = attach
        .jcmd(&format!("JFR.start name={installation}"))
        .expect("JFR.start answers");
    assert_eq!(started.status, 0, "{}", started.text);
    assert!(recordings().contains(&installation), "{}", recordings());
    // The marker of an agent process that is gone.
    let mut gone = Command::new("true").spawn().expect("a short-lived process");
    let gone_pid = gone.id();
    gone.wait().expect("it exits");
    Marker {
        installation: installation.clone(),
        recorder: "jfr".into(),
        recording: installation.clone(),
        agent_pid: gone_pid,
        agent_start_ms: 1,
        jvm: None,
    }
    .write(jvm.pid, jvm.nspid())
    .expect("the orphan's marker");

    let mut task = Task::start(jvm.process(), config(&installation, 256 << 20));
    let first = task
        .until("the first status", |t| t.statuses.first().cloned())
        .await;
    assert_eq!(
        first.state,
        TargetState::OrphanedRecovered as i32,
        "{first:?}"
    );
    assert_eq!(first.recorder, "async-profiler");
    let left = recordings();
    assert!(
        !left.contains(&installation),
        "the orphaned JFR recording still runs: {left}"
    );
    assert_eq!(task.stop().await, TargetEnd::Stopped);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_loaded_by_someone_else_at_start_is_an_external_conflict() {
    let jvm = CapturedJvm::start("java").await;
    asprof_run(&["start"], jvm.pid);
    // A marker an earlier process with this pid left in the host's /tmp (pids
    // are recycled) is no concern of a session that never starts: it stays.
    let marker_before = jvm.marker();
    let installation = unique_name("aplife_conflict_start");
    let mut task = Task::start(jvm.process(), config(&installation, 256 << 20));
    let end = task.end().await;
    assert!(matches!(end, TargetEnd::Conflict(_)), "{end:?}");
    assert_eq!(task.statuses.len(), 1, "{:?}", task.statuses);
    let status = &task.statuses[0];
    assert_eq!(status.state, TargetState::ExternalConflict as i32);
    assert!(
        status.last_error.contains("libasyncProfiler.so"),
        "{}",
        status.last_error
    );
    // Never touched: no marker of ours, none of our files, their profiler still runs.
    assert_eq!(jvm.marker(), marker_before);
    assert!(
        jvm.files(&format!("ap-{}", own_tag(&installation)))
            .is_empty()
    );
    assert!(asprof_run(&["status"], jvm.pid).contains("Profiling is running"));
    asprof_run(&["stop"], jvm.pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_loaded_by_someone_else_later_stops_our_session() {
    let jvm = CapturedJvm::start("java").await;
    let installation = unique_name("aplife_conflict_later");
    let mut task = Task::start(jvm.process(), config(&installation, 256 << 20));
    task.until("two windows", |t| (t.spans().len() >= 2).then_some(()))
        .await;
    let own = format!("ap-{}", own_tag(&installation));
    assert!(!jvm.files(&own).is_empty());
    asprof_run(&["start"], jvm.pid);
    let end = task.end().await;
    assert!(matches!(end, TargetEnd::Conflict(_)), "{end:?}");
    let status = task.statuses.last().expect("a status");
    assert_eq!(
        status.state,
        TargetState::ExternalConflict as i32,
        "{status:?}"
    );
    assert!(
        status.last_error.contains("libasyncProfiler.so") && !status.last_error.contains("failed"),
        "{}",
        status.last_error
    );
    // Our session stopped cleanly: our profiler is idle, our files and marker
    // gone; theirs runs on.
    assert!(jvm.our_profiler_status().contains("Profiler is not active"));
    assert!(
        jvm.files(&own).is_empty(),
        "left behind: {:?}",
        jvm.files(&own)
    );
    assert_eq!(jvm.marker(), None);
    assert!(asprof_run(&["status"], jvm.pid).contains("Profiling is running"));
    asprof_run(&["stop"], jvm.pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_failed_collects_are_counted() {
    let jvm = CapturedJvm::start("java").await;
    let installation = unique_name("aplife_too_large");
    // Every window's recording is larger than this: each collect fails.
    let mut task = Task::start(jvm.process(), config(&installation, 1024));
    let status = task
        .until("two failed collects", |t| {
            t.statuses.iter().find(|s| s.failed_collects >= 2).cloned()
        })
        .await;
    assert_eq!(status.windows_published, 0, "{status:?}");
    assert!(
        status.last_error.contains("over the 1024-byte limit"),
        "{}",
        status.last_error
    );
    let metrics = task.telemetry.render();
    let counted = metrics
        .lines()
        .filter(|l| {
            l.starts_with("javelin_agent_collect_failures_total")
                && l.contains("reason=\"too_large\"")
        })
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(counted.is_some_and(|n| n >= 2.0), "{metrics}");
    assert_eq!(task.stop().await, TargetEnd::Stopped);
    // The oversized files were deleted unread.
    assert!(
        jvm.files(&format!("ap-{}", own_tag(&installation)))
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_agent_stopped_by_sigterm_publishes_a_final_window_in_time() {
    let jvm = CapturedJvm::start("java").await;
    let run = unique_name("aplife_sigterm");
    let (profiles, status) = (format!("{run}.profiles"), format!("{run}.status"));
    create_topics(&[&profiles, &status], 1).await;
    let profiles_log = TopicLog::follow(&profiles);
    let status_log = TopicLog::follow(&status);
    let mut agent = agent_binary(&run, jvm.pid);
    let spans = || -> Vec<(i64, i64)> {
        let set: std::collections::BTreeSet<(i64, i64)> = profiles_log
            .payloads()
            .iter()
            .filter_map(|p| ProfileWindow::decode(p.as_slice()).ok())
            .map(|w| (w.window_start_ms, w.window_end_ms))
            .collect();
        set.into_iter().collect()
    };
    // Mid-window (see silent_session), after two windows.
    let last_end = wait_for(
        "two windows, then 1 s into the next",
        Duration::from_secs(90),
        || {
            let spans = spans();
            let found = spans.last().map(|s| s.1).filter(|last| {
                spans.len() >= 2
                    && (1000..WINDOW.as_millis() as i64 - 1200).contains(&(now_ms() - last))
            });
            async move { found }
        },
    )
    .await;
    let signalled = std::time::Instant::now();
    let stopped_at = now_ms();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.0.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the agent");
    wait_for("the agent exits", Duration::from_secs(60), || {
        let done = agent.0.try_wait().expect("wait").is_some();
        async move { done.then_some(()) }
    })
    .await;
    let took = signalled.elapsed();
    // Inside the 30 s `agent::run` allows itself (a healthy JVM and broker take far less).
    assert!(took < Duration::from_secs(30), "exited after {took:?}");
    let final_window = wait_for(
        "the final partial window on the topic",
        Duration::from_secs(30),
        || {
            let found = spans().into_iter().find(|s| s.0 == last_end);
            async move { found }
        },
    )
    .await;
    assert!(
        final_window.1 >= stopped_at && final_window.1 - final_window.0 < WINDOW.as_millis() as i64,
        "a partial window up to the stop at {stopped_at}: {final_window:?}"
    );
    // The last status counts every window part published, the final one included.
    wait_for(
        "a last status counting every part on the topic",
        Duration::from_secs(30),
        || {
            let parts = profiles_log.payloads().len() as u64;
            let last = status_log
                .payloads()
                .iter()
                .filter_map(|p| TargetStatus::decode(p.as_slice()).ok())
                .map(|s| s.windows_published)
                .max();
            async move { (last == Some(parts)).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        jvm.marker(),
        None,
        "the marker is removed at a graceful stop"
    );
    let tag_prefix = format!("ap-{run}-{}", agent.0.id());
    assert!(
        jvm.files(&tag_prefix).is_empty(),
        "left behind: {:?}",
        jvm.files(&tag_prefix)
    );
    assert_eq!(
        jvm.output(),
        (format!("javelin-demo pid {}\n", jvm.pid), String::new())
    );
}
