//! The agent binary against real JVMs and the real broker: session ownership
//! states published on the status topic.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use javelin_agent::attach::AttachTarget;
use javelin_agent::discovery::ProcFs;
use javelin_agent::session::{self, Marker};
use javelin_schema::testkit::{
    DemoJvm, Reaped, TopicLog, create_topics, kafka_brokers, unique_name, wait_for,
};
use javelin_schema::wire::{ProfileWindow, TargetState, TargetStatus};
use prost::Message;

struct Setup {
    run: String,
    profiles: String,
    status: String,
}

impl Setup {
    async fn new() -> Setup {
        let run = unique_name("agent");
        let setup = Setup {
            profiles: format!("{run}.profiles"),
            status: format!("{run}.status"),
            run,
        };
        create_topics(&[&setup.profiles, &setup.status], 1).await;
        setup
    }

    fn agent(&self, pid: u32) -> Reaped {
        self.spawn_agent(pid, Stdio::null(), &[])
    }

    /// An agent whose stdout (the metrics address line) the test reads.
    fn agent_with_stdout(&self, pid: u32) -> Reaped {
        self.spawn_agent(pid, Stdio::piped(), &[])
    }

    fn spawn_agent(&self, pid: u32, stdout: Stdio, extra: &[&str]) -> Reaped {
        let bin =
            PathBuf::from(env!("CARGO_BIN_EXE_javelin-loadtest")).with_file_name("javelin-agent");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.agent.log", self.run)))
            .expect("log file");
        let child = Command::new(bin)
            .args([
                "--brokers",
                &kafka_brokers(),
                "--profiles-topic",
                &self.profiles,
                "--status-topic",
                &self.status,
            ])
            .args([
                "--pid",
                &pid.to_string(),
                "--window-secs",
                "2",
                "--min-jvm-age-secs",
                "0",
            ])
            .args([
                "--discovery-interval-secs",
                "1",
                "--recording-name",
                &self.run,
                "--installation",
                &self.run,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("agent starts");
        Reaped(child)
    }
}

fn statuses(log: &TopicLog, pid: u32) -> Vec<TargetStatus> {
    log.payloads()
        .iter()
        .filter_map(|p| TargetStatus::decode(p.as_slice()).ok())
        .filter(|s| s.target.as_ref().is_some_and(|t| t.pid == pid))
        .collect()
}

async fn wait_for_state(log: &TopicLog, pid: u32, state: TargetState) -> TargetStatus {
    wait_for(
        &format!("status {} for pid {pid}", state.name()),
        Duration::from_secs(60),
        || {
            let found = statuses(log, pid)
                .into_iter()
                .find(|s| s.state == state as i32);
            async move { found }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_s_session_is_recovered_never_duplicated() {
    let setup = Setup::new().await;
    let status_log = TopicLog::follow(&setup.status);
    let profiles_log = TopicLog::follow(&setup.profiles);
    let jvm = DemoJvm::start(&[]);

    let mut first = setup.agent(jvm.pid);
    wait_for_state(&status_log, jvm.pid, TargetState::Profiling).await;
    // kill -9: no chance to stop the recording or remove the marker.
    first.0.kill().expect("SIGKILL the agent");
    let _ = first.0.wait();

    let restarted_at = javelin_agent::target::now_ms();
    let _second = setup.agent(jvm.pid);
    let recovered = wait_for_state(&status_log, jvm.pid, TargetState::OrphanedRecovered).await;
    assert!(recovered.observed_at_ms >= restarted_at);

    // Profiling continues under the new agent.
    wait_for(
        "a window recorded after the restart",
        Duration::from_secs(60),
        || {
            let found = profiles_log
                .payloads()
                .iter()
                .filter_map(|p| ProfileWindow::decode(p.as_slice()).ok())
                .any(|w| {
                    w.target.as_ref().is_some_and(|t| t.pid == jvm.pid)
                        && w.window_start_ms >= restarted_at
                });
            async move { found.then_some(()) }
        },
    )
    .await;

    // Exactly one recording of ours in the JVM.
    let target = AttachTarget::for_pid(jvm.pid, Duration::from_secs(30)).expect("target");
    let check = tokio::task::spawn_blocking(move || target.jcmd("JFR.check"))
        .await
        .expect("join")
        .expect("JFR.check");
    let ours = check
        .text
        .lines()
        .filter(|l| l.contains(&format!("name={} ", setup.run)))
        .count();
    assert_eq!(ours, 1, "JFR.check:\n{}", check.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jvm_with_attach_disabled_is_reported_disabled() {
    let setup = Setup::new().await;
    let status_log = TopicLog::follow(&setup.status);
    let jvm = DemoJvm::start(&["-XX:+DisableAttachMechanism"]);
    let _agent = setup.agent(jvm.pid);
    let status = wait_for_state(&status_log, jvm.pid, TargetState::Disabled).await;
    assert!(
        status.last_error.contains("DisableAttachMechanism"),
        "{}",
        status.last_error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_async_profiler_is_an_external_conflict_and_left_untouched() {
    let setup = Setup::new().await;
    let status_log = TopicLog::follow(&setup.status);
    // A stand-in library named like async-profiler, loaded from a path that is not ours.
    let dir = std::env::temp_dir().join(&setup.run);
    std::fs::create_dir_all(&dir).expect("dir");
    let source = dir.join("stand_in.c");
    std::fs::write(
        &source,
        "int Agent_OnLoad(void *vm, char *options, void *reserved) { return 0; }\n",
    )
    .expect("write");
    let lib = dir.join("libasyncProfiler.so");
    let gcc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .expect("gcc");
    assert!(gcc.success(), "gcc failed");
    let jvm = DemoJvm::start(&[&format!("-agentpath:{}", lib.display())]);

    let _agent = setup.agent(jvm.pid);
    let status = wait_for_state(&status_log, jvm.pid, TargetState::ExternalConflict).await;
    assert!(
        status.last_error.contains(&lib.display().to_string()),
        "{}",
        status.last_error
    );

    // Never touched: no attach listener was started and no session marker written.
    let nspid = AttachTarget::for_pid(jvm.pid, Duration::from_secs(1))
        .expect("target")
        .nspid;
    let tmp = PathBuf::from(format!("/proc/{}/root/tmp", jvm.pid));
    assert!(
        !tmp.join(format!(".java_pid{nspid}")).exists(),
        "the agent attached"
    );
    assert!(
        !tmp.join(format!(".javelin-{nspid}.session")).exists(),
        "the agent wrote a marker"
    );
    assert!(
        !statuses(&status_log, jvm.pid)
            .iter()
            .any(|s| s.state == TargetState::Profiling as i32)
    );
}

/// Host JVMs share the host's /tmp, where a marker outlives a JVM that exited
/// or was killed, and pids come round again (pid_max is 32768 on many hosts):
/// a marker written for an earlier process with this pid must not keep the
/// new JVM unprofiled, while a marker of this very JVM by another live
/// installation still does, and the agent's log says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_marker_left_by_an_earlier_process_with_the_same_pid_is_ignored() {
    let setup = Setup::new().await;
    let status_log = TopicLog::follow(&setup.status);
    let jvm = DemoJvm::start(&[]);
    let target = ProcFs::new("/proc")
        .expect("/proc")
        .inspect(jvm.pid)
        .expect("the demo is a HotSpot JVM");
    // This test process stands in for another installation's live agent.
    let marker = |jvm_id: Option<String>| Marker {
        installation: format!("{}-other", setup.run),
        recorder: "jfr".into(),
        recording: "theirs".into(),
        agent_pid: std::process::id(),
        agent_start_ms: session::own_start_ms(),
        jvm: jvm_id,
    };
    let theirs = marker(Some(target.start_id.clone()));
    theirs.write(jvm.pid, target.nspid).expect("their marker");
    let agent = setup.agent(jvm.pid);
    let status = wait_for_state(&status_log, jvm.pid, TargetState::ExternalConflict).await;
    assert!(
        status.last_error.contains("-other"),
        "{}",
        status.last_error
    );
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/e2e-logs/{}.agent.log", setup.run));
    wait_for("the agent to log why", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let said = text
            .lines()
            .any(|l| l.contains("not profiling this JVM") && l.contains("-other"));
        async move { said.then_some(()) }
    })
    .await;
    drop(agent);
    assert_eq!(
        Marker::read(jvm.pid, target.nspid).expect("read"),
        Some(theirs),
        "a conflicting marker was touched"
    );

    // The same marker, written for another process with this pid (same boot,
    // other start ticks): stale. The agent profiles, the marker becomes ours.
    let boot = target.start_id.split(':').next().expect("a boot id");
    marker(Some(format!("{boot}:1")))
        .write(jvm.pid, target.nspid)
        .expect("the stale marker");
    let agent = setup.agent(jvm.pid);
    wait_for_state(&status_log, jvm.pid, TargetState::Profiling).await;
    let ours = Marker::read(jvm.pid, target.nspid)
        .expect("read")
        .expect("a marker");
    assert_eq!(ours.installation, setup.run);
    assert_eq!(ours.jvm.as_deref(), Some(target.start_id.as_str()));
    // Stopped the way a DaemonSet stops it: the session ends, the marker goes.
    stop_gracefully(agent).await;
    assert_eq!(Marker::read(jvm.pid, target.nspid).expect("read"), None);

    // An older agent's marker names no JVM: a file dated before the JVM
    // started is an earlier process's.
    let older = marker(None);
    older
        .write(jvm.pid, target.nspid)
        .expect("the older agent's marker");
    let path = PathBuf::from(format!(
        "/proc/{}/root/tmp/.javelin-{}.session",
        jvm.pid, target.nspid
    ));
    let before_the_jvm =
        std::time::UNIX_EPOCH + Duration::from_millis((target.start_ms - 120_000).max(0) as u64);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(before_the_jvm))
        .expect("date the marker");
    let agent = setup.agent(jvm.pid);
    let agent_pid = agent.0.id();
    wait_for("the new agent's marker", Duration::from_secs(60), || {
        let marker = Marker::read(jvm.pid, target.nspid).ok().flatten();
        let ours = marker.filter(|m| m.installation == setup.run && m.agent_pid == agent_pid);
        async move { ours }
    })
    .await;
    // No marker left behind in the host's /tmp.
    stop_gracefully(agent).await;
    assert_eq!(Marker::read(jvm.pid, target.nspid).expect("read"), None);
}

/// SIGTERM, then waits for the agent to end its sessions and exit.
async fn stop_gracefully(mut agent: Reaped) {
    let term = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    wait_for("the agent to stop", Duration::from_secs(60), || {
        let exited = agent.0.try_wait().ok().flatten().is_some();
        async move { exited.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jvm_that_exits_is_reported_exited() {
    let setup = Setup::new().await;
    let status_log = TopicLog::follow(&setup.status);
    let jvm = DemoJvm::start(&[]);
    let pid = jvm.pid;
    let _agent = setup.agent(pid);
    wait_for_state(&status_log, pid, TargetState::Profiling).await;
    drop(jvm);
    wait_for_state(&status_log, pid, TargetState::Exited).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_exports_its_metrics_for_prometheus() {
    let setup = Setup::new().await;
    let jvm = DemoJvm::start(&[]);
    let mut agent = setup.agent_with_stdout(jvm.pid);
    let url = {
        use std::io::BufRead;
        let stdout = agent.0.stdout.take().expect("agent stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the agent prints its metrics address");
        line.trim().rsplit(' ').next().expect("url").to_string()
    };
    let http = reqwest::Client::new();
    let value = |text: &str, name: &str, label: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let text = wait_for(
        "windows and a profiling target in /metrics",
        Duration::from_secs(60),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let text = http.get(&url).send().await.ok()?.text().await.ok()?;
                let windows = value(&text, "javelin_agent_windows_total", "type=\"cpu\"")?;
                let profiling = value(&text, "javelin_agent_targets", "state=\"profiling\"")?;
                (windows >= 1.0 && profiling == 1.0).then_some(text)
            }
        },
    )
    .await;
    assert!(
        value(&text, "javelin_agent_events_total", "outcome=\"parsed\"").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        value(&text, "javelin_agent_published_messages_total", "").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "javelin_agent_spool_dropped_messages_total", ""),
        Some(0.0),
        "{text}"
    );
    let health = http
        .get(url.replace("/metrics", "/healthz"))
        .send()
        .await
        .expect("healthz");
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_jfr_is_kept_when_enabled_within_its_bound() {
    let setup = Setup::new().await;
    let jvm = DemoJvm::start(&[]);
    let dir = std::env::temp_dir().join(format!("{}-jfr", setup.run));
    let max_bytes: u64 = 400_000;
    let _agent = setup.spawn_agent(
        jvm.pid,
        Stdio::null(),
        &[
            "--keep-jfr-dir",
            &dir.display().to_string(),
            "--keep-jfr-max-bytes",
            &max_bytes.to_string(),
        ],
    );
    // Every poll: what is kept stays under the bound; over time, windows keep coming.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    wait_for(
        "three windows kept over time",
        Duration::from_secs(90),
        || {
            let files: Vec<(PathBuf, u64)> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "jfr"))
                        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
                        .collect()
                })
                .unwrap_or_default();
            let total: u64 = files.iter().map(|f| f.1).sum();
            assert!(total <= max_bytes, "{total} bytes kept, bound {max_bytes}");
            for (file, _) in &files {
                if let Ok(bytes) = std::fs::read(file) {
                    let (chunks, error) = javelin_agent::jfr_parse::scan_chunks(&bytes);
                    assert!(
                        error.is_none() && !chunks.is_empty(),
                        "{}: {error:?}",
                        file.display()
                    );
                }
            }
            let mut seen = seen.lock().expect("lock");
            seen.extend(files.into_iter().map(|f| f.0));
            let enough = seen.len() >= 3;
            async move { enough.then_some(()) }
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncation_is_counted_in_messages_and_target_status() {
    let setup = Setup::new().await;
    let status_log = TopicLog::follow(&setup.status);
    let profiles_log = TopicLog::follow(&setup.profiles);
    let jvm = DemoJvm::start(&[]);
    let _agent = setup.spawn_agent(jvm.pid, Stdio::null(), &["--max-stacks-per-window", "2"]);
    let status = wait_for(
        "a status counting truncation",
        Duration::from_secs(60),
        || {
            let found = statuses(&status_log, jvm.pid)
                .into_iter()
                .find(|s| s.truncated_windows > 0 && s.dropped_stacks > 0);
            async move { found }
        },
    )
    .await;
    assert_eq!(status.state, TargetState::Profiling as i32);
    // The windows themselves carry the same evidence, and never more than 2
    // stacks. The profiles topic is read by its own follower: wait until it has
    // caught up with a truncated window (the status can arrive first).
    let windows: Vec<ProfileWindow> = wait_for(
        "a truncated window on the profiles topic",
        Duration::from_secs(60),
        || {
            let windows: Vec<ProfileWindow> = profiles_log
                .payloads()
                .iter()
                .filter_map(|p| ProfileWindow::decode(p.as_slice()).ok())
                .collect();
            let ready = windows
                .iter()
                .any(|w| w.accounting.is_some_and(|a| a.truncated));
            async move { ready.then_some(windows) }
        },
    )
    .await;
    assert!(!windows.is_empty());
    assert!(windows.iter().all(|w| w.stacks.len() <= 2));
    let truncated = windows
        .iter()
        .filter(|w| w.accounting.is_some_and(|a| a.truncated))
        .count();
    assert!(truncated > 0);
    assert!(windows.iter().any(|w| {
        w.stacks
            .iter()
            .any(|s| w.frames(s).next() == Some("[truncated]"))
    }));
}
