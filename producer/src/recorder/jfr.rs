//! The built-in JFR recorder, driven over the attach protocol (`jcmd` operations).
//!
//! Start: one minimal `settings=none` recording with only the events Javelin
//! uses. Each window: `JFR.dump` to a unique file in the target's /tmp, read it
//! through `/proc/<pid>/root`, delete it, and keep only chunks not seen before
//! (chunks are de-duplicated by their start time). Every dump rotates the
//! chunk; it asks only for chunks that end after the newest one collected
//! (`begin=`), so the JVM writes and the agent reads one window's chunk, not
//! the whole `maxage` (up to 12 windows at 5-s windows). A failed collect
//! leaves `begin` where it was: the next dump reaches back over the gap.
//!
//! CPU: `jdk.ExecutionSample` takes at most 5 threads in Java per period
//! (HotSpot's `MAX_NR_OF_JAVA_SAMPLES`), runnable or not, so its total is
//! sampled execution, not CPU time. On JDK 25+ the recording uses the CPU-time
//! sampler instead (JEP 509, `jdk.CPUTimeSample`: one sample per `cpu_period`
//! of each thread's CPU time, from a per-thread POSIX CPU timer), when the JVM
//! could create those timers; see [`CpuSampler`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{CollectSlots, Collected, FINISH_SLOT_WAIT, Recorder, RecorderError, take_file};
use crate::attach::{AttachError, AttachTarget};
use crate::jfr_parse::{ChunkInfo, scan_chunks};

/// JFR event settings for the recording.
#[derive(Debug, Clone)]
pub struct JfrSettings {
    pub cpu_period: Duration,
    /// `jdk.ObjectAllocationSample` throttle, e.g. `300/s`.
    pub alloc_throttle: String,
    pub lock_threshold: Duration,
    pub park_threshold: Duration,
    /// How long the JVM keeps recorded data (bounds the size of every dump).
    pub max_age: Duration,
    /// Largest dump the agent reads; a larger one is dropped and reported.
    pub max_dump_bytes: u64,
}

impl Default for JfrSettings {
    fn default() -> Self {
        JfrSettings {
            cpu_period: Duration::from_millis(10),
            alloc_throttle: "300/s".into(),
            lock_threshold: Duration::from_millis(10),
            park_threshold: Duration::from_millis(10),
            max_age: Duration::from_secs(120),
            max_dump_bytes: 256 << 20,
        }
    }
}

/// How the recording samples CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSampler {
    /// `jdk.ExecutionSample` every `cpu_period`: at most 5 threads in Java
    /// state per period, weighted by the period (kind `jfr`).
    Execution,
    /// `jdk.CPUTimeSample` (JDK 25+): one sample per `cpu_period` of CPU time
    /// of every Java thread (kind `jfr-cpu-time`).
    CpuTime,
}

/// First JDK with the CPU-time sampler (JEP 509, experimental, Linux).
pub const CPU_TIME_SAMPLER_JDK: u32 = 25;

/// SIGPROF: the signal of JFR's CPU-time timers.
const SIGPROF: u32 = 27;

/// How long after `JFR.start` the sampler's timers may take to appear (they are
/// created synchronously by the start; the margin is for a loaded host).
const TIMER_WAIT: Duration = Duration::from_secs(2);

/// One JFR recording in one JVM, owned by this agent.
#[derive(Debug)]
pub struct JfrRecorder {
    target: AttachTarget,
    name: String,
    settings: JfrSettings,
    /// What the running recording samples CPU with (decided at start).
    sampler: CpuSampler,
    /// Why the CPU-time sampler is not used on a JVM that has it, if so.
    notice: Option<String>,
    /// Start times of chunks already collected, oldest first; bounded.
    seen: VecDeque<i64>,
    /// Where the next dump begins: see [`DumpStart`].
    dump_start: DumpStart,
    dumps: u64,
    /// Dump files whose `JFR.dump` did not answer in time: the JVM may still
    /// write them, so each collect and the stop try to delete them; bounded.
    unclaimed: VecDeque<String>,
    slots: CollectSlots,
}

/// Which chunks a dump asks the JVM for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DumpStart {
    /// Everything the recording holds (nothing collected yet).
    All,
    /// Chunks ending after `end` (wall clock, ns since the epoch): the end of
    /// the newest chunk collected, learnt when the wall clock read
    /// `seen_wall` (ns) and the monotonic clock `seen_at`.
    After {
        end: i64,
        seen_wall: i64,
        seen_at: Instant,
    },
    /// The JVM refused `begin=` (a JDK without it): every dump is whole.
    Unsupported,
}

