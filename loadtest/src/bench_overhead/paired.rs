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
//! `--alternate` puts every configuration's on-periods in one JVM (`off, A,
//! off, B, off, A, …`, the first configuration rotating by round), so two
//! configurations are compared within the same JIT outcome: the "within one
//! JVM" table is, per JVM, the mean on-vs-neighbours ratio of each
//! configuration minus the first one's, with an exact sign test over JVMs,
//! and the same difference with the order taken out (whichever went first
//! looked cheaper: see [`Balanced`]).
//! `--prime-jfr` starts and stops an empty JFR recording before the warm-up,
//! so JFR's one-time start-up (it deoptimizes every compiled method) falls in
//! no period and every on-period is "JFR recording", not "JFR starting".
//!
//! A JVM that fails is reported and the run goes on (three in a row end it);
//! `--resume <report>` runs the JVMs the report has no periods of, and
//! `--summarize <report>` prints a finished report's tables again.

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

/// The name of `--prime-jfr`'s empty recording.
const PRIME_RECORDING: &str = "javelinpairedprime";

/// One measured period.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(super) struct Period {
    pub round: u64,
    pub workload: String,
    /// The on-period's configuration (an off-period: its JVM's).
    pub config: String,
    /// The JVM's configurations joined by `+` with `--alternate`; empty
    /// otherwise (the JVM is `config`'s alone).
    #[serde(default)]
    pub jvm: String,
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

/// The configurations one JVM switches on: every on-period's in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OnPeriods {
    /// On-period `k` (the `k`-th, from 0) runs `configs[k % len]`.
    pub configs: Vec<Config>,
    /// On-periods in all.
    pub count: usize,
}

impl OnPeriods {
    /// One configuration, `pairs` times.
    fn single(config: Config, pairs: usize) -> OnPeriods {
        OnPeriods {
            configs: vec![config],
            count: pairs,
        }
    }

    /// `--alternate`: every configuration `pairs` times, in turn, starting
    /// with the one `round` picks. The rotation shares out the first
    /// on-period (the one beside the never-profiled period) over rounds; it
    /// keeps the cyclic order, so with three configurations or more each
    /// always follows the same one (with two, each follows the other).
    fn alternating(configs: &[Config], pairs: usize, round: u64) -> OnPeriods {
        let start = (round % configs.len().max(1) as u64) as usize;
        let mut rotated = configs.to_vec();
        rotated.rotate_left(start);
        OnPeriods {
            count: pairs * rotated.len(),
            configs: rotated,
        }
    }

    /// The configuration of period `index` (on-periods are the odd ones).
    fn at(&self, index: usize) -> Config {
        self.configs[(index / 2) % self.configs.len()]
    }

    /// The JVM's key in its periods: empty for one configuration.
    fn jvm_key(&self) -> String {
        if self.configs.len() == 1 {
            return String::new();
        }
        let mut names: Vec<&str> = self.configs.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.join("+")
    }

    /// Period `index`'s `config` field: the configuration of an on-period or
    /// of a one-configuration JVM; an alternating JVM's off-periods carry
    /// its key.
    fn label(&self, index: usize) -> String {
        if index % 2 == 1 || self.configs.len() == 1 {
            self.at(index).name().into()
        } else {
            self.jvm_key()
        }
    }
}

/// The JVM a period belongs to, with its round and workload.
fn jvm_of(p: &Period) -> &str {
    if p.jvm.is_empty() { &p.config } else { &p.jvm }
}

/// Every period of one JVM: `workload`'s in `round`, keyed by [`jvm_of`].
fn periods_of_jvm<'a>(
    periods: &'a [Period],
    workload: &str,
    round: u64,
    key: &str,
) -> Vec<&'a Period> {
    periods
        .iter()
        .filter(|p| p.workload == workload && p.round == round && jvm_of(p) == key)
        .collect()
}

