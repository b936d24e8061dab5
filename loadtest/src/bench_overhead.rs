//! `bench-overhead`: what profiling costs the profiled JVM and the node.
//!
//! Fixed workloads (`loadtest/java/src/OverheadWorkload.java`: cpu, alloc,
//! lock, mixed) run in a fresh JVM per run, under each configuration: no
//! profiler; the real agent (the `javelin-agent` next to this binary) in its
//! built-in JFR mode and in async-profiler mode, at its default window and at
//! 10-s windows; and the anchors users start without Javelin: the JDK's
//! `-XX:StartFlightRecording` with the `profile` and `default` presets, and
//! async-profiler started by `asprof` with the events and intervals the agent
//! gives it. Runs are interleaved: every round runs each (workload,
//! configuration) once, in an order shuffled with a fixed seed.
//!
//! One run: the JVM starts and its workers run at once (warm-up); the profiler
//! is started and seen profiling; the measured period starts at the end of the
//! warm-up (or when profiling was confirmed, if later) and lasts
//! `--measure-secs`. The workload reports its completed operations and its
//! own `System.nanoTime()` at both ends, so ops/s is exact; the agent's CPU
//! (utime+stime of /proc/<pid>/stat) is read at the same two points.
//!
//! Every run checks that its configuration really profiles (and that the
//! `none` JVM is not profiled by anyone): the JVM holds a JFR chunk or
//! async-profiler's recording open and has the library mapped, the agent says
//! it profiles the JVM, `asprof status` says running, recording files are not
//! empty. A run that fails a check, a JVM that does not start or an agent that
//! exits is a harness failure: the report so far is written and the command
//! exits non-zero. The numbers themselves never fail it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod paired;

use crate::probe::{http_get, metric_sum, status_kib};
use clap::{CommandFactory, Parser};
use javelin_agent::attach::AttachTarget;
use javelin_agent::config::AgentArgs;
use javelin_agent::recorder::jfr::CpuSampler;
use javelin_agent::recorder::{AsyncProfilerRecorder, AsyncProfilerSettings, JfrRecorder};
use serde::Serialize;

/// What the benchmark runs.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOverheadArgs {
    /// The broker the agent publishes to (the local stack's env file sets it).
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Rounds; each runs every (workload, configuration) once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Seconds from the JVM's start to the measured period.
    #[arg(long, default_value_t = 10)]
    pub warmup_secs: u64,
    /// Length of the measured period, in seconds.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    pub measure_secs: u64,
    /// Workloads to run (default: all).
    #[arg(long, value_delimiter = ',', default_value = "cpu,alloc,lock,mixed")]
    pub workloads: Vec<Workload>,
    /// Configurations to run (default: all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,agent-jfr,agent-jfr-10s,agent-asprof,agent-asprof-10s,jfr-profile,jfr-default,asprof"
    )]
    pub configs: Vec<Config>,
    /// Worker threads of the workload.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Heap of every JVM (-Xms = -Xmx, pre-touched).
    #[arg(long, default_value = "256m")]
    pub heap: String,
    /// Seed of the per-round shuffle.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Before each run, wait until the node's CPU busy (without our JVM) is
    /// below this many cores (the machine may be shared)…
    #[arg(long, default_value_t = 0.3)]
    pub idle_below_cores: f64,
    /// …for at most this many seconds (then the run starts anyway; its other load is reported).
    #[arg(long, default_value_t = 120)]
    pub idle_wait_secs: u64,
    /// async-profiler's directory (bin/asprof, lib/libasyncProfiler.so).
    /// Default: ../shared/third_party/async-profiler-4.5 from the repository.
    #[arg(long, env = "JAVELIN_ASYNC_PROFILER_HOME")]
    pub async_profiler_home: Option<PathBuf>,
    /// Where the JSON report goes (default: target/loadtest-reports).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// The agent binary (default: `javelin-agent` beside this program), e.g. an
    /// older build kept to measure a change before and after.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Paired mode: instead of a fresh JVM per configuration and run, one JVM
    /// per (workload, configuration) and round switches the profiler on in
    /// this many periods between off-periods (see `paired.rs`); 0: fresh JVMs.
    #[arg(long, default_value_t = 0)]
    pub paired: u64,
    /// Length of each on- and off-period in paired mode, in seconds.
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u64).range(1..))]
    pub period_secs: u64,
    /// Seconds between a switch of the profiler and the next period, in paired mode.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    /// Paired mode: one JVM per workload and round runs the on-periods of
    /// every configuration in turn (off, A, off, B, off, A, …; the first
    /// configuration rotates by round), `--paired N` of each, so the
    /// configurations are compared within each JVM (each against the first
    /// of `--configs`) and its JIT outcome cancels. JFR configurations only
    /// (async-profiler stays loaded).
    #[arg(long)]
    pub alternate: bool,
    /// Paired mode: start and stop an empty JFR recording (`settings=none`)
    /// as soon as the JVM answers, before its warm-up: JFR's one-time
    /// start-up (the retransformation that deoptimizes every compiled method,
    /// and stays after `JFR.stop`) then falls in no period, and the periods
    /// compare what recording costs while it runs.
    #[arg(long)]
    pub prime_jfr: bool,
    /// Continue the interrupted run whose JSON report this is (same flags):
    /// its runs are kept, the plan resumes after them, the report is rewritten
    /// in place. Paired mode: the JVMs without periods in it run (failed ones again).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Print the tables of this finished `--paired` JSON report, from its
    /// periods, and run nothing (`--workloads` and `--configs` as it was run
    /// with: they pick the rows and the within-JVM anchor; every other flag
    /// is ignored).
    #[arg(long, conflicts_with = "resume")]
    pub summarize: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    Cpu,
    Alloc,
    Lock,
    Mixed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Cpu => "cpu",
            Workload::Alloc => "alloc",
            Workload::Lock => "lock",
            Workload::Mixed => "mixed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Config {
    None,
    AgentJfr,
    #[value(name = "agent-jfr-10s")]
    AgentJfr10s,
    AgentAsprof,
    #[value(name = "agent-asprof-10s")]
    AgentAsprof10s,
    JfrProfile,
    JfrDefault,
    Asprof,
    /// Paired mode only (the rest isolate what the agent's JFR mode costs):
    /// the `profile` preset, dumped every 10 s the way the agent dumps.
    #[value(name = "jfr-profile-dump-10s")]
    JfrProfileDump10s,
    /// The agent's own `JFR.start` line, started by `jcmd`, never dumped.
    JfrAgentEvents,
    /// The agent's own `JFR.start` line, dumped every 10 s, no agent process.
    #[value(name = "jfr-agent-events-dump-10s")]
    JfrAgentEventsDump10s,
    /// Paired mode only: the agent's `JFR.start` line started once after the
    /// warm-up and kept through every period; on-periods `JFR.dump` every 2 s,
    /// off-periods do not. What dumps alone cost a JVM that already records
    /// (the first start's deoptimization falls in no period).
    #[value(name = "jfr-dumps-only-2s")]
    JfrDumpsOnly2s,
}

