//! Benchmarks that report against a baseline measured in the same run.
//!
//! - `bench-parse`: the agent's parse + aggregate path on one core over a large
//!   allocation-heavy JFR file, beside the former jfrs path and async-profiler's
//!   own converter on the same file, all pinned to CPU 0.
//! - `bench-agent-rss`: the agent's peak RSS while it profiles N demo JVMs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::attach::AttachTarget;
use javelin_agent::jfr_parse::{
    ChunkInfo, EventRules, Frames, TypeCounts, parse_chunks, scan_chunks,
};
use javelin_schema::wire::ProfileType;

mod jfrs_decode;

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

/// Wall-clock and CPU time of one measurement. On a shared machine the CPU time
/// is what the parser itself cost; on an idle one the two agree (one core).
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// Medians of wall and CPU time, each over the runs.
fn median_timing(runs: &[Timing]) -> Timing {
    Timing {
        wall: median(runs.iter().map(|t| t.wall).collect()),
        cpu: median(runs.iter().map(|t| t.cpu).collect()),
    }
}

/// CPU time of the calling thread, from the scheduler's accounting.
fn thread_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let nanos: u64 = stat
        .split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()?;
    Ok(Duration::from_nanos(nanos))
}

/// CPU time (user + system, all threads) of this process's waited-for children.
fn children_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    // cutime and cstime are fields 16 and 17; after the command name, field 3 is first.
    let ticks: u64 = fields.get(13).context("cutime")?.parse::<u64>()?
        + fields.get(14).context("cstime")?.parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// Per-type counts of one parse.
type Counts = HashMap<ProfileType, TypeCounts>;

