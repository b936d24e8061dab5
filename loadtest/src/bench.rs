//! Benchmarks that report against a baseline measured in the same run.
//!
//! - `bench-parse`: the agent's parse + aggregate path (guarded jfrs) on one
//!   core over a large allocation-heavy JFR file, against the JDK's own
//!   `jfr summary` over the same file, both pinned to CPU 0.
//! - `bench-agent-rss`: the agent's peak RSS while it profiles N demo JVMs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::attach::AttachTarget;
use javelin_agent::jfr_parse::{EventRules, parse_chunks, scan_chunks};

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

/// Compiles the demo workload into `target/bench-java` and starts `count` JVMs of it.
fn start_demos(count: usize, jvm_args: &[&str]) -> anyhow::Result<Vec<Reaped>> {
    let classes = repo_root().join("target/bench-java");
    let ok = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(repo_root().join("loadtest/java/src/JavelinDemo.java"))
        .status()
        .context("running javac")?;
    if !ok.success() {
        bail!("javac failed");
    }
    let mut jvms = Vec::new();
    for i in 0..count {
        let mut child = Command::new("java")
            .args(jvm_args)
            .arg("-cp")
            .arg(&classes)
            .arg("JavelinDemo")
            .env("JAVELIN_SERVICE", format!("bench-{i}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting java")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("demo stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        jvms.push(Reaped(child));
    }
    Ok(jvms)
}

/// Records the demo with its allocation sampling turned up for `RECORD` and
/// writes the recording, repeated until it reaches `min_bytes`, to `path`. A JFR
/// file is a sequence of self-contained chunks, so the copies parse like one
/// long recording (the JVM's throttled samplers cannot write 200 MB in minutes).
fn generate_jfr(path: &Path, min_bytes: u64) -> anyhow::Result<()> {
    const RECORD: Duration = Duration::from_secs(60);
    eprintln!(
        "recording the demo for {RECORD:?}, then repeating it to {} MiB at {}",
        min_bytes >> 20,
        path.display()
    );
    let jvms = start_demos(1, &["-Xmx512m"])?;
    let pid = jvms[0].0.id();
    let target = AttachTarget::for_pid(pid, Duration::from_secs(60))?;
    let start = "JFR.start name=bench settings=none \
        +jdk.ObjectAllocationSample#enabled=true +jdk.ObjectAllocationSample#stackTrace=true \
        +jdk.ObjectAllocationSample#throttle=100000/s \
        +jdk.ExecutionSample#enabled=true +jdk.ExecutionSample#stackTrace=true +jdk.ExecutionSample#period=1ms \
        +jdk.JavaMonitorEnter#enabled=true +jdk.JavaMonitorEnter#stackTrace=true +jdk.JavaMonitorEnter#threshold=0ms \
        +jdk.ThreadPark#enabled=true +jdk.ThreadPark#stackTrace=true +jdk.ThreadPark#threshold=0ms";
    target.jcmd(start)?.expect("Started recording")?;
    std::thread::sleep(RECORD);
    let file = format!("/tmp/javelin-bench-{pid}.jfr");
    target
        .jcmd(&format!("JFR.dump name=bench filename={file}"))?
        .expect("Dumped recording")?;
    let local = target.tmp_dir().join(file.trim_start_matches("/tmp/"));
    let one = std::fs::read(&local)?;
    let _ = std::fs::remove_file(&local);
    if one.is_empty() {
        bail!("the recording is empty");
    }
    let copies = min_bytes.div_ceil(one.len() as u64);
    eprintln!("recorded {} KiB; writing {copies} copies", one.len() >> 10);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..copies {
        std::io::Write::write_all(&mut out, &one)?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `bench-parse`: prints a markdown table row set with ratios.
pub fn bench_parse(file: Option<PathBuf>, min_mb: u64, repeat: usize) -> anyhow::Result<()> {
    let path =
        file.unwrap_or_else(|| repo_root().join(format!("target/bench-alloc-{min_mb}mb.jfr")));
    let min_bytes = min_mb << 20;
    if std::fs::metadata(&path).map_or(true, |m| m.len() < min_bytes) {
        generate_jfr(&path, min_bytes)?;
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mb = bytes.len() as f64 / (1 << 20) as f64;
    pin_to_cpu0()?;

    let mut ours = Vec::new();
    let mut events = 0u64;
    for _ in 0..repeat {
        let started = Instant::now();
        let (chunks, error) = scan_chunks(&bytes);
        if let Some(e) = error {
            bail!("the benchmark file is not clean JFR: {e}");
        }
        let bounds = Bounds {
            max_events_per_window: u64::MAX,
            ..Bounds::default()
        };
        let mut agg = WindowAggregator::new(bounds);
        let rules = EventRules {
            cpu_period_nanos: 1_000_000,
            max_events: u64::MAX,
        };
        let mut budget = u64::MAX;
        let outcome = parse_chunks(&bytes, &chunks, rules, &mut budget, &mut |k, f, v, c| {
            agg.add(k, f, v, c)
        });
        if let Some(e) = outcome.error {
            bail!("parse error: {e}");
        }
        let target = javelin_schema::wire::TargetIdentity {
            service: "bench".into(),
            ..Default::default()
        };
        let windows = agg.finish(&target, 0, 1, &outcome.counts, bytes.len() as u64, 0);
        ours.push(started.elapsed());
        events = outcome.counts.values().map(|c| c.parsed_events).sum();
        std::hint::black_box(windows);
    }
    let mut baseline = Vec::new();
    for _ in 0..repeat {
        let started = Instant::now();
        let status = Command::new("taskset")
            .args(["-c", "0", "jfr", "summary"])
            .arg(&path)
            .stdout(Stdio::null())
            .status()
            .context("running jfr summary")?;
        if !status.success() {
            bail!("jfr summary failed");
        }
        baseline.push(started.elapsed());
    }
    let (ours, baseline) = (median(ours), median(baseline));
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!(
        "file: {} ({mb:.0} MB, {events} events of the four profile types), median of {repeat}, CPU 0 only",
        path.display()
    );
    println!();
    println!("| measurement | time | MB/s | events/s |");
    println!("|---|---|---|---|");
    println!(
        "| javelin parse + aggregate (guarded jfrs) | {:.2} s | {:.0} | {:.2} M |",
        ours.as_secs_f64(),
        rate(ours),
        events as f64 / ours.as_secs_f64() / 1e6
    );
    println!(
        "| JDK `jfr summary` (baseline) | {:.2} s | {:.0} | – |",
        baseline.as_secs_f64(),
        rate(baseline)
    );
    println!();
    println!(
        "ratio javelin / jfr summary throughput: {:.2}; target 250 MB/s per core: {:.0}% of target",
        rate(ours) / rate(baseline),
        100.0 * rate(ours) / 250.0
    );
    Ok(())
}

/// Pins this process (all its threads from now on) to CPU 0.
fn pin_to_cpu0() -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-cp", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset failed");
    }
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback (the metrics endpoint), without a client library.
fn http_get(url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("an http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map_or(body.clone(), |(_, b)| b.to_string()))
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()
}

/// `bench-agent-rss`: peak RSS of the agent profiling `jvms` demo JVMs for `windows` windows.
pub fn bench_agent_rss(
    brokers: &str,
    jvms: usize,
    windows: u64,
    window_secs: u64,
) -> anyhow::Result<()> {
    eprintln!("starting {jvms} demo JVMs");
    let demos = start_demos(
        jvms,
        &[
            "-Xmx64m",
            "-XX:TieredStopAtLevel=1",
            "-XX:ActiveProcessorCount=1",
        ],
    )?;
    let pids: Vec<String> = demos.iter().map(|d| d.0.id().to_string()).collect();
    let agent_bin = std::env::current_exe()?.with_file_name("javelin-agent");
    let topic = format!("javelin.bench.{}", std::process::id());
    let agent = Reaped(
        Command::new(&agent_bin)
            .args([
                "--brokers",
                brokers,
                "--profiles-topic",
                &topic,
                "--status-topic",
                &format!("{topic}.status"),
            ])
            .args([
                "--window-secs",
                &window_secs.to_string(),
                "--min-jvm-age-secs",
                "0",
                "--discovery-interval-secs",
                "1",
            ])
            .args([
                "--pid",
                &pids.join(","),
                "--recording-name",
                &format!("bench{}", std::process::id()),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", agent_bin.display()))?,
    );
    let mut agent = agent;
    let pid = agent.0.id();
    let metrics_url = {
        let mut line = String::new();
        let stdout = agent.0.stdout.take().context("agent stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        line.trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let total = Duration::from_secs(windows * window_secs + 10);
    eprintln!("profiling for {total:?}");
    std::thread::sleep(total);
    let hwm = vm_hwm_kib(pid).context("reading the agent's VmHWM")?;
    let metrics = http_get(&metrics_url)?;
    let profiling = metric(&metrics, "javelin_agent_targets", "state=\"profiling\"");
    let windows_built: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("javelin_agent_windows_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    if profiling < jvms as f64 {
        bail!("only {profiling} of {jvms} JVMs were being profiled");
    }
    println!(
        "| agent peak RSS (VmHWM): {jvms} JVMs profiled, {windows_built} window parts built in {} s, default bounds | {:.1} MiB | limit 64 MiB |",
        total.as_secs(),
        hwm as f64 / 1024.0
    );
    drop(agent);
    Ok(())
}