impl Bench {
    /// The periods of one JVM running `workload`, the configurations of `ons`
    /// switched on in its on-periods between off-periods.
    pub(super) fn run_paired(
        &self,
        order: usize,
        round: u64,
        workload: Workload,
        ons: &OnPeriods,
    ) -> anyhow::Result<Vec<Period>> {
        if ons.configs.contains(&Config::None) || ons.configs.is_empty() {
            bail!("`none` has no on-periods: the off-periods are the baseline");
        }
        let jvm_key = ons.jvm_key();
        // Only a JVM of one configuration records through its off-periods.
        let throughout = ons.configs.len() == 1 && ons.configs[0].records_throughout();
        let name = if jvm_key.is_empty() {
            ons.configs[0].name().to_string()
        } else {
            jvm_key.replace('+', "-")
        };
        let tag = format!("{order:03}-paired-{}-{name}", workload.name());
        // An `asprof` recording, removed however the JVM's run ends.
        let removed = Removed(
            std::env::temp_dir().join(format!("javelin-overhead-{}-{tag}.jfr", std::process::id())),
        );
        let recording = removed.0.as_path();
        let mut jvm = Jvm::start(self, workload, &self.jvm_options, &tag)?;
        if self.args.prime_jfr {
            self.prime_jfr(jvm.pid)?;
        }
        // After priming: the recompilation it causes is part of the warm-up.
        let warm = Instant::now() + Duration::from_secs(self.args.warmup_secs);
        self.idle_until(&mut jvm, None, warm)?;
        if throughout {
            // Started a settle before the first period, as an on-switch is.
            self.start_jcmd_recording(ons.configs[0], jvm.pid)?;
        }
        let period = Duration::from_secs(self.args.period_secs);
        let settle = Duration::from_secs(self.args.settle_secs);
        let mut periods = Vec::with_capacity(2 * ons.count + 1);
        for index in 0..=2 * ons.count {
            let on = index % 2 == 1;
            let config = ons.at(index);
            let mut switch = None;
            if on {
                let tag = format!("{tag}-p{index}");
                switch = Some(self.switch_on(config, &mut jvm, recording, &tag)?);
            }
            self.idle_until(&mut jvm, switch.as_mut(), Instant::now() + settle)?;
            if on || throughout {
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
                config: ons.label(index),
                jvm: jvm_key.clone(),
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
        if throughout {
            self.stop_jcmd_recording(jvm.pid)?;
        }
        jvm.exit()?;
        Ok(periods)
    }

    /// `--prime-jfr`: an empty recording started and stopped, which
    /// initializes JFR in the JVM (see the flag).
    fn prime_jfr(&self, pid: u32) -> anyhow::Result<()> {
        let reply = self.jcmd(
            pid,
            &format!("JFR.start name={PRIME_RECORDING} settings=none"),
        )?;
        if !reply.contains("Started recording") {
            bail!("priming JFR: JFR.start: {}", reply.trim());
        }
        let reply = self.jcmd(pid, &format!("JFR.stop name={PRIME_RECORDING}"))?;
        if !reply.contains("Stopped recording") {
            bail!("priming JFR: JFR.stop: {}", reply.trim());
        }
        Ok(())
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
                .filter(|p| p.workload == w.name() && p.on && p.config == c.name())
                .collect();
            if cell.is_empty() {
                continue;
            }
            // The JVMs with on-periods of `c`: (round, JVM key).
            let mut jvms: Vec<(u64, &str)> = cell.iter().map(|p| (p.round, jvm_of(p))).collect();
            jvms.sort_unstable();
            jvms.dedup();
            let (mut ratios, mut per_jvm, mut first, mut later) = (vec![], vec![], vec![], vec![]);
            let (mut first_on_rss, mut peak_rss, mut first_on) = (vec![], vec![], vec![]);
            let mut thread_deltas: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for (round, key) in &jvms {
                let jvm = periods_of_jvm(periods, w.name(), *round, key);
                let at = |index: usize| jvm.iter().find(|p| p.index == index);
                let mut own = Vec::new();
                for p in &jvm {
                    if !p.on {
                        if p.index == 0 {
                            first.push(p.ops_per_sec);
                        } else {
                            later.push(p.ops_per_sec);
                        }
                    } else if p.config != c.name() {
                        // Another configuration's on-period of an alternating JVM.
                    } else if let (Some(ratio), Some(a), Some(b)) =
                        (neighbour_ratio(&jvm, p), at(p.index - 1), at(p.index + 1))
                    {
                        own.push(ratio);
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
                // Against the never-profiled period: the JVMs whose first
                // on-period is `c`'s.
                if let (Some(off), Some(on)) = (at(0), at(1).filter(|p| p.config == c.name())) {
                    first_on.push(on.ops_per_sec / off.ops_per_sec);
                    let mib = |kib: u64| (kib as f64 - off.jvm_rss_kib as f64) / 1024.0;
                    first_on_rss.push(mib(on.jvm_rss_kib));
                    // The peak is the JVM's lifetime one: an alternating
                    // JVM's holds the other configurations' periods too.
                    if off.jvm.is_empty() {
                        peak_rss.push(mib(jvm.iter().map(|p| p.jvm_hwm_kib).max().unwrap_or(0)));
                    }
                }
            }
            let on = &cell;
            let parts: Vec<f64> = on.iter().filter_map(|p| p.agent_window_parts).collect();
            let agent_cpu: Vec<f64> = on
                .iter()
                .filter_map(|p| Some(p.agent_cpu_secs? / p.measured_secs * 3600.0))
                .collect();
            out.push(PairedSummary {
                workload: w.name(),
                config: c.name(),
                jvms: jvms.len(),
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
                    &periods
                        .iter()
                        .filter(|p| p.workload == w.name() && jvms.contains(&(p.round, jvm_of(p))))
                        .filter(|p| !p.on || p.config == c.name())
                        .map(|p| p.other_cpu_per_sec)
                        .collect::<Vec<_>>(),
                ),
                thread_cpu_on_minus_off: thread_cpu_shown(thread_deltas),
            });
        }
    }
    out
}

/// `--alternate`: one configuration against another within the same JVMs.
#[derive(Debug, Clone, Serialize)]
pub(super) struct WithinJvm {
    pub workload: &'static str,
    pub config: &'static str,
    /// The first configuration of `--configs`.
    pub against: &'static str,
    pub jvms: usize,
    /// Per JVM: the mean of `config`'s on-period ratios (each to its
    /// neighbouring off-periods) minus the mean of `against`'s, in
    /// percentage points; negative: `config` costs more.
    pub difference_pp: Option<Spread>,
    /// JVMs in which `config` cost more than `against`.
    pub dearer_in: usize,
    /// Two-sided sign test of `dearer_in` of `jvms` (no JVM ties).
    pub sign_test_p: f64,
    /// The difference with the order of the two taken out: see [`Balanced`].
    pub balanced: Option<Balanced>,
}

/// The per-JVM difference corrected for which of the two configurations ran
/// first in the JVM. A position in the JVM can look cheaper than the other
/// whatever runs in it (seen: the first, by 1.3 pp, cause unknown); the
/// rounds rotate the order, and the mean of the two orders' mean
/// differences cancels that, also when the orders hold unequal counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Balanced {
    /// `config` minus `against`, pp (negative: `config` costs more): the mean
    /// of the mean difference where `config` went first and where it went second.
    pub difference_pp: f64,
    /// Half-width of its 95 % confidence interval (Welch: each order's own
    /// spread, Student's t at the Welch–Satterthwaite degrees of freedom).
    pub ci95_pp: f64,
    /// How much cheaper the configuration that goes first looks, pp.
    pub first_cheaper_pp: f64,
}

impl Balanced {
    /// From (difference, whether `config` went first) per JVM; `None` unless
    /// each order holds at least two JVMs (a spread within each to go on).
    fn of(jvms: &[(f64, bool)]) -> Option<Balanced> {
        let group = |first: bool| -> Vec<f64> {
            jvms.iter()
                .filter(|(_, f)| *f == first)
                .map(|(d, _)| *d)
                .collect()
        };
        let (a, b) = (group(true), group(false));
        if a.len() < 2 || b.len() < 2 {
            return None;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ma, mb) = (mean(&a), mean(&b));
        // Each order's squared standard error of its mean: the orders'
        // spreads differ, so they are not pooled (Welch).
        let se2 = |v: &[f64], m: f64| {
            let n = v.len() as f64;
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n
        };
        let (ua, ub) = (se2(&a, ma), se2(&b, mb));
        let se = 0.5 * (ua + ub).sqrt();
        // Welch–Satterthwaite degrees of freedom, rounded down (a wider interval).
        let df = if ua + ub > 0.0 {
            let d = (ua + ub).powi(2)
                / (ua.powi(2) / (a.len() - 1) as f64 + ub.powi(2) / (b.len() - 1) as f64);
            (d.floor() as usize).max(1)
        } else {
            a.len() + b.len() - 2
        };
        Some(Balanced {
            difference_pp: (ma + mb) / 2.0,
            ci95_pp: t_975(df) * se,
            first_cheaper_pp: (ma - mb) / 2.0,
        })
    }
}

/// Student's t, two-sided 95 %, for `df` degrees of freedom (past 30, that of
/// the lowest df of its bracket: never narrower than the true interval).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.040,
        61..=120 => 2.000,
        _ => 1.980,
    }
}

