//! `bench-agent-rss`: the agent's peak memory against the bound it is built
//! to keep (docs/architecture.md, "Memory"). Starts N small JVMs running a busy
//! allocation workload with many distinct stacks, runs the real agent binary
//! (the `javelin-agent` next to this one: build both with `--release`) against
//! them and the stack's broker, samples the agent's VmRSS and VmHWM over several
//! windows and prints a markdown table: each term of the bound, the sum, and
//! what was measured.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::probe::{http_get, metric_sum, status_kib};
use clap::Parser;
use javelin_agent::config::AgentArgs;

/// What the run does.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchAgentArgs {
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Target JVMs started (and `--max-targets` of the agent).
    #[arg(long, default_value_t = 64)]
    pub jvms: usize,
    /// Windows profiled once every JVM is profiled.
    #[arg(long, default_value_t = 3)]
    pub windows: u64,
    #[arg(long, default_value_t = 20)]
    pub window_secs: u64,
    /// Heap of each target JVM.
    #[arg(long, default_value = "32m")]
    pub heap: String,
}

/// The workload: every thread allocates in stacks of varying depth through
/// several methods, so the recording holds many distinct stacks and samples.
const WORKLOAD: &str = r#"
import java.util.concurrent.ThreadLocalRandom;
public final class AgentRssWorkload {
    static volatile long sink;
    public static void main(String[] args) throws Exception {
        System.out.println("ready " + ProcessHandle.current().pid());
        System.out.flush();
        for (int t = 0; t < 2; t++) {
            Thread th = new Thread(AgentRssWorkload::loop, "work-" + t);
            th.setDaemon(true);
            th.start();
        }
        Thread.currentThread().join();
    }
    static void loop() {
        while (true) {
            ThreadLocalRandom r = ThreadLocalRandom.current();
            sink += descend(r.nextInt(40), r.nextInt(4));
            try { Thread.sleep(1); } catch (InterruptedException e) { return; }
        }
    }
    static long descend(int depth, int path) {
        if (depth == 0) return allocate();
        switch ((depth + path) % 4) {
            case 0: return a(depth - 1, path);
            case 1: return b(depth - 1, path);
            case 2: return c(depth - 1, path);
            default: return d(depth - 1, path);
        }
    }
    static long a(int depth, int path) { return descend(depth, path) + 1; }
    static long b(int depth, int path) { return descend(depth, path) + 2; }
    static long c(int depth, int path) { return descend(depth, path) + 3; }
    static long d(int depth, int path) { return descend(depth, path) + 4; }
    static long allocate() {
        long n = 0;
        for (int i = 0; i < 64; i++) {
            byte[] block = new byte[1024 + ThreadLocalRandom.current().nextInt(8192)];
            block[0] = (byte) i;
            n += block.length;
        }
        return n;
    }
}
"#;

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles the workload and starts `count` JVMs of it (niced: the machine is shared).
fn start_jvms(count: usize, heap: &str) -> anyhow::Result<Vec<Reaped>> {
    let dir = repo_root().join("target/bench-agent-java");
    std::fs::create_dir_all(&dir)?;
    let source = dir.join("AgentRssWorkload.java");
    std::fs::write(&source, WORKLOAD)?;
    let ok = Command::new("javac")
        .arg("-d")
        .arg(&dir)
        .arg(&source)
        .status()
        .context("running javac")?;
    if !ok.success() {
        bail!("javac failed");
    }
    let mut jvms = Vec::new();
    for i in 0..count {
        let child = Command::new("nice")
            .args(["-n", "10", "java"])
            .arg(format!("-Xmx{heap}"))
            .args([
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-XX:ActiveProcessorCount=1",
                "-Xss512k",
                "-cp",
            ])
            .arg(&dir)
            .arg("AgentRssWorkload")
            .env("JAVELIN_SERVICE", format!("rss-bench-{i}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting java")?;
        jvms.push(Reaped(child));
    }
    // Started together; wait for each to say it runs (the JVM may log warnings first).
    for jvm in &mut jvms {
        let stdout = jvm.0.stdout.take().context("workload stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .take(20)
            .map_while(Result::ok)
            .any(|l| l.starts_with("ready"));
        if !ready {
            bail!("a workload JVM did not start (pid {})", jvm.0.id());
        }
    }
    Ok(jvms)
}

const MIB: u64 = 1 << 20;

/// The agent's memory bound for `args`, term by term (docs/architecture.md,
/// "Memory"): (term, bytes, where it is enforced).
pub fn memory_bound(args: &AgentArgs) -> Vec<(&'static str, u64, &'static str)> {
    use javelin_agent::aggregate::MAX_AGGREGATE_BYTES;
    use javelin_agent::spool::{BYTES_PER_MESSAGE_SLOT, MAX_IN_FLIGHT_BYTES};
    let spool = args.max_spool_bytes as u64;
    let spool_messages = (args.max_spool_bytes / BYTES_PER_MESSAGE_SLOT).max(64) as u64;
    let in_flight = (MAX_IN_FLIGHT_BYTES as u64).max(args.max_message_bytes);
    // jfr_parse::constant_pool::MAX_DECODED_BYTES_PER_CHUNK (one chunk at a time).
    let parse = 64 * MIB;
    let slot = args.max_dump_bytes + parse + 2 * MAX_AGGREGATE_BYTES as u64;
    vec![
        (
            "process base: binary, tokio, librdkafka threads, telemetry",
            48 * MIB,
            "measured (RSS before the first window)",
        ),
        (
            "spool payload (--max-spool-bytes)",
            spool,
            "spool::Spool::push",
        ),
        (
            "spool per-message cost: 1 KiB × one message per 4 KiB",
            spool_messages * 1024,
            "spool::BYTES_PER_MESSAGE_SLOT",
        ),
        (
            "in flight: held + librdkafka copy + compressed batch (3 ×)",
            3 * in_flight,
            "spool::MAX_IN_FLIGHT_BYTES; publish::QUEUE_MAX_KBYTES backs it",
        ),
        (
            "collect slots × (dump + parse + aggregate + encoded parts)",
            args.max_concurrent_collects as u64 * slot,
            "target.rs collect_slots; --max-dump-bytes; MAX_DECODED_BYTES_PER_CHUNK; aggregate::MAX_AGGREGATE_BYTES",
        ),
        (
            "targets × 64 KiB (task, recorder, 4,096 chunk times, status)",
            args.max_targets as u64 * 64 * 1024,
            "agent::run (--max-targets)",
        ),
        (
            "JVMs waiting over --max-targets: 1,024 × 1 KiB",
            1024 * 1024,
            "agent::OVER_LIMIT_REMEMBERED",
        ),
        (
            "pod lookups: 4,096 × 2 KiB (Kubernetes API on)",
            8 * MIB,
            "kubernetes_api::PodLookup",
        ),
    ]
}

/// Runs the benchmark and prints its table.
pub async fn run(bench: &BenchAgentArgs) -> anyhow::Result<()> {
    let started_all = Instant::now();
    eprintln!("starting {} workload JVMs (-Xmx{})", bench.jvms, bench.heap);
    let jvms = start_jvms(bench.jvms, &bench.heap)?;
    let pids: Vec<u32> = jvms.iter().map(|j| j.0.id()).collect();
    let jvm_rss_kib: u64 = pids.iter().filter_map(|p| status_kib(*p, "VmRSS:")).sum();
    eprintln!(
        "{} JVMs up in {:?}, {} MiB RSS together",
        pids.len(),
        started_all.elapsed(),
        jvm_rss_kib / 1024
    );
    let run = format!("javelin.rssbench.{}", std::process::id());
    javelin_loadtest::topics::create(&bench.brokers, &[run.clone(), format!("{run}.status")], 1)
        .await?;
    let pid_list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let agent_args: Vec<String> = [
        "--brokers",
        &bench.brokers,
        "--profiles-topic",
        &run,
        "--status-topic",
        &format!("{run}.status"),
        "--window-secs",
        &bench.window_secs.to_string(),
        "--min-jvm-age-secs",
        "0",
        "--discovery-interval-secs",
        "2",
        "--max-targets",
        &bench.jvms.to_string(),
        "--pid",
        &pid_list,
        "--recording-name",
        &format!("rssbench{}", std::process::id()),
        "--metrics-listen",
        "127.0.0.1:0",
        "--kubernetes-api",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let parsed = AgentArgs::try_parse_from(
        std::iter::once("javelin-agent".to_string()).chain(agent_args.clone()),
    )
    .context("the agent's arguments")?;
    let agent_bin = std::env::current_exe()?.with_file_name("javelin-agent");
    let log = repo_root().join(format!("target/e2e-logs/{run}.agent.log"));
    std::fs::create_dir_all(log.parent().context("log dir")?)?;
    eprintln!("agent log: {}", log.display());
    let mut agent = Reaped(
        Command::new(&agent_bin)
            .args(&agent_args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", agent_bin.display()))?,
    );
    let agent_pid = agent.0.id();
    let metrics_url = {
        let mut line = String::new();
        let stdout = agent.0.stdout.take().context("agent stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        line.trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let start_rss = status_kib(agent_pid, "VmRSS:").unwrap_or(0);
    // Wait (with a deadline) until every JVM is profiled, then profile `windows` windows.
    let deadline = Instant::now() + Duration::from_secs(300 + bench.jvms as u64 * 5);
    let mut peak_rss = 0u64;
    let sample = |peak: &mut u64| {
        if let Some(rss) = status_kib(agent_pid, "VmRSS:") {
            *peak = (*peak).max(rss);
        }
    };
    let profiling = loop {
        sample(&mut peak_rss);
        let text = http_get(&metrics_url).unwrap_or_default();
        let n = metric_sum(&text, "javelin_agent_targets", "state=\"profiling\"");
        if n >= bench.jvms as f64 {
            break n;
        }
        if Instant::now() > deadline {
            bail!(
                "only {n} of {} JVMs profiled before the deadline",
                bench.jvms
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let all_profiled_after = started_all.elapsed();
    let measure = Duration::from_secs(bench.windows * bench.window_secs + bench.window_secs / 2);
    eprintln!("{profiling} JVMs profiled after {all_profiled_after:?}; sampling for {measure:?}");
    let end = Instant::now() + measure;
    while Instant::now() < end {
        sample(&mut peak_rss);
        std::thread::sleep(Duration::from_millis(250));
    }
    let hwm = status_kib(agent_pid, "VmHWM:").context("the agent's VmHWM")?;
    let text = http_get(&metrics_url)?;
    let parts = metric_sum(&text, "javelin_agent_windows_total", "");
    let jfr_bytes = metric_sum(&text, "javelin_agent_jfr_bytes_total", "");
    let truncated = metric_sum(&text, "javelin_agent_truncated_windows_total", "") + 0.0;
    let failed = metric_sum(&text, "javelin_agent_collect_failures_total", "") + 0.0;
    let dropped = metric_sum(&text, "javelin_agent_spool_dropped_messages_total", "") + 0.0;
    let still_profiling = metric_sum(&text, "javelin_agent_targets", "state=\"profiling\"");
    drop(agent);
    drop(jvms);

    let terms = memory_bound(&parsed);
    let bound: u64 = terms.iter().map(|t| t.1).sum();
    let mib = |b: u64| b as f64 / MIB as f64;
    println!(
        "| term (defaults, --max-targets {}) | bound | enforced in |",
        bench.jvms
    );
    println!("|---|---:|---|");
    for (term, bytes, place) in &terms {
        println!("| {term} | {:.0} MiB | {place} |", mib(*bytes));
    }
    println!(
        "| **sum** | **{:.0} MiB** | DaemonSet limit: 1024 MiB |",
        mib(bound)
    );
    println!();
    println!(
        "| measured ({} JVMs -Xmx{}, {} × {} s windows) | value |",
        bench.jvms, bench.heap, bench.windows, bench.window_secs
    );
    println!("|---|---:|");
    println!("| target JVMs profiled (start / end) | {profiling} / {still_profiling} |");
    println!(
        "| target JVMs' RSS together | {:.0} MiB |",
        jvm_rss_kib as f64 / 1024.0
    );
    println!(
        "| agent RSS at start | {:.1} MiB |",
        start_rss as f64 / 1024.0
    );
    println!(
        "| agent peak VmRSS (sampled every 250 ms) | {:.1} MiB |",
        peak_rss as f64 / 1024.0
    );
    println!(
        "| agent VmHWM (kernel's peak) | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
    println!(
        "| all JVMs profiled after (JVMs start to last attach) | {:.0} s |",
        all_profiled_after.as_secs_f64()
    );
    println!(
        "| window parts built / truncated (while sampling and before) | {parts} / {truncated} |"
    );
    println!("| collect failures / spool drops | {failed} / {dropped} |");
    println!(
        "| JFR bytes parsed (all windows) | {:.1} MiB |",
        jfr_bytes / MIB as f64
    );
    println!(
        "| peak vs bound | {:.1} % |",
        100.0 * hwm as f64 * 1024.0 / bound as f64
    );
    if hwm * 1024 > bound {
        bail!(
            "the agent's peak ({} KiB) is over its bound ({bound} bytes)",
            hwm
        );
    }
    Ok(())
}
