//! The whole pipeline on real parts, for the end-to-end tests: the demo JVM,
//! the agent (own attach protocol + built-in JFR, 5-s windows), tansu, the
//! consumer, ClickHouse and the query API, on topics and a database of the
//! run's own. Needs `dev/stack up` and `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use javelin_schema::testkit::{
    DemoJvm, RunTopics, clickhouse_url, create_topics, kafka_brokers, unique_name,
};

/// A child process killed (SIGKILL) and reaped when the test ends, pass or fail.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, logs: &Path, mut cmd: Command) -> Proc {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    cmd.stderr(file).stdin(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
    Proc { name, child, log }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The running pipeline; every process is stopped when it is dropped.
pub struct Pipeline {
    /// The run's name: its database, consumer group and topic prefix.
    pub run: String,
    pub topics: RunTopics,
    /// The query API, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub base: String,
    /// When the demo JVM was started.
    pub started: Instant,
    /// Agent, consumer, query API: dropped (killed) before the demo.
    procs: Vec<Proc>,
    pub demo: DemoJvm,
}

impl Pipeline {
    /// Starts everything for a run named `<prefix>_<unique>` and returns once
    /// the query API listens (profiles arrive a window or two later).
    pub async fn start(prefix: &str) -> Pipeline {
        Self::start_with(prefix, &[]).await
    }

    /// [`Pipeline::start`] with extra JVM options for the demo (e.g.
    /// `-Djavelin.demo.phase.seconds=15`).
    pub async fn start_with(prefix: &str, demo_jvm_args: &[&str]) -> Pipeline {
        let run = unique_name(prefix);
        let logs = repo_root().join("target").join("e2e-logs").join(&run);
        std::fs::create_dir_all(&logs).expect("log dir");
        let topics = RunTopics::new(&run);
        let database = run.clone();
        create_topics(&[&topics.profiles, &topics.status, &topics.dlq], 2).await;

        let migrate = Command::new(super::bin("javelin-consumer"))
            .args([
                "migrate",
                "--clickhouse-url",
                &clickhouse_url(),
                "--database",
                &database,
            ])
            .output()
            .expect("migrate runs");
        assert!(
            migrate.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );

        // The demo workload; `start` returns once its main() runs.
        let started = Instant::now();
        let demo = DemoJvm::start(demo_jvm_args);
        let pid = demo.pid.to_string();

        let mut agent = Command::new(super::bin("javelin-agent"));
        agent.args([
            "--brokers",
            &kafka_brokers(),
            "--profiles-topic",
            &topics.profiles,
            "--status-topic",
            &topics.status,
            "--pid",
            &pid,
            "--window-secs",
            "5",
            "--min-jvm-age-secs",
            "0",
            "--discovery-interval-secs",
            "1",
            "--recording-name",
            &run,
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        agent.stdout(Stdio::null());
        let agent = spawn("agent", &logs, agent);

        let mut consumer = Command::new(super::bin("javelin-consumer"));
        consumer.args(topics.consumer_args(&clickhouse_url(), &database, &kafka_brokers(), &run));
        consumer.stdout(Stdio::null());
        let consumer = spawn("consumer", &logs, consumer);

        let mut query = Command::new(super::bin("javelin-query"));
        query
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--clickhouse-url",
                &clickhouse_url(),
                "--database",
                &database,
            ])
            .stdout(Stdio::piped());
        let mut query = spawn("query", &logs, query);
        let base = javelin_schema::testkit::listening_url(
            query.child.stdout.take().expect("query stdout"),
        );
        Pipeline {
            run,
            topics,
            base,
            started,
            procs: vec![agent, consumer, query],
            demo,
        }
    }

    /// Where each process logs, for messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("{}: {}", p.name, p.log.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
