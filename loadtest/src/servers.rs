//! Servers a scenario owns: a ClickHouse of its own (through `dev/stack`'s
//! launcher, on free ports, in its own directory) that it may stop and start,
//! and the consumer process it may kill and restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The repository root: `JAVELIN_REPO`, else the first ancestor of the
/// executable that holds `dev/stack` (binaries live in `<repo>/target/<profile>/`).
pub fn repo_root() -> anyhow::Result<PathBuf> {
    if let Some(repo) = std::env::var_os("JAVELIN_REPO") {
        return Ok(PathBuf::from(repo));
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .find(|d| d.join("dev/stack").is_file())
        .map(Path::to_path_buf)
        .context("cannot find the repository (dev/stack): set JAVELIN_REPO")
}

/// A binary built next to this one.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the workspace binaries first",
        path.display()
    );
    Ok(path)
}

/// A loopback port for a server of the run (see `testkit::try_free_port`).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(javelin_schema::testkit::try_free_port()?)
}

/// The resident memory in bytes (from /proc) of the process a pid file names,
/// if it runs.
pub fn rss_of_pidfile(pidfile: &Path) -> Option<u64> {
    let pid = std::fs::read_to_string(pidfile).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Runs `start` up to three times: another process may bind a port between
/// our check and the server's bind; `dev/stack` fails fast then, and a fresh
/// set of ports (chosen inside `start`) is tried.
pub fn on_fresh_ports<T>(mut start: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut last = None;
    for _ in 0..3 {
        match start() {
            Ok(server) => return Ok(server),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the server never started")))
}

/// A ClickHouse server of the scenario's own; stopped and removed on drop.
#[derive(Debug)]
pub struct PrivateClickHouse {
    pub dir: PathBuf,
    pub http: u16,
    pub tcp: u16,
    repo: PathBuf,
}

impl PrivateClickHouse {
    pub fn start(name: &str) -> anyhow::Result<PrivateClickHouse> {
        on_fresh_ports(|| {
            let ch = PrivateClickHouse {
                dir: std::env::temp_dir().join(name),
                http: free_port()?,
                tcp: free_port()?,
                repo: repo_root()?,
            };
            ch.stack("start-clickhouse")?;
            Ok(ch)
        })
    }

    /// Runs `dev/stack <verb>` for this server.
    pub fn stack(&self, verb: &str) -> anyhow::Result<()> {
        let status = Command::new(self.repo.join("dev/stack"))
            .arg(verb)
            .env("JAVELIN_STACK_DIR", &self.dir)
            .env("JAVELIN_CLICKHOUSE_HTTP_PORT", self.http.to_string())
            .env("JAVELIN_CLICKHOUSE_TCP_PORT", self.tcp.to_string())
            .stdout(Stdio::null())
            .status()
            .context("running dev/stack")?;
        if !status.success() {
            bail!("dev/stack {verb} failed for {}", self.dir.display());
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// The server's resident memory in bytes (from /proc), if it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of_pidfile(&self.dir.join("clickhouse.pid"))
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        let _ = self.stack("stop-clickhouse");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The consumer of a scenario: `javelin-consumer run` with the given
/// arguments, restartable; killed on drop.
#[derive(Debug)]
pub struct ConsumerProcess {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Its `/metrics` URL (printed at start).
    pub metrics_url: String,
    pub starts: u32,
}

impl ConsumerProcess {
    pub fn start(args: Vec<String>, log: PathBuf) -> anyhow::Result<ConsumerProcess> {
        let mut c = ConsumerProcess {
            args,
            log,
            child: None,
            metrics_url: String::new(),
            starts: 0,
        };
        c.spawn()?;
        Ok(c)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(sibling("javelin-consumer")?)
            .arg("run")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting javelin-consumer")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("consumer stdout")?).read_line(&mut line)?;
        self.metrics_url = line
            .trim()
            .rsplit(' ')
            .next()
            .context("the consumer's metrics line")?
            .to_string();
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL (no chance to commit), then a fresh process.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn()
    }

    /// Fails when the consumer exited on its own.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("the consumer exited ({status}); see {}", self.log.display());
        }
        Ok(())
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tansu broker of the scenario's own with durable (sqlite) storage, so a
/// restart keeps topics, messages and committed offsets; killed on drop.
#[derive(Debug)]
pub struct PrivateTansu {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateTansu {
    pub fn start(name: &str) -> anyhow::Result<PrivateTansu> {
        let dir = std::env::temp_dir().join(format!("{name}-tansu"));
        std::fs::create_dir_all(&dir)?;
        let mut tansu = PrivateTansu {
            dir,
            port: free_port()?,
            child: None,
        };
        tansu.resume()?;
        Ok(tansu)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its port and storage; returns once it accepts connections.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let bin = std::env::var_os("JAVELIN_TANSU_BIN").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/javelin/tools/tansu-0.6.0/bin/tansu")
            },
            PathBuf::from,
        );
        let url = format!("tcp://{}", self.brokers());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))?;
        // A relative sqlite path: tansu 0.6 mis-resolves absolute ones.
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "tansu did not accept connections within 30 s; see {}",
                    self.dir.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// Kills the broker (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("JAVELIN_KEEP_SCENARIO_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The consumer's `run` arguments for a load run named `run` (topics
/// `<run>.profiles`, `<run>.status`, `<run>.dlq`; group and database `run`).
pub fn consumer_args(clickhouse_url: &str, brokers: &str, run: &str) -> Vec<String> {
    [
        "--clickhouse-url",
        clickhouse_url,
        "--database",
        run,
        "--brokers",
        brokers,
        "--group-id",
        run,
        "--profiles-topic",
        &format!("{run}.profiles"),
        "--status-topic",
        &format!("{run}.status"),
        "--dlq-topic",
        &format!("{run}.dlq"),
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Times from the consumer's start until `samples` holds `expected` rows:
/// (until the first rows, until all rows). Fails if the consumer exits or 30 min pass.
pub async fn consume_until_stored(
    db: &clickhouse::Client,
    args: Vec<String>,
    log: PathBuf,
    expected: u64,
) -> anyhow::Result<(Option<std::time::Duration>, std::time::Duration)> {
    let started = std::time::Instant::now();
    let mut consumer = ConsumerProcess::start(args, log)?;
    let mut first = None;
    loop {
        let n: u64 = db
            .query("SELECT count() FROM samples")
            .fetch_one()
            .await
            .unwrap_or(0);
        if n > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if n >= expected {
            return Ok((first, started.elapsed()));
        }
        consumer.check_alive()?;
        if started.elapsed() > std::time::Duration::from_secs(1800) {
            bail!("the consumer stored {n} of {expected} rows in 30 min");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A benchmark run's own topic and migrated database: returns the server
/// client and the client of database `run`.
pub async fn bench_setup(
    brokers: &str,
    clickhouse_url: &str,
    run: &str,
) -> anyhow::Result<(clickhouse::Client, clickhouse::Client)> {
    crate::topics::create(brokers, &[format!("{run}.profiles")], 4).await?;
    let server = clickhouse::Client::default()
        .with_url(clickhouse_url)
        .with_validation(false);
    javelin_schema::migrations::migrate(
        &server,
        run,
        javelin_schema::migrations::MigrateOptions::default(),
    )
    .await
    .context("migrating")?;
    let db = server.clone().with_database(run);
    Ok((server, db))
}