/// Past the newest collected chunk's end: the JVM keeps chunks whose end is
/// not before `begin`, and its chunk end is the next chunk's start to the
/// nanosecond, so the collected chunk is left out and any later one is kept.
const BEGIN_MARGIN_NANOS: i64 = 1;

/// How far the wall clock may fall behind the monotonic clock between two
/// dumps before it counts as stepped back (NTP slews far less than this).
const CLOCK_STEP_NANOS: i64 = 100_000_000;

/// Chunk ends further in the future than this are not believed (a corrupt
/// header would otherwise turn every later dump whole).
const FUTURE_END_NANOS: i64 = 60_000_000_000;

/// The `begin=` option of a dump at wall-clock time `now_nanos`, `since_nanos`
/// of monotonic time after `start` was learnt, if one applies: none before
/// the first collect, after a refusal, or when the wall clock stepped back
/// since (it then fell behind the monotonic clock): chunks rotated after the
/// step could end "before" `begin` and be left out, so the dump is whole and
/// de-duplicated by chunk start.
fn begin_option(start: DumpStart, now_nanos: i64, since_nanos: i64) -> Option<String> {
    let DumpStart::After { end, seen_wall, .. } = start else {
        return None;
    };
    let begin = end.checked_add(BEGIN_MARGIN_NANOS)?;
    let wall_elapsed = now_nanos.saturating_sub(seen_wall);
    if now_nanos <= begin || wall_elapsed < since_nanos.saturating_sub(CLOCK_STEP_NANOS) {
        return None;
    }
    let at = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(begin).ok()?);
    // `Instant::parse` form, UTC: no dependence on the target's time zone.
    Some(format!("begin={}", humantime::format_rfc3339_nanos(at)))
}

/// Wall-clock nanoseconds since the epoch.
fn wall_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Dump files remembered for later deletion; older names are given up on.
const UNCLAIMED_DUMPS: usize = 16;

/// Chunk start times remembered for de-duplication: far more than `max_age` can hold.
const SEEN_CHUNKS: usize = 4096;

impl JfrRecorder {
    pub fn new(target: AttachTarget, name: String, settings: JfrSettings) -> JfrRecorder {
        JfrRecorder {
            target,
            name,
            settings,
            sampler: CpuSampler::Execution,
            notice: None,
            seen: VecDeque::new(),
            dump_start: DumpStart::All,
            dumps: 0,
            unclaimed: VecDeque::new(),
            slots: CollectSlots::default(),
        }
    }

    /// What the running recording samples CPU with.
    pub fn sampler(&self) -> CpuSampler {
        self.sampler
    }

