//! "CPU" that means CPU, end to end: a JVM with 8 busy threads (more than the
//! 5 that JFR's `jdk.ExecutionSample` takes per period) profiled by the agent
//! binary, its windows through tansu, the consumer and ClickHouse, and the CPU
//! total the query API serves for whole windows compared with the process's own
//! CPU time (utime + stime from /proc/<pid>/stat, read every 20 ms and
//! interpolated at the windows' bounds). The windows the agent published to
//! Kafka are decoded too: the API's total must equal their sum.
//!
//! - async-profiler 4.5 (`JAVELIN_TEST_ASYNC_PROFILER`) and JDK 25's CPU-time
//!   sampler (`jdk.CPUTimeSample`): within 10 % of the process's CPU time.
//! - JDK 17's `jdk.ExecutionSample`: reported as recorder `jfr` (sampled) with
//!   that `cpu_basis` in /api/v1/targets, and never more than 5 threads × the
//!   span, whatever the process used.
//!
//! Needs `dev/stack up` and `cargo build --workspace --bins` first.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use javelin_schema::testkit::{
    Reaped, RunTopics, TopicLog, clickhouse_url, create_topics, kafka_brokers, unique_name,
    wait_for,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, TargetStatus};
use prost::Message;

/// Busy threads in the workload: more than ExecutionSample's 5 per period.
const THREADS: usize = 8;
const JDK25: &str = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java";
const JDK17: &str = "java";
const WINDOW_SECS: u64 = 5;
/// Compared span: whole windows adding up to at least this, after the warm-up.
const SPAN: Duration = Duration::from_secs(20);
/// Windows skipped at the start: JIT compilation and the recorder's start-up
/// run on threads the JFR sampler does not see (compiler threads).
const WARMUP_WINDOWS: usize = 2;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../producer/tests/data")
        .join(file)
}

/// A built binary next to `javelin-loadtest`.
fn binary(name: &str) -> Command {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_javelin-loadtest")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    Command::new(path)
}

fn logs_dir() -> PathBuf {
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    logs
}

/// `BusyThreads.java` run as a single-file source program by `java`, killed
/// when dropped.
struct BusyJvm {
    child: Child,
    pid: u32,
}

impl Drop for BusyJvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BusyJvm {
    /// Starts the workload as service `service`.
    fn start(java: &str, service: &str) -> BusyJvm {
        if java.starts_with('/') {
            assert!(
                Path::new(java).exists(),
                "{java} is missing: this test needs that JDK"
            );
        }
        let argv = [
            java.to_string(),
            data("BusyThreads.java").display().to_string(),
            THREADS.to_string(),
        ];
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("JAVELIN_SERVICE", service)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?}: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the workload prints its pid");
        let pid = line
            .trim()
            .strip_prefix("busy-threads pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?} from {argv:?}"));
        BusyJvm { child, pid }
    }
}

/// The process's CPU time (utime + stime), in ns.
fn process_cpu_ns(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: i64 = fields.get(11)?.parse::<i64>().ok()? + fields.get(12)?.parse::<i64>().ok()?;
    Some(ticks * 1_000_000_000 / clock_ticks_per_second())
}

/// `CLK_TCK`, the unit of utime and stime.
fn clock_ticks_per_second() -> i64 {
    static HZ: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|&hz: &i64| hz > 0)
            .expect("getconf CLK_TCK prints a positive number")
    })
}