/// The seconds between dumps of `jfr-dumps-only-2s`: five times the 10-s
/// windows' dumps, so a per-dump cost shows above the noise.
const DUMPS_ONLY_SECS: u64 = 2;

/// The agent's window in the 10-s configurations.
const SHORT_WINDOW_SECS: u64 = 10;

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::AgentJfr => "agent-jfr",
            Config::AgentJfr10s => "agent-jfr-10s",
            Config::AgentAsprof => "agent-asprof",
            Config::AgentAsprof10s => "agent-asprof-10s",
            Config::JfrProfile => "jfr-profile",
            Config::JfrDefault => "jfr-default",
            Config::Asprof => "asprof",
            Config::JfrProfileDump10s => "jfr-profile-dump-10s",
            Config::JfrAgentEvents => "jfr-agent-events",
            Config::JfrAgentEventsDump10s => "jfr-agent-events-dump-10s",
            Config::JfrDumpsOnly2s => "jfr-dumps-only-2s",
        }
    }

    /// A JFR recording started by `jcmd` in paired mode: (its settings, the
    /// seconds between dumps if dumped).
    fn jcmd_jfr(self) -> Option<(JcmdJfr, Option<u64>)> {
        match self {
            Config::JfrProfile => Some((JcmdJfr::Preset("profile"), None)),
            Config::JfrDefault => Some((JcmdJfr::Preset("default"), None)),
            Config::JfrProfileDump10s => {
                Some((JcmdJfr::Preset("profile"), Some(SHORT_WINDOW_SECS)))
            }
            Config::JfrAgentEvents => Some((JcmdJfr::AgentEvents, None)),
            Config::JfrAgentEventsDump10s => Some((JcmdJfr::AgentEvents, Some(SHORT_WINDOW_SECS))),
            Config::JfrDumpsOnly2s => Some((JcmdJfr::AgentEvents, Some(DUMPS_ONLY_SECS))),
            _ => None,
        }
    }

    /// The recording runs through the off-periods too: only the dumps switch.
    fn records_throughout(self) -> bool {
        self == Config::JfrDumpsOnly2s
    }

    /// Only measurable in paired mode (started by `jcmd`, nothing to start a fresh JVM with).
    fn paired_only(self) -> bool {
        matches!(
            self,
            Config::JfrProfileDump10s
                | Config::JfrAgentEvents
                | Config::JfrAgentEventsDump10s
                | Config::JfrDumpsOnly2s
        )
    }

    /// The agent's mode: (async-profiler, window override), for agent configurations.
    fn agent(self) -> Option<(bool, Option<u64>)> {
        match self {
            Config::AgentJfr => Some((false, None)),
            Config::AgentJfr10s => Some((false, Some(SHORT_WINDOW_SECS))),
            Config::AgentAsprof => Some((true, None)),
            Config::AgentAsprof10s => Some((true, Some(SHORT_WINDOW_SECS))),
            _ => None,
        }
    }

    /// The JDK preset of a `-XX:StartFlightRecording` anchor.
    fn jfr_preset(self) -> Option<&'static str> {
        match self {
            Config::JfrProfile => Some("profile"),
            Config::JfrDefault => Some("default"),
            _ => None,
        }
    }
}

/// The settings of a JFR recording started by `jcmd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JcmdJfr {
    /// A JDK preset (`settings=profile`).
    Preset(&'static str),
    /// The agent's own `settings=none` line with its events and periods
    /// (`jdk.ExecutionSample`: the bench's JVMs are JDK 17).
    AgentEvents,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Run {
    round: u64,
    /// Position in the whole sequence of runs.
    order: usize,
    workload: String,
    config: String,
    ops: u64,
    measured_secs: f64,
    ops_per_sec: f64,
    /// Seconds from the JVM's `ready` to the measured period.
    warmup_secs: f64,
    /// Seconds from the JVM's `ready` until the profiler was seen profiling.
    profiling_after_secs: Option<f64>,
    /// The JVM's CPU seconds per second over the measured period.
    jvm_cpu_per_sec: f64,
    /// Operations per CPU second of the JVM (its profiler threads included).
    ops_per_jvm_cpu_sec: f64,
    /// CPU seconds per second the node spent outside the JVM and the agent over
    /// the measured period (other load on a shared machine).
    other_cpu_per_sec: f64,
    /// Seconds waited for the node to be idle before the run, and its busy cores then.
    idle_wait_secs: f64,
    idle_busy_cores: f64,
    /// The JVM's VmRSS at the end of the measured period.
    jvm_rss_kib: u64,
    agent: Option<AgentRun>,
    /// What showed that the configuration profiled (or, for `none`, did not).
    evidence: Vec<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct AgentRun {
    /// CPU from the agent's start to the measured period (attach, recording start).
    cpu_before_measure_secs: f64,
    cpu_measured_secs: f64,
    cpu_secs_per_jvm_hour: f64,
    /// VmHWM at the end of the measured period.
    peak_rss_kib: u64,
    /// Window parts built during the measured period.
    window_parts_in_measure: f64,
    /// JFR bytes the agent parsed during the measured period.
    jfr_bytes_in_measure: f64,
    /// Bytes the agent read from dumps during the measured period (an agent
    /// without the dump-bytes metric: 0).
    #[serde(default)]
    dump_bytes_in_measure: f64,
    /// Failed collects over the agent's life (before it was stopped).
    collect_failures: f64,
}

/// Median, quartiles and extremes of some values.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    median: f64,
    q1: f64,
    q3: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: quantile(&v, 0.5),
            q1: quantile(&v, 0.25),
            q3: quantile(&v, 0.75),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// Linear interpolation between closest ranks (R's type 7) over sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One (workload, configuration) over all rounds.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    workload: &'static str,
    config: &'static str,
    runs: usize,
    ops_per_sec: Option<Spread>,
    /// Per round: ops/s of this run ÷ ops/s of the same round's `none` run.
    ratio_vs_none: Option<Spread>,
    /// Per round, the same for operations per JVM CPU second (less sensitive to other load).
    cpu_efficiency_vs_none: Option<Spread>,
    agent_cpu_secs_per_jvm_hour: Option<Spread>,
    agent_cpu_before_measure_secs: Option<Spread>,
    agent_peak_rss_mib: Option<Spread>,
    /// Per round: the JVM's RSS minus the same round's `none` JVM's, MiB.
    extra_rss_mib: Option<Spread>,
    agent_window_parts_in_measure: Option<Spread>,
    /// MiB the agent read from dumps, and parsed, per JVM-hour.
    agent_dump_mib_per_jvm_hour: Option<Spread>,
    agent_parsed_mib_per_jvm_hour: Option<Spread>,
    /// The JVM's CPU seconds per second: below the worker threads, the node was busy.
    jvm_cpu_per_sec: Option<Spread>,
    other_cpu_per_sec: Option<Spread>,
}

/// What a report says about its run, in either mode (flattened into it).
#[derive(Debug, Serialize)]
struct Header {
    started: String,
    command: String,
    loadavg_start: String,
    loadavg_end: String,
    java: String,
    agent_binary: String,
    jvm_options: Vec<String>,
    threads: u32,
    rounds: u64,
    warmup_secs: u64,
    seed: u64,
    agent_jfr_start: String,
    agent_async_profiler_start: String,
    asprof_anchor: String,
}

impl Header {
    /// The header of a run starting now; `resumed`: the report it continues,
    /// whose start it keeps.
    fn new(bench: &Bench, resumed: Option<&serde_json::Value>) -> anyhow::Result<Header> {
        let args = &bench.args;
        let mut header = Header {
            started: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            java: java_version(),
            agent_binary: bench.agent_bin.display().to_string(),
            jvm_options: bench.jvm_options.clone(),
            threads: args.threads,
            rounds: args.rounds,
            warmup_secs: args.warmup_secs,
            seed: args.seed,
            agent_jfr_start: bench.agent_jfr_start()?,
            agent_async_profiler_start: bench.agent_async_profiler_start()?,
            asprof_anchor: format!(
                "asprof {}",
                bench.asprof_start_args(Path::new("FILE.jfr"), 0).join(" ")
            ),
        };
        if let Some(old) = resumed {
            for (field, value) in [
                ("started", &mut header.started),
                ("loadavg_start", &mut header.loadavg_start),
            ] {
                if let Some(old) = old[field].as_str() {
                    *value = old.to_string();
                }
            }
        }
        Ok(header)
    }
}

/// Reads the JSON report a run resumes.
fn read_resumed(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header,
    measure_secs: u64,
    ratio: &'static str,
    failure: Option<String>,
    summaries: Vec<Summary>,
    runs: Vec<Run>,
}

const RATIO_METHOD: &str = "median over rounds of (ops/s of the run / ops/s of the same round's `none` run of the workload)";

/// Everything the runs share.
#[derive(Debug)]
struct Bench {
    args: BenchOverheadArgs,
    classes: PathBuf,
    logs: PathBuf,
    agent_bin: PathBuf,
    asprof: PathBuf,
    ap_lib: PathBuf,
    topic: String,
    clk_tck: f64,
    /// The agent's sampling flags, given explicitly to it and mirrored to `asprof`.
    cpu_period_ms: u64,
    alloc_interval_bytes: u64,
    lock_threshold_ms: u64,
    jvm_options: Vec<String>,
}

/// The workload's source, compiled at the start of every benchmark.
const WORKLOAD_SOURCE: &str = include_str!("../java/src/OverheadWorkload.java");

/// Deadlines of the harness (none of them is a measurement).
const JVM_READY: Duration = Duration::from_secs(60);
const AGENT_PROFILING: Duration = Duration::from_secs(120);
const MARK_REPLY: Duration = Duration::from_secs(20);
const AGENT_STOP: Duration = Duration::from_secs(90);
const JVM_EXIT: Duration = Duration::from_secs(60);
const IDLE_SAMPLE: Duration = Duration::from_secs(2);

/// Pids of the JVM and agent of the current run, killed if the benchmark is
/// interrupted (an agent outlives its JVM and would keep running).
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn adopt(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.push(pid);
    }
}