    /// The `JFR.start` line: a minimal recording with only the events we
    /// aggregate, CPU sampled by `sampler`. (Only our recording's settings are
    /// chosen here: another recording in the JVM can still enable other events.)
    pub fn start_command(&self, sampler: CpuSampler) -> String {
        let s = &self.settings;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let stack = |e: &str| format!("+{e}#enabled=true +{e}#stackTrace=true");
        let cpu = match sampler {
            CpuSampler::Execution => [
                stack("jdk.ExecutionSample"),
                format!("+jdk.ExecutionSample#period={}", ms(s.cpu_period)),
            ],
            // `throttle=<time>` is a fixed period of each thread's CPU time (a
            // rate, `<n>/s`, would be spread over the CPUs). Lost samples
            // (queue full, thread in VM code) are recorded as a count.
            CpuSampler::CpuTime => [
                stack("jdk.CPUTimeSample"),
                format!(
                    "+jdk.CPUTimeSample#throttle={} +jdk.CPUTimeSamplesLost#enabled=true",
                    ms(s.cpu_period)
                ),
            ],
        };
        [
            format!("JFR.start name={} settings=none", self.name),
            // The recording states its real sampling period; CPU weights are taken from it.
            "+jdk.ActiveSetting#enabled=true".to_string(),
        ]
        .into_iter()
        .chain(cpu)
        .chain([
            stack("jdk.ObjectAllocationSample"),
            format!("+jdk.ObjectAllocationSample#throttle={}", s.alloc_throttle),
            stack("jdk.JavaMonitorEnter"),
            format!("+jdk.JavaMonitorEnter#threshold={}", ms(s.lock_threshold)),
            stack("jdk.ThreadPark"),
            format!("+jdk.ThreadPark#threshold={}", ms(s.park_threshold)),
            format!("maxage={}s", s.max_age.as_secs().max(1)),
        ])
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Starts the recording with `sampler`.
    fn start_with(&self, sampler: CpuSampler) -> Result<(), RecorderError> {
        self.target
            .jcmd(&self.start_command(sampler))?
            .expect("Started recording")?;
        Ok(())
    }

    /// Starts with the CPU-time sampler and checks that its timers exist: the
    /// JVM creates one per Java thread and, when the kernel refuses
    /// (`timer_create` fails, e.g. RLIMIT_SIGPENDING used up, a seccomp filter),
    /// says nothing and records no CPU at all. Then the recording is restarted
    /// with `jdk.ExecutionSample` and the reason kept for the status.
    fn start_cpu_time(&mut self) -> Result<(), RecorderError> {
        let problem = match self.start_with(CpuSampler::CpuTime) {
            Ok(()) => self.wait_for_cpu_timers(),
            Err(RecorderError::Attach(e @ AttachError::Failed { .. })) => {
                Some(format!("JFR.start with jdk.CPUTimeSample failed: {e}"))
            }
            Err(e) => return Err(e),
        };
        let Some(problem) = problem else {
            self.sampler = CpuSampler::CpuTime;
            return Ok(());
        };
        let notice = format!(
            "JDK CPU-time sampler unavailable: {problem}; CPU is sampled with jdk.ExecutionSample \
             (at most 5 threads per period)"
        );
        tracing::warn!(pid = self.target.pid, "{notice}");
        // Status 0 and "Could not stop" when the start failed: fine.
        let _ = self.target.jcmd(&format!("JFR.stop name={}", self.name))?;
        self.start_with(CpuSampler::Execution)?;
        self.sampler = CpuSampler::Execution;
        self.notice = Some(notice);
        Ok(())
    }

    /// Waits for the sampler's timers; the problem if they do not appear.
    fn wait_for_cpu_timers(&self) -> Option<String> {
        let deadline = Instant::now() + TIMER_WAIT;
        loop {
            match cpu_timers(self.target.pid) {
                Ok(n) if n > 0 => return None,
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) => {
                    return Some(
                        "the JVM could not create its per-thread CPU timers \
                         (timer_create refused: RLIMIT_SIGPENDING used up, or a seccomp filter)"
                            .into(),
                    );
                }
                Err(e) => {
                    return Some(format!(
                        "its per-thread CPU timers cannot be checked (/proc/<pid>/timers: {e})"
                    ));
                }
            }
        }
    }
}

/// The process's POSIX timers that are JFR CPU-time sampler timers: SIGPROF to
/// one thread on a per-thread CPU clock, from `/proc/<pid>/timers`.
fn cpu_timers(pid: u32) -> std::io::Result<usize> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers"))?;
    Ok(count_cpu_timers(&text))
}

/// Counts the entries of a `/proc/<pid>/timers` text (blocks of `ID:`,
/// `signal: <n>/<value>`, `notify: <how>/<target>`, `ClockID: <id>`) that are
/// SIGPROF timers notifying one thread on a thread CPU clock (a negative clock
/// id with CPUCLOCK_PERTHREAD, bit 2, set).
fn count_cpu_timers(text: &str) -> usize {
    #[derive(Default)]
    struct Entry {
        sigprof: bool,
        to_thread: bool,
        thread_clock: bool,
    }
    let mut count = 0;
    let mut entry: Option<Entry> = None;
    let mut finish = |e: Option<Entry>| {
        if e.is_some_and(|e| e.sigprof && e.to_thread && e.thread_clock) {
            count += 1;
        }
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "ID" => finish(entry.replace(Entry::default())),
            "signal" => {
                if let Some(e) = entry.as_mut() {
                    e.sigprof = value.split('/').next().and_then(|n| n.parse::<u32>().ok())
                        == Some(SIGPROF);
                }
            }
            "notify" => {
                if let Some(e) = entry.as_mut() {
                    e.to_thread = value.starts_with("signal/tid.");
                }
            }
            "ClockID" => {
                if let Some(e) = entry.as_mut() {
                    e.thread_clock = value.parse::<i64>().is_ok_and(|c| c < 0 && c & 4 != 0);
                }
            }
            _ => {}
        }
    }
    finish(entry);
    count
}