/// An on-period's ops/s ÷ the mean of the off-periods either side, in `jvm`
/// (the periods of one JVM).
fn neighbour_ratio(jvm: &[&Period], p: &Period) -> Option<f64> {
    let at = |index: usize| jvm.iter().find(|q| q.index == index);
    let (a, b) = (at(p.index.checked_sub(1)?)?, at(p.index + 1)?);
    Some(p.ops_per_sec / ((a.ops_per_sec + b.ops_per_sec) / 2.0))
}

/// `--alternate`'s comparison: every configuration after the first against
/// the first, per JVM that ran both.
pub(super) fn within_jvm(
    workloads: &[Workload],
    configs: &[Config],
    periods: &[Period],
) -> Vec<WithinJvm> {
    let Some((against, rest)) = configs.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for w in workloads {
        let mut jvms: Vec<(u64, &str)> = periods
            .iter()
            .filter(|p| p.workload == w.name() && !p.jvm.is_empty())
            .map(|p| (p.round, p.jvm.as_str()))
            .collect();
        jvms.sort_unstable();
        jvms.dedup();
        for c in rest {
            // Per JVM: (difference, whether `c` went first).
            let mut ordered = Vec::new();
            for (round, key) in &jvms {
                let jvm = periods_of_jvm(periods, w.name(), *round, key);
                let mean_of = |config: Config| -> Option<f64> {
                    let r: Vec<f64> = jvm
                        .iter()
                        .filter(|p| p.on && p.config == config.name())
                        .filter_map(|p| neighbour_ratio(&jvm, p))
                        .collect();
                    (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
                };
                // Which of the two had the earlier on-period in this JVM.
                let first_on = |config: Config| {
                    jvm.iter()
                        .filter(|p| p.on && p.config == config.name())
                        .map(|p| p.index)
                        .min()
                };
                if let (Some(x), Some(base)) = (mean_of(*c), mean_of(*against)) {
                    ordered.push(((x - base) * 100.0, first_on(*c) < first_on(*against)));
                }
            }
            if ordered.is_empty() {
                continue;
            }
            let differences: Vec<f64> = ordered.iter().map(|(d, _)| *d).collect();
            let dearer_in = differences.iter().filter(|d| **d < 0.0).count();
            let cheaper_in = differences.iter().filter(|d| **d > 0.0).count();
            out.push(WithinJvm {
                workload: w.name(),
                config: c.name(),
                against: against.name(),
                jvms: differences.len(),
                difference_pp: Spread::of(&differences),
                dearer_in,
                sign_test_p: sign_test(dearer_in, cheaper_in),
                // "First" is only one position against another with two
                // configurations; with more, the slots between them vary.
                balanced: (configs.len() == 2)
                    .then(|| Balanced::of(&ordered))
                    .flatten(),
            });
        }
    }
    out
}

/// `--configs` in the order given, without `none` and repeats: the first is
/// what `--alternate` compares the others against (`cells` sorts them).
fn as_given(configs: &[Config]) -> Vec<Config> {
    let mut out: Vec<Config> = Vec::new();
    for c in configs {
        if *c != Config::None && !out.contains(c) {
            out.push(*c);
        }
    }
    out
}

/// Two-sided sign test: the chance of a split at least as uneven as `a` to
/// `b` when either side is equally likely.
fn sign_test(a: usize, b: usize) -> f64 {
    let n = a + b;
    if n == 0 {
        return 1.0;
    }
    let k = a.max(b);
    // P(X ≥ k) for X ~ Binomial(n, ½), doubled.
    let mut tail = 0.0;
    let mut choose = 1.0; // C(n, 0)
    for i in 0..=n {
        if i >= k {
            tail += choose;
        }
        choose = choose * (n - i) as f64 / (i + 1) as f64;
    }
    (2.0 * tail / 2f64.powi(n as i32)).min(1.0)
}

/// The periods of the report resumed, checked against this run's flags:
/// only whole JVMs of this plan with this many pairs.
fn resumed_periods(
    old: &serde_json::Value,
    header: &super::Header,
    (pairs, period_secs, settle_secs, prime_jfr): (usize, u64, u64, bool),
    plan: &[(u64, Workload, Config)],
) -> anyhow::Result<Vec<Period>> {
    // Reports from before `--prime-jfr` have no field: not primed.
    if old["prime_jfr"].as_bool().unwrap_or(false) != prime_jfr {
        bail!("the report resumed differs in --prime-jfr: resume with the same flags");
    }
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

/// The `--alternate` table.
pub(super) fn within_jvm_markdown(rows: &[WithinJvm]) -> String {
    let mut out = String::from(
        "Within the same JVMs (`--alternate`), per JVM: the mean on-period ratio of `config` minus that of `against`:\n\n\
         | workload | config | against | JVMs | difference, pp: median (min … max) | JVMs where dearer | sign test p | order-balanced difference, pp [95 % CI] | the first in a JVM looks cheaper by, pp |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let d = r.difference_pp.map_or("—".into(), |d| {
            format!("{:+.1} ({:+.1} … {:+.1})", d.median, d.min, d.max)
        });
        let (balanced, order) = r.balanced.map_or(("—".into(), "—".into()), |b| {
            (
                format!(
                    "{:+.1} [{:+.1}, {:+.1}]",
                    b.difference_pp,
                    b.difference_pp - b.ci95_pp,
                    b.difference_pp + b.ci95_pp
                ),
                format!("{:+.1}", b.first_cheaper_pp),
            )
        });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {d} | {} of {} | {:.2} | {balanced} | {order} |\n",
            r.workload, r.config, r.against, r.jvms, r.dearer_in, r.jvms, r.sign_test_p
        ));
    }
    out.push_str(
        "\nOrder-balanced: the mean of the mean difference in the JVMs where `config` went first and in those where it went second (rounds rotate the order), which cancels a position effect (in these runs, whichever went first looked cheaper); its 95 % interval takes each order's own spread (Welch). `—`: fewer than two JVMs in either order, or more than two configurations alternating.\n",
    );
    out
}