fn disown(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.retain(|p| *p != pid);
    }
}

/// Runs the benchmark, prints its markdown and writes its JSON report.
pub async fn run(args: &BenchOverheadArgs) -> anyhow::Result<()> {
    // SIGINT or SIGTERM: the run's children go too (the report keeps the runs done; see --resume).
    tokio::spawn(async {
        javelin_schema::process::shutdown_signal().await;
        let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        eprintln!("bench-overhead: interrupted");
        std::process::exit(143);
    });
    if let Some(report) = &args.summarize {
        return paired::summarize_report(args, report);
    }
    if args.paired == 0
        && let Some(c) = args.configs.iter().find(|c| c.paired_only())
    {
        bail!(
            "`{}` is measured in paired mode only (--paired N): it is started by jcmd",
            c.name()
        );
    }
    if args.paired == 0 && (args.alternate || args.prime_jfr) {
        bail!("--alternate and --prime-jfr apply to paired mode only (--paired N)");
    }
    let bench = Bench::prepare(args)?;
    let needs_agent = args.configs.iter().any(|c| c.agent().is_some());
    if needs_agent {
        javelin_loadtest::topics::create(
            &args.brokers,
            &[bench.topic.clone(), format!("{}.status", bench.topic)],
            1,
        )
        .await?;
    }
    if args.paired > 0 {
        return paired::run(&bench);
    }
    let plan = plan(args);
    eprintln!(
        "bench-overhead: {} runs of ~{} s; logs in {}",
        plan.len(),
        args.warmup_secs + args.measure_secs + 5,
        bench.logs.display()
    );
    let resumed = args.resume.as_deref().map(read_resumed).transpose()?;
    let mut report = Report {
        header: Header::new(&bench, resumed.as_ref())?,
        measure_secs: args.measure_secs,
        ratio: RATIO_METHOD,
        failure: None,
        summaries: Vec::new(),
        runs: Vec::new(),
    };
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(javelin_loadtest::scenario::default_report_dir);
    std::fs::create_dir_all(&dir)?;
    let path = match (&args.resume, &resumed) {
        (Some(previous), Some(old)) => {
            report.runs = serde_json::from_value(old["runs"].clone())
                .context("the runs of the report resumed")?;
            for (i, r) in report.runs.iter().enumerate() {
                let planned = plan.get(i).map(|p| (p.0, p.1.name(), p.2.name()));
                if planned != Some((r.round, r.workload.as_str(), r.config.as_str())) {
                    bail!("run {i} of the report resumed is not in this plan: different flags?");
                }
            }
            eprintln!("resuming after {} runs", report.runs.len());
            previous.clone()
        }
        _ => dir.join(format!(
            "bench-overhead-{}.json",
            javelin_loadtest::now_ms()
        )),
    };
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("report (rewritten after every run): {}", path.display());
    let begun = Instant::now();
    let resumed = report.runs.len();
    for (order, &(round, workload, config)) in plan.iter().enumerate().skip(report.runs.len()) {
        let label = format!("round {} {} {}", round + 1, workload.name(), config.name());
        let idle = bench.wait_for_idle();
        match bench.run_one(order, round, workload, config, idle) {
            Ok(run) => {
                let left = begun.elapsed().as_secs_f64() / (order + 1 - resumed) as f64
                    * (plan.len() - order - 1) as f64;
                eprintln!(
                    "[{}/{}] {label}: {:.0} ops/s, other load {:.2} cores{} (~{:.0} min left)",
                    order + 1,
                    plan.len(),
                    run.ops_per_sec,
                    run.other_cpu_per_sec,
                    run.agent.as_ref().map_or(String::new(), |a| format!(
                        ", agent {:.2} CPU-s",
                        a.cpu_measured_secs
                    )),
                    left / 60.0
                );
                report.runs.push(run);
            }
            Err(e) => {
                eprintln!("[{}/{}] {label}: FAILED: {e:#}", order + 1, plan.len());
                report.failure = Some(format!("{label}: {e:#}"));
            }
        }
        report.header.loadavg_end = loadavg();
        report.summaries = summarize(args, &report.runs);
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        if report.failure.is_some() {
            break;
        }
    }
    println!("{}", markdown(&report));
    println!("report: {}", path.display());
    if let Some(failure) = report.failure {
        bail!("harness failure: {failure}");
    }
    Ok(())
}