impl Recorder for JfrRecorder {
    fn kind(&self) -> &'static str {
        match self.sampler {
            CpuSampler::Execution => "jfr",
            CpuSampler::CpuTime => "jfr-cpu-time",
        }
    }

    fn sampling(&self) -> String {
        let s = &self.settings;
        let ms = |d: Duration| d.as_millis();
        let cpu = match self.sampler {
            CpuSampler::Execution => format!(
                "cpu: jdk.ExecutionSample every {} ms (at most 5 running Java threads per period)",
                ms(s.cpu_period)
            ),
            CpuSampler::CpuTime => format!(
                "cpu: jdk.CPUTimeSample every {} ms of each thread's CPU time",
                ms(s.cpu_period)
            ),
        };
        format!(
            "{cpu}; alloc: jdk.ObjectAllocationSample at most {}; lock: jdk.JavaMonitorEnter ≥ {} ms; park: jdk.ThreadPark ≥ {} ms",
            s.alloc_throttle,
            ms(s.lock_threshold),
            ms(s.park_threshold)
        )
    }

    /// Why a JVM that has the CPU-time sampler is sampled with
    /// `jdk.ExecutionSample` instead, if it is.
    fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Starts the recording, replacing one of the same name (and `stale`, an
    /// orphaned recording of ours under an older name) left by an earlier agent
    /// run, so a JVM never carries two of ours.
    fn start(&mut self, stale: Option<&str>) -> Result<(), RecorderError> {
        // Status 0 and "Could not stop" when there is none: both fine.
        for name in std::iter::once(self.name.as_str()).chain(stale) {
            let _ = self.target.jcmd(&format!("JFR.stop name={name}"));
        }
        self.sampler = CpuSampler::Execution;
        self.notice = None;
        if self.dump_start != DumpStart::Unsupported {
            self.dump_start = DumpStart::All;
        }
        let version = crate::jdk_version::feature_version(&self.target)?;
        if version.is_some_and(|v| v >= CPU_TIME_SAMPLER_JDK) {
            self.start_cpu_time()
        } else {
            self.start_with(CpuSampler::Execution)
        }
    }

    /// Dumps the recording and returns the chunks not collected before.
    fn collect(&mut self) -> Result<Collected, RecorderError> {
        let file = self.dump()?;
        self.read_dump(&file, None)
    }

    /// Dumps the open window's data, ends the recording, then reads the dump:
    /// the session ends even when no collect slot comes free in time.
    fn finish(&mut self) -> (Result<Collected, RecorderError>, Result<(), RecorderError>) {
        let dumped = self.dump();
        let stopped = self.stop();
        let collected = dumped.and_then(|file| {
            self.read_dump(&file, Some(std::time::Instant::now() + FINISH_SLOT_WAIT))
        });
        (collected, stopped)
    }

    /// Stops the recording (the agent is shutting down or the target is leaving).
    fn stop(&mut self) -> Result<(), RecorderError> {
        self.remove_unclaimed();
        self.target
            .jcmd(&format!("JFR.stop name={}", self.name))?
            .expect("Stopped recording")?;
        Ok(())
    }
}

impl JfrRecorder {
    /// Reads dumps only while holding one of the agent's collect slots.
    pub fn with_collect_slots(mut self, slots: CollectSlots) -> JfrRecorder {
        self.slots = slots;
        self
    }

    /// `JFR.dump`s the recording into the target's /tmp; returns the file
    /// (as the JVM names it).
    fn dump(&mut self) -> Result<String, RecorderError> {
        self.remove_unclaimed();
        self.dumps += 1;
        // The pid keeps JVMs that share a /tmp (processes of one host or pod)
        // from writing each other's dump files.
        let file = format!("/tmp/{}-{}-{}.jfr", self.name, self.target.pid, self.dumps);
        let command = format!("JFR.dump name={} filename={file}", self.name);
        let since_nanos = match self.dump_start {
            DumpStart::After { seen_at, .. } => {
                i64::try_from(seen_at.elapsed().as_nanos()).unwrap_or(i64::MAX)
            }
            _ => 0,
        };
        let begin = begin_option(self.dump_start, wall_nanos(), since_nanos);
        let dump = |command: &str| {
            self.target
                .jcmd(command)
                .map_err(RecorderError::from)
                .and_then(|r| Ok(r.expect("Dumped recording")?))
        };
        let mut reply = match &begin {
            Some(begin) => dump(&format!("{command} {begin}")),
            None => dump(&command),
        };
        if let Err(RecorderError::Attach(AttachError::Failed { message, .. })) = &reply
            && begin.is_some()
        {
            if message.contains("No data found") {
                // Nothing ended after `begin` by the JVM's clock (the dump
                // rotates, so it should have): this once, the whole recording.
                tracing::warn!(pid = self.target.pid, %message, "JFR.dump begin= found no data");
                reply = dump(&command);
            } else if message.contains("Unknown argument") && message.contains("begin") {
                // A JDK whose JFR.dump has no `begin`: whole dumps from now on.
                tracing::warn!(
                    pid = self.target.pid,
                    %message,
                    "JFR.dump refused begin=; dumping the whole recording each window"
                );
                self.dump_start = DumpStart::Unsupported;
                reply = dump(&command);
            }
        }
        if let Err(e) = reply {
            // A stalled JVM may finish this dump after we gave up on it.
            self.unclaim(file);
            return Err(e);
        }
        Ok(file)
    }

