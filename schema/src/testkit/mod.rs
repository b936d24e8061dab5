//! Helpers for tests that talk to the real local stack (`dev/stack up`).
//! Enabled by the `testkit` feature; never used by the binaries.
//! [`chdb::ChdbServer`] is a current ClickHouse (26.9) of a test's own, beside
//! the stack's 18.16.

pub mod chdb;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// ClickHouse HTTP URL of the local stack.
pub fn clickhouse_url() -> String {
    std::env::var("JAVELIN_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:18123".into())
}

/// Kafka bootstrap servers of the local stack.
pub fn kafka_brokers() -> String {
    std::env::var("JAVELIN_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The tansu binary the local stack runs (for tests that need a broker of their own).
pub fn tansu_bin() -> std::path::PathBuf {
    std::env::var_os("JAVELIN_TANSU_BIN").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            std::path::Path::new(&home).join(".cache/javelin/tools/tansu-0.6.0/bin/tansu")
        },
        std::path::PathBuf::from,
    )
}

/// A client for the local stack's ClickHouse, no database selected.
pub fn clickhouse_client() -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
}

/// A name no other test run uses, for databases, topics and consumer groups:
/// tests run in parallel and re-run without cleanup.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Polls `check` until it returns `Some`, or fails after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates topics on the local stack's broker (idempotent: existing topics are fine).
pub async fn create_topics(names: &[&str], partitions: i32) {
    create_topics_on(&kafka_brokers(), names, partitions).await
}

/// Creates topics on the broker at `brokers`.
pub async fn create_topics_on(brokers: &str, names: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics request");
    for result in results {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating topic {topic}"
            );
        }
    }
}

/// The application version the demo JVM carries (`JAVELIN_APP_VERSION`).
pub const DEMO_APP_VERSION: &str = "1.0.0";

/// The demo workload (`loadtest/java/src/JavelinDemo.java`) in a JVM of its own,
/// killed when dropped.
#[derive(Debug)]
pub struct DemoJvm {
    pub child: std::process::Child,
    pub pid: u32,
}

impl Drop for DemoJvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `dev/tools <name>` (installing the tool once per machine into the
/// per-user cache) and returns the value it prints (`KEY=VALUE`).
pub fn dev_tool(name: &str) -> String {
    let out = std::process::Command::new(repo_root().join("dev/tools"))
        .arg(name)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("dev/tools runs");
    assert!(out.status.success(), "dev/tools {name} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("dev/tools printed KEY=VALUE")
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The base URL a Javelin binary announces on its first stdout line
/// ("javelin-query listening on http://127.0.0.1:PORT/"), without the
/// trailing slash; fails with the line when it names no URL.
pub fn listening_url(stdout: impl std::io::Read) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the binary prints where it listens");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    assert!(url.starts_with("http://"), "no URL in {line:?}");
    url
}

/// The demo compiled once per test process.
fn demo_classes() -> &'static std::path::Path {
    static CLASSES: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CLASSES.get_or_init(|| {
        let out = repo_root()
            .join("target")
            .join("test-java")
            .join(std::process::id().to_string());
        let ok = std::process::Command::new("javac")
            .arg("-d")
            .arg(&out)
            .arg(repo_root().join("loadtest/java/src/JavelinDemo.java"))
            .status()
            .expect("javac runs");
        assert!(ok.success(), "javac failed");
        out
    })
}

impl DemoJvm {
    /// Starts the demo with extra JVM options and returns once `main` runs.
    pub fn start(jvm_args: &[&str]) -> DemoJvm {
        use std::io::BufRead;
        let mut child = std::process::Command::new("java")
            .args(jvm_args)
            .arg("-cp")
            .arg(demo_classes())
            .arg("JavelinDemo")
            .env("JAVELIN_SERVICE", "javelin-demo")
            .env("JAVELIN_APP_VERSION", DEMO_APP_VERSION)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("java starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("demo prints its pid");
        assert!(
            line.starts_with("javelin-demo pid"),
            "unexpected first line {line:?}"
        );
        let pid = child.id();
        DemoJvm { child, pid }
    }
}

/// One message as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a topic from the beginning in the background (own consumer group) and
/// collects every message, for tests to inspect.
#[derive(Debug, Clone, Default)]
pub struct TopicLog {
    messages: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl TopicLog {
    pub fn follow(topic: &str) -> TopicLog {
        Self::follow_on(&kafka_brokers(), topic)
    }

    /// Follows a topic on the broker at `brokers`.
    pub fn follow_on(brokers: &str, topic: &str) -> TopicLog {
        use rdkafka::Message;
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::message::Headers;
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique_name("testlog"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let log = TopicLog::default();
        let messages = log.messages.clone();
        tokio::spawn(async move {
            while let Ok(m) = consumer.recv().await {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let received = Received {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                };
                if let Ok(mut all) = messages.lock() {
                    all.push(received);
                }
            }
        });
        log
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Every payload received so far.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.messages().into_iter().map(|m| m.payload).collect()
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a
/// failing test never leaves servers or binaries behind.
#[derive(Debug)]
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port for a server a test is about to start: free a moment ago
/// and below the kernel's ephemeral range. A port from `bind(0)` comes from
/// that range, where any outgoing connection (a Kafka client, curl) may take
/// it as its source port before the server binds it; CI saw a ClickHouse fail
/// to start that way. Never hands out the same port twice in one process.
pub fn free_port() -> u16 {
    try_free_port().expect("a free loopback port below the ephemeral range")
}

/// [`free_port`], as a `Result` for callers that add their own context.
pub fn try_free_port() -> std::io::Result<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    // Ports 20000..32000 sit below Linux's default ephemeral range (32768..60999).
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    // Start somewhere different per process so concurrent test binaries and
    // subprocesses rarely probe the same ports.
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for i in 0..SPAN {
        let port = (LOW + (seed.wrapping_add(i.wrapping_mul(7_919))) % SPAN) as u16;
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port in 20000..32000",
    ))
}

/// The topics of one test run: `<run>.profiles`, `<run>.status`, `<run>.dlq`.
#[derive(Debug, Clone)]
pub struct RunTopics {
    pub profiles: String,
    pub status: String,
    pub dlq: String,
}

impl RunTopics {
    pub fn new(run: &str) -> RunTopics {
        RunTopics {
            profiles: format!("{run}.profiles"),
            status: format!("{run}.status"),
            dlq: format!("{run}.dlq"),
        }
    }

    /// `javelin-consumer run …` for these topics: ClickHouse database, brokers,
    /// consumer group, and metrics on a free port (tests run in parallel).
    pub fn consumer_args(
        &self,
        clickhouse_url: &str,
        database: &str,
        brokers: &str,
        group: &str,
    ) -> Vec<String> {
        [
            "run",
            "--clickhouse-url",
            clickhouse_url,
            "--database",
            database,
            "--brokers",
            brokers,
            "--group-id",
            group,
            "--profiles-topic",
            &self.profiles,
            "--status-topic",
            &self.status,
            "--dlq-topic",
            &self.dlq,
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}