/// The workloads and configurations asked for, each once, in a fixed order.
fn cells(args: &BenchOverheadArgs) -> (Vec<Workload>, Vec<Config>) {
    let mut workloads = args.workloads.clone();
    workloads.sort();
    workloads.dedup();
    let mut configs = args.configs.clone();
    configs.sort();
    configs.dedup();
    (workloads, configs)
}

/// Every round: each (workload, configuration) once, shuffled.
fn plan(args: &BenchOverheadArgs) -> Vec<(u64, Workload, Config)> {
    let (workloads, configs) = cells(args);
    let mut rng = SplitMix(args.seed);
    let mut out = Vec::new();
    for round in 0..args.rounds {
        let mut cells: Vec<(Workload, Config)> = workloads
            .iter()
            .flat_map(|w| configs.iter().map(move |c| (*w, *c)))
            .collect();
        // Fisher–Yates.
        for i in (1..cells.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            cells.swap(i, j);
        }
        out.extend(cells.into_iter().map(|(w, c)| (round, w, c)));
    }
    out
}

/// SplitMix64: a fixed, dependency-free sequence for the shuffle.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The default of one of the agent's flags, by its id (independent of the environment).
fn agent_default(id: &str) -> anyhow::Result<u64> {
    let command = AgentArgs::command();
    let arg = command
        .get_arguments()
        .find(|a| a.get_id() == id)
        .with_context(|| format!("the agent has no flag {id}"))?;
    arg.get_default_values()
        .first()
        .and_then(|v| v.to_str())
        .with_context(|| format!("the agent's {id} has no default"))?
        .parse()
        .with_context(|| format!("the agent's {id} default"))
}

impl Bench {
    /// Waits (up to `--idle-wait-secs`) until the node is idle over a 2-s
    /// sample; returns the seconds waited and the busy cores of the last sample.
    fn wait_for_idle(&self) -> (f64, f64) {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(self.args.idle_wait_secs);
        let mut told = false;
        loop {
            let Ok(before) = node_busy_ticks() else {
                return (0.0, f64::NAN);
            };
            std::thread::sleep(IDLE_SAMPLE);
            let Ok(after) = node_busy_ticks() else {
                return (0.0, f64::NAN);
            };
            let busy = (after - before) as f64 / self.clk_tck / IDLE_SAMPLE.as_secs_f64();
            if busy < self.args.idle_below_cores || Instant::now() >= deadline {
                return (start.elapsed().as_secs_f64(), busy);
            }
            if !told {
                eprintln!("waiting for the node to be idle ({busy:.2} cores busy)");
                told = true;
            }
        }
    }

