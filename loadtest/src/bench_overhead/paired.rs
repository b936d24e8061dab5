//! `bench-overhead --paired N`: the profiler switched on and off in periods of
//! one JVM.
//!
//! Throughput differs by ±5–20 % between two JVMs of the same configuration on
//! a small VM (JIT decisions, heap and code layout), more than what profiling
//! costs; comparing fresh JVMs needs dozens of rounds to see a few percent.
//! Here each JVM is its own baseline: after the warm-up it runs `off, on, off,
//! on, …, off` periods of `--period-secs` (N on-periods), and every on-period
//! is compared with the mean of the off-periods on either side of it, which
//! also cancels a slow drift (JIT still settling, a neighbour's load).
//!
//! The profiler is started before an on-period and stopped after it, outside
//! the measured time, and every period starts `--settle-secs` after the switch
//! (start-up work, recompilation after a stop, JFR's chunk clean-up stay out of
//! both): the agent (seen profiling, then SIGTERM: it ends its session),
//! `asprof start`/`stop`, or the JDK preset by `jcmd JFR.start settings=…` /
//! `JFR.stop` (what a user does without restarting the JVM; the fresh-JVM mode
//! starts presets with `-XX:StartFlightRecording` instead, so the two modes'
//! JFR anchors differ in start-up only).
//!
//! An off-period after the first on-period is "profiler stopped", not "never
//! profiled": async-profiler stays loaded and JFR keeps its threads; the first
//! off-period is the only never-profiled one (it also follows the warm-up
//! directly, so it carries drift too). The JVM's memory is taken from the
//! first off-period: the RSS at the end of the first on-period and the JVM's
//! peak RSS over all periods, minus it (memory a profiler took is rarely given
//! back, so later periods say nothing about it).
//!
//! The agent's dump cadence is part of an on-period only when the period spans
//! windows: the agent starts its first window when profiling starts, so with
//! a period of k windows plus half a window the k dumps fall inside it. The
//! periods record the windows the agent built, so a reader can check.
//!
//! Three configurations exist here only, to take the agent's built-in JFR mode
//! apart (each started by `jcmd`, no agent process): `jfr-agent-events` (the
//! agent's own `JFR.start` line, never dumped), `jfr-agent-events-dump-10s`
//! (the same, `JFR.dump`ed every 10 s like the agent's 10-s windows) and
//! `jfr-profile-dump-10s` (the `profile` preset, dumped the same way). A
//! fourth, `jfr-dumps-only-2s`, starts the agent's line once after the warm-up
//! and keeps it through every period, dumping every 2 s in on-periods only:
//! the dumps' own cost, with JFR's start-up (and the deoptimization of the
//! first `JFR.start`) outside every period. Its first off-period records too,
//! so its "never profiled" column does not mean that.
//!
//! A JVM that fails is reported and the run goes on (three in a row end it);
//! `--resume <report>` runs the JVMs the report has no periods of.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::{
    Agent, Bench, Config, JcmdJfr, Jvm, Spread, Workload, agent_default, check_evidence,
    evidence_of,
};
use javelin_agent::attach::AttachTarget;
use javelin_agent::recorder::jfr::{CpuSampler, JfrRecorder, JfrSettings};

/// The name of the anchor's JFR recording started by `jcmd`.
const ANCHOR_RECORDING: &str = "javelinpairedanchor";

/// One measured period.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(super) struct Period {
    pub round: u64,
    pub workload: String,
    pub config: String,
    /// 0, 1, 2, …: even periods are off, odd ones on.
    pub index: usize,
    pub on: bool,
    pub ops_per_sec: f64,
    pub measured_secs: f64,
    /// CPU seconds per second the node spent outside the JVM (and the agent, when on).
    pub other_cpu_per_sec: f64,
    /// VmRSS at the end of the period, and VmHWM (peak) then.
    pub jvm_rss_kib: u64,
    pub jvm_hwm_kib: u64,
    /// On-periods with the agent: its window parts built and its CPU seconds
    /// in the period.
    pub agent_window_parts: Option<f64>,
    pub agent_cpu_secs: Option<f64>,
    /// The JVM's CPU per thread group (the name as the kernel keeps it, 15
    /// characters, without trailing digits: `C2 CompilerThre`, `JFR Thread
    /// Samp`, …; exited threads as one group), cores.
    #[serde(default)]
    pub thread_cpu: BTreeMap<String, f64>,
}