/// A parser under test: decodes the validated chunks, calling the sink per sample.
type Decoder = dyn Fn(
    &[u8],
    &[ChunkInfo],
    &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> anyhow::Result<Counts>;

/// One in-process parse of the whole file: its time, events and per-type totals.
struct ParseRun {
    time: Timing,
    events: u64,
    totals: BTreeMap<&'static str, (u64, i64)>,
}

/// Scans, decodes with `decode` and aggregates like the agent (one window, no bounds).
fn timed_parse(bytes: &[u8], decode: &Decoder) -> anyhow::Result<ParseRun> {
    let started = Instant::now();
    let cpu_before = thread_cpu()?;
    let (chunks, error) = scan_chunks(bytes);
    if let Some(e) = error {
        bail!("the benchmark file is not clean JFR: {e}");
    }
    let bounds = Bounds {
        max_events_per_window: u64::MAX,
        ..Bounds::default()
    };
    let mut agg = WindowAggregator::new(bounds);
    let mut totals: BTreeMap<&'static str, (u64, i64)> = BTreeMap::new();
    let counts = decode(bytes, &chunks, &mut |k, f, v, c| {
        let t = totals.entry(k.name()).or_default();
        t.0 += c.max(0) as u64;
        t.1 = t.1.saturating_add(v);
        agg.add(k, f, v, c)
    })?;
    let target = javelin_schema::wire::TargetIdentity {
        service: "bench".into(),
        ..Default::default()
    };
    let windows = agg.finish(&target, 0, 1, &counts, bytes.len() as u64, 0);
    let time = Timing {
        wall: started.elapsed(),
        cpu: thread_cpu()?.saturating_sub(cpu_before),
    };
    std::hint::black_box(windows);
    Ok(ParseRun {
        time,
        events: counts.values().map(|c| c.parsed_events).sum(),
        totals,
    })
}

/// The agent's path: `scan_chunks` + `parse_chunks` + aggregation.
fn javelin_decode(
    bytes: &[u8],
    chunks: &[ChunkInfo],
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> anyhow::Result<Counts> {
    let rules = EventRules {
        cpu_period_nanos: 1_000_000,
        max_events: u64::MAX,
        cpu_event: javelin_agent::jfr_parse::CpuEvent::ExecutionSample,
        max_parse_time: None,
    };
    let mut budget = u64::MAX;
    let outcome = parse_chunks(bytes, chunks, rules, &mut budget, sink);
    if let Some(e) = outcome.error {
        bail!("javelin parse error: {e}");
    }
    Ok(outcome.counts)
}

/// The former path: the same chunks decoded by jfrs.
fn jfrs_decode(
    bytes: &[u8],
    chunks: &[ChunkInfo],
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> anyhow::Result<Counts> {
    jfrs_decode::decode(bytes, chunks, 1_000_000, sink).map_err(|e| anyhow::anyhow!("jfrs: {e}"))
}

/// async-profiler's own converter, `-o collapsed`, one JVM pinned to CPU 0.
fn converter_run(jar: &Path, input: &Path) -> anyhow::Result<Timing> {
    let out = repo_root().join(format!(
        "target/bench-parse-{}.collapsed",
        std::process::id()
    ));
    let started = Instant::now();
    let cpu_before = children_cpu()?;
    let status = Command::new("taskset")
        .args(["-c", "0", "java", "-cp"])
        .arg(jar)
        .args(["one.convert.Main", "-o", "collapsed"])
        .arg(input)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .context("running the converter")?;
    let time = Timing {
        wall: started.elapsed(),
        cpu: children_cpu()?.saturating_sub(cpu_before),
    };
    let written = std::fs::metadata(&out).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&out);
    if !status.success() || written == 0 {
        bail!("the converter failed ({status}, {written} bytes written)");
    }
    Ok(time)
}

/// Where `bench-parse` looks for async-profiler's converter by default.
pub fn default_converter_jar() -> PathBuf {
    repo_root().join("../shared/third_party/async-profiler-4.5/jar/jfr-converter.jar")
}

/// `bench-parse`: javelin, jfrs and async-profiler's converter on the same file,
/// each on CPU 0 only; prints a markdown table with ratios to the converter.
pub fn bench_parse(
    file: Option<PathBuf>,
    min_mb: u64,
    repeat: usize,
    converter_jar: &Path,
) -> anyhow::Result<()> {
    let path =
        file.unwrap_or_else(|| repo_root().join(format!("target/bench-alloc-{min_mb}mb.jfr")));
    let min_bytes = min_mb << 20;
    if std::fs::metadata(&path).map_or(true, |m| m.len() < min_bytes) {
        generate_jfr(&path, min_bytes)?;
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mb = bytes.len() as f64 / 1e6;
    pin_to_cpu0()?;

    let runs = |decode: &Decoder| -> anyhow::Result<(Timing, ParseRun)> {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..repeat {
            let run = timed_parse(&bytes, decode)?;
            times.push(run.time);
            last = Some(run);
        }
        Ok((
            median_timing(&times),
            last.context("--repeat must be at least 1")?,
        ))
    };
    let (javelin, javelin_run) = runs(&javelin_decode)?;
    let (jfrs, jfrs_run) = runs(&jfrs_decode)?;
    let converter = if converter_jar.is_file() {
        let mut times = Vec::new();
        for _ in 0..repeat {
            times.push(converter_run(converter_jar, &path)?);
        }
        Some(median_timing(&times))
    } else {
        None
    };

    let rate = |d: Duration| mb / d.as_secs_f64();
    // The ratio to the converter by CPU time (`cpu`) or by wall-clock time.
    let vs = |t: Timing, cpu: bool| {
        let of = |t: Timing| if cpu { t.cpu } else { t.wall };
        converter.map_or("–".to_string(), |c| {
            format!("{:.2}×", rate(of(t)) / rate(of(c)))
        })
    };
    println!(
        "file: {} ({mb:.0} MB), median of {repeat} runs each, CPU 0 only",
        path.display()
    );
    println!();
    println!(
        "| parser | CPU time | wall time | MB/s per CPU-second | MB/s wall | events/s (CPU) | vs converter (CPU) | vs converter (wall) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, t, events) in [
        (
            "javelin: scan_chunks + parse_chunks + aggregate",
            javelin,
            Some(javelin_run.events),
        ),
        (
            "jfrs 0.2.5 (former agent path) + aggregate",
            jfrs,
            Some(jfrs_run.events),
        ),
    ]
    .into_iter()
    .chain(converter.map(|c| {
        (
            "async-profiler 4.5 converter `-o collapsed`, JVM start included (baseline)",
            c,
            None,
        )
    })) {
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.0} | {:.0} | {} | {} | {} |",
            t.cpu.as_secs_f64(),
            t.wall.as_secs_f64(),
            rate(t.cpu),
            rate(t.wall),
            events.map_or("–".to_string(), |e| format!(
                "{:.2} M",
                e as f64 / t.cpu.as_secs_f64() / 1e6
            )),
            vs(t, true),
            vs(t, false),
        );
    }
    if converter.is_none() {
        println!(
            "| async-profiler converter | skipped: jar not found at {} | | | | | | |",
            converter_jar.display()
        );
    }
    println!();
    let same = javelin_run.totals == jfrs_run.totals;
    println!(
        "per-type sample counts and totals, javelin vs jfrs: {}",
        if same {
            "identical".to_string()
        } else {
            format!(
                "DIFFER: javelin {:?}, jfrs {:?}",
                javelin_run.totals, jfrs_run.totals
            )
        }
    );
    if let Some(c) = converter {
        let ratio = rate(javelin.cpu) / rate(c.cpu);
        println!(
            "target javelin ≥ 1.5× the converter (per CPU-second): {} ({ratio:.2}×)",
            if ratio >= 1.5 { "met" } else { "NOT met" }
        );
    }
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