    fn prepare(args: &BenchOverheadArgs) -> anyhow::Result<Bench> {
        let repo = javelin_loadtest::servers::repo_root()?;
        let dir = repo.join(format!("target/bench-overhead/{}", std::process::id()));
        let classes = dir.join("classes");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&classes)?;
        std::fs::create_dir_all(&logs)?;
        let source = dir.join("OverheadWorkload.java");
        std::fs::write(&source, WORKLOAD_SOURCE)?;
        let ok = Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(&source)
            .status()
            .context("running javac")?;
        if !ok.success() {
            bail!("javac failed on {}", source.display());
        }
        let agent_bin = match &args.agent_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?.with_file_name("javelin-agent"),
        };
        let home = args
            .async_profiler_home
            .clone()
            .unwrap_or_else(|| repo.join("../shared/third_party/async-profiler-4.5"));
        let asprof = home.join("bin/asprof");
        let ap_lib = home.join("lib/libasyncProfiler.so");
        let needs = |f: fn(&Config) -> bool| args.configs.iter().any(f);
        if needs(|c| c.agent().is_some()) && !agent_bin.is_file() {
            bail!(
                "{} is missing: build it (cargo build --release -p javelin-agent)",
                agent_bin.display()
            );
        }
        if needs(|c| {
            matches!(
                c,
                Config::Asprof | Config::AgentAsprof | Config::AgentAsprof10s
            )
        }) && !(asprof.is_file() && ap_lib.is_file())
        {
            bail!(
                "async-profiler is missing under {} (--async-profiler-home)",
                home.display()
            );
        }
        let clk_tck: f64 = command_output("getconf", &["CLK_TCK"])?
            .parse()
            .context("getconf CLK_TCK")?;
        Ok(Bench {
            args: args.clone(),
            classes,
            logs,
            agent_bin,
            asprof,
            ap_lib,
            topic: format!("javelin.overheadbench.{}", std::process::id()),
            clk_tck,
            cpu_period_ms: agent_default("cpu_period_ms")?,
            alloc_interval_bytes: agent_default("alloc_interval_bytes")?,
            lock_threshold_ms: agent_default("lock_threshold_ms")?,
            jvm_options: vec![
                format!("-Xms{}", args.heap),
                format!("-Xmx{}", args.heap),
                "-XX:+UseG1GC".into(),
                "-XX:+AlwaysPreTouch".into(),
            ],
        })
    }

    /// The agent's flags for `config` profiling `pid`.
    fn agent_args(&self, pid: u32, asprof: bool, window: Option<u64>) -> Vec<String> {
        let mut args: Vec<String> = [
            "--brokers",
            &self.args.brokers,
            "--profiles-topic",
            &self.topic,
            "--status-topic",
            &format!("{}.status", self.topic),
            "--pid",
            &pid.to_string(),
            // The JVM is seconds old; the default (10 s) would eat the warm-up.
            "--min-jvm-age-secs",
            "0",
            "--recording-name",
            "javelinoverhead",
            "--metrics-listen",
            "127.0.0.1:0",
            "--kubernetes-api",
            "off",
            "--cpu-period-ms",
            &self.cpu_period_ms.to_string(),
            "--alloc-interval-bytes",
            &self.alloc_interval_bytes.to_string(),
            "--lock-threshold-ms",
            &self.lock_threshold_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(secs) = window {
            args.extend(["--window-secs".into(), secs.to_string()]);
        }
        if asprof {
            args.extend([
                "--async-profiler-lib".into(),
                self.ap_lib.display().to_string(),
            ]);
        }
        args
    }

    /// The agent's target configuration for these flags (what it would record with).
    fn agent_target(&self, asprof: bool) -> anyhow::Result<javelin_agent::target::TargetConfig> {
        let parsed = AgentArgs::try_parse_from(
            std::iter::once("javelin-agent".to_string()).chain(self.agent_args(0, asprof, None)),
        )
        .context("the agent's arguments")?;
        Ok(parsed.target(None))
    }

    /// The `JFR.start` the agent sends in built-in JFR mode (JDK < 25).
    fn agent_jfr_start(&self) -> anyhow::Result<String> {
        let cfg = self.agent_target(false)?;
        let target = AttachTarget {
            pid: 0,
            nspid: 0,
            timeout: Duration::from_secs(1),
        };
        Ok(
            JfrRecorder::new(target, cfg.recording_name.clone(), cfg.jfr.clone())
                .start_command(CpuSampler::Execution),
        )
    }

    fn ap_settings(&self) -> anyhow::Result<AsyncProfilerSettings> {
        self.agent_target(true)?
            .async_profiler
            .context("async-profiler mode without settings")
    }

    /// The options of the agent's async-profiler sessions.
    fn agent_async_profiler_start(&self) -> anyhow::Result<String> {
        let target = AttachTarget {
            pid: 0,
            nspid: 0,
            timeout: Duration::from_secs(1),
        };
        Ok(AsyncProfilerRecorder::new(target, self.ap_settings()?).start_options())
    }

    /// `asprof start` with the agent's events and intervals.
    fn asprof_start_args(&self, file: &Path, pid: u32) -> Vec<String> {
        let ns = |ms: u64| (ms * 1_000_000).to_string();
        vec![
            "start".into(),
            "-e".into(),
            "cpu".into(),
            "-i".into(),
            ns(self.cpu_period_ms),
            "--alloc".into(),
            self.alloc_interval_bytes.to_string(),
            "--lock".into(),
            ns(self.lock_threshold_ms),
            "-o".into(),
            "jfr".into(),
            "-f".into(),
            file.display().to_string(),
            pid.to_string(),
        ]
    }

    fn asprof(&self, args: &[String]) -> anyhow::Result<String> {
        let out = Command::new(&self.asprof)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.asprof.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("asprof {} failed: {}", args.join(" "), text.trim());
        }
        Ok(text)
    }

    /// One run of `workload` under `config` in a fresh JVM.
    fn run_one(
        &self,
        order: usize,
        round: u64,
        workload: Workload,
        config: Config,
        (idle_wait_secs, idle_busy_cores): (f64, f64),
    ) -> anyhow::Result<Run> {
        let tag = format!("{order:03}-{}-{}", workload.name(), config.name());
        let recording =
            std::env::temp_dir().join(format!("javelin-overhead-{}-{tag}.jfr", std::process::id()));
        let _ = std::fs::remove_file(&recording);
        let mut jvm_options = self.jvm_options.clone();
        if let Some(preset) = config.jfr_preset() {
            jvm_options.push(format!(
                "-XX:StartFlightRecording:settings={preset},filename={}",
                recording.display()
            ));
        }
        let mut jvm = Jvm::start(self, workload, &jvm_options, &tag)?;
        let ready = Instant::now();

        // The profiler: started, then seen profiling.
        let mut agent = None;
        if let Some((asprof, window)) = config.agent() {
            let args = self.agent_args(jvm.pid, asprof, window);
            agent = Some(Agent::start(self, &args, &tag, &mut jvm)?);
        } else if config == Config::Asprof {
            self.asprof(&self.asprof_start_args(&recording, jvm.pid))?;
            let status = self.asprof(&["status".into(), jvm.pid.to_string()])?;
            if !status.contains("running") {
                bail!("asprof status after start: {}", status.trim());
            }
        }
        let profiling_at = Instant::now();
        let profiling_after =
            (config != Config::None).then(|| (profiling_at - ready).as_secs_f64());
        let measure_from = (ready + Duration::from_secs(self.args.warmup_secs)).max(Instant::now());
        while Instant::now() < measure_from {
            jvm.alive()?;
            if let Some(a) = agent.as_mut() {
                a.alive()?;
            }
            std::thread::sleep(
                measure_from
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            );
        }
        let mut evidence = check_evidence(config, jvm.pid, &recording)?;

        // The measured period: metrics scraped outside it, CPU read at its ends.
        let metrics_before = agent.as_ref().map(Agent::metrics).transpose()?;
        let agent_cpu_before = agent.as_ref().map(|a| cpu_ticks(a.pid)).transpose()?;
        let jvm_cpu_before = cpu_ticks(jvm.pid)?;
        let node_before = node_busy_ticks()?;
        let (t0, ops0) = jvm.mark()?;
        let warmup_secs = ready.elapsed().as_secs_f64();
        let end = Instant::now() + Duration::from_secs(self.args.measure_secs);
        while Instant::now() < end {
            std::thread::sleep(
                end.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
            );
            jvm.alive()?;
            if let Some(a) = agent.as_mut() {
                a.alive()?;
            }
        }
        let (t1, ops1) = jvm.mark()?;
        let agent_cpu_after = agent.as_ref().map(|a| cpu_ticks(a.pid)).transpose()?;
        let jvm_cpu_after = cpu_ticks(jvm.pid)?;
        let node_after = node_busy_ticks()?;
        let jvm_rss_kib = status_kib(jvm.pid, "VmRSS:").context("the JVM's VmRSS")?;
        let agent_hwm = agent
            .as_ref()
            .map(|a| status_kib(a.pid, "VmHWM:").context("the agent's VmHWM"))
            .transpose()?;
        let measured_secs = t1.saturating_sub(t0) as f64 / 1e9;
        let ops = ops1.saturating_sub(ops0);
        if ops == 0 {
            bail!("the workload completed no operation in the measured period");
        }

        // Still profiling at the end, then stopped: the recordings must hold data.
        evidence.extend(check_evidence(config, jvm.pid, &recording)?);
        let mut agent_run = None;
        if let (Some(mut a), Some(before), Some(cpu0), Some(cpu1), Some(hwm)) = (
            agent.take(),
            metrics_before,
            agent_cpu_before,
            agent_cpu_after,
            agent_hwm,
        ) {
            let after = a.metrics()?;
            let profiling = metric_sum(&after, "javelin_agent_targets", "state=\"profiling\"");
            if profiling < 1.0 {
                bail!("the agent no longer profiles the JVM at the end of the measured period");
            }
            let delta = |name: &str| metric_sum(&after, name, "") - metric_sum(&before, name, "");
            let parts = delta("javelin_agent_windows_total");
            let all_parts = metric_sum(&after, "javelin_agent_windows_total", "");
            let window = match config.agent().and_then(|(_, w)| w) {
                Some(w) => w,
                None => agent_default("window_secs")?,
            };
            // A window that closed (with some margin for its collect) must have been built.
            let profiled = profiling_at.elapsed();
            if profiled > Duration::from_secs(window + 10) && all_parts < 1.0 {
                bail!("the agent built no window in {profiled:?} of {window}-s windows");
            }
            evidence.push(format!(
                "agent: profiling 1 target; {all_parts} window parts built in {:.0} s \
                 ({parts} in the measured period)",
                profiled.as_secs_f64()
            ));
            let cpu_measured = (cpu1 - cpu0) as f64 / self.clk_tck;
            agent_run = Some(AgentRun {
                cpu_before_measure_secs: cpu0 as f64 / self.clk_tck,
                cpu_measured_secs: cpu_measured,
                cpu_secs_per_jvm_hour: cpu_measured / measured_secs * 3600.0,
                peak_rss_kib: hwm,
                window_parts_in_measure: parts,
                jfr_bytes_in_measure: delta("javelin_agent_jfr_bytes_total"),
                dump_bytes_in_measure: delta("javelin_agent_dump_bytes_total"),
                collect_failures: metric_sum(&after, "javelin_agent_collect_failures_total", ""),
            });
            a.stop()?;
        }
        if config == Config::Asprof {
            let status = self.asprof(&["status".into(), jvm.pid.to_string()])?;
            if !status.contains("running") {
                bail!("asprof status at the end: {}", status.trim());
            }
            self.asprof(&["stop".into(), jvm.pid.to_string()])?;
        }
        jvm.exit()?;
        if matches!(
            config,
            Config::Asprof | Config::JfrProfile | Config::JfrDefault
        ) {
            let size = std::fs::metadata(&recording).map_or(0, |m| m.len());
            if size == 0 {
                bail!("the recording {} is missing or empty", recording.display());
            }
            evidence.push(format!("recording written: {size} bytes"));
            let _ = std::fs::remove_file(&recording);
        }
        let jvm_cpu = (jvm_cpu_after - jvm_cpu_before) as f64 / self.clk_tck;
        Ok(Run {
            round,
            order,
            workload: workload.name().into(),
            config: config.name().into(),
            ops,
            measured_secs,
            ops_per_sec: ops as f64 / measured_secs,
            warmup_secs,
            profiling_after_secs: profiling_after,
            jvm_cpu_per_sec: jvm_cpu / measured_secs,
            ops_per_jvm_cpu_sec: ops as f64 / jvm_cpu,
            other_cpu_per_sec: ((node_after - node_before) as f64 / self.clk_tck
                - jvm_cpu
                - agent_run.as_ref().map_or(0.0, |a| a.cpu_measured_secs))
                / measured_secs,
            idle_wait_secs,
            idle_busy_cores,
            jvm_rss_kib,
            agent: agent_run,
            evidence,
        })
    }
}