/// One (workload, configuration) over all its JVMs.
#[derive(Debug, Clone, Serialize)]
pub(super) struct PairedSummary {
    pub workload: &'static str,
    pub config: &'static str,
    pub jvms: usize,
    /// On-periods with both neighbouring off-periods measured.
    pub on_periods: usize,
    /// Per on-period (pooled over the JVMs): its ops/s ÷ the mean of the
    /// off-periods either side. Neighbouring ratios share an off-period: a
    /// spread of periods, not a confidence interval.
    pub ratio: Option<Spread>,
    /// Per JVM: the mean of its on-periods' ratios.
    pub ratio_per_jvm: Option<Spread>,
    /// Per JVM: its first on-period ÷ its first (never-profiled) off-period
    /// (drift included; a JFR session leaves the JVM slower after its stop,
    /// which the neighbour ratio then hides).
    pub first_on_vs_never_profiled: Option<Spread>,
    /// Ops/s of the first (never-profiled) off-periods and of the later ones.
    pub first_off_ops_per_sec: Option<Spread>,
    pub later_off_ops_per_sec: Option<Spread>,
    /// Per JVM, MiB: RSS at the end of the first on-period, and the peak RSS
    /// over all periods, minus the RSS of the first off-period.
    pub first_on_extra_rss_mib: Option<Spread>,
    pub peak_extra_rss_mib: Option<Spread>,
    /// Agent window parts built per on-period, and its CPU s per JVM-hour.
    pub agent_window_parts: Option<Spread>,
    pub agent_cpu_secs_per_jvm_hour: Option<Spread>,
    /// CPU the node spent outside the JVM and agent, per period: cores.
    pub other_cpu_per_sec: Option<Spread>,
    /// Thread groups of the JVM whose CPU differs by at least
    /// [`THREAD_CPU_SHOWN`] cores between on-periods and the mean of their
    /// neighbours (mean over on-periods), most added first: where the JVM's
    /// CPU went while profiled.
    pub thread_cpu_on_minus_off: Vec<(String, f64)>,
}

/// The smallest thread-group CPU difference a summary lists, cores.
const THREAD_CPU_SHOWN: f64 = 0.005;

/// How the profiler of `config` is switched in one JVM.
enum Switch<'a> {
    Agent(Agent),
    Asprof(&'a std::path::Path),
    Jfr(Option<Dumps>),
    /// Dumps of a recording that runs through the off-periods too.
    DumpsOnly(Dumps),
}

/// A file removed when this is dropped (a failed run leaves none behind).
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `JFR.dump`s of a `jcmd`-started recording at the agent's cadence: each one
/// rotates the chunk and asks for the last `every` only (the agent asks with
/// `begin=` for the chunks after the newest one it collected), into a file
/// deleted at once.
struct Dumps {
    every: Duration,
    next: Instant,
    done: u64,
    /// Unique per JVM and period: `<tmp>/javelin-overhead-<pid>-<tag>`.
    prefix: String,
}

impl Bench {
    /// The periods of one JVM running `workload`, `config` switched on in
    /// `pairs` periods between off-periods.
    pub(super) fn run_paired(
        &self,
        order: usize,
        round: u64,
        workload: Workload,
        config: Config,
        pairs: usize,
    ) -> anyhow::Result<Vec<Period>> {
        if config == Config::None {
            bail!("`none` has no on-periods: the off-periods are the baseline");
        }
        let tag = format!("{order:03}-paired-{}-{}", workload.name(), config.name());
        // An `asprof` recording, removed however the JVM's run ends.
        let removed = Removed(
            std::env::temp_dir().join(format!("javelin-overhead-{}-{tag}.jfr", std::process::id())),
        );
        let recording = removed.0.as_path();
        let mut jvm = Jvm::start(self, workload, &self.jvm_options, &tag)?;
        let warm = Instant::now() + Duration::from_secs(self.args.warmup_secs);
        self.idle_until(&mut jvm, None, warm)?;
        if config.records_throughout() {
            // Started a settle before the first period, as an on-switch is.
            self.start_jcmd_recording(config, jvm.pid)?;
        }
        let period = Duration::from_secs(self.args.period_secs);
        let settle = Duration::from_secs(self.args.settle_secs);
        let mut periods = Vec::with_capacity(2 * pairs + 1);
        for index in 0..=2 * pairs {
            let on = index % 2 == 1;
            let mut switch = None;
            if on {
                let tag = format!("{tag}-p{index}");
                switch = Some(self.switch_on(config, &mut jvm, recording, &tag)?);
            }
            self.idle_until(&mut jvm, switch.as_mut(), Instant::now() + settle)?;
            if on || config.records_throughout() {
                check_evidence(config, jvm.pid, recording)?;
            } else {
                // Stopped means stopped: no recording open, whatever stays loaded.
                let (files, _) = evidence_of(jvm.pid);
                if !files.is_empty() {
                    bail!("period {index}: the profiler still records after its stop: {files:?}");
                }
            }
            let agent = match &switch {
                Some(Switch::Agent(a)) => Some(a),
                _ => None,
            };
            let agent_pid = agent.map(|a| a.pid);
            let metrics_before = agent.map(|a| a.metrics()).transpose()?;
            let cpu = |jvm: &Jvm| -> anyhow::Result<(u64, u64, u64)> {
                Ok((
                    super::cpu_ticks(jvm.pid)?,
                    agent_pid.map(super::cpu_ticks).transpose()?.unwrap_or(0),
                    super::node_busy_ticks()?,
                ))
            };
            let before = cpu(&jvm)?;
            let threads_before = thread_ticks(jvm.pid)?;
            let (t0, ops0) = jvm.mark()?;
            let until = Instant::now() + period;
            self.idle_until(&mut jvm, switch.as_mut(), until)?;
            let (t1, ops1) = jvm.mark()?;
            let after = cpu(&jvm)?;
            let threads_after = thread_ticks(jvm.pid)?;
            let jvm_rss_kib = super::status_kib(jvm.pid, "VmRSS:").context("the JVM's VmRSS")?;
            let jvm_hwm_kib = super::status_kib(jvm.pid, "VmHWM:").context("the JVM's VmHWM")?;
            let mut agent_window_parts = None;
            if let (Some(Switch::Agent(a)), Some(before)) = (&switch, &metrics_before) {
                let now = a.metrics()?;
                if super::metric_sum(&now, "javelin_agent_targets", "state=\"profiling\"") < 1.0 {
                    bail!("period {index}: the agent no longer profiles the JVM at its end");
                }
                let name = "javelin_agent_windows_total";
                agent_window_parts =
                    Some(super::metric_sum(&now, name, "") - super::metric_sum(before, name, ""));
            }
            let measured_secs = t1.saturating_sub(t0) as f64 / 1e9;
            let ops = ops1.saturating_sub(ops0);
            if ops == 0 {
                bail!("period {index}: the workload completed no operation");
            }
            if let Some(switch) = switch {
                check_evidence(config, jvm.pid, recording)?;
                self.switch_off(switch, &jvm)?;
            }
            let other_ticks =
                (after.2 - before.2).saturating_sub(after.0 - before.0 + after.1 - before.1);
            let agent_cpu_secs = agent_pid.map(|_| (after.1 - before.1) as f64 / self.clk_tck);
            periods.push(Period {
                round,
                workload: workload.name().into(),
                config: config.name().into(),
                index,
                on,
                ops_per_sec: ops as f64 / measured_secs,
                measured_secs,
                other_cpu_per_sec: other_ticks as f64 / self.clk_tck / measured_secs,
                jvm_rss_kib,
                jvm_hwm_kib,
                agent_window_parts,
                agent_cpu_secs,
                thread_cpu: thread_group_ticks(&threads_before, &threads_after, after.0 - before.0)
                    .into_iter()
                    .map(|(g, t)| (g, t as f64 / self.clk_tck / measured_secs))
                    .collect(),
            });
        }
        if config.records_throughout() {
            self.stop_jcmd_recording(jvm.pid)?;
        }
        jvm.exit()?;
        Ok(periods)
    }