/// Reads the process's CPU time every 20 ms, with the wall-clock time (ms), until dropped.
struct CpuClock {
    samples: Arc<Mutex<Vec<(i64, i64)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for CpuClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl CpuClock {
    fn start(pid: u32) -> CpuClock {
        let clock = CpuClock {
            samples: Arc::default(),
            stop: Arc::default(),
        };
        let (samples, stop) = (clock.samples.clone(), clock.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(cpu) = process_cpu_ns(pid) {
                    let at = now_ms();
                    samples.lock().expect("samples").push((at, cpu));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        clock
    }

    /// CPU time at wall-clock `ms`, interpolated between the readings around it.
    fn at(&self, ms: i64) -> f64 {
        let samples = self.samples.lock().expect("samples");
        let after = samples.partition_point(|(t, _)| *t < ms);
        assert!(
            after > 0 && after < samples.len(),
            "no CPU readings around {ms} (readings {:?}..{:?})",
            samples.first(),
            samples.last()
        );
        let ((t0, c0), (t1, c1)) = (samples[after - 1], samples[after]);
        if t1 == t0 {
            return c1 as f64;
        }
        c0 as f64 + (c1 - c0) as f64 * (ms - t0) as f64 / (t1 - t0) as f64
    }

    fn latest_ms(&self) -> i64 {
        self.samples
            .lock()
            .expect("samples")
            .last()
            .map_or(0, |s| s.0)
    }
}

/// The whole pipeline for one pid: the agent binary (profiling only that pid),
/// topics of its own, the consumer into a database of its own, and the query API.
struct Pipeline {
    _processes: Vec<Reaped>,
    profiles: TopicLog,
    status: TopicLog,
    base: String,
    logs: String,
}

impl Pipeline {
    async fn start(run: &str, pid: u32, agent_args: &[&str]) -> Pipeline {
        let topics = RunTopics::new(run);
        create_topics(&[&topics.profiles, &topics.status, &topics.dlq], 1).await;
        let profiles_log = TopicLog::follow(&topics.profiles);
        let status_log = TopicLog::follow(&topics.status);
        let migrate = binary("javelin-consumer")
            .args([
                "migrate",
                "--clickhouse-url",
                &clickhouse_url(),
                "--database",
                run,
            ])
            .output()
            .expect("migrate runs");
        assert!(
            migrate.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let log = |name: &str| logs_dir().join(format!("{run}.{name}.log"));
        let spawn = |mut cmd: Command, name: &str, stdout: Stdio| {
            let file = std::fs::File::create(log(name)).expect("log file");
            Reaped(
                cmd.stdout(stdout)
                    .stderr(file)
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {name}: {e}")),
            )
        };
        let mut agent = binary("javelin-agent");
        agent
            .args(["--brokers", &kafka_brokers()])
            .args(["--profiles-topic", &topics.profiles])
            .args(["--status-topic", &topics.status])
            .args(["--pid", &pid.to_string()])
            .args(["--window-secs", &WINDOW_SECS.to_string()])
            .args(["--min-jvm-age-secs", "0", "--discovery-interval-secs", "1"])
            .args(["--recording-name", run, "--installation", run])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(agent_args);
        let agent = spawn(agent, "agent", Stdio::null());
        let mut consumer = binary("javelin-consumer");
        consumer.args(topics.consumer_args(&clickhouse_url(), run, &kafka_brokers(), run));
        let consumer = spawn(consumer, "consumer", Stdio::null());
        let mut query = binary("javelin-query");
        query.args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--clickhouse-url",
            &clickhouse_url(),
            "--database",
            run,
        ]);
        let mut query = spawn(query, "query", Stdio::piped());
        let base =
            javelin_schema::testkit::listening_url(query.0.stdout.take().expect("query stdout"));
        Pipeline {
            _processes: vec![agent, consumer, query],
            profiles: profiles_log,
            status: status_log,
            base,
            logs: log("{agent,consumer,query}").display().to_string(),
        }
    }

    /// Complete CPU windows of `pid` as published to Kafka, by start: (end, Σ value, Σ count).
    fn cpu_windows(&self, pid: u32) -> BTreeMap<i64, (i64, i64, i64)> {
        // Parts of a window: (end, parts seen, part count, value, count).
        let mut parts: BTreeMap<i64, (i64, u32, u32, i64, i64)> = BTreeMap::new();
        for payload in self.profiles.payloads() {
            let Ok(w) = ProfileWindow::decode(payload.as_slice()) else {
                continue;
            };
            if w.kind() != ProfileType::Cpu || w.target.as_ref().is_none_or(|t| t.pid != pid) {
                continue;
            }
            let slot = parts.entry(w.window_start_ms).or_default();
            slot.0 = w.window_end_ms;
            slot.1 += 1;
            slot.2 = w.part_count.max(1);
            slot.3 += w.stacks.iter().map(|s| s.value).sum::<i64>();
            slot.4 += w.stacks.iter().map(|s| s.count).sum::<i64>();
        }
        parts
            .into_iter()
            .filter(|(_, p)| p.1 == p.2)
            .map(|(start, p)| (start, (p.0, p.3, p.4)))
            .collect()
    }

    fn latest_status(&self, pid: u32) -> Option<TargetStatus> {
        self.status
            .payloads()
            .iter()
            .filter_map(|p| TargetStatus::decode(p.as_slice()).ok())
            .filter(|s| s.target.as_ref().is_some_and(|t| t.pid == pid))
            .max_by_key(|s| s.observed_at_ms)
    }

    /// The CPU total the query API serves for the windows that start in
    /// `[first_start, last_start]` (stored by their start second).
    async fn stored_cpu(&self, service: &str, first_start: i64, last_start: i64) -> Option<i64> {
        let url = format!(
            "{}/api/v1/flamegraph?service={service}&type=cpu&from={first_start}&to={}",
            self.base,
            last_start + 1
        );
        let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        body["total"].as_i64()
    }

    /// The target as /api/v1/targets shows it.
    async fn target_view(&self, service: &str) -> Option<serde_json::Value> {
        let now = now_ms();
        let url = format!(
            "{}/api/v1/targets?service={service}&from={}&to={now}",
            self.base,
            now - 600_000
        );
        let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        body["targets"].as_array()?.first().cloned()
    }
}

/// Contiguous whole CPU windows after the warm-up, spanning at least [`SPAN`].
#[derive(Debug)]
struct Span {
    start: i64,
    end: i64,
    /// Start of the last window.
    last_start: i64,
    /// Σ CPU value (ns) the agent published for these windows.
    value: i64,
    /// Σ samples behind it.
    samples: i64,
    windows: usize,
}

/// Waits for [`Span`] worth of published windows of `pid`, CPU readings included.
async fn published_span(pipeline: &Pipeline, pid: u32, cpu: &CpuClock) -> Span {
    // Generous: on a loaded 2-core host a collect can take seconds.
    let deadline = SPAN + Duration::from_secs(180);
    wait_for(
        &format!(
            "{SPAN:?} of contiguous CPU windows from the agent (logs {})",
            pipeline.logs
        ),
        deadline,
        || {
            let windows = pipeline.cpu_windows(pid);
            let latest_reading = cpu.latest_ms();
            let span = windows.iter().skip(WARMUP_WINDOWS).try_fold(
                None::<Span>,
                |acc, (&start, &(end, value, samples))| {
                    let span = match acc {
                        None => Span {
                            start,
                            end,
                            last_start: start,
                            value,
                            samples,
                            windows: 1,
                        },
                        // A hole (a window without CPU samples) would skew the
                        // comparison: start over after it.
                        Some(s) if s.end != start => Span {
                            start,
                            end,
                            last_start: start,
                            value,
                            samples,
                            windows: 1,
                        },
                        Some(s) => Span {
                            end,
                            last_start: start,
                            value: s.value + value,
                            samples: s.samples + samples,
                            windows: s.windows + 1,
                            ..s
                        },
                    };
                    if span.end - span.start >= SPAN.as_millis() as i64 && span.end < latest_reading
                    {
                        Err(span)
                    } else {
                        Ok(Some(span))
                    }
                },
            );
            async move { span.err() }
        },
    )
    .await
}

/// What one run measured.
struct Measured {
    span: Span,
    /// The query API's CPU total over the span's windows, ns.
    stored: i64,
    /// The process's CPU time over the span, ns.
    kernel: f64,
    status: TargetStatus,
    target_view: serde_json::Value,
}

impl Measured {
    fn ratio(&self) -> f64 {
        self.stored as f64 / self.kernel
    }
}

/// Profiles a fresh busy JVM through the whole pipeline and measures the
/// stored CPU total against the process's CPU time over the same windows.
async fn measure(java: &str, agent_args: &[&str]) -> Measured {
    let run = unique_name("cpuacc");
    let service = run.replace('_', "-");
    let jvm = BusyJvm::start(java, &service);
    let cpu = CpuClock::start(jvm.pid);
    let pipeline = Pipeline::start(&run, jvm.pid, agent_args).await;
    let span = published_span(&pipeline, jvm.pid, &cpu).await;
    let kernel = cpu.at(span.end) - cpu.at(span.start);
    // Stored means what the API serves: it must be exactly what was published.
    let stored = wait_for(
        &format!(
            "the query API's CPU total to reach the published {} ns (logs {})",
            span.value, pipeline.logs
        ),
        Duration::from_secs(60),
        || {
            let p = &pipeline;
            let service = service.clone();
            async move {
                let total = p.stored_cpu(&service, span.start, span.last_start).await?;
                (total == span.value).then_some(total)
            }
        },
    )
    .await;
    let status = wait_for("a status for the target", Duration::from_secs(30), || {
        let s = pipeline.latest_status(jvm.pid);
        async move { s }
    })
    .await;
    let target_view = wait_for(
        "the target in /api/v1/targets",
        Duration::from_secs(60),
        || {
            let p = &pipeline;
            let service = service.clone();
            async move { p.target_view(&service).await }
        },
    )
    .await;
    let measured = Measured {
        span,
        stored,
        kernel,
        status,
        target_view,
    };
    eprintln!(
        "recorder {:?}: {} windows, {} ms: stored {:.3} CPU-s from {} samples, \
         process used {:.3} CPU-s: ratio {:.3}; cpu_basis {}; logs {}",
        measured.status.recorder,
        measured.span.windows,
        measured.span.end - measured.span.start,
        measured.stored as f64 / 1e9,
        measured.span.samples,
        measured.kernel / 1e9,
        measured.ratio(),
        measured.target_view["cpu_basis"],
        pipeline.logs
    );
    measured
}

fn assert_within_10_percent(ratio: f64) {
    assert!(
        (0.9..=1.1).contains(&ratio),
        "stored CPU / process CPU = {ratio:.3}, outside 1 ± 10 %"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn async_profiler_cpu_matches_the_process_cpu_time_with_more_threads_than_jfr_samples() {
    let library = std::env::var("JAVELIN_TEST_ASYNC_PROFILER").unwrap_or_else(|_| {
        panic!(
            "JAVELIN_TEST_ASYNC_PROFILER is not set: point it at libasyncProfiler.so \
             (dev/test uses ../shared/third_party/async-profiler-4.5/lib/libasyncProfiler.so)"
        )
    });
    assert!(
        Path::new(&library).exists(),
        "JAVELIN_TEST_ASYNC_PROFILER={library} does not exist"
    );
    let m = measure(JDK17, &["--async-profiler-lib", &library]).await;
    assert_eq!(m.status.recorder, "async-profiler");
    assert_eq!(m.target_view["recorder"], "async-profiler");
    assert_within_10_percent(m.ratio());
}

#[tokio::test(flavor = "multi_thread")]
async fn jdk25_cpu_time_sampler_matches_the_process_cpu_time_with_more_threads_than_jfr_samples() {
    let m = measure(JDK25, &[]).await;
    assert_eq!(m.status.recorder, "jfr-cpu-time", "{:?}", m.status);
    assert_eq!(m.target_view["recorder"], "jfr-cpu-time");
    assert_within_10_percent(m.ratio());
}

/// JDK 17's ExecutionSample is what the API calls it: recorder `jfr`, a
/// sampled `cpu_basis`. Its total is at most 5 threads × period per period,
/// however many threads run (8 here): under the CPU time where more than 5
/// threads get a CPU, over it where runnable threads wait for one. Only the
/// cap is asserted; the ratio is printed.
#[tokio::test(flavor = "multi_thread")]
async fn jdk17_execution_samples_are_reported_as_sampled_and_capped_at_5_threads() {
    let m = measure(JDK17, &[]).await;
    assert_eq!(m.status.recorder, "jfr", "{:?}", m.status);
    assert_eq!(m.target_view["recorder"], "jfr");
    let basis = m.target_view["cpu_basis"].as_str().unwrap_or_default();
    assert!(basis.contains("sampled"), "cpu_basis {basis:?}");
    let span_ms = m.span.end - m.span.start;
    // 5 % for samples near the window bounds (dump vs window end).
    let cap_ns = 5 * span_ms * 1_000_000;
    assert!(
        m.stored as f64 <= cap_ns as f64 * 1.05,
        "{} ns stored over {span_ms} ms: more than 5 threads' worth",
        m.stored
    );
    assert_eq!(
        m.stored,
        m.span.samples * 10_000_000,
        "each sample weighs the 10 ms period"
    );
}