/// Lines of a child's stdout, read on a thread so that waits have deadlines.
fn line_reader(out: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line starting with `prefix` before `deadline` (others are skipped).
fn next_line(lines: &Receiver<String>, prefix: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Ok(line),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => bail!("no `{prefix}` line within {within:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("output closed before a `{prefix}` line"),
        }
    }
}

/// Waits for `child` to exit until `within` has passed.
fn wait_within(
    child: &mut Child,
    within: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A workload JVM, killed when dropped.
struct Jvm {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    lines: Receiver<String>,
    log: PathBuf,
}

impl std::fmt::Debug for Jvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jvm").field("pid", &self.pid).finish()
    }
}

impl Jvm {
    fn start(
        bench: &Bench,
        workload: Workload,
        options: &[String],
        tag: &str,
    ) -> anyhow::Result<Jvm> {
        let log = bench.logs.join(format!("{tag}.jvm.log"));
        let mut child = Command::new("java")
            .args(options)
            .arg("-cp")
            .arg(&bench.classes)
            .arg("OverheadWorkload")
            .arg(workload.name())
            .arg(bench.args.threads.to_string())
            .env("JAVELIN_SERVICE", format!("overhead-{}", workload.name()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting java")?;
        let stdin = child.stdin.take().context("the JVM's stdin")?;
        let lines = line_reader(child.stdout.take().context("the JVM's stdout")?);
        let pid = child.id();
        adopt(pid);
        let mut jvm = Jvm {
            child,
            pid,
            stdin,
            lines,
            log,
        };
        next_line(&jvm.lines, "ready ", JVM_READY).with_context(|| {
            format!("the workload JVM did not start (see {})", jvm.log.display())
        })?;
        jvm.alive()?;
        Ok(jvm)
    }

    /// Fails if the JVM exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the workload JVM exited ({status}; see {})",
                self.log.display()
            );
        }
        Ok(())
    }

    /// The workload's clock (ns) and completed operations.
    fn mark(&mut self) -> anyhow::Result<(u64, u64)> {
        writeln!(self.stdin, "mark")?;
        self.stdin.flush()?;
        let line = next_line(&self.lines, "mark ", MARK_REPLY).context("the workload's mark")?;
        let mut fields = line.split(' ').skip(1).map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(nanos)), Some(Ok(ops))) => Ok((nanos, ops)),
            _ => bail!("a malformed mark line {line:?}"),
        }
    }

    /// Asks the JVM to exit (JFR writes its recording then) and waits for it.
    fn exit(&mut self) -> anyhow::Result<()> {
        writeln!(self.stdin, "exit")?;
        self.stdin.flush()?;
        match wait_within(&mut self.child, JVM_EXIT)? {
            Some(_) => Ok(()),
            None => bail!("the workload JVM did not exit within {JVM_EXIT:?}"),
        }
    }
}

/// Kills and reaps a child of ours.
fn reap(child: &mut Child, pid: u32) {
    let _ = child.kill();
    // Before the wait: until reaped, the pid cannot name another process.
    disown(pid);
    let _ = child.wait();
}

impl Drop for Jvm {
    fn drop(&mut self) {
        reap(&mut self.child, self.pid);
    }
}

/// The agent process, killed when dropped.
struct Agent {
    child: Child,
    pid: u32,
    metrics_url: String,
    log: PathBuf,
    lines: Receiver<String>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("pid", &self.pid).finish()
    }
}

impl Agent {
    /// Starts the agent and returns once it profiles the JVM.
    fn start(bench: &Bench, args: &[String], tag: &str, jvm: &mut Jvm) -> anyhow::Result<Agent> {
        let log = bench.logs.join(format!("{tag}.agent.log"));
        let mut command = Command::new(&bench.agent_bin);
        // Only the flags above configure it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("JAVELIN_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bench.agent_bin.display()))?;
        let lines = line_reader(child.stdout.take().context("the agent's stdout")?);
        let pid = child.id();
        adopt(pid);
        let mut agent = Agent {
            child,
            pid,
            metrics_url: String::new(),
            log,
            lines,
        };
        let line = next_line(&agent.lines, "javelin-agent metrics on ", JVM_READY)
            .with_context(|| format!("the agent did not start (see {})", agent.log.display()))?;
        agent.metrics_url = line.rsplit(' ').next().unwrap_or_default().to_string();
        let deadline = Instant::now() + AGENT_PROFILING;
        loop {
            agent.alive()?;
            jvm.alive()?;
            let text = agent.metrics().unwrap_or_default();
            if metric_sum(&text, "javelin_agent_targets", "state=\"profiling\"") >= 1.0 {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not profile the JVM within {AGENT_PROFILING:?} (see {})",
                    agent.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the agent exited ({status}; see {})", self.log.display());
        }
        Ok(())
    }

    fn metrics(&self) -> anyhow::Result<String> {
        http_get(&self.metrics_url).context("the agent's metrics")
    }

    /// SIGTERM, then waits for the agent to end its session and exit.
    fn stop(&mut self) -> anyhow::Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match wait_within(&mut self.child, AGENT_STOP)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!(
                "the agent exited with {status} on SIGTERM (see {})",
                self.log.display()
            ),
            None => bail!("the agent did not stop within {AGENT_STOP:?}"),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        reap(&mut self.child, self.pid);
    }
}