/// `--alternate` switches every configuration in one JVM: only JFR ones
/// (async-profiler stays loaded after its stop, and the next JFR period
/// would run beside it), not one that records through its off-periods, and
/// not resumed (a report's JVMs are found by one configuration).
fn check_alternating(configs: &[Config], resume: bool) -> anyhow::Result<()> {
    if configs.len() < 2 {
        bail!("--alternate needs two configurations or more (--configs a,b)");
    }
    for c in configs {
        let jfr = c.agent().is_some_and(|(asprof, _)| !asprof)
            || (c.jcmd_jfr().is_some() && !c.records_throughout());
        if !jfr {
            bail!(
                "--alternate runs JFR configurations only, switched on and off in one JVM: `{}` is not one",
                c.name()
            );
        }
    }
    if resume {
        bail!("--resume does not apply to --alternate runs");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct PairedReport {
    #[serde(flatten)]
    header: super::Header,
    pairs: usize,
    period_secs: u64,
    settle_secs: u64,
    alternate: bool,
    prime_jfr: bool,
    warnings: Vec<String>,
    /// JVMs that failed (the run goes on; see [`FAILURES_IN_A_ROW`]).
    failures: Vec<String>,
    summaries: Vec<PairedSummary>,
    /// `--alternate`: the configurations against the first, within JVMs.
    within_jvm: Vec<WithinJvm>,
    periods: Vec<Period>,
}

/// `--summarize`: the tables of a report already written, from its periods
/// (the `--workloads` and `--configs` given are the tables' rows, the first
/// configuration given the within-JVM anchor).
pub(super) fn summarize_report(
    args: &super::BenchOverheadArgs,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let (workloads, mut configs) = super::cells(args);
    configs.retain(|c| *c != Config::None);
    let (workloads, configs, given) = (&workloads, &configs, &as_given(&args.configs));
    let old = super::read_resumed(path)?;
    if old.get("pairs").is_none() {
        bail!(
            "{} is not a `--paired` report (fresh-JVM reports print their tables when run)",
            path.display()
        );
    }
    let periods: Vec<Period> = serde_json::from_value(old["periods"].clone())
        .with_context(|| format!("the periods of {}", path.display()))?;
    for w in workloads {
        for c in configs {
            if !periods
                .iter()
                .any(|p| p.on && p.workload == w.name() && p.config == c.name())
            {
                bail!(
                    "{} has no `{}` periods on `{}`: give the --workloads and --configs it was run with",
                    path.display(),
                    c.name(),
                    w.name()
                );
            }
        }
    }
    println!(
        "## bench-overhead --paired, summarized from {}\n",
        path.display()
    );
    println!("- command: `{}`\n", old["command"].as_str().unwrap_or("?"));
    print!("{}", markdown(&summarize(workloads, configs, &periods)));
    if old["alternate"].as_bool().unwrap_or(false) {
        print!(
            "\n{}",
            within_jvm_markdown(&within_jvm(workloads, given, &periods))
        );
    }
    Ok(())
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
    if args.alternate {
        check_alternating(&configs, args.resume.is_some())?;
    }
    let plan: Vec<(u64, Workload, Config)> = super::plan(args)
        .into_iter()
        .filter(|(_, _, c)| *c != Config::None)
        .collect();
    // What each JVM switches on: one configuration, or (`--alternate`) all.
    let jvms: Vec<(u64, Workload, OnPeriods)> = if args.alternate {
        (0..args.rounds)
            .flat_map(|round| {
                let configs = &configs;
                workloads
                    .iter()
                    .map(move |w| (round, *w, OnPeriods::alternating(configs, pairs, round)))
            })
            .collect()
    } else {
        plan.iter()
            .map(|(r, w, c)| (*r, *w, OnPeriods::single(*c, pairs)))
            .collect()
    };
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
        alternate: args.alternate,
        prime_jfr: args.prime_jfr,
        warnings: configs
            .iter()
            .map(|c| window_warning(*c, args.period_secs))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect(),
        failures: Vec::new(),
        summaries: Vec::new(),
        within_jvm: Vec::new(),
        periods: Vec::new(),
    };
    if args.alternate && !args.rounds.is_multiple_of(configs.len() as u64) {
        report.warnings.push(format!(
            "--rounds {} is not a multiple of the {} configurations: they do not go first (beside the never-profiled period) equally often",
            args.rounds,
            configs.len()
        ));
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let path = match (&args.resume, &resumed) {
        (Some(previous), Some(old)) => {
            report.periods = resumed_periods(
                old,
                &report.header,
                (pairs, args.period_secs, args.settle_secs, args.prime_jfr),
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
    // A resumed report holds single-configuration JVMs only (see `check_alternating`).
    let done = |report: &PairedReport, (round, workload, ons): &(u64, Workload, OnPeriods)| {
        report.periods.iter().any(|p| {
            p.round == *round && p.workload == workload.name() && p.config == ons.configs[0].name()
        })
    };
    let todo = jvms.iter().filter(|j| !done(&report, j)).count();
    let on_periods = jvms.first().map_or(0, |(_, _, ons)| ons.count as u64);
    eprintln!(
        "bench-overhead --paired {pairs}: {todo} of {} JVMs to run, ~{} s each; report (rewritten after every JVM): {}",
        jvms.len(),
        args.warmup_secs
            + (2 * on_periods + 1) * (args.period_secs + args.settle_secs)
            + 5 * on_periods,
        path.display()
    );
    let mut in_a_row = 0;
    for (order, job) in jvms.iter().enumerate() {
        if done(&report, job) {
            continue;
        }
        let (round, workload, ons) = job;
        let names: Vec<&str> = ons.configs.iter().map(|c| c.name()).collect();
        let label = format!(
            "round {} {} {}",
            round + 1,
            workload.name(),
            names.join(", ")
        );
        bench.wait_for_idle();
        match bench.run_paired(order, *round, *workload, ons) {
            Ok(periods) => {
                let show: Vec<String> = periods
                    .iter()
                    .map(|p| format!("{}{:.0}", if p.on { "on " } else { "off " }, p.ops_per_sec))
                    .collect();
                eprintln!(
                    "[{}/{}] {label}: {}",
                    order + 1,
                    jvms.len(),
                    show.join(", ")
                );
                report.periods.extend(periods);
                in_a_row = 0;
            }
            Err(e) => {
                eprintln!("[{}/{}] {label}: FAILED: {e:#}", order + 1, jvms.len());
                report.failures.push(format!("{label}: {e:#}"));
                in_a_row += 1;
            }
        }
        report.header.loadavg_end = super::loadavg();
        report.summaries = summarize(&workloads, &configs, &report.periods);
        if args.alternate {
            report.within_jvm = within_jvm(&workloads, &as_given(&args.configs), &report.periods);
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        if in_a_row == FAILURES_IN_A_ROW {
            eprintln!("{FAILURES_IN_A_ROW} JVMs in a row failed: stopping");
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
        "- {}; JVM options `{}`; {} worker threads; warm-up {} s; {} on-periods of {} s per JVM{} between off-periods",
        h.java,
        h.jvm_options.join(" "),
        h.threads,
        h.warmup_secs,
        pairs,
        report.period_secs,
        if args.alternate {
            " and configuration, the configurations in turn (--alternate)"
        } else {
            ""
        }
    );
    if args.prime_jfr {
        println!("- JFR primed before the warm-up (--prime-jfr): no period holds its start-up");
    }
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
    if args.alternate {
        println!(
            "\nWith --alternate, the first-on and RSS columns count only the JVMs whose first on-period is the row's configuration, and the peak RSS is not shown (it is the JVM's lifetime peak, over every configuration)."
        );
        print!("\n{}", within_jvm_markdown(&report.within_jvm));
    }
    println!("report: {}", path.display());
    if !report.failures.is_empty() {
        let rerun = if args.alternate {
            // `check_alternating`: an alternating run is not resumed.
            "rerun the run".to_string()
        } else {
            format!("rerun them with --resume {}", path.display())
        };
        bail!(
            "{} JVMs failed ({rerun}):\n{}",
            report.failures.len(),
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
            jvm: String::new(),
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

    /// The periods of an alternating JVM: `ops` per period, on-periods'
    /// configurations from `ons`.
    fn alternating_jvm(round: u64, ons: &OnPeriods, ops: &[f64]) -> Vec<Period> {
        let key = ons.jvm_key();
        ops.iter()
            .enumerate()
            .map(|(index, ops)| Period {
                config: ons.label(index),
                jvm: key.clone(),
                ops_per_sec: *ops,
                workload: "cpu".into(),
                // The RSS grows by 10 MiB a period.
                ..period(round, index, *ops, 300 + 10 * index as u64)
            })
            .collect()
    }

    #[test]
    fn alternating_jvms_compare_their_configurations_within_each_jvm() {
        let configs = [Config::JfrProfile, Config::AgentJfr10s];
        let first = OnPeriods::alternating(&configs, 2, 0);
        let second = OnPeriods::alternating(&configs, 2, 1);
        // The order rotates by round; each configuration twice.
        assert_eq!(first.count, 4);
        let order =
            |o: &OnPeriods| -> Vec<&str> { (1..8).step_by(2).map(|i| o.at(i).name()).collect() };
        assert_eq!(
            order(&first),
            [
                "jfr-profile",
                "agent-jfr-10s",
                "jfr-profile",
                "agent-jfr-10s"
            ]
        );
        assert_eq!(
            order(&second),
            [
                "agent-jfr-10s",
                "jfr-profile",
                "agent-jfr-10s",
                "jfr-profile"
            ]
        );
        assert_eq!(first.jvm_key(), second.jvm_key());
        // JVM 1 is fast, JVM 2 half as fast; in both the agent costs 10 %
        // and the preset 5 % of the neighbouring off-periods.
        let mut periods = alternating_jvm(
            0,
            &first,
            &[100.0, 95.0, 100.0, 90.0, 100.0, 95.0, 100.0, 90.0, 100.0],
        );
        periods.extend(alternating_jvm(
            1,
            &second,
            &[50.0, 45.0, 50.0, 47.5, 50.0, 45.0, 50.0, 47.5, 50.0],
        ));
        let rows = within_jvm(&[Workload::Cpu], &configs, &periods);
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!(
            (r.config, r.against, r.jvms, r.dearer_in),
            ("agent-jfr-10s", "jfr-profile", 2, 2)
        );
        let d = r.difference_pp.expect("differences");
        assert!(
            (d.min + 5.0).abs() < 1e-9 && (d.max + 5.0).abs() < 1e-9,
            "{d:?}"
        );
        assert!((r.sign_test_p - 0.5).abs() < 1e-9, "{}", r.sign_test_p);
        // The per-configuration summary takes only its own on-periods, each
        // against its own JVM's neighbours, and only the JVM whose first
        // on-period is its own against the never-profiled period.
        let s = summarize(&[Workload::Cpu], &configs, &periods);
        assert_eq!(s.len(), 2);
        for (summary, ratio, first_on) in [(&s[0], 0.95, 0.95), (&s[1], 0.90, 0.90)] {
            assert_eq!((summary.jvms, summary.on_periods), (2, 4), "{summary:?}");
            let r = summary.ratio.expect("ratios");
            assert!(
                (r.min - ratio).abs() < 1e-9 && (r.max - ratio).abs() < 1e-9,
                "{r:?}"
            );
            let f = summary.first_on_vs_never_profiled.expect("first on");
            assert!((f.median - first_on).abs() < 1e-9, "{f:?}");
            assert_eq!(f.min, f.max, "one JVM each: {f:?}");
            // Period 1 against period 0; no lifetime peak (it spans both
            // configurations).
            let rss = summary.first_on_extra_rss_mib.expect("first-on RSS");
            assert!((rss.median - 10.0).abs() < 1e-9, "{rss:?}");
            assert!(summary.peak_extra_rss_mib.is_none(), "{summary:?}");
        }
    }

    #[test]
    fn the_within_jvm_anchor_is_the_first_configuration_given() {
        let given = [
            Config::None,
            Config::JfrProfile,
            Config::AgentJfr10s,
            Config::JfrProfile,
        ];
        assert_eq!(
            as_given(&given),
            [Config::JfrProfile, Config::AgentJfr10s],
            "`none` and repeats dropped, the order kept"
        );
    }

    #[test]
    fn the_order_balanced_difference_cancels_which_configuration_went_first() {
        // Whatever runs first looks 1 pp cheaper, the configurations cost
        // alike: the median difference says "dearer", the balanced one 0.
        let position_only = [(1.0, true), (-1.0, false), (1.0, true), (-1.0, false)];
        let b = Balanced::of(&position_only).expect("both orders");
        assert!(b.difference_pp.abs() < 1e-12, "{b:?}");
        assert!((b.first_cheaper_pp - 1.0).abs() < 1e-12, "{b:?}");
        assert!(b.ci95_pp.abs() < 1e-12, "no spread within an order: {b:?}");
        // Unequal orders (rounds not a multiple of the configurations): the
        // plain mean (+0.2) would carry the position; the balanced one not.
        let b = Balanced::of(&[
            (1.0, true),
            (1.0, true),
            (1.0, true),
            (-1.0, false),
            (-1.0, false),
        ])
        .expect("both orders");
        assert!(b.difference_pp.abs() < 1e-12, "{b:?}");
        // The cpu run of 2026-12-02 (8 JVMs, agent at 10-s windows against
        // the preset), per JVM to 0.05 pp. By hand: means within the orders
        // +1.375 and −1.325; squared standard errors 7.5125/3/4 = 0.6260 and
        // 1.3125/3/4 = 0.1094; se ½·√0.7354 = 0.4288; Welch df 4.02 → 4,
        // t(4) 2.776: ±1.190.
        let run = [
            (1.45, true),
            (-0.75, false),
            (2.8, true),
            (-0.8, false),
            (2.1, true),
            (-2.1, false),
            (-0.85, true),
            (-1.65, false),
        ];
        let b = Balanced::of(&run).expect("both orders");
        assert!((b.difference_pp - 0.025).abs() < 1e-9, "{b:?}");
        assert!((b.first_cheaper_pp - 1.35).abs() < 1e-9, "{b:?}");
        assert!((b.ci95_pp - 1.190).abs() < 1e-3, "{b:?}");
        // An order with one JVM has no spread to go on: none.
        assert!(Balanced::of(&[(1.0, true), (2.0, true), (3.0, false)]).is_none());
        assert!(Balanced::of(&[(1.0, true), (2.0, true)]).is_none());
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(31), 2.040);
        assert_eq!(t_975(500), 1.980);
    }

    #[test]
    fn the_sign_test_is_two_sided_and_exact() {
        assert!((sign_test(4, 0) - 0.125).abs() < 1e-12);
        assert!((sign_test(0, 4) - 0.125).abs() < 1e-12);
        // 8 of 8: 2/256; 7 of 8: 2·9/256.
        assert!((sign_test(8, 0) - 2.0 / 256.0).abs() < 1e-12);
        assert!((sign_test(7, 1) - 18.0 / 256.0).abs() < 1e-12);
        assert_eq!(sign_test(2, 2), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
    }

    #[test]
    fn only_jfr_configurations_alternate() {
        let ok = [
            Config::AgentJfr10s,
            Config::JfrProfile,
            Config::JfrAgentEventsDump10s,
        ];
        check_alternating(&ok, false).expect("JFR configurations alternate");
        let err = |c: &[Config], resume| {
            format!("{:#}", check_alternating(c, resume).expect_err("refused"))
        };
        assert!(err(&[Config::AgentJfr10s], false).contains("two configurations"));
        assert!(err(&[Config::AgentJfr, Config::Asprof], false).contains("`asprof` is not one"));
        assert!(err(&[Config::AgentAsprof, Config::AgentJfr], false).contains("`agent-asprof`"));
        assert!(
            err(&[Config::JfrDumpsOnly2s, Config::AgentJfr], false).contains("`jfr-dumps-only-2s`")
        );
        assert!(err(&ok, true).contains("--resume"));
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