    /// Reads (and deletes) a dump under a collect slot waited for until
    /// `deadline`, keeping the chunks not collected before.
    fn read_dump(
        &mut self,
        file: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Collected, RecorderError> {
        let slot = match self.slots.acquire(deadline) {
            Ok(slot) => slot,
            Err(e) => {
                self.unclaim(file.to_string());
                self.remove_unclaimed();
                return Err(e);
            }
        };
        let bytes = take_file(&self.target.in_target(file), self.settings.max_dump_bytes)?;
        let (chunks, error) = scan_chunks(&bytes);
        let (now_wall, now) = (wall_nanos(), Instant::now());
        if self.dump_start != DumpStart::Unsupported
            && let Some(end) = chunks
                .iter()
                .map(|c| c.start_nanos.saturating_add(c.duration_nanos))
                .filter(|end| *end <= now_wall.saturating_add(FUTURE_END_NANOS))
                .max()
        {
            let end = match self.dump_start {
                DumpStart::After { end: before, .. } => before.max(end),
                _ => end,
            };
            self.dump_start = DumpStart::After {
                end,
                seen_wall: now_wall,
                seen_at: now,
            };
        }
        let new_chunks: Vec<ChunkInfo> = chunks
            .into_iter()
            .filter(|c| !self.seen.contains(&c.start_nanos))
            .collect();
        for c in &new_chunks {
            if self.seen.len() == SEEN_CHUNKS {
                self.seen.pop_front();
            }
            self.seen.push_back(c.start_nanos);
        }
        Ok(Collected {
            bytes,
            new_chunks,
            error,
            slot,
        })
    }

    /// Remembers a dump file nobody read, to delete it later.
    fn unclaim(&mut self, file: String) {
        if self.unclaimed.len() == UNCLAIMED_DUMPS {
            self.unclaimed.pop_front();
        }
        self.unclaimed.push_back(file);
    }

    /// Deletes the dumps that arrived after their `JFR.dump` timed out
    /// (owned by the JVM's user, regular files, no link followed); forgets
    /// those that are gone.
    fn remove_unclaimed(&mut self) {
        use crate::rootfs::{Kind, Root};
        if self.unclaimed.is_empty() {
            return;
        }
        let pid = self.target.pid;
        let Ok(uid) = crate::rootfs::process_uid(pid) else {
            return;
        };
        let Ok(tmp) = Root::of_process(pid).and_then(|root| root.open_dir("/tmp", &[0, uid]))
        else {
            return;
        };
        self.unclaimed.retain(|file| {
            let name = file.trim_start_matches("/tmp/");
            match tmp.remove_if(name, Kind::File, &[uid]) {
                Ok(true) => false,
                // Not written yet: try again at the next collect.
                Ok(false) => true,
                Err(e) => !e.is_not_found(),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_begin_just_past_the_newest_collected_chunk_unless_the_clock_stepped_back() {
        // 2026-11-30T10:00:00.5Z, the newest chunk's end, learnt 10 ms later.
        let end = 1_796_032_800_500_000_000;
        let after = |end: i64| DumpStart::After {
            end,
            seen_wall: end.saturating_add(10_000_000),
            seen_at: Instant::now(),
        };
        let (later, since) = (end + 5_010_000_000, 5_000_000_000);
        assert_eq!(begin_option(DumpStart::All, later, since), None);
        assert_eq!(begin_option(DumpStart::Unsupported, later, since), None);
        assert_eq!(
            begin_option(after(end), later, since).as_deref(),
            Some("begin=2026-11-30T10:00:00.500000001Z")
        );
        // 1-s windows keep `begin`.
        assert!(begin_option(after(end), end + 1_010_000_000, 1_000_000_000).is_some());
        // The wall clock fell 2 s behind the monotonic clock: a whole dump,
        // even when it is past the end again.
        assert_eq!(begin_option(after(end), later, since + 2_000_000_000), None);
        // Not past the end at all: a whole dump.
        assert_eq!(begin_option(after(end), end, 0), None);
        assert_eq!(begin_option(after(i64::MAX), i64::MAX, 0), None);
    }

    fn recorder() -> JfrRecorder {
        let target = AttachTarget {
            pid: 1,
            nspid: 1,
            timeout: Duration::from_secs(1),
        };
        JfrRecorder::new(target, "javelin".into(), JfrSettings::default())
    }

    #[test]
    fn start_command_fits_one_v1_argument() {
        let recorder = recorder();
        let line = recorder.start_command(CpuSampler::Execution);
        assert!(line.len() <= 1024, "{} bytes", line.len());
        assert!(line.starts_with("JFR.start name=javelin settings=none "));
        assert!(line.contains("+jdk.ExecutionSample#period=10ms"));
        assert!(!line.contains("CPUTimeSample"));
        assert!(line.contains("+jdk.ThreadPark#threshold=10ms"));
        assert!(line.contains("maxage=120s"));
        // A long recording name still fits.
        let long = JfrRecorder::new(
            recorder.target.clone(),
            "n".repeat(100),
            JfrSettings::default(),
        );
        for sampler in [CpuSampler::Execution, CpuSampler::CpuTime] {
            let line = long.start_command(sampler);
            assert!(line.len() <= 1024, "{sampler:?}: {} bytes", line.len());
        }
    }

    #[test]
    fn the_cpu_time_command_replaces_execution_samples() {
        let line = recorder().start_command(CpuSampler::CpuTime);
        assert!(line.len() <= 1024, "{} bytes", line.len());
        assert!(
            line.contains("+jdk.CPUTimeSample#enabled=true +jdk.CPUTimeSample#stackTrace=true")
        );
        assert!(line.contains("+jdk.CPUTimeSample#throttle=10ms"));
        assert!(line.contains("+jdk.CPUTimeSamplesLost#enabled=true"));
        // CPU is counted once: no ExecutionSample in this recording.
        assert!(!line.contains("ExecutionSample"), "{line}");
        assert!(line.contains("+jdk.ObjectAllocationSample#throttle=300/s"));
        assert!(line.contains("maxage=120s"));
    }

    #[test]
    fn kinds_name_the_cpu_basis() {
        let mut r = recorder();
        assert_eq!(r.kind(), "jfr");
        assert_eq!(
            r.sampling(),
            "cpu: jdk.ExecutionSample every 10 ms (at most 5 running Java threads per period); \
             alloc: jdk.ObjectAllocationSample at most 300/s; lock: jdk.JavaMonitorEnter ≥ 10 ms; \
             park: jdk.ThreadPark ≥ 10 ms"
        );
        r.sampler = CpuSampler::CpuTime;
        assert_eq!(r.kind(), "jfr-cpu-time");
        assert!(
            r.sampling()
                .starts_with("cpu: jdk.CPUTimeSample every 10 ms of each thread's CPU time; "),
            "{}",
            r.sampling()
        );
    }

    #[test]
    fn cpu_timers_are_counted_from_proc_timers() {
        // /proc/<pid>/timers of a JDK 25 JVM recording jdk.CPUTimeSample (two of
        // its timers), plus timers that are not the sampler's.
        let text = "ID: 15\n\
                    signal: 27/0000000000000000\n\
                    notify: signal/tid.24094\n\
                    ClockID: -192754\n\
                    ID: 14\n\
                    signal: 27/0000000000000000\n\
                    notify: signal/tid.23957\n\
                    ClockID: -191658\n\
                    ID: 3\n\
                    signal: 14/0000000000000000\n\
                    notify: signal/pid.23867\n\
                    ClockID: 1\n\
                    ID: 2\n\
                    signal: 27/0000000000000000\n\
                    notify: signal/pid.23867\n\
                    ClockID: -191658\n\
                    ID: 1\n\
                    signal: 27/0000000000000000\n\
                    notify: signal/tid.23867\n\
                    ClockID: 0\n";
        assert_eq!(count_cpu_timers(text), 2);
        assert_eq!(count_cpu_timers(""), 0);
        assert_eq!(count_cpu_timers("garbage\nClockID: -6\n"), 0);
    }
}