/// What the JVM has open and mapped that shows it is profiled.
fn evidence_of(pid: u32) -> (Vec<(String, u64)>, Vec<String>) {
    let mut recordings = Vec::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.display().to_string();
            if target.ends_with(".jfr") {
                let size = std::fs::metadata(fd.path()).map_or(0, |m| m.len());
                recordings.push((target, size));
            }
        }
    }
    // JFR holds its current chunk open twice.
    recordings.sort();
    recordings.dedup();
    let mut libraries: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| path.ends_with("libasyncProfiler.so"))
        .map(str::to_string)
        .collect();
    libraries.sort();
    libraries.dedup();
    (recordings, libraries)
}

/// Checks that the JVM is profiled the way `config` says (and only so);
/// returns what showed it.
fn check_evidence(config: Config, pid: u32, recording: &Path) -> anyhow::Result<Vec<String>> {
    use javelin_agent::recorder::async_profiler::{TARGET_DIR, TARGET_LIBRARY};
    let (files, libraries) = evidence_of(pid);
    let seen = format!("open recordings {files:?}, async-profiler mapped from {libraries:?}");
    let own = recording.display().to_string();
    let ok = match config {
        Config::None => files.is_empty() && libraries.is_empty(),
        Config::AgentJfr
        | Config::AgentJfr10s
        | Config::JfrProfile
        | Config::JfrDefault
        | Config::JfrProfileDump10s
        | Config::JfrAgentEvents
        | Config::JfrAgentEventsDump10s
        | Config::JfrDumpsOnly2s => !files.is_empty() && libraries.is_empty(),
        Config::AgentAsprof | Config::AgentAsprof10s => {
            libraries == [TARGET_LIBRARY]
                && files
                    .iter()
                    .any(|(f, _)| f.starts_with(&format!("{TARGET_DIR}/ap-")))
        }
        Config::Asprof => libraries.len() == 1 && files.iter().any(|(f, _)| *f == own),
    };
    if !ok {
        bail!(
            "the JVM is not profiled as `{}` says: {seen}",
            config.name()
        );
    }
    Ok(vec![seen])
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(')').context("/proc/<pid>/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .context("/proc/<pid>/stat is short")?
            .parse()
            .context("/proc/<pid>/stat")
    };
    Ok(field(14)? + field(15)?)
}

fn command_output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// CPU ticks the node spent busy (user, nice, system, irq, softirq, steal), all CPUs.
fn node_busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat is empty")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Ok([0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0))
        .sum())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first line `java -version` prints.
fn java_version() -> String {
    Command::new("java")
        .arg("-version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn summarize(args: &BenchOverheadArgs, runs: &[Run]) -> Vec<Summary> {
    let mut by_cell: BTreeMap<(&str, &str), Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_cell
            .entry((r.workload.as_str(), r.config.as_str()))
            .or_default()
            .push(r);
    }
    let none: BTreeMap<(&str, u64), &Run> = runs
        .iter()
        .filter(|r| r.config == Config::None.name())
        .map(|r| ((r.workload.as_str(), r.round), r))
        .collect();
    let mut out = Vec::new();
    let (workloads, configs) = cells(args);
    for w in &workloads {
        for c in &configs {
            let Some(cell) = by_cell.get(&(w.name(), c.name())) else {
                continue;
            };
            let paired = |f: &dyn Fn(&Run, &Run) -> f64| -> Option<Spread> {
                let v: Vec<f64> = cell
                    .iter()
                    .filter_map(|r| none.get(&(r.workload.as_str(), r.round)).map(|n| f(r, n)))
                    .collect();
                Spread::of(&v)
            };
            let agent = |f: &dyn Fn(&AgentRun) -> f64| -> Option<Spread> {
                let v: Vec<f64> = cell
                    .iter()
                    .filter_map(|r| r.agent.as_ref().map(f))
                    .collect();
                Spread::of(&v)
            };
            let per_hour = |f: &dyn Fn(&AgentRun) -> f64| -> Option<Spread> {
                let v: Vec<f64> = cell
                    .iter()
                    .filter_map(|r| {
                        let a = r.agent.as_ref()?;
                        Some(f(a) / r.measured_secs * 3600.0 / (1024.0 * 1024.0))
                    })
                    .collect();
                Spread::of(&v)
            };
            out.push(Summary {
                workload: w.name(),
                config: c.name(),
                runs: cell.len(),
                ops_per_sec: Spread::of(&cell.iter().map(|r| r.ops_per_sec).collect::<Vec<_>>()),
                ratio_vs_none: paired(&|r, n| r.ops_per_sec / n.ops_per_sec),
                cpu_efficiency_vs_none: paired(&|r, n| {
                    r.ops_per_jvm_cpu_sec / n.ops_per_jvm_cpu_sec
                }),
                agent_cpu_secs_per_jvm_hour: agent(&|a| a.cpu_secs_per_jvm_hour),
                agent_cpu_before_measure_secs: agent(&|a| a.cpu_before_measure_secs),
                agent_peak_rss_mib: agent(&|a| a.peak_rss_kib as f64 / 1024.0),
                extra_rss_mib: paired(&|r, n| {
                    (r.jvm_rss_kib as f64 - n.jvm_rss_kib as f64) / 1024.0
                }),
                agent_window_parts_in_measure: agent(&|a| a.window_parts_in_measure),
                // An agent without the dump-bytes metric reads 0: not a measurement.
                agent_dump_mib_per_jvm_hour: per_hour(&|a| a.dump_bytes_in_measure)
                    .filter(|d| d.max > 0.0),
                agent_parsed_mib_per_jvm_hour: per_hour(&|a| a.jfr_bytes_in_measure),
                jvm_cpu_per_sec: Spread::of(
                    &cell.iter().map(|r| r.jvm_cpu_per_sec).collect::<Vec<_>>(),
                ),
                other_cpu_per_sec: Spread::of(
                    &cell.iter().map(|r| r.other_cpu_per_sec).collect::<Vec<_>>(),
                ),
            });
        }
    }
    out
}