    /// Sleeps until `until`, failing early if the JVM or the agent exits;
    /// dumps a dumped recording when due.
    fn idle_until(
        &self,
        jvm: &mut Jvm,
        mut switch: Option<&mut Switch<'_>>,
        until: Instant,
    ) -> anyhow::Result<()> {
        while Instant::now() < until {
            let mut wake = until;
            if let Some(Switch::Jfr(Some(dumps)) | Switch::DumpsOnly(dumps)) = switch.as_deref() {
                wake = wake.min(dumps.next);
            }
            std::thread::sleep(
                wake.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            );
            jvm.alive()?;
            match switch.as_deref_mut() {
                Some(Switch::Agent(a)) => a.alive()?,
                Some(Switch::Jfr(Some(dumps)) | Switch::DumpsOnly(dumps))
                    if Instant::now() >= dumps.next =>
                {
                    self.dump(jvm.pid, dumps)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// One `JFR.dump` of the anchor recording; the file is deleted unread.
    fn dump(&self, pid: u32, dumps: &mut Dumps) -> anyhow::Result<()> {
        dumps.done += 1;
        dumps.next += dumps.every;
        let file = Removed(format!("{}-{}.jfr", dumps.prefix, dumps.done).into());
        let reply = self.jcmd(
            pid,
            &format!(
                "JFR.dump name={ANCHOR_RECORDING} filename={} begin=-{}s",
                file.0.display(),
                dumps.every.as_secs()
            ),
        )?;
        let size = std::fs::metadata(&file.0).map_or(0, |m| m.len());
        if !reply.contains("Dumped recording") || size == 0 {
            bail!("JFR.dump wrote {size} bytes: {}", reply.trim());
        }
        Ok(())
    }

    /// Starts `config`'s profiler and returns once it profiles.
    fn switch_on<'a>(
        &self,
        config: Config,
        jvm: &mut Jvm,
        recording: &'a std::path::Path,
        tag: &str,
    ) -> anyhow::Result<Switch<'a>> {
        if let Some((asprof, window)) = config.agent() {
            let args = self.agent_args(jvm.pid, asprof, window);
            return Ok(Switch::Agent(Agent::start(self, &args, tag, jvm)?));
        }
        if let Some((_, dump_secs)) = config.jcmd_jfr() {
            if !config.records_throughout() {
                self.start_jcmd_recording(config, jvm.pid)?;
            }
            let dumps = dump_secs.map(|secs| Dumps {
                every: Duration::from_secs(secs),
                next: Instant::now() + Duration::from_secs(secs),
                done: 0,
                prefix: std::env::temp_dir()
                    .join(format!("javelin-overhead-{}-{tag}", std::process::id()))
                    .display()
                    .to_string(),
            });
            return Ok(match dumps {
                Some(dumps) if config.records_throughout() => Switch::DumpsOnly(dumps),
                dumps => Switch::Jfr(dumps),
            });
        }
        let _ = std::fs::remove_file(recording);
        self.asprof(&self.asprof_start_args(recording, jvm.pid))?;
        let status = self.asprof(&["status".into(), jvm.pid.to_string()])?;
        if !status.contains("running") {
            bail!("asprof status after start: {}", status.trim());
        }
        Ok(Switch::Asprof(recording))
    }

    /// Stops the profiler started by [`Bench::switch_on`].
    fn switch_off(&self, switch: Switch<'_>, jvm: &Jvm) -> anyhow::Result<()> {
        match switch {
            Switch::Agent(mut agent) => {
                let metrics = agent.metrics()?;
                let failures =
                    super::metric_sum(&metrics, "javelin_agent_collect_failures_total", "");
                if failures > 0.0 {
                    bail!("the agent failed {failures} collects (see its log)");
                }
                agent.stop()
            }
            Switch::Jfr(_) => self.stop_jcmd_recording(jvm.pid),
            // The recording goes on: the off-period only stops dumping.
            Switch::DumpsOnly(_) => Ok(()),
            Switch::Asprof(recording) => {
                self.asprof(&["stop".into(), jvm.pid.to_string()])?;
                let size = std::fs::metadata(recording).map_or(0, |m| m.len());
                if size == 0 {
                    bail!("the recording {} is missing or empty", recording.display());
                }
                let _ = std::fs::remove_file(recording);
                Ok(())
            }
        }
    }

    /// `JFR.start`s the anchor recording of a `jcmd` configuration.
    fn start_jcmd_recording(&self, config: Config, pid: u32) -> anyhow::Result<()> {
        let Some((settings, dump_secs)) = config.jcmd_jfr() else {
            bail!("`{}` is not started by jcmd", config.name());
        };
        let line = match settings {
            JcmdJfr::Preset(preset) => {
                format!("JFR.start name={ANCHOR_RECORDING} settings={preset}")
            }
            JcmdJfr::AgentEvents => {
                let target = AttachTarget::for_pid(pid, Duration::from_secs(30))
                    .with_context(|| format!("attaching to {pid}"))?;
                // The agent's `maxage`: three windows, at least 60 s (an
                // undumped recording stands for the default window).
                let window = match dump_secs {
                    Some(secs) => secs,
                    None => agent_default("window_secs")?,
                };
                let settings = JfrSettings {
                    max_age: Duration::from_secs((3 * window).max(60)),
                    ..JfrSettings::default()
                };
                JfrRecorder::new(target, ANCHOR_RECORDING.into(), settings)
                    .start_command(CpuSampler::Execution)
            }
        };
        let reply = self.jcmd(pid, &line)?;
        if !reply.contains("Started recording") {
            bail!("JFR.start: {}", reply.trim());
        }
        Ok(())
    }

    /// `JFR.stop`s the anchor recording.
    fn stop_jcmd_recording(&self, pid: u32) -> anyhow::Result<()> {
        let reply = self.jcmd(pid, &format!("JFR.stop name={ANCHOR_RECORDING}"))?;
        if !reply.contains("Stopped recording") {
            bail!("JFR.stop: {}", reply.trim());
        }
        Ok(())
    }

    /// One diagnostic command to the JVM, through the agent's attach client.
    fn jcmd(&self, pid: u32, line: &str) -> anyhow::Result<String> {
        let target = AttachTarget::for_pid(pid, Duration::from_secs(30))
            .with_context(|| format!("attaching to {pid}"))?;
        let reply = target
            .jcmd(line)
            .with_context(|| format!("jcmd {pid} {line}"))?;
        if reply.status != 0 {
            bail!("jcmd {pid} {line}: {}", reply.text.trim());
        }
        Ok(reply.text)
    }
}

/// Warns when an agent configuration's window is longer than half a period:
/// its dumps then fall outside the measured periods, or once in them.
pub(super) fn window_warning(config: Config, period_secs: u64) -> anyhow::Result<Option<String>> {
    let Some((_, window)) = config.agent() else {
        return Ok(None);
    };
    let window = match window {
        Some(w) => w,
        None => agent_default("window_secs")?,
    };
    // The k dumps of a period of k windows fall at its very end, half of them
    // after it: k windows and a half hold k dumps.
    Ok((2 * period_secs < 5 * window).then(|| {
        format!(
            "`{}`: {window}-s windows in {period_secs}-s periods: fewer than two dumps per \
             on-period, so the dump cost is under-represented (use k·{window} + {} s)",
            config.name(),
            window / 2
        )
    }))
}

/// The periods grouped by (workload, configuration), in the order given.
pub(super) fn summarize(
    workloads: &[Workload],
    configs: &[Config],
    periods: &[Period],
) -> Vec<PairedSummary> {
    let mut out = Vec::new();
    for w in workloads {
        for c in configs {
            let cell: Vec<&Period> = periods
                .iter()
                .filter(|p| p.workload == w.name() && p.config == c.name())
                .collect();
            if cell.is_empty() {
                continue;
            }
            let mut rounds: Vec<u64> = cell.iter().map(|p| p.round).collect();
            rounds.sort_unstable();
            rounds.dedup();
            let (mut ratios, mut per_jvm, mut first, mut later) = (vec![], vec![], vec![], vec![]);
            let (mut first_on_rss, mut peak_rss, mut first_on) = (vec![], vec![], vec![]);
            let mut thread_deltas: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for round in &rounds {
                let jvm: Vec<&Period> =
                    cell.iter().copied().filter(|p| p.round == *round).collect();
                let at = |index: usize| jvm.iter().find(|p| p.index == index);
                let mut own = Vec::new();
                for p in &jvm {
                    if !p.on {
                        if p.index == 0 {
                            first.push(p.ops_per_sec);
                        } else {
                            later.push(p.ops_per_sec);
                        }
                    } else if let (Some(a), Some(b)) = (at(p.index - 1), at(p.index + 1)) {
                        own.push(p.ops_per_sec / ((a.ops_per_sec + b.ops_per_sec) / 2.0));
                        let groups: BTreeSet<&String> =
                            [a, p, b].iter().flat_map(|q| q.thread_cpu.keys()).collect();
                        for g in groups {
                            let cpu = |q: &Period| q.thread_cpu.get(g).copied().unwrap_or(0.0);
                            thread_deltas
                                .entry(g.clone())
                                .or_default()
                                .push(cpu(p) - (cpu(a) + cpu(b)) / 2.0);
                        }
                    }
                }
                if !own.is_empty() {
                    per_jvm.push(own.iter().sum::<f64>() / own.len() as f64);
                }
                ratios.extend(own);
                if let (Some(off), Some(on)) = (at(0), at(1)) {
                    first_on.push(on.ops_per_sec / off.ops_per_sec);
                    let mib = |kib: u64| (kib as f64 - off.jvm_rss_kib as f64) / 1024.0;
                    first_on_rss.push(mib(on.jvm_rss_kib));
                    peak_rss.push(mib(jvm.iter().map(|p| p.jvm_hwm_kib).max().unwrap_or(0)));
                }
            }
            let on: Vec<&&Period> = cell.iter().filter(|p| p.on).collect();
            let parts: Vec<f64> = on.iter().filter_map(|p| p.agent_window_parts).collect();
            let agent_cpu: Vec<f64> = on
                .iter()
                .filter_map(|p| Some(p.agent_cpu_secs? / p.measured_secs * 3600.0))
                .collect();
            out.push(PairedSummary {
                workload: w.name(),
                config: c.name(),
                jvms: rounds.len(),
                on_periods: ratios.len(),
                ratio: Spread::of(&ratios),
                ratio_per_jvm: Spread::of(&per_jvm),
                first_on_vs_never_profiled: Spread::of(&first_on),
                first_off_ops_per_sec: Spread::of(&first),
                later_off_ops_per_sec: Spread::of(&later),
                first_on_extra_rss_mib: Spread::of(&first_on_rss),
                peak_extra_rss_mib: Spread::of(&peak_rss),
                agent_window_parts: Spread::of(&parts),
                agent_cpu_secs_per_jvm_hour: Spread::of(&agent_cpu),
                other_cpu_per_sec: Spread::of(
                    &cell.iter().map(|p| p.other_cpu_per_sec).collect::<Vec<_>>(),
                ),
                thread_cpu_on_minus_off: thread_cpu_shown(thread_deltas),
            });
        }
    }
    out
}

/// The periods of the report resumed, checked against this run's flags:
/// only whole JVMs of this plan with this many pairs.
fn resumed_periods(
    old: &serde_json::Value,
    header: &super::Header,
    (pairs, period_secs, settle_secs): (usize, u64, u64),
    plan: &[(u64, Workload, Config)],
) -> anyhow::Result<Vec<Period>> {
    if old["pairs"].as_u64() != Some(pairs as u64) {
        bail!(
            "the report resumed has --paired {}, not {pairs}",
            old["pairs"]
        );
    }
    // Periods measured under other settings would be summarized as this run's.
    let now = serde_json::to_value(header)?;
    for field in [
        "threads",
        "warmup_secs",
        "seed",
        "jvm_options",
        "agent_binary",
    ] {
        if old[field] != now[field] {
            bail!(
                "the report resumed has {field} = {}, this run {}: resume with the same flags",
                old[field],
                now[field]
            );
        }
    }
    for (field, value) in [("period_secs", period_secs), ("settle_secs", settle_secs)] {
        if old[field].as_u64() != Some(value) {
            bail!(
                "the report resumed has {field} = {}, this run {value}: resume with the same flags",
                old[field]
            );
        }
    }
    let periods: Vec<Period> = serde_json::from_value(old["periods"].clone())
        .context("the periods of the report resumed")?;
    for p in &periods {
        let planned = plan
            .iter()
            .any(|(r, w, c)| *r == p.round && w.name() == p.workload && c.name() == p.config);
        if !planned {
            bail!(
                "round {} {} {} of the report resumed is not in this plan: different flags?",
                p.round + 1,
                p.workload,
                p.config
            );
        }
    }
    eprintln!("resuming: {} periods kept", periods.len());
    Ok(periods)
}

/// The mean difference per thread group, the ones worth showing, most added first.
fn thread_cpu_shown(deltas: BTreeMap<String, Vec<f64>>) -> Vec<(String, f64)> {
    let mut shown: Vec<(String, f64)> = deltas
        .into_iter()
        .map(|(g, d)| {
            let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
            (g, mean)
        })
        .filter(|(_, mean)| mean.abs() >= THREAD_CPU_SHOWN)
        .collect();
    shown.sort_by(|a, b| b.1.total_cmp(&a.1));
    shown
}

/// CPU ticks of each thread of a process, by tid, with its group (the name
/// without trailing digits). Threads that exit between the listing and the
/// read are skipped.
fn thread_ticks(pid: u32) -> anyhow::Result<BTreeMap<u32, (String, u64)>> {
    let mut threads = BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (name) state …`: the name may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit());
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // utime and stime: fields 14 and 15, the state (field 3) first here.
        let ticks = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (ticks(14), ticks(15)) {
            threads.insert(tid, (name.to_string(), u + s));
        }
    }
    Ok(threads)
}

/// The group reporting CPU of threads that exited inside a period.
const EXITED_THREADS: &str = "(exited threads)";

/// Ticks per thread group between two readings: each thread's own change (a
/// thread new since `before` counts in full), and what the process spent
/// beyond its live threads (`process_ticks`: threads that exited, e.g. the
/// compiler threads the JDK retires when idle) as [`EXITED_THREADS`].
fn thread_group_ticks(
    before: &BTreeMap<u32, (String, u64)>,
    after: &BTreeMap<u32, (String, u64)>,
    process_ticks: u64,
) -> BTreeMap<String, u64> {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let was = before.get(tid).map_or(0, |(_, t)| *t);
        *groups.entry(name.clone()).or_default() += ticks.saturating_sub(was);
    }
    let live: u64 = groups.values().sum();
    // Readings of one thread are not atomic with the process's: a tick or two
    // of difference is not an exited thread.
    let exited = process_ticks.saturating_sub(live);
    if exited > 2 {
        groups.insert(EXITED_THREADS.to_string(), exited);
    }
    groups
}

/// The summaries as a markdown table.
pub(super) fn markdown(summaries: &[PairedSummary]) -> String {
    let pct = |r: f64| format!("{:+.1} %", (r - 1.0) * 100.0);
    let mut out = String::from(
        "| workload | config | JVMs | on-periods | on vs neighbouring off, per period: median [IQR] (min … max) | per JVM (mean of its periods): min … max | first on vs never-profiled, per JVM: median (min … max) | off ops/s: first / later, median | JVM RSS vs first off, MiB: end of first on / peak | agent window parts per on-period | agent CPU s per JVM-hour | other load, cores: median (max) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let med = |s: Option<Spread>, f: &dyn Fn(f64) -> String| s.map_or("—".into(), |s| f(s.median));
    for s in summaries {
        let ratio = s.ratio.map_or("—".into(), |r| {
            format!(
                "{} [{}, {}] ({} … {})",
                pct(r.median),
                pct(r.q1),
                pct(r.q3),
                pct(r.min),
                pct(r.max)
            )
        });
        let per_jvm = s
            .ratio_per_jvm
            .map_or("—".into(), |r| format!("{} … {}", pct(r.min), pct(r.max)));
        let first_on = s.first_on_vs_never_profiled.map_or("—".into(), |r| {
            format!("{} ({} … {})", pct(r.median), pct(r.min), pct(r.max))
        });
        let offs = match (s.first_off_ops_per_sec, s.later_off_ops_per_sec) {
            (Some(f), Some(l)) => format!("{:.0} / {:.0}", f.median, l.median),
            _ => "—".into(),
        };
        let rss = format!(
            "{} / {}",
            med(s.first_on_extra_rss_mib, &|v| format!("{v:+.1}")),
            med(s.peak_extra_rss_mib, &|v| format!("{v:+.1}"))
        );
        let parts = med(s.agent_window_parts, &|v| format!("{v:.0}"));
        let cpu = med(s.agent_cpu_secs_per_jvm_hour, &|v| format!("{v:.1}"));
        let other = s
            .other_cpu_per_sec
            .map_or("—".into(), |o| format!("{:.2} ({:.2})", o.median, o.max));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {ratio} | {per_jvm} | {first_on} | {offs} | {rss} | {parts} | {cpu} | {other} |\n",
            s.workload, s.config, s.jvms, s.on_periods,
        ));
    }
    out.push_str(
        "\nJVM thread groups, CPU on minus neighbouring off (cores, mean over on-periods):\n\n",
    );
    for s in summaries {
        let groups: Vec<String> = s
            .thread_cpu_on_minus_off
            .iter()
            .map(|(g, d)| format!("`{g}` {d:+.3}"))
            .collect();
        out.push_str(&format!(
            "- {} {}: {}\n",
            s.workload,
            s.config,
            if groups.is_empty() {
                "—".into()
            } else {
                groups.join(", ")
            }
        ));
    }
    out
}

#[derive(Debug, Serialize)]
struct PairedReport {
    #[serde(flatten)]
    header: super::Header,
    pairs: usize,
    period_secs: u64,
    settle_secs: u64,
    warnings: Vec<String>,
    /// JVMs that failed (the run goes on; see [`FAILURES_IN_A_ROW`]).
    failures: Vec<String>,
    summaries: Vec<PairedSummary>,
    periods: Vec<Period>,
}

/// Failed JVMs in a row that end the run: something systemic (no broker, a
/// broken build), not one JVM's bad luck.
const FAILURES_IN_A_ROW: usize = 3;

/// The paired benchmark: every round, one JVM per (workload, configuration)
/// in a seeded order; prints the markdown and writes the JSON report. One
/// failed JVM is reported and the run goes on; `--resume` runs the JVMs a
/// report has no periods of (the failed ones again).
pub(super) fn run(bench: &Bench) -> anyhow::Result<()> {
    let args = &bench.args;
    let (workloads, mut configs) = super::cells(args);
    configs.retain(|c| *c != Config::None);
    if configs.is_empty() {
        bail!("--paired needs a profiler configuration (the off-periods are `none`)");
    }
    let pairs = args.paired as usize;
    let plan: Vec<(u64, Workload, Config)> = super::plan(args)
        .into_iter()
        .filter(|(_, _, c)| *c != Config::None)
        .collect();
    let resumed = args
        .resume
        .as_deref()
        .map(super::read_resumed)
        .transpose()?;
    let mut report = PairedReport {
        header: super::Header::new(bench, resumed.as_ref())?,
        pairs,
        period_secs: args.period_secs,
        settle_secs: args.settle_secs,
        warnings: configs
            .iter()
            .map(|c| window_warning(*c, args.period_secs))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect(),
        failures: Vec::new(),
        summaries: Vec::new(),
        periods: Vec::new(),
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let path = match (&args.resume, &resumed) {
        (Some(previous), Some(old)) => {
            report.periods = resumed_periods(
                old,
                &report.header,
                (pairs, args.period_secs, args.settle_secs),
                &plan,
            )?;
            previous.clone()
        }
        _ => {
            let dir = args
                .report_dir
                .clone()
                .unwrap_or_else(javelin_loadtest::scenario::default_report_dir);
            std::fs::create_dir_all(&dir)?;
            dir.join(format!(
                "bench-overhead-paired-{}.json",
                javelin_loadtest::now_ms()
            ))
        }
    };
    let done = |report: &PairedReport, (round, workload, config): (u64, Workload, Config)| {
        report
            .periods
            .iter()
            .any(|p| p.round == round && p.workload == workload.name() && p.config == config.name())
    };
    let todo = plan.iter().filter(|p| !done(&report, **p)).count();
    eprintln!(
        "bench-overhead --paired {pairs}: {todo} of {} JVMs to run, ~{} s each; report (rewritten after every JVM): {}",
        plan.len(),
        args.warmup_secs
            + (2 * args.paired + 1) * (args.period_secs + args.settle_secs)
            + 5 * args.paired,
        path.display()
    );
    let mut in_a_row = 0;
    for (order, &(round, workload, config)) in plan.iter().enumerate() {
        if done(&report, (round, workload, config)) {
            continue;
        }
        let label = format!("round {} {} {}", round + 1, workload.name(), config.name());
        bench.wait_for_idle();
        match bench.run_paired(order, round, workload, config, pairs) {
            Ok(periods) => {
                let show: Vec<String> = periods
                    .iter()
                    .map(|p| format!("{}{:.0}", if p.on { "on " } else { "off " }, p.ops_per_sec))
                    .collect();
                eprintln!(
                    "[{}/{}] {label}: {}",
                    order + 1,
                    plan.len(),
                    show.join(", ")
                );
                report.periods.extend(periods);
                in_a_row = 0;
            }
            Err(e) => {
                eprintln!("[{}/{}] {label}: FAILED: {e:#}", order + 1, plan.len());
                report.failures.push(format!("{label}: {e:#}"));
                in_a_row += 1;
            }
        }
        report.header.loadavg_end = super::loadavg();
        report.summaries = summarize(&workloads, &configs, &report.periods);
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        if in_a_row == FAILURES_IN_A_ROW {
            eprintln!("{FAILURES_IN_A_ROW} JVMs in a row failed: stopping (see --resume)");
            break;
        }
    }
    let h = &report.header;
    println!("## bench-overhead --paired, {}\n", h.started);
    println!("- command: `{}`", h.command);
    println!(
        "- load average at start: {}; at end: {}",
        h.loadavg_start, h.loadavg_end
    );
    println!(
        "- {}; JVM options `{}`; {} worker threads; warm-up {} s; {} on-periods of {} s per JVM between off-periods",
        h.java,
        h.jvm_options.join(" "),
        h.threads,
        h.warmup_secs,
        pairs,
        report.period_secs
    );
    println!("- agent: `{}`", h.agent_binary);
    println!(
        "- asprof anchor: `{}`; JDK presets by `jcmd JFR.start settings=…`",
        h.asprof_anchor
    );
    for w in &report.warnings {
        println!("- warning: {w}");
    }
    println!();
    print!("{}", markdown(&report.summaries));
    println!("report: {}", path.display());
    if !report.failures.is_empty() {
        bail!(
            "{} JVMs failed (rerun them with --resume {}):\n{}",
            report.failures.len(),
            path.display(),
            report.failures.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(round: u64, index: usize, ops_per_sec: f64, rss_mib: u64) -> Period {
        Period {
            round,
            workload: "mixed".into(),
            config: "asprof".into(),
            index,
            on: index % 2 == 1,
            ops_per_sec,
            measured_secs: 30.0,
            other_cpu_per_sec: 0.0,
            jvm_rss_kib: rss_mib * 1024,
            jvm_hwm_kib: (rss_mib + 5) * 1024,
            agent_window_parts: None,
            agent_cpu_secs: None,
            // The compiler works harder in on-periods (0.1 more than off ones).
            thread_cpu: BTreeMap::from([
                (
                    "C2 CompilerThread".to_string(),
                    0.05 + 0.1 * (index % 2) as f64,
                ),
                ("GC Thread#".to_string(), 0.02),
            ]),
        }
    }

    #[test]
    fn each_on_period_is_compared_with_the_off_periods_either_side() {
        // Two JVMs; the first drifts upwards (100 → 120), the second is slower
        // as a whole: only the neighbours of each on-period count.
        let periods = vec![
            period(0, 0, 100.0, 300),
            period(0, 1, 99.0, 310),
            period(0, 2, 110.0, 305),
            period(0, 3, 114.0, 312),
            period(0, 4, 120.0, 306),
            period(1, 0, 50.0, 280),
            period(1, 1, 45.0, 290),
            period(1, 2, 50.0, 282),
            period(1, 3, 50.0, 283),
        ];
        let s = summarize(&[Workload::Mixed], &[Config::Asprof], &periods);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!((s.jvms, s.on_periods), (2, 3), "{s:?}");
        let r = s.ratio.expect("ratios");
        // 99/105, 114/115, 45/50; the last on-period of JVM 2 has no off after it.
        let mut expected = [99.0 / 105.0, 114.0 / 115.0, 0.9];
        expected.sort_by(f64::total_cmp);
        assert!((r.min - expected[0]).abs() < 1e-9, "{r:?}");
        assert!((r.median - expected[1]).abs() < 1e-9, "{r:?}");
        assert!((r.max - expected[2]).abs() < 1e-9, "{r:?}");
        // Per JVM: the first's two periods averaged, the second's one.
        let per_jvm = s.ratio_per_jvm.expect("per JVM");
        assert!((per_jvm.min - 0.9).abs() < 1e-9, "{per_jvm:?}");
        assert!((per_jvm.max - (99.0 / 105.0 + 114.0 / 115.0) / 2.0).abs() < 1e-9);
        let first = s.first_off_ops_per_sec.expect("first");
        assert_eq!((first.min, first.max), (50.0, 100.0));
        // Memory against the never-profiled first off-period only: the first
        // on-period's end (310 − 300, 290 − 280) and the peak (317 − 300, 295 − 280).
        let end = s.first_on_extra_rss_mib.expect("rss");
        assert_eq!((end.min, end.max), (10.0, 10.0));
        let peak = s.peak_extra_rss_mib.expect("peak");
        assert_eq!((peak.min, peak.max), (15.0, 17.0));
        // First on-period vs never-profiled, per JVM: 99/100 and 45/50.
        let first_on = s.first_on_vs_never_profiled.expect("first on");
        assert!((first_on.min - 0.9).abs() < 1e-9 && (first_on.max - 0.99).abs() < 1e-9);
        // Only the thread group whose CPU changed is shown.
        assert_eq!(s.thread_cpu_on_minus_off.len(), 1, "{s:?}");
        let (group, delta) = &s.thread_cpu_on_minus_off[0];
        assert_eq!(group, "C2 CompilerThread");
        assert!((delta - 0.1).abs() < 1e-9, "{delta}");
    }

    #[test]
    fn thread_cpu_is_taken_per_thread_and_exited_threads_are_kept() {
        let t = |v: &[(u32, &str, u64)]| -> BTreeMap<u32, (String, u64)> {
            v.iter()
                .map(|(tid, n, k)| (*tid, (n.to_string(), *k)))
                .collect()
        };
        // Two compiler threads, one exits inside the period (its 40 ticks
        // before are not subtracted from the other), one new thread appears.
        let before = t(&[
            (1, "worker-", 1000),
            (2, "C2 CompilerThre", 40),
            (3, "C2 CompilerThre", 5),
        ]);
        let after = t(&[
            (1, "worker-", 1200),
            (3, "C2 CompilerThre", 15),
            (4, "C2 CompilerThre", 7),
        ]);
        // The process spent 200 + 10 + 7 in live threads and 30 in the exited one.
        let groups = thread_group_ticks(&before, &after, 247);
        assert_eq!(groups["worker-"], 200);
        assert_eq!(groups["C2 CompilerThre"], 17);
        assert_eq!(groups[EXITED_THREADS], 30);
        // Within two ticks: no exited-threads group.
        let groups = thread_group_ticks(&before, &after, 218);
        assert!(!groups.contains_key(EXITED_THREADS), "{groups:?}");
    }

    #[test]
    fn an_agent_window_longer_than_half_a_period_is_flagged() {
        assert!(
            window_warning(Config::AgentJfr10s, 30)
                .expect("known")
                .is_none()
        );
        let long = window_warning(Config::AgentJfr, 30).expect("known");
        assert!(long.is_some_and(|w| w.contains("60-s windows")));
        assert!(window_warning(Config::Asprof, 5).expect("known").is_none());
    }
}