fn markdown(report: &Report) -> String {
    let h = &report.header;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("## bench-overhead, {}", h.started));
    line(String::new());
    line(format!("- command: `{}`", h.command));
    line(format!(
        "- load average (1/5/15 min) at start: {}; at end: {}",
        h.loadavg_start, h.loadavg_end
    ));
    line(format!(
        "- {}; JVM options `{}`; {} worker threads; warm-up {} s, measured {} s; {} rounds, seed {}",
        h.java,
        h.jvm_options.join(" "),
        h.threads,
        h.warmup_secs,
        report.measure_secs,
        h.rounds,
        h.seed
    ));
    let debug = if h.agent_binary.contains("/debug/") {
        " (a debug build: its CPU is not what a release agent uses)"
    } else {
        ""
    };
    line(format!("- agent: `{}`{debug}", h.agent_binary));
    line(format!(
        "- agent, built-in JFR mode: `{}`",
        h.agent_jfr_start
    ));
    line(format!(
        "- agent, async-profiler mode (per window, a new session): `{}`",
        h.agent_async_profiler_start
    ));
    line(format!("- asprof anchor: `{}`", h.asprof_anchor));
    line(format!("- vs none: {}", report.ratio));
    line(String::new());
    line("| workload | config | runs | ops/s median (min–max) | vs none: median [IQR] (min–max) | ops per JVM CPU-s vs none: median [IQR] | agent CPU s per JVM-hour, median (min–max) | agent CPU before measuring, s | agent peak RSS MiB (max) | JVM extra RSS MiB, median [IQR] | agent window parts in measured period | agent MiB read from dumps / parsed, per JVM-hour | JVM CPU s/s, median (min) | other load, cores: median (max) |".into());
    line("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".into());
    let pct = |r: f64| format!("{:+.1} %", (r - 1.0) * 100.0);
    for s in &report.summaries {
        let ops = s.ops_per_sec.map_or("—".into(), |o| {
            format!("{:.0} ({:.0}–{:.0})", o.median, o.min, o.max)
        });
        let ratio = match (s.config, s.ratio_vs_none) {
            ("none", _) | (_, None) => "—".into(),
            (_, Some(r)) => format!(
                "{} [{}, {}] ({} … {})",
                pct(r.median),
                pct(r.q1),
                pct(r.q3),
                pct(r.min),
                pct(r.max)
            ),
        };
        let efficiency = match (s.config, s.cpu_efficiency_vs_none) {
            ("none", _) | (_, None) => "—".into(),
            (_, Some(r)) => format!("{} [{}, {}]", pct(r.median), pct(r.q1), pct(r.q3)),
        };
        let other = s
            .other_cpu_per_sec
            .map_or("—".into(), |c| format!("{:.2} ({:.2})", c.median, c.max));
        let cpu = s.agent_cpu_secs_per_jvm_hour.map_or("—".into(), |c| {
            format!("{:.1} ({:.1}–{:.1})", c.median, c.min, c.max)
        });
        let before = s
            .agent_cpu_before_measure_secs
            .map_or("—".into(), |c| format!("{:.2}", c.median));
        let rss = s
            .agent_peak_rss_mib
            .map_or("—".into(), |r| format!("{:.1} ({:.1})", r.median, r.max));
        let extra = match (s.config, s.extra_rss_mib) {
            ("none", _) | (_, None) => "—".into(),
            (_, Some(e)) => format!("{:+.1} [{:+.1}, {:+.1}]", e.median, e.q1, e.q3),
        };
        let parts = s
            .agent_window_parts_in_measure
            .map_or("—".into(), |p| format!("{:.0}", p.median));
        let dumps = match (
            s.agent_dump_mib_per_jvm_hour,
            s.agent_parsed_mib_per_jvm_hour,
        ) {
            (Some(d), Some(p)) => format!("{:.0} / {:.0}", d.median, p.median),
            _ => "—".into(),
        };
        let jvm_cpu = s
            .jvm_cpu_per_sec
            .map_or("—".into(), |c| format!("{:.2} ({:.2})", c.median, c.min));
        line(format!(
            "| {} | {} | {} | {ops} | {ratio} | {efficiency} | {cpu} | {before} | {rss} | {extra} | {parts} | {dumps} | {jvm_cpu} | {other} |",
            s.workload, s.config, s.runs
        ));
    }
    if let Some(f) = &report.failure {
        line(String::new());
        line(format!("**harness failure**: {f}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!((s.min, s.max, s.median), (1.0, 4.0, 2.5));
        assert_eq!((s.q1, s.q3), (1.75, 3.25));
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn every_round_runs_every_cell_once_in_a_seeded_order() {
        let args = BenchOverheadArgs::try_parse_from_for_test(&["--rounds", "3"]);
        let plan = plan(&args);
        assert_eq!(plan.len(), 3 * 4 * 8);
        for round in 0..3 {
            let mut cells: Vec<_> = plan
                .iter()
                .filter(|p| p.0 == round)
                .map(|p| (p.1, p.2))
                .collect();
            cells.sort();
            cells.dedup();
            assert_eq!(cells.len(), 32);
        }
        assert_eq!(plan, super::plan(&args), "the same seed, the same order");
        let first: Vec<_> = plan
            .iter()
            .filter(|p| p.0 == 0)
            .map(|p| (p.1, p.2))
            .collect();
        let second: Vec<_> = plan
            .iter()
            .filter(|p| p.0 == 1)
            .map(|p| (p.1, p.2))
            .collect();
        assert_ne!(first, second, "shuffled per round");
    }

    fn run(round: u64, config: Config, ops_per_sec: f64, rss_mib: u64) -> Run {
        Run {
            round,
            order: 0,
            workload: "cpu".into(),
            config: config.name().into(),
            ops: 1,
            measured_secs: 1.0,
            ops_per_sec,
            warmup_secs: 0.0,
            profiling_after_secs: None,
            jvm_cpu_per_sec: 2.0,
            ops_per_jvm_cpu_sec: ops_per_sec / 2.0,
            other_cpu_per_sec: 0.0,
            idle_wait_secs: 0.0,
            idle_busy_cores: 0.0,
            jvm_rss_kib: rss_mib * 1024,
            agent: None,
            evidence: vec![],
        }
    }

    #[test]
    fn ratios_pair_each_run_with_its_rounds_none() {
        let args = BenchOverheadArgs::try_parse_from_for_test(&[
            "--workloads",
            "cpu",
            "--configs",
            "none,asprof",
        ]);
        // Round 2 ran slower throughout: the pairing keeps that out of the ratio.
        let runs = [
            run(0, Config::None, 100.0, 300),
            run(0, Config::Asprof, 90.0, 330),
            run(1, Config::None, 50.0, 300),
            run(1, Config::Asprof, 45.0, 320),
        ];
        let summaries = summarize(&args, &runs);
        let asprof = summaries
            .iter()
            .find(|s| s.config == "asprof")
            .expect("asprof summarized");
        let ratio = asprof.ratio_vs_none.expect("paired");
        assert!((ratio.median - 0.9).abs() < 1e-9 && (ratio.max - ratio.min).abs() < 1e-9);
        assert_eq!(asprof.extra_rss_mib.expect("paired").median, 25.0);
        assert_eq!(asprof.ops_per_sec.expect("runs").median, 67.5);
    }

    impl BenchOverheadArgs {
        fn try_parse_from_for_test(args: &[&str]) -> BenchOverheadArgs {
            #[derive(Debug, Parser)]
            struct Wrapper {
                #[command(flatten)]
                args: BenchOverheadArgs,
            }
            Wrapper::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
                .expect("arguments parse")
                .args
        }
    }
}
